"""The layer IR: a layer kind is data.

A :class:`LayerKind` is the SymPy side of a kind whose interface
(:mod:`derive.layers.interface`: typed :class:`Param` s, rank, shape rule) a spec
reads. It binds the attributes to symbols, names the symbols of its input shape,
the sizes it derives from them (output-size formulas, from the shape rule), its
tensors with symbolic shapes, and its forward as index-form :class:`Statement` s::

    target[index] = init + sum over reduce of body        (op "sum")
    target[index] = first argmax over reduce of body      (op "argmax", integer)

Reads are ``sympy.Indexed`` on an ``IndexedBase`` named after the tensor, with
indices affine in the loop indices (``x[c, s*i + d*k - p]``) or going through an
integer tensor (``x[c, s*i + argmax[c, i] - p]``). A read outside a tensor's range
is 0 (zero padding); a statement with ``outside="skip"`` leaves such points out
instead (max pooling, which torch pads with -inf). Every tensor but a parameter
has a trailing batch axis, which the statements leave implicit.

Nothing here is a derivative: the engine (:mod:`derive.engine.adjoint`) derives
every backward rule from these statements. The definitions are plain data
(names, SymPy expressions, tuples), so a later spec syntax can let a user write a
new kind in the same notation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import sympy as sp

from .interface import KindInterface, Param, output_size

__all__ = [
    "B",
    "Claim",
    "KindInterface",
    "LayerKind",
    "Param",
    "Statement",
    "TensorDef",
    "integer_symbols",
    "output_size",
    "shape_sizes",
    "size_symbols",
]

Role = Literal[
    "input", "residual", "param", "output", "index", "work", "stat", "state", "mask"
]

#: The number of samples in a batch (the valid rows of a padded last batch), for
#: statements that reduce over the batch (batch norm's statistics).
B = sp.Symbol("B", integer=True, positive=True)


@dataclass(frozen=True)
class TensorDef:
    """A tensor of a layer kind: its name in the statements, role and shape.

    ``role``: "input", "residual" (an earlier layer's output added by a
    residual connection), "param", "output", "index" (an integer work tensor, such
    as pooling's argmax), "work" (a float intermediate, such as im2col's
    windows), "stat" (a statistic over the batch, such as batch norm's mean),
    "state" (module state that training updates but the optimizer never
    touches: running statistics) or "mask" (a 0/1 tensor drawn in training, kept
    with probability ``keep``: dropout). ``shape`` holds SymPy expressions of the
    kind's symbols, per sample: inputs, outputs, index, work and mask tensors have
    a trailing batch axis besides (``batched``). ``init`` (parameters and state):
    "weight" (Glorot or He from the kind's fan-in, by the activation), "zeros"
    or "ones".
    """

    name: str
    role: Role
    shape: tuple[sp.Expr, ...]
    init: Literal["weight", "zeros", "ones"] | None = None
    keep: sp.Expr | None = None

    @property
    def base(self) -> sp.IndexedBase:
        return sp.IndexedBase(self.name)

    @property
    def batched(self) -> bool:
        return self.role in ("input", "residual", "output", "index", "work", "mask")


@dataclass(frozen=True)
class Statement:
    """``target[index] = init + reduce over reduce of body``.

    ``index``: one loop index per axis of the target (batch excluded), each
    ranging over that axis. ``reduce``: (index, extent) pairs, in loop order.
    ``op``: "sum", or "argmax" (the first position, in loop order, of the largest
    body value; an integer result counting over the reduction's flattened loops).
    ``outside``: what a read outside a tensor's range is: "zero" (padding) or
    "skip" (the point is left out, as torch's -inf padding in max pooling).
    """

    target: str
    index: tuple[sp.Symbol, ...]
    body: sp.Expr
    init: sp.Expr = sp.S.Zero
    reduce: tuple[tuple[sp.Symbol, sp.Expr], ...] = ()
    op: Literal["sum", "argmax"] = "sum"
    outside: Literal["zero", "skip"] = "zero"

    def reads(self) -> tuple[sp.Indexed, ...]:
        """Every tensor read of init and body, in a stable order (reads inside
        an index, such as the argmax of a pooling read, included)."""
        found: dict[sp.Indexed, None] = {}
        for expr in (self.init, self.body):
            for node in sp.preorder_traversal(expr):
                if isinstance(node, sp.Indexed):
                    found[node] = None
        return tuple(sorted(found, key=sp.default_sort_key))


@dataclass(frozen=True)
class Claim:
    """A textbook closed form of one derived adjoint: ``d<target>[index] = value``.

    The engine never computes with a claim; it proves the derived rules equal to
    it (:mod:`derive.engine.proofs`), as it proves ``a(1 - a)`` for the sigmoid.
    ``value`` reads the kind's tensors and the output adjoint ``d<output>``,
    with sums as ``sympy.Sum``. ``sizes``: how the proof reads the kind's sizes
    (batch norm: a channel's B*R values of a batch as one axis of N values).
    ``count`` is the number of values the claim's sums run over (``N`` in
    ``value``) in the kind's own sizes (batch norm: ``B*R``).
    ``text``: the claim as its source writes it; ``source``: where it is from.
    """

    target: str
    index: tuple[sp.Symbol, ...]
    value: sp.Expr
    count: sp.Expr
    text: str
    source: str
    sizes: tuple[tuple[sp.Symbol, sp.Expr], ...] = ()


@dataclass(frozen=True, eq=False)
class LayerKind:
    """One layer kind, written once in index form: the SymPy definition behind
    a :class:`~derive.layers.interface.KindInterface` (its name, attributes,
    rank, shape rule and flags, which the properties below read).

    ``input``: the symbols of the input's per-sample shape (``()`` of length 1
    for a feature vector). ``bind`` maps each attribute symbol to (attribute
    name, axis or None). ``sizes`` are derived symbols with their formulas
    (output sizes, :func:`shape_sizes`). ``output`` names the tensor the layer
    produces and ``output_shape`` its per-sample shape. ``fan_in`` is the
    weights' fan-in for initialisation; ``fan_out`` the fan-out (Glorot).
    ``evaluate``: the statements of evaluation mode, when they differ from the
    training ``forward`` (batch norm reads its running statistics, dropout is
    the identity); ``update``: the statements that update state tensors after
    each training forward.
    """

    interface: KindInterface
    input: tuple[sp.Symbol, ...]
    bind: Mapping[sp.Symbol, tuple[str, int | None]]
    sizes: Mapping[sp.Symbol, sp.Expr]
    tensors: tuple[TensorDef, ...]
    forward: tuple[Statement, ...]
    output: str
    output_shape: tuple[sp.Expr, ...]
    fan_in: sp.Expr = sp.S.One
    fan_out: sp.Expr = sp.S.One
    evaluate: tuple[Statement, ...] | None = None
    update: tuple[Statement, ...] = ()
    #: (attribute, value, kind): the kind a layer with that attribute value is
    #: (batch norm without its affine parameters)
    variants: tuple[tuple[str, Any, LayerKind], ...] = ()
    #: (attributes, input shape) pairs on which the engine checks the gather
    #: forms against the scatter rules numerically (small, with remainders)
    checks: tuple[tuple[Mapping[str, Any], tuple[int, ...]], ...] = field(default=())
    #: textbook closed forms of derived adjoints, which the engine proves
    claims: tuple[Claim, ...] = ()

    @property
    def name(self) -> str:
        return self.interface.name

    @property
    def doc(self) -> str:
        return self.interface.doc

    @property
    def params(self) -> tuple[Param, ...]:
        return self.interface.params

    @property
    def rank(self) -> int | None:
        return self.interface.rank

    @property
    def activation(self) -> bool:
        return self.interface.activation

    @property
    def view(self) -> bool:
        return self.interface.view

    @property
    def shape_of(self) -> Literal["channels", "features"] | None:
        return self.interface.shape_of

    @property
    def torch(self) -> str:
        return self.interface.torch

    @property
    def padding_at_most_half_kernel(self) -> bool:
        return self.interface.padding_at_most_half_kernel

    def tensor(self, name: str) -> TensorDef:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(f"layer kind {self.name} has no tensor {name!r}")

    @property
    def param_tensors(self) -> tuple[TensorDef, ...]:
        return tuple(t for t in self.tensors if t.role == "param")

    def resolve(self, attrs: Mapping[str, Any]) -> LayerKind:
        """The definition a layer with these attribute values uses."""
        for name, value, kind in self.variants:
            if attrs.get(name) == value:
                return kind
        return self

    def label(self, attrs: Mapping[str, Any]) -> str:
        """``conv2d(filters=8, kernel=3x3, ...)``: the kind with attribute values."""
        return self.interface.label(attrs)

    def binding(
        self, attrs: Mapping[str, Any], input_shape: tuple[int, ...]
    ) -> dict[sp.Symbol, Any]:
        """Every symbol of the kind as a number, for a layer with canonical
        ``attrs`` (sizes as one int per spatial axis) and a per-sample input
        shape: attributes (ints, or floats), input sizes,
        then the derived sizes. The batch size B stays a symbol."""
        if self.view:
            (size,) = self.output_shape
            return {size: math.prod(input_shape)}
        values: dict[sp.Symbol, Any] = {}
        if self.shape_of == "channels":
            input_shape = (input_shape[0], math.prod(input_shape[1:]))
        elif self.shape_of == "features":
            input_shape = (math.prod(input_shape),)
        types = {p.name: p.type for p in self.params}
        for symbol, (name, axis) in self.bind.items():
            value = attrs[name]
            value = value[axis] if axis is not None else value
            values[symbol] = sp.Float(value) if types[name] == "float" else int(value)
        for symbol, size in zip(self.input, input_shape, strict=True):
            values[symbol] = int(size)
        for symbol, formula in self.sizes.items():
            values[symbol] = int(formula.xreplace(values))
        return values

    @property
    def training_only(self) -> bool:
        """Whether training and evaluation run different statements."""
        return self.evaluate is not None


def integer_symbols(names: str) -> tuple[sp.Symbol, ...]:
    """Non-negative integer symbols (loop indices, sizes, attributes)."""
    return sp.symbols(names, integer=True, nonnegative=True, seq=True)


def size_symbols(names: str) -> tuple[sp.Symbol, ...]:
    """Positive integer symbols (extents, strides)."""
    return sp.symbols(names, integer=True, positive=True, seq=True)


def shape_sizes(
    interface: KindInterface,
    bind: Mapping[sp.Symbol, tuple[str, int | None]],
    input: tuple[sp.Symbol, ...],
    output_shape: tuple[sp.Symbol, ...],
) -> dict[sp.Symbol, sp.Expr]:
    """A kind's ``sizes``: each symbol of ``output_shape`` that is not an
    attribute or input symbol, with its formula, from the interface's shape
    rule applied to the attribute symbols (``bind``) and the input's."""
    axes: dict[str, dict[int, sp.Symbol]] = {}
    attrs: dict[str, Any] = {}
    for symbol, (name, axis) in bind.items():
        if axis is None:
            attrs[name] = symbol
        else:
            axes.setdefault(name, {})[axis] = symbol
    attrs.update((name, tuple(at[a] for a in sorted(at))) for name, at in axes.items())
    formulas = interface.shape(attrs, input)
    return {
        size: sp.sympify(formula)
        for size, formula in zip(output_shape, formulas, strict=True)
        if size != formula
    }
