"""Peak memory of the generated module's fit, and Numba allocations per batch.

    python bench/peak_memory.py [--json]

For W4: the process's peak RSS (VmHWM, reset through /proc/self/clear_refs just
before fit) above its RSS before fit, next to what training needs at least:
params + X + Y + optimizer state. tracemalloc's peak adds what fit allocates
through NumPy (work buffers, copies). For every workload: the number of
allocations Numba's runtime makes inside the jitted code during one epoch, per
mini-batch (0 means no allocation per batch) and per fit call.
"""

import os

os.environ["NUMBA_NRT_STATS"] = "1"  # before numba is imported

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import tracemalloc  # noqa: E402

from impl_derive import Trainer  # noqa: E402
from numba.core.runtime import rtsys  # noqa: E402
from workloads import BY_KEY, WORKLOADS, init_params  # noqa: E402


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def nrt_allocations(workload) -> dict:
    """Numba runtime allocations of a fit call: per mini-batch and per call.

    Compares fit(1 epoch) with fit(3 epochs), so allocations made once per call
    (the per-epoch history, shuffled orders) are not counted as per batch.
    """
    X, Y = workload.make_data()
    trainer = Trainer(workload, init_params(workload), X, Y, shuffle=workload.shuffle)
    trainer.fit(1)  # compile / load the cache
    counts = []
    for epochs in (1, 3):
        before = rtsys.get_allocation_stats().alloc
        trainer.fit(epochs)
        counts.append(rtsys.get_allocation_stats().alloc - before)
    batches = -(-len(X) // workload.batch_size)
    per_batch = (counts[1] - counts[0]) / (2 * batches)
    return {
        "per_batch": per_batch,
        "per_call": counts[0] - per_batch * batches,
        # a module in parts calls its kernels from Python for every batch
        # (runtime/parts.py): Numba wraps each array argument of a call in a
        # meminfo (an NRT allocation), freed when the call returns
        "parts": int(trainer.module._TRAIN_PARTS),
    }


def peak_memory(workload) -> dict:
    X, Y = workload.make_data()
    params = init_params(workload)
    trainer = Trainer(workload, params, X, Y, shuffle=workload.shuffle)
    trainer.fit(1)  # warm-up: compile / load the cache, allocate once
    needed = (
        sum(p.nbytes for p in trainer.params)
        + trainer.X.nbytes
        + trainer.Y.nbytes
        + sum(b.nbytes for b in trainer.state["buffers"])
    )
    gc.collect()
    rss_before = _status_kb("VmRSS") * 1024
    reset = _reset_peak()
    hwm_before = _status_kb("VmHWM") * 1024
    tracemalloc.start()
    trainer.fit(1)
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    hwm = _status_kb("VmHWM") * 1024
    extra = max(hwm - max(rss_before, hwm_before if reset else 0), 0)
    return {
        "needed_bytes": needed,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": hwm,
        "fit_extra_rss_bytes": extra,
        "fit_traced_peak_bytes": traced_peak,
        "peak_reset": reset,
        "ratio": (needed + max(extra, traced_peak)) / needed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    result = {
        "W4": peak_memory(BY_KEY["W4"]),
        "nrt_allocs": {w.key: nrt_allocations(w) for w in WORKLOADS},
    }
    if args.json:
        print(json.dumps(result))
        return
    w4 = result["W4"]
    mib = 2.0**20
    print(
        f"W4 fit: needs {w4['needed_bytes'] / mib:.1f} MiB (params + data + optimizer "
        f"state); peak RSS +{w4['fit_extra_rss_bytes'] / mib:.1f} MiB during fit, "
        f"NumPy allocations peak {w4['fit_traced_peak_bytes'] / mib:.1f} MiB: "
        f"{w4['ratio']:.2f}x"
    )
    for key, allocs in result["nrt_allocs"].items():
        print(
            f"{key}: Numba allocations {allocs['per_batch']:.1f} per batch, "
            f"{allocs['per_call']:.0f} per fit call"
        )


if __name__ == "__main__":
    main()
