"""Benchmark of issue 6: the generated module against PyTorch eager, JAX (epoch in
one jit) and plain NumPy on four workloads (W1-W4), issue 14's CNNs (W5, W6) and
issue 13's W7 (batch norm and dropout), float32, 2 threads everywhere.

    python bench/run.py                 # full (~10 min): 2 rounds of 7 repeats, scaling view,
                                        # depth curve, then bench/sweep.py (issue 17, ~1 min)
    python bench/run.py --quick         # under 2.5 minutes, no scaling view
    python bench/run.py --quick --scaling --workloads W3,W4 --impls derive,jax
    python bench/run.py --threads 1     # when the cores are shared (see results.md)
    python bench/run.py --report-only   # redo table, results.md, charts from the last run

Prints one table and writes bench/results.md, bench/throughput.png and (with the
scaling view) bench/scaling.png. Every implementation runs in its own process
(harness.py); build time and peak memory are measured in fresh processes too.
Generated modules are cached in $DERIVE_CACHE_DIR, else bench/.cache.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from harness import CHECK_RTOL, IMPLS, THREADS, thread_env
from workloads import BY_KEY, REF_DIR_ENV, WORKLOADS

HERE = Path(__file__).resolve().parent
THREADS_USED = THREADS  # --threads
RAW = HERE / ".cache" / "results.json"  # the last run's measurements
REF_DIR = Path(tempfile.mkdtemp(prefix="derive-bench-ref-"))
ORDER = ["derive", "numpy", "pytorch", "jax"]
LABELS = {
    "derive": "derive",
    "numpy": "NumPy",
    "pytorch": "PyTorch eager",
    "jax": "JAX scan",
}
TARGETS = {  # derive / JAX-scan ratios of issue 6, the latest issue's where raised
    "W1": "≥5x JAX, ≥500x torch",
    "W2": "≥2x JAX",
    "W3": "≥1.3x JAX",
    "W4": "≥1.15x JAX, ≥90% GEMM",  # issue 14 (issue 6: ≥1x JAX, ≥75%)
    "W5": "≥3x JAX, ≥20x torch",  # issue 14
    "W6": "≥10x JAX, ≥2x torch, ≥40% GEMM",
    "W7": "report",  # issue 13 sets no target
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ processes
def bench_env(cache_dir: str | None = None) -> dict[str, str]:
    """Thread pinning, the module cache, and where the derive worker leaves the
    initial weights and reference losses for the other workers."""
    env = dict(os.environ)
    env.update(thread_env(THREADS_USED))
    env.setdefault("DERIVE_CACHE_DIR", str(HERE / ".cache"))
    if cache_dir is not None:
        env["DERIVE_CACHE_DIR"] = cache_dir
    env["PYTHONWARNINGS"] = "ignore"
    env[REF_DIR_ENV] = str(REF_DIR)
    return env


def run_script(args: list[str], env: dict[str, str], timeout: float) -> str:
    """Run a bench script with this Python; its stderr streams to ours."""
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=HERE.parent,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} exited with {proc.returncode}")
    return proc.stdout


def measure_builds() -> dict:
    """W3's build in a fresh process with an empty cache, then in a second one."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="derive-cold-") as cache:
        env = bench_env(cache)
        for label in ("cold", "cached"):
            text = run_script(
                ["bench/cold_build.py", "bench/w3_tabular.toml", "--json"], env, 600
            )
            out[label] = json.loads(text.strip().splitlines()[-1])
            log(f"  build W3 {label}: {out[label]['build_s']:.2f} s")
    return out


def measure_depths() -> list[dict] | None:
    """Build and first-fit time against depth (bench/depth_scaling.py), each depth
    in a fresh process with an empty cache."""
    try:
        text = run_script(["bench/depth_scaling.py", "--json"], bench_env(), 3600)
    except Exception as exc:
        log(f"depth scaling failed: {exc}")
        return None
    return json.loads(text.strip().splitlines()[-1])


def depth_lines(depths: list[dict] | None) -> list[str]:
    """The depth curve as a Markdown table with the cost of each added layer."""
    if not depths:
        return []
    out = [
        "## Build time against depth (issue 14)",
        "",
        "16 inputs, L tanh layers of 32 units, softmax over 4 classes, Adam, "
        "float32; each depth in a fresh process with an empty cache "
        "(`python bench/depth_scaling.py`). Target: 16 layers ready in < 6 s, "
        "the compile time per added layer constant.",
        "",
        "| hidden layers | build (derive, render, import) | compile + first fit "
        "| ready | compile per added layer |",
        "|---|---|---|---|---|",
    ]
    previous = None
    for row in depths:
        ready = row["build_s"] + row["compile_fit_s"]
        step = "-"
        if previous is not None:
            added = row["depth"] - previous["depth"]
            step = f"{(row['compile_fit_s'] - previous['compile_fit_s']) / added:.2f} s"
        out.append(
            f"| {row['depth']} | {row['build_s']:.2f} s | {row['compile_fit_s']:.2f} s "
            f"| {ready:.2f} s | {step} |"
        )
        previous = row
    return [*out, ""]


def measure_latency() -> list[str]:
    """Single-row predict latency of trained W3 (bench/predict_latency.py, its own
    process) as Markdown lines for results.md; [] if it failed."""
    try:
        text = run_script(["bench/predict_latency.py", "--json"], bench_env(), 900)
    except Exception as exc:
        log(f"predict latency failed: {exc}")
        return []
    from predict_latency import table_lines

    return table_lines(json.loads(text.strip().splitlines()[-1]), markdown=True)


def append_latency(lines: list[str]) -> None:
    """The latency table at the end of results.md, and on the console."""
    if lines:
        with (HERE / "results.md").open("a", encoding="utf-8") as handle:
            handle.write("\n" + "\n".join(lines))
        print("\n".join(lines))


def default_rounds(quick: bool) -> int:
    """Rounds without --rounds: 2 for a full run, 1 with --quick."""
    return 1 if quick else 2


def merge_round(first: dict, later: dict) -> dict:
    """Fold a later round's worker result for one implementation into the
    first round's (in place; returns it). Per workload: each round's median
    (``round_rates``), every repeat (``rates``) and, as ``rate``, the best
    round's median. The rounds run the implementations in alternating order
    (run.py's main), so a slow phase of the machine that falls on one
    implementation's round does not decide a ratio; every implementation gets
    the same rule. The GEMM probes (their bounds) and the float64 rates keep
    their faster round too."""
    if later.get("version") is None:
        return first
    if first.get("version") is None:
        return later
    for key, res in later["workloads"].items():
        if "rate" not in res:
            continue
        mine = first["workloads"].get(key)
        if mine is None or "rate" not in mine:
            first["workloads"][key] = {**res, "round_rates": [res["rate"]]}
            continue
        mine.setdefault("round_rates", [mine["rate"]]).append(res["rate"])
        check, again = mine.get("check"), res.get("check")
        if again and (not check or again["max_rel_diff"] > check["max_rel_diff"]):
            mine["check"] = again  # the worse agreement of the rounds
        mine["rates"] = mine["rates"] + res["rates"]
        if res["rate"] > mine["rate"]:
            mine.update(rate=res["rate"], epochs=res["epochs"], seconds=res["seconds"])
    for probe in ("gemm", "gemm_W6"):
        if probe in later and (
            probe not in first or later[probe]["bound"] > first[probe]["bound"]
        ):
            first[probe] = later[probe]
    for key, res in later.get("float64", {}).items():
        mine = first.setdefault("float64", {}).get(key)
        if mine is None or res["rate"] > mine["rate"]:
            first["float64"][key] = res
    return first


def run_worker(impl: str, quick: bool, scaling: bool, workloads: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="derive-bench-") as tmp:
        out = Path(tmp) / f"{impl}.json"
        args = ["bench/harness.py", impl, "--out", str(out), "--workloads", workloads]
        args += ["--quick"] * quick + ["--scaling"] * scaling
        try:
            run_script(args, bench_env(), 3600)
            return json.loads(out.read_text(encoding="utf-8"))
        except Exception as exc:
            return {"impl": impl, "version": None, "error": str(exc), "workloads": {}}


# -------------------------------------------------------------------- machine
def parallel_probe() -> dict:
    """Single-threaded GEMM rate alone, then of two copies running at once."""
    cmd = [sys.executable, str(HERE / "cpu_probe.py")]
    solo = float(subprocess.run(cmd, capture_output=True, text=True).stdout)
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in "ab"]
    pair = [float(p.communicate()[0]) for p in procs]
    return {"solo": solo, "pair": pair, "efficiency": sum(pair) / (2 * solo)}


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    flags = ""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        for line in info.splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                have = set(line.split(":", 1)[1].split())
                flags = " ".join(f for f in ("avx2", "fma", "avx512f") if f in have)
    except OSError:
        pass
    versions = []
    for package in ("numpy", "scipy", "numba", "torch", "jax", "jaxlib"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    return {
        "cpu": f"{cpu} ({flags or 'no AVX2/AVX-512 flags'})",
        "cores": str(os.cpu_count()),
        "threads": str(THREADS_USED),
        "python": platform.python_version(),
        "versions": ", ".join(versions),
        "derive": metadata.version("derive"),
        "blas": _blas(),
    }


def _blas() -> str:
    try:
        import numpy as np

        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"numpy: {blas.get('name')} {blas.get('version')}"
    except Exception:
        return "unknown"


# --------------------------------------------------------------------- report
def fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def cell(results: dict, impl: str, key: str) -> tuple[str, float | None]:
    if impl not in results:
        return "-", None
    res = results[impl]
    if res.get("version") is None:
        return (
            "not installed" if res.get("error") == "not installed" else "error"
        ), None
    w = res["workloads"].get(key)
    if w is None:
        return "-", None
    if "error" in w:
        return "error", None
    text = fmt_rate(w["rate"])
    if not w.get("check", {}).get("ok", True):
        text += " (MISMATCH)"
    return text, w["rate"]


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def table_rows(results: dict, keys: list[str]) -> list[list[str]]:
    header = [
        "workload",
        "unit",
        *(LABELS[i] for i in ORDER),
        "derive/JAX",
        "derive/torch",
        "target",
    ]
    rows = [header]
    for key in keys:
        w = BY_KEY[key]
        cells = {impl: cell(results, impl, key) for impl in ORDER}
        d = cells["derive"][1]
        rows.append(
            [
                w.label,
                w.unit,
                *(cells[i][0] for i in ORDER),
                ratio(d, cells["jax"][1]),
                ratio(d, cells["pytorch"][1]),
                TARGETS[key],
            ]
        )
    return rows


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        lines.append(
            "  ".join(
                v.ljust(widths[c]) if c < 2 else v.rjust(widths[c])
                for c, v in enumerate(row)
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def md_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def summary_lines(results: dict, builds: dict | None, memory: dict | None) -> list[str]:
    lines = []
    if builds:
        for label, what in (
            ("cold", "fresh process, empty cache"),
            ("cached", "second process"),
        ):
            b = builds[label]
            limit = "< 2.5 s" if label == "cold" else "< 0.5 s"  # issue 14
            lines.append(
                f"Build W3 {label} ({what}): generate+import {b['generate_import_s']:.2f} s"
                f" + first fit call {b['first_call_s']:.2f} s = {b['build_s']:.2f} s "
                f"(target {limit}); import derive {b['import_derive_s']:.2f} s before it"
            )
    if memory:
        m, mib = memory["W4"], 2.0**20
        lines.append(
            f"Peak memory of fit on W4: needs {m['needed_bytes'] / mib:.1f} MiB "
            f"(params + data + Adam state); fit adds {m['fit_extra_rss_bytes'] / mib:.1f}"
            f" MiB RSS, {m['fit_traced_peak_bytes'] / mib:.1f} MiB NumPy allocations: "
            f"{m['ratio']:.2f}x (target ≤ 1.5x)"
        )
        allocs = ", ".join(
            f"{k} {v['per_batch']:.1f}/batch + {v['per_call']:.0f}/call"
            + (" (in parts)" if v.get("parts", 1) > 1 else "")
            for k, v in memory["nrt_allocs"].items()
        )
        lines.append(f"Numba allocations inside fit: {allocs} (target 0/batch)")
        if any(v.get("parts", 1) > 1 for v in memory["nrt_allocs"].values()):
            lines.append(
                "A module in parts (runtime/parts.py) calls its jitted kernels from "
                "Python for each batch: its count per batch is the wrappers Numba "
                "makes for those calls' array arguments (7 per call, 3 calls), freed "
                "when each returns; its kernels allocate nothing"
            )
    d = results.get("derive", {})
    if "float64" in d:
        parts = []
        for key, res in d["float64"].items():
            f32 = d["workloads"].get(key, {}).get("rate")
            parts.append(
                f"{key} {fmt_rate(res['rate'])} vs {fmt_rate(f32)} "
                f"(float32 {ratio(f32, res['rate'])} faster)"
            )
        if parts:
            lines.append(
                "derive float64 vs float32: " + "; ".join(parts) + " (target ≤ 2.5x)"
            )
    if "gemm" in d and "W4" in d["workloads"]:
        g = d["gemm"]
        w4 = d["workloads"].get("W4", {}).get("rate")
        frac = f"{100 * w4 / g['bound']:.0f}%" if w4 else "-"
        lines.append(
            f"float32 GEMM on W4's step shapes: {g['gflops_numpy']:.0f} GFLOP/s "
            f"(NumPy np.dot), {g['gflops_numba']:.0f} GFLOP/s (Numba np.dot); "
            f"1024^3: {g['gflops_square_1024']:.0f} GFLOP/s. W4 step: "
            f"{g['flops_per_sample'] / 1e6:.2f} MFLOP/sample -> GEMM bound "
            f"{fmt_rate(g['bound'])} samples/s; derive at {frac} (target ≥ 90%)"
        )
    if "gemm_W6" in d:
        g = d["gemm_W6"]
        w6 = d["workloads"].get("W6", {}).get("rate")

        def share(bound):
            return f"{100 * w6 / bound:.0f}%" if w6 else "-"

        lines.append(
            f"float32 GEMM on W6's step products (im2col, feature-major): "
            f"{g['gflops_numpy']:.0f} GFLOP/s (NumPy np.dot), {g['gflops_numba']:.0f}"
            f" GFLOP/s (Numba np.dot); 1024^3: {g['gflops_square_1024']:.0f} GFLOP/s."
            f" W6 step: {g['flops_per_sample'] / 1e6:.2f} MFLOP/sample -> GEMM bound "
            f"{fmt_rate(g['bound'])} samples/s on those products, "
            f"{fmt_rate(g['bound_square'])} at the 1024^3 rate; derive at "
            f"{share(g['bound'])} and {share(g['bound_square'])} (target ≥ 40%)"
        )
    checks = [
        (impl, key, w["check"])
        for impl in ORDER
        for key, w in results.get(impl, {}).get("workloads", {}).items()
        if "check" in w
    ]
    if checks:
        worst = max(c[2]["max_rel_diff"] for c in checks)
        bad = [f"{i} {k}" for i, k, c in checks if not c["ok"]]
        lines.append(
            f"Loss check (shuffle off, first 5-6 steps, vs derive): max rel diff "
            f"{worst:.1e} (tolerance {CHECK_RTOL:g}); "
            + (f"MISMATCH: {', '.join(bad)}" if bad else "all agree")
        )
        parts = [(i, k, c["parts"]) for i, k, c in checks if "parts" in c]
        for key in sorted({k for _, k, _ in parts}):
            worst_of = {}
            for _, k, runs in parts:
                if k != key:
                    continue
                for run in runs.values():
                    for what, diff in run["diffs"].items():
                        worst_of[what] = max(worst_of.get(what, 0.0), diff)
            lines.append(
                f"{key} check, worst over the implementations: "
                + ", ".join(f"{what} {diff:.1e}" for what, diff in worst_of.items())
                + " (fit without dropout, then fixed dropout masks)"
            )
    return lines


def write_markdown(path, results, rows, lines, meta, scaling_drawn) -> None:
    info = meta["machine"]
    command = "python bench/run.py" + " --quick" * meta["quick"]
    rounds = meta.get("rounds", 1)  # runs before --rounds had one
    if rounds != default_rounds(meta["quick"]):
        command += f" --rounds {rounds}"
    if meta["threads"] != THREADS:
        command += f" --threads {meta['threads']}"
    out = [
        "# derive benchmark (issue 6; W5, W6: issue 14; W7: issue 13)",
        "",
        f"Generated by `{command}` on "
        f"{meta['date']} in {meta['seconds']:.0f} s. Load average before/after: "
        f"{meta['load_before']} / {meta['load_after']} (other processes share the cores).",
        "",
        "## Machine",
        "",
        f"- CPU: {info['cpu']}, {info['cores']} cores; {info['threads']} threads for "
        "everyone (OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS, XLA_FLAGS, torch.set_num_threads,"
        " CPU affinity)",
        f"- Python {info['python']}, derive {info['derive']}; {info['versions']}",
        f"- BLAS: {info['blas']}",
        f"- Parallel capacity: a single-threaded float32 GEMM runs at "
        f"{meta['probe']['solo']:.0f} GFLOP/s alone; two copies at once reach "
        f"{meta['probe']['efficiency']:.0%} of twice that before the run, "
        f"{meta['probe_after']['efficiency']:.0%} after"
        + (
            " (the cores were NOT all available: multi-threaded timings are "
            "unreliable; compare with `--threads 1`)"
            if min(meta["probe"]["efficiency"], meta["probe_after"]["efficiency"]) < 0.8
            else ""
        ),
        "",
        "## Throughput ("
        + (
            f"each implementation's best of {rounds} rounds, a round's figure being "
            "the median of its repeats after warm-up"
            if rounds > 1
            else "median of repeats after warm-up"
        )
        + "; float32)",
        "",
        md_table(rows),
        "",
        *[f"- {line}" for line in lines],
        "",
        "## Details",
        "",
        "| impl | workload | median | min .. max | round medians | epochs per repeat "
        "| repeats | check |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for impl in ORDER:
        for key, w in results.get(impl, {}).get("workloads", {}).items():
            if "rate" not in w:
                out.append(f"| {impl} | {key} | {w.get('error', '-')} | | | | | |")
                continue
            c = w.get("check")
            check = f"{c['max_rel_diff']:.1e} after {c['steps']} steps" if c else "ref"
            out.append(
                f"| {impl} | {key} | {fmt_rate(w['rate'])} | {fmt_rate(min(w['rates']))}"
                f" .. {fmt_rate(max(w['rates']))} | "
                + ", ".join(fmt_rate(r) for r in w.get("round_rates", [w["rate"]]))
                + f" | {w['epochs']} | {len(w['rates'])} | {check} |"
            )
    out += [
        "",
        "## Method",
        "",
        "- Each implementation runs in its own process (`bench/harness.py`), so no "
        "other library's thread pool runs next to it.",
        "- Same data (`bench/workloads.py`, fixed seeds) and initial weights (the "
        "generated module's `init_params(0)`) for all; shuffled epochs use the "
        "NumPy's `default_rng((seed, epoch)).permutation(n)` outside derive (derive "
        "shuffles inside its jitted loop; the unshuffled loss check comes first).",
        "- Before timing, a short run (shuffle off, first 3 batches x 2 epochs; W1: "
        "5 steps) of each implementation is compared with the generated module's: "
        "per-epoch losses and the full-data loss at the final parameters.",
        "- W7 (batch norm + dropout): the generated module's fit draws its dropout "
        "masks inside its jitted loop, so the check before timing has two runs: "
        "the variant with p = 0 through every implementation's training loop "
        "(epoch losses, running statistics, the full-data evaluation-mode loss "
        "after), and the workload itself with one set of masks drawn once with "
        "NumPy and injected everywhere (derive's side: its `loss_and_grad(masks=...)`"
        " and torch.optim's Adam rule in NumPy): the first batch's loss and every "
        "gradient, and the epoch losses. During timing each library draws its own "
        "masks (derive: Numba's generator in the loop; PyTorch: nn.Dropout; JAX: "
        "jax.random.bernoulli with a key split per step; NumPy: default_rng), so "
        "the runs train on different masks: the same work per step, not the same "
        "numbers. PyTorch: nn.BatchNorm1d + nn.Dropout; JAX: the running "
        "statistics in the scan's carry; NumPy: the textbook batch norm backward.",
        "- A timing is one `fit` call of a calibrated number of epochs (the first "
        "call at that count is a warm-up: Numba loads/compiles, JAX compiles one "
        "program per epoch count), repeated; a round's figure is the median.",
        "- Rounds (`--rounds`, 2 by default, 1 with --quick): every implementation's "
        "worker runs once per round, in the order derive, NumPy, PyTorch, JAX, then "
        "reversed, and the table shows each implementation's best round. This VM "
        "has phases of minutes in which two-thread BLAS runs at about half speed "
        "(seen here: W4 through derive at 62-69k samples/s in one phase, 126-130k "
        "minutes later with the same code), so one sequential pass can put one "
        "implementation in a slow phase and its peer in a fast one; the round "
        "medians in the details show how far the rounds differ.",
        "- PyTorch: nn.Linear + F.binary_cross_entropy_with_logits / F.cross_entropy, "
        "torch.optim defaults, loss.item() per batch. JAX: the whole fit call is one "
        "jit (lax.scan over epochs and batches), SGD/Adam written after torch.optim. "
        "NumPy: the same loop with array expressions.",
        "- GEMM bound: the W4 step's GEMMs (forward 2P, weight gradients 2P, input "
        "gradients 2P except the first layer) timed with preallocated outputs; "
        "bound = batch / time of those GEMMs. W6: the same three products per "
        "conv layer in im2col form (W (F, C k k) @ cols (C k k, H_out W_out "
        "batch)) and per dense layer, FLOPs counted from the layer shapes; also "
        "the bound at the 1024^3 GEMM rate.",
        "- W5, W6 (CNNs): PyTorch nn.Conv2d + nn.MaxPool2d + nn.Flatten; JAX "
        "lax.conv_general_dilated (NCHW/OIHW) + lax.reduce_window; NumPy im2col "
        "with sliding_window_view + tensordot, col2im and the pool's backward as "
        "loops over the taps. Images from `stroke_images` (per-class random "
        "strokes, shifted, noisy).",
        "- `python bench/profile_derive.py` splits the generated module's step time "
        "into GEMM, activation, optimizer, gather and the rest.",
    ]
    if scaling_drawn:
        out += ["", "![scaling](scaling.png)"]
    out += ["", "![throughput](throughput.png)", ""]
    path.write_text("\n".join(out), encoding="utf-8")


def plot_throughput(path: Path, results: dict, keys: list[str], threads: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.2
    for j, impl in enumerate(ORDER):
        values = [cell(results, impl, key)[1] or 0 for key in keys]
        xs = [i + (j - 1.5) * width for i in range(len(keys))]
        bars = ax.bar(xs, values, width, label=LABELS[impl])
        for bar, v in zip(bars, values, strict=True):
            if v:
                ax.annotate(
                    fmt_rate(v),
                    (bar.get_x() + width / 2, v),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    ax.set_yscale("log")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(
        [f"{BY_KEY[k].label}\n({BY_KEY[k].unit})" for k in keys], fontsize=8
    )
    ax.set_ylabel("throughput (log scale)")
    ax.set_title(f"Training throughput, float32, {threads} threads (higher is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_scaling(path: Path, results: dict) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    drawn = False
    for ax, axis, xlabel in (
        (axes[0], "batch", "batch size (hidden width 128)"),
        (axes[1], "width", "hidden width (batch 128)"),
    ):
        for impl in ("derive", "pytorch", "jax"):
            points = [
                p for p in results.get(impl, {}).get("scaling", []) if p["axis"] == axis
            ]
            if points:
                drawn = True
                ax.plot(
                    [p["value"] for p in points],
                    [p["rate"] for p in points],
                    marker="o",
                    label=LABELS[impl],
                )
        ax.set_xscale("log", base=2)
        values = sorted(
            {
                p["value"]
                for r in results.values()
                for p in r.get("scaling", [])
                if p["axis"] == axis
            }
        )
        ax.set_xticks(values, [str(v) for v in values])
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("samples/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("W3's shape (64-h-h-10 relu, softmax+CE, Adam), 8192 samples, float32")
    fig.tight_layout()
    if drawn:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


# ----------------------------------------------------------------------- main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="short timings (< 2.5 min)"
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="scaling view (always on without --quick)",
    )
    parser.add_argument("--impls", default=",".join(ORDER))
    parser.add_argument(
        "--threads", type=int, default=THREADS, help="threads for everyone (2)"
    )
    parser.add_argument("--workloads", default=",".join(w.key for w in WORKLOADS))
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="run every implementation this many times, in alternating order, and "
        "report each one's best round (default 2; 1 with --quick)",
    )
    parser.add_argument("--no-build", action="store_true", help="skip build times")
    parser.add_argument("--no-memory", action="store_true", help="skip peak memory")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help=f"rewrite the table, results.md and charts from {RAW.relative_to(HERE)}",
    )
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: give 1 or more rounds")
    if args.report_only:
        report(json.loads(RAW.read_text(encoding="utf-8")))
        return
    impls = [i for i in args.impls.split(",") if i]
    keys = [k for k in args.workloads.split(",") if k]
    for name in impls:
        if name not in IMPLS:
            parser.error(f"unknown implementation {name!r}; choose from {ORDER}")
    for key in keys:
        if key not in BY_KEY:
            parser.error(f"unknown workload {key!r}; choose from {list(BY_KEY)}")
    scaling = args.scaling or not args.quick
    global THREADS_USED
    THREADS_USED = args.threads

    start = time.perf_counter()
    load_before = f"{os.getloadavg()[0]:.1f}"
    probe = parallel_probe()
    log(
        f"parallel probe: 1 GEMM alone {probe['solo']:.0f} GFLOP/s, 2 at once "
        f"{probe['pair'][0]:.0f} + {probe['pair'][1]:.0f} ({probe['efficiency']:.0%})"
    )
    builds = None if args.no_build else measure_builds()
    depths = None if args.no_build or args.quick else measure_depths()
    results: dict = {}
    rounds = args.rounds if args.rounds is not None else default_rounds(args.quick)
    for number in range(rounds):
        # derive first in the first round: its worker writes the initial weights
        # and reference runs the others check against; later rounds alternate
        order = ORDER if number % 2 == 0 else ORDER[::-1]
        for impl in [i for i in order if i in impls]:
            log(
                f"{impl}:"
                + (f" (round {number + 1} of {rounds})" if rounds > 1 else "")
            )
            # the scaling view is drawn from the first round alone
            result = run_worker(
                impl, args.quick, scaling and number == 0, ",".join(keys)
            )
            if result.get("error"):
                log(f"  {impl}: {result['error']}")
            results[impl] = (
                merge_round(results[impl], result) if impl in results else result
            )
    memory = None
    if not args.no_memory:
        try:
            text = run_script(["bench/peak_memory.py", "--json"], bench_env(), 600)
            memory = json.loads(text.strip().splitlines()[-1])
        except Exception as exc:
            log(f"peak memory failed: {exc}")

    probe_after = parallel_probe()
    meta = {
        "probe": probe,
        "probe_after": probe_after,
        "quick": args.quick,
        "rounds": rounds,
        "scaling": scaling,
        "threads": args.threads,
        "keys": keys,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.perf_counter() - start,
        "load_before": load_before,
        "load_after": f"{os.getloadavg()[0]:.1f}",
        "machine": machine(),
    }
    raw = {
        "results": results, "builds": builds, "memory": memory, "meta": meta,
        "depths": depths,
    }  # fmt: skip
    raw["latency"] = measure_latency()
    RAW.parent.mkdir(exist_ok=True)
    RAW.write_text(json.dumps(raw, indent=1), encoding="utf-8")
    report(raw)
    if not args.quick:  # issue 17: bench/sweep.py's section, appended to results.md
        try:
            section = run_script(["bench/sweep.py"], bench_env(), 1200)
        except Exception as exc:
            section = f"\n## Sweep (issue 17)\n\nbench/sweep.py failed: {exc}\n"
        print(section)
        with open(HERE / "results.md", "a", encoding="utf-8") as fh:
            fh.write(section)


def report(raw: dict) -> None:
    """Print the table and write results.md and the charts from the raw results."""
    results, meta = raw["results"], raw["meta"]
    keys = meta["keys"]
    probe, probe_after = meta["probe"], meta["probe_after"]
    rows = table_rows(results, keys)
    lines = summary_lines(results, raw["builds"], raw["memory"])
    worst = min(probe["efficiency"], probe_after["efficiency"])
    lines.insert(
        0,
        "Parallel capacity (2 single-threaded GEMMs at once vs twice one alone): "
        f"{probe['efficiency']:.0%} before, {probe_after['efficiency']:.0%} after"
        + (
            " -- cores shared, multi-threaded timings unreliable" if worst < 0.8 else ""
        ),
    )
    print(text_table(rows))
    for line in lines:
        print(line)
    plot_throughput(HERE / "throughput.png", results, keys, meta["threads"])
    drawn = meta["scaling"] and plot_scaling(HERE / "scaling.png", results)
    write_markdown(HERE / "results.md", results, rows, lines, meta, drawn)
    extra = depth_lines(raw.get("depths"))
    if extra:
        with (HERE / "results.md").open("a", encoding="utf-8") as handle:
            handle.write("\n".join(extra))
        print("\n".join(extra[5:]))
    append_latency(raw.get("latency") or [])
    print(
        f"wrote bench/results.md, bench/throughput.png"
        f"{', bench/scaling.png' if drawn else ''} in {meta['seconds']:.0f} s"
    )


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(REF_DIR, ignore_errors=True)
