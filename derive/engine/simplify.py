"""Simplification as a named, ordered list of passes (after pystencils'
``SimplificationStrategy``), plus the stable-form rewrites.

Each pass is a plain function ``Expr -> Expr``. A strategy applies its passes
in order and reports what each did (:meth:`SimplificationStrategy.run`: the
operation count after every pass), so the pipeline is easy to see and to
change: ``DERIVATIVE_STRATEGY.describe()`` lists it, the derivation keeps each
derived expression's :class:`Trace`, and ``derive explain --passes`` prints them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp


class Softplus(sp.Function):
    """``log(1 + exp(u))``, printed as a call to a stable helper.

    Introduced only by the rewrite passes below, after differentiation, so it
    never needs a derivative of its own.
    """

    nargs = 1

    def _latex(
        self, printer: sp.printing.latex.LatexPrinter, exp: str | None = None
    ) -> str:
        body = rf"\operatorname{{softplus}}\left({printer._print(self.args[0])}\right)"
        return body if exp is None else f"{body}^{{{exp}}}"


class Sigmoid(sp.Function):
    """``1 / (1 + exp(-u))``, printed as a call to a stable helper."""

    nargs = 1

    def _latex(
        self, printer: sp.printing.latex.LatexPrinter, exp: str | None = None
    ) -> str:
        body = rf"\sigma\left({printer._print(self.args[0])}\right)"
        return body if exp is None else f"{body}^{{{exp}}}"


@dataclass(frozen=True)
class Pass:
    """One named rewrite of an expression."""

    name: str
    func: Callable[[sp.Expr], sp.Expr]
    doc: str


@dataclass(frozen=True)
class Step:
    """One pass of a strategy run: its name, its output, that output's
    operation count (``sympy.count_ops``), and whether it changed anything."""

    name: str
    expr: sp.Expr
    ops: int
    changed: bool


@dataclass(frozen=True)
class Trace:
    """A strategy run on one expression: the input and each pass's step."""

    strategy: str
    input: sp.Expr
    input_ops: int
    steps: tuple[Step, ...]

    @property
    def output(self) -> sp.Expr:
        return self.steps[-1].expr if self.steps else self.input


@dataclass(frozen=True)
class SimplificationStrategy:
    """An ordered list of passes applied one after another."""

    name: str
    passes: tuple[Pass, ...]

    def apply(self, expr: sp.Expr) -> sp.Expr:
        for p in self.passes:
            expr = p.func(expr)
        return expr

    def run(self, expr: sp.Expr) -> tuple[sp.Expr, Trace]:
        """The result of every pass in order, and the trace of what each did."""
        steps = []
        start = expr
        for p in self.passes:
            new = p.func(expr)
            steps.append(Step(p.name, new, int(sp.count_ops(new)), new != expr))
            expr = new
        return expr, Trace(self.name, start, int(sp.count_ops(start)), tuple(steps))

    def describe(self) -> str:
        return "\n".join(
            f"{i}. {p.name}: {p.doc}" for i, p in enumerate(self.passes, 1)
        )


# ------------------------------------------------------------------ the passes


@functools.lru_cache(maxsize=256)
def simplified(expr: sp.Expr) -> sp.Expr:
    """``sympy.simplify(expr)``, remembered per expression: an activation's raw
    derivative is simplified by its strategy and again for its output form (2 s
    each for gelu_tanh)."""
    return sp.simplify(expr)


def simplify_branches(expr: sp.Expr) -> sp.Expr:
    """``sympy.simplify`` each branch of a Piecewise separately (and the whole
    expression otherwise); conditions are left as written, so the PyTorch
    conventions at non-smooth points survive."""
    expr = sp.piecewise_fold(expr)
    if isinstance(expr, sp.Piecewise):
        return sp.Piecewise(*[(simplify_branches(e), c) for e, c in expr.args])
    return _smaller(expr, simplified(expr))


def together_logs(expr: sp.Expr) -> sp.Expr:
    """Put each log's argument over one denominator, so ``expand_log`` can split it."""
    return expr.replace(
        lambda e: isinstance(e, sp.log), lambda e: sp.log(sp.together(e.args[0]))
    )


def expand_logs(expr: sp.Expr) -> sp.Expr:
    """``log(p/q) -> log p - log q``, ``log(exp(u)) -> u`` (all symbols are real)."""
    return sp.expand_log(expr, force=True)


def _is_log1p_exp(e: sp.Expr) -> bool:
    if not isinstance(e, sp.log):
        return False
    arg = e.args[0]
    return (
        isinstance(arg, sp.Add)
        and len(arg.args) == 2
        and sp.S.One in arg.args
        and any(isinstance(t, sp.exp) for t in arg.args)
    )


def introduce_softplus(expr: sp.Expr) -> sp.Expr:
    """``log(1 + exp(u)) -> softplus(u)``, evaluated without overflow."""

    def rewrite(e: sp.Expr) -> sp.Expr:
        (exp_term,) = [t for t in e.args[0].args if isinstance(t, sp.exp)]
        return Softplus(exp_term.args[0])

    return expr.replace(_is_log1p_exp, rewrite)


def introduce_sigmoid(expr: sp.Expr) -> sp.Expr:
    """Rewrite exponentials of one linear argument as a polynomial in ``sigmoid``.

    With ``s = sigmoid(u)``, ``exp(u) = s / (1 - s)``; when the rewritten
    expression is a polynomial in ``s`` it no longer divides huge exponentials
    by each other (``exp(z) / (exp(z) + 1)`` is NaN at z = 1000; ``s`` is not).
    Anything else is left unchanged.
    """
    if isinstance(expr, sp.Piecewise):
        return sp.Piecewise(*[(introduce_sigmoid(e), c) for e, c in expr.args])
    exps = [e for e in expr.atoms(sp.exp)]
    if not exps:
        return expr
    base = None
    for e in exps:
        arg = e.args[0]
        symbols = arg.free_symbols
        if len(symbols) != 1:
            return expr
        (sym,) = symbols
        coeff = sp.simplify(arg / sym)
        if not coeff.is_number or coeff == 0:
            return expr
        if base is None:
            base = sym
        elif base != sym:
            return expr
    s = sp.Dummy("s")
    substituted = expr
    for e in exps:
        coeff = sp.simplify(e.args[0] / base)
        substituted = substituted.subs(e, (s / (1 - s)) ** coeff)
    substituted = sp.factor(sp.cancel(sp.together(substituted)))
    if substituted.has(sp.exp) or not substituted.is_polynomial(s):
        return expr
    return substituted.subs(s, Sigmoid(base))


def _smaller(old: sp.Expr, new: sp.Expr) -> sp.Expr:
    return new if sp.count_ops(new) <= sp.count_ops(old) else old


def factor_terms(expr: sp.Expr) -> sp.Expr:
    """Pull common factors out of sums (cheaper to evaluate, easier to read)."""
    if isinstance(expr, sp.Piecewise):
        return sp.Piecewise(*[(factor_terms(e), c) for e, c in expr.args])
    return _smaller(expr, sp.factor_terms(expr))


SIMPLIFY = Pass(
    "simplify_branches", simplify_branches, "sympy.simplify per Piecewise branch"
)
STABLE_SIGMOID = Pass(
    "introduce_sigmoid", introduce_sigmoid, "exp(u) ratios -> polynomial in sigmoid(u)"
)
STABLE_SOFTPLUS = Pass(
    "introduce_softplus", introduce_softplus, "log(1 + exp(u)) -> softplus(u)"
)
FACTOR = Pass("factor_terms", factor_terms, "pull common factors out of sums")

#: For activation forwards and derivatives.
#: The stable rewrites run first: simplify would turn exp ratios into
#: cosh(z/2)**-2 forms that overflow.
DERIVATIVE_STRATEGY = SimplificationStrategy(
    "derivative", (STABLE_SOFTPLUS, STABLE_SIGMOID, SIMPLIFY, FACTOR)
)

#: For a loss composed with its output activation, as a function of z: split the
#: logs first so that log(sigmoid) and log(softmax) become softplus / log-sum-exp.
LOSS_VALUE_STRATEGY = SimplificationStrategy(
    "loss value",
    (
        Pass("together_logs", together_logs, "each log argument over one denominator"),
        Pass("expand_logs", expand_logs, "log(p/q) -> log p - log q, log(exp u) -> u"),
        STABLE_SOFTPLUS,
        Pass("expand", sp.expand, "multiply out"),
        FACTOR,
    ),
)


#: The strategies, for a legend of their passes (``derive explain --passes``).
STRATEGIES: tuple[SimplificationStrategy, ...] = (
    DERIVATIVE_STRATEGY,
    LOSS_VALUE_STRATEGY,
)
