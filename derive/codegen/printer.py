"""Printing SymPy as Numba-friendly Python code: the one place SymPy becomes code.

Scalar formulas print with ``math.*`` calls, Python conditional expressions for
``Piecewise``, calls to the stable helpers (``_softplus``, ``_sigmoid``) and, in
float32 modules, the fast tanh (``_tanh_fast``): the printer is chosen by dtype.
Common subexpressions are pulled out with ``sympy.cse``. Reads of tensors print
as ``name[i, j]``, their indices as integer arithmetic (``//`` and ``%``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from .runtime.helpers import HELPERS

#: float32 modules call these instead of the exact function (bench/ measures the
#: gain; tests/test_fast_paths.py bounds the error in float32 ulp). float64
#: modules always use the exact functions.
FAST_FLOAT32 = {"math.tanh": "_tanh_fast"}


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


class IndexPrinter(PythonCodePrinter):
    """Integer index arithmetic: ints stay ints, floor(a / k) is ``a // k``."""

    def __init__(self) -> None:
        super().__init__({"standard": "python3"})

    def _print_floor(self, expr: sp.Expr) -> str:
        arg = expr.args[0]
        numerator, denominator = sp.fraction(sp.together(arg))
        if denominator != 1 and denominator.is_Integer:
            prec = sp.printing.precedence.PRECEDENCE["Mul"]
            # parenthesized whole: -(a // 2) is not -a // 2
            numerator_text = self.parenthesize(numerator, prec, strict=True)
            return f"({numerator_text} // {denominator})"
        return f"math.floor({self._print(arg)})"  # pragma: no cover

    def _print_Mod(self, expr: sp.Expr) -> str:
        prec = sp.printing.precedence.PRECEDENCE["Mul"]
        a, b = expr.args
        return f"({self.parenthesize(a, prec, strict=True)} % {self._print(b)})"

    def _print_Indexed(self, expr: sp.Indexed) -> str:
        indices = ", ".join(self._print(i) for i in expr.indices)
        return f"{expr.base.label}[{indices}]"


_INDEX = IndexPrinter()


def index_code(expr: sp.Expr) -> str:
    """An integer index expression as code."""
    return _INDEX.doprint(sp.sympify(expr))


class NumbaPrinter(PythonCodePrinter):
    """Python code for scalar float math inside ``@numba.njit`` functions."""

    def __init__(self, dtype: str = "float64") -> None:
        super().__init__({"fully_qualified_modules": True, "standard": "python3"})
        self.dtype = dtype

    def _print_Softplus(self, expr: sp.Expr) -> str:
        return f"_softplus({self._print(expr.args[0])})"

    def _print_Sigmoid(self, expr: sp.Expr) -> str:
        return f"_sigmoid({self._print(expr.args[0])})"

    def _print_tanh(self, expr: sp.Expr) -> str:
        name = "math.tanh"
        if self.dtype == "float32":
            name = FAST_FLOAT32.get(name, name)
        return f"{name}({self._print(expr.args[0])})"

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

    def _print_Indexed(self, expr: sp.Indexed) -> str:
        return index_code(expr)

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


@functools.lru_cache(maxsize=2)
def _printer(dtype: str) -> NumbaPrinter:
    return NumbaPrinter(dtype)


def _rationals_to_floats(expr: sp.Basic) -> sp.Basic:
    """Non-integer rationals as 17-digit floats, except inside a read's indices
    (integer arithmetic: ``argmax // 2`` stays exact)."""
    if isinstance(expr, sp.Indexed):
        return expr
    if isinstance(expr, sp.Rational) and not expr.is_Integer:
        return sp.Float(expr, 17)
    if not expr.args or isinstance(expr, sp.Symbol):
        return expr
    return expr.func(*(_rationals_to_floats(a) for a in expr.args))


def code(expr: sp.Expr, dtype: str = "float64") -> str:
    """One expression as code (no CSE). Non-integer rationals print as floats."""
    return _printer(dtype).doprint(_rationals_to_floats(sp.sympify(expr)))


#: The scalar names an elementwise formula may read.
SCALAR_INPUTS = ("z", "a", "y", "lse")


def print_scalar_code(
    expr: sp.Expr, prefix: str = "t", dtype: str = "float64"
) -> ScalarCode:
    """CSE ``expr`` and print it; temporaries are named ``{prefix}0, {prefix}1, ...``."""
    if isinstance(expr, sp.Piecewise):
        # CSE would hoist branch-only work (e.g. exp(z) of the z <= 0 branch)
        # out of the conditional; print Piecewise whole instead.
        replacements, reduced = [], [expr]
    else:
        symbols = sp.numbered_symbols(prefix, real=True)
        replacements, reduced = sp.cse(expr, symbols=symbols, optimizations="basic")
    temps = tuple((str(sym), code(sub, dtype)) for sym, sub in replacements)
    result = code(reduced[0], dtype)
    text = " ".join([result, *(t for _, t in temps)])
    names = {str(s) for s in expr.free_symbols}
    inputs = tuple(n for n in SCALAR_INPUTS if n in names)
    return ScalarCode(temps, result, inputs, helpers_called(text))
