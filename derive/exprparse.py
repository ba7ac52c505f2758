"""Safe parsing of user expressions into SymPy, without ``eval``.

``sympy.sympify`` and ``parse_expr`` call Python's ``eval`` on the text, so a
spec could run arbitrary code. Here the text is parsed with :mod:`ast` (which
never executes anything) and the tree is walked node by node: only numbers,
whitelisted names, arithmetic operators and whitelisted function calls are
accepted; everything else is refused with a message naming what was found.
"""

from __future__ import annotations

import ast
import difflib
import warnings
from collections.abc import Callable, Mapping

import sympy as sp

from .errors import ExpressionError

MAX_LENGTH = 1000
MAX_DEPTH = 60
MAX_CONST_EXPONENT = 64

#: Functions a user expression may call, by the name used in the text.
FUNCTIONS: Mapping[str, Callable[..., sp.Expr]] = {
    "exp": sp.exp,
    "log": sp.log,
    "sqrt": sp.sqrt,
    "abs": sp.Abs,
    "tanh": sp.tanh,
    "sinh": sp.sinh,
    "cosh": sp.cosh,
    "sin": sp.sin,
    "cos": sp.cos,
    "atan": sp.atan,
    "erf": sp.erf,
    "max": sp.Max,
    "min": sp.Min,
    "sigmoid": lambda u: 1 / (1 + sp.exp(-u)),
    "softplus": lambda u: sp.log(1 + sp.exp(u)),
}

#: Constants a user expression may name.
CONSTANTS: Mapping[str, sp.Expr] = {"pi": sp.pi, "e": sp.E}

_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_expression(text: str, symbols: Mapping[str, sp.Symbol]) -> sp.Expr:
    """Parse ``text`` into a SymPy expression using only ``symbols`` as variables.

    ``symbols`` maps names allowed in the text (e.g. ``x`` or ``y_hat``, ``y``
    and named constants) to SymPy symbols or numbers. Raises
    :class:`ExpressionError` naming the first refused construct.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"expression must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"expression is {len(text)} characters long; the limit is {MAX_LENGTH}"
        )
    if not text.strip():
        raise ExpressionError("expression is empty; write e.g. 'x*tanh(x)'")
    try:
        with warnings.catch_warnings():
            # e.g. "1and x": Python warns and parses; refuse it instead of printing
            warnings.simplefilter("error", SyntaxWarning)
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(
            f"expression {text!r} is not valid syntax: {exc.msg}"
        ) from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError(f"expression {text!r} is too deeply nested") from None
    allowed_names = sorted([*symbols, *CONSTANTS, *FUNCTIONS])
    try:
        return _convert(tree.body, symbols, allowed_names, 0)
    except RecursionError:
        raise ExpressionError(f"expression {text!r} is too deeply nested") from None


def _finite(expr: sp.Expr, node: ast.AST) -> sp.Expr:
    if expr.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
        raise ExpressionError(
            f"'{ast.unparse(node)}' is not finite (division by zero?); fix the constant"
        )
    return expr


def _check_constant_power(base: sp.Expr, exponent: sp.Expr) -> None:
    """Refuse constant exponents that would make SymPy work forever or build
    astronomically large numbers (10**10**10, (2**64)**64, x**exp(exp(100)))."""
    if not exponent.is_Rational:
        raise ExpressionError(
            f"constant exponent {exponent} must be a plain number such as 2 or 0.5"
        )
    if abs(exponent) > MAX_CONST_EXPONENT:
        raise ExpressionError(
            f"constant exponent {exponent} is too large (limit {MAX_CONST_EXPONENT})"
        )
    if base.is_Rational and base != 0:
        bits = max(abs(base.p).bit_length(), abs(base.q).bit_length())
        if bits * abs(float(exponent)) > 1024:
            raise ExpressionError(
                f"constant power {base}**{exponent} is too large for a float"
            )


def _convert(
    node: ast.AST, symbols: Mapping[str, sp.Expr], allowed: list[str], depth: int
) -> sp.Expr:
    if depth > MAX_DEPTH:
        raise ExpressionError(f"expression is nested deeper than {MAX_DEPTH} levels")

    def sub(n: ast.AST) -> sp.Expr:
        return _convert(n, symbols, allowed, depth + 1)

    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ExpressionError(
                f"only numbers are allowed as literals, found {value!r}"
            )
        if isinstance(value, float):
            return sp.nsimplify(value, rational=True) if value == value else sp.nan
        return sp.Integer(value)
    if isinstance(node, ast.Name):
        if node.id in symbols:
            return symbols[node.id]
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        if node.id in FUNCTIONS:
            raise ExpressionError(
                f"'{node.id}' is a function: call it, e.g. {node.id}(x)"
            )
        raise ExpressionError(
            f"unknown name '{node.id}'{_suggest(node.id, allowed)}; "
            f"allowed names: {', '.join(sorted([*symbols, *CONSTANTS]))}"
        )
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = sub(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left = sub(node.left)
        right = sub(node.right)
        if isinstance(node.op, ast.Pow) and right.is_number:
            _check_constant_power(left, right)
        return _finite(_BINOPS[type(node.op)](left, right), node)
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise ExpressionError(
                "only plain function calls such as exp(x) are allowed; "
                "attribute access and calls of calls are refused"
            )
        name = node.func.id
        if name not in FUNCTIONS:
            raise ExpressionError(
                f"unknown function '{name}'{_suggest(name, sorted(FUNCTIONS))}; "
                f"allowed functions: {', '.join(sorted(FUNCTIONS))}"
            )
        if node.keywords:
            raise ExpressionError(f"{name}() takes no keyword arguments")
        args = [sub(a) for a in node.args]
        arity = 2 if name in ("max", "min") else 1
        if len(args) != arity and not (name in ("max", "min") and len(args) >= 2):
            raise ExpressionError(
                f"{name}() takes {arity} argument(s), got {len(args)}"
            )
        try:
            return _finite(FUNCTIONS[name](*args), node)
        except (ValueError, TypeError) as exc:
            raise ExpressionError(
                f"{name}() cannot take these arguments: {exc}"
            ) from None
    kind = type(node).__name__
    raise ExpressionError(
        f"'{ast.unparse(node)}' ({kind}) is not allowed; expressions may use numbers, "
        "the names "
        + ", ".join(sorted(symbols))
        + ", + - * / **, and the functions "
        + ", ".join(sorted(FUNCTIONS))
    )
