"""Direct loops vs im2col + gemm per conv layer: the measurement behind
derive.codegen.lowering.uses_im2col (IM2COL_MIN_TAPS).

For each convolution shape, builds input -> conv2d (relu) -> flatten -> dense
(10, softmax) twice, once forcing direct loops and once im2col + gemm, and times
a training epoch of 1024 images (float32, batch 32 and 64, the minimum of 5
epochs after a warm-up). Taps are the weights per filter, C_in * k_h * k_w.

    python bench/conv_threshold.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("DERIVE_CACHE_DIR", tempfile.mkdtemp(prefix="derive-bench-"))

import derive.codegen.lowering as lowering  # noqa: E402
from derive.generate import atomic_write, generate_source, import_path  # noqa: E402
from derive.spec import spec_from_dict  # noqa: E402

#: (C_in, filters, kernel, image size, padding): W5's and W6's layers among them
SHAPES = [
    (1, 4, 1, 8, 0),
    (2, 4, 2, 8, 0),
    (4, 8, 1, 16, 0),
    (1, 8, 3, 8, 1),
    (1, 16, 3, 28, 0),
    (2, 8, 3, 16, 1),
    (4, 8, 3, 16, 1),
    (3, 16, 5, 16, 2),
    (8, 16, 3, 16, 1),
    (16, 32, 3, 13, 0),
    (32, 32, 3, 8, 1),
]


def build(shape: tuple[int, ...], im2col: bool):
    c, f, k, size, pad = shape
    spec = spec_from_dict(
        {
            "name": f"conv_{c}_{f}_{k}_{size}_{'im2col' if im2col else 'direct'}",
            "dtype": "float32",
            "input": [c, size, size],
            "layers": [
                {"kind": "conv2d", "filters": f, "kernel": k, "padding": pad,
                 "activation": "relu"},
                {"kind": "flatten"},
                {"units": 10, "activation": "softmax"},
            ],
            "loss": {"name": "cross_entropy"},
            "optimizer": {"name": "adam", "lr": 1e-3},
        }
    )  # fmt: skip
    lowering.IM2COL_MIN_TAPS = 0 if im2col else 10**12
    path = Path(os.environ["DERIVE_CACHE_DIR"]) / f"{spec.name}.py"
    atomic_write(path, generate_source(spec))
    return import_path(path)


def _timed(module, params, X, Y, batch_size) -> float:
    start = time.perf_counter()
    module.fit(params, X, Y, epochs=5, batch_size=batch_size)
    return (time.perf_counter() - start) / 5


def main() -> None:
    rng = np.random.default_rng(0)
    batch_sizes = (32, 64)
    print(f"{'':34} ms per epoch: direct / im2col at batch size")
    print(
        f"{'C_in filters k size':>22} {'taps':>6}"
        + "".join(f" {b:>17}" for b in batch_sizes)
    )
    for shape in SHAPES:
        c, f, k, size, _ = shape
        X = rng.normal(size=(1024, c, size, size)).astype(np.float32)
        Y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 1024)]
        modules = [build(shape, im2col) for im2col in (False, True)]
        cells = []
        for batch_size in batch_sizes:
            times = []
            for module in modules:
                params = module.init_params(0)
                module.fit(params, X, Y, epochs=1, batch_size=batch_size)
                times.append(
                    min(_timed(module, params, X, Y, batch_size) for _ in range(5))
                    * 1e3
                )
            cells.append(f"{times[0]:>8.2f}/{times[1]:<8.2f}")
        print(f"{c:>6} {f:>7} {k:>2} {size:>4} {c * k * k:>9} " + " ".join(cells))


if __name__ == "__main__":
    main()
