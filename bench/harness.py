"""One implementation's measurements, run in its own process by run.py.

    python bench/harness.py derive|numpy|pytorch|jax [--quick] [--scaling] --out F.json

Each implementation gets a fresh process so that no other library's thread pool
(PyTorch's OpenMP, XLA's Eigen pool, OpenBLAS) is alive or spinning next to it.
For every workload: check the loss after the first few steps against the generated
module's (shuffle off; W7 also with injected dropout masks), then warm up,
calibrate the epoch count to a target time and time >= 5 repeats; the median
throughput is reported. The derive worker also
measures the float32 GEMM rate, the GEMM bounds of W4 and W6 and float64
throughput.
"""

from __future__ import annotations

import os

THREADS = int(os.environ.get("DERIVE_BENCH_THREADS", "2"))  # run.py --threads


def thread_env(threads: int) -> dict[str, str]:
    """Environment that pins BLAS, OpenMP, Numba and XLA to ``threads`` threads;
    read when the libraries load, so set before any of them is imported."""
    n = str(threads)
    eigen = "true" if threads > 1 else "false"
    return {
        "DERIVE_BENCH_THREADS": n,
        "OMP_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "NUMBA_NUM_THREADS": n,
        "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen={eigen} "
        f"intra_op_parallelism_threads={n}",
    }


for _key, _value in thread_env(THREADS).items():
    os.environ.setdefault(_key, _value)

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import numpy as np  # noqa: E402
from workloads import (  # noqa: E402
    BY_KEY,
    WORKLOADS,
    fixed_masks,
    init_params,
    ref_file,
)

IMPLS = {
    "derive": "impl_derive",
    "numpy": "impl_numpy",
    "pytorch": "impl_torch",
    "jax": "impl_jax",
}
CHECK_RTOL = 2e-4  # float32: a few steps of different summation orders
SCALING_BATCHES = (16, 32, 64, 128, 256, 512, 1024)
SCALING_WIDTHS = (32, 64, 128, 256, 512, 1024)
SCALING_QUICK = ((16, 128, 1024), (32, 128, 1024))


_START = time.perf_counter()


def log(message: str) -> None:
    print(
        f"{time.perf_counter() - _START:6.1f}s {message}", file=sys.stderr, flush=True
    )


def pin_threads(impl_module) -> None:
    """Everyone gets the same 2 cores (the env vars above cover BLAS, OpenMP, Numba
    and XLA; PyTorch is told directly)."""
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[:THREADS]
        os.sched_setaffinity(0, cpus)
    if impl_module.NAME == "pytorch":
        import torch

        torch.set_num_threads(THREADS)


# ------------------------------------------------------------------ agreement
def check_run(workload, n: int) -> tuple[int, int]:
    """(rows, epochs) of the agreement run: 3 batches x 2 epochs; W1 5 steps."""
    rows = min(n, 3 * workload.batch_size)
    return rows, (5 if rows <= workload.batch_size else 2)


def agreement_runs(workload) -> list[tuple[str, object, bool]]:
    """(label, workload, fixed masks?) of the runs compared before timing.

    W1-W4: one run of ``fit``. With dropout (W7) the generated module's fit draws
    its own masks, so two runs: the variant without dropout through ``fit``
    (batch statistics, running statistics, the optimizer; p = 0), and the
    workload itself with the same fixed masks injected everywhere (the module's
    side: its ``loss_and_grad(masks=...)`` and torch.optim's rule in NumPy).
    """
    if not workload.dropout_units:
        return [("fit", workload, False)]
    return [
        ("fit without dropout", workload.variant(dropout=0.0), False),
        ("fixed dropout masks", workload, True),
    ]


def _masks_kwarg(workload, rows: int, masked: bool) -> dict:
    return {"masks": fixed_masks(workload, rows)} if masked else {}


def _buffers(trainer) -> list[np.ndarray]:
    """The running statistics (none for the dense trainers)."""
    return trainer.get_buffers() if hasattr(trainer, "get_buffers") else []


def reference(workload, params, X, Y, masked: bool = False) -> dict:
    """The generated module's agreement run: per-epoch losses, final params and
    running statistics; with fixed masks also the first batch's loss and
    gradients at the initial params."""
    import impl_derive

    rows, epochs = check_run(workload, len(X))
    kwargs = _masks_kwarg(workload, rows, masked)
    ref = impl_derive.Trainer(
        workload, params, X[:rows], Y[:rows], shuffle=False, **kwargs
    )
    out = {}
    if masked:
        B = workload.batch_size
        out["grad_loss"], out["grads"] = ref.loss_and_grad(
            X[:B], Y[:B], [m[:B] for m in kwargs["masks"]]
        )
    out.update(losses=ref.fit(epochs), final=ref.get_params(), buffers=_buffers(ref))
    return out


def save_reference(workload, params, ref: dict | None = None) -> None:
    path = ref_file(workload)
    if path is None or (ref is None and path.exists()):
        return
    arrays = {f"init_{i}": p for i, p in enumerate(params)}
    if ref is not None:
        arrays.update({f"final_{i}": p for i, p in enumerate(ref["final"])})
        arrays.update({f"buffer_{i}": b for i, b in enumerate(ref["buffers"])})
        arrays["losses"] = ref["losses"]
        if "grads" in ref:
            arrays.update({f"grad_{i}": g for i, g in enumerate(ref["grads"])})
            arrays["first_loss"] = np.float64(ref["grad_loss"])
    np.savez(path, **arrays)


def load_reference(workload) -> dict | None:
    path = ref_file(workload)
    if path is None or not path.exists():
        return None
    with np.load(path) as saved:
        if "losses" not in saved.files:
            return None

        def listed(prefix):
            count = sum(1 for k in saved.files if k.startswith(prefix))
            return [saved[f"{prefix}{i}"] for i in range(count)]

        out = {
            "losses": saved["losses"],
            "final": listed("final_"),
            "buffers": listed("buffer_"),
        }
        if "first_loss" in saved.files:
            out["grad_loss"], out["grads"] = float(saved["first_loss"]), listed("grad_")
        return out


def _rel(got, ref) -> float:
    """Largest elementwise relative difference (losses)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-6)))


def _rel_arrays(got, ref) -> float:
    """Largest difference per array relative to the array's largest entry
    (gradients, running statistics), over the arrays."""
    return max(
        (
            float(
                np.max(np.abs(np.asarray(g, np.float64) - r))
                / max(float(np.max(np.abs(r))), 1e-12)
            )
            for g, r in zip(got, ref, strict=True)
        ),
        default=0.0,
    )


def check_one(impl, workload, params, X, Y, masked: bool) -> dict:
    """One agreement run of ``impl`` against the generated module's (shuffle off).

    Compares the per-epoch losses of a short run on the first three batches (W1:
    five full-batch steps); after ``fit``, also the full-data loss (float64
    NumPy, evaluation mode) at the parameters and running statistics each
    implementation ends with, and the running statistics themselves; with fixed
    masks, the first batch's loss and gradients at the initial parameters.
    """
    import impl_numpy

    ref = load_reference(workload) or reference(workload, params, X, Y, masked)
    rows, epochs = check_run(workload, len(X))
    kwargs = _masks_kwarg(workload, rows, masked)
    got = impl.Trainer(workload, params, X[:rows], Y[:rows], shuffle=False, **kwargs)
    diffs = {}
    if masked:
        B = workload.batch_size
        fresh = impl.Trainer(
            workload, params, X[:rows], Y[:rows], shuffle=False, **kwargs
        )
        value, grads = fresh.loss_and_grad(
            X[:B], Y[:B], [m[:B] for m in kwargs["masks"]]
        )
        diffs["first loss"] = _rel(value, ref["grad_loss"])
        diffs["gradients"] = _rel_arrays(grads, ref["grads"])
    diffs["epoch losses"] = _rel(got.fit(epochs), ref["losses"])
    out = {"steps": epochs * -(-rows // workload.batch_size)}
    if not masked:  # the module's loss_and_grad leaves the running statistics
        ref_after = impl_numpy.mean_loss(workload, ref["final"], X, Y, ref["buffers"])
        got_after = impl_numpy.mean_loss(
            workload, got.get_params(), X, Y, _buffers(got)
        )
        diffs["loss after"] = _rel(got_after, ref_after)
        if ref["buffers"]:
            diffs["running statistics"] = _rel_arrays(_buffers(got), ref["buffers"])
        out.update(ref_loss=float(ref_after), loss=float(got_after))
    rel = max(diffs.values())
    return {"ok": bool(rel <= CHECK_RTOL), "max_rel_diff": rel, "diffs": diffs, **out}


def check(impl, workload, params, X, Y) -> dict:
    """Every agreement run of :func:`agreement_runs`; the worst difference decides.
    Before timing, so a mismatch is reported next to the throughput."""
    parts = {
        label: check_one(impl, run, params, X, Y, masked)
        for label, run, masked in agreement_runs(workload)
    }
    first = next(iter(parts.values()))
    worst = max(p["max_rel_diff"] for p in parts.values())
    result = {
        "ok": all(p["ok"] for p in parts.values()),
        "max_rel_diff": worst,
        "steps": first["steps"],
        "ref_loss": first["ref_loss"],
        "loss": first["loss"],
    }
    if len(parts) > 1:
        result["parts"] = parts
    return result


# --------------------------------------------------------------------- timing
def _timed(trainer, epochs: int) -> float:
    start = time.perf_counter()
    trainer.fit(epochs)
    return time.perf_counter() - start


def measure(trainer, per_epoch: int, target_s: float, repeats: int, e0: int) -> dict:
    """Median throughput of ``repeats`` timed fit calls of a calibrated epoch count.

    The first call at each epoch count is a warm-up (JIT compilation: JAX compiles
    one program per epoch count, the generated module once per process).
    """
    epochs = e0
    trainer.fit(epochs)
    elapsed = _timed(trainer, epochs)
    while elapsed < target_s / 20 and epochs < 10**7:
        epochs *= int(min(1000, max(10, target_s / 4 / max(elapsed, 1e-6))))
        trainer.fit(epochs)
        elapsed = _timed(trainer, epochs)
    calibrated = max(1, round(epochs * target_s / elapsed))
    times = []
    if calibrated == epochs:
        times.append(elapsed)  # already warm at this count: the first repeat
    else:
        epochs = calibrated
        trainer.fit(epochs)
    times += [_timed(trainer, epochs) for _ in range(repeats - len(times))]
    rates = [epochs * per_epoch / t for t in times]
    return {
        "rate": statistics.median(rates),
        "rates": rates,
        "epochs": epochs,
        "seconds": statistics.median(times),
    }


def run_workload(impl, workload, target_s, repeats, *, with_check=True) -> dict:
    X, Y = workload.make_data()
    params = init_params(workload)
    result: dict = {}
    if impl.NAME == "derive" and with_check:
        save_reference(workload, params)  # the initial params, for the others
        for _, run, masked in agreement_runs(workload):
            save_reference(run, params, reference(run, params, X, Y, masked))
    elif with_check:
        result["check"] = check(impl, workload, params, X, Y)
    trainer = impl.Trainer(workload, params, X, Y, shuffle=workload.shuffle)
    e0 = 10 if workload.unit == "steps/s" else 1
    result.update(measure(trainer, workload.per_epoch(), target_s, repeats, e0))
    return result


# ----------------------------------------------------------------------- GEMM
def _numba_dot():
    """``gemm(a, b, out)``: Numba's np.dot (SciPy's BLAS, what the generated
    modules call)."""
    import numba

    @numba.njit
    def numba_gemm(a, b, out):
        np.dot(a, b, out)

    return numba_gemm


def _step_rate(step, flops: float, repeats: int, inner: int) -> float:
    """FLOP/s of ``step`` (``flops`` per call): the median over ``repeats`` of
    ``inner`` calls, after one warm-up call."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            step()
        times.append((time.perf_counter() - start) / inner)
    return flops / statistics.median(times)


def _square_rate() -> float:
    """FLOP/s of NumPy's float32 1024^3 GEMM (10 calls after a warm-up)."""
    square = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    out = np.empty_like(square)
    np.dot(square, square, out=out)
    start = time.perf_counter()
    for _ in range(10):
        np.dot(square, square, out=out)
    return 10 * 2 * 1024**3 / (time.perf_counter() - start)


def gemm_probe(workload, repeats: int) -> dict:
    """float32 GEMM rate on the GEMMs of one training step of ``workload``.

    Times the step's actual products (forward 2P, weight gradients 2P, input
    gradients 2P except the first layer; P = weights) with preallocated outputs,
    through NumPy's np.dot and through Numba's np.dot (SciPy's BLAS, what the
    generated module calls). The GEMM bound is batch / (time of those products).
    """

    B, sizes = workload.batch_size, workload.sizes
    rng = np.random.default_rng(0)

    def arr(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    Ws = [arr(sizes[i + 1], sizes[i]) for i in range(len(sizes) - 1)]
    acts = [arr(B, s) for s in sizes]  # a0 = X, a1, ...
    deltas = [arr(B, s) for s in sizes[1:]]
    grads = [np.empty_like(W) for W in Ws]
    backs = [np.empty((B, s), np.float32) for s in sizes[:-1]]
    zs = [np.empty((B, s), np.float32) for s in sizes[1:]]
    P = sum(W.size for W in Ws)
    flops = 2 * B * (P + P + (P - Ws[0].size))

    def numpy_step():
        for i, W in enumerate(Ws):
            np.dot(acts[i], W.T, out=zs[i])
            np.dot(deltas[i].T, acts[i], out=grads[i])
            if i:
                np.dot(deltas[i], W, out=backs[i])

    numba_gemm = _numba_dot()

    def numba_step():
        for i, W in enumerate(Ws):
            numba_gemm(acts[i], W.T, zs[i])
            numba_gemm(deltas[i].T, acts[i], grads[i])
            if i:
                numba_gemm(deltas[i], W, backs[i])

    square_rate = _square_rate()
    rate_numpy = _step_rate(numpy_step, flops, repeats, inner=20)
    rate_numba = _step_rate(numba_step, flops, repeats, inner=20)
    rate = max(rate_numpy, rate_numba)
    return {
        "weights": P,
        "flops_per_sample": flops / B,
        "gflops_numpy": rate_numpy / 1e9,
        "gflops_numba": rate_numba / 1e9,
        "gflops_square_1024": square_rate / 1e9,
        "bound": rate / (flops / B),  # samples/s at the faster of the two
    }


def products_probe(workload, repeats: int) -> dict:
    """float32 GEMM rate on the matrix products of one training step of a CNN
    (``workload.step_products()``: each conv layer's im2col products and each
    dense layer's, feature-major as the generated module lays them out: the
    forward W @ cols, the weight gradient dz @ cols^T, the input gradient
    W^T @ dz), with preallocated outputs, through NumPy's and Numba's np.dot.
    The GEMM bound is batch / (time of those products) at the faster of the
    two; ``bound_square`` is the bound at the 1024^3 rate instead (the
    products' FLOPs at a large square GEMM's speed)."""

    rng = np.random.default_rng(0)

    def arr(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    calls = []
    for what, M, K, N in workload.step_products():
        if what.endswith("weight gradient"):  # dz (M, K) @ cols^T: cols stored (N, K)
            a, b = arr(M, K), arr(N, K).T
        elif what.endswith("input gradient"):  # W^T @ dz: W stored (K, M)
            a, b = arr(K, M).T, arr(K, N)
        else:  # W (M, K) @ cols (K, N)
            a, b = arr(M, K), arr(K, N)
        calls.append((a, b, np.empty((M, N), np.float32)))
    flops = sum(2 * M * K * N for _, M, K, N in workload.step_products())

    numba_gemm = _numba_dot()

    def numpy_step():
        for a, b, out in calls:
            np.dot(a, b, out=out)

    def numba_step():
        for a, b, out in calls:
            numba_gemm(a, b, out)

    square_rate = _square_rate()
    rate_numpy = _step_rate(numpy_step, flops, repeats, inner=5)
    rate_numba = _step_rate(numba_step, flops, repeats, inner=5)
    per_sample = flops / workload.batch_size
    return {
        "flops_per_sample": per_sample,
        "gflops_numpy": rate_numpy / 1e9,
        "gflops_numba": rate_numba / 1e9,
        "gflops_square_1024": square_rate / 1e9,
        "bound": max(rate_numpy, rate_numba) / per_sample,
        "bound_square": square_rate / per_sample,
    }


# -------------------------------------------------------------------- scaling
def scaling(impl, quick: bool, target_s: float, repeats: int) -> list[dict]:
    """Throughput of W3's shape over batch size (width 128) and hidden width
    (batch 128)."""
    base = BY_KEY["W3"]
    batches, widths = SCALING_QUICK if quick else (SCALING_BATCHES, SCALING_WIDTHS)
    points = [("batch", b, base, b) for b in batches]
    points += [("width", w, base.variant(hidden=w), None) for w in widths]
    X, Y = base.make_data()
    out = []
    for axis, value, workload, batch in points:
        try:
            params = init_params(workload)
            if impl.NAME == "derive":
                save_reference(workload, params)
            trainer = impl.Trainer(
                workload, params, X, Y, shuffle=False, batch_size=batch
            )
            res = measure(trainer, len(X), target_s, repeats, 1)
            out.append({"axis": axis, "value": value, "rate": res["rate"]})
            log(f"  scaling {impl.NAME} {axis}={value}: {res['rate']:,.0f} samples/s")
        except Exception as exc:  # a point that fails is left out of the chart
            log(f"  scaling {impl.NAME} {axis}={value} failed: {exc!r}")
    return out


# ----------------------------------------------------------------------- main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("impl", choices=sorted(IMPLS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--scaling", action="store_true")
    parser.add_argument("--workloads", default=",".join(w.key for w in WORKLOADS))
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    impl = importlib.import_module(IMPLS[args.impl])
    result: dict = {"impl": impl.NAME, "version": impl.version(), "workloads": {}}
    if result["version"] is None:
        result["error"] = "not installed"
        _write(args.out, result)
        return
    pin_threads(impl)
    target_s, repeats = (0.08, 5) if args.quick else (0.5, 7)
    keys = args.workloads.split(",")
    for key in keys:
        workload = BY_KEY[key]
        try:
            res = run_workload(impl, workload, target_s, repeats)
        except Exception as exc:
            traceback.print_exc()
            res = {"error": f"{type(exc).__name__}: {exc}"}
        result["workloads"][key] = res
        if "rate" in res:
            flag = "" if res.get("check", {}).get("ok", True) else "  CHECK FAILED"
            log(
                f"  {impl.NAME} {workload.label}: {res['rate']:,.0f} {workload.unit}{flag}"
            )
        else:
            log(f"  {impl.NAME} {workload.label}: {res['error']}")
    if impl.NAME == "derive":
        try:
            result["gemm"] = gemm_probe(BY_KEY["W4"], repeats)
            log(f"  GEMM W4 step: {result['gemm']['gflops_numba']:.0f} GFLOP/s (Numba)")
            if "W6" in keys:
                result["gemm_W6"] = products_probe(BY_KEY["W6"], repeats)
                log(
                    f"  GEMM W6 step: {result['gemm_W6']['gflops_numba']:.0f} "
                    "GFLOP/s (Numba)"
                )
            result["float64"] = {}
            for key in [k for k in ("W3", "W4") if k in keys]:
                workload = BY_KEY[key].variant(dtype="float64")
                res = run_workload(impl, workload, target_s, repeats, with_check=False)
                result["float64"][key] = res
                log(f"  derive float64 {workload.label}: {res['rate']:,.0f} samples/s")
        except Exception:
            traceback.print_exc()
    if args.scaling and impl.NAME in ("derive", "pytorch", "jax"):
        result["scaling"] = scaling(impl, args.quick, target_s / 2, 5)
    _write(args.out, result)


def _write(path: str, result: dict) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
