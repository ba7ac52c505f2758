"""Conv layer scaling view of issue 14: training throughput of one 3x3 conv2d
layer (C -> C channels, padding 1) + relu + flatten + dense 10 softmax head
(bench/conv_scaling.toml; cross-entropy, Adam, batch 32, float32, 2 threads) for
the generated module, PyTorch eager and JAX (epoch in one jit), over channels C
in {4, 8, 16, 32, 64} and image sizes {8, 16, 32}.

    python bench/conv_scaling.py                 # about 2-3 minutes
    python bench/conv_scaling.py --impls derive,pytorch --channels 4,16
    python bench/conv_scaling.py --report-only   # the chart from the last run

Writes bench/conv_scaling.png and prints a table. Each implementation runs in
its own process (as bench/run.py's workers), starting from the generated
module's init_params(0) on the same images. The epoch size per point is chosen
from the step's FLOPs so that derive's epoch takes ~0.1 s; a point's rate is
the median of 3 one-epoch fit calls after one warm-up call (JAX compiles there).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import IMPLS, THREADS, log, pin_threads, save_reference, thread_env
from workloads import REF_DIR_ENV, Workload, init_params

HERE = Path(__file__).resolve().parent
RAW = HERE / ".cache" / "conv_scaling.json"
CHANNELS = (4, 8, 16, 32, 64)
IMAGES = (8, 16, 32)
ORDER = ("derive", "pytorch", "jax")
LABELS = {"derive": "derive", "pytorch": "PyTorch eager", "jax": "JAX scan"}
BATCH = 32


def point(channels: int, image: int) -> Workload:
    """The workload of one point; samples per epoch from its FLOPs (about 0.1 s
    at 40 GFLOP/s), a multiple of the batch, 64 to 2048."""
    base = Workload("conv", f"conv {channels}x{image}", "conv_scaling.toml",
                    "images", BATCH, 14, overrides={"channels": channels,
                                                    "image": image})  # fmt: skip
    flops = sum(2 * m * k * n for _, m, k, n in base.step_products()) / BATCH
    n = int(min(2048, max(64, 4e9 / flops)) // BATCH * BATCH)
    return Workload(base.key, base.title, base.spec_file, base.data, n, 14,
                    overrides=base.overrides)  # fmt: skip


def worker(impl_name: str, points: list[tuple[int, int]], out: str) -> None:
    import importlib

    impl = importlib.import_module(IMPLS[impl_name])
    result = {"impl": impl_name, "version": impl.version(), "points": []}
    if result["version"] is None:
        Path(out).write_text(json.dumps(result), encoding="utf-8")
        return
    pin_threads(impl)
    for channels, image in points:
        workload = point(channels, image)
        try:
            X, Y = workload.make_data()
            params = init_params(workload)
            if impl_name == "derive":
                save_reference(workload, params)  # for the other workers
            trainer = impl.Trainer(workload, params, X, Y, shuffle=False)
            trainer.fit(1)  # warm-up: compilation
            times = []
            for _ in range(3):
                start = time.perf_counter()
                trainer.fit(1)
                times.append(time.perf_counter() - start)
            rate = len(X) / statistics.median(times)
            result["points"].append(
                {"channels": channels, "image": image, "rate": rate}
            )
            log(f"  {impl_name} C={channels} image={image}: {rate:,.0f} samples/s")
        except Exception as exc:  # a point that fails is left out of the chart
            log(f"  {impl_name} C={channels} image={image} failed: {exc!r}")
    Path(out).write_text(json.dumps(result), encoding="utf-8")


def run_workers(impls, points, threads: int) -> dict:
    env = dict(os.environ)
    env.update(thread_env(threads))
    env.setdefault("DERIVE_CACHE_DIR", str(HERE / ".cache"))
    env["PYTHONWARNINGS"] = "ignore"
    results = {}
    with tempfile.TemporaryDirectory(prefix="derive-conv-") as tmp:
        env[REF_DIR_ENV] = tmp
        spec = ",".join(f"{c}x{s}" for c, s in points)
        for impl in [i for i in ORDER if i in impls]:  # derive first: init params
            out = Path(tmp) / f"{impl}.json"
            log(f"{impl}:")
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", impl, "--points", spec,
                 "--out", str(out)],
                cwd=HERE.parent, env=env, timeout=1800,
            )  # fmt: skip
            if proc.returncode == 0 and out.exists():
                results[impl] = json.loads(out.read_text(encoding="utf-8"))
            else:
                log(f"  {impl} exited with {proc.returncode}")
    return results


def report(raw: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results, meta = raw["results"], raw["meta"]
    images = sorted({p["image"] for r in results.values() for p in r["points"]})
    channels = sorted({p["channels"] for r in results.values() for p in r["points"]})
    rate = {
        (impl, p["channels"], p["image"]): p["rate"]
        for impl, r in results.items()
        for p in r["points"]
    }
    head = f"{'C':>3} {'image':>5} " + "".join(f"{LABELS[i]:>15}" for i in ORDER)
    print(head + f"{'derive/torch':>14}{'derive/JAX':>12}")
    for image in images:
        for c in channels:
            cells = [rate.get((i, c, image)) for i in ORDER]
            text = "".join(f"{v:>15,.0f}" if v else f"{'-':>15}" for v in cells)
            ratios = [
                f"{cells[0] / v:.2f}x" if cells[0] and v else "-" for v in cells[1:]
            ]
            print(f"{c:>3} {image:>5} {text}{ratios[0]:>14}{ratios[1]:>12}")
    fig, axes = plt.subplots(1, len(images), figsize=(4 * len(images), 4), sharey=True)
    axes = [axes] if len(images) == 1 else list(axes)
    for ax, image in zip(axes, images, strict=True):
        for impl in ORDER:
            xs = [c for c in channels if (impl, c, image) in rate]
            if xs:
                ax.plot(xs, [rate[(impl, c, image)] for c in xs], marker="o",
                        label=LABELS[impl])  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xticks(channels, [str(c) for c in channels])
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_xlabel(f"channels C (C -> C), image {image}x{image}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("samples/s")
    fig.suptitle(
        "conv2d 3x3 (padding 1) + relu + flatten + dense 10 softmax, Adam, batch "
        f"{BATCH}, float32, {meta['threads']} threads; load {meta['load_before']} / "
        f"{meta['load_after']} (higher is better)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(HERE / "conv_scaling.png", dpi=120)
    plt.close(fig)
    print(f"wrote bench/conv_scaling.png ({meta['date']}, {meta['seconds']:.0f} s)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impls", default=",".join(ORDER))
    parser.add_argument("--channels", default=",".join(map(str, CHANNELS)))
    parser.add_argument("--images", default=",".join(map(str, IMAGES)))
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--worker", choices=ORDER, help=argparse.SUPPRESS)
    parser.add_argument("--points", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        points = [tuple(map(int, p.split("x"))) for p in args.points.split(",")]
        worker(args.worker, points, args.out)
        return
    if args.report_only:
        report(json.loads(RAW.read_text(encoding="utf-8")))
        return
    impls = [i for i in args.impls.split(",") if i]
    for name in impls:
        if name not in ORDER:
            parser.error(f"unknown implementation {name!r}; choose from {ORDER}")
    try:
        channels = [int(c) for c in args.channels.split(",")]
        images = [int(s) for s in args.images.split(",")]
    except ValueError:
        parser.error("--channels and --images take comma-separated integers")
    points = [(c, s) for s in images for c in channels]
    start = time.perf_counter()
    load_before = f"{os.getloadavg()[0]:.1f}"
    results = run_workers(impls, points, args.threads)
    meta = {
        "threads": args.threads,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": time.perf_counter() - start,
        "load_before": load_before,
        "load_after": f"{os.getloadavg()[0]:.1f}",
    }
    raw = {"results": results, "meta": meta}
    RAW.parent.mkdir(exist_ok=True)
    RAW.write_text(json.dumps(raw, indent=1), encoding="utf-8")
    report(raw)


if __name__ == "__main__":
    main()
