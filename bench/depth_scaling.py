"""Build and compile time against depth: 16 inputs, L tanh hidden layers of 32
units, a softmax head over 4 classes, Adam, float32 (issue 14's curve).

Each depth runs in a fresh process with an empty cache: ``derive.build``
(derivation, render, import) and then the first 1-epoch ``fit`` (Numba compiling
the training loop).

    python bench/depth_scaling.py                 # depths 1 2 4 8 16 32
    python bench/depth_scaling.py --depths 1,4,16 --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent

WORKER = textwrap.dedent(
    """
    import json, sys, time
    start = time.perf_counter()
    import numpy as np
    import derive
    depth = int(sys.argv[1])
    spec = derive.spec_from_dict({
        "name": f"deep{depth}", "dtype": "float32", "input": 16,
        "layers": [{"units": 32, "activation": "tanh"}] * depth
        + [{"units": 4, "activation": "softmax"}],
        "loss": {"name": "cross_entropy"},
        "optimizer": {"name": "adam", "lr": 1e-3},
        "training": {"epochs": 1, "batch_size": 32},
    })
    imported = time.perf_counter()
    module = derive.build(spec)
    built = time.perf_counter()
    rng = np.random.default_rng(0)
    X = rng.random((64, 16)).astype(np.float32)
    Y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 64)]
    module.fit(module.init_params(0), X, Y, epochs=1)
    fitted = time.perf_counter()
    print(json.dumps({"depth": depth, "import_s": imported - start,
                      "build_s": built - imported, "compile_fit_s": fitted - built}))
    """
)


def measure(depth: int) -> dict:
    """One depth in a fresh process with an empty module cache."""
    with tempfile.TemporaryDirectory(prefix="derive-depth-") as cache:
        env = {**os.environ, "DERIVE_CACHE_DIR": cache, "PYTHONWARNINGS": "ignore"}
        proc = subprocess.run(
            [sys.executable, "-c", WORKER, str(depth)],
            capture_output=True, text=True, env=env, timeout=1800, check=False,
        )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"depth {depth} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="1,2,4,8,16,32")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    rows = []
    for depth in (int(d) for d in args.depths.split(",")):
        row = measure(depth)
        rows.append(row)
        print(
            f"depth {depth:2d}: build {row['build_s']:.2f} s, "
            f"compile + first fit {row['compile_fit_s']:.2f} s",
            file=sys.stderr,
            flush=True,
        )
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
