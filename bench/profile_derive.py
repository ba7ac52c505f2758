"""Where the generated module's training time goes, per workload (float32).

    python bench/profile_derive.py [W1,W3]

Times module.fit at two epoch counts to split a fit call into a per-call cost
(argument checks, copies, Python around the jitted loop) and a per-step cost,
then times the parts of one step in isolation with small Numba kernels: the
step's BLAS GEMMs (layers of >= 256 weights), the hidden activations, the
optimizer update over all parameters and the mini-batch row gather. "rest" is
the step time none of them explains (small-layer loops, bias, deltas, bias
gradients, loss). The last column is the hand-written Numba step of issue 6.
"""

from __future__ import annotations

import math
import os
import sys
import time

from harness import thread_env

for _key, _value in thread_env(2).items():
    os.environ.setdefault(_key, _value)

import numba  # noqa: E402
import numpy as np  # noqa: E402
from impl_derive import Trainer  # noqa: E402
from workloads import BY_KEY, WORKLOADS, init_params  # noqa: E402

from derive.codegen.lowering import uses_blas  # noqa: E402

HAND_WRITTEN = {"W1": 2.0e6, "W2": 1.98e6, "W3": 497e3, "W4": 101e3}  # issue 6


# Each kernel repeats its work `reps` times inside one jitted call, so the
# Python-to-Numba call (~1 us) is not counted.
@numba.njit
def _gemm(reps, a, b, out):
    for _ in range(reps):
        np.dot(a, b, out)


def _tanh_kernel(tanh):
    """The activation loop with the module's own tanh (its fast float32 one if
    it has one), else math.tanh."""

    @numba.njit
    def kernel(reps, z, a):
        for _ in range(reps):
            for i in range(z.shape[0]):
                for j in range(z.shape[1]):
                    a[i, j] = tanh(z[i, j])

    return kernel


@numba.njit
def _relu(reps, z, a):
    for _ in range(reps):
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                v = z[i, j]
                a[i, j] = v if v > 0.0 else 0.0


@numba.njit
def _adam(reps, theta, grad, m, v):
    for t in range(1, reps + 1):
        step_size = 1e-3 / (1.0 - 0.9**t)
        bias2_sqrt = math.sqrt(1.0 - 0.999**t)
        for k in range(theta.size):
            g = grad[k]
            first = 0.9 * m[k] + 0.1 * g
            second = 0.999 * v[k] + 0.001 * g * g
            m[k] = first
            v[k] = second
            theta[k] -= step_size * first / (math.sqrt(second) / bias2_sqrt + 1e-8)


@numba.njit
def _sgd(reps, theta, grad, m, v):
    for _ in range(reps):
        for k in range(theta.size):
            theta[k] -= 0.1 * grad[k]


@numba.njit
def _gather(reps, X_all, order, X):
    for rep in range(reps):
        start = (rep * X.shape[0]) % (X_all.shape[0] - X.shape[0] + 1)
        for r in range(X.shape[0]):
            row = order[start + r]
            for c in range(X.shape[1]):
                X[r, c] = X_all[row, c]


def _per_call(fn, *args, seconds: float = 0.05) -> float:
    """Seconds per repetition of a kernel, best of 5 runs of ~``seconds``."""
    fn(1, *args)
    reps = 1
    while True:
        start = time.perf_counter()
        fn(reps, *args)
        elapsed = time.perf_counter() - start
        if elapsed > seconds / 10:
            break
        reps *= 10
    reps = max(1, int(reps * seconds / elapsed))
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        fn(reps, *args)
        best = min(best, (time.perf_counter() - start) / reps)
    return best


@numba.njit
def _math_tanh(u):
    return math.tanh(u)


def fit_split(workload) -> tuple[float, float, object]:
    """(seconds per optimizer step inside fit, seconds per fit call around them,
    the module).

    The step time comes from fit calls of two epoch counts (so the per-call part
    cancels); the per-call part from fit calls of one step on one batch of rows.
    """
    X, Y = workload.make_data()
    params = init_params(workload)
    trainer = Trainer(workload, params, X, Y, shuffle=workload.shuffle)
    steps = -(-len(X) // workload.batch_size)
    small, large = (1, 20001) if steps == 1 else (1, 11 if len(X) > 2000 else 101)
    trainer.fit(small)
    times = {}
    for epochs in (small, large):
        times[epochs] = min(_fit_seconds(trainer, epochs) for _ in range(5))
    per_step = (times[large] - times[small]) / ((large - small) * steps)
    B = workload.batch_size
    one = Trainer(workload, params, X[:B], Y[:B], shuffle=workload.shuffle)
    one.fit(1)
    per_call = min(_fit_seconds(one, 1) for _ in range(50)) - per_step
    return per_step, per_call, trainer.module


def _fit_seconds(trainer, epochs: int) -> float:
    start = time.perf_counter()
    trainer.fit(epochs)
    return time.perf_counter() - start


def parts(workload, module) -> dict[str, float]:
    """Seconds per step of the step's parts, each timed alone."""
    B, sizes, acts = workload.batch_size, workload.sizes, workload.activations
    rng = np.random.default_rng(0)
    f32 = np.float32

    def arr(*shape):
        return rng.standard_normal(shape).astype(f32)

    gemm = 0.0
    for i in range(len(sizes) - 1):
        n_in, n_out = sizes[i], sizes[i + 1]
        if not uses_blas(n_in, n_out):
            continue
        W, a, d = arr(n_out, n_in), arr(B, n_in), arr(B, n_out)
        gemm += _per_call(_gemm, a, W.T, np.empty((B, n_out), f32))  # forward
        gemm += _per_call(_gemm, d.T, a, np.empty((n_out, n_in), f32))  # weight grad
        if i:
            gemm += _per_call(_gemm, d, W, np.empty((B, n_in), f32))  # input grad
    act = 0.0
    for units, name in zip(sizes[1:-1], acts[:-1], strict=True):
        z, a = arr(B, units), np.empty((B, units), f32)
        if name == "tanh":
            tanh = getattr(module, "_tanh_fast", None) or _math_tanh
            act += _per_call(_tanh_kernel(tanh), z, a)
        else:
            act += _per_call(_relu, z, a)
    P = sum(sizes[i] * sizes[i + 1] + sizes[i + 1] for i in range(len(sizes) - 1))
    theta, grad, m, v = arr(P), arr(P) * 1e-3, np.zeros(P, f32), np.ones(P, f32)
    update = _adam if workload.optimizer == "adam" else _sgd
    opt = _per_call(update, theta, grad, m, v)
    X_all = arr(workload.n_samples, sizes[0])
    order = rng.permutation(workload.n_samples)
    Xb = np.empty((min(B, workload.n_samples), sizes[0]), f32)
    gather = _per_call(_gather, X_all, order, Xb)
    return {"gemm": gemm, "activation": act, "optimizer": opt, "gather": gather}


def main() -> None:
    dense = [w.key for w in WORKLOADS if w.dense_only]  # W7: no split of BN/dropout
    keys = sys.argv[1].split(",") if len(sys.argv) > 1 else dense
    unknown = [key for key in keys if key not in BY_KEY]
    other = [key for key in keys if key in BY_KEY and key not in dense]
    if unknown or other:
        problem = (
            f"unknown workload(s) {', '.join(unknown)}"
            if unknown
            else f"{', '.join(other)} not dense (this split knows dense layers only)"
        )
        print(
            f"profile_derive.py: {problem}; choose from {','.join(dense)}",
            file=sys.stderr,
        )
        sys.exit(2)
    print(
        "microseconds per optimizer step (call: per fit call, outside the steps;\n"
        "act: the hidden activations (the module's _tanh_fast if any); optim: the\n"
        "optimizer written as the templates write it, float64 constants)"
    )
    print(
        f"{'':3} {'step':>8} {'call':>8} {'gemm':>7} {'act':>7} {'optim':>7} "
        f"{'gather':>7} {'rest':>7} {'hand-written step':>18}"
    )
    for key in keys:
        workload = BY_KEY[key]
        per_step, per_call, module = fit_split(workload)
        p = parts(workload, module)
        rest = per_step - sum(p.values())
        hand = workload.batch_size / HAND_WRITTEN[key]
        if workload.unit == "steps/s":
            hand = 1 / HAND_WRITTEN[key]
        print(
            f"{key:3} {per_step * 1e6:8.2f} {per_call * 1e6:8.0f} "
            f"{p['gemm'] * 1e6:7.2f} {p['activation'] * 1e6:7.2f} "
            f"{p['optimizer'] * 1e6:7.2f} {p['gather'] * 1e6:7.2f} {rest * 1e6:7.2f} "
            f"{hand * 1e6:18.2f}"
        )


if __name__ == "__main__":
    main()
