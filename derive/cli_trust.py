"""The inspection commands of ``derive``: check, diff, report.

``derive check SPEC_OR_MODULE`` runs a module's gradient self-test;
``derive diff A.toml B.toml`` prints which derivations differ;
``derive report SPEC -o FILE`` writes the whole derivation as a notebook,
Markdown or LaTeX document. :func:`add_parsers` adds them to the CLI's
subcommands and returns their handlers; :mod:`derive.cli` does the rest
(errors as one message and exit code 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from .errors import DeriveError

Handler = Callable[[argparse.Namespace], int]


def add_parsers(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    """Add check, diff and report to ``sub``; returns their handlers by name."""
    from .cli import _add_data_arguments, _positive_int, _row_number

    p = sub.add_parser(
        "check",
        help="check a module's derived gradients against finite differences "
        "(exit 0 if they pass, 1 if not)",
    )
    p.add_argument(
        "target", type=Path, help="a spec (.toml) or a generated module (.py)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random point")
    p.add_argument(
        "--samples",
        type=_positive_int,
        default=100,
        help="most entries checked per parameter (default 100)",
    )

    p = sub.add_parser(
        "diff",
        help="which derivations differ between two specs "
        "(exit 0 if the same, 1 if they differ, 2 on bad input)",
    )
    p.add_argument("a", type=Path, help="TOML spec file")
    p.add_argument("b", type=Path, help="TOML spec file")
    p.add_argument("--format", choices=["text", "markdown"], default="text")

    p = sub.add_parser(
        "report",
        help="the whole derivation of a spec as a notebook, Markdown or LaTeX "
        "document (with --weights and --data: and a worked example)",
    )
    p.add_argument("spec", type=Path, help="TOML spec file")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="report.ipynb, report.md or report.tex (default: Markdown on stdout)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.add_argument("--weights", type=Path, help="a model file from `derive fit`")
    _add_data_arguments(p, required=False)
    p.add_argument(
        "--sample", type=_row_number, default=0, help="row of --data (from 0)"
    )
    p.add_argument(
        "--no-passes",
        action="store_true",
        help="leave out each expression's simplification passes",
    )
    return {"check": _cmd_check, "diff": _cmd_diff, "report": _cmd_report}


# --------------------------------------------------------------------- report

_REPORT_FORMATS = {".ipynb": "notebook", ".md": "markdown", ".tex": "latex"}


def _cmd_report(args: argparse.Namespace) -> int:
    from .cli import _check_outputs
    from .fileio import atomic_write
    from .present.report import make_report
    from .spec import load_spec

    output: Path | None = args.output
    if output is not None:
        if output.suffix.lower() not in _REPORT_FORMATS:
            raise DeriveError(
                f"-o {output}: give a .ipynb, .md or .tex file name, got "
                f"'{output.suffix or 'no extension'}'"
            )
        _check_outputs([output], force=args.force)
        if _REPORT_FORMATS[output.suffix.lower()] == "notebook":
            _need_nbformat()
    spec = load_spec(args.spec)
    worked, note = _worked_example(spec, args)
    report = make_report(spec, worked=worked, worked_note=note,
                         passes=not args.no_passes)  # fmt: skip
    if output is None:
        sys.stdout.write(report.markdown())
        return 0
    kind = _REPORT_FORMATS[output.suffix.lower()]
    text = {
        "notebook": report.notebook_text,
        "markdown": report.markdown,
        "latex": report.latex,
    }[kind]()
    atomic_write(output, text)
    size = len(text.encode("utf-8"))
    print(
        f"wrote {output} ({kind}, {size / 1024:.0f} KiB, in {report.seconds:.1f} s; "
        f"self-test {'passed' if report.check_ok else 'FAILED'})"
    )
    return 0


def _need_nbformat() -> None:
    try:
        import nbformat  # noqa: F401
    except ImportError:
        raise DeriveError(
            "a notebook needs nbformat: pip install 'derive[notebook]', or write "
            "-o report.md / report.tex"
        ) from None


def _worked_example(spec: object, args: argparse.Namespace) -> tuple[object, str]:
    """The worked example of --sample (a batch of 4 rows from it with batch
    norm), as ``derive explain --weights --data`` computes it, or (None, "")."""
    if args.weights is None and args.data is None:
        return None, ""
    if args.weights is None or args.data is None:
        raise DeriveError(
            "a worked example needs both --weights MODEL.npz and --data FILE; "
            "give both, or neither for the symbolic derivation"
        )
    from .cli import _read_data
    from .network import Network
    from .present.worked import worked_example

    network = Network.load(args.weights, spec)
    table = _read_data(network, args.data, args.target, target_required=True)
    i = args.sample
    n = table.X.shape[0]
    if i >= n:
        raise DeriveError(
            f"--sample {i} is past the end of {args.data} ({n} rows, numbered "
            "from 0); pick a smaller row"
        )
    coupled = any(layer.kind == "batch_norm" for layer in network.spec.layers)
    rows = min(4 if coupled else 1, n - i)
    if coupled and rows < 2:
        raise DeriveError(
            f"batch norm needs two or more rows from --sample {i}; pick an "
            "earlier --sample"
        )
    Y = network.encode_targets(table.y[i : i + rows])
    params = [p.astype("float64") for p in network.params]
    try:
        if rows == 1:
            example = worked_example(spec, params, table.X[i], Y[0], sample=i)
        else:
            X = table.X[i : i + rows].reshape(rows, -1)
            example = worked_example(spec, params, X, Y, sample=i)
    except ValueError as exc:
        raise DeriveError(f"cannot work through sample {i}: {exc}") from None
    which = f"row {i}" if rows == 1 else f"rows {i}..{i + rows - 1} (one batch)"
    note = (
        f"The numbers of {which} of {args.data.name} with the weights of "
        f"{args.weights.name}."
    )
    return example, note


# ----------------------------------------------------------------------- diff


def _cmd_diff(args: argparse.Namespace) -> int:
    from .present.diff import diff

    result = diff(args.a, args.b)
    sys.stdout.write(result.render(args.format))
    return 0 if result.same else 1


# ---------------------------------------------------------------------- check


def _cmd_check(args: argparse.Namespace) -> int:
    module = load_target(args.target)
    if not hasattr(module, "check_gradients"):
        raise DeriveError(
            f"{args.target} was generated by derive {module.GENERATOR_VERSION}, "
            "before modules carried a self-test; regenerate it with `derive "
            "generate`"
        )
    _warn_numba(module, args.target)
    try:
        result = module.check_gradients(seed=args.seed, samples=args.samples)
    except ModuleNotFoundError as exc:
        # Numba rebuilds a cached kernel's environment from the module name that
        # compiled it: a cache written by the file imported under another name
        cache = Path(module.__file__).parent / "__pycache__"
        raise DeriveError(
            f"Numba's cache of {module.__file__} was written by a module named "
            f"'{exc.name}', which is not importable now; delete the "
            f"{Path(module.__file__).stem}.* files in {cache} and run again"
        ) from None
    print(result)
    return 0 if result.ok else 1


def _warn_numba(module: ModuleType, target: Path) -> None:
    """A warning when the running Numba is not the one the module records."""
    import numba

    recorded = getattr(module, "GENERATED_WITH", {}).get("numba")
    if recorded is None:
        print(
            f"derive: warning: {target}'s module records no Numba version "
            f"(derive {module.GENERATOR_VERSION}); regenerate it to record one",
            file=sys.stderr,
        )
    elif recorded != numba.__version__:
        print(
            f"derive: warning: {target}'s module was generated with Numba "
            f"{recorded}, this is Numba {numba.__version__}: it compiles its "
            "kernels anew under this one, which the self-test below checks; "
            "regenerate the module to record the version",
            file=sys.stderr,
        )


def load_target(path: Path) -> ModuleType:
    """The module of a spec (built in the cache) or a generated module file."""
    suffix = path.suffix.lower()
    if suffix == ".py":
        return load_module_file(path)
    if suffix != ".toml":
        raise DeriveError(
            f"{path}: give a spec (.toml) or a module derive generated (.py), "
            f"got '{suffix or 'no extension'}'"
        )
    from .generate import build
    from .spec import load_spec

    return build(load_spec(path))


def load_module_file(path: Path) -> ModuleType:
    """Import a module file derive generated, under its file name when it can
    be (as ``import NAME`` and ``python NAME.py --self-test`` do: Numba's
    on-disk cache belongs to the module name that compiled it), else under a
    private name with Numba's cache in a temporary directory, so that the
    file's own cache is never written under a foreign name."""
    from .generate import import_path, read_header

    if not path.is_file():
        raise DeriveError(f"{path}: file not found")
    if read_header(path) is None:
        raise DeriveError(
            f"{path} was not generated by derive (its first line is not derive's "
            "header); give a module written by `derive generate`, or its spec"
        )
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None and Path(getattr(loaded, "__file__", "")) == path.resolve():
        return loaded  # this process imported the file already
    if name.isidentifier() and loaded is None:
        return _import(import_path, path, name)
    import tempfile

    import numba

    saved = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = tempfile.mkdtemp(prefix="derive-check-")
    try:
        return _import(import_path, path, f"derive_check_{abs(hash(path))}")
    finally:
        numba.config.CACHE_DIR = saved


def _import(
    import_path: Callable[[Path, str], ModuleType], path: Path, name: str
) -> ModuleType:
    try:
        return import_path(path, name)
    except Exception as exc:  # a broken or edited file: say so, no traceback
        raise DeriveError(
            f"{path} could not be imported ({type(exc).__name__}: {exc}); "
            "regenerate it with `derive generate`"
        ) from None
