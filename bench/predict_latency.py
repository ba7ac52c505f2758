"""Single-row predict latency of the trained W3 network (issue 14, the serving
case): derive against onnxruntime, PyTorch eager and plain NumPy on the same
weights.

W3 (bench/w3_tabular.toml) is trained for a few epochs on its data, so the
weights are realistic; then one row (C-contiguous, float32) is predicted over
and over, each call timed on its own: 10k calls per candidate, in rounds that
alternate the candidates (so a change in the machine's load reaches all of
them), after a warm-up. Every candidate's outputs are checked against derive's
on 64 single rows (to float32 rounding; labels exactly) before anything is
timed.

    python bench/predict_latency.py                    # the table
    python bench/predict_latency.py --calls 2000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from workloads import BY_KEY

HERE = Path(__file__).resolve().parent
EPOCHS = 3  # "trained": a few epochs of fit from the spec's initial weights
CHECK_ROWS = 64
RTOL, ATOL = 1e-5, 1e-6  # float32 rounding of sums in another order


def _activate(name: str, z: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(z, 0)
    if name == "tanh":
        return np.tanh(z)
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(f"predict_latency: no activation {name!r}")


def numpy_forward(params: list[np.ndarray], activations: list[str]) -> Callable:
    """The same forward as plain NumPy: x @ W.T + b and the activation, per layer."""
    layers = [
        (W.T.copy(), b, act)
        for W, b, act in zip(params[::2], params[1::2], activations, strict=True)
    ]

    def forward(x: np.ndarray) -> np.ndarray:
        for WT, b, act in layers:
            x = _activate(act, x @ WT + b)
        return x

    return forward


def candidates(net, x: np.ndarray, onnx_path: Path, activations: list[str]) -> dict:
    """name -> (what it returns, a function of one (1, inputs) row)."""
    import onnxruntime as ort
    import torch

    module, params = net.module, net.params
    out: dict[str, tuple[str, Callable]] = {
        "derive Network.predict": ("label", net.predict),
        "derive Network.predict_proba": ("proba", net.predict_proba),
        "derive module.predict(params, x)": (
            "proba",
            lambda row: module.predict(params, row),
        ),
    }
    # the jitted forward alone, buffers allocated once: the floor under derive's API
    buffers = module._buffers(1)
    views = [module._kernel_view(p) for p in params]
    forward = module._forward

    def kernel(row: np.ndarray) -> np.ndarray:
        forward(*views, row, *buffers)
        return buffers[module._OUTPUT_BUFFER].T

    out["derive jitted _forward (no checks)"] = ("proba", kernel)
    for threads in (1, 0):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        label = "1 thread" if threads == 1 else "default threads"
        out[f"onnxruntime ({label})"] = (
            "proba",
            lambda row, s=session: s.run(["Y"], {"X": row})[0],
        )
    torch.set_num_threads(1)
    model = net.to_torch()

    def torch_eager(row: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(row)).numpy()

    out["torch eager (1 thread, inference_mode)"] = ("proba", torch_eager)
    out["NumPy"] = ("proba", numpy_forward(params, activations))
    return out


def check(funcs: dict, net, X: np.ndarray) -> None:
    """Every candidate's outputs equal derive's batch outputs, row by row."""
    reference = net.outputs(X)
    labels = net.predict(X)
    for name, (kind, fn) in funcs.items():
        for r in range(X.shape[0]):
            got = np.asarray(fn(X[r : r + 1]))
            if kind == "label":
                ok = got.shape == (1,) and got[0] == labels[r]
            else:
                ok = got.shape == (1, reference.shape[1]) and np.allclose(
                    got, reference[r : r + 1], rtol=RTOL, atol=ATOL
                )
            if not ok:
                raise SystemExit(
                    f"predict_latency: {name} disagrees with derive on row {r}: "
                    f"{got} vs {labels[r] if kind == 'label' else reference[r]}"
                )


def time_calls(funcs: dict, x: np.ndarray, calls: int, rounds: int) -> dict:
    """Per-call times in microseconds, ``calls`` per candidate in ``rounds``
    alternating rounds, each round after a warm-up of its own."""
    per_round = -(-calls // rounds)
    times: dict[str, list[np.ndarray]] = {name: [] for name in funcs}
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, (_, fn) in funcs.items():
            for _ in range(200):
                fn(x)
            spent = np.empty(per_round, dtype=np.int64)
            for i in range(per_round):
                start = clock()
                fn(x)
                spent[i] = clock() - start
            times[name].append(spent)
    return {
        name: np.concatenate(parts)[:calls].astype(np.float64) / 1e3
        for name, parts in times.items()
    }


def measure(calls: int, rounds: int) -> dict:
    import onnxruntime
    import torch

    import derive

    workload = BY_KEY["W3"]
    X, Y = workload.make_data()
    net = derive.Network(workload.spec())
    net.fit(X, Y, epochs=EPOCHS)
    x = np.ascontiguousarray(X[:1])
    with tempfile.TemporaryDirectory(prefix="derive-latency-") as tmp:
        onnx_path = net.to_onnx(Path(tmp) / "w3.onnx")
        funcs = candidates(net, x, onnx_path, workload.activations)
        check(funcs, net, np.ascontiguousarray(X[:CHECK_ROWS]))
        load_before = os.getloadavg()
        times = time_calls(funcs, x, calls, rounds)
        load_after = os.getloadavg()
    return {
        "workload": f"{workload.label} ({'/'.join(workload.activations)}, "
        f"{workload.dtype}), {EPOCHS} epochs trained",
        "calls": calls,
        "rounds": rounds,
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in load_after],
        "versions": {
            "derive": derive.__version__,
            "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "rows": [
            {
                "name": name,
                "median_us": float(np.median(t)),
                "p99_us": float(np.percentile(t, 99)),
                "min_us": float(t.min()),
            }
            for name, t in times.items()
        ],
    }


def table_lines(result: dict, markdown: bool = False) -> list[str]:
    """The result as a text or Markdown table, with what it was measured at."""
    head = ("predict one row", "median µs", "p99 µs", "min µs")
    rows = [
        (r["name"], f"{r['median_us']:.1f}", f"{r['p99_us']:.1f}", f"{r['min_us']:.1f}")
        for r in result["rows"]
    ]
    load = ", ".join(f"{v:.2f}" for v in result["load_before"])
    note = (
        f"{result['workload']}; {result['calls']} calls each in {result['rounds']} "
        f"alternating rounds; load average before {load}, after "
        + ", ".join(f"{v:.2f}" for v in result["load_after"])
    )
    if markdown:
        return [
            "## Single-row predict latency (issue 14)",
            "",
            f"{note}. `python bench/predict_latency.py`; outputs checked against "
            "derive's before timing.",
            "",
            "| " + " | ".join(head) + " |",
            "|---|---|---|---|",
            *("| " + " | ".join(row) + " |" for row in rows),
            "",
        ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{head[0]:<{width}}  {head[1]:>9}  {head[2]:>7}  {head[3]:>7}"]
    lines += [f"{a:<{width}}  {b:>9}  {c:>7}  {d:>7}" for a, b, c, d in rows]
    return [*lines, note]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000, help="per candidate")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="also one JSON line")
    args = parser.parse_args()
    result = measure(args.calls, args.rounds)
    print("\n".join(table_lines(result)), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
