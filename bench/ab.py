"""A/B of generated training code: this checkout against another revision.

Generates each workload's module twice, with this checkout's derive and with the
derive of ``--base`` (a git revision, checked out in a temporary worktree and run
in a subprocess), imports both into one process and times ``fit`` on the same
data and parameters, alternating A and B for ``--rounds`` rounds so that both see
the same phases of a shared machine. Prints, per workload, the median throughput
of each and the median and spread of the per-round ratio new/base.

    python bench/ab.py --base 01490e3 [--workloads W1,W2,W3,W4] [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import thread_env  # noqa: E402
from workloads import BY_KEY, INIT_SEED  # noqa: E402

_GENERATE = """
import sys
import derive
from derive.generate import generate_source
sys.stdout.write(generate_source(derive.load_spec(sys.argv[1])))
"""


def _base_source(worktree: Path, spec_file: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(worktree)}
    out = subprocess.run(
        [sys.executable, "-c", _GENERATE, str(spec_file)],
        cwd=worktree, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout


def _import(source: str, name: str, folder: Path):
    from derive.generate import import_path

    path = folder / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    return import_path(path, name)


def _epochs_for(module, params, X, Y, batch_size, lr, target_s: float = 0.25) -> int:
    """Epochs per timing so that one fit call takes about target_s."""
    epochs = 1
    while True:
        start = time.perf_counter()
        module.fit([p.copy() for p in params], X, Y, epochs=epochs,
                   batch_size=batch_size, lr=lr, shuffle=False)  # fmt: skip
        if time.perf_counter() - start > target_s / 4 or epochs > 10**6:
            return max(
                1, int(epochs * target_s / max(time.perf_counter() - start, 1e-9))
            )
        epochs *= 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare with")
    parser.add_argument("--workloads", default="W1,W2,W3,W4")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    os.environ.update(thread_env(2))
    root = HERE.parent
    folder = Path(tempfile.mkdtemp(prefix="derive-ab-"))
    worktree = folder / "base"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(worktree), args.base],
                   cwd=root, check=True)  # fmt: skip
    os.environ["NUMBA_CACHE_DIR"] = str(folder / "numba")
    try:
        import derive
        from derive.generate import generate_source

        print(f"new: this checkout (derive {derive.__version__}); base: {args.base}")
        print(f"{'workload':30} {'unit':10} {'base':>9} {'new':>9} {'new/base':>9} "
              f"{'ratio min..max':>15}")  # fmt: skip
        for key in args.workloads.split(","):
            workload = BY_KEY[key]
            spec_file = HERE / workload.spec_file
            base = _import(_base_source(worktree, spec_file), f"ab_base_{key}", folder)
            new = _import(generate_source(workload.spec()), f"ab_new_{key}", folder)
            X, Y = (
                workload.data_arrays()
                if hasattr(workload, "data_arrays")
                else _data(workload)
            )
            X = np.ascontiguousarray(X, dtype=new.DTYPE)
            Y = np.ascontiguousarray(Y, dtype=new.DTYPE)
            params = new.init_params(INIT_SEED)
            batch, lr = workload.batch_size, workload.lr
            for module in (base, new):  # compile and warm up
                module.fit([p.copy() for p in params], X, Y, epochs=1, batch_size=batch,
                           lr=lr, shuffle=False)  # fmt: skip
            epochs = _epochs_for(new, params, X, Y, batch, lr)
            per_epoch = 1 if workload.unit == "steps/s" else X.shape[0]
            rates: dict[str, list[float]] = {"base": [], "new": []}
            for round_ in range(args.rounds):
                order = (("base", base), ("new", new)) if round_ % 2 == 0 else (
                    ("new", new), ("base", base))  # fmt: skip
                for name, module in order:
                    trained = [p.copy() for p in params]
                    start = time.perf_counter()
                    module.fit(trained, X, Y, epochs=epochs, batch_size=batch, lr=lr,
                               shuffle=False)  # fmt: skip
                    rates[name].append(
                        epochs * per_epoch / (time.perf_counter() - start)
                    )
            ratios = [n / b for n, b in zip(rates["new"], rates["base"], strict=True)]
            print(
                f"{workload.label:30} {workload.unit:10} "
                f"{_si(statistics.median(rates['base'])):>9} "
                f"{_si(statistics.median(rates['new'])):>9} "
                f"{statistics.median(ratios):>8.3f}x "
                f"{min(ratios):>7.2f}..{max(ratios):<6.2f}"
            )
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)],
                       cwd=root, check=False)  # fmt: skip


def _data(workload):
    from workloads import DATA

    return DATA[workload.data](workload.n_samples, workload.data_seed)


def _si(value: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


if __name__ == "__main__":
    main()
