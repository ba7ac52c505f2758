"""``derive.sweep``: a grid of specs times cross-validation folds, trained on Dask.

A sweep takes a base spec, a grid of spec fields by dotted path
(``layers.1.units``, ``optimizer.lr``, ``training.seed``, ...) and data, and
trains one ``Network`` per (grid point, fold) on a Dask cluster: an embedded
``LocalCluster`` by default, any running scheduler through a
``distributed.Client``, or in this process on Dask's synchronous scheduler.

How the work is laid out (driver -> workers):

* Every grid point is validated into a ``Spec`` before anything starts; a bad
  path or value is one ``DeriveError`` listing the valid paths.
* The folds are computed once on the driver (stratified for classifiers,
  seeded) and shipped with the data in one scattered payload; workers receive
  canonical spec text, never pickled modules, and build the module from it
  (``derive.build``: the architecture-keyed module cache).
* Trials are grouped by ``Spec.architecture_hash``: what does not change the
  generated kernels (learning rate, optimizer constants, epochs, batch size,
  seeds, schedule) is a run-time value. Each architecture is compiled once, on
  one worker, before any of its trials starts; then every worker loads it in a
  warm-up task ahead of its trials (from Numba's cache beside the module when
  ``DERIVE_CACHE_DIR`` is shared), so workers never compile the same cache
  entry at once. A worker that joins later (or a restarted one) warms itself on
  its first trial. The result counts Numba's compiled and cache-loaded
  signatures per warm-up and per trial.
* A trial is deterministic (seeded everything, BLAS pinned to one thread), so
  the rows are bit-identical on any number of workers or the synchronous
  scheduler. A worker that dies loses its running trial; the scheduler reruns
  it (``distributed.scheduler.allowed-failures``) and the result lists it in
  ``retried``. Rows are appended to ``OUT.partial`` as they arrive and ``OUT``
  is written atomically at the end, so an interrupted driver keeps every
  finished row.

Dask is the ``dask`` extra (``pip install 'derive[dask]'``), imported only
when a sweep runs.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import difflib
import hashlib
import io
import itertools
import json
import math
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .data import DataError
from .errors import DeriveError, DivergenceError, SpecError
from .spec import Spec, Training, load_spec, parse_spec, spec_from_dict

#: grid paths that name no spec field a sweep may vary, with the reason
_REFUSED = {
    "training.validation_split": "the cross-validation folds decide the "
    "validation rows; use cv",
    "name": "the name is not a hyper-parameter",
    "input": "the input size is the data's",
}
#: the columns of every row, around the varied paths (after "fold")
_HEAD = ("trial", "point", "fold")
_RUN_HEAD = ("status", "train_loss", "val_loss")
_RUN_TAIL = (
    "epochs",
    "wall_s",
    "worker",
    "attempts",
    "compiled",
    "architecture",
    "params_digest",
)

#: a per-epoch hook on the workers: (trial, epoch, logs) -> True to stop the trial
SweepCallback = Callable[[dict[str, Any], int, dict[str, Any]], Any]


# ----------------------------------------------------------------------- grid


def grid_paths(spec: Spec) -> list[str]:
    """Every dotted path a sweep can vary in ``spec``: ``dtype``, ``loss`` (and
    ``loss.<param>``), ``layers.N.<attribute>`` (N from 1, as the spec's
    messages count layers), ``optimizer.name`` and each optimizer
    hyper-parameter, ``training.<setting>``. ``units.N`` is accepted as an
    alias of ``layers.N.units``."""
    from .layers import LAYER_INTERFACES
    from .optimizers import OPTIMIZERS

    paths = ["dtype", "loss"]
    paths += [f"loss.{key}" for key in spec.to_dict()["loss"] if key != "name"]
    for number, layer in enumerate(spec.layers, start=1):
        kind = LAYER_INTERFACES[layer.kind]
        keys = [param.name for param in kind.params]
        if kind.activation:
            keys.append("activation")
        keys.append("residual")
        paths += [f"layers.{number}.{key}" for key in keys]
    paths.append("optimizer.name")
    hyper = sorted({key for defaults in OPTIMIZERS.values() for key in defaults})
    paths += [f"optimizer.{key}" for key in hyper]
    paths += [
        f"training.{f.name}"
        for f in fields(Training)
        if f"training.{f.name}" not in _REFUSED
    ]
    return paths


def _canonical_path(path: str, spec: Spec) -> str:
    """The grid path in its ``layers.N.field`` form; a DeriveError naming the
    valid paths if it is not one."""
    if not isinstance(path, str):
        raise DeriveError(
            f"grid: a path must be text such as 'optimizer.lr', got {path!r}"
        )
    parts = path.strip().split(".")
    if len(parts) == 2 and parts[0] == "units" and parts[1].isdigit():
        parts = ["layers", parts[1], "units"]
    canonical = ".".join(parts)
    if canonical in _REFUSED:
        raise DeriveError(f"grid: {path} cannot be swept: {_REFUSED[canonical]}")
    valid = grid_paths(spec)
    if canonical not in valid:
        close = difflib.get_close_matches(canonical, valid, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise DeriveError(
            f"grid: '{path}' is not a field of spec '{spec.name}'{hint}. Valid "
            f"paths: {', '.join(valid)}; units.N is short for layers.N.units"
        )
    return canonical


def parse_values(text: str) -> list[Any]:
    """The values of a command-line grid entry: ``4,8,16``, ``0.1,1e-3``,
    ``relu,tanh``, ``true,false``, or an inclusive integer range ``0..4``
    (which may be one of the comma-separated items)."""
    values: list[Any] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise DeriveError(
                f"grid values {text!r} hold an empty item; separate values by "
                "commas, e.g. 4,8,16 or 0..4"
            )
        if ".." in item:
            low, _, high = item.partition("..")
            try:
                first, last = int(low), int(high)
            except ValueError:
                raise DeriveError(
                    f"grid range {item!r}: give two integers, e.g. 0..4 (inclusive)"
                ) from None
            if last < first:
                raise DeriveError(
                    f"grid range {item!r} is empty; give low..high with low <= high"
                )
            values += range(first, last + 1)
            continue
        values.append(_scalar(item))
    return values


def _scalar(item: str) -> Any:
    for convert in (int, float):
        try:
            return convert(item)
        except ValueError:
            pass
    lowered = item.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return item


def parse_grid_arg(text: str) -> tuple[str, list[Any]]:
    """``PATH=VALUES`` of ``derive sweep --grid`` as (path, values)."""
    path, sep, values = text.partition("=")
    if not sep or not path.strip() or not values.strip():
        raise DeriveError(
            f"--grid {text!r}: give PATH=VALUES, e.g. --grid 'optimizer.lr=0.1,0.01' "
            "or --grid 'training.seed=0..4'"
        )
    return path.strip(), parse_values(values)


def _value_list(path: str, values: Any) -> list[Any]:
    if isinstance(values, str):
        values = parse_values(values)
    elif isinstance(values, Mapping) or not isinstance(values, Iterable):
        values = [values]
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    if not values:
        raise DeriveError(f"grid: {path} has no values; give at least one")
    keys = [json.dumps(v, sort_keys=True, default=str) for v in values]
    twice = [v for v, n in Counter(keys).items() if n > 1]
    if twice:
        raise DeriveError(f"grid: {path} lists {twice[0]} twice; give each value once")
    return list(values)


def _apply(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` to ``value`` in a spec's plain data (``Spec.to_dict()``)."""
    from .optimizers import OPTIMIZERS

    head, *rest = path.split(".")
    if head == "layers":
        data["layers"][int(rest[0]) - 1][rest[1]] = value
    elif path == "loss":
        data["loss"] = {"name": value} if isinstance(value, str) else dict(value)
    elif path == "optimizer.name":
        # keep the hyper-parameters the new optimizer takes that the base spec
        # set away from its own optimizer's defaults (lr always)
        old = data["optimizer"]
        base_defaults = OPTIMIZERS.get(old["name"], {})
        new = {"name": value}
        for key, given in old.items():
            if key == "name" or key not in OPTIMIZERS.get(value, {}):
                continue
            default = base_defaults.get(key)
            if key == "lr" or given != (
                list(default) if isinstance(default, tuple) else default
            ):
                new[key] = given
        data["optimizer"] = new
    elif len(rest) == 1:
        data[head][rest[0]] = value
    else:
        data[head] = value


@dataclass(frozen=True)
class GridPoint:
    """One combination of the grid: its values by path, and its spec."""

    index: int
    values: tuple[tuple[str, Any], ...]
    spec: Spec

    @property
    def label(self) -> str:
        return ", ".join(f"{p}={_text(v)}" for p, v in self.values) or "base spec"


def expand_grid(spec: Spec, grid: Mapping[str, Any] | None) -> list[GridPoint]:
    """Every grid point (the product of the values, the last path varying
    fastest) as a validated spec. Raises DeriveError, before any work, for a
    path that names no field or values that make an invalid spec (all bad
    values at once)."""
    grid = dict(grid or {})
    paths: list[str] = []
    lists: list[list[Any]] = []
    for raw, values in grid.items():
        path = _canonical_path(raw, spec)
        if path in paths:
            raise DeriveError(f"grid: {raw} names {path} a second time; give it once")
        paths.append(path)
        lists.append(_value_list(raw, values))
    # optimizer.name first: switching optimizers resets their hyper-parameters
    order = sorted(range(len(paths)), key=lambda i: paths[i] != "optimizer.name")
    base = spec.to_dict()
    problems: list[str] = []
    # each value alone first: one message per bad value, not per grid point
    for i in order:
        for value in lists[i]:
            data = copy.deepcopy(base)
            _apply(data, paths[i], value)
            try:
                spec_from_dict(data)
            except SpecError as exc:
                problems += [f"{paths[i]}={_text(value)}: {p}" for p in exc.problems]
    if problems:
        raise DeriveError(
            "grid: these values do not make a valid spec:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    points: list[GridPoint] = []
    for index, combo in enumerate(itertools.product(*lists)):
        data = copy.deepcopy(base)
        for i in order:
            _apply(data, paths[i], combo[i])
        values = tuple(zip(paths, combo, strict=True))
        try:
            point_spec = spec_from_dict(data, "grid point")
        except SpecError as exc:
            label = ", ".join(f"{p}={_text(v)}" for p, v in values)
            problems += [f"{label}: {p}" for p in exc.problems]
            continue
        points.append(GridPoint(index, values, point_spec))
    if problems:
        raise DeriveError(
            "grid: these combinations do not make a valid spec:\n"
            + "\n".join(f"  - {p}" for p in problems[:20])
        )
    return points


def _text(value: Any) -> str:
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True)
    return str(value).lower() if isinstance(value, bool) else str(value)


# ---------------------------------------------------------------------- folds


def cv_folds(
    n: int, cv: int, *, labels: np.ndarray | None = None, seed: int = 0
) -> np.ndarray:
    """The fold (0..cv-1) of each of ``n`` rows, shape (n,) int64.

    With ``labels`` (one class per row) the folds are stratified: each class's
    rows, in an order shuffled by ``seed``, are dealt to the folds in turn,
    each class continuing where the previous one stopped, so every fold holds
    each class's share to within one row and the fold sizes differ by at most
    one. Without labels the rows are shuffled by ``seed`` and dealt the same
    way (k-fold). Refuses a class with fewer rows than folds.
    """
    if not isinstance(cv, int | np.integer) or isinstance(cv, bool) or cv < 2:
        raise DeriveError(f"cv must be an integer >= 2 (folds), got {cv!r}")
    if n < cv:
        raise DataError(f"cv={cv} needs at least {cv} rows; the data has {n}")
    rng = np.random.default_rng(seed)
    folds = np.empty(n, dtype=np.int64)
    if labels is None:
        folds[rng.permutation(n)] = np.arange(n) % cv
        return folds
    keys = np.asarray(labels)
    try:
        classes, inverse = np.unique(keys, return_inverse=True)
    except TypeError:  # labels of mixed types
        classes, inverse = np.unique(keys.astype(str), return_inverse=True)
    inverse = inverse.reshape(-1)
    offset = 0
    for c, label in enumerate(classes.tolist()):
        rows = np.flatnonzero(inverse == c)
        if len(rows) < cv:
            raise DataError(
                f"class {label!r} has {len(rows)} rows, fewer than the {cv} folds; "
                f"use cv={max(2, len(rows))} or fewer, or more data of that class"
            )
        rows = rows[rng.permutation(len(rows))]
        folds[rows] = (offset + np.arange(len(rows))) % cv
        offset += len(rows)
    return folds


def _stratify_labels(y: np.ndarray, task: str) -> np.ndarray | None:
    """The class of each row for stratified folds (None for regression)."""
    if task == "regression":
        return None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return np.argmax(y, axis=1) if task == "multiclass" else None
    return y.reshape(-1)


# --------------------------------------------------------------- worker side

_WARMED: dict[str, dict[str, Any]] = {}
_WARM_LOCK = threading.Lock()


def _dispatchers(module: Any) -> list[Any]:
    """The Numba dispatchers a generated module holds (its kernels' included)."""
    from numba.core.dispatcher import Dispatcher

    seen: dict[int, Any] = {}
    for value in vars(module).values():
        if isinstance(value, Dispatcher):
            seen[id(value)] = value
    return list(seen.values())


def _numba_counts(module: Any) -> tuple[int, int]:
    """(signatures Numba compiled, signatures it loaded from its cache) so far
    for the module's jitted functions."""
    compiled = loaded = 0
    for dispatcher in _dispatchers(module):
        stats = dispatcher.stats
        compiled += sum(stats.cache_misses.values())
        loaded += sum(stats.cache_hits.values())
    return compiled, loaded


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"local (pid {os.getpid()})"


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """BLAS pinned to one thread for a trial (workers are processes, one trial
    each); the nanny's environment pins it at start-up too."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1):
        yield


def _blas_threads() -> int | None:
    """The most threads any loaded BLAS would use now (None: not known)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    return max(counts, default=None)


def _split(data: Mapping[str, np.ndarray], fold: int) -> tuple[np.ndarray, ...]:
    """(X_train, y_train, X_val, y_val) of a fold: new, writable arrays, whatever
    the payload's flags (read-only buffers never reach a kernel)."""
    folds = data["folds"]
    train, val = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    X, y = data["X"], data["y"]
    return X[train], y[train], X[val], y[val]


def _ensure_warm(spec: Spec, data: Mapping[str, np.ndarray]) -> dict[str, Any] | None:
    """Compile (or load from Numba's cache) the spec's architecture in this
    process, once: one epoch of fold 0 and a score, which run every jitted
    function a trial does. Returns the warm-up's record, None if already warm."""
    from .network import Network

    key = spec.architecture_hash
    with _WARM_LOCK:
        if key in _WARMED:
            return None
        started = time.perf_counter()
        with _one_blas_thread(), warnings_off():
            network = Network(spec)
            before = _numba_counts(network.module)
            X_train, y_train, X_val, y_val = _split(data, 0)
            with contextlib.suppress(DeriveError):  # e.g. divergence: compiled anyway
                network.fit(X_train, y_train, validation_data=(X_val, y_val), epochs=1)
                network.score(X_val, y_val)
                network.score(X_train, y_train)
            after = _numba_counts(network.module)
            blas_threads = _blas_threads()
        from .generate import cache_dir

        record = {
            "worker": _worker_name(),
            "architecture": key,
            "compiled": after[0] - before[0],
            "loaded": after[1] - before[1],
            "seconds": time.perf_counter() - started,
            "cache_dir": str(cache_dir()),
            "blas_threads": blas_threads,
        }
        _WARMED[key] = record
        return record


@contextlib.contextmanager
def warnings_off() -> Iterator[None]:
    """A trial's spec warnings were shown once on the driver."""
    import warnings

    from .errors import SpecWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)
        warnings.filterwarnings("ignore", "training diverged")
        yield


def _warm_task(spec_text: str, data: Mapping[str, np.ndarray], *after: Any) -> Any:
    """Dask task: warm this worker for the spec's architecture (``after``: the
    futures it must follow, unused)."""
    with warnings_off():
        spec = parse_spec(spec_text, "sweep spec")
    return _ensure_warm(spec, data)


def _digest(arrays: Sequence[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _run_trial(
    task: Mapping[str, Any],
    data: Mapping[str, np.ndarray],
    topic: str | None = None,
    callback: SweepCallback | None = None,
    *after: Any,
) -> dict[str, Any]:
    """Dask task: train one (grid point, fold) and return its row (with the
    warm-up record under "_warm" if this trial had to warm its process)."""
    from .network import Network

    _announce(topic, task["trial"])
    with warnings_off():
        spec = parse_spec(task["spec"], "sweep spec")
    warm = _ensure_warm(spec, data)
    fold = int(task["fold"])
    X_train, y_train, X_val, y_val = _split(data, fold)
    row: dict[str, Any] = {"status": "ok"}
    with _one_blas_thread(), warnings_off():
        network = Network(spec)
        before = _numba_counts(network.module)
        kwargs: dict[str, Any] = {}
        if callback is not None:
            info = {"trial": task["trial"], "point": task["point"], "fold": fold,
                    **dict(task["values"])}  # fmt: skip

            def per_epoch(epoch: int, logs: dict[str, Any]) -> Any:
                return callback(info, epoch, logs)

            kwargs["callback"] = per_epoch
        started = time.perf_counter()
        try:
            network.fit(X_train, y_train, validation_data=(X_val, y_val), **kwargs)
        except DivergenceError:
            row["status"] = "diverged"
        except DeriveError as exc:
            row["status"] = f"error: {exc}"
        wall = time.perf_counter() - started
        history = network.history_
        ok = row["status"] == "ok"
        row["train_loss"] = _last(history.get("loss"))
        row["val_loss"] = _last(history.get("val_loss"))
        row["train_score"] = network.score(X_train, y_train) if ok else math.nan
        row["val_score"] = network.score(X_val, y_val) if ok else math.nan
        row["compiled"] = _numba_counts(network.module)[0] - before[0]
    row.update(
        epochs=len(history.get("loss", ())),
        wall_s=wall,
        worker=_worker_name(),
        architecture=spec.architecture_hash,
        params_digest=_digest([*network.params, *network.buffers]),
    )
    if warm is not None:
        row["_warm"] = warm
    return row


def _last(values: Any) -> float:
    return float(values[-1]) if values is not None and len(values) else math.nan


def _announce(topic: str | None, trial: int) -> None:
    """Tell the scheduler this trial started here (a second start = a retry).
    Through the worker's client, which waits for the scheduler to have it, so
    the record survives this worker dying a moment later."""
    if topic is None:
        return
    try:
        from distributed import get_client, get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    message = {"trial": int(trial), "worker": worker.address, "pid": os.getpid()}
    get_client().log_event(topic, message)


# ------------------------------------------------------------------- results


@dataclass
class SweepResult:
    """The rows of a sweep (one per trial: grid point x fold) and its summary.

    ``rows``: dicts with ``trial``, ``point``, ``fold``, one entry per varied
    path, ``status`` ("ok", "diverged", "error: ...", "failed: ..."),
    ``train_loss`` and ``val_loss`` (the last epoch's), ``train_<metric>`` and
    ``val_<metric>`` (accuracy for classifiers, r2 for regression), ``epochs``,
    ``wall_s`` (the fit), ``worker``, ``attempts`` (2 or more: the trial's
    worker died and it ran again), ``compiled`` (signatures Numba compiled
    during the trial's fit: 0 once warm), ``architecture`` and
    ``params_digest`` (of the trained parameters). ``warmups``: one record per
    (worker, architecture) warm-up. ``retried``: the trials that ran more than
    once (a worker died while it ran them, or before their result left it),
    and ``starts`` where each attempt of those ran (worker address and pid). ``interrupted``: the sweep stopped before every trial finished.
    """

    spec: Spec
    paths: tuple[str, ...]
    metric: str
    cv: int
    planned: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    warmups: list[dict[str, Any]] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    starts: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    workers: int = 1
    wall_s: float = 0.0
    interrupted: bool = False
    points: list[GridPoint] = field(default_factory=list, repr=False)

    @property
    def columns(self) -> tuple[str, ...]:
        m = self.metric
        return (*_HEAD, *self.paths, *_RUN_HEAD, f"train_{m}", f"val_{m}", *_RUN_TAIL)

    @property
    def compiles(self) -> dict[str, Any]:
        """Numba's work: ``architectures``; ``compiles`` (warm-ups that compiled,
        i.e. found no cache entry) and their ``compile_s``; ``cache_loads`` and
        their ``load_s``; ``signatures_compiled`` in all; ``trial_compiles``
        (signatures compiled inside trials' fits, 0 when every trial ran warm)."""
        compiled = [w for w in self.warmups if w["compiled"]]
        loaded = [w for w in self.warmups if not w["compiled"]]
        return {
            "architectures": len({p.spec.architecture_hash for p in self.points}),
            "compiles": len(compiled),
            "compile_s": sum(w["seconds"] for w in compiled),
            "cache_loads": len(loaded),
            "load_s": sum(w["seconds"] for w in loaded),
            "signatures_compiled": sum(w["compiled"] for w in self.warmups),
            "trial_compiles": sum(int(r.get("compiled") or 0) for r in self.rows),
        }

    def table(self) -> list[dict[str, Any]]:
        """One dict per grid point: its values, ``folds`` finished (ok),
        ``mean_val_<metric>``, ``std_val_<metric>``, ``mean_val_loss`` and
        ``mean_train_loss`` over its ok folds (NaN if none)."""
        m = f"val_{self.metric}"
        by_point: dict[int, list[dict[str, Any]]] = {}
        for row in self.rows:
            if row["status"] == "ok":
                by_point.setdefault(row["point"], []).append(row)
        out = []
        for point in self.points:
            rows = by_point.get(point.index, [])
            scores = np.array([r[m] for r in rows], dtype=float)
            out.append(
                {
                    "point": point.index,
                    **dict(point.values),
                    "folds": len(rows),
                    f"mean_{m}": float(scores.mean()) if rows else math.nan,
                    f"std_{m}": float(scores.std()) if rows else math.nan,
                    "mean_val_loss": _mean(r["val_loss"] for r in rows),
                    "mean_train_loss": _mean(r["train_loss"] for r in rows),
                }
            )
        return out

    def best(self) -> dict[str, Any]:
        """The grid point with every fold finished whose mean validation
        metric is highest (ties: lower mean validation loss), as its
        ``table()`` entry plus ``spec``, the base spec with its values."""
        m = f"mean_val_{self.metric}"
        complete = [
            entry
            for entry in self.table()
            if entry["folds"] == self.cv and np.isfinite(entry[m])
        ]
        if not complete:
            raise DeriveError(
                "no grid point finished all its folds; see the rows' status"
            )
        top = max(complete, key=lambda e: (e[m], -e["mean_val_loss"]))
        return {**top, "spec": self.points[top["point"]].spec}

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the rows (in trial order) as CSV, atomically. Returns the path."""
        from .fileio import atomic_write

        path = Path(path)
        atomic_write(path, _csv_text(self.columns, self._row_values(), header=True))
        return path

    def _row_values(self) -> list[dict[str, Any]]:
        return sorted(self.rows, key=lambda r: r["trial"])

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self._row_values(), columns=list(self.columns))

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """A picture (PNG, SVG, PDF) of the validation metric: one panel per
        varied path, each trial a dot over its value, the mean per value a
        line; written atomically. Returns the path."""
        from .plots import _figure, save_figure

        m = f"val_{self.metric}"
        rows = [r for r in self.rows if r["status"] == "ok"]
        if not rows:
            raise DataError("no finished trial to plot")
        varied = self.paths or ("fold",)
        figure = _figure((4.2 * len(varied), 3.6))
        for i, name in enumerate(varied):
            axes = figure.add_subplot(1, len(varied), i + 1)
            if name == "fold":
                values = list(range(self.cv))
            else:
                values = list(
                    dict.fromkeys(
                        v for p in self.points for k, v in p.values if k == name
                    )
                )
            labels = [_text(v) for v in values]
            position = {label: x for x, label in enumerate(labels)}
            xs = [position[_text(r[name])] for r in rows]
            ys = [r[m] for r in rows]
            jitter = np.linspace(-0.15, 0.15, 7)
            axes.scatter(
                [x + jitter[j % 7] for j, x in enumerate(xs)], ys, s=12, alpha=0.5,
                color="tab:blue", label="trial",
            )  # fmt: skip
            means = [
                _mean(r[m] for r in rows if _text(r[name]) == label) for label in labels
            ]
            axes.plot(range(len(labels)), means, "o-", color="tab:orange", label="mean")
            axes.set_xticks(range(len(labels)), labels)
            axes.set_xlabel(name)
            axes.set_ylabel(m if i == 0 else "")
            axes.grid(alpha=0.3)
            if i == 0:
                axes.legend(fontsize="small")
        figure.suptitle(
            f"sweep of '{self.spec.name}': {len(self.points)} grid points x "
            f"{self.cv} folds"
        )
        return save_figure(figure, path)

    def summary(self) -> str:
        """A few lines: trials, workers, wall time, compiles, retries, best point."""
        done = sum(r["status"] == "ok" for r in self.rows)
        c = self.compiles
        lines = [
            f"{len(self.rows)} of {self.planned} trials ({len(self.points)} grid points "
            f"x {self.cv} folds) on {self.workers} worker"
            f"{'s' if self.workers != 1 else ''} in {self.wall_s:.1f} s; {done} ok"
            + (" (interrupted)" if self.interrupted else ""),
            f"Numba: {c['architectures']} architecture"
            f"{'s' if c['architectures'] != 1 else ''}, {c['compiles']} compile"
            f"{'s' if c['compiles'] != 1 else ''} ({c['compile_s']:.1f} s of worker time), "
            f"{c['cache_loads']} cache load{'s' if c['cache_loads'] != 1 else ''} "
            f"({c['load_s']:.1f} s), {c['trial_compiles']} signatures compiled "
            "inside trials",
            "retried (a worker died): "
            + (
                ", ".join(f"trial {t}" for t in self.retried)
                if self.retried
                else "none"
            ),
        ]
        failed = [r for r in self.rows if r["status"] != "ok"]
        if failed:
            lines.append(
                f"{len(failed)} trials not ok, e.g. trial {failed[0]['trial']}: "
                f"{failed[0]['status']}"
            )
        with contextlib.suppress(DeriveError):
            best = self.best()
            m = f"val_{self.metric}"
            values = ", ".join(f"{p}={_text(best[p])}" for p in self.paths)
            lines.append(
                f"best: {values or 'the base spec'}: mean {m} "
                f"{best[f'mean_{m}']:.4g} (std {best[f'std_{m}']:.2g}), mean val_loss "
                f"{best['mean_val_loss']:.4g}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _mean(values: Iterable[float]) -> float:
    array = np.array(list(values), dtype=float)
    return float(array.mean()) if array.size else math.nan


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else str(value)


def _csv_text(
    columns: Sequence[str], rows: Iterable[Mapping[str, Any]], *, header: bool
) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buffer.getvalue()


class _RowLog:
    """Rows written as they arrive: ``OUT.partial`` gets the header, then each
    finished row as one append (a single write of a whole line, flushed), so an
    interrupted sweep keeps them; ``finish`` writes ``OUT`` atomically and
    removes the partial file."""

    def __init__(self, out: Path | None, result: SweepResult) -> None:
        self.out, self.result = out, result
        self.partial = None if out is None else out.with_name(out.name + ".partial")
        self.fd: int | None = None
        if self.partial is not None:
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
            self.fd = os.open(self.partial, flags, 0o666)
            self._write(_csv_text(result.columns, [], header=True))

    def _write(self, text: str) -> None:
        assert self.fd is not None
        os.write(self.fd, text.encode("utf-8"))

    def add(self, row: dict[str, Any]) -> None:
        self.result.rows.append(row)
        if self.fd is not None:
            self._write(_csv_text(self.result.columns, [row], header=False))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def abandon(self) -> None:
        """A sweep that failed: the partial file stays only if it holds rows."""
        self.close()
        if self.partial is not None and not self.result.rows:
            self.partial.unlink(missing_ok=True)

    def finish(self) -> None:
        self.close()
        if self.out is not None and self.partial is not None:
            self.result.to_csv(self.out)
            self.partial.unlink(missing_ok=True)


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: the trials still running were cancelled;
    ``result`` holds the finished rows (also in ``OUT.partial``)."""

    def __init__(self, result: SweepResult, partial: Path | None) -> None:
        self.result, self.partial = result, partial
        super().__init__(
            f"sweep interrupted: {len(result.rows)} of {result.planned} trials finished"
            + (f"; their rows are in {partial}" if partial is not None else "")
        )


# -------------------------------------------------------------------- driver


def _require_dask() -> Any:
    try:
        import distributed
    except ImportError:
        raise DeriveError(
            "a sweep runs on Dask, which is not installed; install it with: "
            "pip install 'derive[dask]'"
        ) from None
    return distributed


def sweep(
    spec: Spec | Mapping[str, Any] | str | os.PathLike[str],
    X: Any,
    y: Any,
    grid: Mapping[str, Any] | None = None,
    *,
    cv: int = 5,
    client: Any = None,
    workers: int | None = None,
    cv_seed: int = 0,
    callback: SweepCallback | None = None,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> SweepResult:
    """Train every grid point of ``spec`` on every cross-validation fold of
    (X, y) on Dask, and return the rows (:class:`SweepResult`).

    spec: a Spec, its dict form, or a TOML file. X: (n, inputs) (or (n, C, H,
    W) images); y: labels (n,) for classifiers, values for regression, as
    ``Network.fit`` takes them. grid: {path: values}, paths as
    :func:`grid_paths` lists them (``layers.1.units``, ``optimizer.lr``,
    ``training.seed``; ``units.N`` for ``layers.N.units``), values a list, a
    range, or text as on the command line (``"0..4"``, ``"4,8,16"``). cv:
    folds (stratified for classifiers), the same for every trial, seeded by
    ``cv_seed``. client: None starts (and closes) a ``LocalCluster`` of
    ``workers`` processes (default: one per core), one thread each;
    a ``distributed.Client`` uses its cluster; ``"synchronous"`` runs every
    trial in this process on Dask's synchronous scheduler. callback(trial,
    epoch, logs), called on the worker after each epoch (``trial``: its
    point, fold and values), returns True to stop that trial; it travels
    to the workers pickled (a function of an installed module, or one
    defined locally, which is pickled by value). out: a CSV
    file: rows are appended to ``out.partial`` as they finish and ``out`` is
    written atomically at the end (an existing file needs ``force``).
    progress: a bar over trials on stderr. Ctrl-C raises
    :class:`SweepInterrupted` (a KeyboardInterrupt) holding the finished rows.
    """
    from .network import Network

    base = _as_spec(spec)
    points = expand_grid(base, grid)
    _require_dask()
    paths = tuple(path for path, _ in points[0].values)
    if client is not None and workers is not None:
        raise DeriveError(
            "workers is for the LocalCluster sweep starts itself; with a client, "
            "its cluster decides (leave workers out)"
        )
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise DeriveError(f"workers must be a positive integer, got {workers!r}")
    out_path = None if out is None else Path(out)
    if out_path is not None:
        _check_out(out_path, force)
    X = np.asarray(X)
    if X.dtype.kind not in "f":
        X = X.astype(np.float64)
    y = np.asarray(y)
    # every architecture takes the data (before anything starts)
    tasks = set()
    with warnings_off():
        for point in _distinct(points):
            network = Network(point.spec)
            network._features(X)
            network._targets(y, learn=True)
            tasks.add(network.task)
    if len(tasks) > 1:
        raise DeriveError(
            f"grid: the grid mixes {' and '.join(sorted(tasks))} networks; "
            "sweep one kind of head at a time"
        )
    task = tasks.pop()
    if X.shape[0] != y.shape[0]:
        raise DataError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
    folds = cv_folds(X.shape[0], cv, labels=_stratify_labels(y, task), seed=cv_seed)
    data = {"X": X, "y": y, "folds": folds}
    trials = [
        {
            "trial": point.index * cv + fold,
            "point": point.index,
            "fold": fold,
            "values": point.values,
            "spec": point.spec.to_toml(),
        }
        for point in points
        for fold in range(cv)
    ]
    result = SweepResult(
        spec=base,
        paths=paths,
        metric="r2" if task == "regression" else "accuracy",
        cv=cv,
        planned=len(trials),
        points=points,
    )
    if isinstance(client, str) and client == "synchronous":
        runner: Callable[..., None] = _run_synchronous
    elif client is None or _is_client(client):
        runner = _run_distributed
    else:
        raise DeriveError(
            f"client must be None, a dask.distributed Client or 'synchronous', "
            f"got {client!r}"
        )
    log = _RowLog(out_path, result)
    bar = _bar(progress, len(trials), base.name)
    started = time.perf_counter()
    try:
        runner(result, trials, data, client, workers, callback, log, bar)
    except KeyboardInterrupt:
        result.interrupted = True
        result.wall_s = time.perf_counter() - started
        if not result.rows:
            log.abandon()
        log.close()
        raise SweepInterrupted(result, log.partial if result.rows else None) from None
    except Exception:
        log.abandon()
        raise
    finally:
        if bar is not None:
            bar.close()
    result.wall_s = time.perf_counter() - started
    log.finish()
    return result


def _as_spec(spec: Any) -> Spec:
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, Mapping):
        return spec_from_dict(spec)
    return load_spec(spec)


def _distinct(points: Sequence[GridPoint]) -> list[GridPoint]:
    """The first grid point of each architecture, in grid order."""
    first: dict[str, GridPoint] = {}
    for point in points:
        first.setdefault(point.spec.architecture_hash, point)
    return list(first.values())


def _check_out(out: Path, force: bool) -> None:
    partial = out.with_name(out.name + ".partial")
    for path in (out, partial):
        if path.is_dir():
            raise DeriveError(f"{path} is a directory; give a file path for the rows")
        if path.exists() and not force:
            raise DeriveError(
                f"{path} exists; choose another path or pass --force (force=True) "
                "to overwrite it"
            )


def _is_client(client: Any) -> bool:
    distributed = _require_dask()
    return isinstance(client, distributed.Client)


def _bar(enabled: bool, total: int, name: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total, desc=f"sweep {name}", unit="trial", file=sys.stderr,
        dynamic_ncols=True,
    )  # fmt: skip


def _arrived(
    result: SweepResult,
    log: _RowLog,
    bar: Any,
    trial: Mapping[str, Any],
    row: dict[str, Any],
) -> None:
    """A finished trial: its warm-up recorded, its row completed (trial, point,
    fold, values; the metric's names) and logged, the bar moved on."""
    warm = row.pop("_warm", None)
    if warm is not None:
        result.warmups.append(warm)
    m = result.metric
    row[f"train_{m}"] = row.pop("train_score")
    row[f"val_{m}"] = row.pop("val_score")
    row.update(trial=trial["trial"], point=trial["point"], fold=trial["fold"],
               **dict(trial["values"]))  # fmt: skip
    log.add(row)
    if bar is not None:
        ok = [r[f"val_{m}"] for r in result.rows if r["status"] == "ok"]
        postfix = {f"best val_{result.metric}": f"{max(ok):.4g}" if ok else "-"}
        if result.retried:
            postfix["retried"] = str(len(result.retried))
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)


def _run_synchronous(
    result: SweepResult,
    trials: list[dict[str, Any]],
    data: dict[str, np.ndarray],
    client: Any,
    workers: int | None,
    callback: SweepCallback | None,
    log: _RowLog,
    bar: Any,
) -> None:
    """Every trial in this process, one after another, on Dask's synchronous
    scheduler (each architecture warmed once first)."""
    _require_dask()
    import dask

    result.workers = 1
    for trial in trials:
        row = dask.delayed(_run_trial, pure=False)(trial, data, None, callback)
        row = row.compute(scheduler="synchronous")
        row["attempts"] = 1
        _arrived(result, log, bar, trial, row)


def _run_distributed(
    result: SweepResult,
    trials: list[dict[str, Any]],
    data: dict[str, np.ndarray],
    client: Any,
    workers: int | None,
    callback: SweepCallback | None,
    log: _RowLog,
    bar: Any,
) -> None:
    """Trials on a Dask cluster: the given client's, or a LocalCluster of
    ``workers`` processes started and closed here."""
    distributed = _require_dask()
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(_local_client(distributed, workers))
        _on_cluster(distributed, client, result, trials, data, callback, log, bar)


#: one BLAS / OpenMP thread per worker process (read when the libraries load);
#: Dask's nanny sets the first three too (distributed.nanny.pre-spawn-environ)
_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}


@contextlib.contextmanager
def _local_client(distributed: Any, workers: int | None) -> Iterator[Any]:
    import signal

    n = workers or os.cpu_count() or 1
    # Ctrl-C while the cluster starts would leave half-started workers behind:
    # it is held until the cluster is up, then raised (and the cluster closed)
    held: list[int] = []
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda *_: held.append(1)) if main else None
    try:
        cluster = _start_cluster(distributed, n)
    except Exception as exc:
        if held:  # the workers got the terminal's Ctrl-C while starting
            raise KeyboardInterrupt from None
        raise DeriveError(
            f"the local Dask cluster of {n} workers did not start ({exc}); a "
            'script that runs a sweep needs the `if __name__ == "__main__":` '
            "guard (the workers are spawned processes)"
        ) from exc
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)
    try:
        if held:
            raise KeyboardInterrupt
        with distributed.Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def _start_cluster(distributed: Any, n: int) -> Any:
    import logging

    return distributed.LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
        env=_THREAD_ENV,
        # each worker process runs dask_setup below at start (and restart)
        preload=[__name__],
    )


def dask_setup(worker: Any) -> None:
    """Dask's preload hook, run in each worker process of the LocalCluster a
    sweep starts: Ctrl-C in the terminal reaches the whole process group, and
    the driver alone handles it (it cancels the trials and closes the
    cluster), so the workers ignore SIGINT instead of dying with tracebacks."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _on_cluster(
    distributed: Any,
    client: Any,
    result: SweepResult,
    trials: list[dict[str, Any]],
    data: dict[str, np.ndarray],
    callback: SweepCallback | None,
    log: _RowLog,
    bar: Any,
) -> None:
    """Scatter the data once, compile each architecture once (spread over the
    workers), warm every worker, fan the trials out, collect the rows as they
    finish."""
    topic = f"derive-sweep-{uuid.uuid4().hex[:12]}"
    starts: Counter[int] = Counter()
    lock = threading.Lock()

    def started(event: Any) -> None:
        _, message = event
        with lock:
            starts[int(message["trial"])] += 1

    client.subscribe_topic(topic, started)
    try:
        _fan_out(distributed, client, topic, starts, lock, result, trials, data,
                 callback, log, bar)  # fmt: skip
    finally:
        client.unsubscribe_topic(topic)


def _fan_out(
    distributed: Any,
    client: Any,
    topic: str,
    starts: Counter[int],
    lock: threading.Lock,
    result: SweepResult,
    trials: list[dict[str, Any]],
    data: dict[str, np.ndarray],
    callback: SweepCallback | None,
    log: _RowLog,
    bar: Any,
) -> None:
    """The body of :func:`_on_cluster`, with the trials' start events counted
    in ``starts`` (under ``lock``)."""
    try:
        client.wait_for_workers(1, timeout=60)
    except (TimeoutError, OSError):
        raise DeriveError(
            "the Dask scheduler has no workers; start some with `dask worker "
            "SCHEDULER_ADDRESS --nthreads 1`"
        ) from None
    addresses = sorted(client.scheduler_info(n_workers=-1)["workers"])
    result.workers = len(addresses)
    [payload] = client.scatter([data], broadcast=True, hash=False)
    by_arch: dict[str, list[dict[str, Any]]] = {}
    for trial in trials:
        by_arch.setdefault(_arch_of(trial, result), []).append(trial)
    warmups = []
    futures = []
    of_future: dict[str, dict[str, Any]] = {}
    for i, (arch, group) in enumerate(by_arch.items()):
        spec_text = group[0]["spec"]
        home = addresses[i % len(addresses)]
        # compiled once, on one worker, before anything else touches it
        first = client.submit(
            _warm_task, spec_text, payload, key=f"derive-compile-{arch}-{topic}",
            workers=[home], allow_other_workers=True, priority=30, pure=False,
        )  # fmt: skip
        warmups.append(first)
        for address in addresses:
            if address != home:  # then every other worker loads it, ahead of trials
                # (pinned: a worker that dies first never runs it, see below)
                warmups.append(client.submit(
                    _warm_task, spec_text, payload, first,
                    key=f"derive-warm-{arch}-{address}-{topic}", workers=[address],
                    allow_other_workers=False, priority=20, pure=False,
                ))  # fmt: skip
        for trial in group:
            future = client.submit(
                _run_trial, trial, payload, topic, callback, first,
                key=f"derive-trial-{trial['trial']}-{topic}", priority=-trial["trial"],
                pure=False,
            )  # fmt: skip
            futures.append(future)
            of_future[future.key] = trial
    pending = set(futures)
    arrivals = distributed.as_completed(futures, with_results=True, raise_errors=False)
    del futures, future  # a row's future is released as soon as the row is here
    try:
        for finished, value in arrivals:
            # a result left on a worker would be computed again if that
            # worker died: release it
            pending.discard(finished)
            finished.release()
            trial = of_future[finished.key]
            row = _failed_row(value) if isinstance(value, BaseException) else value
            with lock:
                row["attempts"] = max(1, starts[trial["trial"]])
            if row["attempts"] > 1:
                result.retried.append(trial["trial"])
            _arrived(result, log, bar, trial, row)
    except BaseException:
        client.cancel(list(pending) + warmups, force=True)
        raise
    # the warm-ups of workers that died before running them wait for a worker
    # of that address forever: cancelled (their trials warmed elsewhere)
    done = [f for f in warmups if f.done()]
    client.cancel([f for f in warmups if not f.done()], force=True)
    for record in client.gather(done, errors="skip"):
        if record is not None:
            result.warmups.append(record)
    _reconcile_retries(client, topic, result)


def _arch_of(trial: Mapping[str, Any], result: SweepResult) -> str:
    return result.points[trial["point"]].spec.architecture_hash


def _failed_row(error: BaseException) -> dict[str, Any]:
    """The row of a trial Dask gave up on (e.g. its workers kept dying)."""
    message = " ".join(str(error).split()) or type(error).__name__
    return {
        "status": f"failed: {type(error).__name__}: {message}"[:300],
        "train_loss": math.nan,
        "val_loss": math.nan,
        "train_score": math.nan,
        "val_score": math.nan,
        "epochs": 0,
        "wall_s": math.nan,
        "worker": "",
        "compiled": 0,
        "architecture": "",
        "params_digest": "",
    }


def _reconcile_retries(client: Any, topic: str, result: SweepResult) -> None:
    """Recount each trial's starts from the scheduler's event log (a start
    event can reach the driver after its row), and keep where the retried
    trials ran."""
    starts: dict[int, list[dict[str, Any]]] = {}
    for _, message in client.get_events(topic):
        starts.setdefault(int(message["trial"]), []).append(dict(message))
    for row in result.rows:
        n = len(starts.get(row["trial"], ()))
        if n > row["attempts"]:
            row["attempts"] = n
    result.retried = sorted(r["trial"] for r in result.rows if r["attempts"] > 1)
    result.starts = {t: starts.get(t, []) for t in result.retried}
