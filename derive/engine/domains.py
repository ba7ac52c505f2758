"""Where a user expression is defined on the reals, as SymPy can decide it.

A user activation ``log(x)`` is undefined for x <= 0, but a pre-activation
``z = W a + b`` takes any real value: training meets NaN as soon as one z is
negative. :func:`domain_warnings` names every user expression of a spec whose
real domain is restricted (SymPy's ``continuous_domain``, plus non-integer
powers, which the generated code evaluates as real powers: NaN for a negative
base), with the domain, so the spec validator can say so up front and
``derive explain`` can show it. A user loss is checked in ``y_hat`` against the
output activation's range (``function_range``) and in ``y``, the targets.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sympy as sp
from sympy.calculus.util import continuous_domain, function_range

if TYPE_CHECKING:
    from ..spec import Spec


@dataclass(frozen=True)
class DomainWarning:
    """A user expression defined only on part of the reals."""

    where: str  # e.g. "layers[1].activation", "loss"
    expr: str  # the expression's text, as in the spec
    variable: str  # "x", "y_hat" or "y"
    domain: sp.Set  # where it is defined and finite
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def real_domain(expr: sp.Expr, symbol: sp.Symbol) -> sp.Set:
    """Where ``expr`` is defined, finite and real as a function of ``symbol``
    (the other symbols any real value): SymPy's continuous domain, intersected
    with a non-negative base for every non-integer power."""
    domain = continuous_domain(expr, symbol, sp.S.Reals)
    for power in expr.atoms(sp.Pow):
        base, exponent = power.args
        if exponent.is_integer or not base.has(symbol):
            continue
        condition = base > 0 if exponent.is_negative else base >= 0
        domain = domain.intersect(sp.solveset(condition, symbol, sp.S.Reals))
    return domain


@functools.lru_cache(maxsize=128)
def _cached_domain(expr: sp.Expr, symbol: sp.Symbol) -> sp.Set | None:
    try:
        domain = real_domain(expr, symbol)
    except (NotImplementedError, ValueError, TypeError):  # SymPy cannot decide
        return None
    return domain if isinstance(domain, sp.Set) else None


@functools.lru_cache(maxsize=64)
def _cached_range(expr: sp.Expr, symbol: sp.Symbol) -> sp.Set:
    try:
        result = function_range(expr, symbol, sp.S.Reals)
    except (NotImplementedError, ValueError, TypeError):
        return sp.S.Reals
    return result if isinstance(result, sp.Set) else sp.S.Reals


def _text(domain: sp.Set, variable: str) -> str:
    """``x > 0``, ``x >= 0``, ``x != 0``, or the set in SymPy's words."""
    symbol = sp.Symbol(variable, real=True)
    if isinstance(domain, sp.Interval) and domain.sup is sp.oo:
        return f"{variable} {'>' if domain.left_open else '>='} {domain.inf}"
    if isinstance(domain, sp.Interval) and domain.inf is -sp.oo:
        return f"{variable} {'<' if domain.right_open else '<='} {domain.sup}"
    missing = sp.S.Reals - domain
    if isinstance(missing, sp.FiniteSet):
        points = ", ".join(str(p) for p in sorted(missing, key=float))
        return f"{variable} != {points}"
    condition = domain.as_relational(symbol)
    return str(condition)


def domain_warnings(spec: Spec) -> tuple[DomainWarning, ...]:
    """The spec's user expressions (activations and loss) whose real domain is
    restricted, each with its domain and what it means for training."""
    from .derivation import Y_HAT, Y, Z

    out: list[DomainWarning] = []
    for index, layer in enumerate(spec.layers):
        ref = layer.activation
        if ref is None or ref.expr is None:
            continue
        f = spec.activation_def(index).forward(Z)
        domain = _cached_domain(f, Z)
        if domain is None or domain == sp.S.Reals:
            continue
        domain = domain.xreplace({Z: sp.Symbol("x", real=True)})
        out.append(
            DomainWarning(
                f"layers[{index + 1}].activation",
                ref.expr,
                "x",
                domain,
                f"'{ref.expr}' is defined only for {_text(domain, 'x')} (SymPy's "
                f"real domain), but the pre-activation z{index + 1} it is applied to "
                "can be any real number: training gives NaN once one is outside; "
                "use an expression defined on all reals (e.g. log(1 + exp(x)) for "
                "log(x), sqrt(x**2 + 1) for sqrt(x))",
            )
        )
    if spec.loss.expr is not None:
        per_element = spec.loss_def().forward(Y_HAT, Y)
        last = len(spec.layers) - 1
        output = spec.activation_def(last).forward(Z)
        reach = _cached_range(output, Z) if output.has(Z) else sp.S.Reals
        for symbol, variable in ((Y_HAT, "y_hat"), (Y, "y")):
            domain = _cached_domain(per_element, symbol)
            if domain is None or domain == sp.S.Reals:
                continue
            shown = _text(domain, variable)
            if symbol == Y_HAT:
                if reach.is_subset(domain):
                    continue
                label = spec.layers[last].activation
                span = "any real value" if reach == sp.S.Reals else str(reach)
                what = (
                    f"but the output activation {label.label if label else ''} "
                    f"takes {span}: the loss is NaN where an output is outside"
                )
            else:
                what = "so every target must satisfy it"
            out.append(
                DomainWarning(
                    "loss",
                    spec.loss.expr,
                    variable,
                    domain,
                    f"'{spec.loss.expr}' is defined only for {shown} (SymPy's real "
                    f"domain), {what}",
                )
            )
    return tuple(out)
