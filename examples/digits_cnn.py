"""A convolutional network on scikit-learn's 8x8 digits, next to dense ones.

Trains ``digits_cnn.toml`` (3x3 conv with 8 filters, 2x2 max pooling, softmax),
``digits_dense.toml`` (64-32-10) and ``digits_bn.toml`` (the same 64-32-10 with
batch norm after the hidden layer) on the same 1437 digits of scikit-learn's
bundled ``load_digits`` (no download) and prints each one's accuracy on the 360
held-out digits, then draws the eight learned 3x3 filters and the learning
curves of the two dense networks (training loss, and the held-out loss after
every epoch: evaluation mode, batch norm with its running statistics). The
pixels (0..16) are scaled to [0, 1]; the CNN takes each digit as a (1, 8, 8)
image, the dense networks the same 64 values as a row.

Run:  .venv/bin/python examples/digits_cnn.py [--plot filters.png]
          [--curves curves.png] [--epochs N]
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


def train(
    spec_file: str,
    X: np.ndarray,
    y: np.ndarray,
    epochs: int | None,
    *,
    curve: bool = False,
):
    """Train on all but the last N_TEST digits; with ``curve``, also measure the
    held-out loss after every epoch (network.history_["val_loss"])."""
    network = derive.Network.from_spec(HERE / spec_file)
    held_out = {"validation_data": (X[-N_TEST:], y[-N_TEST:])} if curve else {}
    started = time.perf_counter()
    network.fit(X[:-N_TEST], y[:-N_TEST], epochs=epochs, **held_out)
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


def draw_curves(networks: dict[str, derive.Network], path: Path) -> None:
    """Training loss (solid) and held-out loss (dashed) per epoch, one colour per
    network, on a log scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from derive.plots import save_figure

    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for (name, network), colour in zip(
        networks.items(), ("tab:blue", "tab:orange"), strict=False
    ):
        history = network.history_
        epochs = np.arange(1, len(history["loss"]) + 1)
        axes.plot(epochs, history["loss"], color=colour, label=f"{name} training")
        axes.plot(epochs, history["val_loss"], color=colour, linestyle="--",
                  label=f"{name} held-out")  # fmt: skip
    axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel("cross-entropy loss")
    axes.set_title("8x8 digits: 64-32-10 without and with batch norm")
    axes.grid(alpha=0.3, which="both")
    axes.legend()
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", type=Path, help="write the filters picture (PNG)")
    parser.add_argument(
        "--curves", type=Path, help="write the dense networks' learning curves (PNG)"
    )
    parser.add_argument("--epochs", type=int, help="default: the specs' (40)")
    args = parser.parse_args()
    X, y = digits()
    print(
        f"digits: {len(y)} 8x8 images, {len(y) - N_TEST} for training, "
        f"{N_TEST} held out"
    )
    rows = X.reshape(len(y), -1)
    results = {
        "digits_cnn": train("digits_cnn.toml", X, y, args.epochs),
        "digits_dense": train("digits_dense.toml", rows, y, args.epochs, curve=True),
        "digits_bn": train("digits_bn.toml", rows, y, args.epochs, curve=True),
    }
    for name, (network, accuracy, seconds) in results.items():
        params = sum(p.size for p in network.params)
        print(
            f"{name:13s} {network.spec.architecture}: held-out accuracy "
            f"{accuracy:.1%} ({params} parameters, fit {seconds:.1f} s)"
        )
    dense, bn = results["digits_dense"][0], results["digits_bn"][0]
    for name, network in (("digits_dense", dense), ("digits_bn", bn)):
        val_loss = network.history_["val_loss"]
        marks = sorted({1, min(5, len(val_loss)), len(val_loss)})
        print(
            f"{name:13s} held-out loss after epoch "
            + ", ".join(f"{e}: {val_loss[e - 1]:.3f}" for e in marks)
        )
    if args.plot:
        draw_filters(results["digits_cnn"][0].params[0], args.plot)
        print(f"filters: {args.plot}")
    if args.curves:
        draw_curves({"digits_dense": dense, "digits_bn": bn}, args.curves)
        print(f"learning curves: {args.curves}")


if __name__ == "__main__":
    main()
