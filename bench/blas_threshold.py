"""Loops vs BLAS per layer size: the measurement behind codemodel.BLAS_MIN_WEIGHTS.

Builds a width-w tanh network (w-w-w-1, batch 32) twice, once forcing explicit
loops and once forcing np.dot, and times one training epoch of 1024 rows.

    python bench/blas_threshold.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("DERIVE_CACHE_DIR", tempfile.mkdtemp(prefix="derive-bench-"))

import derive.codemodel as codemodel  # noqa: E402
from derive.generate import atomic_write, generate_source, import_path  # noqa: E402
from derive.spec import spec_from_dict  # noqa: E402


def build(width: int, blas: bool):
    spec = spec_from_dict(
        {
            "name": f"bench_{width}_{'blas' if blas else 'loops'}",
            "dtype": "float32",
            "input": width,
            "layers": [
                {"units": width, "activation": "tanh"},
                {"units": width, "activation": "tanh"},
                {"units": 1, "activation": "sigmoid"},
            ],
            "loss": {"name": "binary_cross_entropy"},
        }
    )
    codemodel.BLAS_MIN_WEIGHTS = 0 if blas else 10**12
    path = Path(os.environ["DERIVE_CACHE_DIR"]) / f"{spec.name}.py"
    atomic_write(path, generate_source(spec))  # lower() reads BLAS_MIN_WEIGHTS now
    return import_path(path)


def main() -> None:
    rng = np.random.default_rng(0)
    print(
        f"{'width':>6} {'weights/layer':>14} {'loops ms/epoch':>15} {'blas ms/epoch':>14}"
    )
    for width in (2, 4, 8, 16, 32, 64):
        X = rng.normal(size=(1024, width)).astype(np.float32)
        Y = (rng.uniform(size=(1024, 1)) > 0.5).astype(np.float32)
        times = []
        for blas in (False, True):
            module = build(width, blas)
            params = module.init_params(0)
            module.fit(params, X, Y, epochs=1, batch_size=32, lr=0.01)
            best = min(_timed(module, params, X, Y) for _ in range(5))
            times.append(best / 5 * 1e3)
        print(f"{width:>6} {width * width:>14} {times[0]:>15.3f} {times[1]:>14.3f}")


def _timed(module, params, X, Y) -> float:
    start = time.perf_counter()
    module.fit(params, X, Y, epochs=5, batch_size=32, lr=0.01)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
