"""Divergence: a fit whose loss or parameters become NaN or infinite stops in
that epoch (inside the jitted loop), says what went non-finite first and the
likely fixes, keeps the history and restores the last finite state; the spec
validator warns where a user expression is defined on only part of the reals."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from corpus import CORPUS, ROOT

import derive
from derive.cli import main
from derive.engine.domains import domain_warnings
from derive.errors import DivergenceError, SpecWarning
from derive.spec import spec_from_dict

REGRESSION = CORPUS["example_tanh_regression"]  # 1-16-1 tanh/identity, mse, sgd


def _data(rows=64):
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (rows, 1))
    return X, np.sin(X)


def test_a_blown_up_fit_stops_in_the_epoch_and_restores_its_start():
    module = derive.build(REGRESSION)
    X, Y = _data()
    params = module.init_params(0)
    state = module.init_state(params)
    history = module.fit(params, X, Y, epochs=3, batch_size=16, lr=0.05, state=state)
    assert history["diverged"] is None and len(history["loss"]) == 3
    kept = [p.copy() for p in params]
    with pytest.warns(RuntimeWarning, match="training diverged in epoch"):
        history = module.fit(
            params, X, Y, epochs=40, batch_size=16, lr=1e6, state=state
        )
    report = history["diverged"]
    epoch = report["epoch"]
    assert epoch >= 3 and len(history["loss"]) == epoch - 3  # the epochs before it
    assert np.all(np.isfinite(history["loss"]))
    assert state["epoch"][0] == epoch  # resumable from the epoch that diverged
    assert "smaller learning rate (lr, now 1e+06)" in report["message"]
    assert report["quantity"] in {"W1", "b1", "W2", "b2", "z1", "z2", "a2", "loss"}
    assert all(np.all(np.isfinite(p)) for p in params)
    if epoch == 3:  # restored to the start of the diverged epoch
        for got, want in zip(params, kept, strict=True):
            np.testing.assert_array_equal(got, want)
    # the restored state trains on with a sane learning rate
    history = module.fit(params, X, Y, epochs=2, batch_size=16, lr=0.01, state=state)
    assert history["diverged"] is None and np.all(np.isfinite(history["loss"]))


def test_one_call_per_epoch_diverges_in_the_same_epoch_and_state():
    """With validation data (one jitted call per epoch) training is the same: the
    same epoch diverges and the same state is restored."""
    module = derive.build(REGRESSION)
    X, Y = _data()
    runs = []
    for validation in ({}, {"X_val": X[:8], "Y_val": Y[:8]}):
        params = module.init_params(0)
        with pytest.warns(RuntimeWarning, match="training diverged in epoch"):
            history = module.fit(
                params, X, Y, epochs=30, batch_size=16, lr=1e8, **validation
            )
        runs.append((history, params))
    (plain, p_plain), (checked, p_checked) = runs
    assert plain["diverged"]["epoch"] == checked["diverged"]["epoch"]
    assert plain["diverged"]["message"] == checked["diverged"]["message"]
    assert len(checked["val_loss"]) == len(checked["loss"]) == len(plain["loss"])
    np.testing.assert_array_equal(plain["loss"], checked["loss"])
    for a, b in zip(p_plain, p_checked, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_parameter_non_finite_behind_a_finite_loss_is_reported():
    """What the epoch-end scan reports (code 2): a parameter NaN while the loss
    stayed finite, as when a NaN only reaches a relu's zero side."""
    module = derive.build(REGRESSION)
    X, Y = _data(8)
    params = module.init_params(0)
    params[0][3, 0] = np.nan
    status = np.array([2, 0, 0, 0, 0])
    order = np.arange(8)
    report = module._divergence(status, 7, params, X, Y, order, 0.5, 0.0)
    assert report["epoch"] == 7 and report["rows"] is None
    assert report["quantity"] == "W1"
    assert "W1 became NaN or infinite in an update" in report["message"]
    assert "gradient clipping (clip_norm" in report["message"]


def test_network_fit_raises_with_the_history_kept():
    network = derive.Network(REGRESSION)
    X, Y = _data()
    network.fit(X, Y.ravel(), epochs=2, batch_size=16)
    with pytest.raises(DivergenceError, match="training diverged in epoch") as info:
        network.fit(X, Y.ravel(), epochs=30, batch_size=16, lr=1e6)
    epoch = info.value.diverged["epoch"]
    assert len(network.history_["loss"]) == epoch >= 2
    assert network.diverged_ is not None and network.epochs_done == epoch
    assert all(np.all(np.isfinite(p)) for p in network.params)
    network.predict(X)  # the restored params still predict


# ------------------------------------------------------------------ domains

LOG_SPEC = """
name = "log_activation"
input = 2
[[layers]]
units = 24
activation = { expr = "log(x)" }
[[layers]]
units = 1
activation = "sigmoid"
[loss]
name = "binary_cross_entropy"
[optimizer]
name = "sgd"
lr = 0.5
[training]
epochs = 10
"""


def test_log_activation_fit_warns_up_front_and_stops_at_epoch_0(tmp_path, capsys):
    """The new user's session of issue 16: `activation = { expr = "log(x)" }`."""
    spec_path = tmp_path / "log.toml"
    spec_path.write_text(LOG_SPEC)
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (64, 2))
    data = tmp_path / "points.csv"
    rows = [f"{a!r},{b!r},{int(a * b > 0)}" for a, b in X.tolist()]
    data.write_text("x1,x2,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "model.npz"
    code = main(["fit", str(spec_path), "--data", str(data), "--out", str(out),
                 "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    warning, error = err.strip().splitlines()
    assert (
        warning.startswith("derive: warning:") and "defined only for x > 0" in warning
    )
    assert "training diverged in epoch 0: a1 is NaN" in error
    assert "an activation defined and finite for every real input" in error
    assert "No model was written" in error and not out.exists()


@pytest.mark.parametrize(
    ("expr", "domain"),
    [("log(x)", "x > 0"), ("sqrt(x)", "x >= 0"), ("1/x", "x != 0"),
     ("x**(1/3)", "x >= 0"), ("log(x - 1) + x", "x > 1")],
)  # fmt: skip
def test_restricted_user_activations_warn_with_their_domain(expr, domain):
    data = {
        "name": "dom",
        "input": 2,
        "layers": [{"units": 3, "activation": {"expr": expr}},
                   {"units": 1, "activation": "identity"}],
        "loss": {"name": "mse"},
    }  # fmt: skip
    with pytest.warns(SpecWarning, match=f"defined only for {domain}"):
        spec = spec_from_dict(data, "dom.toml")
    (warning,) = domain_warnings(spec)
    assert warning.where == "layers[1].activation" and warning.variable == "x"
    explained = str(derive.explain(spec))
    assert "Domain warnings" in explained and f"defined only for {domain}" in explained


def test_total_expressions_and_covered_losses_do_not_warn():
    base = {"name": "ok", "input": 2, "loss": {"name": "mse"}}
    cases = [
        ([{"expr": "x*tanh(softplus(x))"}, "identity"], {"name": "mse"}),
        ([{"expr": "log(abs(x) + 1)"}, "identity"], {"name": "mse"}),
        (["tanh", "sigmoid"], {"expr": "-y*log(y_hat) - (1 - y)*log(1 - y_hat)"}),
        (["tanh", "tanh"], {"expr": "log(cosh(y_hat - y))"}),
    ]
    for acts, loss in cases:
        layers = [{"units": 2, "activation": a} for a in acts]
        with warnings.catch_warnings():
            warnings.simplefilter("error", SpecWarning)
            spec = spec_from_dict({**base, "layers": layers, "loss": loss})
        assert domain_warnings(spec) == ()
    assert "Domain warnings" not in str(derive.explain(CORPUS["example_xor"]))


def test_user_losses_warn_about_outputs_and_targets():
    base = {"name": "lossdom", "input": 2}
    with pytest.warns(SpecWarning, match="y_hat > 0.*identity takes any real value"):
        spec_from_dict({**base, "layers": [{"units": 1, "activation": "identity"}],
                        "loss": {"expr": "-y*log(y_hat)"}})  # fmt: skip
    with pytest.warns(SpecWarning, match="y != 0.*every target"):
        spec_from_dict({**base, "layers": [{"units": 1, "activation": "identity"}],
                        "loss": {"expr": "(y_hat - y)**2 / y"}})  # fmt: skip


def test_shipped_examples_have_no_domain_warnings():
    for path in sorted((ROOT / "examples").glob("*.toml")):
        with warnings.catch_warnings():
            warnings.simplefilter("error", SpecWarning)
            derive.load_spec(path)
