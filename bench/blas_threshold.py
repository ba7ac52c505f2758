"""Loops vs BLAS per layer size: the measurement behind derive.codegen.lowering.uses_blas.

Builds a width-w tanh network (w-w-w-1) twice, once forcing explicit loops and
once forcing BLAS gemm, and times one training epoch of 1024 rows at batch sizes 32
and 128.

    python bench/blas_threshold.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("DERIVE_CACHE_DIR", tempfile.mkdtemp(prefix="derive-bench-"))

import derive.codegen.lowering as codemodel  # noqa: E402
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
    codemodel.LOOPS_MAX_INPUTS = 0 if blas else 10**12
    path = Path(os.environ["DERIVE_CACHE_DIR"]) / f"{spec.name}.py"
    atomic_write(path, generate_source(spec))  # lower() reads both now
    return import_path(path)


def main() -> None:
    rng = np.random.default_rng(0)
    batch_sizes = (32, 128)
    print(f"{'':21} ms per epoch: loops / blas at batch size")
    print(
        f"{'width':>6} {'weights/layer':>14}"
        + "".join(f" {b:>17}" for b in batch_sizes)
    )
    for width in (4, 8, 16, 24, 32, 48, 64, 128):
        X = rng.normal(size=(1024, width)).astype(np.float32)
        Y = (rng.uniform(size=(1024, 1)) > 0.5).astype(np.float32)
        modules = [build(width, blas) for blas in (False, True)]
        cells = []
        for batch_size in batch_sizes:
            times = []
            for module in modules:
                params = module.init_params(0)
                module.fit(params, X, Y, epochs=1, batch_size=batch_size, lr=0.01)
                runs = [_timed(module, params, X, Y, batch_size) for _ in range(5)]
                times.append(min(runs) / 5 * 1e3)
            cells.append(f"{times[0]:>8.3f}/{times[1]:<8.3f}")
        print(f"{width:>6} {width * width:>14} " + " ".join(cells))


def _timed(module, params, X, Y, batch_size) -> float:
    start = time.perf_counter()
    module.fit(params, X, Y, epochs=5, batch_size=batch_size, lr=0.01)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
