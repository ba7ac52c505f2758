"""An independent NumPy reference for whole networks of every layer kind.

Written from PyTorch's semantics with the layer references of
``conv_reference`` (convolution and pooling, checked against torch in
``test_conv_reference``) and textbook dense layers, activations and losses. It
takes the same spec dictionaries and parameter lists as derive and returns the
batch-mean loss, the outputs and every gradient, so the tests can compare the
generated modules against it without touching derive's derivation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import conv_reference as ref
import numpy as np
from scipy.special import log_softmax, softmax

ACTIVATIONS = {
    "identity": (lambda z: z, lambda z: np.ones_like(z)),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "sigmoid": (
        lambda z: 1.0 / (1.0 + np.exp(-z)),
        lambda z: np.exp(-z) / (1.0 + np.exp(-z)) ** 2,
    ),
}


def _pair(value: Any, rank: int) -> Any:
    if rank == 1:
        return value[0] if isinstance(value, list | tuple) else value
    return tuple(value) if isinstance(value, list | tuple) else (value, value)


def _stride(layer: Mapping[str, Any], rank: int) -> Any:
    """torch's defaults: 1 for a convolution, the kernel for pooling."""
    default = 1 if layer["kind"].startswith("conv") else layer["kernel"]
    return _pair(layer.get("stride", default), rank)


def _forward_layer(layer: Mapping[str, Any], a: np.ndarray, params: list[np.ndarray]):
    """(pre-activation output, cache for the backward pass)."""
    kind = layer.get("kind", "dense")
    if kind == "dense":
        W, b = params
        return a @ W.T + b, None
    if kind == "flatten":
        return a.reshape(a.shape[0], -1), a.shape
    rank = 2 if kind.endswith("2d") else 1
    kernel = _pair(layer["kernel"], rank)
    stride = _stride(layer, rank)
    padding = _pair(layer.get("padding", 0), rank)
    if kind.startswith("conv"):
        W, b = params
        dilation = _pair(layer.get("dilation", 1), rank)
        conv = ref.conv2d if rank == 2 else ref.conv1d
        return conv(a, W, b, stride, padding, dilation), None
    if kind.startswith("max_pool"):
        pool = ref.max_pool2d if rank == 2 else ref.max_pool1d
        y, _ = pool(a, kernel, stride, padding)
        return y, None
    pool = ref.avg_pool2d if rank == 2 else ref.avg_pool1d
    return pool(a, kernel, stride, padding), None


def _backward_layer(
    layer: Mapping[str, Any], a: np.ndarray, dz: np.ndarray, params: list[np.ndarray]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(gradient of the layer's input, gradients of its params)."""
    kind = layer.get("kind", "dense")
    if kind == "dense":
        W, _ = params
        return dz @ W, [dz.T @ a, dz.sum(axis=0)]
    if kind == "flatten":
        return dz.reshape(a.shape), []
    rank = 2 if kind.endswith("2d") else 1
    kernel = _pair(layer["kernel"], rank)
    stride = _stride(layer, rank)
    padding = _pair(layer.get("padding", 0), rank)
    if kind.startswith("conv"):
        W, _ = params
        dilation = _pair(layer.get("dilation", 1), rank)
        backward = ref.conv2d_backward if rank == 2 else ref.conv1d_backward
        dx, dW, db = backward(a, W, dz, stride, padding, dilation)
        return dx, [dW, db]
    if kind.startswith("max_pool"):
        backward = ref.max_pool2d_backward if rank == 2 else ref.max_pool1d_backward
        return backward(a, dz, kernel, stride, padding), []
    backward = ref.avg_pool2d_backward if rank == 2 else ref.avg_pool1d_backward
    return backward(a.shape, dz, kernel, stride, padding), []


def _has_params(layer: Mapping[str, Any]) -> bool:
    kind = layer.get("kind", "dense")
    return kind == "dense" or kind.startswith("conv")


def loss_and_grad(
    spec: Mapping[str, Any], params: Sequence[np.ndarray], X: np.ndarray, Y: np.ndarray
) -> tuple[float, np.ndarray, list[np.ndarray]]:
    """(batch-mean loss, outputs (n, out), gradients in params' order) of a spec
    dictionary (dense, conv, pooling, flatten layers; mse or softmax +
    cross_entropy) on inputs X of shape (n, *input)."""
    layers = spec["layers"]
    n = X.shape[0]
    a = X.reshape(n, *np.atleast_1d(spec["input"]))
    position = 0
    inputs, zs, layer_params = [], [], []
    for layer in layers:
        count = 2 if _has_params(layer) else 0
        p = [np.asarray(q, dtype=float) for q in params[position : position + count]]
        position += count
        inputs.append(a)
        z, _ = _forward_layer(layer, a, p)
        zs.append(z)
        layer_params.append(p)
        act = layer.get("activation", "identity")
        a = softmax(z, axis=1) if act == "softmax" else ACTIVATIONS[act][0](z)
    loss_name = spec["loss"]["name"] if isinstance(spec["loss"], dict) else spec["loss"]
    if loss_name == "cross_entropy":
        value = float(-np.mean(np.sum(Y * log_softmax(zs[-1], axis=1), axis=1)))
        delta = (a - Y) / n
    elif loss_name == "mse":
        value = float(np.mean((a - Y) ** 2))
        act = layers[-1].get("activation", "identity")
        delta = 2.0 * (a - Y) / (n * Y.shape[1]) * ACTIVATIONS[act][1](zs[-1])
    else:
        raise ValueError(f"the reference has no loss {loss_name}")
    grads: list[list[np.ndarray]] = [[] for _ in layers]
    for position in range(len(layers) - 1, -1, -1):
        layer = layers[position]
        d_input, grads[position] = _backward_layer(
            layer, inputs[position], delta, layer_params[position]
        )
        if position > 0:
            below = layers[position - 1]
            act = below.get("activation", "identity")
            delta = d_input * ACTIVATIONS[act][1](zs[position - 1])
    return value, a, [g for layer_grads in grads for g in layer_grads]
