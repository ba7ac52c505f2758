"""derive.Network: scikit-learn style labels, predictions, scores, saving and resuming.

The specs are shipped examples (and one corpus head) that other tests build too,
so Numba compiles each once per cache.
"""

from __future__ import annotations

import numpy as np
import pytest
from corpus import CORPUS, ROOT

import derive
from derive import DataError, DeriveError, Network
from derive.network import _split_rows
from derive.spec import load_spec

XOR = load_spec(ROOT / "examples" / "xor.toml")  # 2-2-1 sigmoid, BCE, sgd
SOFTMAX = load_spec(ROOT / "examples" / "softmax_classifier.toml")  # 4-32-16-3, f32
TANH = load_spec(ROOT / "examples" / "tanh_regression.toml")  # 1-16-1 tanh/identity
LOGITS = CORPUS["head_1_bce_with_logits"]  # 3-5-2 tanh/identity, bce_with_logits


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def numpy_forward(params, X, activations):
    """The network's outputs computed here with NumPy: a = f(a W^T + b) per layer."""
    a = np.asarray(X, dtype=np.float64)
    for W, b, f in zip(params[::2], params[1::2], activations, strict=True):
        a = f(a @ np.asarray(W, np.float64).T + np.asarray(b, np.float64))
    return a


def blobs(n=100, seed=0):
    """Two separable 2-D blobs labelled 'off' (left) and 'on' (right)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 0.5, (n, 2))
    right = rng.random(n) < 0.5
    X[right, 0] += 3.0
    return X, np.where(right, "on", "off")


def sine(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, (n, 1))
    return X, np.sin(X[:, 0])


# ------------------------------------------------------------------- binary


def test_binary_string_labels_round_trip_and_numpy_probabilities():
    X, y = blobs()
    net = Network(XOR).fit(X, y, epochs=300)
    assert net.classes_.tolist() == ["off", "on"] and net.classes_learned
    assert set(net.predict(X).tolist()) <= {"off", "on"}
    assert net.score(X, y) == 1.0
    X_new = np.random.default_rng(5).normal(1.5, 2.0, (50, 2))
    p_on = numpy_forward(net.params, X_new, [sigmoid, sigmoid])[:, 0]
    proba = net.predict_proba(X_new)
    assert proba.shape == (50, 2)
    np.testing.assert_allclose(proba[:, 1], p_on, rtol=1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-15)
    np.testing.assert_array_equal(net.predict(X_new), np.where(p_on > 0.5, "on", "off"))
    y_new = np.where(X_new[:, 0] > 1.5, "on", "off")
    expected = np.mean(np.where(p_on > 0.5, "on", "off") == y_new)
    assert net.score(X_new, y_new) == pytest.approx(expected, abs=0)


def test_binary_label_rules():
    X, _ = blobs(20)
    assert Network(XOR).classes_.tolist() == [0, 1]  # before any fit
    y01 = (X[:, 0] > 1.5).astype(float)
    assert Network(XOR).fit(X, y01, epochs=1).classes_.tolist() == [0, 1]
    assert Network(XOR).fit(X, y01[:, None], epochs=1).classes_.tolist() == [0, 1]
    signs = np.where(y01 > 0, 1, -1)
    net = Network(XOR).fit(X, signs, epochs=1)
    assert net.classes_.tolist() == [-1, 1]
    assert set(net.predict(X).tolist()) <= {-1, 1}
    with pytest.raises(DataError, match="3 classes \\(0, 1, 2\\) .* predicts 2"):
        Network(XOR).fit(X, np.arange(20) % 3, epochs=1)
    with pytest.raises(DataError, match="holds 0.5, not a class label"):
        Network(XOR).fit(X, np.full(20, 0.5), epochs=1)
    with pytest.raises(DataError, match="only 1 classes \\(7\\)"):
        Network(XOR).fit(X, np.full(20, 7), epochs=1)
    words = Network(XOR).fit(X, np.where(y01 > 0, "on", "off"), epochs=1)
    before = [p.copy() for p in words.params]
    with pytest.raises(DataError, match="label 'maybe' \\(row 0\\) is not one of"):
        words.fit(X, np.full(20, "maybe"), epochs=1)
    assert words.classes_.tolist() == ["off", "on"]
    for a, b in zip(before, words.params, strict=True):
        np.testing.assert_array_equal(a, b)


def test_logit_output_and_several_binary_outputs():
    net = Network(LOGITS)
    assert net.task == "binary" and net.n_outputs == 2
    X = np.random.default_rng(0).normal(size=(30, 3))
    logits = numpy_forward(net.params, X, [np.tanh, lambda z: z])
    np.testing.assert_allclose(net.predict_proba(X), sigmoid(logits), rtol=1e-12)
    np.testing.assert_array_equal(net.predict(X), (logits > 0).astype(int))
    Y = (np.random.default_rng(1).random((30, 2)) < 0.5).astype(int)
    expected = np.mean(np.all((logits > 0) == (Y == 1), axis=1))
    assert net.score(X, Y) == pytest.approx(expected, abs=0)


# --------------------------------------------------------------- multiclass


def test_softmax_labels_probabilities_and_score():
    rng = np.random.default_rng(3)
    centers = np.array([[3, 0, 0, 0], [0, 3, 0, 0], [0, 0, 3, 0]], dtype=float)
    labels = np.array(["cat", "dog", "emu"])
    index = rng.integers(0, 3, 150)
    X = centers[index] + rng.normal(0, 0.6, (150, 4))
    y = labels[index]
    net = Network(SOFTMAX).fit(X, y, epochs=20)
    assert net.classes_.tolist() == ["cat", "dog", "emu"]
    proba = net.predict_proba(X)
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)  # float32
    predicted = net.predict(X)
    np.testing.assert_array_equal(predicted, labels[np.argmax(proba, axis=1)])
    assert net.score(X, y) == pytest.approx(np.mean(predicted == y), abs=0)
    assert net.score(X, y) > 0.95
    one_hot = np.eye(3)[index]
    rows = Network(SOFTMAX).fit(X, one_hot, epochs=1)
    assert rows.classes_.tolist() == [0, 1, 2]
    expected = np.mean(rows.predict(X) == index)
    assert rows.score(X, one_hot) == pytest.approx(expected, abs=0)
    assert Network(SOFTMAX).fit(X, index % 2, epochs=1).classes_.tolist() == [0, 1, 2]
    with pytest.raises(DataError, match="only 2 classes"):
        Network(SOFTMAX).fit(X, np.where(index > 0, "b", "a"), epochs=1)


# --------------------------------------------------------------- regression


def test_regression_predict_and_r2_against_numpy():
    X, y = sine()
    net = Network(TANH).fit(X, y, epochs=40)
    predicted = net.predict(X)
    assert predicted.shape == (120,)
    f = numpy_forward(net.params, X, [np.tanh, lambda z: z])[:, 0]
    np.testing.assert_allclose(predicted, f, rtol=1e-12)
    r2 = 1 - np.sum((y - f) ** 2) / np.sum((y - y.mean()) ** 2)
    assert net.score(X, y) == pytest.approx(r2, rel=1e-12)
    assert net.score(X, y[:, None]) == pytest.approx(r2, rel=1e-12)
    assert r2 > 0.5
    with pytest.raises(DataError, match="predict_proba is for classifiers"):
        net.predict_proba(X)
    with pytest.raises(AttributeError, match="regression network"):
        net.classes_  # noqa: B018


def test_bad_inputs_are_data_errors():
    net = Network(TANH)
    X, y = sine(10)
    with pytest.raises(DataError, match="X has shape \\(10, 2\\) but spec"):
        net.fit(np.hstack([X, X]), y)
    with pytest.raises(DataError, match="X\\[3, 0\\] is nan"):
        net.predict(np.where(np.arange(10)[:, None] == 3, np.nan, X))
    with pytest.raises(DataError, match="X has 10 rows but y has 9"):
        net.fit(X, y[:9])
    with pytest.raises(DataError, match="epochs must be a positive integer"):
        net.fit(X, y, epochs=0)  # the module's own check, as a DataError
    with pytest.raises(TypeError, match="manages state"):
        net.fit(X, y, state={})
    assert net.epochs_done == 0


# ------------------------------------------------- the fast predict path


def softmax_rows(n=40, seed=4):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1.5, (n, 4)).astype(np.float32), rng.integers(0, 3, n)


def test_fast_path_gives_the_checked_paths_bits_row_by_row_and_in_batches():
    X, y = softmax_rows()
    net = Network(SOFTMAX).fit(X, y, epochs=5)
    assert net._fast_outputs(X[:1]) is not None  # float32 C rows: the fast path
    batch = net.outputs(X)
    # the module's own predict, every check on: the same kernel, the same bits
    np.testing.assert_array_equal(batch, net.module.predict(net.params, X))
    for r in range(X.shape[0]):
        row = X[r : r + 1]
        checked = net.module.predict(net.params, row)
        np.testing.assert_array_equal(net.outputs(row), checked)
        # float64 and a non-contiguous view take the checked path: same bits
        np.testing.assert_array_equal(net.outputs(row.astype(np.float64)), checked)
        np.testing.assert_array_equal(net.outputs(X[r :: X.shape[0]]), checked)
        # against the batch: the same formulas, a GEMM of another width
        np.testing.assert_allclose(net.outputs(row)[0], batch[r], rtol=1e-6, atol=1e-7)
        assert net.predict(row)[0] == net.predict(X)[r]
    proba = net.predict_proba(X[:1])
    assert proba.dtype == np.float64 and proba.shape == (1, 3)
    # the one-row buffers are reused: an earlier result keeps its values
    first = net.outputs(X[:1])
    kept = first.copy()
    net.outputs(X[1:2])
    np.testing.assert_array_equal(first, kept)


def test_fast_path_bad_rows_keep_their_messages():
    X, y = softmax_rows()
    net = Network(SOFTMAX).fit(X, y, epochs=1)
    with pytest.raises(DataError, match="X has shape \\(1, 5\\) but spec"):
        net.predict(np.zeros((1, 5), np.float32))
    bad = X[:1].copy()
    bad[0, 2] = np.inf
    with pytest.raises(DataError, match="X\\[0, 2\\] is inf"):
        net.predict(bad)
    # large but finite values are predicted, as by the checked path
    huge = np.full((1, 4), 3e38, np.float32)
    np.testing.assert_array_equal(
        net.outputs(huge), net.module.predict(net.params, huge)
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_fast_paths_finiteness_check_against_numpy(dtype):
    from derive.rowcheck import all_finite

    rng = np.random.default_rng(1)
    X = rng.normal(0, 1, (5, 7)).astype(dtype)
    X[0, 0] = np.finfo(dtype).max  # large but finite
    X[1, 1] = np.finfo(dtype).tiny / 2  # subnormal
    assert all_finite(X) and np.isfinite(X).all()
    for bad in (np.nan, np.inf, -np.inf):
        for r, c in ((0, 0), (4, 6), (2, 3)):
            Y = X.copy()
            Y[r, c] = bad
            assert not all_finite(Y)
    assert all_finite(np.zeros((0, 7), dtype))  # no values: nothing infinite


def test_parameters_set_to_nan_through_the_api_are_reported(tmp_path):
    X, y = softmax_rows()
    net = Network(SOFTMAX).fit(X, y, epochs=1)
    net.predict(X[:1])  # the parameters are now checked and remembered
    good = net.params
    bad = [p.copy() for p in good]
    bad[2][0, 0] = np.nan
    net.params = bad  # a new list
    with pytest.raises(DataError, match="W2 contains NaN or infinity"):
        net.predict(X[:1])
    net.params = list(good)
    net.predict(X[:1])
    net.params[3] = np.full_like(good[3], np.inf)  # a new array in the list
    with pytest.raises(DataError, match="b2 contains NaN or infinity"):
        net.predict_proba(X[:1])
    net.params[3] = good[3].astype(np.float64)
    with pytest.raises(DataError, match="b2 has dtype float64"):
        net.outputs(X[:1])
    net.params = bad
    path = net.save(tmp_path / "nan.npz")
    with pytest.raises(ValueError, match="W2 contains NaN or infinity"):
        Network.load(path)  # init_state checks the loaded parameters
    # fit checks on entry, and changes the arrays in place only to finite values
    net.params = [p.copy() for p in good]
    net.fit(X, y, epochs=2)
    np.testing.assert_array_equal(
        net.outputs(X[:1]), net.module.predict(net.params, X[:1])
    )


def test_fast_path_from_several_threads():
    from concurrent.futures import ThreadPoolExecutor

    X, y = softmax_rows(200)
    net = Network(SOFTMAX).fit(X, y, epochs=1)
    expected = [net.module.predict(net.params, X[r : r + 1]) for r in range(200)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda r: net.outputs(X[r : r + 1]), range(200)))
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------- fit options, history


def test_history_validation_callback_and_progress(capsys):
    X, y = sine()
    net = Network(TANH)
    assert net.fit(X, y, epochs=3) is net
    assert set(net.history_) == {"loss", "lr"} and len(net.history_["loss"]) == 3
    net.fit(X, y, epochs=4, validation_split=0.25, verbose=True)
    history = net.history_
    assert len(history["loss"]) == 7 and net.epochs_done == 7
    assert np.isnan(history["val_loss"][:3]).all()
    assert np.isfinite(history["val_loss"][3:]).all()
    err = capsys.readouterr().err
    assert "fit tanh_regression" in err and "val_loss=" in err and "samples/s=" in err
    seen = []
    net.fit(X, y, epochs=10, callback=lambda epoch, logs: seen.append(logs) or True)
    assert len(seen) == 1 and len(net.history_["loss"]) == 8  # stopped after one
    assert {"epoch", "loss", "lr", "samples_per_s"} <= set(seen[0])
    X_val, y_val = sine(30, seed=1)
    net.fit(X, y, epochs=2, validation_data=(X_val, y_val), lr=0.01, schedule="step",
            step_size=1, gamma=0.5)  # fmt: skip
    np.testing.assert_allclose(net.history_["lr"][-2:], 0.01 * 0.5 ** np.array([8, 9]))


def test_classifier_validation_reports_accuracy():
    X, y = blobs(60)
    net = Network(XOR).fit(X, y, epochs=5, validation_split=0.2)
    assert len(net.history_["val_accuracy"]) == 5
    assert (
        (0 <= net.history_["val_accuracy"]) & (net.history_["val_accuracy"] <= 1)
    ).all()


def test_validation_split_rows():
    train, val = _split_rows(10, 0.3, seed=4)
    assert len(val) == 3 and len(train) == 7
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(10))
    assert list(val) == sorted(val) and list(train) == sorted(train)
    np.testing.assert_array_equal(val, _split_rows(10, 0.3, seed=4)[1])
    assert not np.array_equal(val, _split_rows(10, 0.3, seed=5)[1])
    assert len(_split_rows(10, 0.0, seed=0)[1]) == 0
    assert len(_split_rows(10, 0.01, seed=0)[1]) == 1
    with pytest.raises(DataError, match="leaves no training rows"):
        _split_rows(1, 0.5, seed=0)


# ---------------------------------------------------------------- save / load


def test_save_load_predicts_identically_and_resumes_like_one_run(tmp_path):
    X, y = sine()
    options = {"schedule": "step", "step_size": 2, "gamma": 0.7}
    once = Network(TANH).fit(X, y, epochs=6, **options)
    first = Network(TANH).fit(X, y, epochs=3, **options)
    path = first.save(tmp_path / "model.npz")
    assert path == tmp_path / "model.npz" and not list(tmp_path.glob(".*.tmp"))
    loaded = Network.load(path)
    np.testing.assert_array_equal(loaded.predict(X), first.predict(X))
    assert loaded.epochs_done == 3
    loaded.fit(X, y, epochs=3, **options)
    for a, b in zip(once.params, loaded.params, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(once.history_["loss"], loaded.history_["loss"])
    np.testing.assert_array_equal(once.history_["lr"], loaded.history_["lr"])
    for a, b in zip(once.state["buffers"], loaded.state["buffers"], strict=True):
        np.testing.assert_array_equal(a, b)


def test_save_load_keeps_classes_names_and_history(tmp_path):
    X, y = blobs(40)
    net = Network(XOR).fit(X, y, epochs=5, validation_split=0.25)
    net.feature_names_in_, net.target_names_ = ("a", "b"), ("label",)
    net.save(tmp_path / "m.npz")
    net.save(tmp_path / "m.npz")  # replacing a file works and leaves no temp file
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
    loaded = Network.load(tmp_path / "m.npz", spec=XOR)
    assert loaded.classes_.tolist() == ["off", "on"] and loaded.classes_learned
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))
    assert loaded.feature_names_in_ == ("a", "b") and loaded.target_names_ == ("label",)
    assert loaded.history_.keys() == net.history_.keys()
    for key in net.history_:
        np.testing.assert_array_equal(loaded.history_[key], net.history_[key])
    assert loaded.spec == XOR and loaded.spec.hash == XOR.hash


def test_load_refuses_other_specs_and_damaged_files(tmp_path):
    path = Network(TANH).save(tmp_path / "tanh.npz")
    with pytest.raises(DeriveError, match="trained with spec 'tanh_regression' .* not "
                       "with this spec 'xor'"):  # fmt: skip
        Network.load(path, spec=XOR)
    with pytest.raises(DeriveError, match="not with this spec 'xor'"):
        Network.load(path, spec=ROOT / "examples" / "xor.toml")
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["spec_toml"] = np.array(str(arrays["spec_toml"]).replace("0.05", "0.5"))
    np.savez(tmp_path / "edited.npz", **arrays)
    with pytest.raises(DeriveError, match="damaged or edited: its spec hashes to"):
        Network.load(tmp_path / "edited.npz")
    with np.load(path) as archive:
        arrays = {k: v for k, v in archive.items() if k != "param_1"}
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(DeriveError, match="incomplete: no 'param_1'"):
        Network.load(tmp_path / "partial.npz")
    np.savez(tmp_path / "data.npz", X=np.ones((2, 2)))
    with pytest.raises(DeriveError, match="is not a derive model"):
        Network.load(tmp_path / "data.npz")
    with pytest.raises(DeriveError, match="model file not found"):
        Network.load(tmp_path / "missing.npz")


def test_public_names():
    assert derive.Network is Network and derive.load_table and derive.DataError
    net = Network(TANH.to_dict())
    assert net.spec == TANH and "tanh_regression" in repr(net)
    assert Network.from_spec(ROOT / "examples" / "tanh_regression.toml").spec == TANH
