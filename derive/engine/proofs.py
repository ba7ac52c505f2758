"""Proofs that a kind's derived backward equals a textbook closed form.

A layer kind may state :class:`~derive.layers.ir.Claim` s: the closed form a
textbook gives for one adjoint (batch norm's
``dx = gamma/(N sigma) (N dy - sum dy - xhat sum dy xhat)``). The claim is never
used to compute anything; the engine proves the derived rules equal to it:

1. **compose**: the derived gather rules, read backward from the claimed
   adjoint, substituted into one another until only the kind's output adjoint
   ``dy`` is left (each rule's sums become ``Sum`` s over fresh indices);
2. **definitions**: every intermediate tensor (work and statistics) replaced by
   its forward statement, down to the kind's inputs and parameters, on both
   sides; a statistic read only under a root (the variance in ``sqrt(var +
   eps)``) stays a symbol: the difference then vanishes for every value of it,
   so for its own;
3. **linearity**: each ``Sum`` split over its terms with the factors that do not
   depend on its index taken out (a constant summed N times is N times it), and
   its index renamed canonically by nesting depth, so that equal sums are equal
   expressions;
4. the difference of the two sides expands to 0, with the sizes symbolic (N
   stays N: the proof is for every size, not a check at a few).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sympy as sp

from ..layers.ir import Claim, LayerKind, Statement
from .adjoint import GatherRule, value_reads


@dataclass(frozen=True)
class Proof:
    """A claim and the derived adjoint it was proved against. ``derived`` is the
    composition of the derived rules (step 1 of the module docstring) in the
    kind's own tensors; ``holds`` whether the difference expanded to 0."""

    claim: Claim
    derived: sp.Expr
    holds: bool
    expanded: tuple[str, ...] = ()  # tensors replaced by their definitions
    kept: tuple[str, ...] = ()  # statistics kept as symbols (read under a root)

    @property
    def derived_split(self) -> sp.Expr:
        """``derived`` with its sums split by linearity and their indices named
        s, t, ... by depth: the form the explanation prints."""
        taken = {str(x) for x in self.derived.free_symbols}
        names = [n for n in "stuvw" if n not in taken]
        split = _linear(self.derived, sp.expand_mul)
        return sp.expand_mul(_canonical(split, names))


class _Unsupported(Exception):
    """A rule the composition cannot read as a closed form (a guard that stays
    symbolic, such as a window's bounds)."""


def _fresh(taken: set[str]) -> sp.Symbol:
    for n in itertools.count():
        name = f"s{n}"
        if name not in taken:
            taken.add(name)
            return sp.Symbol(name, integer=True, nonnegative=True)
    raise AssertionError  # pragma: no cover


def _sum_indices(
    loops: tuple[tuple[sp.Symbol, sp.Expr], ...],
    sizes: dict[sp.Symbol, sp.Expr],
    taken: set[str],
) -> dict[sp.Symbol, sp.Expr]:
    """A fresh index for each loop, or 0 for a loop over one point (layer
    norm's statistics have an axis of one)."""
    return {
        s: sp.S.Zero if sp.sympify(extent).xreplace(sizes) == 1 else _fresh(taken)
        for s, extent in loops
    }


def _sums(
    value: sp.Expr,
    loops: tuple[tuple[sp.Symbol, sp.Expr], ...],
    fresh: dict[sp.Symbol, sp.Expr],
    sizes: dict[sp.Symbol, sp.Expr],
) -> sp.Expr:
    """``value`` summed over ``loops`` (their indices renamed by ``fresh``)."""
    for s, extent in reversed(loops):
        if fresh[s] != 0:
            value = sp.Sum(value, (fresh[s], 0, sp.sympify(extent).xreplace(sizes) - 1))
    return value


def _adjoint_name(read: sp.Indexed, kind: LayerKind) -> str | None:
    """The tensor whose adjoint ``read`` reads (``dxhat[...]`` -> "xhat")."""
    label = str(read.base.label)
    names = {t.name for t in kind.tensors}
    if label.startswith("d") and label[1:] in names and label not in names:
        return label[1:]
    return None


def compose(
    kind: LayerKind,
    gathers: tuple[GatherRule, ...],
    target: str,
    index: tuple[sp.Expr, ...],
    sizes: dict[sp.Symbol, sp.Expr],
) -> sp.Expr:
    """``d<target>[index]`` as one expression of the output adjoint ``d<output>``
    and the forward's tensors: the derived gather rules substituted into one
    another, every sum a ``Sum`` over a fresh index (step 1)."""
    taken = {str(s) for s in kind.input} | {str(s) for s in kind.bind}
    taken |= {str(s) for s in sizes} | {str(i) for i in index}

    def adjoint(name: str, at: tuple[sp.Expr, ...]) -> sp.Expr:
        if name == kind.output:
            return sp.IndexedBase(f"d{name}")[at]
        total = sp.S.Zero
        for form in gathers:
            if form.target != name:
                continue
            fresh = _sum_indices(form.sums, sizes, taken)
            mapping = {**dict(zip(form.target_index, at, strict=True)), **fresh}
            holds = True
            for condition in form.conditions:
                value = condition.xreplace(mapping)
                if value is sp.false:
                    holds = False
                elif value is not sp.true:
                    raise _Unsupported(str(condition))
            if not holds:
                continue
            value = form.value.xreplace(mapping).xreplace(sizes)
            for read in value_reads(value):
                inner = _adjoint_name(read, kind)
                if inner is not None:
                    value = value.xreplace({read: adjoint(inner, read.indices)})
            total += _sums(value, form.sums, fresh, sizes)
        return total

    return adjoint(target, tuple(index))


def _definitions(
    expr: sp.Expr, statements: tuple[Statement, ...], sizes: dict[sp.Symbol, sp.Expr]
) -> tuple[sp.Expr, list[str], list[str]]:
    """``expr`` with every read of a statement's target replaced by the
    statement's right-hand side (latest statement first, so that each
    substitution only brings in reads of earlier ones) (step 2); the tensors
    replaced and those kept as symbols."""
    taken = {str(s) for s in expr.atoms(sp.Symbol)}  # bound indices too
    expanded: list[str] = []
    kept: list[str] = []
    for st in reversed(statements):
        if _only_under_roots(expr, st.target):
            kept.append(st.target)
            continue
        expanded.append(st.target)

        def definition(read: sp.Indexed, st: Statement = st) -> sp.Expr:
            fresh = _sum_indices(st.reduce, sizes, taken)
            mapping = {**dict(zip(st.index, read.indices, strict=True)), **fresh}
            body = st.body.xreplace(mapping).xreplace(sizes)
            init = st.init.xreplace(mapping).xreplace(sizes)
            return init + _sums(body, st.reduce, fresh, sizes)

        expr = expr.replace(
            lambda e, st=st: (
                isinstance(e, sp.Indexed) and str(e.base.label) == st.target
            ),
            definition,
        )
    return expr, expanded, kept


def _only_under_roots(expr: sp.Expr, name: str) -> bool:
    """Whether every read of tensor ``name`` in ``expr`` is inside the base of a
    power with a non-integer exponent (and there is at least one)."""
    found = False

    def walk(node: sp.Basic, rooted: bool) -> bool:
        nonlocal found
        if isinstance(node, sp.Indexed):
            if str(node.base.label) == name:
                found = True
                return rooted
            return True
        if isinstance(node, sp.Pow) and not node.exp.is_integer:
            return walk(node.base, True) and walk(node.exp, rooted)
        return all(walk(a, rooted) for a in node.args)

    return walk(expr, False) and found


def _linear(expr: sp.Expr, expand: Callable[[sp.Expr], sp.Expr] = sp.expand) -> sp.Expr:
    """Every ``Sum`` split over the terms of its expanded body, with the factors
    that do not depend on its index taken out (step 3, inner sums first).
    ``expand``: how a body is expanded (``sp.expand_mul`` for display keeps
    powers such as ``(eps + var)**(3/2)`` whole)."""
    if not expr.args or isinstance(expr, (sp.Symbol, sp.Indexed)):
        return expr
    if not isinstance(expr, sp.Sum):
        return expr.func(*(_linear(a, expand) for a in expr.args))
    (var, lo, hi), *outer = expr.limits
    body = _linear(expr.function, expand)
    total = sp.S.Zero
    for term in sp.Add.make_args(expand(body)):
        const = [f for f in sp.Mul.make_args(term) if not f.has(var)]
        dep = [f for f in sp.Mul.make_args(term) if f.has(var)]
        if dep:
            total += sp.Mul(*const) * sp.Sum(sp.Mul(*dep), (var, lo, hi))
        else:
            total += sp.Mul(*const) * (hi - lo + 1)
    for limit in outer:
        total = _linear(sp.Sum(total, limit), expand)
    return total


def _canonical(expr: sp.Expr, names: Sequence[str] = (), depth: int = 0) -> sp.Expr:
    """Each ``Sum`` 's index renamed by its nesting depth (``names[depth]``, else
    ``_i<depth>``) (step 3): two sums of the same body over the same range
    become one expression."""
    if not expr.args or isinstance(expr, (sp.Symbol, sp.Indexed)):
        return expr
    if isinstance(expr, sp.Sum):
        (var, lo, hi), *_ = expr.limits
        label = names[depth] if depth < len(names) else f"_i{depth}"
        name = sp.Symbol(label, integer=True, nonnegative=True)
        body = _canonical(expr.function.xreplace({var: name}), names, depth + 1)
        return sp.Sum(body, (name, lo, hi))
    return expr.func(*(_canonical(a, names, depth) for a in expr.args))


def _vanishes(expr: sp.Expr) -> bool:
    """Whether ``expr`` is 0 once its sums are split by linearity and named
    canonically: with each sum and read a symbol, the numerator of the
    expression over one denominator expands to 0 (a few rounds: splitting can
    expose new equal sums)."""
    for _ in range(4):
        expr = _canonical(_linear(expr))
        atoms = sorted(expr.atoms(sp.Sum, sp.Indexed), key=sp.default_sort_key)
        symbols = {a: sp.Symbol(f"_atom{n}") for n, a in enumerate(atoms)}
        if sp.expand(sp.numer(sp.together(expr.xreplace(symbols)))) == 0:
            return True
        expr = sp.expand(expr)
    return False


def prove(kind: LayerKind, gathers: tuple[GatherRule, ...], claim: Claim) -> Proof:
    """Prove ``claim`` against the kind's derived ``gathers`` (module docstring)."""
    sizes = dict(claim.sizes)
    try:
        derived = compose(kind, gathers, claim.target, claim.index, sizes)
    except _Unsupported:
        return Proof(claim, sp.nan, holds=False)
    statements = tuple(st for st in kind.forward if st.target != kind.output)
    difference, expanded, kept = _definitions(derived - claim.value, statements, sizes)
    return Proof(
        claim,
        derived,
        holds=_vanishes(difference),
        expanded=tuple(expanded),
        kept=tuple(kept),
    )


@functools.lru_cache(maxsize=64)
def kind_proofs(kind: LayerKind, gathers: tuple[GatherRule, ...]) -> tuple[Proof, ...]:
    """The proofs of every claim of ``kind`` (cached: explanations and tests ask;
    the generated code never needs them)."""
    return tuple(prove(kind, gathers, claim) for claim in kind.claims)


__all__ = ["Proof", "compose", "kind_proofs", "prove"]
