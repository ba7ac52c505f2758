"""Benchmark of issue 17: a sweep of the two-circles net on Dask against a plain
Python loop over ``derive.Network``.

    python bench/sweep.py              # prints a Markdown table; ~1 minute on 2 cores
    python bench/sweep.py --epochs 400 # trials long enough for the workers to matter
    (bench/run.py appends its output, a Markdown section, to results.md)

The grid: 3 architectures (8, 16, 32 hidden units) x 4 learning rates x 3 seeds
x 3 folds = 108 trials of examples/two_circles.toml (40 epochs) on the demo's
1000 points. Each way of running it (the loop; ``derive.sweep`` on a
LocalCluster of 1 and of 2 worker processes) runs in a fresh process, first
with an empty module cache (cold: deriving and Numba compiling included), then
again with that cache (warm). Every way must give the same rows (the digests of
the trained parameters), which is checked.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEC = HERE.parent / "examples" / "two_circles.toml"
GRID = {
    "layers.1.units": [8, 16, 32],
    "optimizer.lr": [0.1, 0.03, 0.01, 0.003],
    "training.seed": [0, 1, 2],
}
CV = 3
MODES = ("loop", "1 worker", "2 workers")


def run_mode(mode: str, epochs: int) -> dict:
    """One way of running the grid, in this process; its timings and digests."""
    import numpy as np

    import derive
    from derive.datasets import two_circles
    from derive.sweeps import cv_folds, expand_grid

    X, y = two_circles()
    data = derive.load_spec(SPEC).to_dict()
    data["training"]["epochs"] = epochs
    spec = derive.spec_from_dict(data)
    started = time.perf_counter()
    cluster_s = 0.0
    if mode == "loop":  # what a user writes today
        points = expand_grid(spec, GRID)
        folds = cv_folds(len(X), CV, labels=y, seed=0)
        digests = []
        for point in points:
            for fold in range(CV):
                train, val = folds != fold, folds == fold
                net = derive.Network(point.spec)
                try:
                    net.fit(X[train], y[train], validation_data=(X[val], y[val]))
                    net.score(X[val], y[val])
                except derive.DeriveError:  # diverged: a row like the sweep's
                    pass
                digests.append(_digest(np.concatenate([p.ravel() for p in net.params])))
        compiles = None
    else:
        import logging

        from dask.distributed import Client, LocalCluster

        # the cluster derive.sweep starts itself with workers=N, started here
        # to time it apart
        cluster = LocalCluster(
            n_workers=int(mode[0]), threads_per_worker=1, dashboard_address=":0",
            silence_logs=logging.ERROR,
        )  # fmt: skip
        client = Client(cluster)
        cluster_s = time.perf_counter() - started
        result = derive.sweep(spec, X, y, GRID, cv=CV, client=client, progress=False)
        client.close()
        cluster.close()
        digests = [
            r["params_digest"] for r in sorted(result.rows, key=lambda r: r["trial"])
        ]
        compiles = result.compiles
        compiles["retried"] = len(result.retried)
    return {
        "mode": mode,
        "seconds": time.perf_counter() - started,
        "cluster_s": cluster_s,
        "trials": len(digests),
        "digests": digests,
        "compiles": compiles,
    }


def _digest(values) -> str:
    import hashlib

    return hashlib.sha256(values.tobytes()).hexdigest()[:16]


def measure(epochs: int) -> dict:
    """Every mode cold then warm, each in its own process and cache."""
    runs = {}
    load_before = os.getloadavg()[0]
    for mode in MODES:
        cache = tempfile.mkdtemp(prefix="derive-bench-sweep-")
        env = dict(os.environ, DERIVE_CACHE_DIR=cache, PYTHONWARNINGS="ignore")
        try:
            for phase in ("cold", "warm"):
                started = time.perf_counter()
                out = subprocess.run(
                    [sys.executable, __file__, "--mode", mode, "--epochs", str(epochs)], env=env, check=True,
                    stdout=subprocess.PIPE, text=True, cwd=HERE.parent,
                )  # fmt: skip
                run = json.loads(out.stdout.strip().splitlines()[-1])
                run["process_s"] = time.perf_counter() - started
                runs[f"{mode}, {phase}"] = run
                print(f"{mode}, {phase}: {run['seconds']:.1f} s", file=sys.stderr)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    reference = runs["loop, cold"]["digests"]
    same = all(run["digests"] == reference for run in runs.values())
    return {
        "runs": runs,
        "same_rows": same,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "cores": os.cpu_count(),
        "epochs": epochs,
    }


def markdown(raw: dict) -> str:
    runs = raw["runs"]
    trials = runs["loop, cold"]["trials"]
    lines = [
        "",
        "## Sweep (issue 17)",
        "",
        f"`python bench/sweep.py`: {trials} trials (3 architectures x 4 learning "
        f"rates x 3 seeds x {CV} folds) of two_circles ({raw['epochs']} epochs, "
        "1000 points); "
        "each run in a fresh process, cold (empty module cache) then warm. "
        f"Load average before/after: {raw['load_before']:.1f} / "
        f"{raw['load_after']:.1f} on {raw['cores']} cores.",
        "",
        "| run | wall (s) | of it, cluster start (s) | process (s) | loop / run | "
        "compiles | cache loads | compile (s) | compiled in trials |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        phase = name.split(", ")[1]
        base = runs[f"loop, {phase}"]["seconds"]
        c = run["compiles"]
        cells = (
            ["-", "-", "-", "-"]
            if c is None
            else [
                c["compiles"],
                c["cache_loads"],
                f"{c['compile_s']:.1f}",
                c["trial_compiles"],
            ]  # fmt: skip
        )
        lines.append(
            f"| {name} | {run['seconds']:.1f} | {run['cluster_s']:.1f} | "
            f"{run['process_s']:.1f} | "
            f"{base / run['seconds']:.2f}x | " + " | ".join(map(str, cells)) + " |"
        )
    lines.append("")
    for phase in ("cold", "warm"):
        one, two = runs[f"1 worker, {phase}"], runs[f"2 workers, {phase}"]
        net = [r["seconds"] - r["cluster_s"] for r in (one, two)]
        lines.append(
            f"- {phase}: 2 workers vs 1: {one['seconds'] / two['seconds']:.2f}x "
            f"({net[0] / net[1]:.2f}x without the cluster start)"
        )
    lines.append(
        "- the same rows in every run (trained-parameter digests): "
        + ("yes" if raw["same_rows"] else "NO")
    )
    lines.append(
        "- the loop compiles each architecture once in its process too (the "
        "architecture-keyed cache); `wall` is the loop, or the LocalCluster's "
        "start plus the `derive.sweep` call; `process` adds starting Python and "
        "importing derive."
    )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument(
        "--epochs", type=int, default=40, help="epochs per trial (the spec's 40)"
    )
    args = parser.parse_args(argv)
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.epochs)))
        return
    raw = measure(args.epochs)
    print(markdown(raw))


if __name__ == "__main__":
    main()
