"""Gradients of generated modules against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from corpus import (
    CORPUS,
    ELEMENTWISE,
    HEADS,
    finite_difference_grad,
    make_spec,
    random_targets,
    relative_error,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax, softmax

import derive
from derive.spec import spec_from_dict

FD_TOLERANCE = 1e-7
WORST: dict[str, float] = {}


def _check_fd(module, seed: int, rows: int = 5) -> float:
    rng = np.random.default_rng(seed)
    params = module.init_params(seed)
    # Non-zero biases so every code path (e.g. both relu branches) is exercised.
    for p in params[1::2]:
        p[:] = rng.normal(0, 0.5, p.shape)
    X = rng.normal(0, 1, (rows, module.N_INPUT))
    Y = random_targets(module, rows, rng)
    if module._STATE or module._MASKS:
        # training-time layers (a shipped example with batch norm or dropout):
        # module.loss is evaluation mode, so differentiate the training-mode loss
        # of the whole batch (batch statistics; dropout with fixed masks)
        masks = [(rng.uniform(size=(rows, *shape)) < keep).astype(float)
                 for _, shape, keep in module._MASKS] or None  # fmt: skip

        def loss(params, X, Y):
            return module.loss_and_grad(params, X, Y, masks=masks)[0]
    else:
        masks, loss = None, module.loss
    value, grads = module.loss_and_grad(params, X, Y, masks=masks)
    if masks is None and not module._STATE:  # training and evaluation agree
        assert np.isclose(value, module.loss(params, X, Y), rtol=1e-13)
    assert [g.shape for g in grads] == [p.shape for p in params]
    fd = finite_difference_grad(module, params, X, Y, loss=loss)
    return relative_error(fd, grads)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_loss_and_grad_matches_finite_differences(name):
    module = derive.build(CORPUS[name])
    err = _check_fd(module, seed=3)
    WORST[name] = err
    assert err < FD_TOLERANCE, f"{name}: relative error {err:.3g}"


def test_worst_fd_error_report():
    """Prints the worst error over the corpus (runs after the corpus tests)."""
    if not WORST:
        pytest.skip("corpus tests did not run")
    name = max(WORST, key=WORST.get)
    print(f"\nworst finite-difference relative error: {WORST[name]:.3g} ({name})")
    assert WORST[name] < FD_TOLERANCE


def test_user_activation_with_named_constants():
    """{ expr = "...", k = ... }: the constants are part of the expression (they
    were once passed to it again as keyword arguments, and deriving failed)."""
    spec = make_spec(
        "expr_constants", [2, 3, 1],
        [{"expr": "x*tanh(k*x) + c", "k": 0.5, "c": -0.25}, "identity"], "mse",
    )  # fmt: skip
    module = derive.build(spec)
    params = module.init_params(0)
    X = np.random.default_rng(0).normal(size=(4, 2))
    W1, b1, W2, b2 = params
    z = X @ W1.T + b1
    expected = (z * np.tanh(0.5 * z) - 0.25) @ W2.T + b2
    np.testing.assert_allclose(module.predict(params, X), expected, rtol=1e-13)
    assert _check_fd(module, seed=1) < FD_TOLERANCE


@st.composite
def architectures(draw):
    depth = draw(st.integers(1, 4))
    widths = [draw(st.integers(1, 12)) for _ in range(depth)]
    hidden = [draw(st.sampled_from(ELEMENTWISE)) for _ in range(depth - 1)]
    out_act, loss = draw(st.sampled_from(HEADS))
    if out_act == "softmax":
        widths[-1] = max(widths[-1], 2)
    sizes = [draw(st.integers(1, 6)), *widths]
    rows = draw(st.sampled_from([1, 2, 7]))
    return sizes, [*hidden, out_act], loss, rows


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(architectures())
def test_random_architectures_match_finite_differences(arch):
    sizes, acts, loss, rows = arch
    spec = make_spec("random_arch", sizes, acts, loss)
    module = derive.build(spec)
    err = _check_fd(module, seed=sum(sizes), rows=rows)
    assert err < FD_TOLERANCE, f"{sizes} {acts} {loss}: relative error {err:.3g}"


@pytest.mark.parametrize(
    "name",
    [
        "example_seed001",
        "head_2_cross_entropy",
        "hidden_gelu",
        "head_0_binary_cross_entropy",
    ],
)
def test_float32_module_agrees_with_float64(name):
    spec64 = CORPUS[name]
    spec32 = spec_from_dict({**spec64.to_dict(), "dtype": "float32"})
    m64, m32 = derive.build(spec64), derive.build(spec32)
    rng = np.random.default_rng(0)
    p64 = m64.init_params(1)
    p32 = [p.astype(np.float32) for p in p64]
    X = rng.normal(0, 1, (9, m64.N_INPUT))
    Y = random_targets(m64, 9, rng)
    v64, g64 = m64.loss_and_grad(p64, X, Y)
    v32, g32 = m32.loss_and_grad(p32, X.astype(np.float32), Y.astype(np.float32))
    assert all(g.dtype == np.float32 for g in g32)
    assert m32.predict(p32, X).dtype == np.float32
    assert abs(v32 - v64) <= 1e-5 * max(1.0, abs(v64))
    assert relative_error(g32, g64) < 1e-5


# Seed 001's worked example; the reference numbers are the ones its author
# printed from PyTorch (cost to 11 digits, gradients to 4 decimals).
SEED001_PARAMS = [
    [[-1, 2], [3, 0.5], [-0.1, -4]],
    [1, -2, 0.3],
    [[0.5, 1, -2], [0.7, 0.1, 0.3]],
    [-4, 5],
    [[0.5, -0.3]],
    [0.1],
]
SEED001_GRADS = [
    [[-0.0249, -0.0396], [-0.1814, -0.2428], [0, 0]],
    [-0.0147, -0.0614, 0],
    [[-0.3831, -0.5747, 0], [0.1752, 0.3175, 0]],
    [-0.0639, 0.0246],
    [[-1.0216, -0.9253]],
    [-0.0821],
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_seed001_worked_example(dtype):
    spec = CORPUS["example_seed001"]
    if dtype == "float32":
        spec = spec_from_dict({**spec.to_dict(), "dtype": "float32"})
    module = derive.build(spec)
    params = [np.array(p, dtype=dtype) for p in SEED001_PARAMS]
    X = np.array([[1.0, 2.0], [3.0, 4.0]])
    Y = np.array([[0.0], [1.0]])
    value, grads = module.loss_and_grad(params, X, Y)
    # The printed cost came from float32 PyTorch: agree to its precision.
    assert value == pytest.approx(
        0.19522885978, rel=2e-7 if dtype == "float64" else 1e-6
    )
    for got, want in zip(grads, SEED001_GRADS, strict=True):
        np.testing.assert_allclose(got, np.array(want), atol=5e-5 + 1e-6)
    # z = 0 exactly in layer 2 (third unit of layer 1 is dead too): relu'(0) = 0
    # makes the third columns of dW2 exactly zero.
    assert np.all(grads[2][:, 2] == 0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_extreme_logits_sigmoid_bce(dtype):
    spec = make_spec("extreme_bce", [1, 1], ["sigmoid"], "binary_cross_entropy", dtype)
    module = derive.build(spec)
    params = [np.array([[1000.0]], dtype=dtype), np.array([0.0], dtype=dtype)]
    X = np.array([[1.0], [-1.0], [1.0], [-1.0]])
    Y = np.array([[0.0], [1.0], [1.0], [0.0]])
    value, grads = module.loss_and_grad(params, X, Y)
    z = 1000.0 * X[:, 0]
    exact = np.mean(np.logaddexp(0, z) - Y[:, 0] * z)  # -log-likelihood, exactly
    assert np.isfinite(value) and value == pytest.approx(exact, rel=1e-6)
    delta = (1 / (1 + np.exp(-np.clip(z, -700, 700))) - Y[:, 0]) / 4
    np.testing.assert_allclose(grads[0].ravel(), [np.sum(delta * X[:, 0])], atol=1e-6)
    np.testing.assert_allclose(grads[1], [np.sum(delta)], atol=1e-6)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_extreme_logits_bce_with_logits(dtype):
    spec = make_spec("extreme_bcel", [1, 1], ["identity"], "bce_with_logits", dtype)
    module = derive.build(spec)
    params = [np.array([[1000.0]], dtype=dtype), np.array([0.0], dtype=dtype)]
    X = np.array([[1.0], [-1.0]])
    Y = np.array([[0.0], [1.0]])
    value, grads = module.loss_and_grad(params, X, Y)
    assert value == pytest.approx(1000.0, rel=1e-6)
    assert all(np.all(np.isfinite(g)) for g in grads)
    np.testing.assert_allclose(
        grads[0], [[(1.0 * 1 + (0.0 - 1.0) * -1) / 2]], atol=1e-6
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_extreme_logits_softmax_cross_entropy(dtype):
    spec = make_spec("extreme_ce", [3, 3], ["softmax"], "cross_entropy", dtype)
    module = derive.build(spec)
    params = [np.eye(3, dtype=dtype), np.zeros(3, dtype=dtype)]
    X = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 0.0, 1000.0], [0.5, 0.1, -0.2]])
    Y = np.array([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    value, grads = module.loss_and_grad(params, X, Y)
    exact = np.mean(-np.sum(Y * log_softmax(X, axis=1), axis=1))
    assert np.isfinite(value) and value == pytest.approx(exact, rel=1e-6)
    delta = (softmax(X, axis=1) - Y) / 3
    np.testing.assert_allclose(grads[0], delta.T @ X, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(grads[1], delta.sum(axis=0), atol=1e-6)
    probs = module.predict(params, X)
    np.testing.assert_allclose(probs, softmax(X, axis=1), atol=1e-6)
