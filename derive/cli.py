"""The ``derive`` command line: explain, generate, fit, predict, export, demo (and
check, diff, report: :mod:`derive.cli_trust`; sweep: :mod:`derive.cli_sweep`).

Bad input (a spec, a path, a data file, an argument) is one clear message on
stderr and exit code 2, never a traceback; ``generate --check`` exits 1 when a
file is stale. No command overwrites an existing output file without
``--force`` (``demo`` replaces only files it wrote itself), and every file is
written atomically, so a failed run leaves no half-written file.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ._version import __version__
from .errors import DeriveError, DivergenceError, SpecWarning

if TYPE_CHECKING:
    import numpy as np

    from .data import Table
    from .network import Network


class _Parser(argparse.ArgumentParser):
    def error(
        self, message: str
    ) -> None:  # argparse's own errors: exit 2, no traceback
        self.print_usage(sys.stderr)
        print(f"derive: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _number_type(
    convert: Callable[[str], float], accept: Callable[[float], bool], expected: str
) -> Callable[[str], float]:
    """An argparse ``type`` converting text and refusing values outside a range."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {expected}, got {text!r}"
            ) from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


_positive_int = _number_type(int, lambda v: v >= 1, "a positive integer")
_row_number = _number_type(int, lambda v: v >= 0, "a row number >= 0")
_positive_float = _number_type(
    float, lambda v: 0 < v < float("inf"), "a positive number"
)
_fraction = _number_type(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


_TARGET_HELP = (
    "target column(s) of a CSV (comma list for several outputs; default: the last)"
)


def _add_data_arguments(
    parser: argparse.ArgumentParser, *, required: bool, target_help: str = _TARGET_HELP
) -> None:
    """Add ``--data FILE`` and ``--target COLUMNS``, the file and target columns
    :func:`_read_data` reads: required by fit, predict and sweep; optional for
    explain and report, where the file holds the sample of a worked example."""
    data_help = (
        "CSV with header, or .npz" if required else "CSV or .npz holding the sample"
    )
    parser.add_argument("--data", type=Path, required=required, help=data_help)
    parser.add_argument("--target", help=target_help)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="derive",
        description="Derive a network's backprop with SymPy and generate a Numba trainer.",
    )
    parser.add_argument("--version", action="version", version=f"derive {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "explain",
        help="print the derivation of a spec, layer by layer "
        "(with --weights and --data: with the numbers of one sample or batch)",
    )
    p.add_argument("spec", type=Path, help="TOML spec file")
    p.add_argument("--format", choices=["text", "latex", "markdown"], default="text")
    p.add_argument("--weights", type=Path, help="a model file from `derive fit`")
    _add_data_arguments(p, required=False)
    p.add_argument(
        "--sample", type=_row_number, default=0, help="row of --data (from 0)"
    )
    p.add_argument(
        "--batch",
        type=_positive_int,
        help="work through this many rows from --sample as one batch (default 1; "
        "4 for a network with batch norm, whose statistics are the batch's)",
    )
    p.add_argument(
        "--passes",
        action="store_true",
        help="add each derived expression's simplification passes, in order, "
        "with the operation count after each",
    )

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

    p = sub.add_parser("fit", help="train a spec's network on a CSV or .npz file")
    p.add_argument("spec", type=Path, help="TOML spec file")
    _add_data_arguments(p, required=True)
    p.add_argument(
        "--val-split",
        type=_fraction,
        help="fraction of rows held out for validation (default: the spec's)",
    )
    p.add_argument("--epochs", type=_positive_int, help="default: the spec's")
    p.add_argument("--batch-size", type=_positive_int, help="default: the spec's")
    p.add_argument("--lr", type=_positive_float, help="default: the spec's")
    p.add_argument("--out", type=Path, help="model file (default: NAME.npz)")
    p.add_argument("--plot", type=Path, help="write the learning curve (PNG, SVG, PDF)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("predict", help="predict with a model from `derive fit`")
    p.add_argument("model", type=Path, help="model file (.npz from `derive fit`)")
    _add_data_arguments(
        p, required=True, target_help="target column(s), if present (default: by name)"
    )
    p.add_argument("--out", type=Path, help="CSV of predictions (default: stdout)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")

    p = sub.add_parser(
        "export",
        help="export a model from `derive fit`: an ONNX model, or a frozen Python "
        "module (numpy + numba, weights embedded)",
    )
    p.add_argument("model", type=Path, help="model file (.npz from `derive fit`)")
    p.add_argument("--format", choices=["onnx", "python"], required=True)
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="output file (default: NAME.onnx, or predict_NAME.py)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing file")

    p = sub.add_parser(
        "demo", help="train the two-circles classifier and draw its decision boundary"
    )
    p.add_argument("--out-dir", type=Path, default=Path("derive-demo"))
    p.add_argument(
        "--force", action="store_true", help="overwrite files derive did not write"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    # check, diff, report: derive/cli_trust.py
    from .cli_trust import add_parsers

    _TRUST_HANDLERS.update(add_parsers(sub))
    from .cli_sweep import add_parser as add_sweep_parser

    _TRUST_HANDLERS.update(add_sweep_parser(sub))
    return parser


#: the handlers of the commands derive/cli_trust.py and derive/cli_sweep.py add
#: (filled by _parser)
_TRUST_HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {}


# -------------------------------------------------------------------- explain


def _cmd_explain(args: argparse.Namespace) -> int:
    from .present.explain import explain
    from .spec import load_spec

    spec = load_spec(args.spec)
    if args.weights is None and args.data is None:
        print(explain(spec, passes=args.passes).render(args.format))
        return 0
    if args.passes:
        raise DeriveError(
            "--passes shows the symbolic derivation's simplification; give it "
            "without --weights and --data"
        )
    if args.weights is None or args.data is None:
        raise DeriveError(
            "a worked example needs both --weights MODEL.npz and --data FILE; "
            "give both, or neither for the symbolic derivation"
        )
    from .network import Network
    from .present.worked import worked_example

    network = Network.load(args.weights, spec)
    table = _read_data(network, args.data, args.target, target_required=True)
    if args.sample >= table.X.shape[0]:
        raise DeriveError(
            f"--sample {args.sample} is past the end of {args.data} "
            f"({table.X.shape[0]} rows, numbered from 0); pick a smaller row"
        )
    i = args.sample
    coupled = any(layer.kind == "batch_norm" for layer in spec.layers)
    rows = args.batch if args.batch is not None else 4 if coupled else 1
    if coupled and rows < 2:
        raise DeriveError(
            "batch norm normalizes over the batch: a worked example needs "
            "--batch 2 or more rows"
        )
    rows = min(rows, table.X.shape[0] - i)
    if coupled and rows < 2:
        raise DeriveError(
            f"batch norm needs two or more rows from --sample {i}; {args.data} has "
            f"{table.X.shape[0]} rows: pick an earlier --sample"
        )
    Y = network.encode_targets(table.y[i : i + rows])
    params = [p.astype("float64") for p in network.params]
    try:
        if rows == 1 and args.batch is None:
            example = worked_example(spec, params, table.X[i], Y[0], sample=i)
        else:
            X = table.X[i : i + rows].reshape(rows, -1)
            example = worked_example(spec, params, X, Y, sample=i)
    except ValueError as exc:
        which = f"sample {i}" if rows == 1 else f"rows {i}..{i + rows - 1}"
        raise DeriveError(f"cannot work through {which}: {exc}") from None
    print(example.render(args.format))
    return 0


# ------------------------------------------------------------------- generate


def _cmd_generate(args: argparse.Namespace) -> int:
    from .generate import comparable, generate_source, write_module
    from .spec import load_spec

    spec = load_spec(args.spec)
    output = args.output or Path("generated") / f"{spec.name}.py"
    if output.exists() and output.is_dir():
        raise DeriveError(f"{output} is a directory; give a file path with -o")
    if args.check:
        current = output.read_text(encoding="utf-8") if output.is_file() else None
        # the code, not the SymPy and Numba versions its provenance records
        if current is None or comparable(current) != comparable(generate_source(spec)):
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


# ------------------------------------------------------------------------ fit


def _cmd_fit(args: argparse.Namespace) -> int:
    from .network import Network
    from .spec import load_spec

    spec = load_spec(args.spec)
    out = args.out or Path(f"{spec.name}.npz")
    outputs = [out] + ([args.plot] if args.plot else [])
    _check_outputs(outputs, force=args.force)
    if args.plot:
        _check_picture_format(args.plot)
    network = Network(spec)
    table = _read_data(network, args.data, args.target, target_required=True)
    try:
        network.fit(
            table.X,
            table.y,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            validation_split=args.val_split,
            verbose=not args.quiet,
        )
    except DivergenceError as exc:
        hint = (
            " With derive fit: --lr, or clip_norm in the spec's [training] table."
            if "learning rate" in str(exc)
            else ""
        )
        raise DeriveError(f"{exc}{hint} No model was written.") from None
    network.feature_names_in_ = table.feature_names
    network.target_names_ = table.target_names
    print(_summary(network, table))
    network.save(out)
    print(f"wrote {out}")
    if args.plot:
        from .plots import learning_curve

        learning_curve(
            network.history_, args.plot, title=f"{spec.name}: learning curve"
        )
        print(f"wrote {args.plot}")
    return 0


def _summary(network: Network, table: Table) -> str:
    """One line: epochs, final losses and the training-set score."""
    history = network.history_
    parts = [f"{len(history['loss'])} epochs", f"loss {history['loss'][-1]:.4g}"]
    if "val_loss" in history:
        parts.append(f"val_loss {history['val_loss'][-1]:.4g}")
    if "val_accuracy" in history:
        parts.append(f"val_accuracy {history['val_accuracy'][-1]:.2%}")
    if network.stopped_early_:
        parts.append(f"stopped early, best epoch {network.best_epoch_}")
    name = "accuracy" if network.is_classifier else "R^2"
    score = network.score(table.X, table.y)
    parts.append(
        f"{name} on all {table.X.shape[0]} rows {_format_score(network, score)}"
    )
    return ", ".join(parts)


def _format_score(network: Network, score: float) -> str:
    return f"{score:.2%}" if network.is_classifier else f"{score:.4f}"


def _read_data(
    network: Network, path: Path, target: str | None, *, target_required: bool
) -> Table:
    """The data file, its targets checked against the network's output layer."""
    from .data import check_targets, load_table

    single_label = network.is_classifier and not (
        network.task == "binary" and network.n_outputs > 1
    )
    table = load_table(
        path,
        n_inputs=network.spec.n_inputs,
        input_shape=network.spec.input_shape,
        n_targets=1 if single_label else network.n_outputs,
        target=target,
        labels=single_label,
        target_required=target_required,
        feature_names=network.feature_names_in_,
        known_targets=network.target_names_,
    )
    check_targets(
        table,
        task=network.task,
        n_outputs=network.n_outputs,
        targets=str(network.module.TARGETS),
        spec_name=network.spec.name,
        classes=network.classes_ if network.classes_learned else None,
    )
    return table


def _check_outputs(paths: Sequence[Path], *, force: bool) -> None:
    """Refuse (before any work) output paths that exist or clash, unless forced."""
    resolved = [p.resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        raise DeriveError("two outputs name the same file; give different paths")
    for path in paths:
        if path.is_dir():
            raise DeriveError(f"{path} is a directory; give a file path")
        if path.exists() and not force:
            raise DeriveError(
                f"{path} exists; choose another path or pass --force to overwrite it"
            )


def _check_picture_format(path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg", ".pdf"):
        raise DeriveError(
            f"--plot {path}: give a .png, .svg or .pdf file name, got '{suffix or 'none'}'"
        )


# -------------------------------------------------------------------- predict


def _cmd_predict(args: argparse.Namespace) -> int:
    from .network import Network

    if args.out is not None:
        _check_outputs([args.out], force=args.force)
    network = Network.load(args.model)
    table = _read_data(network, args.data, args.target, target_required=False)
    csv_text = _predictions_csv(network, table.X)
    report = sys.stderr if args.out is None else sys.stdout
    if args.out is None:
        sys.stdout.write(csv_text)
    else:
        from .fileio import atomic_write

        atomic_write(args.out, csv_text)
        print(f"wrote {table.X.shape[0]} predictions to {args.out}")
    if table.y is not None:
        name = "accuracy" if network.is_classifier else "R^2"
        score = network.score(table.X, table.y)
        column = ", ".join(table.target_names)
        print(
            f"{name} {_format_score(network, score)} against column '{column}' "
            f"({table.X.shape[0]} rows)",
            file=report,
        )
    return 0


def _predictions_csv(network: Network, X: np.ndarray) -> str:
    """CSV text: the prediction of each row, and class probabilities for classifiers."""
    import csv

    import numpy as np

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    predicted = network.predict(X)
    if network.is_classifier:
        proba = network.predict_proba(X)
        if proba.shape[1] == len(network.classes_):
            names = [f"p_{c}" for c in network.classes_.tolist()]
        else:
            names = [f"p_{i}" for i in range(proba.shape[1])]
        labels = predicted.reshape(len(X), -1)
        head = (
            ["prediction"]
            if labels.shape[1] == 1
            else [f"prediction_{i}" for i in range(labels.shape[1])]
        )
        writer.writerow(head + names)
        for row_labels, row_proba in zip(labels.tolist(), proba, strict=True):
            writer.writerow([*row_labels, *(f"{p:.6g}" for p in row_proba)])
    else:
        values = np.asarray(predicted, dtype=float).reshape(len(X), -1)
        targets = network.target_names_ or tuple(
            f"y{i + 1}" for i in range(values.shape[1])
        )
        writer.writerow(
            [f"predicted_{t}" for t in targets]
            if len(targets) == values.shape[1]
            else [f"predicted_{i + 1}" for i in range(values.shape[1])]
        )
        for row in values:
            writer.writerow([repr(float(v)) for v in row])
    return buffer.getvalue()


# --------------------------------------------------------------------- export


def _cmd_export(args: argparse.Namespace) -> int:
    from .network import Network

    network = Network.load(args.model)
    name = network.spec.name
    default = f"{name}.onnx" if args.format == "onnx" else f"predict_{name}.py"
    output = args.output or Path(default)
    suffix = ".onnx" if args.format == "onnx" else ".py"
    if output.suffix != suffix:
        what = "an ONNX" if args.format == "onnx" else "a Python"
        raise DeriveError(
            f"-o {output}: {what} export is a {suffix} file; give a name ending "
            f"in {suffix}"
        )
    _check_outputs([output], force=args.force)
    if args.format == "onnx":
        from .interop.onnx_io import IR_VERSION, OPSET

        network.to_onnx(output)
        shape = ", ".join(str(s) for s in network.spec.input_shape)
        print(
            f"wrote {output} (ONNX opset {OPSET}, IR version {IR_VERSION}, float32): "
            f"input X (N, {shape}), output Y (N, {network.n_outputs})"
        )
    else:
        network.to_python(output)
        print(
            f"wrote {output}: predict(X), outputs(X)"
            + (", predict_proba(X)" if network.is_classifier else "")
            + "; needs only numpy and numba"
        )
    return 0


# ----------------------------------------------------------------------- demo


DEMO_SPEC = "two_circles"


def _cmd_demo(args: argparse.Namespace) -> int:
    import time

    from .datasets import TWO_CIRCLES, two_circles
    from .network import Network
    from .plots import decision_boundary, learning_curve
    from .spec import parse_spec

    started = time.perf_counter()
    spec = parse_spec(_example_text(DEMO_SPEC), f"examples/{DEMO_SPEC}.toml")
    out_dir: Path = args.out_dir
    paths = {
        "spec": out_dir / f"{spec.name}.toml",
        "data": out_dir / f"{spec.name}.csv",
        "model": out_dir / f"{spec.name}.npz",
        "curve": out_dir / f"{spec.name}_learning_curve.png",
        "boundary": out_dir / f"{spec.name}_decision_boundary.png",
    }
    X, y = two_circles()
    data_text = _table_csv(X, y)
    texts = {"spec": spec.to_toml(), "data": data_text}
    _check_demo_outputs(paths, texts, force=args.force)

    n_test = X.shape[0] // 5
    X_train, y_train = X[:-n_test], y[:-n_test]
    X_test, y_test = X[-n_test:], y[-n_test:]
    arch = spec.architecture
    acts = "/".join(
        layer.activation.label for layer in spec.layers if layer.activation is not None
    )
    print(
        f"derive demo: {TWO_CIRCLES['n_samples']} points on two circles (factor "
        f"{TWO_CIRCLES['factor']}, noise {TWO_CIRCLES['noise']}); "
        f"spec '{spec.name}': {arch} {acts}, {spec.loss.label}, {spec.optimizer.name}"
    )
    network = Network(spec)
    delta = network.module.FORMULAS.get(f"delta{len(spec.layers)}")
    if delta:
        print(f"derived output delta: {delta}")
    print(
        f"training on {X_train.shape[0]} points "
        f"({spec.training.validation_split:.0%} of them for validation); "
        f"{n_test} held out for testing"
    )
    network.fit(X_train, y_train, verbose=not args.quiet)
    network.feature_names_in_, network.target_names_ = ("x1", "x2"), ("label",)
    accuracy = network.score(X_test, y_test)
    print(
        f"held-out accuracy: {accuracy:.1%} "
        f"({int(round(accuracy * n_test))}/{n_test} test points)"
    )

    from .fileio import atomic_write

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(paths["spec"], texts["spec"])
    atomic_write(paths["data"], data_text)
    network.save(paths["model"])
    learning_curve(
        network.history_, paths["curve"], title=f"{spec.name}: learning curve"
    )
    decision_boundary(
        network,
        X,
        y,
        paths["boundary"],
        title=f"{spec.name}: held-out accuracy {accuracy:.1%}",
    )
    print(f"learning curve:    {paths['curve']}")
    print(f"decision boundary: {paths['boundary']}")
    print(f"model: {paths['model']}, data: {paths['data']}, spec: {paths['spec']}")
    print(
        "the derivation with this network's numbers for one point:\n"
        f"  derive explain {paths['spec']} --weights {paths['model']} "
        f"--data {paths['data']} --sample 0"
    )
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def _table_csv(X: np.ndarray, y: np.ndarray) -> str:
    """The demo data as CSV text with header x1,x2,label (exact float reprs)."""
    lines = ["x1,x2,label"]
    lines += [f"{a!r},{b!r},{int(c)}" for (a, b), c in zip(X.tolist(), y, strict=True)]
    return "\n".join(lines) + "\n"


def _check_demo_outputs(
    paths: dict[str, Path], texts: dict[str, str], *, force: bool
) -> None:
    """The demo replaces only files it wrote itself (or anything with --force)."""
    from .network import MODEL_FORMAT
    from .plots import written_by_derive

    for kind, path in paths.items():
        if force or not path.exists():
            continue
        if path.is_dir():
            raise DeriveError(f"{path} is a directory; choose another --out-dir")
        if kind in texts:
            ours = path.read_text(encoding="utf-8", errors="replace") == texts[kind]
        elif kind == "model":
            ours = _is_model_file(path, MODEL_FORMAT)
        else:
            ours = written_by_derive(path)
        if not ours:
            raise DeriveError(
                f"{path} exists and was not written by `derive demo`; choose another "
                "--out-dir or pass --force to overwrite it"
            )


def _is_model_file(path: Path, model_format: str) -> bool:
    import zipfile

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            return "format" in archive.files and str(archive["format"]) == model_format
    except (ValueError, OSError, zipfile.BadZipFile, EOFError):
        return False


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
    import warnings

    with warnings.catch_warnings():
        # a spec's warnings (a user expression's restricted domain): one line each
        warnings.simplefilter("always", SpecWarning)
        shown = warnings.showwarning

        def show(message, category, *args, **kwargs):  # type: ignore[no-untyped-def]
            if issubclass(category, SpecWarning):
                print(f"derive: warning: {message}", file=sys.stderr)
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    handlers = {
        "explain": _cmd_explain,
        "generate": _cmd_generate,
        "fit": _cmd_fit,
        "predict": _cmd_predict,
        "export": _cmd_export,
        "demo": _cmd_demo,
        **_TRUST_HANDLERS,
    }
    try:
        return handlers[args.command](args)
    except DeriveError as exc:
        print(f"derive: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `derive predict ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
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
