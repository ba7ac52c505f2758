"""The two-circles classifier, and what its hidden layer makes of the data.

Two concentric noisy circles (``derive.datasets.two_circles``: 1000 points,
factor 0.3, noise 0.1) cannot be split by a straight line in the input plane.
After training ``two_circles.toml``, this script reads each hidden layer's
activations (the same network cut after that layer: a spec with the first
layers only, built and run with the trained weights) and asks how well a
linear classifier separates the classes there, and how the classes sit along
the first principal component of the representation.

Run:  .venv/bin/python examples/two_circles_hidden.py [--plot hidden.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import derive
from derive.datasets import two_circles

HERE = Path(__file__).resolve().parent
SPEC = HERE / "two_circles.toml"
N_TRAIN = 800  # the data come shuffled: the first 800 rows train, the rest test


def truncated_spec(spec: derive.Spec, n_layers: int) -> derive.Spec:
    """The spec's first ``n_layers`` layers as a network of their own; its
    ``predict`` returns the activations of layer ``n_layers``. The loss is only
    there to make the spec valid (mse accepts any elementwise output)."""
    data = spec.to_dict()
    data["name"] = f"{spec.name}_upto_{n_layers}"
    data["layers"] = data["layers"][:n_layers]
    data["loss"] = {"name": "mse"}
    return derive.spec_from_dict(data)


def hidden_activations(
    spec: derive.Spec, params: list[np.ndarray], X: np.ndarray
) -> list[np.ndarray]:
    """Activations of each hidden layer for the rows of X: (n, units_l) each."""
    out = []
    for k in range(1, len(spec.layers)):
        cut = derive.build(truncated_spec(spec, k))
        out.append(cut.predict(params[: 2 * k], X))
    return out


def linear_accuracy(
    features: np.ndarray, labels: np.ndarray, train: slice, test: slice
) -> float:
    """Test accuracy of a least-squares linear classifier (targets -1/+1, a
    bias column) fitted on the training rows: how linearly separable the
    classes are in this representation. features (n, d), labels (n,)."""
    design = np.hstack([features, np.ones((len(features), 1))])
    weights, *_ = np.linalg.lstsq(design[train], 2.0 * labels[train] - 1.0, rcond=None)
    return float(np.mean((design[test] @ weights > 0) == (labels[test] == 1)))


def epoch_losses(history: object) -> np.ndarray:
    """Per-epoch losses from fit's return value (a dict with "loss", or an array)."""
    if isinstance(history, dict):
        return np.asarray(history["loss"])
    return np.asarray(history)


def plot(
    path: Path,
    X: np.ndarray,
    labels: np.ndarray,
    hidden: list[np.ndarray],
    first_layer: tuple[np.ndarray, np.ndarray],
) -> None:
    """The input plane with the lines of the first layer's units (W1 (units, 2),
    b1 (units,)), and each hidden layer's first two principal components."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [("input (x1, x2)", X)] + [
        (f"hidden layer {k} ({h.shape[1]} units), PC1 vs PC2", _pca2(h))
        for k, h in enumerate(hidden, 1)
    ]
    figure = Figure(figsize=(5 * len(panels), 4.5))
    FigureCanvasAgg(figure)
    for i, (title, points) in enumerate(panels, 1):
        axes = figure.add_subplot(1, len(panels), i)
        for label, color, name in ((0, "tab:blue", "outer"), (1, "tab:red", "inner")):
            rows = labels == label
            axes.scatter(*points[rows].T, s=6, c=color, label=f"{name} circle")
        if i == 1:
            _draw_lines(axes, *first_layer)
        axes.set_title(title)
        axes.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _draw_lines(axes, weights: np.ndarray, biases: np.ndarray) -> None:
    """Draw w . x + b = 0 for each unit, clipped to the current view."""
    (left, right), (bottom, top) = axes.get_xlim(), axes.get_ylim()
    t = np.linspace(-3.0, 3.0, 2)
    for (w1, w2), b in zip(weights, biases, strict=True):
        norm = np.hypot(w1, w2)
        foot = -b * np.array([w1, w2]) / norm**2  # the line's point nearest 0
        direction = np.array([-w2, w1]) / norm
        points = foot[:, None] + direction[:, None] * t
        axes.plot(points[0], points[1], color="gray", linewidth=0.8)
    axes.set_xlim(left, right)
    axes.set_ylim(bottom, top)


def _pca2(features: np.ndarray) -> np.ndarray:
    centered = features - features.mean(axis=0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    return centered @ vt[:2].T


def main(plot_path: Path | None = None) -> dict[str, float]:
    spec = derive.load_spec(SPEC)
    net = derive.build(spec)
    X, labels = two_circles()
    Y = labels[:, None].astype(np.float64)
    train, test = slice(0, N_TRAIN), slice(N_TRAIN, None)

    params = net.init_params(spec.training.seed)
    losses = epoch_losses(net.fit(params, X[train], Y[train]))
    test_accuracy = net.accuracy(params, X[test], Y[test])
    arch = "-".join(str(s) for s in spec.sizes)
    print(
        f"{arch} network, {len(losses)} epochs: loss {losses[0]:.3f} -> "
        f"{losses[-1]:.3f}; accuracy on the {len(X) - N_TRAIN} held-out points "
        f"{test_accuracy:.1%}"
    )

    hidden = hidden_activations(spec, params, X)
    print("\nHow linearly separable the classes are (least-squares line, held-out):")
    input_accuracy = linear_accuracy(X, labels, train, test)
    print(f"  input plane (x1, x2):           {input_accuracy:.1%}")
    results = {"test_accuracy": test_accuracy, "input_linear": input_accuracy}
    for k, h in enumerate(hidden, 1):
        accuracy = linear_accuracy(h, labels, train, test)
        results[f"hidden{k}_linear"] = accuracy
        print(f"  hidden layer {k} ({h.shape[1]:2d} activations):  {accuracy:.1%}")

    print(
        "\nEach unit of hidden layer 1 is tanh(w . x + b): a soft step across the\n"
        "line w . x + b = 0. Where the lines lie (the circles have radii 0.3, 1):"
    )
    print("  unit  distance from center   mean activation: outer  inner")
    w1, b1 = params[0], params[1]
    distances = np.abs(b1) / np.linalg.norm(w1, axis=1)
    for unit, distance in enumerate(distances):
        outer = hidden[0][labels == 0, unit].mean()
        inner = hidden[0][labels == 1, unit].mean()
        print(f"  {unit + 1:4d}  {distance:20.2f}   {outer:+22.2f}  {inner:+5.2f}")
    between = int(np.sum((distances > 0.3) & (distances < 1.0)))
    results["lines_between"] = between
    print(
        f"{between} of {len(distances)} lines pass between the two circles: together\n"
        "they fence in the inner circle, which then sits on one side of a\n"
        "hyperplane in the hidden layer, where the output unit (a logistic\n"
        "regression on the activations) separates it."
    )
    if plot_path is not None:
        plot(plot_path, X, labels, hidden, (params[0], params[1]))
        print(f"\nwrote {plot_path}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", type=Path, help="write a PNG of the representations")
    main(parser.parse_args().plot)
