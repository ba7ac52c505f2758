"""Rewrites of a layer kind's statements that keep its meaning (and so its
derivatives), for faster code.

:func:`im2col` splits a contraction with a windowed read,
``z[f, I] = b[f] + sum_R W[f, R] x[g(I, R)]``, into a copy of the windows and a
plain matrix product::

    cols[R, I] = x[g(I, R)]                       (the windows, 0 in the padding)
    z[f, I]    = b[f] + sum_R W[f, R] cols[R, I]  (a gemm: W (F, |R|) @ cols (|R|, |I| batch))

The engine derives the backward of the rewritten kind like any other: the
product's rules are the gemms ``dW = dz cols^T`` and ``dcols = W^T dz``, and the
copy's rule ``dx[g(I, R)] += dcols[R, I]`` is col2im, the scatter that is exact
for every stride, padding and dilation.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import sympy as sp

from ..layers.ir import KindInterface, LayerKind, Statement, TensorDef
from .adjoint import value_reads

#: The name of the windows tensor im2col introduces.
COLS = "cols"


@functools.lru_cache(maxsize=64)
def im2col(kind: LayerKind) -> LayerKind | None:
    """The kind with its windowed contraction split into a copy and a product,
    or None when its statements are not of that form (see the module docstring)."""
    if len(kind.forward) != 1:
        return None
    (st,) = kind.forward
    roles = {t.name: t.role for t in kind.tensors}
    reads = value_reads(st.body)
    if st.op != "sum" or not st.reduce or len(reads) != 2:
        return None
    if st.body != sp.Mul(*reads):
        return None
    params = [r for r in reads if roles[str(r.base.label)] == "param"]
    inputs = [r for r in reads if roles[str(r.base.label)] == "input"]
    if len(params) != 1 or len(inputs) != 1:
        return None
    (weight,), (window,) = params, inputs
    if all(isinstance(i, sp.Symbol) for i in window.indices):
        return None  # not a window (dense): already a matrix product
    reduced = [s for s, _ in st.reduce]
    # the weight is indexed by the output's first index and the reduction indices
    if list(weight.indices) != [st.index[0], *reduced]:
        return None
    extents = dict(zip(st.index, kind.tensor(st.target).shape, strict=True))
    extents.update(st.reduce)
    kept = [s for s in st.index if window.has(s)]
    if st.index[0] in kept:
        return None
    cols_index = (*reduced, *kept)
    cols = TensorDef(COLS, "work", tuple(extents[s] for s in cols_index))
    cols_read = sp.IndexedBase(COLS)[cols_index]
    copy = Statement(COLS, cols_index, window, outside=st.outside)
    product = Statement(
        st.target,
        st.index,
        weight * cols_read,
        init=st.init,
        reduce=st.reduce,
        op="sum",
    )
    # everything else as the kind has it: the rewrite changes statements only
    return replace(
        kind,
        interface=_renamed(
            kind, f"{kind.name}_im2col", f"{kind.name} as im2col + a matrix product"
        ),
        tensors=(*kind.tensors, cols),
        forward=(copy, product),
        variants=(),
    )


def _renamed(kind: LayerKind, name: str, doc: str) -> KindInterface:
    """The kind's interface under another name and doc, for a rewritten form of
    it. A rewrite is not registered: its interface has no definition to build
    (the rewritten kind is the value the rewrite returns)."""
    return replace(
        kind.interface,
        name=name,
        doc=doc,
        define=functools.partial(_unregistered, name),
    )


def _unregistered(name: str) -> LayerKind:
    raise LookupError(
        f"{name} is a rewritten form of a layer kind, made by derive.engine."
        "transforms; it has no registered definition"
    )


#: The name of the tensor a residual connection adds.
RESIDUAL = "r"


@functools.lru_cache(maxsize=64)
def with_residual(kind: LayerKind) -> LayerKind:
    """The kind with a residual connection: a tensor ``r`` of the output's shape
    added to the output statement (before the activation), ``z[I] = init +
    r[I] + sum ...``. Reading ``r`` gives the engine a rule ``dr[I] += dz[I]``:
    the adjoint of a tensor read twice is the sum of both contributions."""
    # kinds with an activation only (the spec allows it there): one forward
    assert kind.evaluate is None, kind.name
    statements = list(kind.forward)
    position = next(n for n, st in enumerate(statements) if st.target == kind.output)
    st = statements[position]
    shape = kind.tensor(kind.output).shape
    added = sp.IndexedBase(RESIDUAL)[st.index]
    statements[position] = Statement(
        st.target, st.index, st.body, st.init + added, st.reduce, st.op, st.outside
    )
    return replace(
        kind,
        interface=_renamed(kind, kind.name, f"{kind.name} with a residual connection"),
        tensors=(*kind.tensors, TensorDef(RESIDUAL, "residual", shape)),
        forward=tuple(statements),
        variants=(),
    )
