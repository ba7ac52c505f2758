"""``derive.Network``: a scikit-learn style estimator around a generated module.

A ``Network`` builds the spec's module (``derive.build``), holds the parameters
(initialised from the spec's training seed) and the optimizer state, and offers
``fit`` / ``predict`` / ``predict_proba`` / ``score`` / ``save`` / ``load``.

Classifiers take class labels, as scikit-learn's do: a binary network (one
sigmoid or logit output) any two labels, a softmax network one label per row
(or one-hot / class-probability rows). Labels that are 0/1 (binary) or
0..units-1 (softmax) are used as they are; other labels are sorted and become
``classes_`` (the first one is class 0). A regression network takes values of
shape (n,) or (n, outputs).
"""

from __future__ import annotations

import functools
import operator
import os
import sys
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ._version import __version__
from .data import DataError
from .errors import DeriveError, DivergenceError, SpecError
from .fileio import atomic_open
from .generate import build
from .spec import Spec, load_spec, parse_spec, spec_from_dict

#: Marks an .npz written by Network.save (bumped if the layout changes).
MODEL_FORMAT = "derive-network-1"
_HISTORY_KEYS = ("loss", "lr", "val_loss", "val_accuracy")
_TASKS = {"binary": "binary classifier", "multiclass": "multiclass classifier",
          "regression": "regression"}  # fmt: skip


class Network:
    """A network of one spec with its parameters and optimizer state.

    Attributes: ``spec``, ``module`` (the generated module), ``params``
    (``[W1, b1, ...]``, W of shape (n_out, n_in)), ``state`` (optimizer state,
    resumed by every ``fit``), ``history_`` (per-epoch arrays over all ``fit``
    calls: loss, lr, and val_loss / val_accuracy when validated, NaN for epochs
    of calls without validation), ``best_epoch_`` and ``stopped_early_`` (of the
    last ``fit``), ``classes_`` (classifiers), ``feature_names_in_`` and
    ``target_names_`` (set by ``derive fit`` from a CSV header, else None).
    """

    def __init__(
        self,
        spec: Spec | Mapping[str, Any],
        *,
        seed: int | None = None,
        classes: Any = None,
    ) -> None:
        """A fresh network of ``spec`` (a Spec or its dict form).

        ``seed`` seeds the initial parameters (default: the spec's training
        seed). ``classes`` fixes the class labels of a classifier, one per
        class in the order of the output units (otherwise the first ``fit``
        learns them from its labels).
        """
        self.spec = spec if isinstance(spec, Spec) else spec_from_dict(spec)
        self.module: ModuleType = build(self.spec)
        self.params: list[np.ndarray] = self.module.init_params(
            seed=self.spec.training.seed if seed is None else seed
        )
        self.state: dict[str, Any] = self.module.init_state(self.params)
        #: module state that training updates and evaluation reads: batch norm's
        #: running statistics (the module's init_buffers(), empty without it)
        self.buffers: list[np.ndarray] = self.module.init_buffers()
        self.history_: dict[str, np.ndarray] = {}
        self.best_epoch_: int | None = None
        #: the last fit's divergence report (epoch, rows, quantity, message), or None
        self.diverged_: dict[str, Any] | None = None
        self.stopped_early_: bool = False
        self.feature_names_in_: tuple[str, ...] | None = None
        self.target_names_: tuple[str, ...] | None = None
        self._classes: np.ndarray | None = (
            None if self.task == "regression" else np.arange(self._n_classes)
        )
        self._classes_learned = False
        #: the parameters predict last checked (see _checked_params), or None
        #: (the params list, its arrays, their kernel views)
        self._verified: tuple[list[Any], list[Any], list[Any]] | None = None
        if classes is not None:
            self._set_classes(classes)

    def _set_classes(self, classes: Any) -> None:
        if self._classes is None:
            raise DataError(
                f"classes: spec '{self.spec.name}' is a regression network; "
                "leave classes out"
            )
        labels = np.asarray(classes)
        if labels.ndim != 1 or len(labels) != self._n_classes:
            raise DataError(
                f"classes must list {self._n_classes} labels (one per class of "
                f"the output layer), got {labels.shape[0] if labels.ndim else 0}"
            )
        if len(_unique(labels)) != len(labels):
            raise DataError("classes must be distinct labels")
        self._classes, self._classes_learned = labels, True

    # -------------------------------------------------------------- pickling

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the generated module, which unpickling rebuilds (or
        re-imports from the module cache) from the spec's TOML text."""
        state = self.__dict__.copy()
        del state["module"]
        state.pop("_verified", None)  # predict checks the unpickled arrays again
        state["spec"] = self.spec.to_toml()
        state["spec_hash"] = self.spec.hash
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        spec = parse_spec(state.pop("spec"), "pickled Network (stored spec)")
        expected = state.pop("spec_hash")
        if spec.hash != expected:
            raise DeriveError(
                f"a pickled Network of spec '{spec.name}' is damaged: its spec "
                f"hashes to {spec.hash}, not the stored {expected}"
            )
        self._verified = None
        self.__dict__.update(state)
        self.spec = spec
        self.module = build(spec)

    @classmethod
    def from_spec(cls, path: str | os.PathLike[str]) -> Network:
        """A new network from a TOML spec file."""
        return cls(load_spec(path))

    # ------------------------------------------------------------ properties

    @property
    def task(self) -> str:
        """ "binary", "multiclass" or "regression" (the module's TASK)."""
        return str(self.module.TASK)

    @property
    def is_classifier(self) -> bool:
        return self.task != "regression"

    @property
    def n_outputs(self) -> int:
        return int(self.module.N_OUTPUT)

    @property
    def _multilabel(self) -> bool:
        return self.task == "binary" and self.n_outputs > 1

    @property
    def _n_classes(self) -> int:
        return 2 if self.task == "binary" else self.n_outputs

    @property
    def classes_(self) -> np.ndarray:
        """The class labels, in the order of the output units (classifiers only)."""
        if self._classes is None:
            raise AttributeError(
                f"classes_: spec '{self.spec.name}' is a regression network"
            )
        return self._classes

    @property
    def classes_learned(self) -> bool:
        """Whether ``classes_`` came from training labels (else the defaults
        0/1 or 0..units-1, which a first ``fit`` may replace)."""
        return self._classes_learned

    @property
    def epochs_done(self) -> int:
        """Epochs trained so far (across fit calls and save/load)."""
        return int(self.state["epoch"][0]) if "epoch" in self.state else 0

    def __repr__(self) -> str:
        arch = self.spec.architecture
        return (
            f"Network('{self.spec.name}', {arch}, {self.task}, "
            f"epochs_done={self.epochs_done})"
        )

    def _repr_html_(self) -> str:
        """Jupyter's view: the architecture (one row per layer: kind, output
        shape, activation, parameters) and, once trained, the last epochs' losses."""
        from html import escape

        from .interop import network_layers

        spec = self.spec
        layers = network_layers(self)
        n_params = sum(p.size for p in self.params)
        optimizer = spec.optimizer
        head = (
            f"<strong>Network '{escape(spec.name)}'</strong>: {_TASKS[self.task]}, "
            f"{escape(spec.dtype)}, {escape(spec.loss.label)}, "
            f"{escape(optimizer.name)} (lr {optimizer.lr:g}), {n_params} parameters"
        )
        rows = [
            "<tr><td>0</td><td>input</td>"
            f"<td>{'x'.join(map(str, spec.input_shape))}</td><td></td><td></td></tr>"
        ]
        for info in layers:
            act = info.layer.activation
            label = escape(info.layer.label)
            if info.layer.residual is not None:
                label += f" + output of layer {info.layer.residual}"
            count = sum(p.size for p in info.params.values())
            rows.append(
                f"<tr><td>{info.index}</td><td>{label}</td>"
                f"<td>{'x'.join(map(str, info.out_shape))}</td>"
                f"<td>{escape(act.label) if act is not None else ''}</td>"
                f"<td>{count or ''}</td></tr>"
            )
        table = (
            "<table><thead><tr><th>#</th><th>layer</th><th>output</th>"
            "<th>activation</th><th>parameters</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>"
        )
        return f'<div class="derive-network"><p>{head}</p>{table}{self._losses_html()}</div>'

    def _losses_html(self) -> str:
        """The last five epochs' losses (and validation) as a table."""
        losses = self.history_.get("loss")
        if losses is None or not len(losses):
            return "<p>Not trained yet: <code>fit(X, y)</code> trains it.</p>"
        keys = [k for k in _HISTORY_KEYS if k in self.history_ and k != "lr"]
        first = max(0, len(losses) - 5)
        head = "".join(f"<th>{k}</th>" for k in ["epoch", *keys])
        body = "".join(
            f"<tr><td>{e}</td>"
            + "".join(f"<td>{self.history_[k][e]:.6g}</td>" for k in keys)
            + "</tr>"
            for e in range(first, len(losses))
        )
        note = f"Trained {self.epochs_done} epochs"
        if self.stopped_early_:
            note += f", stopped early (best epoch {self.best_epoch_} of the last fit)"
        return (
            f"<p>{note}; the last losses:</p><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>"
        )

    # --------------------------------------------------------------- training

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        validation_split: float | None = None,
        validation_data: tuple[Any, Any] | None = None,
        verbose: bool = False,
        **options: Any,
    ) -> Network:
        """Train in place, continuing from the current params and optimizer state.

        X: (n, inputs). y: labels (n,) for classifiers (or one-hot rows for a
        softmax network), values (n,) or (n, outputs) for regression. None means
        the spec's [training] default. ``validation_split`` holds out that
        fraction of the rows (the last ones after a shuffle seeded by the spec's
        training seed, kept in file order); ``validation_data=(X_val, y_val)``
        takes precedence. ``verbose`` shows a progress bar on stderr. Other
        options go to the module's ``fit`` (shuffle, seed, schedule, step_size,
        gamma, min_lr, clip_norm, patience, min_delta, callback). Returns self.
        """
        X = self._features(X)
        Y, classes = self._targets(y, learn=True)
        if Y.shape[0] != X.shape[0]:
            raise DataError(
                f"X has {X.shape[0]} rows but y has {Y.shape[0]}; give one target per row"
            )
        reserved = {"state", "X_val", "Y_val", "buffers"} & set(options)
        if reserved:
            raise TypeError(
                f"fit() manages {', '.join(sorted(reserved))} itself; "
                "use validation_data=(X_val, y_val) and keep the Network to resume"
            )
        kwargs: dict[str, Any] = {
            key: value
            for key, value in {
                "epochs": epochs,
                "batch_size": batch_size,
                "lr": lr,
            }.items()
            if value is not None
        }
        kwargs.update(options)
        seed = int(kwargs.get("seed", self.spec.training.seed))
        X_train, Y_train, validation = self._validation(
            X, Y, classes, validation_split, validation_data, seed
        )
        kwargs.update(validation)
        n_epochs = int(kwargs.get("epochs", self._training_default("epochs", 1)))
        with _progress(verbose, n_epochs, self.spec.name) as show:
            user_callback = kwargs.pop("callback", None)
            if show is not None or user_callback is not None:
                kwargs["callback"] = _chain(show, user_callback)
            try:
                with warnings.catch_warnings():
                    # a diverged fit: raised below, with the history kept
                    warnings.filterwarnings("ignore", "training diverged")
                    history = self.module.fit(
                        self.params, X_train, Y_train, state=self.state,
                        **self._buffers_kwarg(), **kwargs,
                    )  # fmt: skip
            except ValueError as exc:
                raise DataError(str(exc)) from None
        self._classes, self._classes_learned = classes, True
        self._record(history)
        self.diverged_ = history.get("diverged")
        if self.diverged_ is not None:
            raise DivergenceError(self.diverged_)
        return self

    def _buffers_kwarg(self) -> dict[str, Any]:
        """The running statistics for the module's calls (none without batch norm)."""
        return {"buffers": self.buffers} if self.buffers else {}

    def _validation(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        classes: np.ndarray | None,
        split: float | None,
        data: tuple[Any, Any] | None,
        seed: int,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(training X, training Y, {"X_val", "Y_val"} or {}) for one fit call."""
        if data is not None:
            X_val = self._features(data[0])
            return X, Y, {"X_val": X_val, "Y_val": self._encode(data[1], classes)}
        if split is None:
            split = self._training_default("validation_split", 0.0)
        train, val = _split_rows(X.shape[0], split, seed)
        if not val.size:
            return X, Y, {}
        return X[train], Y[train], {"X_val": X[val], "Y_val": Y[val]}

    def _training_default(self, key: str, fallback: Any) -> Any:
        return getattr(self.module, "TRAINING", {}).get(key, fallback)

    def _record(self, history: Mapping[str, Any]) -> None:
        """Append one fit call's history to ``history_`` (NaN where absent)."""
        n_new = len(history["loss"])
        n_old = len(self.history_.get("loss", ()))
        for key in _HISTORY_KEYS:
            if key not in history and key not in self.history_:
                continue
            old = self.history_.get(key, np.full(n_old, np.nan))
            new = np.asarray(history.get(key, np.full(n_new, np.nan)), dtype=float)
            self.history_[key] = np.concatenate([old, new])
        best = history.get("best_epoch")
        self.best_epoch_ = None if best is None else int(best)
        self.stopped_early_ = bool(history.get("stopped_early", False))

    # ------------------------------------------------------------- prediction

    def outputs(self, X: Any) -> np.ndarray:
        """The raw network outputs, shape (n, outputs): probabilities, logits or values.

        Checks X on every call (shape, numbers, finite). The parameters are
        checked (list of arrays, shapes, dtype, layout, finite) the first time
        they are used after being set: a new list or a new array in
        ``params`` (assignment, ``load``, ``from_torch``) is checked once, and
        ``fit`` checks them on entry and keeps them finite; an element edited
        in place in an array of ``params`` is not seen until the list or an
        array in it is replaced (``net.params = [p.copy() for p in
        net.params]``) -- the module's own ``predict(params, X)`` checks
        everything on every call."""
        out = self._fast_outputs(X)
        if out is not None:
            return out
        try:
            return self.module.predict(
                self.params, self._features(X), **self._buffers_kwarg()
            )
        except ValueError as exc:
            raise DataError(str(exc)) from None

    def _fast_outputs(self, X: Any) -> np.ndarray | None:
        """The outputs of rows that need no conversion, straight from the jitted
        forward: X a writeable C-contiguous (n, inputs) array of the module's
        dtype with finite values, a module without running statistics. None
        otherwise (the checked path then converts X or names what is wrong).
        The same kernel on the same rows as the module's predict: the same bits."""
        plan = _plan(self.module)
        if type(X) is not np.ndarray or X.dtype is not plan.dtype:
            return None
        flags = X.flags
        if (
            X.ndim != 2
            or X.shape[1] != plan.n_input
            or not X.shape[0]
            or not flags.c_contiguous
            or not flags.writeable
            or self.buffers
            or not plan.all_finite(X)  # the checked path names the value
        ):
            return None
        views = self._checked_params()
        rows = X.shape[0]
        buffers = plan.one_row() if rows == 1 else self.module._buffers(rows)
        plan.forward(*views, plan.kernel_input(X), *buffers)
        # a copy: the one-row buffers are used again by the next call
        return buffers[plan.output].T.copy()

    def _checked_params(self) -> list[Any]:
        """The parameters as the kernels take them, checked by the module's
        _check_params unless these very arrays (same list, same objects) were
        checked before: parameters change by assignment, which makes new
        objects, or in place by fit, which keeps them finite."""
        params = self.params
        verified = self._verified
        if (
            verified is not None
            and params is verified[0]
            and len(params) == len(verified[1])
            and all(map(operator.is_, params, verified[1]))
        ):
            return verified[2]
        try:
            self.module._check_params(params)
        except ValueError as exc:
            raise DataError(str(exc)) from None
        views = [self.module._kernel_view(p) for p in params]
        self._verified = (params, list(params), views)
        return views

    def predict(self, X: Any) -> np.ndarray:
        """Class labels (n,) for classifiers (0/1 matrix (n, outputs) for a
        multi-output binary network), values for regression: (n,) for one
        output, (n, outputs) for several."""
        out = self.outputs(X)
        task = self.task
        if task == "multiclass":
            return self.classes_[out.argmax(axis=1)]
        if task == "regression":
            return out[:, 0] if self.n_outputs == 1 else out
        positive = out > self.module.THRESHOLD  # binary
        return (
            positive.astype(np.int64)
            if self._multilabel
            else self.classes_[positive[:, 0].astype(np.int64)]
        )

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n, len(classes_)) with rows summing to 1
        (multi-output binary: (n, outputs), each the probability of a 1)."""
        if self.task == "regression":
            raise DataError(
                f"predict_proba is for classifiers; spec '{self.spec.name}' is a "
                "regression network: use predict"
            )
        out = self.outputs(X).astype(np.float64)
        if self.task == "multiclass":
            return out
        if self.module.THRESHOLD == 0.0:  # the output op is 0 at z = 0: logits
            out = _sigmoid(out)
        return out if self._multilabel else np.hstack([1.0 - out, out])

    def score(self, X: Any, y: Any) -> float:
        """Accuracy for classifiers (exact row match for multi-output binary),
        R^2 (averaged over outputs, as scikit-learn's r2_score) for regression."""
        if self.task == "regression":
            Y = self._encode(y, None)
            return _r2(Y, self.outputs(X).astype(np.float64))
        predicted = self.predict(X)
        if self._multilabel:
            truth = self._encode(y, self.classes_) >= 0.5
            return float(np.mean(np.all(predicted.astype(bool) == truth, axis=1)))
        y = np.asarray(y)
        if self.task == "multiclass" and y.ndim == 2 and y.shape[1] > 1:
            truth = self.classes_[np.argmax(y, axis=1)]
        else:
            truth = y.reshape(-1)
        if truth.shape[0] != predicted.shape[0]:
            raise DataError(
                f"X has {predicted.shape[0]} rows but y has {truth.shape[0]}; "
                "give one target per row"
            )
        return float(np.mean(predicted == truth))

    # -------------------------------------------------------- inputs, targets

    def _features(self, X: Any) -> np.ndarray:
        """X as (n, inputs) rows in the module's dtype; images and signals may
        come in their shape, (n, C, H, W) or (n, C, L), or flattened in C order."""
        spec = self.spec
        shape = spec.input_shape
        n_inputs = spec.n_inputs
        expected = f"(n, {n_inputs})"
        if len(shape) > 1:
            expected = f"(n, {', '.join(map(str, shape))}) or {expected}"
        try:
            array = np.asarray(X, dtype=self.module.DTYPE)
        except (TypeError, ValueError):
            raise DataError(
                f"X must be numbers of shape {expected}; got values that are not numbers"
            ) from None
        if len(shape) > 1 and array.ndim == 1 + len(shape) and array.shape[1:] == shape:
            array = array.reshape(array.shape[0], n_inputs)
        if array.ndim != 2 or array.shape[1] != n_inputs:
            given = spec.input if isinstance(spec.input, int) else list(spec.input)
            raise DataError(
                f"X has shape {array.shape} but spec '{spec.name}' takes "
                f"input = {given}; give X of shape {expected}"
            )
        if not np.all(np.isfinite(array)):
            r, c = np.argwhere(~np.isfinite(array))[0]
            raise DataError(f"X[{r}, {c}] is {array[r, c]}; give finite numbers")
        return array

    def encode_targets(self, y: Any) -> np.ndarray:
        """Targets as the module takes them, (n, outputs) in its dtype: a 0/1
        column (binary), one-hot rows (softmax) or the values (regression)."""
        return self._encode(y, self._classes)

    def _targets(self, y: Any, *, learn: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(Y of shape (n, outputs) in the module's dtype, the classes it used)."""
        if self.task == "regression" or self._multilabel:
            return self._encode(y, None), None
        classes = self._classes
        labels = np.asarray(y)
        is_rows = self.task == "multiclass" and labels.ndim == 2 and labels.shape[1] > 1
        if learn and not self._classes_learned and not is_rows:
            classes = _learn_classes(_label_vector(labels), self._n_classes)
        return self._encode(y, classes), classes

    def _encode(self, y: Any, classes: np.ndarray | None) -> np.ndarray:
        """Targets as the module takes them, shape (n, outputs), dtype DTYPE."""
        dtype = self.module.DTYPE
        if classes is None or self._multilabel:
            try:
                values = np.asarray(y, dtype=np.float64)
            except (TypeError, ValueError):
                raise DataError(
                    f"y must be numbers for spec '{self.spec.name}' "
                    f"({self.task}); got values that are not numbers"
                ) from None
            if values.ndim == 1 and self.n_outputs == 1:
                values = values[:, None]
            if values.ndim != 2 or values.shape[1] != self.n_outputs:
                raise DataError(
                    f"y has shape {values.shape} but spec '{self.spec.name}' has "
                    f"{self.n_outputs} outputs; give y of shape (n, {self.n_outputs})"
                )
            if not np.all(np.isfinite(values)):
                raise DataError("y holds NaN or infinite values; give finite numbers")
            return values.astype(dtype)
        labels = np.asarray(y)
        if self.task == "multiclass" and labels.ndim == 2 and labels.shape[1] > 1:
            if labels.shape[1] != self.n_outputs:
                raise DataError(
                    f"y has {labels.shape[1]} columns but the softmax output has "
                    f"{self.n_outputs} units; give labels or {self.n_outputs} one-hot columns"
                )
            return np.asarray(labels, dtype=dtype)
        index = _class_index(_label_vector(labels), classes)
        if self.task == "binary":
            return index.astype(dtype)[:, None]
        return np.eye(self.n_outputs, dtype=dtype)[index]

    # ---------------------------------------------------------- save / load

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write params, optimizer state, spec, classes and history to one .npz,
        atomically (a temporary file in the same folder, then a rename)."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "format": np.array(MODEL_FORMAT),
            "derive_version": np.array(__version__),
            "spec_toml": np.array(self.spec.to_toml()),
            "spec_hash": np.array(self.spec.hash),
        }
        for i, param in enumerate(self.params):
            arrays[f"param_{i}"] = param
        for key, value in self.state.items():
            if isinstance(value, list | tuple):
                for i, item in enumerate(value):
                    arrays[f"state__{key}__{i}"] = np.asarray(item)
            else:
                arrays[f"state__{key}"] = np.asarray(value)
        for i, buffer in enumerate(self.buffers):
            arrays[f"buffer_{i}"] = buffer
        for key, values in self.history_.items():
            arrays[f"history__{key}"] = values
        arrays["best_epoch"] = np.array(
            -1 if self.best_epoch_ is None else self.best_epoch_
        )
        arrays["stopped_early"] = np.array(self.stopped_early_)
        if self._classes is not None:
            arrays["classes"] = _storable(self._classes)
            arrays["classes_learned"] = np.array(self._classes_learned)
        if self.feature_names_in_ is not None:
            arrays["feature_names"] = np.array(self.feature_names_in_, dtype=str)
        if self.target_names_ is not None:
            arrays["target_names"] = np.array(self.target_names_, dtype=str)
        with atomic_open(path, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        spec: Spec | str | os.PathLike[str] | None = None,
    ) -> Network:
        """A network saved by ``save``; needs no spec file.

        Checks the stored spec against its stored hash; with ``spec`` (a Spec or a
        spec file) refuses a model trained from a different spec.
        """
        path = Path(path)
        arrays = _read_model(path)
        stored_hash = str(arrays["spec_hash"])
        try:
            stored = parse_spec(str(arrays["spec_toml"]), f"{path} (stored spec)")
        except SpecError as exc:
            raise DeriveError(
                f"{path} is damaged: its stored spec is invalid ({exc})"
            ) from None
        if stored.hash != stored_hash:
            raise DeriveError(
                f"{path} is damaged or edited: its spec hashes to {stored.hash}, "
                f"not the stored {stored_hash}; retrain with `derive fit`"
            )
        if spec is not None:
            expected = spec if isinstance(spec, Spec) else load_spec(spec)
            if expected.hash != stored.hash:
                raise DeriveError(
                    f"{path} was trained with spec '{stored.name}' (hash {stored.hash}), "
                    f"not with this spec '{expected.name}' (hash {expected.hash}); "
                    "pass the spec it was trained with, or retrain with `derive fit`"
                )
        network = cls(stored)
        network._restore(arrays, path)
        return network

    def _restore(self, arrays: Mapping[str, np.ndarray], path: Path) -> None:
        def take(key: str, like: np.ndarray) -> np.ndarray:
            if key not in arrays:
                raise DeriveError(
                    f"{path} is incomplete: no '{key}'; retrain or re-save it"
                )
            value = arrays[key]
            if value.shape != like.shape:
                raise DeriveError(
                    f"{path} is damaged: '{key}' has shape {value.shape}, "
                    f"expected {like.shape}; retrain or re-save it"
                )
            return value.astype(like.dtype)

        self.params = [take(f"param_{i}", p) for i, p in enumerate(self.params)]
        fresh = self.module.init_state(self.params)
        for key, value in fresh.items():
            if isinstance(value, list | tuple):
                fresh[key] = [
                    take(f"state__{key}__{i}", v) for i, v in enumerate(value)
                ]
            else:
                fresh[key] = take(f"state__{key}", np.asarray(value))
        self.state = fresh
        self.buffers = [take(f"buffer_{i}", b) for i, b in enumerate(self.buffers)]
        self.history_ = {
            key.removeprefix("history__"): arrays[key].astype(float)
            for key in arrays
            if key.startswith("history__")
        }
        best = int(arrays["best_epoch"]) if "best_epoch" in arrays else -1
        self.best_epoch_ = None if best < 0 else best
        self.stopped_early_ = bool(arrays.get("stopped_early", False))
        if "classes" in arrays and self._classes is not None:
            self._classes = arrays["classes"]
            self._classes_learned = bool(arrays.get("classes_learned", True))
        if "feature_names" in arrays:
            self.feature_names_in_ = tuple(str(n) for n in arrays["feature_names"])
        if "target_names" in arrays:
            self.target_names_ = tuple(str(n) for n in arrays["target_names"])

    # ------------------------------------------------------------ ecosystems

    def to_torch(self, *, optimizer: bool = False, lr: float | None = None) -> Any:
        """The network as a ``torch.nn.Sequential`` (a ``ResidualSequential`` with
        residual connections) in evaluation mode, with the same layers, weights
        and running statistics, taking torch's input layouts ((n, features),
        (n, C, L), (n, C, H, W)). With ``optimizer=True``, ``(module, optimizer)``:
        the ``torch.optim`` optimizer holds this network's optimizer state, so k
        more steps in torch are k more steps here; ``lr`` is its learning rate
        (default: the last epoch's). Needs the ``torch`` extra."""
        return _interop("torch_io", "torch").to_torch(self, optimizer=optimizer, lr=lr)

    @classmethod
    def from_torch(
        cls,
        module: Any,
        spec: Spec | Mapping[str, Any] | str | os.PathLike[str],
        optimizer: Any = None,
    ) -> Network:
        """A network of ``spec`` with the weights and running statistics of a
        torch module (its Linear, Conv, BatchNorm and LayerNorm layers in order,
        one per dense, conv, batch_norm and layer_norm layer of the spec), and
        the state of ``optimizer`` (a torch.optim optimizer over the module's
        parameters) if given. Needs the ``torch`` extra."""
        return _interop("torch_io", "torch").from_torch(module, spec, optimizer)

    def to_onnx(self, path: str | os.PathLike[str]) -> Path:
        """Write the network as a float32 ONNX model (pinned opset, checked with
        ``onnx.checker.check_model(full_check=True)``), atomically: input ``X``
        (N, *input shape), output ``Y`` (N, outputs) as ``outputs``, in evaluation
        mode. Refuses (DeriveError) what ONNX cannot express. Needs the ``onnx``
        extra. Returns the path."""
        return _interop("onnx_io", "onnx").to_onnx(self, path)

    def to_python(self, path: str | os.PathLike[str]) -> Path:
        """Write a frozen inference module of this trained network to ``path``,
        atomically: one file needing only numpy and numba, the weights embedded,
        with ``predict(X)``, ``predict_proba(X)`` (classifiers) and ``outputs(X)``
        giving the same numbers as this network's. Returns the path."""
        return _interop("python_export", "python").export_python(self, path)


def _interop(name: str, extra: str) -> ModuleType:
    """An exporter module, imported on first use (its library is optional)."""
    import importlib

    try:
        return importlib.import_module(f"derive.interop.{name}")
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in ("torch", "onnx", "onnxruntime"):
            raise
        raise DeriveError(
            f"this needs {exc.name}, which is not installed; "
            f"install it with: pip install 'derive[{extra}]'"
        ) from None


# ------------------------------------------------------------------ helpers


class _Plan:
    """What the fast predict path reads from a generated module, looked up once."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.dtype = np.dtype(module.DTYPE)  # dtypes are singletons: `is` compares
        self.n_input = int(module.N_INPUT)
        self.forward = module._forward
        self.kernel_input = module._kernel_input
        self.output = int(module._OUTPUT_BUFFER)
        from .rowcheck import all_finite  # Numba: here, not at import derive

        self.all_finite = all_finite
        #: per thread: the forward's work buffers for one row (reused by each
        #: one-row predict of that thread, which copies its output out)
        self.local = threading.local()

    def one_row(self) -> list[np.ndarray]:
        """This thread's one-row work buffers."""
        try:
            return self.local.buffers
        except AttributeError:
            self.local.buffers = self.module._buffers(1)
            return self.local.buffers


_plan = functools.cache(_Plan)  # one plan per generated module


def _split_rows(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows), each in increasing order; the validation
    rows are the last ``fraction`` of a permutation seeded by ``seed``."""
    if not 0 <= fraction < 1:
        raise DataError(f"validation_split must be in [0, 1), got {fraction}")
    n_val = int(round(n * fraction))
    if fraction > 0:
        n_val = max(n_val, 1)
    if n_val == 0:
        return np.arange(n), np.arange(0)
    if n_val >= n:
        raise DataError(
            f"validation_split {fraction} leaves no training rows of {n}; "
            "use a smaller split or more data"
        )
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n - n_val]), np.sort(order[n - n_val :])


def _label_vector(labels: np.ndarray) -> np.ndarray:
    """Labels as a 1-D array; (n, 1) columns are flattened."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(
            f"class labels must have shape (n,), got {labels.shape}; give one label per row"
        )
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)):
            raise DataError(
                "y holds NaN or infinite labels; give a class label per row"
            )
        if np.any(labels != np.round(labels)):
            bad = labels[labels != np.round(labels)][0]
            raise DataError(
                f"y holds {bad:g}, not a class label; a classifier needs labels such "
                "as 0/1 (continuous targets need a regression spec, e.g. mse)"
            )
    return labels


def _unique(labels: np.ndarray) -> np.ndarray:
    try:
        return np.unique(labels)
    except TypeError:  # labels of mixed types: a stable order by repr
        return np.array(sorted(set(labels.tolist()), key=repr), dtype=object)


def _learn_classes(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """The classes of a first fit: 0..n_classes-1 if the labels are among them,
    else the sorted distinct labels (there must be exactly n_classes)."""
    found = _unique(labels)
    natural = np.arange(n_classes)
    if set(found.tolist()) <= set(natural.tolist()):
        return natural
    if len(found) != n_classes:
        listing = ", ".join(str(v) for v in found.tolist()[:6])
        more = "only " if len(found) < n_classes else ""
        raise DataError(
            f"y has {more}{len(found)} classes ({listing}{', ...' if len(found) > 6 else ''}) "
            f"but the output layer predicts {n_classes}; "
            + (
                f"use labels 0..{n_classes - 1} or give examples of all classes"
                if len(found) < n_classes
                else "change the output layer (softmax with one unit per class)"
            )
        )
    return found


def _class_index(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Index of each label in ``classes``; an unknown label is a DataError."""
    lookup = {label: i for i, label in enumerate(np.asarray(classes).tolist())}
    index = np.empty(len(labels), dtype=np.int64)
    for row, label in enumerate(labels.tolist()):
        try:
            index[row] = lookup[label]
        except (KeyError, TypeError):
            known = ", ".join(str(c) for c in np.asarray(classes).tolist()[:6])
            raise DataError(
                f"label {label!r} (row {row}) is not one of the network's classes "
                f"({known}); fix the label"
            ) from None
    return index


def _storable(classes: np.ndarray) -> np.ndarray:
    """Classes as an array np.load reads without pickle (strings if need be)."""
    array = np.asarray(classes.tolist())
    return array if array.dtype.kind in "biufU" else array.astype(str)


def _read_model(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DeriveError(
            f"model file not found: {path}; check the path or train one with `derive fit`"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError):
        arrays = {}
    if not isinstance(arrays, dict) or str(arrays.get("format", "")) != MODEL_FORMAT:
        raise DeriveError(
            f"{path} is not a derive model (an .npz written by `derive fit` or "
            "Network.save); check the path"
        )
    return arrays


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def _r2(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Coefficient of determination per output, averaged (scikit-learn's r2_score)."""
    residual = np.sum((truth - predicted) ** 2, axis=0)
    total = np.sum((truth - truth.mean(axis=0)) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(
            total > 0, 1.0 - residual / total, np.where(residual > 0, 0.0, 1.0)
        )
    return float(np.mean(r2))


Callback = Callable[[int, dict[str, Any]], Any]


def _chain(*callbacks: Callback | None) -> Callback:
    """One callback calling each given one; stops training if any returns True."""
    active = [c for c in callbacks if c is not None]

    def callback(epoch: int, logs: dict[str, Any]) -> bool:
        return any([bool(c(epoch, logs)) for c in active])

    return callback


@contextmanager
def _progress(enabled: bool, epochs: int, name: str) -> Iterator[Callback | None]:
    """A tqdm bar per epoch (loss, val loss, accuracy, samples/s) on stderr,
    driven by fit's callback; yields None when disabled."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(
        total=epochs,
        desc=f"fit {name}",
        unit="epoch",
        file=sys.stderr,
        dynamic_ncols=True,
    )
    bar.set_postfix_str("first epoch (Numba compiles on first use)")
    started = time.perf_counter()
    first = True

    def show(epoch: int, logs: dict[str, Any]) -> None:
        nonlocal first
        if first:  # restart the clock: rate and ETA without the compile time
            bar.reset(total=epochs)
            first = False
        postfix = {"loss": f"{logs['loss']:.4g}"}
        if "val_loss" in logs:
            postfix["val_loss"] = f"{logs['val_loss']:.4g}"
        if "val_accuracy" in logs:
            postfix["val_acc"] = f"{logs['val_accuracy']:.3f}"
        if "samples_per_s" in logs:
            postfix["samples/s"] = f"{logs['samples_per_s']:.3g}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)

    try:
        yield show
    finally:
        bar.set_description_str(f"fit {name} ({time.perf_counter() - started:.1f} s)")
        bar.close()
