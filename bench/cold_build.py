"""Build time of a spec's module in this process: import derive, generate + import,
first fit call (Numba compile, or loading Numba's cache).

Run twice with the same, initially empty, cache directory: the first run is cold,
the second cached; a third with --variant builds another spec of the same
architecture (run.py does this with the W3 spec):

    export DERIVE_CACHE_DIR=$(mktemp -d)
    python bench/cold_build.py bench/w3_tabular.toml
    python bench/cold_build.py bench/w3_tabular.toml --json
    python bench/cold_build.py bench/w3_tabular.toml --variant

With --passes (an empty cache), the first fit's Numba compile split into its
passes, from Numba's own compile events (numba.core.event).
"""

import time

start = time.perf_counter()

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import derive  # noqa: E402

imported = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).with_name("w3_tabular.toml")
    parser.add_argument("spec", nargs="?", default=str(default))
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument(
        "--variant",
        action="store_true",
        help="build the spec under another name, lr and weight_decay (the same "
        "architecture: its kernels come from the cache if the spec was built)",
    )
    parser.add_argument(
        "--parts",
        action="store_true",
        help="time each stage of a cold build on its own (run with an empty "
        "cache): loading the spec (imports SymPy), the engine's and the "
        "lowering's imports (Numba), derivation, lowering, render, writing and "
        "importing the module, the first fit (compile)",
    )
    parser.add_argument(
        "--passes",
        action="store_true",
        help="the first fit's Numba compile split into compiler passes, from "
        "Numba's compile events (run with an empty cache): the time in each pass, "
        "in LLVM (the LLVM lock held) and in all",
    )
    args = parser.parse_args()
    if args.passes:
        passes(args.spec, args.json)
        return
    if args.parts:
        parts(args.spec, args.json)
        return

    t_spec = time.perf_counter()
    spec = derive.load_spec(args.spec)
    spec_s = time.perf_counter() - t_spec
    if args.variant:
        data = spec.to_dict()
        data["name"] = data["name"] + "_variant"
        data["optimizer"]["lr"] = data["optimizer"]["lr"] * 0.5
        data["optimizer"]["weight_decay"] = 0.01
        spec = derive.spec_from_dict(data)
    t0 = time.perf_counter()
    module = derive.build(spec)
    built = time.perf_counter()
    params = module.init_params(0)
    rng = np.random.default_rng(0)
    rows = 256
    X = rng.random((rows, module.N_INPUT)).astype(module.DTYPE)
    if module.N_OUTPUT == 1:
        Y = (rng.random((rows, 1)) < 0.5).astype(module.DTYPE)
    else:
        Y = np.eye(module.N_OUTPUT, dtype=module.DTYPE)[
            rng.integers(0, module.N_OUTPUT, rows)
        ]
    module.fit(params, X, Y, epochs=1)
    called = time.perf_counter()
    result = {
        "import_derive_s": imported - start,
        "load_spec_s": spec_s,
        "generate_import_s": built - t0,
        "first_call_s": called - built,
        "build_s": called - t0,  # generate + import + first compile
        "total_s": called - start,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"import derive {result['import_derive_s']:.2f}s, generate+import "
            f"{result['generate_import_s']:.2f}s, first fit call (compile or cache load) "
            f"{result['first_call_s']:.2f}s; build {result['build_s']:.2f}s, "
            f"total {result['total_s']:.2f}s"
        )


def parts(path: str, as_json: bool) -> None:
    """The stages of ``derive.build`` one by one, each timed (a cold cache)."""
    times = {}

    def timed(label, call):
        t = time.perf_counter()
        value = call()
        times[label] = time.perf_counter() - t
        return value

    spec = timed("load_spec_s", lambda: derive.load_spec(path))
    # load_spec has imported SymPy (ops and layer kinds are SymPy definitions)
    engine = timed(
        "import_engine_s", lambda: importlib.import_module("derive.engine.derivation")
    )
    # the lowering imports Numba (its printer reads the runtime helpers)
    codegen = timed(
        "import_codegen_s", lambda: importlib.import_module("derive.codegen.lowering")
    )
    derive_spec, lower = engine.derive, codegen.lower
    from derive import generate

    derivation = timed("derive_s", lambda: derive_spec(spec))
    code = timed("lower_s", lambda: lower(derivation))
    timed("render_s", lambda: generate.render_kernels(code))
    module = timed("build_module_s", lambda: derive.build(spec))  # writes, imports
    params = module.init_params(0)
    rng = np.random.default_rng(0)
    X = rng.random((256, module.N_INPUT)).astype(module.DTYPE)
    Y = np.eye(module.N_OUTPUT, dtype=module.DTYPE)[
        rng.integers(0, module.N_OUTPUT, 256)
    ]
    timed("first_fit_s", lambda: module.fit(params, X, Y, epochs=1))
    if as_json:
        print(json.dumps(times))
    else:
        for label, seconds in times.items():
            print(f"{label[:-2]:>14s} {seconds:.3f} s")
        print(f"{'sum':>14s} {sum(times.values()):.3f} s")


def passes(path: str, as_json: bool, top: int = 12) -> None:
    """The first fit's compile, pass by pass (Numba's compile events)."""
    from numba.core import event

    module = derive.build(derive.load_spec(path))
    params = module.init_params(0)
    rng = np.random.default_rng(0)
    X = rng.random((256, module.N_INPUT)).astype(module.DTYPE)
    Y = np.eye(module.N_OUTPUT, dtype=module.DTYPE)[
        rng.integers(0, module.N_OUTPUT, 256)
    ]
    totals: dict[str, float] = {}
    # timers count the outermost event of their kind only (nested compiles of
    # callees are inside their caller's), so each is wall time, not a sum
    timers = {
        "compile_s": event.install_timer("numba:compile", lambda s: None),
        "llvm_s": event.install_timer("numba:llvm_lock", lambda s: None),
    }
    t = time.perf_counter()
    with timers["compile_s"] as compile_timer, timers["llvm_s"] as llvm_timer:
        with event.install_recorder("numba:run_pass") as recorder:
            module.fit(params, X, Y, epochs=1)
    totals["first_fit_s"] = time.perf_counter() - t
    totals["compile_s"] = compile_timer.duration
    totals["llvm_s"] = llvm_timer.duration
    started: dict[int, float] = {}
    by_pass: dict[str, float] = {}
    for stamp, item in recorder.buffer:
        if item.is_start:
            started[id(item.data)] = stamp
        else:
            name = item.data["name"]
            by_pass[name] = by_pass.get(name, 0.0) + stamp - started.pop(id(item.data))
    ranked = sorted(by_pass.items(), key=lambda kv: -kv[1])[:top]
    if as_json:
        print(json.dumps({**totals, "passes": dict(ranked)}))
        return
    print(
        f"first fit {totals['first_fit_s']:.3f} s, of it Numba compiling "
        f"{totals['compile_s']:.3f} s, of that LLVM (lock held) {totals['llvm_s']:.3f} s"
    )
    print(f"the {len(ranked)} longest passes (each including what it compiles inside):")
    for name, seconds in ranked:
        print(f"  {seconds:7.3f} s  {name}")


if __name__ == "__main__":
    main()
