"""The shared corpus of example specs, parametrized into every numeric test
(after Tangent's tests/functions.py): the shipped examples, every activation as
a hidden and as an output layer, and every loss head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from derive.ops import ACTIVATIONS
from derive.spec import Spec, load_spec, spec_from_dict

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("*.toml"))

ELEMENTWISE = sorted(n for n, a in ACTIVATIONS.items() if a.kind == "elementwise")

#: (output activation, loss) pairs: every loss head in the op library.
HEADS: list[tuple[Any, Any]] = [
    ("sigmoid", "binary_cross_entropy"),
    ("identity", "bce_with_logits"),
    ("softmax", "cross_entropy"),
    ("identity", "mse"),
    ("tanh", "quadratic"),
    ("identity", "mae"),
    ({"name": "identity"}, {"name": "huber", "delta": 0.5}),
    ("sigmoid", {"expr": "log(cosh(y_hat - y))"}),
]


def make_spec(
    name: str,
    sizes: list[int],
    activations: list[Any],
    loss: Any,
    dtype: str = "float64",
    optimizer: dict[str, Any] | None = None,
) -> Spec:
    """A spec from sizes (input first), one activation per layer, and a loss."""
    loss_table = {"name": loss} if isinstance(loss, str) else loss
    return spec_from_dict(
        {
            "name": name,
            "dtype": dtype,
            "input": sizes[0],
            "layers": [
                {"units": u, "activation": a}
                for u, a in zip(sizes[1:], activations, strict=True)
            ],
            "loss": loss_table,
            "optimizer": optimizer or {"name": "sgd", "lr": 0.1},
        }
    )


#: Convolutional networks (the shipped CNN example joins them from examples/):
#: a strided, padded 2-D stack with average pooling and a sigmoid + BCE head, and
#: a dilated 1-D stack with overlapping max pooling and an mse head.
CNN_CORPUS = {
    "cnn_2d_strided": spec_from_dict(
        {
            "name": "cnn_2d_strided",
            "input": [2, 9, 7],
            "layers": [
                {
                    "kind": "conv2d",
                    "filters": 3,
                    "kernel": 3,
                    "stride": 2,
                    "padding": 1,
                    "activation": "tanh",
                },
                {"kind": "conv2d", "filters": 2, "kernel": [2, 1], "activation": "elu"},
                {"kind": "avg_pool2d", "kernel": 2, "padding": 1},
                {"kind": "flatten"},
                {"units": 2, "activation": "sigmoid"},
            ],
            "loss": {"name": "binary_cross_entropy"},
        }
    ),  # fmt: skip
    "cnn_1d_dilated": spec_from_dict(
        {
            "name": "cnn_1d_dilated",
            "input": [2, 15],
            "layers": [
                {
                    "kind": "conv1d",
                    "filters": 3,
                    "kernel": 3,
                    "dilation": 2,
                    "padding": 2,
                    "activation": "softplus",
                },
                {"kind": "max_pool1d", "kernel": 3, "stride": 2, "padding": 1},
                {
                    "kind": "conv1d",
                    "filters": 2,
                    "kernel": 2,
                    "stride": 3,
                    "activation": "identity",
                },
                {"kind": "flatten"},
                {"units": 3, "activation": "identity"},
            ],
            "loss": {"name": "mse"},
        }
    ),  # fmt: skip
}


#: Networks with training-time layers (batch norm, layer norm, dropout, residual
#: connections), as spec dicts (the torch and NumPy references read them): a
#: feature vector with batch norm, dropout and a residual block; images with
#: batch norm per channel, layer norm and a residual dense layer; a signal with
#: the norms' plain (affine-free) variants and a residual from an earlier layer.
TRAINING_CORPUS: dict[str, dict[str, Any]] = {
    # a feature vector: batch norm per feature, dropout, a residual block
    "vector_bn_dropout_residual": {
        "name": "vector_norms",
        "input": 6,
        "layers": [
            {"units": 5, "activation": "tanh"},
            {"kind": "batch_norm"},
            {"kind": "dropout", "p": 0.25},
            {"units": 5, "activation": "relu", "residual": True},
            {"units": 3, "activation": "softmax"},
        ],
        "loss": {"name": "cross_entropy"},
    },
    # images: batch norm per channel (momentum 0.2), layer norm over a sample,
    # a residual dense layer
    "conv_bn_ln_residual": {
        "name": "conv_norms",
        "input": [2, 6, 6],
        "layers": [
            {
                "kind": "conv2d",
                "filters": 3,
                "kernel": 3,
                "padding": 1,
                "activation": "relu",
            },
            {"kind": "batch_norm", "momentum": 0.2},
            {"kind": "max_pool2d", "kernel": 2},
            {"kind": "layer_norm"},
            {"kind": "flatten"},
            {"units": 4, "activation": "tanh"},
            {"units": 4, "activation": "identity", "residual": True},
        ],
        "loss": {"name": "mse"},
    },
    # no affine parameters; a residual from an earlier layer (layer 1's output)
    "signal_plain_norms": {
        "name": "plain_norms",
        "input": [2, 40],
        "layers": [
            {
                "kind": "conv1d",
                "filters": 2,
                "kernel": 3,
                "padding": 1,
                "activation": "tanh",
            },
            {"kind": "batch_norm", "affine": False, "eps": 1e-3},
            {
                "kind": "conv1d",
                "filters": 2,
                "kernel": 3,
                "padding": 1,
                "activation": "identity",
                "residual": 1,
            },
            {"kind": "layer_norm", "elementwise_affine": False},
            {"kind": "flatten"},
            {"units": 2, "activation": "identity"},
        ],
        "loss": {"name": "mse"},
    },
}


#: Layer norm as layer 1 and batch norm as layer 2 (parameters gamma1, beta1,
#: gamma2, beta2) trained with Adam: the optimizer and torch round-trip tests.
ADAM_NORMS: dict[str, Any] = {
    "name": "adam_norms",
    "input": 3,
    "layers": [
        {"kind": "layer_norm"},
        {"kind": "batch_norm"},
        {"units": 2, "activation": "identity"},
    ],
    "loss": {"name": "mse"},
    "optimizer": {"name": "adam", "lr": 0.01, "betas": [0.8, 0.9]},
}


def _label(x: Any) -> str:
    if isinstance(x, str):
        return x
    return x.get("name") or "expr"


def corpus() -> dict[str, Spec]:
    """Name -> float64 spec for every corpus entry."""
    specs: dict[str, Spec] = {}
    for name in EXAMPLES:
        spec = load_spec(ROOT / "examples" / f"{name}.toml")
        if spec.dtype != "float64":
            spec = spec_from_dict({**spec.to_dict(), "dtype": "float64"})
        specs[f"example_{name}"] = spec
    for act in ELEMENTWISE:
        # As a hidden layer (reached through the delta recursion) ...
        specs[f"hidden_{act}"] = make_spec(
            f"hidden_{act}", [3, 4, 2], [act, "identity"], "mse"
        )
    # ... and as an output layer, two activations per spec to keep compiles few.
    padded = ELEMENTWISE + ["tanh"] * (len(ELEMENTWISE) % 2)
    for first, second in zip(padded[::2], padded[1::2], strict=True):
        specs[f"out_{second}_after_{first}"] = make_spec(
            f"out_{second}_after_{first}", [2, 3, 2], [first, second], "mse"
        )
        specs[f"out_{first}_after_{second}"] = make_spec(
            f"out_{first}_after_{second}", [2, 3, 2], [second, first], "mse"
        )
    specs["user_activation"] = make_spec(
        "user_activation",
        [2, 3, 2],
        [{"expr": "x*tanh(softplus(x))"}, "identity"],
        "mse",
    )
    # equal hidden layers: their kernel code is outlined into shared functions
    specs["deep_uniform"] = make_spec(
        "deep_uniform", [5, 20, 20, 20, 20, 3], ["relu"] * 4 + ["softmax"],
        "cross_entropy",
    )  # fmt: skip
    specs.update(CNN_CORPUS)
    for i, (act, loss) in enumerate(HEADS):
        out = 3 if _label(act) == "softmax" else 2
        specs[f"head_{i}_{_label(loss)}"] = make_spec(
            f"head_{i}_{_label(loss)}", [3, 5, out], ["tanh", act], loss
        )
    return specs


CORPUS = corpus()


def random_targets(module, rows: int, rng: np.random.Generator) -> np.ndarray:
    """Targets that fit the module's loss (probabilities, distributions, or any)."""
    n_out = module.N_OUTPUT
    if module.TARGETS == "distribution":
        return np.eye(n_out)[rng.integers(0, n_out, rows)]
    if module.TARGETS == "probability":
        return rng.uniform(0, 1, (rows, n_out))
    return rng.normal(0, 1, (rows, n_out))


def flat(arrays) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


def finite_difference_grad(
    module, params, X, Y, eps: float = 1e-6, loss=None
) -> list[np.ndarray]:
    """Central finite differences of ``loss(params, X, Y)`` (default module.loss),
    one parameter entry at a time."""
    loss = loss or module.loss
    grads = []
    for p in params:
        g = np.zeros(p.shape)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + eps
            plus = loss(params, X, Y)
            p[idx] = old - eps
            minus = loss(params, X, Y)
            p[idx] = old
            g[idx] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def relative_error(a, b) -> float:
    a, b = flat(a), flat(b)
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / denom) if denom > 0 else 0.0
