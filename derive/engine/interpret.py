"""Evaluating a layer kind's statements and derived rules on NumPy arrays.

An interpreter of the IR for one sample (no batch axis), vectorized over the
loop points with NumPy: every loop point's indices are integer arrays, reads
outside a tensor give 0 (or leave the point out, with ``outside="skip"``), and a
rule's accumulation is ``np.add.at``. The worked example evaluates networks with
it, so its numbers come from the derived rules themselves, never from a
generated module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import sympy as sp

from ..layers.ir import LayerKind, Statement
from .adjoint import AdjointRule, GatherRule, statement_guards


def _points(
    loops: Sequence[tuple[sp.Symbol, int]],
) -> dict[sp.Symbol, np.ndarray]:
    """Every point of the loop nest, in loop order (last index fastest)."""
    extents = [int(e) for _, e in loops]
    if not loops:
        return {}
    grids = np.indices(extents).reshape(len(extents), -1)
    return {s: grids[n] for n, (s, _) in enumerate(loops)}


def _function(
    expr: sp.Expr, variables: Sequence[sp.Symbol], arrays: Mapping[str, np.ndarray]
) -> Callable[..., Any]:
    """``expr`` as a NumPy function of the loop index arrays; a read outside its
    array gives 0."""
    readers: dict[str, Callable[..., np.ndarray]] = {}

    def reader(array: np.ndarray) -> Callable[..., np.ndarray]:
        def read(*index: Any) -> np.ndarray:
            size = max((np.size(i) for i in index), default=1)
            idx = [np.broadcast_to(np.rint(i).astype(np.int64), (size,)) for i in index]
            ok = np.ones(size, dtype=bool)
            for i, n in zip(idx, array.shape, strict=True):
                ok &= (i >= 0) & (i < n)
            safe = tuple(np.where(ok, i, 0) for i in idx)
            return np.where(ok, array[safe], 0)

        return read

    def rewrite(node: sp.Basic) -> sp.Basic:
        if isinstance(node, sp.Indexed):
            name = f"read_{node.base.label}"
            readers[name] = reader(arrays[str(node.base.label)])
            return sp.Function(name)(*(rewrite(i) for i in node.indices))
        if not node.args or isinstance(node, sp.Symbol):
            return node
        return node.func(*(rewrite(a) for a in node.args))

    rewritten = rewrite(sp.sympify(expr))
    return sp.lambdify(list(variables), rewritten, modules=[readers, "numpy"])


def _evaluate(
    expr: sp.Expr,
    points: Mapping[sp.Symbol, np.ndarray],
    arrays: Mapping[str, np.ndarray],
) -> np.ndarray:
    variables = list(points)
    size = len(next(iter(points.values()))) if points else 1
    value = _function(expr, variables, arrays)(*points.values())
    return np.broadcast_to(np.asarray(value, dtype=float), (size,)).copy()


def _holds(
    guards: Sequence[Any],
    points: Mapping[sp.Symbol, np.ndarray],
    arrays: Mapping[str, np.ndarray],
) -> np.ndarray:
    size = len(next(iter(points.values()))) if points else 1
    ok = np.ones(size, dtype=bool)
    for guard in guards:
        index = _evaluate(guard.expr, points, arrays)
        ok &= (index >= 0) & (index < float(guard.extent))
    return ok


def _bind(expr: sp.Expr, binding: Mapping[sp.Symbol, int]) -> sp.Expr:
    return sp.sympify(expr).xreplace(dict(binding))


def run_statement(
    kind: LayerKind,
    statement: Statement,
    binding: Mapping[sp.Symbol, int],
    arrays: dict[str, np.ndarray],
) -> np.ndarray:
    """The statement's target for one sample, from ``arrays`` (which it joins)."""
    shape = tuple(int(_bind(e, binding)) for e in kind.tensor(statement.target).shape)
    index_loops = [(s, n) for s, n in zip(statement.index, shape, strict=True)]
    reduce_loops = [(s, int(_bind(e, binding))) for s, e in statement.reduce]
    symbolic = tuple(
        zip(statement.index, kind.tensor(statement.target).shape, strict=True)
    )
    guards = [
        type(g)(_bind(g.expr, binding), _bind(g.extent, binding))
        for g in statement_guards(
            statement, statement.body, kind, symbolic + statement.reduce
        )
    ]
    points = _points(index_loops + reduce_loops)
    n_out = math.prod(shape)
    n_red = math.prod(n for _, n in reduce_loops)
    values = _evaluate(_bind(statement.body, binding), points, arrays)
    valid = _holds(guards, points, arrays)
    values = values.reshape(n_out, n_red)
    valid = valid.reshape(n_out, n_red)
    if statement.op == "argmax":
        masked = np.where(valid, values, -np.inf)
        result = np.argmax(masked, axis=1)
        nan = np.isnan(masked)
        # torch's scan: NaN replaces the best so far, so the last NaN wins
        last_nan = n_red - 1 - np.argmax(nan[:, ::-1], axis=1)
        result = np.where(nan.any(axis=1), last_nan, result)
        # a window of -inf only: its first valid position
        first_valid = np.argmax(valid, axis=1)
        result = np.where(
            np.isneginf(masked).all(axis=1) & ~nan.any(axis=1), first_valid, result
        )
        out = result.reshape(shape).astype(np.int64)
    else:
        init = _evaluate(_bind(statement.init, binding), _points(index_loops), arrays)
        total = init + np.where(valid, values, 0.0).sum(axis=1)
        out = total.reshape(shape)
    arrays[statement.target] = out
    return out


def run_forward(
    kind: LayerKind, binding: Mapping[sp.Symbol, int], arrays: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Every statement of ``kind`` in order; ``arrays`` holds the input and
    parameters by their local names and receives each statement's target."""
    if kind.view:
        (x,) = [t.name for t in kind.tensors if t.role == "input"]
        arrays[kind.output] = arrays[x].reshape(-1)
        return arrays
    for statement in kind.forward:
        run_statement(kind, statement, binding, arrays)
    return arrays


def run_rules(
    kind: LayerKind,
    rules: Sequence[AdjointRule],
    binding: Mapping[sp.Symbol, int],
    arrays: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """The adjoint of every float tensor the rules reach, for one sample, from
    the forward arrays and the output's adjoint (``arrays["d" + output]``)."""
    shapes = {
        t.name: tuple(int(_bind(e, binding)) for e in t.shape) for t in kind.tensors
    }
    out: dict[str, np.ndarray] = {}
    for rule in rules:
        target = out.setdefault(f"d{rule.target}", np.zeros(shapes[rule.target]))
        loops = [(s, int(_bind(e, binding))) for s, e in rule.loops]
        points = _points(loops)
        guards = [
            type(g)(_bind(g.expr, binding), _bind(g.extent, binding))
            for g in rule.guards
        ]
        # the adjoints earlier rules completed are read by later ones (dvar by dxc)
        known = {**arrays, **out}
        valid = _holds(guards, points, known)
        value = _evaluate(_bind(rule.value, binding), points, known)
        index = [
            np.rint(_evaluate(_bind(e, binding), points, known)).astype(np.int64)
            for e in rule.target_index
        ]
        keep = valid
        for i, n in zip(index, target.shape, strict=True):
            keep &= (i >= 0) & (i < n)
        np.add.at(target, tuple(i[keep] for i in index), value[keep])
    return out


def check_gather(
    rules: Sequence[AdjointRule],
    form: GatherRule,
    kind: LayerKind,
    binding: Mapping[sp.Symbol, int],
    seed: int = 0,
) -> float:
    """The largest difference between the scatter ``rules`` (one target) and
    their gather ``form`` on random tensors of the shapes ``binding`` gives.

    Integer tensors get random in-range values; every read outside its tensor
    is 0 in both forms.
    """
    rng = np.random.default_rng(seed)
    concrete = dict(binding)
    shapes = {
        t.name: tuple(int(_bind(e, concrete)) for e in t.shape) for t in kind.tensors
    }
    arrays: dict[str, np.ndarray] = {}
    for tensor in kind.tensors:
        shape = shapes[tensor.name]
        if tensor.role == "index":
            statement = next(s for s in kind.forward if s.target == tensor.name)
            size = math.prod(int(_bind(e, concrete)) for _, e in statement.reduce)
            arrays[tensor.name] = rng.integers(0, size, shape)
        elif tensor.role == "mask":
            arrays[tensor.name] = rng.integers(0, 2, shape).astype(float)
        else:  # positive: statistics such as a variance go under a square root
            arrays[tensor.name] = rng.uniform(0.5, 1.5, shape)
    for rule in rules:
        arrays[f"d{rule.seed}"] = rng.normal(size=shapes[rule.seed])
    scatter = run_rules(kind, rules, concrete, arrays)[f"d{form.target}"]
    target_shape = shapes[form.target]
    sums = [(s, int(_bind(e, concrete))) for s, e in form.sums]
    points = _points([*zip(form.target_index, target_shape, strict=True), *sums])
    values = _evaluate(_bind(form.value, concrete), points, arrays)
    size = len(values)
    keep = np.ones(size, dtype=bool)
    variables = list(points)
    for condition in form.conditions:
        holds = _function(_bind(condition, concrete), variables, arrays)(
            *points.values()
        )
        keep &= np.broadcast_to(np.asarray(holds, dtype=bool), (size,))
    per_point = math.prod(n for _, n in sums)
    gathered = np.where(keep, values, 0.0).reshape(-1, per_point).sum(axis=1)
    return float(np.max(np.abs(scatter.reshape(-1) - gathered), initial=0.0))
