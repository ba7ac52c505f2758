"""Loop nests: one index-form statement or backward rule as Numba loops.

A :class:`Nest` is a statement or rule after binding (every extent an int, every
tensor a buffer of the module): for every point of ``loops`` where the guards
hold, ``target[index]`` receives ``init`` plus the sum of ``value`` (or, for
"argmax", the position of the first largest ``value``). Buffers with a batch
axis (``batched``) get the batch index appended to every read and write.

The printer picks one of two schedules, both summing in the forward's loop order
(so their float64 results are the same to the last bit):

* **register**: the target's indices are plain loop indices. Its loops run
  outermost (batch last among them), the remaining ones inside, and the sum is
  kept in a local scalar (``acc``). Used for a batch-less target (a parameter's
  gradient: the batch is the innermost reduction), or when the reduction is small
  (at most ``UNROLL_MAX`` terms, no guards), so LLVM unrolls it and vectorizes
  the batch loop around it.
* **stream**: the batch loop is innermost and accumulates into the target in
  memory, contiguous and vectorized (``+=``). A scatter (a target index that is
  not a plain loop index, such as ``dx[c, s*i + d*k - p]``) always streams, in
  the forward's loop order, into a target the caller has zeroed.

Guards ``0 <= e < extent`` that interval arithmetic cannot prove become bounds of
the innermost loop they involve (``range(k_lo, k_hi)``); a guard through an
integer tensor (a pooling argmax) becomes an ``if``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import sympy as sp

from ..engine.adjoint import Guard
from .printer import code, index_code

#: Reductions of at most this many terms (and no guards) run innermost, in a
#: local scalar, with the batch loop around them (LLVM unrolls them); larger or
#: guarded ones stream along the batch. Dense loop layers have at most
#: LOOPS_MAX_INPUTS (32) inputs, so their forward keeps today's form.
UNROLL_MAX = 32


@dataclass(frozen=True)
class Nest:
    """A statement or rule with every extent bound (see the module docstring).

    ``mode``: "assign" writes ``init + sum`` (every target element written once);
    "add" adds the sum to what the target holds (several rules into one buffer,
    or a scatter into a zeroed one). ``ranges`` gives the value range
    [0, n) of integer buffers read in indices (for interval arithmetic).
    """

    target: str
    target_index: tuple[sp.Expr, ...]
    value: sp.Expr
    loops: tuple[tuple[sp.Symbol, int], ...]
    guards: tuple[Guard, ...] = ()
    init: sp.Expr = sp.S.Zero
    mode: Literal["assign", "add"] = "assign"
    op: Literal["sum", "argmax"] = "sum"
    batched: frozenset[str] = frozenset()
    ranges: Mapping[str, int] = field(default_factory=dict)
    also: str | None = None  # argmax: a buffer that receives the largest value too
    layouts: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


# ------------------------------------------------------------ interval arithmetic


def interval(
    expr: sp.Expr,
    bounds: Mapping[sp.Symbol, tuple[int, int]],
    ranges: Mapping[str, int],
) -> tuple[int, int] | None:
    """[lo, hi] (inclusive) of an integer expression over the loop ``bounds``
    (inclusive) and integer buffers in ``ranges``; None if not affine enough."""
    expr = sp.sympify(expr)
    if expr.is_Integer:
        return int(expr), int(expr)
    if isinstance(expr, sp.Symbol):
        return bounds.get(expr)
    if isinstance(expr, sp.Indexed):
        n = ranges.get(str(expr.base.label))
        return (0, n - 1) if n is not None else None
    if isinstance(expr, sp.Add):
        lo = hi = 0
        for term in expr.args:
            part = interval(term, bounds, ranges)
            if part is None:
                return None
            lo, hi = lo + part[0], hi + part[1]
        return lo, hi
    if isinstance(expr, sp.Mul):
        coeff, rest = expr.as_coeff_Mul()
        if not coeff.is_Integer:
            return None
        part = interval(rest, bounds, ranges)
        if part is None:
            return None
        a, b = int(coeff) * part[0], int(coeff) * part[1]
        return min(a, b), max(a, b)
    if isinstance(expr, sp.floor):
        numerator, denominator = sp.fraction(sp.together(expr.args[0]))
        part = interval(numerator, bounds, ranges)
        if part is None or not denominator.is_Integer:
            return None
        return part[0] // int(denominator), part[1] // int(denominator)
    if isinstance(expr, sp.Mod):
        a, b = expr.args
        part = interval(a, bounds, ranges)
        if not b.is_Integer or part is None:
            return None
        if 0 <= part[0] and part[1] < int(b):
            return part
        return 0, int(b) - 1
    return None


def _always(guard: Guard, bounds: Mapping, ranges: Mapping[str, int]) -> bool:
    part = interval(guard.expr, bounds, ranges)
    return part is not None and part[0] >= 0 and part[1] < int(guard.extent)


def _has_read(expr: sp.Expr) -> bool:
    return any(isinstance(n, sp.Indexed) for n in sp.preorder_traversal(expr))


# ------------------------------------------------------------------- printing


def _batch_symbol(nest: Nest) -> sp.Symbol:
    """The batch loop's variable: i (as in dense code), else s, r, t."""
    taken = {str(s) for s, _ in nest.loops}
    for name in ("i", "s", "r", "t"):
        if name not in taken:
            return sp.Symbol(name, integer=True, nonnegative=True)
    raise ValueError("no name left for the batch loop")  # pragma: no cover


def _with_batch(expr: sp.Expr, batched: frozenset[str], batch: sp.Symbol) -> sp.Expr:
    """``expr`` with the batch index appended to every read of a batched buffer
    (reads inside indices too)."""

    def rewrite(node: sp.Basic) -> sp.Basic:
        if isinstance(node, sp.Indexed):
            indices = [rewrite(i) for i in node.indices]
            if str(node.base.label) in batched:
                indices.append(batch)
            return sp.IndexedBase(node.base.label)[tuple(indices)]
        if not node.args or isinstance(node, sp.Symbol):
            return node
        return node.func(*(rewrite(a) for a in node.args))

    return rewrite(sp.sympify(expr))


def _physical(
    expr: sp.Expr, layouts: Mapping[str, tuple[int, ...]], batched: frozenset[str]
) -> sp.Expr:
    """Reads of tensors with several axes as the kernels store them: a batched
    buffer as (values per sample, batch), a parameter as (first axis, the rest),
    with the flat index of the other axes (C order, constant strides). Numba
    compiles 2-D indexing several times faster than 4-D indexing (LLVM's loop
    strength reduction is slow on many runtime strides)."""

    def flat(indices: Sequence[sp.Expr], shape: tuple[int, ...]) -> sp.Expr:
        total: sp.Expr = sp.S.Zero
        for index, size in zip(indices, shape, strict=True):
            total = total * size + index
        return sp.expand(total) if not _has_read(total) else total

    def rewrite(node: sp.Basic) -> sp.Basic:
        if isinstance(node, sp.Indexed):
            label = str(node.base.label)
            indices = [rewrite(i) for i in node.indices]
            shape = layouts.get(label)
            if shape is not None:
                if label in batched:
                    indices = [flat(indices[:-1], shape), indices[-1]]
                else:
                    indices = [indices[0], flat(indices[1:], shape[1:])]
            return sp.IndexedBase(node.base.label)[tuple(indices)]
        if not node.args or isinstance(node, sp.Symbol):
            return node
        return node.func(*(rewrite(a) for a in node.args))

    return rewrite(sp.sympify(expr))


def _max_text(terms: Sequence[str]) -> str:
    text = terms[0]
    for term in terms[1:]:
        text = f"{term} if {term} > {text} else {text}"
    return text


def _min_text(terms: Sequence[str]) -> str:
    text = terms[0]
    for term in terms[1:]:
        text = f"{term} if {term} < {text} else {text}"
    return text


@dataclass
class _Loop:
    var: sp.Symbol
    extent: int | str  # "cols" for the batch loop
    lower: list[sp.Expr] = field(default_factory=list)  # extra bounds (max of)
    upper: list[sp.Expr] = field(default_factory=list)  # extra bounds (min of)

    def header(self, lines: list[str], indent: str) -> None:
        """``for var in range(...):``, with its bounds in locals if guarded."""
        name = str(self.var)
        start, stop = "0", str(self.extent)
        if self.lower:
            lines.append(
                f"{indent}{name}_lo = {_max_text(['0', *map(index_code, self.lower)])}"
            )
            start = f"{name}_lo"
        if self.upper:
            lines.append(
                f"{indent}{name}_hi = "
                f"{_min_text([str(self.extent), *map(index_code, self.upper)])}"
            )
            stop = f"{name}_hi"
        span = stop if start == "0" else f"{start}, {stop}"
        lines.append(f"{indent}for {name} in range({span}):")


def _place_guards(
    loops: list[_Loop],
    guards: Sequence[Guard],
    ranges: Mapping[str, int],
    first: int = 0,
) -> list[Guard]:
    """Turn each affine guard into bounds of the innermost loop it involves;
    return the guards left for an ``if``: those through integer buffers, and
    those on the loops before ``first`` (a target written once per point must
    not skip points: an out-of-range read there is a 0 term)."""
    position = {lp.var: n for n, lp in enumerate(loops)}
    left = []
    for guard in guards:
        expr = sp.expand(guard.expr)
        if _has_read(expr):
            left.append(guard)
            continue
        involved = [v for v in expr.free_symbols if v in position]
        if not involved:
            left.append(guard)
            continue
        var = max(involved, key=lambda v: position[v])
        if position[var] < first:
            left.append(guard)
            continue
        a = int(expr.coeff(var))
        rest = sp.expand(expr - a * var)
        extent = int(guard.extent)
        loop = loops[position[var]]
        outer = {
            lp.var: (0, lp.extent - 1)
            for lp in loops[: position[var]]
            if isinstance(lp.extent, int)
        }
        if a > 0:
            low = -rest if a == 1 else -sp.floor(rest / a)
            high = extent - rest if a == 1 else sp.floor((extent - 1 - rest) / a) + 1
        else:
            b = -a
            low = rest - extent + 1 if b == 1 else sp.floor((rest - extent) / b) + 1
            high = rest + 1 if b == 1 else sp.floor(rest / b) + 1
        low_range = interval(low, outer, ranges)
        if low_range is None or low_range[1] > 0:
            loop.lower.append(low)
        high_range = interval(high, outer, ranges)
        if high_range is None or high_range[0] < int(loop.extent):
            loop.upper.append(high)
    return left


def _condition(guards: Sequence[Guard]) -> str:
    parts = []
    for guard in guards:
        text = index_code(guard.expr)
        parts.append(f"0 <= {text} < {index_code(guard.extent)}")
    return " and ".join(parts)


def _zero(dtype: str) -> str:
    return f"np.{dtype}(0.0)"


def print_nest(
    nest: Nest, dtype: str, batch_extent: str = "cols", comment: Sequence[str] = ()
) -> list[str]:
    """The nest as code lines (4-space indentation), under its comment lines."""
    batch = _batch_symbol(nest)
    batched = nest.batched
    target_batched = nest.target in batched
    bounds = {s: (0, e - 1) for s, e in nest.loops}

    def physical(expr: sp.Expr) -> sp.Expr:
        return _physical(_with_batch(expr, batched, batch), nest.layouts, batched)

    guards = [
        Guard(physical(g.expr), g.extent)
        for g in nest.guards
        if not _always(g, bounds, nest.ranges)
    ]
    value = physical(nest.value)
    init = physical(nest.init)
    target_index = [_with_batch(i, batched, batch) for i in nest.target_index]
    target_read = _physical(
        sp.IndexedBase(nest.target)[
            (*target_index, *([batch] if target_batched else []))
        ],
        nest.layouts,
        batched,
    )
    target = index_code(target_read)
    loop_vars = [s for s, _ in nest.loops]
    extents = dict(nest.loops)
    plain = all(isinstance(i, sp.Symbol) and i in extents for i in nest.target_index)
    plain = plain and len(set(nest.target_index)) == len(nest.target_index)
    outer_vars = list(nest.target_index) if plain else []
    inner_vars = [v for v in loop_vars if v not in outer_vars]
    reduce_size = 1
    for v in inner_vars:
        reduce_size *= extents[v]
    guarded_inner = any(
        g.expr.free_symbols & set(inner_vars) for g in guards if not _has_read(g.expr)
    )
    if nest.op == "argmax":
        schedule = "argmax"
    elif plain and (
        not target_batched or (not guarded_inner and reduce_size <= UNROLL_MAX)
    ):
        schedule = "register"
    else:
        schedule = "stream"
    lines = [f"# {text}" for text in comment]
    if schedule == "stream":
        return lines + _stream(nest, dtype, batch, batch_extent, plain, target_read,
                               value, init, guards)  # fmt: skip
    loops = [_Loop(v, extents[v]) for v in outer_vars]
    if target_batched:
        loops.append(_Loop(batch, batch_extent))
    n_outer = len(loops)
    loops += [_Loop(v, extents[v]) for v in inner_vars]
    if not target_batched and batched & _reads(nest):
        loops.append(_Loop(batch, batch_extent))
    first = n_outer if nest.mode == "assign" else 0
    left = _place_guards(loops, guards, nest.ranges, first)
    indent = ""
    for lp in loops[:n_outer]:
        lp.header(lines, indent)
        indent += "    "
    if schedule == "argmax":
        return lines + _argmax_body(nest, dtype, loops, n_outer, left, value, target,
                                    indent)  # fmt: skip
    op = "+=" if nest.mode == "add" else "="
    if not loops[n_outer:] and not left and (init == 0 or nest.mode == "add"):
        # nothing to sum: one term per target element
        lines.append(f"{indent}{target} {op} {code(value, dtype)}")
        return lines
    start = code(init, dtype) if init != 0 else _zero(dtype)
    if nest.mode == "add":
        start = _zero(dtype)
    lines.append(f"{indent}acc = {start}")
    inner_indent = indent
    for lp in loops[n_outer:]:
        lp.header(lines, inner_indent)
        inner_indent += "    "
    if left:
        lines.append(f"{inner_indent}if {_condition(left)}:")
        inner_indent += "    "
    lines.append(f"{inner_indent}acc += {code(value, dtype)}")
    lines.append(f"{indent}{target} {op} acc")
    return lines


def _reads(nest: Nest) -> set[str]:
    return {
        str(n.base.label)
        for n in sp.preorder_traversal(sp.sympify(nest.value))
        if isinstance(n, sp.Indexed)
    }


def _row_views(
    reads: Sequence[sp.Indexed], batch: sp.Symbol, indent: str, lines: list[str]
) -> dict[sp.Indexed, sp.Indexed]:
    """A 1-D view along the batch of every read ``X[..., batch]`` whose other
    indices do not change with the batch, made before the batch loop: the loop
    then walks one contiguous row per buffer (one induction variable, and cheap
    compiles: LLVM's loop strength reduction is slow on deep nests of 4-D
    indexing)."""
    views: dict[sp.Indexed, sp.Indexed] = {}
    counts: dict[str, int] = {}
    for read in reads:
        if read in views or read.indices[-1] != batch:
            continue
        rest = read.indices[:-1]
        if not rest or any(batch in sp.sympify(i).free_symbols for i in rest):
            continue
        label = str(read.base.label)
        n = counts.get(label, 0)
        counts[label] = n + 1
        name = f"{label}_row" if n == 0 else f"{label}_row{n}"
        lines.append(f"{indent}{name} = {index_code(sp.IndexedBase(label)[rest])}")
        views[read] = sp.IndexedBase(name)[batch]
    return views


def _stream(
    nest: Nest,
    dtype: str,
    batch: sp.Symbol,
    batch_extent: str,
    plain: bool,
    target: sp.Indexed,
    value: sp.Expr,
    init: sp.Expr,
    guards: list[Guard],
) -> list[str]:
    """Batch innermost: the target's own loops, the init (assign mode), the
    remaining loops, then ``target += value`` along the batch."""
    extents = dict(nest.loops)
    if plain:
        order = [
            *nest.target_index,
            *(v for v, _ in nest.loops if v not in nest.target_index),
        ]
    else:
        order = [v for v, _ in nest.loops]
    loops = [_Loop(v, extents[v]) for v in order]
    n_target = len(nest.target_index) if plain else 0
    first = n_target if nest.mode == "assign" else 0
    left = _place_guards(loops, guards, nest.ranges, first)
    lines: list[str] = []
    indent = ""
    views: dict[sp.Indexed, sp.Indexed] = {}
    for position in range(len(loops) + 1):
        if position == n_target and plain and nest.mode == "assign":
            start = code(init, dtype) if init != 0 else "0.0"
            views = _row_views([target], batch, indent, lines)
            row = views.get(target, target)
            lines.append(f"{indent}for {batch} in range({batch_extent}):")
            lines.append(f"{indent}    {index_code(row)} = {start}")
        if position < len(loops):
            loops[position].header(lines, indent)
            indent += "    "
    # reads that do not change along the batch are loaded once, outside it
    hoisted: dict[sp.Indexed, sp.Symbol] = {}
    reads = sorted(
        {n for n in sp.preorder_traversal(value) if isinstance(n, sp.Indexed)},
        key=sp.default_sort_key,
    )
    for node in reads:
        if batch not in node.free_symbols:
            name = sp.Symbol("factor" if not hoisted else f"factor{len(hoisted)}")
            hoisted[node] = name
            lines.append(f"{indent}{name} = {code(node, dtype)}")
    views.update(
        _row_views(
            [r for r in (target, *reads) if r not in views], batch, indent, lines
        )
    )
    lines.append(f"{indent}for {batch} in range({batch_extent}):")
    body_indent = indent + "    "
    if left:
        lines.append(f"{body_indent}if {_condition(left)}:")
        body_indent += "    "
    row_target = index_code(views.get(target, target))
    row_value = value.xreplace(hoisted).xreplace(views)
    lines.append(f"{body_indent}{row_target} += {code(row_value, dtype)}")
    return lines


def _argmax_body(
    nest: Nest,
    dtype: str,
    loops: list[_Loop],
    n_outer: int,
    left: list[Guard],
    value: sp.Expr,
    target: str,
    indent: str,
) -> list[str]:
    """The first position of the largest value, torch's scan: a value replaces
    the best so far if it is larger, or NaN (so NaN propagates, the last one
    winning); padded positions (outside the guards' bounds) are left out."""
    inner = loops[n_outer:]
    lines: list[str] = []
    # the flat position counts over the window's loops, row by row
    strides, stride = [], 1
    for lp in reversed(inner):
        strides.append(stride)
        stride *= int(lp.extent)
    strides.reverse()
    for lp in inner:  # the window's bounds, hoisted to name its first position
        name = str(lp.var)
        if lp.lower:
            lines.append(
                f"{indent}{name}_lo = {_max_text(['0', *map(index_code, lp.lower)])}"
            )
        if lp.upper:
            lines.append(
                f"{indent}{name}_hi = "
                f"{_min_text([str(lp.extent), *map(index_code, lp.upper)])}"
            )
    first = (
        " + ".join(
            f"{lp.var}_lo * {s}" if s != 1 else f"{lp.var}_lo"
            for lp, s in zip(inner, strides, strict=True)
            if lp.lower
        )
        or "0"
    )
    lines.append(f"{indent}best = -math.inf")
    lines.append(f"{indent}best_at = {first}")
    body = indent
    for lp in inner:
        start = f"{lp.var}_lo" if lp.lower else "0"
        stop = f"{lp.var}_hi" if lp.upper else str(lp.extent)
        span = stop if start == "0" else f"{start}, {stop}"
        lines.append(f"{body}for {lp.var} in range({span}):")
        body += "    "
    if left:
        lines.append(f"{body}if {_condition(left)}:")
        body += "    "
    position = (
        " + ".join(
            f"{lp.var} * {s}" if s != 1 else str(lp.var)
            for lp, s in zip(inner, strides, strict=True)
        )
        or "0"
    )
    lines.append(f"{body}value = {code(value, dtype)}")
    lines.append(f"{body}if value > best or value != value:")
    lines.append(f"{body}    best = value")
    lines.append(f"{body}    best_at = {position}")
    lines.append(f"{indent}{target} = best_at")
    if nest.also is not None:
        element = target.replace(nest.target + "[", nest.also + "[", 1)  # same layout
        lines.append(f"{indent}{element} = best")
    return lines
