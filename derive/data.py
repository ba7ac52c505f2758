"""Reading training data: a CSV file with a header row, or an ``.npz`` with X and y.

Every problem with a data file is a :class:`DataError` whose message names the
file, the place (line and column for CSV) and the fix, so the CLI can print it as
one line and exit with code 2.
"""

from __future__ import annotations

import csv
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DeriveError


class DataError(DeriveError, ValueError):
    """Data that cannot be used: unreadable, malformed, or not fitting the network."""


@dataclass(frozen=True)
class Table:
    """A data file read into arrays.

    X: features, (n, n_features) float64. y: targets, None if the file has none;
    (n,) class labels (int64 or str) when read as labels, else (n, n_targets)
    float64. ``rows`` names where each row came from ("line 7" in a CSV file,
    "row 6" in an .npz) for messages.
    """

    X: np.ndarray
    y: np.ndarray | None
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]
    source: str
    rows: tuple[str, ...]


def load_table(
    path: str | Path,
    *,
    n_inputs: int,
    n_targets: int = 1,
    target: str | Sequence[str] | None = None,
    labels: bool = False,
    target_required: bool = True,
    feature_names: Sequence[str] | None = None,
    known_targets: Sequence[str] | None = None,
    input_shape: Sequence[int] | None = None,
) -> Table:
    """Read ``path`` (.csv with a header row, or .npz with arrays X and y/Y).

    CSV columns: by default the last ``n_targets`` columns are the targets and all
    others the features; ``target`` names the target column(s) instead (a name, a
    comma-separated list, or a sequence). ``feature_names`` and ``known_targets``
    (the columns a model was trained on) select the columns by name when all the
    feature names are in the header; the targets are then optional unless
    ``target_required``.
    With ``target_required=False`` a file with exactly ``n_inputs`` columns has no
    target (prediction). ``labels=True`` keeps one target column as class labels:
    integers when every cell is an integer, strings otherwise.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory; give a .csv or .npz file with --data")
    if not path.is_file():
        raise DataError(f"data file not found: {path}; check the path")
    target_names = _target_list(target)
    if path.suffix.lower() == ".npz":
        if target_names:
            raise DataError(
                f"--target picks a CSV column; {path} is an .npz file, "
                "whose targets are its array 'y' (drop --target)"
            )
        return _load_npz(path, n_inputs, n_targets, labels, target_required,
                         tuple(input_shape or (n_inputs,)))  # fmt: skip
    layout = _Layout(
        n_inputs=n_inputs,
        input_text=_input_text(n_inputs, input_shape),
        n_targets=n_targets,
        targets=tuple(target_names),
        target_required=target_required,
        feature_names=None if feature_names is None else tuple(feature_names),
        known_targets=None if known_targets is None else tuple(known_targets),
    )
    return _load_csv(path, layout, labels)


def _target_list(target: str | Sequence[str] | None) -> list[str]:
    if target is None:
        return []
    names = target.split(",") if isinstance(target, str) else list(target)
    names = [name.strip() for name in names]
    if not all(names):
        raise DataError(f"--target {target!r} holds an empty column name")
    return names


# ------------------------------------------------------------------------ CSV


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, cells) of each non-blank data row."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            numbered = [
                (number, cells)
                for number, cells in enumerate(csv.reader(fh), start=1)
                if any(cell.strip() for cell in cells)
            ]
    except UnicodeDecodeError:
        raise DataError(
            f"{path} is not UTF-8 text; give a CSV file (or an .npz with X and y)"
        ) from None
    except csv.Error as exc:
        raise DataError(f"{path} is not valid CSV: {exc}") from None
    if not numbered:
        raise DataError(
            f"{path} is empty; it needs a header row of column names and data rows"
        )
    (_, header), rows = numbered[0], numbered[1:]
    header = [name.strip() for name in header]
    if all(_is_number(name) for name in header):
        raise DataError(
            f"{path}: the first row ({', '.join(header[:4])}"
            f"{', ...' if len(header) > 4 else ''}) looks like data; "
            "add a header row of column names, e.g. x1,x2,y"
        )
    for index, name in enumerate(header):
        if not name:
            raise DataError(
                f"{path}: column {index + 1} of the header has no name; name it"
            )
        if header.index(name) != index:
            raise DataError(
                f"{path}: column name '{name}' appears twice in the header; "
                "make the names unique"
            )
    if not rows:
        raise DataError(f"{path} has a header but no data rows; add data rows")
    for number, cells in rows:
        if len(cells) != len(header):
            raise DataError(
                f"{path}, line {number}: {len(cells)} cells, but the header has "
                f"{len(header)} columns; fix that row"
            )
    return header, rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _input_text(n_inputs: int, input_shape: Sequence[int] | None) -> str:
    """How the spec's input reads in a message: ``input = 2``, or the shape and
    what a row holds."""
    if input_shape is None or len(input_shape) == 1:
        return f"input = {n_inputs}"
    shape = list(input_shape)
    return f"input = {shape} ({n_inputs} values per row, flattened in C order)"


@dataclass(frozen=True)
class _Layout:
    """Which columns a CSV file should have (see :func:`load_table`)."""

    n_inputs: int
    input_text: str
    n_targets: int
    targets: tuple[str, ...]  # named with --target
    target_required: bool
    feature_names: tuple[str, ...] | None  # a trained model's columns
    known_targets: tuple[str, ...] | None


def _select_columns(
    path: Path, header: list[str], layout: _Layout
) -> tuple[list[int], list[int]]:
    """Indices of the feature columns and of the target columns (maybe none)."""
    columns = ", ".join(header)
    n_inputs, n_targets = layout.n_inputs, layout.n_targets
    for name in layout.targets:
        if name not in header:
            raise DataError(
                f"{path} has no column '{name}' (columns: {columns}); fix --target"
            )
    names = layout.feature_names
    if names is not None and all(name in header for name in names):
        target_names = layout.targets or tuple(
            name for name in layout.known_targets or () if name in header
        )
        features = [header.index(name) for name in names]
        targets = [header.index(name) for name in target_names]
        if set(targets) & set(features):
            raise DataError(f"{path}: --target names a feature column; fix --target")
        if layout.target_required and not targets:
            wanted = ", ".join(layout.known_targets or ()) or "?"
            raise DataError(
                f"{path} has no target column ({wanted}); add it or name it with --target"
            )
        return features, targets
    if layout.targets:
        if len(layout.targets) != n_targets:
            raise DataError(
                f"--target names {len(layout.targets)} column(s) but the network has "
                f"{n_targets} target(s); name {n_targets}"
            )
        targets = [header.index(name) for name in layout.targets]
        features = [i for i in range(len(header)) if i not in targets]
        if len(features) != n_inputs:
            raise DataError(
                f"{path} has {len(features)} feature columns besides the target "
                f"({', '.join(header[i] for i in features)}) but the spec takes "
                f"{layout.input_text}; drop or add columns, or change the spec's input"
            )
        return features, targets
    if len(header) == n_inputs + n_targets:
        return list(range(n_inputs)), list(range(n_inputs, len(header)))
    if len(header) == n_inputs and not layout.target_required:
        return list(range(n_inputs)), []
    expected = f"{n_inputs} feature column(s) + {n_targets} target column(s)"
    if not layout.target_required:
        expected = f"{n_inputs} feature column(s), optionally + {n_targets} target(s)"
    if layout.input_text != f"input = {n_inputs}":
        expected += f" ({layout.input_text})"
    raise DataError(
        f"{path} has {len(header)} columns ({columns}) but the spec needs {expected}; "
        "drop extra columns, name the target with --target, or change the spec's input"
    )


def _load_csv(path: Path, layout: _Layout, labels: bool) -> Table:
    header, rows = _read_rows(path)
    features, targets = _select_columns(path, header, layout)
    X = np.empty((len(rows), len(features)))
    for r, (number, cells) in enumerate(rows):
        for c, column in enumerate(features):
            try:
                X[r, c] = _number(path, number, header[column], cells[column])
            except DataError as exc:
                name = header[column]
                cell = cells[column].strip()
                if layout.targets or not labels or not cell or _is_number(cell):
                    raise
                raise DataError(
                    f"{exc}, or if '{name}' holds the labels, pass --target {name}"
                ) from None
    y: np.ndarray | None = None
    if targets and labels:
        y = _labels(
            path,
            [(number, cells[targets[0]]) for number, cells in rows],
            header[targets[0]],
        )
    elif targets:
        y = np.array(
            [
                [_number(path, number, header[t], cells[t]) for t in targets]
                for number, cells in rows
            ]
        )
    return Table(
        X=X,
        y=y,
        feature_names=tuple(header[i] for i in features),
        target_names=tuple(header[i] for i in targets),
        source=str(path),
        rows=tuple(f"line {number}" for number, _ in rows),
    )


def _number(path: Path, line: int, column: str, cell: str) -> float:
    text = cell.strip()
    if not text:
        raise DataError(
            f"{path}, line {line}, column '{column}' is empty; fill it or drop the row"
        )
    try:
        value = float(text)
    except ValueError:
        raise DataError(
            f"{path}, line {line}, column '{column}' holds {text!r}, not a number; "
            "fix the cell"
        ) from None
    if not math.isfinite(value):
        raise DataError(
            f"{path}, line {line}, column '{column}' is {text}; "
            "replace it with a finite number or drop the row"
        )
    return value


def _labels(path: Path, cells: list[tuple[int, str]], column: str) -> np.ndarray:
    """Class labels of a target column: int64 if every cell is an integer, else str."""
    texts = [cell.strip() for _, cell in cells]
    for (line, _), text in zip(cells, texts, strict=True):
        if not text:
            raise DataError(
                f"{path}, line {line}, column '{column}' is empty; "
                "give every row a label or drop the row"
            )
    if not all(_is_number(text) for text in texts):
        return np.array(texts)
    values = np.array([float(text) for text in texts])
    for (line, _), text, value in zip(cells, texts, values, strict=True):
        if not math.isfinite(value) or value != round(value):
            raise DataError(
                f"{path}, line {line}, column '{column}' holds {text}, not a class "
                "label; a classifier needs labels such as 0/1 (or a regression spec)"
            )
    return values.astype(np.int64)


# ------------------------------------------------------------------------ NPZ


def _load_npz(
    path: Path,
    n_inputs: int,
    n_targets: int,
    labels: bool,
    target_required: bool,
    input_shape: tuple[int, ...],
) -> Table:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(
            f"{path} is not a readable .npz of numeric arrays ({exc}); "
            "save it with numpy.savez(path, X=X, y=y)"
        ) from None
    if "X" not in arrays:
        raise DataError(
            f"{path} has no array 'X' (it has: {', '.join(arrays) or 'none'}); "
            "save it with numpy.savez(path, X=X, y=y)"
        )
    raw_X = arrays["X"]
    if len(input_shape) > 1 and raw_X.ndim == 1 + len(input_shape):
        if tuple(raw_X.shape[1:]) != input_shape:
            raise DataError(
                f"{path}: X has samples of shape {tuple(raw_X.shape[1:])} but the spec "
                f"takes {_input_text(n_inputs, input_shape)}; give X of shape "
                f"(n, {', '.join(map(str, input_shape))}) or (n, {n_inputs})"
            )
        raw_X = raw_X.reshape(raw_X.shape[0], -1)
    X = _numeric_matrix(path, "X", raw_X)
    if X.shape[1] != n_inputs:
        shaped = (
            f" or (n, {', '.join(map(str, input_shape))})"
            if len(input_shape) > 1
            else ""
        )
        raise DataError(
            f"{path}: X has {X.shape[1]} columns but the spec takes "
            f"{_input_text(n_inputs, input_shape)}; give X of shape (n, {n_inputs})"
            f"{shaped} or change the spec's input"
        )
    key = "y" if "y" in arrays else "Y" if "Y" in arrays else None
    y: np.ndarray | None = None
    if key is None and target_required:
        raise DataError(f"{path} has no array 'y' (or 'Y') with the targets; add it")
    if key is not None:
        raw = arrays[key]
        if raw.shape[:1] != X.shape[:1]:
            raise DataError(
                f"{path}: {key} has {raw.shape[0] if raw.ndim else 0} rows but X has "
                f"{X.shape[0]}; give one target row per row of X"
            )
        if labels and raw.dtype.kind in "US" and raw.ndim == 1:
            y = raw.astype(str)
        elif labels and (raw.ndim == 1 or raw.shape[1:] == (1,)):
            values = _numeric_matrix(path, key, raw.reshape(-1, 1))[:, 0]
            bad = np.flatnonzero(values != np.round(values))
            if bad.size:
                raise DataError(
                    f"{path}: {key}[{bad[0]}] = {values[bad[0]]:g} is not a class "
                    "label; a classifier needs labels such as 0/1 (or a regression spec)"
                )
            y = values.astype(np.int64)
        else:
            y = _numeric_matrix(path, key, raw.reshape(len(raw), -1))
            if not labels and y.shape[1] != n_targets:
                raise DataError(
                    f"{path}: {key} has {y.shape[1]} columns but the network has "
                    f"{n_targets} output(s); give {key} of shape (n, {n_targets})"
                )
    names = tuple(f"x{i + 1}" for i in range(n_inputs))
    if y is None:
        target_names: tuple[str, ...] = ()
    elif y.ndim == 1 or y.shape[1] == 1:
        target_names = (key,)
    else:
        target_names = tuple(f"{key}{i + 1}" for i in range(y.shape[1]))
    return Table(
        X=X,
        y=y,
        feature_names=names,
        target_names=target_names,
        source=str(path),
        rows=tuple(f"row {i}" for i in range(X.shape[0])),
    )


def _numeric_matrix(path: Path, key: str, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise DataError(
            f"{path}: {key} holds {array.dtype} values, not numbers; save numeric arrays"
        )
    if array.ndim != 2:
        raise DataError(
            f"{path}: {key} has shape {array.shape}; give a 2-D array (n, columns)"
        )
    if array.shape[0] == 0:
        raise DataError(f"{path}: {key} has no rows; add data")
    values = array.astype(np.float64)
    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        r, c = bad[0]
        raise DataError(
            f"{path}: {key}[{r}, {c}] is {values[r, c]}; "
            "replace it with a finite number or drop the row"
        )
    return values


# ------------------------------------------------------- targets vs the network


def check_targets(
    table: Table,
    *,
    task: str,
    n_outputs: int,
    targets: str,
    spec_name: str,
    classes: np.ndarray | None = None,
) -> None:
    """Refuse targets that do not fit the network's output layer, naming the row.

    task: the module's TASK ("binary" | "multiclass" | "regression"); targets:
    its TARGETS ("any" | "probability" | "distribution"); classes: the classes a
    trained network knows (labels outside them are refused).
    """
    if table.y is None:
        return
    column = ", ".join(table.target_names)
    if task == "regression" or (task == "binary" and n_outputs > 1):
        if targets == "probability":
            bad = np.argwhere((table.y < 0) | (table.y > 1))
            if bad.size:
                r, c = bad[0]
                raise DataError(
                    f"{table.source}, {table.rows[r]}: target {table.y[r, c]:g} is "
                    f"outside [0, 1], which spec '{spec_name}''s loss needs; "
                    "rescale the targets or use a regression loss such as mse"
                )
        return
    if table.y.ndim == 2:  # one-hot or class-probability rows
        if table.y.shape[1] != n_outputs:
            raise DataError(
                f"{table.source}: the targets have {table.y.shape[1]} columns but "
                f"spec '{spec_name}''s output layer has {n_outputs} units; give "
                f"one label per row or {n_outputs} one-hot columns"
            )
        return
    found = _unique(table.y)
    n_classes = 2 if task == "binary" else n_outputs
    if classes is not None:
        known = set(np.asarray(classes).tolist())
        for r, label in enumerate(table.y.tolist()):
            if label not in known:
                raise DataError(
                    f"{table.source}, {table.rows[r]}: label {label!r} in column "
                    f"'{column}' is not one of the classes the model was trained on "
                    f"({_listing(classes)}); fix the label or retrain"
                )
        return
    if len(found) > n_classes:
        if task == "binary":
            fix = (
                f"use a softmax output with {len(found)} units and cross_entropy, "
                "or give 0/1 labels"
            )
        else:
            fix = f"set the last layer's units = {len(found)}"
        raise DataError(
            f"{table.source}: column '{column}' has {len(found)} classes "
            f"({_listing(found)}) but spec '{spec_name}''s output layer has "
            f"{n_outputs} unit(s) ({n_classes} classes); {fix}"
        )
    natural = set(range(n_classes))
    if len(found) < n_classes and not set(found.tolist()) <= natural:
        raise DataError(
            f"{table.source}: column '{column}' has only {len(found)} class(es) "
            f"({_listing(found)}) but the output layer predicts {n_classes}; "
            f"give data of all {n_classes} classes or labels 0..{n_classes - 1}"
        )


def _unique(labels: np.ndarray) -> np.ndarray:
    try:
        return np.unique(labels)
    except TypeError:
        return np.array(sorted(set(labels.tolist()), key=repr), dtype=object)


def _listing(values: np.ndarray, limit: int = 6) -> str:
    items = [str(v) for v in np.asarray(values).tolist()]
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")
