"""Networks and estimators leave the process: pickle (read back by a fresh
interpreter, which rebuilds the module from the cache by spec), deepcopy, and
joblib workers fitting on memory-mapped, read-only inputs."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from corpus import ROOT, TRAINING_CORPUS

from derive import Network
from derive.generate import cache_dir
from derive.spec import load_spec, spec_from_dict

TANH = load_spec(ROOT / "examples" / "tanh_regression.toml")  # 1-16-1, sgd
NORMS = spec_from_dict(TRAINING_CORPUS["vector_bn_dropout_residual"])


def sine(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, (n, 1))
    return X, np.sin(X[:, 0])


def run_python(code: str, *args: str) -> str:
    """Run code in a fresh interpreter (the same cache: DERIVE_CACHE_DIR is
    inherited); returns its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_network_unpickles_in_a_fresh_process_and_resumes_identically(tmp_path):
    X, y = sine()
    net = Network(TANH).fit(X, y, epochs=3, schedule="step", step_size=2)
    data = pickle.dumps(net)
    assert net.module.__name__.encode() not in data  # not pickled by reference
    (tmp_path / "net.pkl").write_bytes(data)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    module_file = net.module.__file__
    out = run_python(
        """
        import pickle, sys
        import numpy as np
        folder = sys.argv[1]
        net = pickle.load(open(f"{folder}/net.pkl", "rb"))
        X, y = np.load(f"{folder}/X.npy"), np.load(f"{folder}/y.npy")
        np.save(f"{folder}/before.npy", net.predict(X))
        net.fit(X, y, epochs=2, schedule="step", step_size=2)
        np.save(f"{folder}/after.npy", net.predict(X))
        print(net.module.__file__)
        print(net.epochs_done)
        """,
        str(tmp_path),
    )
    rebuilt_file, epochs = out.split()
    assert rebuilt_file == module_file  # the cached module, found by spec
    assert rebuilt_file.startswith(str(cache_dir()))
    np.testing.assert_array_equal(np.load(tmp_path / "before.npy"), net.predict(X))
    net.fit(X, y, epochs=2, schedule="step", step_size=2)
    assert int(epochs) == net.epochs_done == 5
    np.testing.assert_array_equal(np.load(tmp_path / "after.npy"), net.predict(X))


def test_deepcopy_and_pickle_keep_buffers_classes_and_history():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6))
    labels = np.array(["a", "b", "c"])[rng.integers(0, 3, 40)]
    net = Network(NORMS).fit(X, labels, epochs=3, batch_size=8)
    for twin in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert twin.module is net.module  # this process's module, not a copy
        assert twin.spec == net.spec and twin.classes_.tolist() == ["a", "b", "c"]
        np.testing.assert_array_equal(twin.predict_proba(X), net.predict_proba(X))
        np.testing.assert_array_equal(twin.history_["loss"], net.history_["loss"])
        for a, b in zip(twin.buffers + twin.params, net.buffers + net.params,
                        strict=True):  # fmt: skip
            np.testing.assert_array_equal(a, b)
            assert not np.shares_memory(a, b)
    copied = copy.deepcopy(net)
    before = [b.copy() for b in net.buffers]
    copied.fit(X, labels, epochs=1, batch_size=8)  # the copy trains alone
    assert copied.epochs_done == 4 and net.epochs_done == 3
    for a, b in zip(before, net.buffers, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_damaged_pickle_is_refused():
    state = Network(TANH).__getstate__()
    state["spec_hash"] = "0" * 16
    broken = Network.__new__(Network)
    with pytest.raises(Exception, match="damaged: its spec hashes to"):
        broken.__setstate__(state)


# ------------------------------------------------------------- estimators


def test_estimator_unpickles_in_a_fresh_process(tmp_path):
    pytest.importorskip("sklearn")
    from sklearn.datasets import make_blobs

    from derive.sklearn import NetworkClassifier

    X, y = make_blobs(n_samples=60, centers=3, n_features=2, random_state=0)
    labels = np.array(["x", "y", "z"])[y]
    est = NetworkClassifier(
        hidden_layer_sizes=(4,), learning_rate_init=0.05, max_iter=20, random_state=0
    ).fit(X, labels)
    (tmp_path / "est.pkl").write_bytes(pickle.dumps(est))
    np.save(tmp_path / "X.npy", X)
    run_python(
        """
        import pickle, sys
        import numpy as np
        folder = sys.argv[1]
        est = pickle.load(open(f"{folder}/est.pkl", "rb"))
        X = np.load(f"{folder}/X.npy")
        np.save(f"{folder}/proba.npy", est.predict_proba(X))
        np.save(f"{folder}/labels.npy", est.predict(X))
        """,
        str(tmp_path),
    )
    np.testing.assert_array_equal(np.load(tmp_path / "proba.npy"), est.predict_proba(X))
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), est.predict(X))
    twin = copy.deepcopy(est)
    np.testing.assert_array_equal(twin.predict_proba(X), est.predict_proba(X))


def _fit_and_count(estimator, X, y):
    """In a worker: fit, and report how often each kernel was compiled."""
    estimator.fit(X, y)
    module = estimator.network_.module
    flags = (X.flags.writeable, type(X).__name__)
    return (
        estimator,
        len(module._train.signatures),
        len(module._forward.signatures),
        flags,
    )


def test_joblib_workers_fit_on_read_only_memmaps_with_one_compile():
    pytest.importorskip("sklearn")
    from joblib import Parallel, delayed
    from sklearn.base import clone
    from sklearn.datasets import make_regression

    from derive.sklearn import NetworkRegressor

    X, y = make_regression(n_samples=200, n_features=10, random_state=0)
    y = y / y.std()
    base = NetworkRegressor(hidden_layer_sizes=(4,), learning_rate_init=0.05,
                            max_iter=5)  # fmt: skip
    jobs = [clone(base).set_params(random_state=seed) for seed in range(4)]
    # max_nbytes: joblib hands the workers X and y as read-only memmaps
    results = Parallel(n_jobs=2, max_nbytes="1K")(
        delayed(_fit_and_count)(est, X, y) for est in jobs
    )
    for seed, (fitted, n_train, n_forward, flags) in enumerate(results):
        assert flags == (False, "memmap")
        assert (n_train, n_forward) == (1, 0)  # one compile per worker and kernel
        serial = clone(base).set_params(random_state=seed).fit(X, y)
        for a, b in zip(fitted.network_.params, serial.network_.params, strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(fitted.predict(X), serial.predict(X))
