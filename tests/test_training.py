"""fit() against an independent NumPy implementation of the textbook algorithm."""

from __future__ import annotations

import numpy as np
import pytest
from corpus import CORPUS, make_spec

import derive


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _nielsen_backprop(weights, biases, x, y):
    """Per-sample gradients of C = 1/2 ||a - y||^2 for an all-sigmoid network,
    as in Nielsen's network.py (column vectors, written out independently)."""
    activation = x
    activations = [x]
    zs = []
    for w, b in zip(weights, biases, strict=True):
        z = w @ activation + b
        zs.append(z)
        activation = _sigmoid(z)
        activations.append(activation)
    nabla_w = [np.zeros_like(w) for w in weights]
    nabla_b = [np.zeros_like(b) for b in biases]
    delta = (activations[-1] - y) * _sigmoid(zs[-1]) * (1 - _sigmoid(zs[-1]))
    nabla_b[-1] = delta
    nabla_w[-1] = delta @ activations[-2].T
    for layer in range(2, len(weights) + 1):
        sp = _sigmoid(zs[-layer]) * (1 - _sigmoid(zs[-layer]))
        delta = (weights[-layer + 1].T @ delta) * sp
        nabla_b[-layer] = delta
        nabla_w[-layer] = delta @ activations[-layer - 1].T
    return nabla_w, nabla_b


def test_fit_equals_textbook_minibatch_sgd():
    """circles is 2-3-3-1 sigmoid with the quadratic cost: Nielsen's update
    w -= (eta / m) * sum of per-sample gradients, the last batch smaller."""
    module = derive.build(CORPUS["example_circles"])
    rng = np.random.default_rng(7)
    X = rng.normal(0, 1, (23, 2))
    Y = (np.sum(X**2, axis=1, keepdims=True) < 1.0).astype(float)
    params = module.init_params(3)
    weights = [p.copy() for p in params[0::2]]
    biases = [p.copy().reshape(-1, 1) for p in params[1::2]]
    eta, batch, epochs = 0.7, 5, 6
    for _ in range(epochs):
        for start in range(0, len(X), batch):
            rows = range(start, min(start + batch, len(X)))
            sum_w = [np.zeros_like(w) for w in weights]
            sum_b = [np.zeros_like(b) for b in biases]
            for r in rows:
                nw, nb = _nielsen_backprop(
                    weights, biases, X[r].reshape(-1, 1), Y[r].reshape(-1, 1)
                )
                sum_w = [s + n for s, n in zip(sum_w, nw, strict=True)]
                sum_b = [s + n for s, n in zip(sum_b, nb, strict=True)]
            weights = [
                w - (eta / len(rows)) * s for w, s in zip(weights, sum_w, strict=True)
            ]
            biases = [
                b - (eta / len(rows)) * s for b, s in zip(biases, sum_b, strict=True)
            ]
    history = module.fit(
        params, X, Y, epochs=epochs, batch_size=batch, lr=eta, shuffle=False
    )
    assert history["loss"].shape == (epochs,)
    np.testing.assert_array_equal(history["lr"], np.full(epochs, eta))
    for got, want in zip(params[0::2], weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    for got, want in zip(params[1::2], biases, strict=True):
        np.testing.assert_allclose(got, want.ravel(), rtol=0, atol=1e-10)


def test_fit_epoch_loss_is_mean_of_pre_update_batch_losses():
    module = derive.build(CORPUS["example_tanh_regression"])
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (10, 1))
    Y = np.sin(X)
    params = module.init_params(0)
    copy = [p.copy() for p in params]
    expected = 0.0
    for start in range(0, 10, 4):
        value, grads = module.loss_and_grad(
            copy, X[start : start + 4], Y[start : start + 4]
        )
        expected += value * len(X[start : start + 4])
        for p, g in zip(copy, grads, strict=True):
            p -= 0.05 * g
    history = module.fit(params, X, Y, epochs=1, batch_size=4, lr=0.05, shuffle=False)
    assert history["loss"][0] == pytest.approx(expected / 10, rel=1e-12)
    for got, want in zip(params, copy, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_shuffled_fit_is_reproducible_and_decreases_loss():
    module = derive.build(CORPUS["example_tanh_regression"])
    rng = np.random.default_rng(1)
    X = rng.uniform(-2, 2, (200, 1))
    Y = np.sin(X)
    runs = []
    for _ in range(2):
        params = module.init_params(5)
        runs.append((module.fit(params, X, Y, epochs=30, seed=11)["loss"], params))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        np.testing.assert_array_equal(a, b)
    history = runs[0][0]
    assert history[-1] < 0.2 * history[0]


def test_xor_reaches_full_accuracy():
    module = derive.build(CORPUS["example_xor"])
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    Y = np.array([[0.0], [1.0], [1.0], [0.0]])
    params = module.init_params(seed=1)
    history = module.fit(params, X, Y)["loss"]  # spec defaults: 5000 epochs, lr 0.5
    predictions = (module.predict(params, X) > 0.5).astype(float)
    assert np.array_equal(predictions, Y), (module.predict(params, X), history[-1])
    assert history[-1] < 0.05


def test_fit_resumes_with_state():
    """Two fits of 3 epochs with a kept optimizer state equal one fit of 6."""
    spec = make_spec("resume_adam", [2, 4, 1], ["tanh", "identity"], "mse",
                     optimizer={"name": "adam", "lr": 0.01})  # fmt: skip
    module = derive.build(spec)
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(12, 2)), rng.normal(size=(12, 1))
    once = module.init_params(0)
    module.fit(once, X, Y, epochs=6, batch_size=5, shuffle=False)
    twice = module.init_params(0)
    state = module.init_state(twice)
    module.fit(twice, X, Y, epochs=3, batch_size=5, shuffle=False, state=state)
    module.fit(twice, X, Y, epochs=3, batch_size=5, shuffle=False, state=state)
    for a, b in zip(once, twice, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-14)


# at Numba's default level (make test's second tier): fast-math code is checked
# as users run it
@pytest.mark.optimized
@pytest.mark.parametrize(
    ("head", "loss"),
    [("softmax", "cross_entropy"), ("sigmoid", "binary_cross_entropy")],
)
def test_float32_training_loop_is_stable_at_logits_of_1000(head, loss):
    """float32 training loops compile with fast-math flags (no nnan/ninf): with
    logits near +-1000 the epoch loss must stay finite and equal the float64
    module's exact loss at the same parameters (full batch, one epoch)."""
    units = 3 if head == "softmax" else 1
    sizes, acts = [2, 4, units], ["tanh", head]
    fast = derive.build(make_spec(f"huge32_{head}", sizes, acts, loss, "float32"))
    exact = derive.build(make_spec(f"huge64_{head}", sizes, acts, loss, "float64"))
    rng = np.random.default_rng(3)
    X = rng.normal(size=(16, 2))
    if head == "softmax":
        Y = np.eye(3)[rng.integers(0, 3, 16)]
    else:
        Y = rng.integers(0, 2, (16, 1)).astype(float)
    params64 = exact.init_params(0)
    params64[2] *= 1000.0 / np.abs(params64[2]).max()  # |logits| up to ~1000
    params32 = [p.astype(np.float32) for p in params64]
    want = exact.loss(params64, X, Y)
    assert want > 100.0  # the logits really are extreme
    history = fast.fit(params32, X, Y, epochs=1, batch_size=16, lr=1e-6, shuffle=False)
    assert np.isfinite(history["loss"][0])
    assert history["loss"][0] == pytest.approx(want, rel=1e-5)
    assert all(np.all(np.isfinite(p)) for p in params32)
