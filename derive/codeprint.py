"""Printing derived scalar expressions as Numba-friendly Python code.

The printer writes ``math.*`` calls (Numba compiles them to scalar code),
Python conditional expressions for ``Piecewise``, and calls to the stable
helpers (``_softplus``, ``_sigmoid``) that every generated module defines.
Common subexpressions are pulled out with ``sympy.cse`` so nothing is computed
twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

#: Helper functions a printed expression may call, by name (``_tanh_fast`` is
#: swapped in by the lowering for float32 modules).
HELPERS = ("_softplus", "_sigmoid", "_tanh_fast")


def helpers_called(text: str) -> tuple[str, ...]:
    """The HELPERS that the code ``text`` calls."""
    return tuple(h for h in HELPERS if h + "(" in text)


@dataclass(frozen=True)
class ScalarCode:
    """A scalar formula as code: CSE temporaries, then the result expression.

    ``inputs`` are the scalar names the code reads (of ``z``, ``a``, ``y``,
    ``lse``); ``helpers`` the stable helper functions it calls.
    """

    temps: tuple[tuple[str, str], ...]
    result: str
    inputs: tuple[str, ...]
    helpers: tuple[str, ...]


class NumbaPrinter(PythonCodePrinter):
    """Python code for scalar float math inside ``@numba.njit`` functions."""

    def __init__(self) -> None:
        super().__init__({"fully_qualified_modules": True, "standard": "python3"})

    def _print_Softplus(self, expr: sp.Expr) -> str:
        return f"_softplus({self._print(expr.args[0])})"

    def _print_Sigmoid(self, expr: sp.Expr) -> str:
        return f"_sigmoid({self._print(expr.args[0])})"

    def _print_sign(self, expr: sp.Expr) -> str:
        # sign(0) = 0, as SymPy's and PyTorch's; math.copysign would give 1.
        u = self._print(expr.args[0])
        return f"(1.0 if {u} > 0 else (-1.0 if {u} < 0 else 0.0))"

    def _print_Abs(self, expr: sp.Expr) -> str:
        return f"abs({self._print(expr.args[0])})"

    def _print_Rational(self, expr: sp.Rational) -> str:
        return (
            repr(float(expr.p) / float(expr.q)) if expr.q != 1 else f"{float(expr.p)!r}"
        )

    def _print_Integer(self, expr: sp.Integer) -> str:
        return f"{float(expr)!r}"

    def _print_Half(self, expr: sp.Expr) -> str:
        return "0.5"

    def _print_Float(self, expr: sp.Float) -> str:
        return repr(float(expr))

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        # Integer powers keep an integer exponent: Numba turns x**2 into
        # multiplications, while x**2.0 is a call to pow().
        base, exponent = expr.args
        if exponent.is_Integer and exponent != 0:
            prec = sp.printing.precedence.PRECEDENCE["Pow"]
            b = self.parenthesize(base, prec, strict=True)
            if exponent > 0:
                return f"{b}**{int(exponent)}"
            return f"(1.0 / {b}**{-int(exponent)})"
        return super()._print_Pow(expr, rational=rational)


_PRINTER = NumbaPrinter()


def code(expr: sp.Expr) -> str:
    """One expression as code (no CSE). Non-integer rationals print as floats."""
    floats = {r: sp.Float(r, 17) for r in expr.atoms(sp.Rational) if not r.is_Integer}
    return _PRINTER.doprint(expr.xreplace(floats))


def print_scalar_code(expr: sp.Expr, prefix: str = "t") -> ScalarCode:
    """CSE ``expr`` and print it; temporaries are named ``{prefix}0, {prefix}1, ...``."""
    if isinstance(expr, sp.Piecewise):
        # CSE would hoist branch-only work (e.g. exp(z) of the z <= 0 branch)
        # out of the conditional; print Piecewise whole instead.
        replacements, reduced = [], [expr]
    else:
        symbols = sp.numbered_symbols(prefix, real=True)
        replacements, reduced = sp.cse(expr, symbols=symbols, optimizations="basic")
    temps = tuple((str(sym), code(sub)) for sym, sub in replacements)
    result = code(reduced[0])
    text = " ".join([result, *(t for _, t in temps)])
    names = {str(s) for s in expr.free_symbols}
    inputs = tuple(n for n in ("z", "a", "y", "lse") if n in names)
    return ScalarCode(temps, result, inputs, helpers_called(text))
