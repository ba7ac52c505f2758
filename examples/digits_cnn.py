"""A convolutional network on scikit-learn's 8x8 digits, next to a dense one.

Trains ``digits_cnn.toml`` (3x3 conv with 8 filters, 2x2 max pooling, softmax)
and ``digits_dense.toml`` (64-32-10) on the same 1437 digits of scikit-learn's
bundled ``load_digits`` (no download) and prints each one's accuracy on the 360
held-out digits, then draws the eight learned 3x3 filters. The pixels (0..16)
are scaled to [0, 1]; the CNN takes each digit as a (1, 8, 8) image, the dense
network the same 64 values as a row.

Run:  .venv/bin/python examples/digits_cnn.py [--plot filters.png] [--epochs N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

import derive
from derive.fileio import atomic_open

HERE = Path(__file__).resolve().parent
N_TEST = 360


def digits() -> tuple[np.ndarray, np.ndarray]:
    """Images (1797, 1, 8, 8) in [0, 1] and labels, in a seeded random order."""
    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    images = (data.images / 16.0)[order, None, :, :]
    return images, data.target[order]


def train(spec_file: str, X: np.ndarray, y: np.ndarray, epochs: int | None):
    network = derive.Network.from_spec(HERE / spec_file)
    started = time.perf_counter()
    network.fit(X[:-N_TEST], y[:-N_TEST], epochs=epochs)
    seconds = time.perf_counter() - started
    accuracy = network.score(X[-N_TEST:], y[-N_TEST:])
    return network, accuracy, seconds


def draw_filters(weights: np.ndarray, path: Path) -> None:
    """The 3x3 filters of the first layer, one panel each, on one shared scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 1.6))
    FigureCanvasAgg(figure)
    limit = float(np.max(np.abs(weights)))
    for k, kernel in enumerate(weights[:, 0]):
        axes = figure.add_subplot(1, len(weights), k + 1)
        axes.imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit)
        axes.set_title(f"filter {k + 1}", fontsize=8)
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle("digits_cnn: learned 3x3 filters (red +, blue -)", fontsize=9)
    with atomic_open(path, "wb") as fh:
        figure.savefig(fh, format="png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", type=Path, help="write the filters picture (PNG)")
    parser.add_argument("--epochs", type=int, help="default: the specs' (40)")
    args = parser.parse_args()
    X, y = digits()
    print(
        f"digits: {len(y)} 8x8 images, {len(y) - N_TEST} for training, "
        f"{N_TEST} held out"
    )
    cnn, cnn_accuracy, cnn_seconds = train("digits_cnn.toml", X, y, args.epochs)
    dense, dense_accuracy, dense_seconds = train(
        "digits_dense.toml", X.reshape(len(y), -1), y, args.epochs
    )
    for name, network, accuracy, seconds in (
        ("digits_cnn", cnn, cnn_accuracy, cnn_seconds),
        ("digits_dense", dense, dense_accuracy, dense_seconds),
    ):
        params = sum(p.size for p in network.params)
        print(
            f"{name:13s} {network.spec.architecture}: held-out accuracy "
            f"{accuracy:.1%} ({params} parameters, fit {seconds:.1f} s)"
        )
    if args.plot:
        draw_filters(cnn.params[0], args.plot)
        print(f"filters: {args.plot}")


if __name__ == "__main__":
    main()
