"""The ``derive`` command line: explain, generate, check.

Bad input (a spec, a path, an argument) is one clear message on stderr and exit
code 2, never a traceback; ``generate --check`` exits 1 when a file is stale.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ._version import __version__
from .errors import DeriveError


class _Parser(argparse.ArgumentParser):
    def error(
        self, message: str
    ) -> None:  # argparse's own errors: exit 2, no traceback
        self.print_usage(sys.stderr)
        print(f"derive: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="derive",
        description="Derive a network's backprop with SymPy and generate a Numba trainer.",
    )
    parser.add_argument("--version", action="version", version=f"derive {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("explain", help="print the derivation of a spec, layer by layer")
    p.add_argument("spec", type=Path, help="TOML spec file")
    p.add_argument("--format", choices=["text", "latex", "markdown"], default="text")

    p = sub.add_parser("generate", help="write the spec's standalone Numba module")
    p.add_argument("spec", type=Path, help="TOML spec file")
    p.add_argument(
        "-o", "--output", type=Path, help="output file (default: generated/NAME.py)"
    )
    p.add_argument(
        "--force", action="store_true", help="overwrite a file derive did not write"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the file differs from what the spec generates",
    )

    p = sub.add_parser("demo", help="explain and generate a shipped example")
    p.add_argument("--out-dir", type=Path, default=Path("generated"))
    return parser


def _cmd_explain(args: argparse.Namespace) -> int:
    from .explain import explain
    from .spec import load_spec

    print(explain(load_spec(args.spec)).render(args.format))
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from .generate import generate_source, write_module
    from .spec import load_spec

    spec = load_spec(args.spec)
    output = args.output or Path("generated") / f"{spec.name}.py"
    if output.exists() and output.is_dir():
        raise DeriveError(f"{output} is a directory; give a file path with -o")
    if args.check:
        current = output.read_text(encoding="utf-8") if output.is_file() else None
        if current != generate_source(spec):
            state = "missing" if current is None else "stale"
            print(
                f"{output} is {state}: run `derive generate {args.spec} -o {output}`",
                file=sys.stderr,
            )
            return 1
        print(f"{output} is up to date")
        return 0
    changed = write_module(spec, output, force=args.force)
    print(
        f"{'wrote' if changed else 'unchanged'} {output} (spec {spec.name}, hash {spec.hash})"
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from .explain import explain
    from .generate import import_path, write_module
    from .spec import parse_spec

    text = _example_text("seed001")
    spec = parse_spec(text, "examples/seed001.toml")
    print(explain(spec).text())
    output = args.out_dir / f"{spec.name}.py"
    write_module(spec, output, force=False)
    print(f"\nGenerated {output}; importing it and checking seed 001's worked example:")
    module = import_path(output)
    params = [
        np.array([[-1.0, 2.0], [3.0, 0.5], [-0.1, -4.0]]),
        np.array([1.0, -2.0, 0.3]),
        np.array([[0.5, 1.0, -2.0], [0.7, 0.1, 0.3]]),
        np.array([-4.0, 5.0]),
        np.array([[0.5, -0.3]]),
        np.array([0.1]),
    ]
    X = np.array([[1.0, 2.0], [3.0, 4.0]])
    Y = np.array([[0.0], [1.0]])
    value, grads = module.loss_and_grad(params, X, Y)
    print(f"  cost = {value:.11f}")
    for name, g in zip(["dW1", "db1", "dW2", "db2", "dW3", "db3"], grads, strict=True):
        print(f"  {name} = {np.array2string(np.round(g, 4), separator=', ')}")
    return 0


def _example_text(name: str) -> str:
    from importlib import resources

    candidates = [Path(__file__).resolve().parent.parent / "examples" / f"{name}.toml"]
    for path in candidates:
        if path.is_file():
            return path.read_text(encoding="utf-8")
    return (
        resources.files("derive")
        .joinpath("examples", f"{name}.toml")
        .read_text("utf-8")
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``derive`` console script."""
    args = _parser().parse_args(argv)
    handlers = {"explain": _cmd_explain, "generate": _cmd_generate, "demo": _cmd_demo}
    try:
        return handlers[args.command](args)
    except DeriveError as exc:
        print(f"derive: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"derive: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
