"""Numerical tests of the op library as printed code.

Every derived formula is checked through the code the generated module runs
(``ScalarCode``), evaluated in plain Python float64 with the real helper
sources, against independent NumPy/SciPy implementations written here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from scipy import special

from derive.codegen.printer import HELPERS, ScalarCode, print_scalar_code
from derive.codegen.sources import helper_source
from derive.engine.derivation import A, derive_activation, derive_kind, derive_loss
from derive.layers import LAYER_KINDS
from derive.ops import ACTIVATIONS, LOSSES, UserExpr, user_activation, user_loss

# ------------------------------------------------------------------ helpers


class _NumbaStub:
    """Stands in for numba: ``njit(cache=True)`` returns the function unchanged."""

    @staticmethod
    def njit(*args, **kwargs):
        if args and callable(args[0]):
            return args[0]
        return lambda fn: fn


def _load_helpers() -> dict:
    ns: dict = {"math": math, "numba": _NumbaStub()}
    for name in HELPERS:
        exec(helper_source(name), ns)  # our own helper source
    return {name: ns[name] for name in HELPERS}


_HELPERS = _load_helpers()


def forward_code(d) -> ScalarCode:
    """The code a module evaluates for an activation's forward (float64)."""
    return print_scalar_code(d.forward_stable)


def derivative_code(d) -> ScalarCode:
    """The code of the chosen f' form (hidden layers)."""
    return print_scalar_code(d.derivative.expr)


def value_code(ld) -> ScalarCode:
    return print_scalar_code(ld.value.expr, prefix="v")


def delta_code(ld) -> ScalarCode:
    return print_scalar_code(ld.output_delta.expr)


def run_code(sc: ScalarCode, **values: float) -> float:
    """Evaluate printed code (temps then result) with the given scalars bound."""
    assert set(sc.inputs) <= set(values), (sc.inputs, values)
    assert set(sc.helpers) <= set(HELPERS)
    ns: dict = {"math": math, **_HELPERS, **{k: float(v) for k, v in values.items()}}
    for name, text in sc.temps:
        exec(f"{name} = {text}", ns)
    return float(eval(sc.result, ns))


def run_vec(sc: ScalarCode, **arrays) -> np.ndarray:
    shape = np.shape(arrays["z"])
    arrays = {
        k: np.broadcast_to(np.asarray(v, float), shape) for k, v in arrays.items()
    }
    flat = {k: v.ravel() for k, v in arrays.items()}
    out = [
        run_code(sc, **{k: v[i] for k, v in flat.items()})
        for i in range(int(np.prod(shape)))
    ]
    return np.array(out).reshape(shape)


#: every comparison's relative error at reference values above 1e-6, whatever
#: its atol (which decides for small values)
MAX_RELATIVE_ERROR = 1e-5


def assert_close(actual, expected, rtol, atol, what: str) -> None:
    actual = np.asarray(actual, dtype=float)
    expected = np.asarray(expected, dtype=float)
    assert np.all(np.isfinite(actual)), f"{what}: non-finite {actual}"
    big = np.abs(expected) > 1e-6
    if big.any():
        rel = float(np.max(np.abs(actual - expected)[big] / np.abs(expected)[big]))
        assert rel < MAX_RELATIVE_ERROR, f"{what}: relative error {rel:.3e}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def params_of(op, **overrides) -> tuple[tuple[str, float], ...]:
    names = {p.name for p in op.params}
    assert set(overrides) <= names, (overrides, names)
    return tuple((p.name, float(overrides.get(p.name, p.default))) for p in op.params)


def fd(fn, z, h=1e-6):
    return (fn(z + h) - fn(z - h)) / (2 * h)


# ------------------------------------------------- independent references

SELU_SCALE = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772


def _gelu_tanh(z):
    # torch: 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))), written via
    # 0.5 (1 + tanh(x)) = expit(2x) so the negative tail has no cancellation.
    return z * special.expit(2.0 * math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3))


# name -> (reference forward f(z, **params)); written independently of derive.
REF_FORWARD = {
    "identity": lambda z: np.asarray(z, dtype=float) * 1.0,
    "sigmoid": lambda z: special.expit(z),
    "tanh": lambda z: np.tanh(z),
    "relu": lambda z: np.maximum(z, 0.0),
    "leaky_relu": lambda z, alpha: np.where(z > 0, z, alpha * z),
    "elu": lambda z, alpha: np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0))),
    "selu": lambda z: (
        SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0.0)))
    ),
    "softplus": lambda z: np.logaddexp(0.0, z),
    "silu": lambda z: z * special.expit(z),
    "gelu": lambda z: 0.5 * z * special.erfc(-z / math.sqrt(2.0)),
    "gelu_tanh": _gelu_tanh,
    "softsign": lambda z: z / (1.0 + np.abs(z)),
}

ELEMENTWISE = sorted(n for n, op in ACTIVATIONS.items() if op.kind == "elementwise")

# (name, param overrides): defaults for all, plus non-default parameters.
ACT_CASES = [(n, {}) for n in ELEMENTWISE] + [
    ("leaky_relu", {"alpha": 0.2}),
    ("elu", {"alpha": 0.5}),
]
ACT_IDS = [
    f"{n}-{'-'.join(f'{k}{v}' for k, v in p.items()) or 'default'}"
    for n, p in ACT_CASES
]


def _derive(name: str, overrides: dict):
    op = ACTIVATIONS[name]
    params = params_of(op, **overrides)
    return derive_activation(op, name, params), dict(params)


def test_reference_covers_registry():
    assert set(REF_FORWARD) == set(ELEMENTWISE)
    assert [n for n, op in ACTIVATIONS.items() if op.kind == "softmax"] == ["softmax"]


# ------------------------------------------------------ 1. activations

GRID = np.linspace(-6.0, 6.0, 50)  # does not contain 0 (the kinks)


@pytest.mark.parametrize(("name", "overrides"), ACT_CASES, ids=ACT_IDS)
def test_forward_code_matches_reference(name, overrides):
    d, params = _derive(name, overrides)
    assert forward_code(d) is not None and forward_code(d).inputs == ("z",)
    ref = REF_FORWARD[name](GRID, **params)
    got = run_vec(forward_code(d), z=GRID)
    assert_close(got, ref, rtol=1e-12, atol=1e-14, what=f"{name} forward")


@pytest.mark.parametrize(("name", "overrides"), ACT_CASES, ids=ACT_IDS)
def test_derivative_code_matches_finite_difference(name, overrides):
    d, params = _derive(name, overrides)
    assert derivative_code(d) is not None
    assert set(derivative_code(d).inputs) <= {"z", "a"}
    assert d.derivative_form in ("a", "z")
    if d.derivative_form == "a":
        assert "z" not in derivative_code(d).inputs
    f = lambda z: REF_FORWARD[name](z, **params)  # noqa: E731
    got = run_vec(derivative_code(d), z=GRID, a=f(GRID))
    assert_close(got, fd(f, GRID), rtol=1e-6, atol=1e-8, what=f"{name} derivative")


KINK = {
    # PyTorch conventions at z = 0 (torch uses the negative branch of elu/selu).
    ("relu", None): 0.0,
    ("leaky_relu", 0.01): 0.01,
    ("leaky_relu", 0.2): 0.2,
    ("elu", 1.0): 1.0,
    ("elu", 0.5): 0.5,
    ("selu", None): SELU_SCALE * SELU_ALPHA,
    ("softsign", None): 1.0,
}


@pytest.mark.parametrize(("name", "alpha"), sorted(KINK, key=str), ids=str)
def test_derivative_at_kink_follows_torch(name, alpha):
    d, params = _derive(name, {} if alpha is None else {"alpha": alpha})
    a0 = run_code(forward_code(d), z=0.0)
    assert a0 == 0.0
    assert run_code(derivative_code(d), z=0.0, a=a0) == pytest.approx(
        KINK[(name, alpha)], rel=1e-15
    )


@pytest.mark.parametrize(
    ("name", "expected"), [("sigmoid", A * (1 - A)), ("tanh", 1 - A**2)]
)
def test_output_form_found(name, expected):
    d, _ = _derive(name, {})
    assert d.derivative_form == "a"
    assert d.derivative_a is not None
    assert sp.simplify(d.derivative_a.expr - expected) == 0
    assert derivative_code(d).inputs == ("a",)
    # and the printed a-form code is that polynomial
    for a in (0.0, 0.25, 0.5, 0.9, 1.0, -0.7):
        assert run_code(derivative_code(d), a=a) == pytest.approx(
            float(expected.subs(A, a)), rel=1e-15, abs=1e-16
        )


# ------------------------------------------------------- 2. stability

EXTREMES = np.array([-1000.0, -80.0, -30.0, 30.0, 80.0, 1000.0])


@pytest.mark.parametrize(("name", "overrides"), ACT_CASES, ids=ACT_IDS)
def test_stable_at_extremes(name, overrides):
    d, params = _derive(name, overrides)
    f = lambda z: REF_FORWARD[name](z, **params)  # noqa: E731
    with np.errstate(over="ignore"):
        ref = f(EXTREMES)
    fwd = run_vec(forward_code(d), z=EXTREMES)
    assert_close(fwd, ref, rtol=1e-12, atol=1e-14, what=f"{name} forward extremes")
    der = run_vec(derivative_code(d), z=EXTREMES, a=fwd)
    h = 1e-6 * np.maximum(1.0, np.abs(EXTREMES))
    with np.errstate(over="ignore"):
        ref_d = (f(EXTREMES + h) - f(EXTREMES - h)) / (2 * h)
    assert_close(der, ref_d, rtol=1e-6, atol=1e-10, what=f"{name} derivative extremes")


def test_stable_limits():
    def fwd(name, z):
        return run_code(forward_code(_derive(name, {})[0]), z=z)

    def der(name, z):
        d = _derive(name, {})[0]
        return run_code(derivative_code(d), z=z, a=run_code(forward_code(d), z=z))

    assert fwd("sigmoid", -1000.0) == 0.0
    assert fwd("sigmoid", 1000.0) == 1.0
    assert der("sigmoid", 1000.0) == 0.0
    assert der("sigmoid", -1000.0) == 0.0
    assert fwd("softplus", 1000.0) == 1000.0
    assert fwd("softplus", -1000.0) == 0.0
    assert der("softplus", 1000.0) == 1.0
    assert der("silu", -1000.0) == 0.0
    assert der("silu", 1000.0) == 1.0
    assert fwd("silu", -1000.0) == 0.0
    assert fwd("elu", -1000.0) == -1.0
    assert fwd("selu", -1000.0) == pytest.approx(-SELU_SCALE * SELU_ALPHA, rel=1e-15)
    assert der("gelu", -1000.0) == 0.0
    assert der("gelu_tanh", 1000.0) == 1.0
    assert der("tanh", -1000.0) == 0.0


# ------------------------------------------------------------ 3. losses


def _logcosh(u):
    return np.logaddexp(u, -u) - math.log(2.0)


def _bce(p, y):
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


REF_LOSS = {
    "mse": lambda p, y: (p - y) ** 2,
    "quadratic": lambda p, y: 0.5 * (p - y) ** 2,
    "mae": lambda p, y: np.abs(p - y),
    "huber": lambda p, y, delta: np.where(
        np.abs(p - y) < delta, 0.5 * (p - y) ** 2, delta * (np.abs(p - y) - 0.5 * delta)
    ),
    "binary_cross_entropy": _bce,
    "bce_with_logits": lambda p, y: _bce(special.expit(p), y),
    "logcosh": lambda p, y: _logcosh(p - y),
}
REDUCE = {"mse": "mean", "quadratic": "sum", "mae": "mean", "huber": "mean"}
REDUCE.update(binary_cross_entropy="mean", bce_with_logits="mean", logcosh="sum")

N_OUT = 3
LOGCOSH = user_loss(UserExpr("log(cosh(y_hat - y))"))

LOSS_CASES = [
    (loss, act, {})
    for loss in ("mse", "quadratic", "mae", "huber", "logcosh")
    for act in ("identity", "tanh")
] + [
    ("huber", "identity", {"delta": 0.5}),
    ("binary_cross_entropy", "sigmoid", {}),
    ("bce_with_logits", "identity", {}),
]
LOSS_IDS = [f"{l_}-{a}{'-delta0.5' if p else ''}" for l_, a, p in LOSS_CASES]


def _derive_loss(loss_name, act_name, loss_overrides, n_out=N_OUT):
    loss = LOGCOSH if loss_name == "logcosh" else LOSSES[loss_name]
    lp = params_of(loss, **loss_overrides)
    op = ACTIVATIONS[act_name]
    ap = params_of(op)
    act = derive_activation(op, act_name, ap)
    return derive_loss(loss, loss_name, lp, act, op, ap, n_out), act, dict(lp)


def test_loss_cases_cover_registry():
    covered = {l_ for l_, _, _ in LOSS_CASES} | {"cross_entropy"}
    assert set(LOSSES) <= covered
    for name, loss in LOSSES.items():
        assert loss.reduce == REDUCE.get(name, "sum")


@pytest.mark.parametrize(("loss_name", "act_name", "lp"), LOSS_CASES, ids=LOSS_IDS)
def test_loss_value_and_delta(loss_name, act_name, lp):
    ld, act, lparams = _derive_loss(loss_name, act_name, lp)
    assert ld.reduce == REDUCE[loss_name]
    scale = 1.0 / N_OUT if ld.reduce == "mean" else 1.0
    f = REF_FORWARD[act_name]
    if loss_name in ("binary_cross_entropy", "bce_with_logits"):
        ys = np.array([0.0, 0.3, 1.0])
    else:
        ys = np.array([-0.6, 0.0, 0.45, 1.0])
    zz, yy = np.meshgrid(np.linspace(-3.0, 3.0, 25) + 0.037, ys)
    # keep away from the loss's kinks for the finite difference
    u = f(zz) - yy
    ok = np.abs(u) > 1e-3
    if "delta" in lparams:
        ok &= np.abs(np.abs(u) - lparams["delta"]) > 1e-3
    zz, yy = zz[ok], yy[ok]

    def composed(z):
        return REF_LOSS[loss_name](f(z), yy, **lparams)

    aa = f(zz)
    value = run_vec(value_code(ld), z=zz, a=aa, y=yy)
    assert_close(
        value, scale * composed(zz), rtol=1e-10, atol=1e-13, what=f"{ld.label} value"
    )
    delta = run_vec(delta_code(ld), z=zz, a=aa, y=yy)
    assert_close(
        delta, scale * fd(composed, zz), rtol=1e-6, atol=1e-9, what=f"{ld.label} delta"
    )


@pytest.mark.parametrize("act_name", ["identity", "tanh"])
def test_mae_gradient_zero_at_equality(act_name):
    ld, act, _ = _derive_loss("mae", act_name, {})
    for z in (-0.8, 0.0, 0.5, 2.0):
        a = run_code(forward_code(act), z=z)
        y = a  # y_hat == y exactly
        assert run_code(delta_code(ld), z=z, a=a, y=y) == 0.0
        assert run_code(value_code(ld), z=z, a=a, y=y) == 0.0


@pytest.mark.parametrize("delta", [1.0, 0.5])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_huber_at_delta(delta, sign):
    ld, _, _ = _derive_loss("huber", "identity", {"delta": delta})
    y = 0.25
    z = y + sign * delta  # |u| == delta exactly
    # torch: value 0.5 delta^2 (both branches agree), gradient clamp(u) = sign*delta
    assert run_code(value_code(ld), z=z, a=z, y=y) == pytest.approx(
        0.5 * delta**2 / N_OUT
    )
    assert run_code(delta_code(ld), z=z, a=z, y=y) == pytest.approx(
        sign * delta / N_OUT
    )


# ----------------------------------------------------- 4. extreme logits


@pytest.mark.parametrize(
    ("loss_name", "act_name"),
    [("binary_cross_entropy", "sigmoid"), ("bce_with_logits", "identity")],
)
@pytest.mark.parametrize("z", [-1000.0, 1000.0, -40.0, 40.0])
@pytest.mark.parametrize("y", [0.0, 1.0, 0.3])
def test_bce_extreme_logits(loss_name, act_name, z, y):
    ld, act, _ = _derive_loss(loss_name, act_name, {})
    a = run_code(forward_code(act), z=z)  # what the module feeds the delta
    value = run_code(value_code(ld), z=z, a=a, y=y)
    exact = (np.logaddexp(0.0, z) - y * z) / N_OUT
    assert_close(value, exact, rtol=1e-13, atol=1e-300, what=f"{loss_name} value z={z}")
    delta = run_code(delta_code(ld), z=z, a=a, y=y)
    exact_delta = (special.expit(z) - y) / N_OUT
    what = f"{loss_name} delta z={z}"
    assert_close(delta, exact_delta, rtol=1e-13, atol=1e-300, what=what)


SOFTMAX_ROWS = [
    ([1000.0, -1000.0, 0.0, 3.0], [1.0, 0.0, 0.0, 0.0]),
    ([1000.0, -1000.0, 0.0, 3.0], [0.0, 1.0, 0.0, 0.0]),
    ([1000.0, -1000.0, 0.0, 3.0], [0.1, 0.2, 0.3, 0.4]),
    ([-5.0, 2.5, 0.3, -0.7], [0.25, 0.25, 0.25, 0.25]),
    ([-800.0, -801.0, -900.0, -799.5], [0.0, 0.0, 0.0, 1.0]),
]


@pytest.mark.parametrize(("z", "y"), SOFTMAX_ROWS)
def test_softmax_cross_entropy(z, y):
    op = ACTIVATIONS["softmax"]
    act = derive_activation(op, "softmax", ())
    ld = derive_loss(LOSSES["cross_entropy"], "cross_entropy", (), act, op, (), 4)
    assert ld.needs_lse
    assert set(value_code(ld).inputs) == {"lse", "y", "z"}
    assert set(delta_code(ld).inputs) <= {"a", "y"}
    z, y = np.array(z), np.array(y)
    lse = float(special.logsumexp(z))
    a = special.softmax(z)
    value = sum(
        run_code(value_code(ld), z=zi, y=yi, lse=lse)
        for zi, yi in zip(z, y, strict=True)
    )
    exact = -np.sum(y * special.log_softmax(z))
    assert_close(value, exact, rtol=1e-13, atol=1e-13, what="cross_entropy value")
    delta = run_vec(delta_code(ld), z=z, a=a, y=y)
    assert_close(delta, a - y, rtol=1e-13, atol=1e-300, what="cross_entropy delta")


# ---------------------------------------------- 5. Jacobian, dense rules


def test_softmax_jacobian_numeric():
    d = derive_activation(ACTIVATIONS["softmax"], "softmax", ())
    assert d.kind == "softmax" and d.derivative_form == "jacobian"
    assert d.jacobian is not None
    jac = d.jacobian.expr
    syms = {s.name: s for s in jac.free_symbols if isinstance(s, sp.Symbol)}
    ab = sp.IndexedBase("a")
    z = np.array([0.3, -1.2, 2.0])
    a = special.softmax(z)
    n = len(z)
    got = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            e = jac.subs({syms["i"]: i, syms["j"]: j})
            e = e.subs({ab[k]: a[k] for k in range(n)})
            got[i, j] = float(e)
    h = 1e-6
    ref = np.empty((n, n))
    for j in range(n):
        dz = np.zeros(n)
        dz[j] = h
        ref[:, j] = (special.softmax(z + dz) - special.softmax(z - dz)) / (2 * h)
    assert_close(got, ref, rtol=1e-6, atol=1e-9, what="softmax jacobian")


def test_dense_rules_numeric():
    """The dense kind's derived rules, in gather form, evaluated at numbers,
    against the matrix rules: grad_W = delta a^T, grad_b = delta, da = W^T delta."""
    kd = derive_kind(LAYER_KINDS["dense"])
    forms = {g.target: g for g in kd.gathers}
    assert set(forms) == {"W", "b", "a"}
    rng = np.random.default_rng(0)
    n_in, n_out = 2, 3
    Wv, dv, av = (
        rng.normal(size=(n_out, n_in)),
        rng.normal(size=n_out),
        rng.normal(size=n_in),
    )
    arrays = {"W": Wv, "a": av, "dz": dv}

    def ev(form, index):
        value = form.value
        sizes = {str(s): s for s in kd.kind.input + tuple(kd.kind.bind)}
        sums = {str(s): int(sp.sympify(e).xreplace({sizes["n_out"]: n_out,
                                                     sizes["n_in"]: n_in}))
                for s, e in form.sums}  # fmt: skip
        total = 0.0
        for point in np.ndindex(*sums.values()) if sums else [()]:
            env = dict(zip([str(s) for s in form.target_index], index, strict=True))
            env.update(zip(sums, point, strict=True))
            term = value.subs({sp.Symbol(k, integer=True, nonnegative=True): v
                               for k, v in env.items()})  # fmt: skip
            term = term.replace(
                lambda e: isinstance(e, sp.Indexed),
                lambda e: arrays[str(e.base.label)][tuple(int(i) for i in e.indices)],
            )
            total += float(term)
        return total

    gw = np.array([[ev(forms["W"], (j, k)) for k in range(n_in)] for j in range(n_out)])
    assert_close(gw, np.outer(dv, av), rtol=1e-14, atol=1e-14, what="grad_W")
    gb = np.array([ev(forms["b"], (j,)) for j in range(n_out)])
    assert_close(gb, dv, rtol=1e-14, atol=1e-14, what="grad_b")
    ga = np.array([ev(forms["a"], (k,)) for k in range(n_in)])
    assert_close(ga, Wv.T @ dv, rtol=1e-14, atol=1e-14, what="grad_a_prev")


# ------------------------------------------------------ printer regression


def test_squared_denominator_printed_correctly():
    # Regression: an earlier printer wrote b**2 as "b * b" unparenthesised, so
    # 1/(1 + z**2) derived to "-2.0*z/(z * z + 1.0) * (z * z + 1.0)" (= -2z).
    op = user_activation(UserExpr("1/(1 + x**2)"))
    d = derive_activation(op, "expr", ())
    f = lambda z: 1.0 / (1.0 + z * z)  # noqa: E731
    got = run_vec(derivative_code(d), z=GRID, a=f(GRID))
    np.testing.assert_allclose(got, -2 * GRID / (1 + GRID**2) ** 2, rtol=1e-12)
    z = sp.Symbol("z", real=True)
    sc = print_scalar_code(3 * z / (1 + z) ** 2)
    assert run_code(sc, z=2.0) == pytest.approx(6.0 / 9.0, rel=1e-15)
