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
import functools
import hashlib
import json
import keyword
import math
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ExpressionError, SpecError, SpecWarning
from .layers import DEFAULT_KIND, LAYER_INTERFACES
from .layers.interface import KindInterface, output_size
from .layers.interface import Param as LayerParam
from .ops import ACTIVATIONS, LOSSES, RESERVED, Activation, Loss, UserExpr
from .ops import user_activation as _user_activation
from .ops import user_loss as _user_loss
from .optimizers import OPTIMIZERS

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
    """One ``[[layers]]`` table: a layer kind (:data:`~derive.layers.LAYER_INTERFACES`),
    its attributes in canonical form (every parameter of the kind, in its order;
    sizes as one int per spatial axis), and its activation (kinds that take one).

    A dense layer is ``z = W a_prev + b``, ``a = activation(z)``.
    """

    kind: str = DEFAULT_KIND
    attrs: tuple[tuple[str, Any], ...] = ()
    activation: OpRef | None = None
    #: a residual connection: the layer whose output is added before the
    #: activation (0: the network's input), or None
    residual: int | None = None

    @classmethod
    def dense(cls, units: int, activation: OpRef) -> Layer:
        return cls(DEFAULT_KIND, (("units", units),), activation)

    def get(self, name: str) -> Any:
        return dict(self.attrs)[name]

    @property
    def units(self) -> int:
        """A dense layer's number of units."""
        return int(self.get("units"))

    def to_dict(self) -> dict[str, Any]:
        """Canonical plain data; a dense layer omits its kind (so specs written
        before layer kinds existed keep their hash)."""
        out: dict[str, Any] = {} if self.kind == DEFAULT_KIND else {"kind": self.kind}
        out.update((k, list(v) if isinstance(v, tuple) else v) for k, v in self.attrs)
        if self.activation is not None:
            out["activation"] = self.activation.to_toml_value()
        if self.residual is not None:
            out["residual"] = self.residual
        return out

    @property
    def label(self) -> str:
        """Short text, e.g. ``conv2d(filters=8, kernel=3x3, ...)``, for summaries."""
        return LAYER_INTERFACES[self.kind].label(dict(self.attrs))


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
    """One network: input shape, layers, loss, optimizer, training defaults, dtype.

    ``input`` is a number of features, or a per-sample shape: ``(C, L)`` for 1-D
    signals, ``(C, H, W)`` for images.
    """

    name: str
    input: int | tuple[int, ...]
    layers: tuple[Layer, ...]
    loss: OpRef
    dtype: str = "float64"
    optimizer: Optimizer = field(default_factory=Optimizer)
    training: Training = field(default_factory=Training)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The per-sample input shape: ``(features,)``, ``(C, L)`` or ``(C, H, W)``."""
        return (self.input,) if isinstance(self.input, int) else tuple(self.input)

    @property
    def n_inputs(self) -> int:
        """Input values per sample (a CSV row's feature count)."""
        return math.prod(self.input_shape)

    @functools.cached_property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """Per-sample shapes: the input's, then each layer's output."""
        return _layer_shapes(self.input_shape, self.layers)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Values per sample of the input and of each layer's output: for a dense
        network the widths ``(input, units_1, ..., units_L)``."""
        return tuple(math.prod(shape) for shape in self.shapes)

    @property
    def architecture(self) -> str:
        """``2-8-1`` for a dense network; the layers and shapes otherwise."""
        if all(layer.kind == DEFAULT_KIND for layer in self.layers) and isinstance(
            self.input, int
        ):
            return "-".join(str(s) for s in self.sizes)
        parts = ["x".join(map(str, self.input_shape))]
        for layer, shape in zip(self.layers, self.shapes[1:], strict=True):
            parts.append(f"{layer.kind} {'x'.join(map(str, shape))}")
        return " -> ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The canonical plain-data form (what :func:`spec_from_dict` accepts)."""
        return {
            "name": self.name,
            "dtype": self.dtype,
            "input": self.input if isinstance(self.input, int) else list(self.input),
            "layers": [layer.to_dict() for layer in self.layers],
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
        return _digest(self.to_dict())

    @property
    def architecture_hash(self) -> str:
        """Stable 16-hex-digit hash of what the compiled kernels depend on: the
        dtype, input, layers, loss and optimizer family. The name, the optimizer's
        hyper-parameters and the training settings are run-time values, so specs
        that differ only in them share one kernel module (one Numba compile)."""
        d = self.to_dict()
        kernel_part = {
            "dtype": d["dtype"],
            "input": d["input"],
            "layers": d["layers"],
            "loss": d["loss"],
            "optimizer": d["optimizer"]["name"],
        }
        return _digest(kernel_part)

    def activation_def(self, index: int) -> Activation:
        """The op definition of layer ``index``'s activation (0-based)."""
        ref = self.layers[index].activation
        if ref is None:
            raise ValueError(f"layer {index + 1} ({self.layers[index].kind}) has none")
        return resolve_activation(ref)

    def loss_def(self) -> Loss:
        return resolve_loss(self.loss)


def _digest(data: Mapping[str, Any]) -> str:
    """16 hex digits of SHA-256 over canonical JSON of plain data."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _layer_shapes(
    input_shape: tuple[int, ...], layers: tuple[Layer, ...]
) -> tuple[tuple[int, ...], ...]:
    shapes = [input_shape]
    for layer in layers:
        kind = LAYER_INTERFACES[layer.kind]
        shapes.append(kind.output_shape(dict(layer.attrs), shapes[-1]))
    return tuple(shapes)


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
        if not isinstance(v, dict) and k != "layers"
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

    input_value: int | tuple[int, ...] | None = None
    if "input" in data:
        input_value = _input(data["input"], problems)

    layers: list[Layer] = []
    raw_layers = data.get("layers", [])
    if "layers" in data and (not isinstance(raw_layers, list) or not raw_layers):
        problems.add(
            "layers", "need at least one [[layers]] table with units and activation"
        )
        raw_layers = []
    shape = (
        None
        if input_value is None
        else ((input_value,) if isinstance(input_value, int) else input_value)
    )
    shapes: list[tuple[int, ...] | None] = [shape]
    for idx, raw in enumerate(raw_layers, start=1):
        layer = _layer(raw, idx, len(raw_layers), problems)
        if layer is None:
            shape = None
            shapes.append(None)
            continue
        layers.append(layer)
        if shape is not None:
            shape = _check_shape(layer, idx, shape, problems)
        shapes.append(shape)
        if layer.residual is not None and shape is not None:
            source = shapes[layer.residual]
            if source is not None and source != shape:
                given = (
                    "the input" if layer.residual == 0 else f"layer {layer.residual}"
                )
                problems.add(
                    f"layers[{idx}]",
                    f"residual: {given} gives shape {'x'.join(map(str, source))} but "
                    f"this layer's output is {'x'.join(map(str, shape))}; the shapes "
                    "must match (change the units, or name another layer)",
                )
    if layers and len(layers) == len(raw_layers) and layers[-1].kind != DEFAULT_KIND:
        problems.add(
            f"layers[{len(raw_layers)}]",
            f"the output layer must be dense, got kind '{layers[-1].kind}'; end "
            'with kind = "flatten" (after spatial layers) and a dense layer '
            '(units = ..., activation = "...")',
        )

    loss = None
    if "loss" in data:
        raw_loss = data["loss"]
        loss = _op_ref(raw_loss, "loss", problems, LOSSES, "loss", "y_hat and y")

    optimizer = _optimizer(data.get("optimizer", {}), problems)
    training = _training(data.get("training", {}), problems)

    if (
        loss is not None
        and layers
        and len(layers) == len(raw_layers)
        and layers[-1].activation is not None
    ):
        _check_pairing(layers[-1].activation, loss, problems)

    if problems.items:
        raise SpecError(problems.items, source)
    assert input_value is not None and loss is not None
    spec = Spec(
        name=name,
        input=input_value,
        layers=tuple(layers),
        loss=loss,
        dtype=dtype,
        optimizer=optimizer,
        training=training,
    )
    _warn_domains(spec, source)
    return spec


def _warn_domains(spec: Spec, source: str) -> None:
    """A SpecWarning for each user expression defined on only part of the reals."""
    if all(
        ref is None or ref.expr is None
        for ref in (*(layer.activation for layer in spec.layers), spec.loss)
    ):
        return  # only user expressions can be undefined somewhere
    from .engine.domains import domain_warnings

    for warning in domain_warnings(spec):
        warnings.warn(SpecWarning(f"{source}: {warning}"), stacklevel=3)


def _input(value: Any, problems: _Problems) -> int | tuple[int, ...] | None:
    """``input``: a number of features, or a per-sample shape [C, L] / [C, H, W]."""
    if isinstance(value, list | tuple):
        if len(value) in (2, 3) and all(
            _is_int(v) and 0 < v <= MAX_SIZE for v in value
        ):
            return tuple(int(v) for v in value)
        problems.add(
            "input",
            f"a shape must be [channels, length] or [channels, height, width] of "
            f"positive integers, got {list(value)!r}; e.g. input = [1, 8, 8]",
        )
        return None
    return _positive_int(value, "input", problems, "input (number of features)")


def _layer(raw: Any, idx: int, n_layers: int, problems: _Problems) -> Layer | None:
    """Validate one [[layers]] table into a canonical Layer (None if invalid)."""
    where = f"layers[{idx}]"
    if not isinstance(raw, Mapping):
        problems.add(where, f"must be a table with units and activation, got {raw!r}")
        return None
    kind_name = raw.get("kind", DEFAULT_KIND)
    if not isinstance(kind_name, str) or kind_name not in LAYER_INTERFACES:
        names = sorted(LAYER_INTERFACES)
        problems.add(
            where,
            f"unknown layer kind {kind_name!r}{_suggest(str(kind_name), names)}; "
            f"available: {', '.join(names)}",
        )
        return None
    kind = LAYER_INTERFACES[kind_name]
    allowed = [p.name for p in kind.params]
    if kind.activation:
        allowed += ["activation", "residual"]
    if "kind" in raw:
        allowed.insert(0, "kind")
    before = len(problems.items)
    for key in raw:
        if key == "activation" and not kind.activation:
            problems.add(
                where,
                f"a {kind.name} layer takes no activation; remove it (or put the "
                "activation on the layer before)",
            )
        elif key not in allowed:
            choices = allowed + [k for k in ("kind",) if k not in allowed]
            problems.add(
                where,
                f"unknown key '{key}'{_suggest(str(key), choices)} for a {kind.name} "
                f"layer (allowed: {', '.join(allowed)})",
            )
    attrs: dict[str, Any] = {}
    for param in kind.params:
        if param.name not in raw:
            continue
        value = _layer_param(raw[param.name], param, kind, where, problems)
        if value is not None:
            attrs[param.name] = value
    for param in kind.params:
        if param.name in attrs or param.name in raw:
            continue
        if param.required:
            example = "8" if param.type == "int" else "3"
            problems.add(
                where, f"missing '{param.name}'; add e.g. {param.name} = {example}"
            )
        elif param.default_from is not None:
            if param.default_from in attrs:
                attrs[param.name] = attrs[param.default_from]
        else:
            attrs[param.name] = _canonical_size(param.default, param, kind)
    act = None
    if kind.activation:
        if "activation" not in raw:
            problems.add(where, "missing 'activation'; add e.g. activation = \"relu\"")
        else:
            act = _op_ref(
                raw["activation"], where, problems, ACTIVATIONS, "activation", "x"
            )
        if act is not None and act.expr is None:
            op = ACTIVATIONS[act.name]
            if op.output_only and idx != n_layers:
                problems.add(where, f"'{act.name}' is only allowed on the output layer")
            if op.kind != "elementwise" and kind.name != DEFAULT_KIND:
                problems.add(
                    where,
                    f"'{act.name}' works on a vector of outputs, not on a {kind.name} "
                    "layer; use it on the dense output layer",
                )
    residual = _residual(raw.get("residual", False), idx, where, problems)
    if len(problems.items) > before or (kind.activation and act is None):
        return None
    ordered = tuple((p.name, attrs[p.name]) for p in kind.params)
    return Layer(kind.name, ordered, act, residual)


def _residual(value: Any, idx: int, where: str, problems: _Problems) -> int | None:
    """``residual = true`` adds the layer's input; ``residual = K`` the output of
    layer K (0: the network's input); false or absent: none."""
    if value is False:
        return None
    if value is True:
        return idx - 1
    if _is_int(value) and 0 <= value < idx:
        return int(value)
    problems.add(
        where,
        f"residual must be true (add this layer's input), false, or the number of an "
        f"earlier layer whose output to add (0 for the input, 1 to {idx - 1}), "
        f"got {value!r}",
    )
    return None


def _canonical_size(value: Any, param: LayerParam, kind: KindInterface) -> Any:
    if param.type != "size":
        return value
    rank = kind.rank or 1
    return tuple(value for _ in range(rank)) if isinstance(value, int) else tuple(value)


def _layer_param(
    value: Any, param: LayerParam, kind: KindInterface, where: str, problems: _Problems
) -> Any:
    """One attribute checked against its Param: type, per-axis count, minimum."""
    name = f"{param.name}"
    lowest = "positive" if (param.minimum or 0) >= 1 else "non-negative"
    if param.type == "int" or param.type == "size":
        rank = kind.rank or 1
        values = value if isinstance(value, list | tuple) else [value]
        per_axis = param.type == "size" and isinstance(value, list | tuple)
        if per_axis and len(values) != rank:
            problems.add(
                where,
                f"{name} must be an int or a list of {rank} ints (one per axis), "
                f"got {list(value)!r}",
            )
            return None
        if (
            not values
            or not all(_is_int(v) for v in values)
            or (param.type == "int" and isinstance(value, list | tuple))
        ):
            problems.add(where, f"{name} must be a {lowest} integer, got {value!r}")
            return None
        if param.minimum is not None and any(v < param.minimum for v in values):
            problems.add(
                where,
                f"{name} must be a {lowest} integer, got {value!r}; "
                f"use e.g. {int(param.minimum) or 1}",
            )
            return None
        if any(v > MAX_SIZE for v in values):
            problems.add(where, f"{name} is {value!r}; the limit is {MAX_SIZE}")
            return None
        return _canonical_size(value, param, kind) if param.type == "size" else value
    if param.type == "bool":
        if not isinstance(value, bool):
            problems.add(where, f"{name} must be true or false, got {value!r}")
            return None
        return value
    if not _is_number(value):
        problems.add(where, f"{name} must be a finite number, got {value!r}")
        return None
    value = float(value)
    if (param.minimum is not None and value < param.minimum) or (
        param.below is not None and value >= param.below
    ):
        low = "" if param.minimum is None else f">= {param.minimum:g}"
        high = "" if param.below is None else f"< {param.below:g}"
        problems.add(
            where,
            f"{name} must be {' and '.join(filter(None, (low, high)))}, got {value:g}",
        )
        return None
    return value


_AXES = {1: ("length",), 2: ("height", "width")}


def _check_shape(
    layer: Layer, idx: int, shape: tuple[int, ...], problems: _Problems
) -> tuple[int, ...] | None:
    """The layer's output shape for an input of ``shape``, or None after adding
    the problem: a wrong input rank, a window larger than its padded input (an
    output size below 1, with the computed size), pooling padding over half the
    kernel."""
    where = f"layers[{idx}]"
    kind = LAYER_INTERFACES[layer.kind]
    given = "x".join(map(str, shape))
    source = "the input" if idx == 1 else f"layer {idx - 1}"
    if kind.rank is not None and len(shape) != kind.rank + 1:
        if kind.rank == 0:
            problems.add(
                where,
                f"a {kind.name} layer needs a feature vector, but {source} gives "
                f'shape {given}; add a [[layers]] table with kind = "flatten" '
                "before it",
            )
        else:
            wanted = (
                "[channels, length]" if kind.rank == 1 else "[channels, height, width]"
            )
            other = "conv2d/max_pool2d" if kind.rank == 1 else "conv1d/max_pool1d"
            problems.add(
                where,
                f"a {kind.name} layer needs an input of shape {wanted}, but {source} "
                f"gives {given}; give input = {wanted}, or use a {other} layer",
            )
        return None
    attrs = dict(layer.attrs)
    if kind.rank:
        axes = _AXES[kind.rank]
        kernel = attrs.get("kernel", (1,) * kind.rank)
        padding = attrs.get("padding", (0,) * kind.rank)
        stride = attrs.get("stride", (1,) * kind.rank)
        dilation = attrs.get("dilation", (1,) * kind.rank)
        ok = True
        for axis, name in enumerate(axes):
            size, k, p, s, d = (shape[1 + axis], kernel[axis], padding[axis],
                                stride[axis], dilation[axis])  # fmt: skip
            span = d * (k - 1) + 1
            if kind.padding_at_most_half_kernel and p > k // 2:
                problems.add(
                    where,
                    f"padding {p} along the {name} is more than half the kernel {k}; "
                    f"pooling padding must be at most kernel // 2 = {k // 2} (as in torch)",
                )
                ok = False
                continue
            out = output_size(size, k, s, p, d)
            if out < 1:
                spans = f" (dilated by {d}, it spans {span})" if d > 1 else ""
                problems.add(
                    where,
                    f"the kernel {k}{spans} is larger than the padded {name} "
                    f"{size + 2 * p} ({size} + 2 x padding {p}) of {source}'s output "
                    f"{given}: the output {name} would be ({size} + 2*{p} - {d}*({k} - 1)"
                    f" - 1) // {s} + 1 = {out}; use a smaller kernel or more padding",
                )
                ok = False
        if not ok:
            return None
    return kind.output_shape(attrs, shape)


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
