"""Pictures of a training run: the learning curve and a 2-D decision boundary.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, so
the caller's backend is left alone) and written atomically: to a temporary file
in the same folder, then renamed into place. PNGs carry ``Software: derive`` in
their metadata, which :func:`written_by_derive` reads back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._version import __version__
from .data import DataError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .network import Network

SOFTWARE = f"derive {__version__}"


def learning_curve(
    history: Mapping[str, np.ndarray], path: str | os.PathLike[str], *, title: str
) -> Path:
    """Plot training loss (and validation loss, if any) per epoch to ``path``.

    history: per-epoch arrays of equal length E, "loss" and optionally
    "val_loss" (NaN where an epoch had no validation), as ``Network.history_``.
    """
    loss = np.asarray(history.get("loss", ()), dtype=float)
    if loss.size == 0:
        raise DataError("no training history to plot; train for at least one epoch")
    figure = _figure((6.4, 4.0))
    axes = figure.add_subplot()
    epochs = np.arange(1, loss.size + 1)
    axes.plot(epochs, loss, label="training loss", color="tab:blue")
    val_loss = np.asarray(history.get("val_loss", ()), dtype=float)
    if val_loss.size == loss.size and np.any(np.isfinite(val_loss)):
        axes.plot(epochs, val_loss, label="validation loss", color="tab:orange")
    if np.all(loss > 0) and loss.max() / loss.min() > 20:
        axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    return save_figure(figure, path)


def decision_boundary(
    network: Network,
    X: np.ndarray,
    labels: np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str,
    resolution: int = 200,
) -> Path:
    """Draw a 2-input classifier's decision regions with the points ``X`` (n, 2)
    coloured by their labels (n,).

    Binary: filled contours of P(class classes_[1]) over a grid around the data
    and the 0.5 boundary line. Softmax: the predicted class of each grid point.
    """
    if network.spec.input_shape != (2,) or not network.is_classifier:
        raise DataError(
            f"a decision boundary needs a classifier with 2 inputs; spec "
            f"'{network.spec.name}' is a {network.spec.input}-input {network.task} network"
        )
    X = np.asarray(X, dtype=float)
    low, high = X.min(axis=0), X.max(axis=0)
    margin = 0.1 * (high - low) + 1e-9
    grid_x, grid_y = np.meshgrid(
        np.linspace(low[0] - margin[0], high[0] + margin[0], resolution),
        np.linspace(low[1] - margin[1], high[1] + margin[1], resolution),
    )
    grid = np.column_stack([grid_x.ravel(), grid_y.ravel()])
    proba = network.predict_proba(grid)
    figure = _figure((5.6, 5.0))
    axes = figure.add_subplot()
    classes = network.classes_
    if network.task == "binary":
        surface = proba[:, -1].reshape(grid_x.shape)
        filled = axes.contourf(
            grid_x,
            grid_y,
            surface,
            levels=np.linspace(0, 1, 11),
            cmap="RdBu_r",
            alpha=0.75,
        )
        axes.contour(grid_x, grid_y, surface, levels=[0.5], colors="k", linewidths=1.2)
        figure.colorbar(filled, ax=axes, label=f"P(class {classes[-1]})")
    else:
        predicted = np.argmax(proba, axis=1).reshape(grid_x.shape)
        axes.contourf(
            grid_x,
            grid_y,
            predicted,
            levels=np.arange(len(classes) + 1) - 0.5,
            cmap="tab10",
            vmin=0,
            vmax=9,
            alpha=0.35,
        )
    lookup = {label: i for i, label in enumerate(np.asarray(classes).tolist())}
    colours = ["tab:blue", "tab:red"] if len(classes) == 2 else None
    for label, index in lookup.items():
        rows = np.array([value == label for value in np.asarray(labels).tolist()], bool)
        if not rows.any():
            continue
        colour = colours[index] if colours else f"C{index % 10}"
        axes.scatter(
            X[rows, 0], X[rows, 1], s=10, color=colour, edgecolors="k",
            linewidths=0.3, label=f"class {label}",
        )  # fmt: skip
    axes.set_xlim(grid_x.min(), grid_x.max())
    axes.set_ylim(grid_y.min(), grid_y.max())
    axes.set_aspect("equal")
    axes.set_xlabel(_feature_name(network, 0))
    axes.set_ylabel(_feature_name(network, 1))
    axes.set_title(title)
    axes.legend(loc="upper right", fontsize="small")
    return save_figure(figure, path)


def _feature_name(network: Network, index: int) -> str:
    names = network.feature_names_in_
    return names[index] if names else f"x{index + 1}"


def _figure(size: tuple[float, float]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``figure`` to ``path`` (format from the suffix, PNG if none) atomically."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".") or "png"
    supported = figure.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise DataError(
            f"cannot write a .{fmt} picture; use one of: "
            + ", ".join(f".{ext}" for ext in sorted(supported))
        )
    metadata = {"Software": SOFTWARE} if fmt == "png" else None
    from .fileio import atomic_open

    with atomic_open(path, "wb") as fh:
        figure.savefig(fh, format=fmt, dpi=120, metadata=metadata)
    return path


def written_by_derive(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a PNG derive wrote (its Software text chunk says so)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return head.startswith(b"\x89PNG") and b"tEXtSoftware\x00derive " in head
