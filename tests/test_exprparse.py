"""Tests for derive.exprparse: the safe (no-eval) parser of user expressions."""

from __future__ import annotations

import builtins
import os
import signal
import string
from pathlib import Path

import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derive.errors import ExpressionError
from derive.exprparse import MAX_CONST_EXPONENT, MAX_DEPTH, MAX_LENGTH, parse_expression

SENTINEL = Path("/tmp/derive_pwned")

x = sp.Symbol("x", real=True)
y_hat, y = sp.symbols("y_hat y", real=True)
X = {"x": x}
LOSS = {"y_hat": y_hat, "y": y}


def parse(text):
    return parse_expression(text, X)


# --------------------------------------------------------------------- valid


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x", x),
        ("x*tanh(x)", x * sp.tanh(x)),
        ("x*tanh(log(1 + exp(x)))", x * sp.tanh(sp.log(1 + sp.exp(x)))),
        ("-x", -x),
        ("+x", x),
        ("--x", x),
        ("x - -x", 2 * x),
        ("x**2", x**2),
        ("x**-1", 1 / x),
        ("x**0.5", sp.sqrt(x)),
        ("2**x", 2**x),
        ("x**2**3", x**8),  # right-associative, as in Python
        ("(x + 1)**3", (x + 1) ** 3),
        ("2.5*x", sp.Rational(5, 2) * x),
        ("1/2*x", x / 2),
        ("x/3", x / 3),
        ("3 - x", 3 - x),
        ("max(x, 0)", sp.Max(x, 0)),
        ("min(x, 1)", sp.Min(x, 1)),
        ("max(x, 0, -x)", sp.Max(x, 0, -x)),
        ("sigmoid(x)", 1 / (1 + sp.exp(-x))),
        ("softplus(x)", sp.log(1 + sp.exp(x))),
        ("abs(x)", sp.Abs(x)),
        ("sqrt(x)", sp.sqrt(x)),
        ("erf(x)", sp.erf(x)),
        ("atan(x) + sin(x) + cos(x)", sp.atan(x) + sp.sin(x) + sp.cos(x)),
        ("sinh(x) * cosh(x)", sp.sinh(x) * sp.cosh(x)),
        ("pi", sp.pi),
        ("e", sp.E),
        ("pi*x", sp.pi * x),
        ("e**x", sp.exp(x)),
        ("x*erf(x/sqrt(2))/2", x * sp.erf(x / sp.sqrt(2)) / 2),
        ("  x * 2  ", 2 * x),
        ("1e3 * x", 1000 * x),
        ("7", sp.Integer(7)),
    ],
)
def test_valid_expression_gives_expected_sympy(text, expected):
    result = parse(text)
    assert isinstance(result, sp.Expr)
    assert result == expected
    assert sp.simplify(result - expected) == 0


def test_floats_become_exact_rationals():
    result = parse("0.1*x")
    assert result == sp.Rational(1, 10) * x
    assert not result.atoms(sp.Float)


def test_loss_symbols_and_named_constants():
    result = parse_expression("(y_hat - y)**2 / 2", LOSS)
    assert result == (y_hat - y) ** 2 / 2
    k = sp.Rational(1, 2)
    assert parse_expression("x*k", {"x": x, "k": k}) == x / 2
    # x is not a name in a loss expression
    with pytest.raises(ExpressionError, match="unknown name 'x'"):
        parse_expression("x*y", LOSS)


def test_symbols_used_are_the_ones_given():
    result = parse("x*tanh(x)")
    assert result.free_symbols == {x}
    other = sp.Symbol("x")  # not real: a different symbol
    assert parse_expression("x", {"x": other}) == other
    assert parse_expression("x", {"x": other}) != x


# ------------------------------------------------------------------- hostile


HOSTILE = [
    "__import__('os').system('touch /tmp/derive_pwned')",
    "__import__('os')",
    "().__class__.__bases__[0].__subclasses__()",
    "x.__class__",
    "x.real",
    "exp.__globals__",
    "lambda: 1",
    "(lambda: __import__('os').system('touch /tmp/derive_pwned'))()",
    "[x for x in ()]",
    "{x for x in ()}",
    "(x for x in ())",
    "open('/etc/passwd')",
    "open('/tmp/derive_pwned', 'w')",
    "eval('1')",
    "exec('1')",
    "exec(\"open('/tmp/derive_pwned','w')\")",
    "compile('1', 'f', 'eval')",
    "globals()",
    "getattr(x, 'real')",
    "__builtins__",
    "x if x else x",
    "x; import os",
    "import os",
    "x\nimport os",
    "x[0]",
    "exp[0](x)",
    "'abc'",
    "b'abc'",
    "f'{x}'",
    "exp(x=1)",
    "max(x, y=0)",
    "exp(*[x])",
    "exp(**{})",
    "x**10**10",
    "2**1000",
    "x**-100",
    "x < 1",
    "x and x",
    "not x",
    "~x",
    "x // 2",
    "x % 2",
    "x @ x",
    "x << 1",
    "(x, x)",
    "[x]",
    "{x: 1}",
    "(y := 1)",
    "True",
    "None",
    "...",
    "1j",
    "x = 1",
    "tanh",
    "exp(x)(x)",
    "x" * 5000,
    "x+" * 2500 + "x",
    "(" * 500 + "x" + ")" * 500,
    "(" * 499 + "x" + ")" * 499,
    "-" * 900 + "x",
    "exp(" * 100 + "x" + ")" * 100,
    "",
    "   ",
    "\n",
    "x\x00",
    "exp()",
    "exp(x, x)",
    "max(x)",
]


@pytest.fixture
def no_eval(monkeypatch):
    """Remove the sentinel, and make eval/exec blow up if anything calls them."""
    if SENTINEL.exists():
        SENTINEL.unlink()
    calls: list[str] = []

    def trap(name):
        def f(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} called")

        return f

    monkeypatch.setattr(builtins, "eval", trap("eval"))
    monkeypatch.setattr(builtins, "exec", trap("exec"))
    yield calls
    assert not SENTINEL.exists(), "a hostile expression executed code"
    assert calls == [], f"the parser called {calls}"


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: repr(t[:40]))
def test_hostile_string_is_refused_and_nothing_runs(text, no_eval):
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert str(info.value)  # a message, not an empty error


@pytest.mark.parametrize("value", [1, 1.5, None, b"x", ["x"], x, object()])
def test_non_string_input_refused(value, no_eval):
    with pytest.raises(ExpressionError, match="must be a string"):
        parse_expression(value, X)


def test_valid_parse_does_not_call_eval(no_eval):
    assert parse("x*tanh(log(1 + exp(x)))") == x * sp.tanh(sp.log(1 + sp.exp(x)))
    assert parse("sigmoid(x) + max(x, 0) + pi") == (
        1 / (1 + sp.exp(-x)) + sp.Max(x, 0) + sp.pi
    )


# ------------------------------------------------------------------ messages


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("tahn(x)", ["unknown function 'tahn'", "did you mean 'tanh'", "allowed"]),
        ("sigmiod(x)", ["unknown function 'sigmiod'", "did you mean 'sigmoid'"]),
        ("expp(x)", ["unknown function 'expp'", "did you mean 'exp'"]),
        ("open('/etc/passwd')", ["unknown function 'open'", "allowed functions"]),
        ("eval('1')", ["unknown function 'eval'"]),
        ("__import__('os')", ["unknown function '__import__'"]),
        ("xx + 1", ["unknown name 'xx'", "did you mean 'x'", "allowed names"]),
        ("pii*x", ["unknown name 'pii'", "did you mean 'pi'"]),
        ("tanh + x", ["'tanh' is a function", "call it", "tanh(x)"]),
        ("x.__class__", ["x.__class__", "Attribute", "not allowed"]),
        ("x[0]", ["x[0]", "Subscript", "not allowed"]),
        ("lambda: 1", ["Lambda", "not allowed"]),
        ("[x for x in ()]", ["ListComp", "not allowed"]),
        ("x if x else x", ["IfExp", "not allowed"]),
        ("x < 1", ["Compare", "not allowed"]),
        ("x % 2", ["x % 2", "not allowed"]),
        ("__import__('os').system('ls')", ["only plain function calls", "attribute"]),
        ("'abc'", ["only numbers", "'abc'"]),
        ("True", ["only numbers", "True"]),
        ("exp(x=1)", ["exp()", "keyword"]),
        ("exp(x, x)", ["exp()", "1 argument", "got 2"]),
        ("max(x)", ["max()", "2 argument", "got 1"]),
        ("x**10**10", ["constant exponent", "too large", str(MAX_CONST_EXPONENT)]),
        ("x" * 5000, ["5000 characters", str(MAX_LENGTH)]),
        ("-" * 900 + "x", ["nested", str(MAX_DEPTH)]),
        ("", ["empty"]),
        ("x; import os", ["not valid syntax"]),
        ("x +", ["not valid syntax"]),
        (3, ["must be a string", "int"]),
    ],
)
def test_error_message_names_the_problem(text, words):
    with pytest.raises(ExpressionError) as info:
        parse_expression(text, X)
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)


def test_exponent_limit_is_the_boundary():
    assert parse(f"x**{MAX_CONST_EXPONENT}") == x**MAX_CONST_EXPONENT
    assert parse(f"x**-{MAX_CONST_EXPONENT}") == x**-MAX_CONST_EXPONENT
    with pytest.raises(ExpressionError, match="too large"):
        parse(f"x**{MAX_CONST_EXPONENT + 1}")
    # a symbolic exponent is not limited
    assert parse("2**(x*100)") == 2 ** (100 * x)


def test_length_limit_is_the_boundary():
    text = "2*x" + " " * (MAX_LENGTH - 3)
    assert len(text) == MAX_LENGTH
    assert parse(text) == 2 * x
    with pytest.raises(ExpressionError, match="characters long"):
        parse(text + " ")


def test_depth_limit_is_the_boundary():
    ok = "-" * (MAX_DEPTH - 1) + "x"
    assert parse(ok) == (-1) ** (MAX_DEPTH - 1) * x
    with pytest.raises(ExpressionError, match="nested deeper"):
        parse("-" * (MAX_DEPTH + 1) + "x")


# ------------------------------------------------------- regression tests


def _timeout(*_args):
    raise TimeoutError("parse_expression took more than 3 s")


@pytest.mark.parametrize(
    "text",
    [
        # A NaN constant exponent reached `abs(sp.N(right)) > MAX_CONST_EXPONENT`
        # and SymPy raised TypeError('Invalid NaN comparison').
        "x**(0/0)",
        # sp.Max(x, zoo) raised ValueError('The argument zoo is not comparable').
        "max(x, 1/0)",
        # sp.Min(x, nan) raised ValueError.
        "min(x, 0/0)",
        # Each constant exponent is <= 64 but nesting them built 2**(64**5):
        # parsing ran for minutes (one level less already returned a
        # 16.7-million-bit integer).
        "((((2**64)**64)**64)**64)**64",
        # sp.N() on a huge constant exponent ran (practically) forever: denial
        # of service.
        "x**exp(exp(exp(100)))",
    ],
)
def test_pathological_constant_is_refused_cleanly(text):
    """Regression test for bugs in exprparse.py _convert: these constants raised
    TypeError/ValueError or hung instead of a clean ExpressionError. The
    SIGALRM guard turns a hang back into a failure."""
    old = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(3)
    try:
        with pytest.raises(ExpressionError):
            parse(text)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------- hypothesis

_TOKENS = [
    "x",
    "y",
    "0",
    "1",
    "2",
    "0.5",
    "64",
    "pi",
    "e",
    "+",
    "-",
    "*",
    "/",
    "**",
    "(",
    ")",
    ",",
    " ",
    "tanh(",
    "exp(",
    "log(",
    "max(",
    "min(",
    "sigmoid(",
    "softplus(",
    "sqrt(",
    ".",
    "[",
    "]",
    "'",
    "_",
    "lambda",
    ":",
    "__class__",
    "=",
    "if",
    "<",
]


def _check(text):
    try:
        result = parse_expression(text, X)
    except ExpressionError as exc:
        assert str(exc)
        return
    assert isinstance(result, sp.Expr)
    assert result.free_symbols <= {x}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=60))
def test_random_text_only_raises_expression_error(text):
    _check(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_TOKENS), max_size=25).map("".join))
def test_random_token_soup_only_raises_expression_error(text):
    _check(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.printable, max_size=40))
def test_random_printable_text_only_raises_expression_error(text):
    _check(text)
    assert not SENTINEL.exists()


def test_sentinel_never_created():
    # Last in file order: no test above created the sentinel.
    assert not os.path.exists(SENTINEL)


@pytest.mark.parametrize("text", ["1and x", "x*1if x else 2", "0x1for"])
def test_text_python_only_warns_about_is_refused_without_a_warning(text, recwarn):
    # Python parses "1and x" with a SyntaxWarning ("invalid decimal literal");
    # the parser refuses it as invalid syntax and prints nothing
    with pytest.raises(ExpressionError, match="not valid syntax"):
        parse_expression(text, X)
    assert not [w for w in recwarn if issubclass(w.category, SyntaxWarning)]
