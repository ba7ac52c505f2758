"""derive.sklearn: the estimators against derive.Network and NumPy, their
hyper-parameters, warm starts, user specs, and scikit-learn's model selection.

The estimators here have the architectures of scikit-learn's own checks
(tests/test_sklearn_checks.py: one hidden layer of 4, adam, 2 features for the
classifier, 10 for the regressor), so the two files share compiled kernels.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from scipy.special import expit, softmax  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import make_blobs, make_regression  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.metrics import accuracy_score, r2_score  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from derive import Network, build  # noqa: E402
from derive.sklearn import NetworkClassifier, NetworkRegressor  # noqa: E402

SMALL = {"hidden_layer_sizes": (4,), "learning_rate_init": 0.05, "max_iter": 20}


def forward(params, X, hidden=np.tanh):
    """The dense network's outputs before the head, computed with NumPy."""
    a = np.asarray(X, dtype=np.float64)
    layers = list(zip(params[::2], params[1::2], strict=True))
    for W, b in layers[:-1]:
        a = hidden(a @ W.T + b)
    W, b = layers[-1]
    return a @ W.T + b


def relu(z):
    return np.maximum(z, 0.0)


def blobs(centers=3, n=120, seed=0):
    X, y = make_blobs(n_samples=n, centers=centers, n_features=2, random_state=seed)
    return StandardScaler().fit_transform(X), y


# --------------------------------------------------------------- classifier


def test_classifier_is_the_network_it_builds_and_numpy_agrees():
    """fit trains the Network of its spec with the given run-time options;
    predict_proba is the NumPy forward pass of the trained weights."""
    X, y = blobs()
    labels = np.array(["ant", "bee", "cat"])[y]
    est = NetworkClassifier(**SMALL, random_state=3, batch_size=16).fit(X, labels)
    assert est.classes_.tolist() == ["ant", "bee", "cat"]
    assert est.n_features_in_ == 2 and est.n_iter_ == 20
    net = est.network_
    assert net.spec.sizes == (2, 4, 3) and net.spec.loss.name == "cross_entropy"
    assert net.spec.layers[0].activation.name == "relu"
    twin = Network(net.spec, seed=3)
    twin.fit(X, y, epochs=20, batch_size=16, lr=0.05, shuffle=True, seed=3)
    for a, b in zip(net.params, twin.params, strict=True):
        np.testing.assert_array_equal(a, b)
    proba = softmax(forward(net.params, X, relu), axis=1)
    np.testing.assert_allclose(est.predict_proba(X), proba, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(est.predict(X), est.classes_[proba.argmax(axis=1)])
    assert est.score(X, labels) == accuracy_score(labels, est.predict(X)) > 0.9
    np.testing.assert_allclose(est.decision_function(X), np.log(proba), rtol=1e-10)
    assert est.loss_curve_ == net.history_["loss"].tolist()
    assert est.loss_ == est.loss_curve_[-1] < est.loss_curve_[0]


def test_binary_head_is_sigmoid_and_bce_and_decision_is_the_log_odds():
    X, y = blobs(centers=2)
    labels = np.where(y == 1, "yes", "no")
    est = NetworkClassifier(**SMALL, random_state=0).fit(X, labels)
    net = est.network_
    assert net.spec.sizes == (2, 4, 1)
    assert net.spec.layers[-1].activation.name == "sigmoid"
    assert net.spec.loss.name == "binary_cross_entropy"
    z = forward(net.params, X, relu)[:, 0]
    np.testing.assert_allclose(est.predict_proba(X)[:, 1], expit(z), rtol=1e-12)
    np.testing.assert_allclose(est.decision_function(X), z, rtol=1e-8, atol=1e-9)
    np.testing.assert_array_equal(est.predict(X), np.where(z > 0, "yes", "no"))
    with pytest.raises(ValueError, match="1 class \\('no'\\); a classifier needs 2"):
        clone(est).fit(X, np.full(len(X), "no"))


def test_fit_starts_over_warm_start_and_partial_fit_continue():
    X, y = blobs()
    options = {**SMALL, "random_state": 1}
    once = NetworkClassifier(**{**options, "max_iter": 6}).fit(X, y)
    again = NetworkClassifier(**{**options, "max_iter": 3}).fit(X, y)
    first = [p.copy() for p in again.network_.params]
    again.fit(X, y)  # without warm_start: the same three epochs from scratch
    for a, b in zip(first, again.network_.params, strict=True):
        np.testing.assert_array_equal(a, b)
    warm = NetworkClassifier(**{**options, "max_iter": 3}, warm_start=True)
    warm.fit(X, y).fit(X, y)  # 3 + 3 epochs resume like one run of 6
    partial = NetworkClassifier(**options)
    for _ in range(6):
        partial.partial_fit(X, y, classes=[0, 1, 2])
    for model in (warm, partial):
        assert len(model.loss_curve_) == 6
        for a, b in zip(once.network_.params, model.network_.params, strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="classes not in classes_"):
        NetworkClassifier(**options).partial_fit(X, y, classes=[0, 1, 2]).partial_fit(
            X, np.full(len(X), 7)
        )
    with pytest.raises(ValueError, match="warm_start needs the classes"):
        warm.fit(X, np.where(y == 2, 1, y))
    warm.set_params(optimizer="sgd")
    with pytest.raises(ValueError, match="architecture or optimizer changed"):
        warm.fit(X, y)


def test_random_state_none_draws_a_new_seed_and_an_int_repeats():
    X, y = blobs()
    runs = [NetworkClassifier(**SMALL).fit(X, y).network_.params[0] for _ in range(2)]
    assert not np.array_equal(*runs)
    fixed = [
        NetworkClassifier(**SMALL, random_state=np.random.RandomState(4))
        .fit(X, y)
        .network_.params[0]
        for _ in range(2)
    ]
    np.testing.assert_array_equal(*fixed)


def test_parameters_are_checked_at_fit_with_the_fix():
    X, y = blobs()
    cases = [
        ({"hidden_layer_sizes": (4, 0)}, "hidden_layer_sizes must be a tuple of pos"),
        ({"activation": "rellu"}, "did you mean 'relu'"),
        ({"activation": "softmax"}, "only allowed on the output layer"),
        ({"optimizer": "adamm"}, "did you mean 'adam'"),
        ({"optimizer": {"name": "sgd", "lr": 0.1}}, "as learning_rate_init"),
        ({"learning_rate_init": 0.0}, "learning_rate_init must be a finite number > 0"),
        ({"max_iter": 0}, "max_iter must be an integer >= 1"),
        ({"batch_size": "big"}, "batch_size must be an integer >= 1"),
        ({"validation_fraction": 1.0}, "validation_fraction must be in \\[0, 1\\)"),
        ({"dtype": "float16"}, "dtype must be one of float32, float64"),
        ({"spec": 3}, "spec must be a TOML file path"),
    ]
    for params, message in cases:
        est = NetworkClassifier(**{**SMALL, **params})  # __init__ only stores
        assert est.get_params()[next(iter(params))] is params[next(iter(params))]
        with pytest.raises(ValueError, match=message):
            est.fit(X, y)
    with pytest.raises(NotFittedError):
        NetworkClassifier().predict(X)


def test_early_stopping_auto_batch_and_the_spec_of_the_parameters():
    X, y = blobs(centers=2, n=200)
    est = NetworkClassifier(
        **{**SMALL, "max_iter": 50}, batch_size="auto", validation_fraction=0.25,
        n_iter_no_change=2, random_state=0,
    ).fit(X, y)  # fmt: skip
    net = est.network_
    twin = Network(net.spec, seed=0)
    twin.fit(X, y, epochs=50, batch_size=200, lr=0.05, seed=0,
             validation_split=0.25, patience=2)  # fmt: skip
    for a, b in zip(net.params, twin.params, strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(net.history_["val_loss"]).all()
    assert len(est.loss_curve_) == est.n_iter_ == len(twin.history_["loss"]) <= 50
    spec = NetworkClassifier(
        hidden_layer_sizes=(3, 2), activation="logistic", optimizer="rmsprop",
        weight_decay=0.1, dtype="float32",
    )._build_spec(7, 4)  # fmt: skip
    assert spec.sizes == (7, 3, 2, 4) and spec.dtype == "float32"
    assert [layer.activation.name for layer in spec.layers] == [
        "sigmoid", "sigmoid", "softmax",
    ]  # fmt: skip
    assert spec.optimizer.name == "rmsprop"
    assert spec.optimizer.get("weight_decay") == 0.1


# --------------------------------------------------------------- regressor


def regression(n_targets=1, n=150):
    X, y = make_regression(
        n_samples=n, n_features=10, n_informative=3, n_targets=n_targets,
        noise=1.0, random_state=0,
    )  # fmt: skip
    return StandardScaler().fit_transform(X), y / np.std(y, axis=0)


def test_regressor_shapes_r2_and_numpy_forward():
    X, y = regression()
    est = NetworkRegressor(**{**SMALL, "max_iter": 60}, random_state=0).fit(X, y)
    net = est.network_
    assert net.spec.sizes == (10, 4, 1) and net.spec.loss.name == "mse"
    predicted = est.predict(X)
    assert predicted.shape == (150,)
    np.testing.assert_allclose(
        predicted, forward(net.params, X, relu)[:, 0], rtol=1e-10
    )
    assert est.score(X, y) == pytest.approx(r2_score(y, predicted), rel=1e-12)
    assert est.score(X, y) > 0.8
    column = clone(est).fit(X, y[:, None])
    assert column.predict(X).shape == (150, 1)
    np.testing.assert_array_equal(column.predict(X)[:, 0], predicted)
    Y = regression(n_targets=5)[1]
    five = clone(est).fit(X, Y)
    assert five.n_outputs_ == 5 and five.predict(X).shape == (150, 5)
    assert five.score(X, Y) == pytest.approx(r2_score(Y, five.predict(X)), rel=1e-12)


def test_user_spec_sets_input_and_output_from_the_data(tmp_path):
    """A spec (dict, TOML text or file) gives the layers; the data give its input
    and output sizes, the estimator its optimizer, dtype and training."""
    X, y = regression(n_targets=2)
    spec = {
        "name": "wide",
        "input": 1,  # replaced by the data's 10 features
        "layers": [
            {"units": 6, "activation": "tanh"},
            {"kind": "batch_norm"},
            {"kind": "dropout", "p": 0.1},
            {"units": 1, "activation": "identity"},  # replaced by 2 units
        ],
        "loss": {"name": "huber", "delta": 0.5},
        "optimizer": {"name": "sgd", "lr": 9.0},  # replaced by the estimator's
    }
    est = NetworkRegressor(spec=spec, max_iter=30, learning_rate_init=0.01,
                           random_state=0).fit(X, y)  # fmt: skip
    net = est.network_
    assert net.spec.name == "wide" and net.spec.sizes == (10, 6, 6, 6, 2)
    assert net.spec.loss.name == "huber" and net.spec.optimizer.name == "adam"
    assert len(net.buffers) == 2  # batch norm's running statistics
    assert est.score(X, y) > 0.5
    text = Network(net.spec).spec.to_toml()
    (tmp_path / "wide.toml").write_text(text)
    for given in (text, str(tmp_path / "wide.toml"), tmp_path / "wide.toml"):
        other = NetworkRegressor(spec=given, max_iter=30, learning_rate_init=0.01,
                                 random_state=0).fit(X, y)  # fmt: skip
        assert other.network_.spec == net.spec
        np.testing.assert_array_equal(other.predict(X), est.predict(X))
    signal = {**spec, "input": [2, 5], "layers": [{"kind": "flatten"}, *spec["layers"]]}
    assert NetworkRegressor(spec=signal)._build_spec(10, 2).input == (2, 5)
    with pytest.raises(ValueError, match="takes 12 values per row, but X has 10"):
        NetworkRegressor(spec={**spec, "input": [2, 6]}).fit(X, y)


def test_classifier_spec_gets_the_head_of_its_labels():
    X, y = blobs()
    spec = """
        [[layers]]
        units = 4
        activation = "relu"
        [[layers]]
        units = 1
        activation = "identity"
    """
    est = NetworkClassifier(spec=spec, max_iter=20, learning_rate_init=0.05,
                            random_state=0).fit(X, y)  # fmt: skip
    net = est.network_
    assert net.spec.sizes == (2, 4, 3) and net.spec.loss.name == "cross_entropy"
    assert net.spec.layers[-1].activation.name == "softmax"
    assert net.spec == NetworkClassifier(**SMALL)._build_spec(2, 3)


def test_dataframe_feature_names():
    pd = pytest.importorskip("pandas")
    X, y = blobs(centers=2)
    frame = pd.DataFrame(X, columns=["height", "weight"])
    est = NetworkClassifier(**SMALL, random_state=0).fit(frame, y)
    assert est.feature_names_in_.tolist() == ["height", "weight"]
    assert est.network_.feature_names_in_ == ("height", "weight")
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        np.testing.assert_array_equal(est.predict(frame), est.predict(X))
    with pytest.raises(ValueError, match="feature names should match"):
        est.predict(frame.rename(columns={"weight": "mass"}))


# ------------------------------------------------- model selection, kernels


def test_grid_search_with_two_jobs_cross_val_score_and_clone():
    X, y = blobs(centers=2, n=90)
    search = {"hidden_layer_sizes": [(8,), (16,)], "learning_rate_init": [1e-2, 1e-3]}
    estimator = NetworkClassifier(max_iter=15, random_state=0)
    # in this process first: the workers then find both modules compiled
    serial = GridSearchCV(estimator, search, n_jobs=1, cv=3).fit(X, y)
    grid = GridSearchCV(estimator, search, n_jobs=2, cv=3).fit(X, y)
    assert len(grid.cv_results_["params"]) == 4
    best = grid.best_estimator_
    assert (
        best.get_params()["hidden_layer_sizes"]
        == grid.best_params_["hidden_layer_sizes"]
    )
    assert grid.score(X, y) == best.score(X, y)
    # workers and this process build the same modules and train bit-identically
    np.testing.assert_array_equal(
        serial.cv_results_["mean_test_score"], grid.cv_results_["mean_test_score"]
    )
    pipe = make_pipeline(StandardScaler(), NetworkClassifier(**SMALL, random_state=0))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and (scores > 0.8).all()
    est = NetworkClassifier(**SMALL, random_state=0).fit(X, y)
    copy = clone(est)
    assert copy.get_params() == est.get_params() and not hasattr(copy, "network_")


def test_estimators_of_one_architecture_share_one_compiled_module():
    """learning rate, batch size, epochs, shuffling and seed are run-time
    values: estimators differing only in them use one module, compiled once."""
    X, y = blobs()
    fitted = [
        NetworkClassifier(hidden_layer_sizes=(4,), learning_rate_init=lr,
                          batch_size=b, max_iter=e, shuffle=s, random_state=r)
        .fit(X, y)
        for lr, b, e, s, r in [(0.1, 8, 2, True, 0), (1e-3, 50, 3, False, 5)]
    ]  # fmt: skip
    module = fitted[0].network_.module
    assert fitted[1].network_.module is module
    assert len(module._train.signatures) == 1
    decayed = NetworkClassifier(hidden_layer_sizes=(4,), weight_decay=1e-3)
    assert build(decayed._build_spec(2, 3)) is not module  # weight decay is in the spec
