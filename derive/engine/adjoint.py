"""Backward rules derived from a layer kind's index-form statements.

For every statement ``target[I] = init + sum over R of body`` (last first) and
every read ``A = X[g(I, R)]`` of a float tensor, SymPy gives the scalar partial
``p = d body / d A`` (``A`` replaced by a symbol), and the rule is the adjoint
accumulation inside the forward's own loops and guards::

    dX[g(I, R)] += d<target>[I] * p        for every (I, R) where the reads are in range

No index is inverted, so this *scatter* form is exact for every stride, padding,
dilation and remainder. For explanations, :func:`gather` turns a rule into the
textbook form ``dX[u] = sum ... [guards] ...`` by eliminating one loop index per
index equation: a unit coefficient substitutes; a coefficient ``a`` substitutes
with the guard ``(u - rest) % a == 0`` (never ``Sum.doit()``, which is unsound for
non-unit coefficients); an index that goes through an integer tensor stays an
Iverson bracket. :func:`derive.engine.interpret.check_gather` compares both
forms numerically.

Reads outside a tensor's range are 0 (padding). A point where a read is out of
range is skipped; that is exact only when the expression vanishes with that read
at 0, which the engine checks (else :class:`~derive.errors.DerivationError`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import sympy as sp

from ..errors import DerivationError
from ..layers.ir import LayerKind, Statement

Loop = tuple[sp.Symbol, sp.Expr]


@dataclass(frozen=True)
class Guard:
    """``0 <= expr < extent``: a read's index inside its tensor's axis."""

    expr: sp.Expr
    extent: sp.Expr

    def condition(self) -> sp.Boolean:
        return sp.And(sp.Ge(self.expr, 0), sp.Lt(self.expr, self.extent))


@dataclass(frozen=True)
class AdjointRule:
    """``d<target>[target_index] += d<seed>[seed_index] * partial`` for every point
    of ``loops`` where every guard holds (one sample; the batch axis is implicit).

    ``statement`` is the forward statement's position and ``term`` the part of it
    the read was in ("init" reads are added once per output point, so their
    loops are the statement's index loops only).
    """

    target: str
    target_index: tuple[sp.Expr, ...]
    seed: str
    seed_index: tuple[sp.Symbol, ...]
    partial: sp.Expr
    index_loops: tuple[Loop, ...]
    reduce_loops: tuple[Loop, ...]
    guards: tuple[Guard, ...]
    statement: int
    term: str

    @property
    def loops(self) -> tuple[Loop, ...]:
        return self.index_loops + self.reduce_loops

    @property
    def seed_read(self) -> sp.Indexed:
        return adjoint_base(self.seed)[self.seed_index]

    @property
    def value(self) -> sp.Expr:
        """What one loop point adds: the seed's adjoint times the partial."""
        return self.seed_read * self.partial


@dataclass(frozen=True)
class GatherRule:
    """``d<target>[target_index] = sum over sums of [conditions] value``: the
    textbook form of one rule. Reads of ``padded`` tensors in ``value`` may fall
    outside their range, where they are 0 (zero padding), so they need no
    condition of their own."""

    target: str
    target_index: tuple[sp.Symbol, ...]
    sums: tuple[Loop, ...]
    conditions: tuple[sp.Boolean, ...]
    value: sp.Expr
    padded: tuple[str, ...] = ()  # tensors read in value that may be read as padding


def adjoint_base(name: str) -> sp.IndexedBase:
    """The IndexedBase of tensor ``name``'s adjoint, ``d<name>``."""
    return sp.IndexedBase(f"d{name}")


def value_reads(expr: sp.Expr) -> tuple[sp.Indexed, ...]:
    """The reads whose values ``expr`` uses (not the integer reads inside an
    index, such as the argmax of a pooling read), in a stable order."""
    found: dict[sp.Indexed, None] = {}

    def walk(node: sp.Basic) -> None:
        if isinstance(node, sp.Indexed):
            found[node] = None
            return
        for arg in node.args:
            walk(arg)

    walk(expr)
    return tuple(sorted(found, key=sp.default_sort_key))


def index_reads(expr: sp.Expr) -> tuple[sp.Indexed, ...]:
    """The integer reads inside the indices of ``expr``'s reads."""
    found: dict[sp.Indexed, None] = {}
    for read in value_reads(expr):
        for index in read.indices:
            for node in sp.preorder_traversal(index):
                if isinstance(node, sp.Indexed):
                    found[node] = None
    return tuple(sorted(found, key=sp.default_sort_key))


def _read_guards(
    read: sp.Indexed, shapes: Mapping[str, tuple[sp.Expr, ...]], loops: Sequence[Loop]
) -> tuple[Guard, ...]:
    """The guards that keep ``read`` inside its tensor: one per axis whose index
    is not simply a loop index running over exactly that axis."""
    extents = dict(loops)
    shape = shapes[str(read.base.label)]
    guards = []
    for index, extent in zip(read.indices, shape, strict=True):
        if isinstance(index, sp.Symbol) and extents.get(index) == extent:
            continue
        if index.is_Integer and index >= 0 and sp.sympify(extent - index).is_positive:
            continue  # a constant position inside the axis
        guards.append(Guard(index, extent))
    return tuple(guards)


def statement_guards(
    statement: Statement, expr: sp.Expr, kind: LayerKind, loops: Sequence[Loop]
) -> tuple[Guard, ...]:
    """The guards of every read of ``expr``, checked to be exact as skips: with a
    guarded read at 0 (padding), ``expr`` must vanish."""
    shapes = {t.name: t.shape for t in kind.tensors}
    guards: dict[Guard, None] = {}
    for read in value_reads(expr):
        own = _read_guards(read, shapes, loops)
        if own and statement.outside == "zero" and expr.xreplace({read: 0}) != 0:
            raise DerivationError(
                f"layer kind {kind.name}: {statement.target} reads {read}, which can "
                "leave its tensor's range, outside a product; the engine skips "
                "out-of-range points, which is exact only when the read is a factor"
            )
        guards.update(dict.fromkeys(own))
    return tuple(guards)


def _partial(expr: sp.Expr, read: sp.Indexed) -> sp.Expr:
    symbol = sp.Dummy("read", real=True)
    return sp.diff(expr.xreplace({read: symbol}), symbol).xreplace({symbol: read})


@functools.lru_cache(maxsize=64)
def derive_rules(kind: LayerKind) -> tuple[AdjointRule, ...]:
    """Every backward rule of ``kind``: for each statement, last first, and each
    read of a float tensor in it, the scatter accumulation (module docstring)."""
    shapes = {t.name: t.shape for t in kind.tensors}
    # integer tensors, masks and module state carry no gradient
    integer = {t.name for t in kind.tensors if t.role in ("index", "mask", "state")}
    rules: list[AdjointRule] = []
    for position in reversed(range(len(kind.forward))):
        statement = kind.forward[position]
        if statement.op != "sum":
            continue  # an argmax is an integer: nothing flows through it
        index_loops = tuple(zip(statement.index, shapes[statement.target], strict=True))
        terms = (
            ("init", statement.init, index_loops, ()),
            ("body", statement.body, index_loops, statement.reduce),
        )
        for term, expr, outer, inner in terms:
            loops = outer + tuple(inner)
            guards = statement_guards(statement, expr, kind, loops)
            for read in value_reads(expr):
                name = str(read.base.label)
                if name in integer:
                    continue
                partial = _partial(expr, read)
                if partial == 0:
                    continue
                rules.append(
                    AdjointRule(
                        target=name,
                        target_index=tuple(read.indices),
                        seed=statement.target,
                        seed_index=statement.index,
                        partial=partial,
                        index_loops=outer,
                        reduce_loops=tuple(inner),
                        guards=guards,
                        statement=position,
                        term=term,
                    )
                )
    return tuple(rules)


# ----------------------------------------------------------------- gather form

_FREE_NAMES = ("u", "v", "w", "r", "t")


def _free_symbol(taken: set[str]) -> sp.Symbol:
    for name in _FREE_NAMES + tuple(f"u{i}" for i in range(10)):
        if name not in taken:
            taken.add(name)
            return sp.Symbol(name, integer=True, nonnegative=True)
    raise DerivationError("ran out of index names")  # pragma: no cover


def _linear_terms(
    expr: sp.Expr, variables: Iterable[sp.Symbol]
) -> dict[sp.Symbol, sp.Expr] | None:
    """Coefficients of ``variables`` if ``expr`` is affine in them, else None."""
    variables = [v for v in variables if expr.has(v)]
    if not variables:
        return {}
    poly = sp.Poly(expr, *variables) if expr.is_polynomial(*variables) else None
    if poly is None or poly.total_degree() > 1:
        return None
    return {v: poly.coeff_monomial(v) for v in variables}


def gather(
    rule: AdjointRule, target_shape: Sequence[sp.Expr], taken: Iterable[str] = ()
) -> GatherRule:
    """The textbook (gather) form of ``rule`` (module docstring)."""
    names = {str(s) for s, _ in rule.loops} | {str(s) for s in taken}
    names |= {str(s) for s in rule.value.free_symbols}
    remaining = dict(rule.loops)
    index_loops = [s for s, _ in rule.index_loops]
    substitution: dict[sp.Symbol, sp.Expr] = {}
    conditions: list[sp.Boolean] = []
    free: list[sp.Symbol] = []
    for axis, index in enumerate(rule.target_index):
        index = sp.sympify(index).xreplace(substitution)
        extent = target_shape[axis]
        if isinstance(index, sp.Symbol) and index in remaining:
            # a plain loop index: it becomes the target's own index
            if remaining[index] != extent:
                conditions.append(sp.Lt(index, remaining[index]))
            free.append(index)
            del remaining[index]
            continue
        u = _free_symbol(names)
        free.append(u)
        coefficients = (
            _linear_terms(index, list(remaining)) if not index_reads_in(index) else None
        )
        if not coefficients:
            conditions.append(sp.Eq(index, u))  # an Iverson bracket
            continue
        # eliminate the forward's own (output) index first, then a unit coefficient
        choice = sorted(
            coefficients,
            key=lambda s: (s not in index_loops, abs(coefficients[s]) != 1, str(s)),
        )[0]
        a = coefficients[choice]
        rest = index - a * choice
        numerator = u - rest
        if not (a == 1 or a == -1):
            conditions.append(sp.Eq(sp.Mod(numerator, a), 0))
        value = sp.expand(numerator / a) if a in (1, -1) else numerator / a
        conditions.extend([sp.Ge(value, 0), sp.Lt(value, remaining[choice])])
        substitution[choice] = value
        del remaining[choice]
    value = rule.value.xreplace(substitution)
    # the index of each bracketed axis is that axis's free index
    bracketed = {
        c.lhs: c.rhs for c in conditions if isinstance(c, sp.Eq) and c.rhs in free
    }
    value_indices = {i for read in value_reads(value) for i in read.indices}
    padded: list[str] = []
    for guard in rule.guards:
        bound = guard.expr.xreplace(substitution)
        bound = bracketed.get(bound, bound)
        if bound in value_indices:
            # a read of the value: it is 0 outside its range by itself
            padded.extend(
                str(r.base.label) for r in value_reads(value) if bound in r.indices
            )
            continue
        conditions.extend([sp.Ge(bound, 0), sp.Lt(bound, guard.extent)])
    kept = _simplify_conditions(conditions, dict(zip(free, target_shape, strict=True)))
    return GatherRule(
        target=rule.target,
        target_index=tuple(free),
        sums=tuple((s, e) for s, e in rule.loops if s in remaining),
        conditions=kept,
        value=value,
        padded=tuple(dict.fromkeys(padded)),
    )


def index_reads_in(expr: sp.Expr) -> bool:
    return any(isinstance(node, sp.Indexed) for node in sp.preorder_traversal(expr))


def _simplify_conditions(
    conditions: Sequence[sp.Boolean], free_extents: Mapping[sp.Symbol, sp.Expr]
) -> tuple[sp.Boolean, ...]:
    """Drop conditions that always hold (``0 <= u`` for a non-negative index,
    ``u < extent`` of the target's own axis, ``Mod(..., 1) == 0``) and repeats."""
    kept: dict[sp.Boolean, None] = {}
    for condition in conditions:
        condition = sp.simplify(condition) if condition.has(sp.Mod) else condition
        if condition is sp.true:
            continue
        if (
            isinstance(condition, sp.Lt)
            and condition.lhs in free_extents
            and free_extents[condition.lhs] == condition.rhs
        ):
            continue
        kept[condition] = None
    return tuple(kept)
