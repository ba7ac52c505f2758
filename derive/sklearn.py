"""scikit-learn estimators around a derive network (needs the ``sklearn`` extra).

``NetworkClassifier`` and ``NetworkRegressor`` take their hyper-parameters in
``__init__`` (named like scikit-learn's ``MLPClassifier`` / ``MLPRegressor``
where the meaning is the same) and store them untouched; ``fit`` sizes a network
from the data, builds its module (``derive.build``: generated once per
architecture and cached, so every estimator of one architecture reuses the same
compiled kernels) and trains it from scratch, unless ``warm_start``.

The spec of an estimator holds only what changes the generated code: the input
size, the layers, the head, the optimizer with its weight decay, and the dtype.
The learning rate, batch size, epochs, shuffling, seed, validation split and
patience are passed to ``fit`` at run time, so a grid over them compiles nothing
new. The fitted network is ``network_`` (a :class:`derive.Network`: save it,
explain it, export it).

Inputs are checked by scikit-learn's own ``validate_data``, so the messages are
scikit-learn's; ``X`` is ``(n_samples, n_features)`` (a spec over images or
signals takes its rows flattened in C order).
"""

from __future__ import annotations

import copy
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import Tags, check_random_state
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .errors import SpecError
from .network import Network
from .optimizers import OPTIMIZERS
from .spec import DTYPES, Spec, Training, load_spec, spec_from_dict

__all__ = ["NetworkClassifier", "NetworkRegressor"]

#: scikit-learn's MLP names for activations that derive calls otherwise
_ACTIVATION_ALIASES = {"logistic": "sigmoid"}


class _NetworkEstimator(BaseEstimator):
    """The parameters, validation, spec and training both estimators share."""

    _default_name = "network"

    def __init__(
        self,
        hidden_layer_sizes: Any = (16,),
        activation: str | Mapping[str, Any] = "relu",
        optimizer: str | Mapping[str, Any] = "adam",
        learning_rate_init: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int | str = 32,
        max_iter: int = 200,
        shuffle: bool = True,
        validation_fraction: float = 0.0,
        n_iter_no_change: int = 0,
        random_state: Any = None,
        warm_start: bool = False,
        dtype: str = "float64",
        verbose: bool = False,
        spec: str | os.PathLike[str] | Mapping[str, Any] | Spec | None = None,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate_init = learning_rate_init
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.warm_start = warm_start
        self.dtype = dtype
        self.verbose = verbose
        self.spec = spec

    # ------------------------------------------------------------ parameters

    def _fail(self, message: str) -> ValueError:
        return ValueError(f"{type(self).__name__}: {message}")

    def _check_parameters(self) -> None:
        """Refuse a bad hyper-parameter, naming it and the fix (at fit time,
        as scikit-learn requires: __init__ and set_params only store)."""

        def number(name: str, low: float, *, positive: bool = False) -> None:
            value = getattr(self, name)
            ok = isinstance(value, int | float | np.integer | np.floating)
            ok = ok and not isinstance(value, bool) and math.isfinite(value)
            if not ok or value < low or (positive and value == low):
                rule = f"> {low:g}" if positive else f">= {low:g}"
                raise self._fail(
                    f"{name} must be a finite number {rule}, got {value!r}"
                )

        def integer(name: str, low: int) -> None:
            value = getattr(self, name)
            ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
            if not ok or value < low:
                raise self._fail(f"{name} must be an integer >= {low}, got {value!r}")

        number("learning_rate_init", 0.0, positive=True)
        number("weight_decay", 0.0)
        integer("max_iter", 1)
        integer("n_iter_no_change", 0)
        if self.batch_size != "auto":
            integer("batch_size", 1)
        number("validation_fraction", 0.0)
        if self.validation_fraction >= 1:
            raise self._fail(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}"
            )
        for name in ("shuffle", "warm_start"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise self._fail(
                    f"{name} must be True or False, got {getattr(self, name)!r}"
                )
        if self.dtype not in DTYPES:
            raise self._fail(
                f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}"
            )
        self._hidden_sizes()
        self._optimizer_table()

    def _hidden_sizes(self) -> list[int]:
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, int | np.integer) and not isinstance(sizes, bool):
            sizes = [sizes]
        try:
            values = list(sizes)
        except TypeError:
            values = None
        if values is None or not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1
            for v in values
        ):
            raise self._fail(
                "hidden_layer_sizes must be a tuple of positive integers (the "
                f"units of each hidden layer, e.g. (16,) or (32, 16)), got {sizes!r}"
            )
        return [int(v) for v in values]

    def _optimizer_table(self) -> dict[str, Any]:
        """The spec's [optimizer] table: the optimizer's name and fixed
        hyper-parameters with weight_decay (the learning rate comes at run time)."""
        value = self.optimizer
        table = {"name": value} if isinstance(value, str) else value
        if not isinstance(table, Mapping) or not isinstance(table.get("name"), str):
            raise self._fail(
                f"optimizer must be a name ({', '.join(sorted(OPTIMIZERS))}) or a "
                f"dict with 'name' and hyper-parameters, got {value!r}"
            )
        table = dict(table)
        if "lr" in table:
            raise self._fail(
                "optimizer: give the learning rate as learning_rate_init, not 'lr'"
            )
        if "weight_decay" in table:
            raise self._fail(
                "optimizer: give weight decay as weight_decay, not in the optimizer"
            )
        table["weight_decay"] = float(self.weight_decay)
        return table

    # ------------------------------------------------------------------ spec

    def _head(self, n_outputs: int) -> tuple[Any, Any, int]:
        """(output activation, loss, output units) for the data: overridden."""
        raise NotImplementedError

    def _user_table(self) -> dict[str, Any] | None:
        """The ``spec`` parameter as plain TOML data, or None."""
        spec = self.spec
        if spec is None:
            return None
        if isinstance(spec, Spec):
            return spec.to_dict()
        if isinstance(spec, Mapping):
            return copy.deepcopy(dict(spec))
        if isinstance(spec, os.PathLike) or (
            isinstance(spec, str) and "\n" not in spec and spec.endswith(".toml")
        ):
            return load_spec(Path(spec)).to_dict()
        if isinstance(spec, str):
            try:
                return tomllib.loads(spec)
            except tomllib.TOMLDecodeError as exc:
                raise SpecError(
                    [f"not valid TOML: {exc}; check quotes and brackets"],
                    f"{type(self).__name__}(spec=...)",
                ) from None
        raise self._fail(
            "spec must be a TOML file path, TOML text, a dict or a derive Spec, "
            f"got {type(spec).__name__}"
        )

    def _build_spec(self, n_features: int, n_outputs: int) -> Spec:
        """The spec of the network for ``n_features`` inputs and ``n_outputs``
        targets (classes for a classifier)."""
        activation, loss, units = self._head(n_outputs)
        table = self._user_table()
        if table is None:
            hidden = _activation(self.activation)
            layers: list[Any] = [
                {"units": u, "activation": hidden} for u in self._hidden_sizes()
            ]
            layers.append({"units": units, "activation": activation})
            table = {
                "name": self._default_name,
                "input": n_features,
                "layers": layers,
                "loss": loss,
            }
        else:
            table.setdefault("name", self._default_name)
            shape = table.get("input")
            if isinstance(shape, list | tuple):
                if math.prod(int(v) for v in shape) != n_features:
                    raise self._fail(
                        f"spec input {list(shape)} takes {math.prod(shape)} values "
                        f"per row, but X has {n_features} features; give X with "
                        "one row per sample flattened in C order"
                    )
            else:
                table["input"] = n_features
            layers = table.get("layers")
            if isinstance(layers, list) and layers and isinstance(layers[-1], Mapping):
                last = dict(layers[-1])
                last["units"] = units
                if activation is not None:
                    last["activation"] = activation
                table["layers"] = [*layers[:-1], last]
            if loss is not None or "loss" not in table:
                table["loss"] = loss or {"name": "mse"}
        table["dtype"] = self.dtype
        table["optimizer"] = self._optimizer_table()
        table["training"] = asdict(Training())  # the run-time values come per fit
        try:
            return spec_from_dict(table, "spec")
        except SpecError as exc:
            raise self._fail(
                "these parameters give an invalid network: "
                + str(exc).removeprefix("spec: ")
            ) from None

    # --------------------------------------------------------------- fitting

    def _seed(self) -> int:
        if isinstance(self.random_state, int | np.integer) and not isinstance(
            self.random_state, bool
        ):
            if self.random_state < 0:
                raise self._fail(f"random_state must be >= 0, got {self.random_state}")
            return int(self.random_state)
        return int(
            check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        )

    def _batch_size(self, n_samples: int) -> int:
        if self.batch_size == "auto":  # MLP's: min(200, n_samples)
            return min(200, n_samples)
        return int(self.batch_size)

    def _train(
        self, X: np.ndarray, y: np.ndarray, *, epochs: int, validate: bool
    ) -> None:
        """Train network_ for ``epochs`` on rows X, targets y (with the
        validation split and patience if ``validate``)."""
        network = self.network_
        n = X.shape[0]
        fraction = float(self.validation_fraction) if validate else 0.0
        patience = int(self.n_iter_no_change) if validate else 0
        if fraction and n * fraction < 1:
            fraction = 0.0  # too few rows to hold one out
        before = len(network.history_.get("loss", ()))
        network.fit(
            X,
            y,
            epochs=epochs,
            batch_size=min(self._batch_size(n), n),
            lr=float(self.learning_rate_init),
            shuffle=bool(self.shuffle),
            seed=self._seed_,
            validation_split=fraction,
            patience=patience,
            verbose=bool(self.verbose),
        )
        losses = network.history_["loss"]
        self.n_iter_ = len(losses) - before
        self.loss_ = float(losses[-1])
        self.loss_curve_ = [float(v) for v in losses]

    def _new_network(self, spec: Spec, classes: np.ndarray | None) -> None:
        self._seed_ = self._seed()
        self.network_ = Network(spec, seed=self._seed_, classes=classes)
        if getattr(self, "feature_names_in_", None) is not None:
            self.network_.feature_names_in_ = tuple(
                str(n) for n in self.feature_names_in_
            )

    def _continuing(self, incremental: bool) -> bool:
        return hasattr(self, "network_") and (incremental or bool(self.warm_start))

    def _check_same_spec(self, spec: Spec) -> None:
        if spec.hash != self.network_.spec.hash:
            raise self._fail(
                "warm_start / partial_fit: the architecture or optimizer changed "
                "since the last fit; set warm_start=False (or call fit) to start over"
            )

    def _inputs(self, X: Any) -> np.ndarray:
        """X of a fitted estimator, checked by scikit-learn (features included)."""
        check_is_fitted(self)
        return validate_data(
            self, X, reset=False, dtype=np.dtype(self.network_.spec.dtype)
        )

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False  # bit-reproducible from random_state
        return tags


def _activation(value: Any) -> Any:
    if isinstance(value, str):
        return _ACTIVATION_ALIASES.get(value, value)
    return dict(value) if isinstance(value, Mapping) else value


class NetworkClassifier(ClassifierMixin, _NetworkEstimator):
    """A derive network classifier with scikit-learn's estimator API.

    The head follows the labels, as scikit-learn's MLP does: two classes get one
    sigmoid unit and binary cross-entropy, more get a softmax over one unit per
    class and cross-entropy. Labels may be any values ``unique_labels`` sorts
    (``classes_``). Hidden layers: ``hidden_layer_sizes`` dense layers of
    ``activation`` (any derive activation name or ``{"expr": ...}``; "logistic"
    is sigmoid), or the layers of ``spec`` (a TOML path, TOML text, a dict or a
    Spec; its input size and output layer are set from the data, its optimizer
    and training tables replaced by these parameters).

    Parameters are MLPClassifier's where the meaning is the same:
    ``learning_rate_init``, ``batch_size`` (or "auto": min(200, n_samples)),
    ``max_iter`` (epochs), ``shuffle``, ``validation_fraction`` (rows held out
    for validation), ``n_iter_no_change`` (patience of early stopping on the
    validation loss, or the training loss without validation; 0: off),
    ``random_state`` (seeds the initial weights and the shuffling),
    ``warm_start``; and derive's ``optimizer`` (a name or a dict of torch.optim
    hyper-parameters), ``weight_decay``, ``dtype``, ``verbose`` (a progress bar).

    Fitted attributes: ``network_`` (the :class:`derive.Network`), ``classes_``,
    ``n_features_in_``, ``feature_names_in_`` (from a DataFrame), ``n_iter_``
    (epochs of the last call), ``loss_`` and ``loss_curve_`` (per epoch, over all
    calls of this network).
    """

    _default_name = "sklearn_classifier"

    def _head(self, n_outputs: int) -> tuple[Any, Any, int]:
        if n_outputs == 2:
            return "sigmoid", {"name": "binary_cross_entropy"}, 1
        return "softmax", {"name": "cross_entropy"}, n_outputs

    def fit(self, X: Any, y: Any) -> NetworkClassifier:
        """Train on X (n_samples, n_features) and labels y (n_samples,) from
        scratch (continuing the last fit with ``warm_start``); returns self."""
        return self._fit(X, y, incremental=False, classes=None)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> NetworkClassifier:
        """One epoch over X, y, continuing the network (a new one on the first
        call: ``classes`` lists every label the later calls may bring, default
        those of y). No validation or early stopping. Returns self."""
        return self._fit(X, y, incremental=True, classes=classes)

    def _fit(
        self, X: Any, y: Any, *, incremental: bool, classes: Any
    ) -> NetworkClassifier:
        self._check_parameters()
        continuing = self._continuing(incremental)
        X, y = validate_data(
            self, X, y, reset=not continuing, dtype=np.dtype(self.dtype)
        )
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if continuing:
            seen = unique_labels(y)
            known = set(self.classes_.tolist())
            if incremental and not set(seen.tolist()) <= known:
                raise self._fail(
                    f"y has classes not in classes_ {self.classes_.tolist()}: "
                    f"{sorted(set(seen.tolist()) - known)}; give every class in the "
                    "first partial_fit call (classes=...)"
                )
            if not incremental and set(seen.tolist()) != known:
                raise self._fail(
                    "warm_start needs the classes of the previous fit "
                    f"{self.classes_.tolist()}, y has {seen.tolist()}; set "
                    "warm_start=False to start over"
                )
            self._check_same_spec(
                self._build_spec(self.n_features_in_, len(self.classes_))
            )
        else:
            labels = unique_labels(y) if classes is None else unique_labels(classes)
            if classes is not None and not set(unique_labels(y).tolist()) <= set(
                labels.tolist()
            ):
                raise self._fail("y has labels that are not in classes")
            if len(labels) < 2:
                raise self._fail(
                    f"y has 1 class ({labels.tolist()[0]!r}); a classifier needs 2 or more "
                    "classes: give examples of each"
                )
            self.classes_ = labels
            spec = self._build_spec(self.n_features_in_, len(labels))
            self._new_network(spec, labels)
        self._train(
            X, y, epochs=1 if incremental else int(self.max_iter),
            validate=not incremental,
        )  # fmt: skip
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The predicted label of each row, shape (n_samples,), from ``classes_``."""
        X = self._inputs(X)
        return self.network_.predict(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns in the
        order of ``classes_``, rows summing to 1."""
        X = self._inputs(X)
        return self.network_.predict_proba(X)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """The logarithm of ``predict_proba`` (-inf where a probability is 0)."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores whose order is the predictions': two classes, the log-odds of
        the second class, ``log p - log(1 - p)``, shape (n_samples,) (+-inf
        where the probability rounds to 1 or 0); more classes, the
        log-probabilities (n_samples, n_classes), the softmax's inputs less each
        row's log-sum-exp."""
        X = self._inputs(X)
        if len(self.classes_) == 2:
            p = self.network_.outputs(X)[:, 0].astype(np.float64)
            with np.errstate(divide="ignore"):
                return np.log(p) - np.log1p(-p)
        with np.errstate(divide="ignore"):
            return np.log(self.network_.predict_proba(X))


class NetworkRegressor(RegressorMixin, _NetworkEstimator):
    """A derive network regressor with scikit-learn's estimator API.

    One identity output unit per target column and the mean squared error (a
    ``spec`` keeps its own output activation and loss, e.g. huber). ``y`` is
    (n_samples,) or (n_samples, n_targets); predictions have y's shape. The
    parameters and fitted attributes are those of :class:`NetworkClassifier`
    (no ``classes_``; ``n_outputs_`` targets).
    """

    _default_name = "sklearn_regressor"

    def _head(self, n_outputs: int) -> tuple[Any, Any, int]:
        if self.spec is None:
            return "identity", {"name": "mse"}, n_outputs
        return None, None, n_outputs

    def fit(self, X: Any, y: Any) -> NetworkRegressor:
        """Train on X (n_samples, n_features) and targets y from scratch
        (continuing the last fit with ``warm_start``); returns self."""
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X: Any, y: Any) -> NetworkRegressor:
        """One epoch over X, y, continuing the network (a new one on the first
        call). No validation or early stopping. Returns self."""
        return self._fit(X, y, incremental=True)

    def _fit(self, X: Any, y: Any, *, incremental: bool) -> NetworkRegressor:
        self._check_parameters()
        continuing = self._continuing(incremental)
        X, y = validate_data(
            self, X, y, reset=not continuing, dtype=np.dtype(self.dtype),
            multi_output=True, y_numeric=True,
        )  # fmt: skip
        n_outputs = 1 if y.ndim == 1 else y.shape[1]
        spec = self._build_spec(self.n_features_in_, n_outputs)
        if continuing:
            self._check_same_spec(spec)
        else:
            self.n_outputs_ = n_outputs
            self._new_network(spec, None)
        self._y_ndim = y.ndim
        self._train(
            X, y.astype(np.float64), epochs=1 if incremental else int(self.max_iter),
            validate=not incremental,
        )  # fmt: skip
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets in float64: (n_samples,) if fit took a 1-D y, else
        (n_samples, n_targets)."""
        X = self._inputs(X)
        out = self.network_.outputs(X).astype(np.float64)
        return out[:, 0] if self._y_ndim == 1 else out

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
