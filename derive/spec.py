"""The spec: a typed, immutable description of one network and how to train it.

A spec comes from TOML (:func:`load_spec`, :func:`parse_spec`) or from a plain
``dict`` of the same structure (:func:`spec_from_dict`). Validation collects
every problem before reporting, each with its fix, and raises one
:class:`~derive.errors.SpecError`.

Pairing rules between the output activation and the loss (decided here, and
documented in the README):

* ``softmax`` is an output-layer op and needs ``cross_entropy``;
* ``cross_entropy`` needs a ``softmax`` output (targets: one-hot or class
  probabilities whose rows sum to 1);
* ``binary_cross_entropy`` needs a ``sigmoid`` output (it takes probabilities);
* ``bce_with_logits`` needs an ``identity`` output (it takes logits);
* every other loss accepts any elementwise output activation.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import keyword
import math
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ExpressionError, SpecError
from .ops import ACTIVATIONS, LOSSES, RESERVED, Activation, Loss, UserExpr
from .ops import user_activation as _user_activation
from .ops import user_loss as _user_loss

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class OpRef:
    """A reference to an activation or loss: a library name with parameter
    values, or a user expression (``name == "expr"``) with named constants."""

    name: str
    params: tuple[tuple[str, float], ...] = ()
    expr: str | None = None

    def to_toml_value(self) -> str | dict[str, Any]:
        if self.expr is not None:
            return {"expr": self.expr, **dict(self.params)}
        if not self.params:
            return self.name
        return {"name": self.name, **dict(self.params)}

    @property
    def label(self) -> str:
        """Short human label, e.g. ``leaky_relu(alpha=0.1)`` or ``expr: x*tanh(x)``."""
        if self.expr is not None:
            return f"expr: {self.expr}"
        if self.params:
            inner = ", ".join(f"{k}={v:g}" for k, v in self.params)
            return f"{self.name}({inner})"
        return self.name


@dataclass(frozen=True)
class Layer:
    """A dense layer: ``z = a_prev W^T + b``, ``a = activation(z)``."""

    units: int
    activation: OpRef


# Optimizers and their hyper-parameters, with torch.optim's names and defaults.
OPTIMIZERS: Mapping[str, Mapping[str, Any]] = {
    "sgd": {"lr": 0.01, "momentum": 0.0, "dampening": 0.0, "nesterov": False,
            "weight_decay": 0.0},
    "momentum": {"lr": 0.01, "momentum": 0.9, "dampening": 0.0, "nesterov": False,
                 "weight_decay": 0.0},
    "nesterov": {"lr": 0.01, "momentum": 0.9, "dampening": 0.0, "nesterov": True,
                 "weight_decay": 0.0},
    "adam": {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
    "adamw": {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01},
    "rmsprop": {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0,
                "momentum": 0.0},
}  # fmt: skip


@dataclass(frozen=True)
class Optimizer:
    """The optimizer and its hyper-parameters (torch.optim names and defaults)."""

    name: str = "sgd"
    hyper: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str) -> Any:
        return dict(self.hyper)[key]

    @property
    def lr(self) -> float:
        return float(self.get("lr"))


SCHEDULES = ("constant", "step", "cosine")


@dataclass(frozen=True)
class Training:
    """Defaults for ``fit`` (each can be overridden per call).

    epochs: passes over the data. batch_size: rows per mini-batch (the last
    batch of an epoch may be smaller). shuffle: reshuffle rows every epoch.
    seed: seeds the shuffling (and ``init_params`` when the caller gives none).
    schedule: learning rate per epoch: "constant"; "step" (``lr * gamma **
    (epoch // step_size)``, torch's StepLR); "cosine" (from lr down to min_lr
    over the epochs of the fit call, torch's CosineAnnealingLR).
    clip_norm: if > 0, gradients are rescaled so their global L2 norm is at most
    this (torch's clip_grad_norm_); 0 turns clipping off.
    patience: if > 0, stop after this many epochs without the monitored loss
    (validation loss, else training loss) improving by more than min_delta,
    and restore the best epoch's parameters; 0 turns early stopping off.
    validation_split: fraction of rows held out for validation by ``Network.fit``
    and ``derive fit`` (the last rows after a seeded shuffle); 0 holds none out.
    """

    epochs: int = 10
    batch_size: int = 32
    shuffle: bool = True
    seed: int = 0
    schedule: str = "constant"
    step_size: int = 10
    gamma: float = 0.1
    min_lr: float = 0.0
    clip_norm: float = 0.0
    patience: int = 0
    min_delta: float = 0.0
    validation_split: float = 0.0


@dataclass(frozen=True)
class Spec:
    """One network: sizes, ops, loss, optimizer, training defaults and dtype."""

    name: str
    input: int
    layers: tuple[Layer, ...]
    loss: OpRef
    dtype: str = "float64"
    optimizer: Optimizer = field(default_factory=Optimizer)
    training: Training = field(default_factory=Training)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Layer widths including the input: ``(input, units_1, ..., units_L)``."""
        return (self.input, *(layer.units for layer in self.layers))

    def to_dict(self) -> dict[str, Any]:
        """The canonical plain-data form (what :func:`spec_from_dict` accepts)."""
        return {
            "name": self.name,
            "dtype": self.dtype,
            "input": self.input,
            "layers": [
                {"units": layer.units, "activation": layer.activation.to_toml_value()}
                for layer in self.layers
            ],
            "loss": _loss_table(self.loss),
            "optimizer": {
                "name": self.optimizer.name,
                **_plain(dict(self.optimizer.hyper)),
            },
            "training": asdict(self.training),
        }

    def to_toml(self) -> str:
        """Canonical TOML text: parses back to an equal spec."""
        return _dump_toml(self.to_dict())

    @property
    def hash(self) -> str:
        """Stable 16-hex-digit hash of the canonical form."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def activation_def(self, index: int) -> Activation:
        """The op definition of layer ``index`` (0-based)."""
        return resolve_activation(self.layers[index].activation)

    def loss_def(self) -> Loss:
        return resolve_loss(self.loss)


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _loss_table(ref: OpRef) -> dict[str, Any]:
    value = ref.to_toml_value()
    return {"name": value} if isinstance(value, str) else value


def resolve_activation(ref: OpRef) -> Activation:
    if ref.expr is not None:
        return _user_activation(UserExpr(ref.expr, ref.params))
    return ACTIVATIONS[ref.name]


def resolve_loss(ref: OpRef) -> Loss:
    if ref.expr is not None:
        return _user_loss(UserExpr(ref.expr, ref.params))
    return LOSSES[ref.name]


# ---------------------------------------------------------------- TOML writing


def _toml_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return (
            repr(v)
            if math.isfinite(v)
            else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
        )
    if isinstance(v, str):
        # TOML basic string: JSON escapes are valid TOML, except surrogate pairs,
        # so non-ASCII characters are written as themselves.
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_scalar(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _dump_toml(d: dict[str, Any]) -> str:
    lines = [
        f"{k} = {_toml_scalar(v)}"
        for k, v in d.items()
        if not isinstance(v, dict | list)
    ]
    for layer in d["layers"]:
        lines += ["", "[[layers]]"] + [
            f"{k} = {_toml_scalar(v)}" for k, v in layer.items()
        ]
    for table in ("loss", "optimizer", "training"):
        lines += ["", f"[{table}]"] + [
            f"{k} = {_toml_scalar(v)}" for k, v in d[table].items()
        ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ validation


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")


def _suggest(key: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(key), list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _check_keys(
    table: Mapping[str, Any], allowed: list[str], where: str, problems: _Problems
) -> None:
    for key in table:
        if key not in allowed:
            problems.add(
                where,
                f"unknown key '{key}'{_suggest(key, allowed)} "
                f"(allowed: {', '.join(allowed)})",
            )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    if not isinstance(v, int | float) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer beyond float range
        return False


MAX_SIZE = 1_000_000


def _positive_int(v: Any, where: str, problems: _Problems, what: str) -> int | None:
    if not _is_int(v):
        problems.add(where, f"{what} must be a positive integer, got {v!r}")
        return None
    if v <= 0:
        problems.add(where, f"{what} must be a positive integer, got {v}; use e.g. 1")
        return None
    if v > MAX_SIZE:
        problems.add(where, f"{what} is {v}; the limit is {MAX_SIZE}")
        return None
    return v


def _op_ref(
    value: Any,
    where: str,
    problems: _Problems,
    library: Mapping[str, Activation] | Mapping[str, Loss],
    kind: str,
    variable: str,
) -> OpRef | None:
    """Validate an activation/loss reference: a name, or a table with name or expr."""
    names = sorted(library)
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping):
        problems.add(
            where,
            f"{kind} must be a name such as '{names[0]}' or a table "
            f'{{ name = ..., <params> }} / {{ expr = "..." }}, got {value!r}',
        )
        return None
    if "name" in value and "expr" in value:
        problems.add(where, f"give either 'name' or 'expr' for the {kind}, not both")
        return None
    if "expr" in value:
        expr = value["expr"]
        constants: list[tuple[str, float]] = []
        ok = True
        for k, v in value.items():
            if k == "expr":
                continue
            if not isinstance(k, str) or not k.isidentifier() or k in RESERVED:
                problems.add(
                    where, f"constant name '{k}' is not allowed (reserved or invalid)"
                )
                ok = False
            elif not _is_number(v):
                problems.add(
                    where, f"constant '{k}' must be a finite number, got {v!r}"
                )
                ok = False
            else:
                constants.append((k, float(v)))
        if not isinstance(expr, str):
            problems.add(
                where, f"{kind} expr must be a string in {variable}, got {expr!r}"
            )
            return None
        if not ok:
            return None
        ref = OpRef("expr", tuple(sorted(constants)), expr)
        try:
            (_user_activation if kind == "activation" else _user_loss)(
                UserExpr(expr, ref.params)
            )
        except ExpressionError as exc:
            problems.add(where, f"{kind} expression refused: {exc}")
            return None
        return ref
    if "name" not in value:
        problems.add(
            where, f"{kind} table needs 'name' (one of: {', '.join(names)}) or 'expr'"
        )
        return None
    name = value["name"]
    if not isinstance(name, str) or name not in library:
        problems.add(
            where,
            f"unknown {kind} {name!r}{_suggest(str(name), names)}; "
            f'available: {", ".join(names)}, or {{ expr = "..." }} in {variable}',
        )
        return None
    op = library[name]
    allowed = {p.name: p for p in op.params}
    params: list[tuple[str, float]] = []
    for k, v in value.items():
        if k == "name":
            continue
        if k not in allowed:
            hint = (
                f" (its parameters: {', '.join(allowed)})"
                if allowed
                else " (it has none)"
            )
            problems.add(where, f"{kind} '{name}' has no parameter '{k}'"
                         f"{_suggest(k, list(allowed))}{hint}")  # fmt: skip
            continue
        if not _is_number(v):
            problems.add(where, f"{name}.{k} must be a finite number, got {v!r}")
            continue
        issue = allowed[k].check(float(v))
        if issue:
            problems.add(where, f"{name}.{issue}")
            continue
        params.append((k, float(v)))
    # Defaults are filled in so equal networks get equal hashes.
    given = dict(params)
    full = tuple((p.name, given.get(p.name, float(p.default))) for p in op.params)
    return OpRef(name, full)


_TOP_KEYS = ["name", "dtype", "input", "layers", "loss", "optimizer", "training"]
_TRAINING_KEYS = [f.name for f in fields(Training)]


def spec_from_dict(data: Mapping[str, Any], source: str = "spec") -> Spec:
    """Validate plain data (as parsed from TOML) into a :class:`Spec`.

    Raises :class:`SpecError` listing every problem with its fix.
    """
    problems = _Problems()
    if not isinstance(data, Mapping):
        raise SpecError([f"a spec must be a table, got {type(data).__name__}"], source)
    _check_keys(data, _TOP_KEYS, "spec", problems)
    for required in ("name", "input", "layers", "loss"):
        if required not in data:
            example = {
                "name": 'name = "my_net"',
                "input": "input = 2",
                "layers": '[[layers]] units = 1, activation = "sigmoid"',
                "loss": '[loss] name = "mse"',
            }[required]
            problems.add("spec", f"missing '{required}'; add e.g. {example}")

    name = data.get("name", "net")
    if "name" in data and (
        not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name)
    ):
        problems.add(
            "name", f"must be a Python identifier (letters, digits, _), got {name!r}"
        )

    dtype = data.get("dtype", "float64")
    if dtype not in DTYPES:
        problems.add("dtype", f"must be one of {', '.join(DTYPES)}, got {dtype!r}")

    n_input = None
    if "input" in data:
        n_input = _positive_int(
            data["input"], "input", problems, "input (number of features)"
        )

    layers: list[Layer] = []
    raw_layers = data.get("layers", [])
    if "layers" in data and (not isinstance(raw_layers, list) or not raw_layers):
        problems.add(
            "layers", "need at least one [[layers]] table with units and activation"
        )
        raw_layers = []
    for idx, raw in enumerate(raw_layers, start=1):
        where = f"layers[{idx}]"
        if not isinstance(raw, Mapping):
            problems.add(
                where, f"must be a table with units and activation, got {raw!r}"
            )
            continue
        _check_keys(raw, ["units", "activation"], where, problems)
        units = None
        if "units" not in raw:
            problems.add(where, "missing 'units'; add e.g. units = 8")
        else:
            units = _positive_int(raw["units"], where, problems, "units")
        if "activation" not in raw:
            problems.add(where, "missing 'activation'; add e.g. activation = \"relu\"")
            act = None
        else:
            act = _op_ref(
                raw["activation"], where, problems, ACTIVATIONS, "activation", "x"
            )
        if act is not None and act.expr is None:
            op = ACTIVATIONS[act.name]
            if op.output_only and idx != len(raw_layers):
                problems.add(where, f"'{act.name}' is only allowed on the output layer")
        if units is not None and act is not None:
            layers.append(Layer(units, act))

    loss = None
    if "loss" in data:
        raw_loss = data["loss"]
        loss = _op_ref(raw_loss, "loss", problems, LOSSES, "loss", "y_hat and y")

    optimizer = _optimizer(data.get("optimizer", {}), problems)
    training = _training(data.get("training", {}), problems)

    if loss is not None and layers and len(layers) == len(raw_layers):
        _check_pairing(layers[-1].activation, loss, problems)

    if problems.items:
        raise SpecError(problems.items, source)
    assert n_input is not None and loss is not None
    return Spec(
        name=name,
        input=n_input,
        layers=tuple(layers),
        loss=loss,
        dtype=dtype,
        optimizer=optimizer,
        training=training,
    )


def _check_pairing(out: OpRef, loss: OpRef, problems: _Problems) -> None:
    act_name = out.name if out.expr is None else "expr"
    loss_name = loss.name if loss.expr is None else "expr"
    if act_name in ACTIVATIONS and ACTIVATIONS[act_name].requires_loss:
        need = ACTIVATIONS[act_name].requires_loss
        if loss_name not in need:
            problems.add(
                "loss",
                f"a {act_name} output needs loss {' or '.join(need)}, got {loss.label}; "
                f'set [loss] name = "{need[0]}" or change the output activation',
            )
            return
    if loss_name in LOSSES and LOSSES[loss_name].requires_activation:
        need = LOSSES[loss_name].requires_activation
        if act_name not in need:
            problems.add(
                "loss",
                f"loss {loss_name} needs a {' or '.join(need)} output layer, got "
                f'{out.label}; set the last layer\'s activation = "{need[0]}"'
                + (
                    " (or use bce_with_logits with an identity output)"
                    if loss_name == "binary_cross_entropy"
                    else ""
                ),
            )


def _optimizer(raw: Any, problems: _Problems) -> Optimizer:
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, Mapping):
        problems.add(
            "optimizer",
            f'must be a table such as {{ name = "sgd", lr = 0.1 }}, got {raw!r}',
        )
        return Optimizer("sgd", tuple(OPTIMIZERS["sgd"].items()))
    name = raw.get("name", "sgd")
    if not isinstance(name, str) or name not in OPTIMIZERS:
        problems.add(
            "optimizer",
            f"unknown optimizer {name!r}{_suggest(str(name), sorted(OPTIMIZERS))}; "
            f"available: {', '.join(sorted(OPTIMIZERS))}",
        )
        return Optimizer("sgd", tuple(OPTIMIZERS["sgd"].items()))
    defaults = OPTIMIZERS[name]
    _check_keys(raw, ["name", *defaults], "optimizer", problems)
    hyper: dict[str, Any] = dict(defaults)
    for key, default in defaults.items():
        if key not in raw:
            continue
        v = raw[key]
        where = f"optimizer.{key}"
        if isinstance(default, bool):
            if not isinstance(v, bool):
                problems.add(where, f"must be true or false, got {v!r}")
                continue
        elif isinstance(default, tuple):
            if (
                not isinstance(v, list | tuple)
                or len(v) != 2
                or not all(_is_number(b) and 0 <= b < 1 for b in v)
            ):
                problems.add(
                    where,
                    f"must be two numbers in [0, 1), e.g. [0.9, 0.999], got {v!r}",
                )
                continue
            v = (float(v[0]), float(v[1]))
        else:
            if not _is_number(v):
                problems.add(where, f"must be a finite number, got {v!r}")
                continue
            v = float(v)
            if key in ("lr", "eps") and v <= 0:
                problems.add(where, f"must be > 0, got {v}")
                continue
            if key in ("momentum", "dampening", "alpha") and not 0 <= v <= 1:
                problems.add(where, f"must be in [0, 1], got {v}")
                continue
            if key == "weight_decay" and v < 0:
                problems.add(where, f"must be >= 0, got {v}")
                continue
        hyper[key] = v
    if hyper.get("nesterov") and (
        hyper.get("momentum", 0) <= 0 or hyper.get("dampening", 0) != 0
    ):
        problems.add(
            "optimizer",
            "nesterov needs momentum > 0 and dampening = 0 (as in torch.optim.SGD)",
        )
    return Optimizer(name, tuple(hyper.items()))


def _training(raw: Any, problems: _Problems) -> Training:
    if not isinstance(raw, Mapping):
        problems.add("training", f"must be a table, got {raw!r}")
        return Training()
    _check_keys(raw, _TRAINING_KEYS, "training", problems)
    values: dict[str, Any] = {}
    for key in ("epochs", "batch_size", "step_size"):
        if key in raw:
            v = _positive_int(raw[key], f"training.{key}", problems, key)
            if v is not None:
                values[key] = v
    if "shuffle" in raw:
        if isinstance(raw["shuffle"], bool):
            values["shuffle"] = raw["shuffle"]
        else:
            problems.add(
                "training.shuffle", f"must be true or false, got {raw['shuffle']!r}"
            )
    for key in ("seed", "patience"):
        if key in raw:
            if _is_int(raw[key]) and 0 <= raw[key] <= 2**63 - 1:
                values[key] = raw[key]
            else:
                problems.add(
                    f"training.{key}",
                    f"must be a non-negative integer, got {raw[key]!r}",
                )
    if "schedule" in raw:
        v = raw["schedule"]
        if isinstance(v, str) and v in SCHEDULES:
            values["schedule"] = v
        else:
            problems.add(
                "training.schedule",
                f"unknown schedule {v!r}{_suggest(str(v), list(SCHEDULES))}; "
                f"available: {', '.join(SCHEDULES)}",
            )
    # (the range each number must lie in, and how the message states it)
    ranges = {
        "gamma": (lambda v: 0.0 < v <= 1.0, "in (0, 1], e.g. 0.1"),
        "min_lr": (lambda v: v >= 0.0, ">= 0"),
        "clip_norm": (lambda v: v >= 0.0, ">= 0"),
        "min_delta": (lambda v: v >= 0.0, ">= 0"),
        "validation_split": (lambda v: 0.0 <= v < 1.0, "in [0, 1), e.g. 0.2"),
    }
    for key, (in_range, rule) in ranges.items():
        if key not in raw:
            continue
        v = raw[key]
        if not _is_number(v):
            problems.add(f"training.{key}", f"must be a finite number, got {v!r}")
        elif not in_range(float(v)):
            problems.add(f"training.{key}", f"must be {rule}, got {float(v):g}")
        else:
            values[key] = float(v)
    return Training(**values)


def parse_spec(text: str, source: str = "spec") -> Spec:
    """Parse TOML text into a validated :class:`Spec`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(
            [f"not valid TOML: {exc}; check quotes and brackets"], source
        ) from None
    return spec_from_dict(data, source)


def load_spec(path: str | Path) -> Spec:
    """Read and validate a TOML spec file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"file not found: {p}; check the path"], str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"cannot read {p}: {exc}"], str(p)) from None
    return parse_spec(text, str(p))
