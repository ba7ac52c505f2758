"""``derive sweep``: a grid of spec fields x cross-validation folds on Dask
(:func:`derive.sweeps.sweep`), from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import DeriveError

Handler = Callable[[argparse.Namespace], int]


def add_parser(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    """Add ``sweep`` to ``sub``; returns its handler by name."""
    from .cli import _add_data_arguments, _positive_int

    p = sub.add_parser(
        "sweep",
        help="train a grid of spec variants x cross-validation folds on Dask "
        "(a local cluster, or a scheduler by address)",
        description="Each --grid PATH=VALUES varies one spec field "
        "(layers.N.units or units.N, layers.N.activation, optimizer.name, "
        "optimizer.lr, training.batch_size, training.seed, ...); VALUES is a "
        "comma list (4,8,16) or an inclusive range (0..4). Every combination is "
        "trained on every fold; one CSV row per trial.",
    )
    p.add_argument("spec", type=Path, help="TOML spec file (the base of the grid)")
    _add_data_arguments(p, required=True)
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="PATH=VALUES",
        help="a spec field and its values, e.g. 'optimizer.lr=0.1,0.01' or "
        "'training.seed=0..4' (repeatable)",
    )
    p.add_argument(
        "--cv",
        type=_positive_int,
        default=5,
        help="cross-validation folds, stratified for classifiers (default 5)",
    )
    p.add_argument(
        "--cv-seed", type=int, default=0, help="seed of the fold assignment (0)"
    )
    p.add_argument(
        "--scheduler",
        help="address of a running Dask scheduler (tcp://host:8786), or "
        "'synchronous' for this process only; default: a local cluster",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        help="processes of the local cluster (default: one per core)",
    )
    p.add_argument("--out", type=Path, help="CSV of the rows (default: NAME_sweep.csv)")
    p.add_argument(
        "--plot", type=Path, help="picture of the validation metric (PNG, SVG, PDF)"
    )
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return {"sweep": _cmd_sweep}


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .cli import _check_outputs, _check_picture_format, _read_data
    from .network import Network
    from .spec import load_spec
    from .sweeps import SweepInterrupted, expand_grid, parse_grid_arg, sweep

    spec = load_spec(args.spec)
    grid: dict[str, list] = {}
    for text in args.grid:
        path, values = parse_grid_arg(text)
        if path in grid:
            raise DeriveError(f"--grid {path} is given twice; give each path once")
        grid[path] = values
    expand_grid(spec, grid)  # a bad path or value: before anything else
    if args.cv < 2:
        raise DeriveError(f"--cv must be 2 or more folds, got {args.cv}")
    if args.scheduler is not None and args.workers is not None:
        raise DeriveError(
            "--workers sizes the local cluster; with --scheduler the cluster's "
            "own workers run the trials (drop --workers)"
        )
    out = args.out or Path(f"{spec.name}_sweep.csv")
    outputs = [out, out.with_name(out.name + ".partial")]
    if args.plot:
        outputs.append(args.plot)
        _check_picture_format(args.plot)
    _check_outputs(outputs, force=args.force)
    table = _read_data(Network(spec), args.data, args.target, target_required=True)
    with _client(args.scheduler) as client:
        try:
            result = sweep(
                spec, table.X, table.y, grid, cv=args.cv, client=client,
                workers=args.workers, cv_seed=args.cv_seed, out=out,
                force=args.force, progress=not args.quiet,
            )  # fmt: skip
        except SweepInterrupted as stop:
            print(f"derive: {stop}; {out} was not written", file=sys.stderr)
            return 130
    print(result.summary())
    print(f"wrote {out}")
    if args.plot:
        result.plot(args.plot)
        print(f"wrote {args.plot}")
    return 0


class _client:
    """The client of ``--scheduler``: None (a local cluster), "synchronous", or
    a connection to the address, closed afterwards."""

    def __init__(self, address: str | None) -> None:
        self.address, self.client = address, None

    def __enter__(self):  # type: ignore[no-untyped-def]
        if self.address is None or self.address == "synchronous":
            return self.address
        from .sweeps import _require_dask

        distributed = _require_dask()
        try:
            self.client = distributed.Client(self.address, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise DeriveError(
                f"cannot reach a Dask scheduler at {self.address} ({exc}); start "
                "one with `dask scheduler` and pass its tcp:// address"
            ) from None
        return self.client

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
