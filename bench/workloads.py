"""The workloads: W1-W4 of issue 6 (dense), W5-W6 of issue 14 (CNNs) and W7 of
issue 13 (W3 with batch norm and dropout): their specs (bench/w*.toml) and seeded
data.

Every implementation reads the architecture, loss, optimizer and batch size from
the same spec, starts from the generated module's ``init_params(seed)`` and trains
on the same arrays, so the only difference between them is the training code.
"""

from __future__ import annotations

import copy
import functools
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
INIT_SEED = 0  # init_params(seed) of every workload


def xor_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    del n, seed  # the four rows of the truth table
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    Y = np.array([[0], [1], [1], [0]], dtype=np.float64)
    return X, Y


def circles_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two noisy concentric circles (radius 1 and 0.5, noise 0.1), label 1 inside."""
    rng = np.random.default_rng(seed)
    inner = rng.random(n) < 0.5
    angle = rng.uniform(0.0, 2.0 * np.pi, n)
    radius = np.where(inner, 0.5, 1.0)
    X = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    X += 0.1 * rng.standard_normal((n, 2))
    return X, inner.astype(np.float64).reshape(-1, 1)


def _one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes)[labels]


def tabular_data(
    n: int, seed: int, features: int = 64, classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features; labels from a random linear teacher plus noise (one-hot)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, features))
    teacher = rng.standard_normal((features, classes)) / np.sqrt(features)
    logits = X @ teacher + 0.5 * rng.standard_normal((n, classes))
    return X, _one_hot(logits.argmax(axis=1), classes)


def mnist_like_data(
    n: int, seed: int, features: int = 784, classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels in [0, 1]: a sparse random prototype per class plus noise (one-hot)."""
    rng = np.random.default_rng(seed)
    prototypes = (rng.random((classes, features)) < 0.2).astype(np.float64)
    labels = rng.integers(0, classes, n)
    X = prototypes[labels] + 0.3 * rng.standard_normal((n, features))
    return np.clip(X, 0.0, 1.0), _one_hot(labels, classes)


def _blur(images: np.ndarray) -> np.ndarray:
    """A separable [1, 2, 1] / 4 blur over the last two axes (zero outside)."""
    kernel = np.array([0.25, 0.5, 0.25])
    for axis in (-2, -1):
        images = np.apply_along_axis(np.convolve, axis, images, kernel, mode="same")
    return images


def stroke_images(
    n: int, seed: int, shape: tuple[int, ...], classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, C, H, W) in [0, 1] with class structure: a prototype per class
    of a few random strokes (line segments, blurred), shifted by up to H / 8
    pixels per sample, times a random contrast, plus pixel noise (one-hot
    labels). A classifier has to find the strokes wherever they lie, which is
    what a convolution and pooling do."""
    rng = np.random.default_rng(seed)
    C, H, W = shape
    strokes = 3 if H >= 16 else 2
    prototypes = np.zeros((classes, C, H, W))
    steps = np.linspace(0.0, 1.0, 4 * max(H, W))
    for label in range(classes):
        for channel in range(C):
            for _ in range(strokes):
                (y0, x0), (y1, x1) = rng.uniform(0.1, 0.9, (2, 2)) * (H - 1, W - 1)
                ys = np.rint(y0 + steps * (y1 - y0)).astype(int)
                xs = np.rint(x0 + steps * (x1 - x0)).astype(int)
                prototypes[label, channel, ys, xs] = 1.0
    prototypes = _blur(prototypes)
    prototypes /= prototypes.max(axis=(1, 2, 3), keepdims=True)
    labels = rng.integers(0, classes, n)
    shift = max(1, H // 8)
    padded = np.pad(prototypes, ((0, 0), (0, 0), (shift, shift), (shift, shift)))
    dy, dx = rng.integers(0, 2 * shift + 1, (2, n))
    X = np.empty((n, C, H, W))
    for oy in range(2 * shift + 1):
        for ox in range(2 * shift + 1):
            rows = np.flatnonzero((dy == oy) & (dx == ox))
            X[rows] = padded[labels[rows], :, oy : oy + H, ox : ox + W]
    X *= rng.uniform(0.6, 1.0, (n, 1, 1, 1))
    X += 0.15 * rng.standard_normal(X.shape)
    return np.clip(X, 0.0, 1.0), _one_hot(labels, classes)


def digits_like_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """8x8 one-channel images, scikit-learn's digits' shape (:func:`stroke_images`)."""
    return stroke_images(n, seed, (1, 8, 8))


def mnist_cnn_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 one-channel images, MNIST's shape (:func:`stroke_images`)."""
    return stroke_images(n, seed, (1, 28, 28))


DATA = {
    "xor": xor_data,
    "circles": circles_data,
    "tabular": tabular_data,
    "mnist_like": mnist_like_data,
    "digits_like": digits_like_data,
    "mnist_cnn": mnist_cnn_data,
    "images": stroke_images,  # any image shape: the spec's input (conv scaling)
}


def _pair(value: int | list[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _window_out(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """Output length of a window over ``size`` positions (floor, as torch)."""
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True)
class Workload:
    """One benchmark: a spec file, a data generator and what throughput means."""

    key: str  # "W1"
    title: str
    spec_file: str  # relative to bench/
    data: str  # key of DATA
    n_samples: int
    data_seed: int
    unit: str = "samples/s"  # or "steps/s" (W1: one full-batch step per epoch)
    overrides: dict[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------------- the spec
    @functools.cached_property
    def spec_data(self) -> dict[str, Any]:
        """The spec as plain data, with this variant's overrides applied."""
        data = tomllib.loads((HERE / self.spec_file).read_text(encoding="utf-8"))
        data = copy.deepcopy(data)
        if "dtype" in self.overrides:
            data["dtype"] = self.overrides["dtype"]
        if "hidden" in self.overrides:
            for layer in data["layers"][:-1]:
                if "units" in layer:
                    layer["units"] = self.overrides["hidden"]
        if "dropout" in self.overrides:
            for layer in data["layers"]:
                if layer.get("kind") == "dropout":
                    layer["p"] = self.overrides["dropout"]
        if "channels" in self.overrides:  # the conv scaling view: C -> C filters
            channels = self.overrides["channels"]
            data["input"] = [channels, *data["input"][1:]]
            for layer in data["layers"]:
                if layer.get("kind") == "conv2d":
                    layer["filters"] = channels
        if "image" in self.overrides:
            size = self.overrides["image"]
            data["input"] = [data["input"][0], size, size]
        suffix = "".join(f"_{k}{v}" for k, v in sorted(self.overrides.items()))
        data["name"] = data["name"] + suffix.replace(".", "p")  # an identifier
        return data

    def spec(self):
        import derive

        return derive.spec_from_dict(
            copy.deepcopy(self.spec_data), source=self.spec_file
        )

    def variant(self, **overrides: Any) -> Workload:
        """The same workload with another dtype (``dtype="float64"``), hidden
        width (``hidden=512``), dropout probability (``dropout=0.0``), input
        channels and conv filters (``channels=16``) or image size (``image=32``)."""
        merged = {**self.overrides, **overrides}
        return Workload(
            self.key, self.title, self.spec_file, self.data, self.n_samples,
            self.data_seed, self.unit, merged,
        )  # fmt: skip

    # ------------------------------------------------- what the spec says, flat
    @property
    def layers(self) -> list[dict[str, Any]]:
        """Every layer with its kind and settings, the spec's defaults filled in:
        dense (units, activation), batch_norm (eps, momentum, affine), dropout (p),
        conv2d (filters, activation; kernel, stride, padding, dilation as pairs),
        max_pool2d (kernel, stride, padding as pairs), flatten.
        """
        out = []
        for layer in self.spec_data["layers"]:
            kind = layer.get("kind", "dense")
            if kind == "dense" and not layer.get("residual"):
                out.append({"kind": kind, **layer})
            elif kind == "batch_norm":
                out.append({"kind": kind, "eps": 1e-5, "momentum": 0.1,
                            "affine": True, **layer})  # fmt: skip
            elif kind == "dropout":
                out.append({"kind": kind, "p": 0.5, **layer})
            elif kind == "conv2d":
                sizes = {"stride": 1, "padding": 0, "dilation": 1, **layer}
                out.append({**layer, **{k: _pair(sizes[k]) for k in
                            ("kernel", "stride", "padding", "dilation")}})  # fmt: skip
            elif kind == "max_pool2d":
                sizes = {"stride": layer["kernel"], "padding": 0, **layer}
                out.append({**layer, **{k: _pair(sizes[k]) for k in
                            ("kernel", "stride", "padding")}})  # fmt: skip
            elif kind == "flatten":
                out.append(dict(layer))
            else:
                raise ValueError(f"bench: no layer {layer!r} in the implementations")
        return out

    @property
    def dense_only(self) -> bool:
        """W1-W4: dense layers only (no module state, no dropout)."""
        return all(layer["kind"] == "dense" for layer in self.layers)

    @property
    def is_cnn(self) -> bool:
        """W5, W6 and the conv scaling view: images through conv/pool/flatten."""
        return any(layer["kind"] == "conv2d" for layer in self.layers)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """A sample's shape: (features,) or (channels, height, width)."""
        shape = self.spec_data["input"]
        return tuple(shape) if isinstance(shape, list) else (shape,)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The input shape, then each layer's output shape (per sample)."""
        out = [self.input_shape]
        for layer in self.layers:
            shape, kind = out[-1], layer["kind"]
            if kind == "conv2d":
                C, *spatial = shape
                out.append((layer["filters"], *(
                    _window_out(size, k, s, p, d) for size, k, s, p, d in zip(
                        spatial, layer["kernel"], layer["stride"], layer["padding"],
                        layer["dilation"], strict=True))))  # fmt: skip
            elif kind == "max_pool2d":
                C, *spatial = shape
                out.append((C, *(
                    _window_out(size, k, s, p, 1) for size, k, s, p in zip(
                        spatial, layer["kernel"], layer["stride"], layer["padding"],
                        strict=True))))  # fmt: skip
            elif kind == "flatten":
                out.append((int(np.prod(shape)),))
            elif kind == "dense":
                out.append((layer["units"],))
            else:
                out.append(shape)
        return out

    def step_products(self) -> list[tuple[str, int, int, int]]:
        """(what, M, K, N) of every matrix product of one training step, as a
        convolution's im2col form and a dense layer compute it (feature-major,
        the batch in N): forward, weight gradient and, except for the first
        layer, input gradient. A step's FLOPs are sum(2 M K N)."""
        B, out, first = self.batch_size, [], True
        for layer, shape, after in zip(
            self.layers, self.shapes[:-1], self.shapes[1:], strict=True
        ):
            if layer["kind"] == "conv2d":
                taps = shape[0] * int(np.prod(layer["kernel"]))
                rows, cols = after[0], int(np.prod(after[1:])) * B
            elif layer["kind"] == "dense":
                taps, rows, cols = shape[0], layer["units"], B
            else:
                continue
            name = f"{layer['kind']} {taps}->{rows}"
            out.append((f"{name} forward", rows, taps, cols))
            out.append((f"{name} weight gradient", rows, cols, taps))
            if not first:
                out.append((f"{name} input gradient", taps, rows, cols))
            first = False
        return out

    @property
    def sizes(self) -> list[int]:  # dense workloads
        """The input width, then each dense layer's units."""
        d = self.spec_data
        return [d["input"]] + [
            layer["units"] for layer in self.layers if layer["kind"] == "dense"
        ]

    @property
    def activations(self) -> list[str]:
        """Each dense layer's activation."""
        return [
            layer["activation"] for layer in self.layers if layer["kind"] == "dense"
        ]

    @property
    def dropout_units(self) -> list[tuple[int, float]]:
        """(values per sample, keep probability) of each dropout layer, in order."""
        out, width = [], self.spec_data["input"]
        for layer in self.layers:
            if layer["kind"] == "dense":
                width = layer["units"]
            elif layer["kind"] == "dropout":
                out.append((width, 1.0 - layer["p"]))
        return out

    @property
    def loss(self) -> str:
        return self.spec_data["loss"]["name"]

    @property
    def optimizer(self) -> str:
        return self.spec_data["optimizer"]["name"]

    @property
    def lr(self) -> float:
        return float(self.spec_data["optimizer"]["lr"])

    @property
    def batch_size(self) -> int:
        return int(self.spec_data["training"]["batch_size"])

    @property
    def shuffle(self) -> bool:
        return bool(self.spec_data["training"]["shuffle"])

    @property
    def seed(self) -> int:
        return int(self.spec_data["training"]["seed"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.spec_data.get("dtype", "float64"))

    @property
    def label(self) -> str:
        return f"{self.key} {self.title}"

    def make_data(self) -> tuple[np.ndarray, np.ndarray]:
        """(X, Y) as C-contiguous arrays of the spec's dtype; X of a CNN as
        images (n, C, H, W)."""
        if self.data == "images":
            X, Y = stroke_images(self.n_samples, self.data_seed, self.input_shape)
        else:
            X, Y = DATA[self.data](self.n_samples, self.data_seed)
        return (
            np.ascontiguousarray(X, dtype=self.dtype),
            np.ascontiguousarray(Y, dtype=self.dtype),
        )

    def per_epoch(self) -> int:
        """Throughput units in one epoch: samples, or steps for W1."""
        if self.unit == "steps/s":
            return -(-self.n_samples // self.batch_size)
        return self.n_samples


WORKLOADS = [
    Workload("W1", "xor 2-4-1", "w1_xor.toml", "xor", 4, 0, unit="steps/s"),
    Workload("W2", "circles 2-16-16-1", "w2_circles.toml", "circles", 1000, 2),
    Workload("W3", "tabular 64-128-128-10", "w3_tabular.toml", "tabular", 8192, 3),
    Workload(
        "W4", "mnist-like 784-256-256-10", "w4_mnist_like.toml", "mnist_like", 8192, 4
    ),
    Workload(
        "W5", "digits-like CNN 1x8x8", "w5_digits_cnn.toml", "digits_like", 2048, 5
    ),
    Workload("W6", "mnist-like CNN 1x28x28", "w6_mnist_cnn.toml", "mnist_cnn", 4096, 6),
    Workload(
        "W7",
        "tabular+BN+dropout 64-128-128-10",
        "w7_tabular_bn.toml",
        "tabular",
        8192,
        3,
    ),
]
BY_KEY = {w.key: w for w in WORKLOADS}


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """Rows of global epoch ``epoch`` when the NumPy, PyTorch and JAX runs shuffle.

    The generated module shuffles inside its jitted loop with Numba's generator,
    so its order differs; that changes no timing, and the loss check before
    timing runs unshuffled."""
    return np.random.default_rng((seed, epoch)).permutation(n)


REF_DIR_ENV = "DERIVE_BENCH_REF"  # where the derive worker leaves init params


def ref_file(workload: Workload) -> Path | None:
    """The .npz the derive worker writes for ``workload`` (init params, check run;
    a variant, such as W7 without dropout, has a file of its own)."""
    directory = os.environ.get(REF_DIR_ENV)
    return Path(directory) / f"{workload.spec_data['name']}.npz" if directory else None


def init_params(workload: Workload) -> list[np.ndarray]:
    """The shared initial weights: the generated module's ``init_params(0)``.

    Read from the derive worker's file when there is one, so the other workers
    need neither derive nor Numba in their process.
    """
    path = ref_file(workload)
    if path is not None and path.exists():
        with np.load(path) as saved:
            count = sum(1 for k in saved.files if k.startswith("init_"))
            return [saved[f"init_{i}"] for i in range(count)]
    import derive

    return derive.build(workload.spec()).init_params(INIT_SEED)


MASK_SEED = 7  # the fixed dropout masks of the agreement check


def fixed_masks(workload: Workload, rows: int) -> list[np.ndarray]:
    """Dropout masks drawn once with NumPy, one (rows, units) array of 0s and 1s
    per dropout layer: the agreement check injects the same ones into every
    implementation (row r of the data always gets row r of each mask)."""
    rng = np.random.default_rng(MASK_SEED)
    return [
        (rng.random((rows, units)) < keep).astype(workload.dtype)
        for units, keep in workload.dropout_units
    ]


def init_buffers(workload: Workload) -> list[np.ndarray]:
    """Fresh running statistics, [mean, var] per batch norm layer (0s and 1s, as
    torch's and the generated module's init_buffers())."""
    out, width = [], workload.spec_data["input"]
    for layer in workload.layers:
        if layer["kind"] == "dense":
            width = layer["units"]
        elif layer["kind"] == "batch_norm":
            out += [np.zeros(width, workload.dtype), np.ones(width, workload.dtype)]
    return out
