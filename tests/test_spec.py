"""Tests for derive.spec: parsing, validation messages, canonical form and hash."""

from __future__ import annotations

import copy
import dataclasses
import math
import tomllib
from pathlib import Path

import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derive.errors import SpecError
from derive.spec import Spec, load_spec, parse_spec, spec_from_dict

SENTINEL = Path("/tmp/derive_pwned")
EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))

BASE = """\
name = "net"
input = 2

[[layers]]
units = 3
activation = "relu"

[[layers]]
units = 1
activation = "sigmoid"

[loss]
name = "binary_cross_entropy"
"""

RICH = """\
name = "rich_net"
dtype = "float32"
input = 5

[[layers]]
units = 8
activation = { name = "leaky_relu", alpha = 0.2 }

[[layers]]
units = 4
activation = { expr = "x*tanh(log(1 + exp(x)))" }

[[layers]]
units = 6
activation = { expr = "x*k + c", k = 0.5, c = 2 }

[[layers]]
units = 2
activation = { name = "elu", alpha = 1.5 }

[loss]
name = "huber"
delta = 0.5

[optimizer]
name = "adam"
lr = 0.003
betas = [0.8, 0.99]
eps = 1e-7

[training]
epochs = 3
batch_size = 7
shuffle = false
seed = 42
"""


def base() -> dict:
    return tomllib.loads(BASE)


def problems_of(data) -> list[str]:
    with pytest.raises(SpecError) as info:
        spec_from_dict(data)
    probs = info.value.problems
    assert probs, "SpecError without problems"
    assert all(isinstance(p, str) and p for p in probs)
    return probs


def assert_problem(probs: list[str], *words: str) -> None:
    """Some single problem message contains every word (case-insensitive)."""
    low = [p.lower() for p in probs]
    assert any(all(w.lower() in p for w in words) for p in low), (words, probs)


# ------------------------------------------------------------- round trip


@pytest.mark.parametrize("text", [BASE, RICH], ids=["base", "rich"])
def test_round_trip_toml(text):
    spec = parse_spec(text)
    assert isinstance(spec, Spec)
    again = parse_spec(spec.to_toml())
    assert again == spec
    assert again.hash == spec.hash
    assert again.to_toml() == spec.to_toml()  # canonical text is a fixed point
    assert spec_from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_load_and_round_trip(path):
    spec = load_spec(path)
    assert parse_spec(spec.to_toml()) == spec
    assert load_spec(str(path)).hash == spec.hash


def test_examples_exist():
    assert len(EXAMPLES) >= 3


def test_rich_spec_fields():
    spec = parse_spec(RICH)
    assert spec.name == "rich_net"
    assert spec.dtype == "float32"
    assert spec.sizes == (5, 8, 4, 6, 2)
    assert spec.layers[0].activation.params == (("alpha", 0.2),)
    assert spec.layers[1].activation.expr == "x*tanh(log(1 + exp(x)))"
    assert dict(spec.layers[2].activation.params) == {"k": 0.5, "c": 2.0}
    assert spec.loss.name == "huber" and spec.loss.params == (("delta", 0.5),)
    assert spec.optimizer.name == "adam"
    assert spec.optimizer.lr == pytest.approx(0.003)
    assert spec.optimizer.get("betas") == (0.8, 0.99)
    assert spec.training.epochs == 3 and spec.training.shuffle is False
    assert spec.training.seed == 42 and spec.training.batch_size == 7


def test_spec_is_frozen():
    spec = parse_spec(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.layers[0].units = 9  # type: ignore[misc]


def test_hash_is_stable_and_short_hex():
    h1 = parse_spec(BASE).hash
    h2 = parse_spec(BASE).hash
    assert h1 == h2
    assert len(h1) == 16 and all(c in "0123456789abcdef" for c in h1)
    # comments, whitespace and key order do not matter
    reordered = "# comment\n" + BASE.replace(
        'name = "net"\ninput = 2', 'input = 2\nname = "net"'
    )
    assert parse_spec(reordered).hash == h1


def _mut(path, value):
    def apply(d):
        target = d
        for key in path[:-1]:
            target = target.setdefault(key, {}) if isinstance(key, str) else target[key]
        target[path[-1]] = value
        return d

    return apply


HASH_CHANGES = {
    "units": _mut(("layers", 0, "units"), 4),
    "activation": _mut(("layers", 0, "activation"), "tanh"),
    "activation_param": _mut(
        ("layers", 0, "activation"), {"name": "leaky_relu", "alpha": 0.02}
    ),
    "lr": _mut(("optimizer", "lr"), 0.02),
    "momentum": _mut(("optimizer", "momentum"), 0.5),
    "optimizer": _mut(("optimizer", "name"), "adam"),
    "dtype": _mut(("dtype",), "float32"),
    "name": _mut(("name",), "net2"),
    "input": _mut(("input",), 3),
    "epochs": _mut(("training", "epochs"), 11),
    "shuffle": _mut(("training", "shuffle"), False),
    "seed": _mut(("training", "seed"), 1),
    "schedule": _mut(("training", "schedule"), "cosine"),
    "step_size": _mut(("training", "step_size"), 3),
    "gamma": _mut(("training", "gamma"), 0.5),
    "min_lr": _mut(("training", "min_lr"), 1e-5),
    "clip_norm": _mut(("training", "clip_norm"), 1.0),
    "patience": _mut(("training", "patience"), 4),
    "min_delta": _mut(("training", "min_delta"), 1e-3),
    "validation_split": _mut(("training", "validation_split"), 0.2),
    "loss": _mut(("loss", "name"), "mse"),
    "expr": _mut(("layers", 0, "activation"), {"expr": "x*tanh(x)"}),
}


def test_hash_changes_when_any_field_changes():
    base_spec = spec_from_dict(base())
    hashes = {"base": base_spec.hash}
    for label, mutate in HASH_CHANGES.items():
        spec = spec_from_dict(mutate(base()))
        assert spec != base_spec, label
        hashes[label] = spec.hash
    assert len(set(hashes.values())) == len(hashes), hashes


def test_hash_changes_with_activation_param_value():
    def with_alpha(a):
        d = base()
        d["layers"][0]["activation"] = {"name": "leaky_relu", "alpha": a}
        return spec_from_dict(d).hash

    assert with_alpha(0.01) != with_alpha(0.1) != with_alpha(0.2)
    assert with_alpha(0.1) == with_alpha(0.1)


def test_expr_constants_change_hash():
    def with_k(k):
        d = base()
        d["layers"][0]["activation"] = {"expr": "x*k", "k": k}
        return spec_from_dict(d).hash

    assert with_k(0.5) != with_k(0.25)


def test_defaults_are_filled_in():
    d1, d2, d3 = base(), base(), base()
    d1["layers"][0]["activation"] = "leaky_relu"
    d2["layers"][0]["activation"] = {"name": "leaky_relu"}
    d3["layers"][0]["activation"] = {"name": "leaky_relu", "alpha": 0.01}
    s1, s2, s3 = (spec_from_dict(d) for d in (d1, d2, d3))
    assert s1 == s2 == s3
    assert s1.hash == s2.hash == s3.hash
    assert s1.layers[0].activation.params == (("alpha", 0.01),)


@pytest.mark.parametrize(
    ("activation", "param", "default"),
    [("elu", "alpha", 1.0), ("leaky_relu", "alpha", 0.01)],
)
def test_activation_default_param(activation, param, default):
    d = base()
    d["layers"][0]["activation"] = activation
    spec = spec_from_dict(d)
    assert dict(spec.layers[0].activation.params) == {param: default}


def test_loss_default_param_and_table_form():
    d = base()
    d["layers"][1]["activation"] = "identity"
    d["loss"] = "huber"
    spec = spec_from_dict(d)
    assert spec.loss.params == (("delta", 1.0),)
    d["loss"] = {"name": "huber", "delta": 1}
    assert spec_from_dict(d).hash == spec.hash


def test_optimizer_and_training_defaults():
    spec = spec_from_dict(base())
    assert spec.dtype == "float64"
    assert spec.optimizer.name == "sgd"
    assert spec.optimizer.lr == 0.01
    assert spec.training.epochs == 10 and spec.training.batch_size == 32
    assert spec.training.shuffle is True and spec.training.seed == 0
    explicit = base()
    explicit["dtype"] = "float64"
    explicit["optimizer"] = {"name": "sgd", "lr": 0.01, "momentum": 0}
    explicit["training"] = {"epochs": 10, "batch_size": 32, "shuffle": True, "seed": 0}
    assert spec_from_dict(explicit).hash == spec.hash
    # an int lr equals the same float lr
    a, b = base(), base()
    a["optimizer"] = {"lr": 1}
    b["optimizer"] = {"lr": 1.0}
    assert spec_from_dict(a).hash == spec_from_dict(b).hash
    assert isinstance(spec_from_dict(a).optimizer.get("lr"), float)


def test_named_optimizer_defaults():
    d = base()
    d["optimizer"] = {"name": "adam"}
    spec = spec_from_dict(d)
    assert spec.optimizer.lr == 0.001
    assert spec.optimizer.get("betas") == (0.9, 0.999)
    d["optimizer"] = "nesterov"
    spec = spec_from_dict(d)
    assert spec.optimizer.get("nesterov") is True
    assert spec.optimizer.get("momentum") == 0.9


def test_load_spec_reads_file(tmp_path):
    p = tmp_path / "net.toml"
    p.write_text(RICH, encoding="utf-8")
    assert load_spec(p) == parse_spec(RICH)
    assert load_spec(str(p)).hash == parse_spec(RICH).hash


# ---------------------------------------------------------- bad specs


def _set(path, value):
    return _mut(path, value)


def _delete(*path):
    def apply(d):
        target = d
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return d

    return apply


def _rename_top(old, new):
    def apply(d):
        d[new] = d.pop(old)
        return d

    return apply


def _compose(*fs):
    def apply(d):
        for f in fs:
            d = f(d)
        return d

    return apply


_IDENTITY_OUT = _set(("layers", 1, "activation"), "identity")

BAD = {
    "layer_typo": (
        _rename_top("layers", "layer"),
        [["unknown key 'layer'", "did you mean 'layers'"], ["missing 'layers'"]],
    ),
    "optimiser_typo": (
        _set(("optimiser",), {"name": "adam"}),
        [["unknown key 'optimiser'", "did you mean 'optimizer'", "allowed"]],
    ),
    "unknown_top_key": (
        _set(("colour",), 1),
        [["unknown key 'colour'", "allowed: name, dtype, input, layers"]],
    ),
    "unit_typo": (
        _compose(_set(("layers", 0, "unit"), 3), _delete("layers", 0, "units")),
        [
            ["layers[1]", "unknown key 'unit'", "did you mean 'units'"],
            ["missing 'units'"],
        ],
    ),
    "missing_activation": (
        _delete("layers", 1, "activation"),
        [["layers[2]", "missing 'activation'", "activation = "]],
    ),
    "activation_rellu": (
        _set(("layers", 0, "activation"), "rellu"),
        [
            [
                "unknown activation 'rellu'",
                "did you mean 'relu'",
                "available:",
                "sigmoid",
                "tanh",
                "leaky_relu",
                "expr",
            ]
        ],
    ),
    "activation_not_str": (
        _set(("layers", 0, "activation"), 3),
        [["activation must be a name"]],
    ),
    "activation_table_no_name": (
        _set(("layers", 0, "activation"), {"alpha": 1}),
        [["needs 'name'", "or 'expr'"]],
    ),
    "activation_name_and_expr": (
        _set(("layers", 0, "activation"), {"name": "relu", "expr": "x"}),
        [["either 'name' or 'expr'"]],
    ),
    "unknown_loss": (
        _set(("loss", "name"), "msee"),
        [
            [
                "unknown loss 'msee'",
                "did you mean 'mse'",
                "available:",
                "huber",
                "cross_entropy",
            ]
        ],
    ),
    "leaky_alpah": (
        _set(("layers", 0, "activation"), {"name": "leaky_relu", "alpah": 0.1}),
        [
            [
                "'leaky_relu' has no parameter 'alpah'",
                "did you mean 'alpha'",
                "its parameters: alpha",
            ]
        ],
    ),
    "relu_param": (
        _set(("layers", 0, "activation"), {"name": "relu", "alpha": 0.1}),
        [["'relu' has no parameter 'alpha'", "it has none"]],
    ),
    "elu_alpha_zero": (
        _set(("layers", 0, "activation"), {"name": "elu", "alpha": 0}),
        [["elu.alpha must be > 0", "got 0"]],
    ),
    "elu_alpha_negative": (
        _set(("layers", 0, "activation"), {"name": "elu", "alpha": -1.5}),
        [["elu.alpha must be > 0", "-1.5"]],
    ),
    "leaky_alpha_negative": (
        _set(("layers", 0, "activation"), {"name": "leaky_relu", "alpha": -0.1}),
        [["leaky_relu.alpha must be >= 0"]],
    ),
    "param_not_number": (
        _set(("layers", 0, "activation"), {"name": "elu", "alpha": "big"}),
        [["elu.alpha must be a finite number", "'big'"]],
    ),
    "param_nan": (
        _set(("layers", 0, "activation"), {"name": "elu", "alpha": math.nan}),
        [["elu.alpha must be a finite number"]],
    ),
    "huber_delta_zero": (
        _compose(_IDENTITY_OUT, _set(("loss",), {"name": "huber", "delta": 0})),
        [["loss", "huber.delta must be > 0"]],
    ),
    "huber_delta_negative": (
        _compose(_IDENTITY_OUT, _set(("loss",), {"name": "huber", "delta": -1})),
        [["huber.delta must be > 0"]],
    ),
    "units_0": (
        _set(("layers", 0, "units"), 0),
        [["layers[1]", "units must be a positive integer", "0"]],
    ),
    "units_neg": (
        _set(("layers", 0, "units"), -1),
        [["units must be a positive integer", "-1"]],
    ),
    "units_float": (
        _set(("layers", 0, "units"), 2.5),
        [["units must be a positive integer", "2.5"]],
    ),
    "units_str": (
        _set(("layers", 0, "units"), "3"),
        [["units must be a positive integer", "'3'"]],
    ),
    "units_bool": (
        _set(("layers", 0, "units"), True),
        [["units must be a positive integer", "true"]],
    ),
    "input_missing": (_delete("input"), [["missing 'input'", "input = 2"]]),
    "input_zero": (_set(("input",), 0), [["input", "positive integer"]]),
    "input_str": (_set(("input",), "2"), [["input", "positive integer"]]),
    "layers_missing": (_delete("layers"), [["missing 'layers'", "[[layers]]"]]),
    "layers_empty": (_set(("layers",), []), [["layers", "at least one"]]),
    "layers_not_list": (_set(("layers",), "relu"), [["layers", "at least one"]]),
    "layer_not_table": (_set(("layers", 0), 3), [["layers[1]", "must be a table"]]),
    "loss_missing": (_delete("loss"), [["missing 'loss'", "mse"]]),
    "name_missing": (_delete("name"), [["missing 'name'"]]),
    "name_dash": (
        _set(("name",), "my-net"),
        [["name", "python identifier", "'my-net'"]],
    ),
    "name_digit": (_set(("name",), "1net"), [["name", "python identifier"]]),
    "name_keyword": (_set(("name",), "class"), [["name", "python identifier"]]),
    "name_empty": (_set(("name",), ""), [["name", "python identifier"]]),
    "name_int": (_set(("name",), 3), [["name", "python identifier"]]),
    "dtype_float16": (
        _set(("dtype",), "float16"),
        [["dtype", "float32, float64", "float16"]],
    ),
    "dtype_int": (_set(("dtype",), 64), [["dtype", "float32, float64"]]),
    "softmax_hidden": (
        _set(("layers", 0, "activation"), "softmax"),
        [["layers[1]", "'softmax' is only allowed on the output layer"]],
    ),
    "softmax_with_mse": (
        _compose(
            _set(("layers", 1, "activation"), "softmax"), _set(("loss", "name"), "mse")
        ),
        [["loss", "softmax output needs loss cross_entropy", "mse"]],
    ),
    "cross_entropy_with_sigmoid": (
        _set(("loss", "name"), "cross_entropy"),
        [["loss cross_entropy needs a softmax output", "sigmoid"]],
    ),
    "bce_with_identity": (
        _IDENTITY_OUT,
        [
            [
                "binary_cross_entropy needs a sigmoid output",
                "identity",
                "bce_with_logits",
            ]
        ],
    ),
    "bce_logits_with_sigmoid": (
        _set(("loss", "name"), "bce_with_logits"),
        [
            [
                "bce_with_logits needs a identity output",
                "sigmoid",
                'activation = "identity"',
            ]
        ],
    ),
    "bce_with_expr_output": (
        _set(("layers", 1, "activation"), {"expr": "x*tanh(x)"}),
        [["binary_cross_entropy needs a sigmoid output", "expr: x*tanh(x)"]],
    ),
    "optimizer_unknown": (
        _set(("optimizer",), {"name": "adamm"}),
        [["unknown optimizer 'adamm'", "did you mean 'adam'", "available:", "rmsprop"]],
    ),
    "optimizer_not_table": (
        _set(("optimizer",), 3),
        [["optimizer", "must be a table"]],
    ),
    "lr_zero": (_set(("optimizer",), {"lr": 0}), [["optimizer.lr", "must be > 0"]]),
    "lr_negative": (
        _set(("optimizer",), {"lr": -0.1}),
        [["optimizer.lr", "must be > 0"]],
    ),
    "lr_str": (
        _set(("optimizer",), {"lr": "0.1"}),
        [["optimizer.lr", "finite number"]],
    ),
    "lr_inf": (
        _set(("optimizer",), {"lr": math.inf}),
        [["optimizer.lr", "finite number"]],
    ),
    "eps_zero": (
        _set(("optimizer",), {"name": "adam", "eps": 0}),
        [["optimizer.eps", "> 0"]],
    ),
    "momentum_2": (
        _set(("optimizer",), {"momentum": 2}),
        [["optimizer.momentum", "[0, 1]"]],
    ),
    "weight_decay_neg": (
        _set(("optimizer",), {"weight_decay": -1}),
        [["optimizer.weight_decay", ">= 0"]],
    ),
    "betas_one": (
        _set(("optimizer",), {"name": "adam", "betas": [0.9]}),
        [["optimizer.betas", "two numbers in [0, 1)"]],
    ),
    "betas_three": (
        _set(("optimizer",), {"name": "adam", "betas": [0.9, 0.99, 0.5]}),
        [["optimizer.betas", "two numbers"]],
    ),
    "betas_ge_1": (
        _set(("optimizer",), {"name": "adam", "betas": [0.9, 1.0]}),
        [["optimizer.betas", "[0, 1)"]],
    ),
    "betas_negative": (
        _set(("optimizer",), {"name": "adamw", "betas": [-0.1, 0.9]}),
        [["optimizer.betas", "[0, 1)"]],
    ),
    "betas_str": (
        _set(("optimizer",), {"name": "adam", "betas": "0.9,0.99"}),
        [["optimizer.betas", "e.g. [0.9, 0.999]"]],
    ),
    "betas_on_sgd": (
        _set(("optimizer",), {"name": "sgd", "betas": [0.9, 0.99]}),
        [["optimizer", "unknown key 'betas'", "allowed: name, lr, momentum"]],
    ),
    "nesterov_no_momentum": (
        _set(("optimizer",), {"name": "sgd", "nesterov": True}),
        [["nesterov needs momentum > 0", "dampening = 0"]],
    ),
    "nesterov_name_zero_momentum": (
        _set(("optimizer",), {"name": "nesterov", "momentum": 0}),
        [["nesterov needs momentum > 0"]],
    ),
    "nesterov_dampening": (
        _set(("optimizer",), {"name": "nesterov", "dampening": 0.5}),
        [["nesterov needs", "dampening = 0"]],
    ),
    "nesterov_not_bool": (
        _set(("optimizer",), {"name": "sgd", "nesterov": "yes"}),
        [["optimizer.nesterov", "true or false"]],
    ),
    "epochs_zero": (
        _set(("training",), {"epochs": 0}),
        [["training.epochs", "epochs must be a positive integer"]],
    ),
    "batch_size_float": (
        _set(("training",), {"batch_size": 1.5}),
        [["training.batch_size", "positive integer"]],
    ),
    "shuffle_yes": (
        _set(("training",), {"shuffle": "yes"}),
        [["training.shuffle", "true or false", "'yes'"]],
    ),
    "seed_negative": (
        _set(("training",), {"seed": -1}),
        [["training.seed", "non-negative integer"]],
    ),
    "training_unknown_key": (
        _set(("training",), {"epoch": 5}),
        [["training", "unknown key 'epoch'", "did you mean 'epochs'"]],
    ),
    "training_not_table": (_set(("training",), [1]), [["training", "must be a table"]]),
    "schedule_unknown": (
        _set(("training",), {"schedule": "cosin"}),
        [["training.schedule", "unknown schedule 'cosin'", "did you mean 'cosine'"]],
    ),
    "gamma_zero": (
        _set(("training",), {"gamma": 0}),
        [["training.gamma", "in (0, 1]"]],
    ),
    "gamma_above_one": (
        _set(("training",), {"gamma": 1.5}),
        [["training.gamma", "in (0, 1]", "1.5"]],
    ),
    "clip_norm_negative": (
        _set(("training",), {"clip_norm": -1.0}),
        [["training.clip_norm", ">= 0"]],
    ),
    "patience_float": (
        _set(("training",), {"patience": 2.5}),
        [["training.patience", "non-negative integer"]],
    ),
    "validation_split_one": (
        _set(("training",), {"validation_split": 1.0}),
        [["training.validation_split", "in [0, 1)"]],
    ),
    "min_lr_text": (
        _set(("training",), {"min_lr": "small"}),
        [["training.min_lr", "finite number"]],
    ),
    "step_size_zero": (
        _set(("training",), {"step_size": 0}),
        [["training.step_size", "positive integer"]],
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_spec_message(case):
    mutate, expected = BAD[case]
    probs = problems_of(mutate(base()))
    for words in expected:
        assert_problem(probs, *words)


def test_bad_spec_via_toml_text_and_source_name():
    text = BASE.replace("units = 3", "units = 0")
    with pytest.raises(SpecError) as info:
        parse_spec(text, source="my.toml")
    assert info.value.source == "my.toml"
    assert str(info.value).startswith("my.toml: 1 problem:")
    assert_problem(info.value.problems, "units must be a positive integer")


@pytest.mark.parametrize(
    "text",
    [
        'name = "net\ninput = 2\n',
        "name = \n",
        "[[layers]\nunits = 1\n",
        "input = 2\ninput = 3\n",
        "= 3\n",
    ],
)
def test_invalid_toml(text):
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert len(info.value.problems) == 1
    assert_problem(info.value.problems, "not valid TOML", "check quotes and brackets")


def test_load_spec_missing_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(SpecError) as info:
        load_spec(missing)
    assert_problem(info.value.problems, "file not found", "nope.toml", "check the path")
    assert info.value.source == str(missing)


def test_load_spec_undecodable_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_bytes(b'name = "\xff\xfe"\n')
    with pytest.raises(SpecError) as info:
        load_spec(p)
    assert_problem(info.value.problems, "cannot read")


def test_load_spec_directory(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    assert_problem(info.value.problems, "cannot read")


def test_spec_not_a_table():
    for data in ([], "spec", 3, None):
        with pytest.raises(SpecError) as info:
            spec_from_dict(data)  # type: ignore[arg-type]
        assert_problem(info.value.problems, "must be a table")


def test_empty_spec_lists_all_missing_keys():
    probs = problems_of({})
    for key in ("name", "input", "layers", "loss"):
        assert_problem(probs, f"missing '{key}'")


def test_all_problems_reported_together():
    d = base()
    d["colour"] = "red"
    d["name"] = "my net"
    d["dtype"] = "float16"
    d["input"] = 0
    d["layers"][0]["unit"] = d["layers"][0].pop("units")
    d["layers"][1]["activation"] = "sigmod"
    d["loss"] = {"name": "mse", "delta": 1}
    d["optimizer"] = {"name": "adam", "lr": -1, "betas": [2, 3]}
    d["training"] = {"epochs": 0, "shuffle": "yes"}
    with pytest.raises(SpecError) as info:
        spec_from_dict(d)
    probs = info.value.problems
    expected = [
        ("unknown key 'colour'",),
        ("name", "identifier"),
        ("dtype", "float16"),
        ("input", "positive integer"),
        ("unknown key 'unit'", "did you mean 'units'"),
        ("missing 'units'",),
        ("unknown activation 'sigmod'", "did you mean 'sigmoid'"),
        ("loss 'mse' has no parameter 'delta'",),
        ("optimizer.lr",),
        ("optimizer.betas",),
        ("training.epochs",),
        ("training.shuffle",),
    ]
    for words in expected:
        assert_problem(probs, *words)
    assert len(probs) == len(expected)
    assert f"{len(expected)} problems" in str(info.value)
    for p in probs:
        assert p in str(info.value)


def test_problem_count_in_toml_text():
    text = BASE.replace("units = 3", "units = -1").replace('"relu"', '"rellu"')
    text += "[training]\nepochs = 0\n"
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert len(info.value.problems) == 3


# ------------------------------------------------------- user expressions


def _with_activation(act, index=0):
    d = base()
    d["layers"][index]["activation"] = act
    return d


def test_expr_activation_accepted():
    spec = spec_from_dict(_with_activation({"expr": "x*tanh(log(1 + exp(x)))"}))
    ref = spec.layers[0].activation
    assert ref.name == "expr" and ref.expr == "x*tanh(log(1 + exp(x)))"
    assert ref.label == "expr: x*tanh(log(1 + exp(x)))"
    z = sp.Symbol("z", real=True)
    assert spec.activation_def(0).forward(z) == z * sp.tanh(sp.log(1 + sp.exp(z)))
    assert parse_spec(spec.to_toml()) == spec


def test_expr_activation_with_constant():
    spec = spec_from_dict(_with_activation({"expr": "x*k", "k": 0.5}))
    ref = spec.layers[0].activation
    assert ref.params == (("k", 0.5),)
    z = sp.Symbol("z", real=True)
    assert spec.activation_def(0).forward(z) == z / 2
    again = parse_spec(spec.to_toml())
    assert again == spec and again.hash == spec.hash


def test_expr_activation_in_toml_text():
    text = BASE.replace('activation = "relu"', 'activation = { expr = "x*k", k = 0.5 }')
    spec = parse_spec(text)
    assert spec.layers[0].activation.expr == "x*k"


@pytest.mark.parametrize("expr", ["2*tanh(1)", "pi", "1", "k"])
def test_expr_activation_must_use_x(expr):
    act = {"expr": expr, "k": 2} if expr == "k" else {"expr": expr}
    probs = problems_of(_with_activation(act))
    assert_problem(
        probs, "layers[1]", "activation expression refused", "does not use x"
    )


HOSTILE_EXPRS = [
    "__import__('os').system('touch /tmp/derive_pwned')",
    "().__class__.__bases__[0].__subclasses__()",
    "open('/tmp/derive_pwned', 'w')",
    "x.__class__",
    "lambda: x",
    "exec('1') + x",
    "x if x else x",
    "x**10**10",
    "",
]


@pytest.mark.parametrize("expr", HOSTILE_EXPRS)
def test_hostile_expr_refused_by_spec(expr):
    if SENTINEL.exists():
        SENTINEL.unlink()
    probs = problems_of(_with_activation({"expr": expr}))
    assert_problem(probs, "activation expression refused")
    assert not SENTINEL.exists()


def test_hostile_expr_refused_in_toml_text():
    if SENTINEL.exists():
        SENTINEL.unlink()
    text = BASE.replace(
        'activation = "relu"',
        "activation = { expr = "
        "\"__import__('os').system('touch /tmp/derive_pwned')\" }",
    )
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert_problem(
        info.value.problems, "expression refused", "only plain function calls"
    )
    assert not SENTINEL.exists()


@pytest.mark.parametrize(
    ("act", "words"),
    [
        ({"expr": 3}, ["expr must be a string"]),
        ({"expr": "x*k", "k": "a"}, ["constant 'k' must be a finite number"]),
        ({"expr": "x*k", "k": math.inf}, ["constant 'k' must be a finite number"]),
        ({"expr": "x*k", "k": True}, ["constant 'k' must be a finite number"]),
        ({"expr": "x*pi", "pi": 3}, ["constant name 'pi' is not allowed"]),
        ({"expr": "x", "x": 3}, ["constant name 'x' is not allowed"]),
        ({"expr": "x", "my-k": 3}, ["constant name 'my-k' is not allowed"]),
        ({"expr": "x*q"}, ["unknown name 'q'"]),
        ({"expr": "tahn(x)"}, ["did you mean 'tanh'"]),
    ],
)
def test_expr_table_problems(act, words):
    probs = problems_of(_with_activation(act))
    assert_problem(probs, *words)


def test_expr_loss_accepted_and_refused():
    d = base()
    d["loss"] = {"expr": "(y_hat - y)**2 * w", "w": 0.5}
    spec = spec_from_dict(d)
    assert spec.loss.expr == "(y_hat - y)**2 * w"
    assert parse_spec(spec.to_toml()) == spec
    d["loss"] = {"expr": "y**2"}
    assert_problem(problems_of(d), "loss expression refused", "does not use y_hat")
    d["loss"] = {"expr": "x**2"}
    assert_problem(problems_of(d), "loss expression refused", "unknown name 'x'")


# ------------------------------------------------------- regression tests


@pytest.mark.parametrize("name", [[1], {"a": 1}])
def test_optimizer_name_unhashable(name):
    """Regression test: in spec.py _optimizer, `name not in OPTIMIZERS` with an
    unhashable name (list/table) raised TypeError instead of SpecError."""
    d = base()
    d["optimizer"] = {"name": name}
    assert_problem(problems_of(d), "unknown optimizer")


_BIG = "1" + "0" * 400


@pytest.mark.parametrize(
    "extra",
    [
        f"[optimizer]\nlr = {_BIG}\n",
        f'[optimizer]\nname = "adam"\nbetas = [{_BIG}, 0.5]\n',
    ],
)
def test_huge_integer_number(extra):
    """Regression test: in spec.py _is_number, math.isfinite(huge int) raised
    OverflowError (tomllib accepts integers beyond 64 bits) instead of a
    SpecError."""
    with pytest.raises(SpecError):
        parse_spec(BASE + extra)


def test_huge_integer_activation_param():
    """Regression test: spec.py _is_number raised OverflowError for a huge
    integer activation parameter instead of a SpecError."""
    text = BASE.replace(
        'activation = "relu"', f'activation = {{ name = "elu", alpha = {_BIG} }}'
    )
    with pytest.raises(SpecError):
        parse_spec(text)


def test_expr_table_non_string_key():
    """Regression test: in spec.py _op_ref, a non-string key in an expr table
    (possible via spec_from_dict) hit k.isidentifier() -> AttributeError
    instead of a SpecError."""
    problems_of(_with_activation({"expr": "x", 1: 2.0}))


def test_expr_nan_exponent_via_spec():
    """Regression test: exprparse.py _convert (reached through the spec) raised
    TypeError('Invalid NaN comparison') for the NaN constant exponent
    'x**(0/0)' instead of a SpecError."""
    problems_of(_with_activation({"expr": "x**(0/0)"}))


@pytest.mark.parametrize(
    "replace",
    [
        ('name = "net"', 'name = "\U0001d465net"'),
        ('activation = "relu"', 'activation = { expr = "\U0001d465*tanh(x)" }'),
    ],
    ids=["name", "expr"],
)
def test_round_trip_non_bmp(replace):
    """Regression test: spec.py _toml_scalar used json.dumps, which writes
    non-BMP characters as surrogate-pair escapes (\\ud835\\udc65) that TOML
    rejects, so to_toml() of a valid spec did not parse back."""
    spec = parse_spec(BASE.replace(*replace))
    assert parse_spec(spec.to_toml()) == spec


# ---------------------------------------------------------------- hypothesis

_KEYS = [
    "name",
    "dtype",
    "input",
    "layers",
    "loss",
    "optimizer",
    "training",
    "units",
    "activation",
    "expr",
    "alpha",
    "delta",
    "lr",
    "betas",
    "momentum",
    "nesterov",
    "epochs",
    "shuffle",
    "seed",
    "k",
]
_NAMES = ["relu", "sigmoid", "softmax", "identity", "leaky_relu", "elu", "mse", "huber"]
_NAMES += ["cross_entropy", "binary_cross_entropy", "bce_with_logits", "adam", "sgd"]
_NAMES += ["nesterov", "float32", "float64", "x*tanh(x)", "x*k", "y_hat - y", "net"]

_scalars = (
    st.booleans()
    # Unbounded: integers beyond 64 bits are covered too (regression for the
    # OverflowError of test_huge_integer_number).
    | st.integers()
    | st.sampled_from([2**64, -(2**64), 10**400, -(10**400)])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(_NAMES)
)
garbage = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(_KEYS) | st.text(max_size=8), children, max_size=5
        )
    ),
    max_leaves=25,
)


def _check_spec(data) -> None:
    try:
        spec = spec_from_dict(data)
    except SpecError as exc:
        assert exc.problems and all(isinstance(p, str) for p in exc.problems)
        return
    assert isinstance(spec, Spec)
    assert len(spec.hash) == 16


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage)
def test_garbage_data_only_raises_spec_error(data):
    _check_spec(data)


_PATHS = [
    ("name",),
    ("dtype",),
    ("input",),
    ("layers",),
    ("layers", 0),
    ("layers", 0, "units"),
    ("layers", 0, "activation"),
    ("layers", 1, "activation"),
    ("layers", 1, "extra"),
    ("loss",),
    ("loss", "name"),
    ("loss", "delta"),
    ("optimizer",),
    ("optimizer", "name"),
    ("optimizer", "lr"),
    ("optimizer", "betas"),
    ("training",),
    ("training", "epochs"),
    ("training", "shuffle"),
    ("other",),
]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_PATHS), garbage), min_size=1, max_size=3))
def test_mutated_valid_spec_only_raises_spec_error(mutations):
    data = base()
    for path, value in mutations:
        target = data
        ok = True
        for key in path[:-1]:
            if isinstance(key, str):
                if not isinstance(target, dict):
                    ok = False
                    break
                target = target.setdefault(key, {})
            else:
                if not isinstance(target, list) or len(target) <= key:
                    ok = False
                    break
                target = target[key]
        last = path[-1]
        if isinstance(last, str):
            ok = ok and isinstance(target, dict)
        else:  # an earlier mutation may have replaced or shortened the list
            ok = ok and isinstance(target, list) and len(target) > last
        if ok:
            target[last] = copy.deepcopy(value)
    _check_spec(data)


_FRAGMENTS = [
    BASE,
    'name = "net"',
    "input = 2",
    "input = 0",
    "[[layers]]",
    "units = 3",
    "units = 1.5",
    'activation = "relu"',
    'activation = "sigmoid"',
    'activation = "softmax"',
    'activation = { name = "elu", alpha = -1 }',
    'activation = { expr = "x*tanh(x)" }',
    'activation = { expr = "x*k", k = 0.5 }',
    "[loss]",
    'name = "mse"',
    'name = "cross_entropy"',
    "[optimizer]",
    'name = "adam"',
    "lr = 0.1",
    "betas = [0.9, 0.99]",
    "nesterov = true",
    "[training]",
    "epochs = 3",
    'shuffle = "yes"',
    'dtype = "float32"',
    # inputs of the fixed bugs (see the regression tests above)
    f"lr = {_BIG}",
    "name = [1]",
    'name = "\U0001d465"',
    'activation = { expr = "x**(0/0)" }',
    "x = [",
    '"',
    "=",
    "",
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(max_size=80),
        st.lists(st.sampled_from(_FRAGMENTS) | st.text(max_size=10), max_size=12).map(
            "\n".join
        ),
    )
)
def test_random_text_only_raises_spec_error(text):
    try:
        spec = parse_spec(text)
    except SpecError as exc:
        assert exc.problems
        return
    assert isinstance(spec, Spec)
    assert parse_spec(spec.to_toml()) == spec
