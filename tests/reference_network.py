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
    if kind == "batch_norm":
        return layer.get("affine", True)
    if kind == "layer_norm":
        return layer.get("elementwise_affine", True)
    return kind == "dense" or kind.startswith("conv")


# ------------------------------------------------------- training-time layers


def _channel_axes(a: np.ndarray) -> tuple[int, ...]:
    """Batch norm's axes: the batch and every axis after the channel."""
    return (0, *range(2, a.ndim))


def _per_channel(v: np.ndarray, a: np.ndarray) -> np.ndarray:
    return v.reshape(1, -1, *([1] * (a.ndim - 2)))


def batch_norm_train(a, gamma, beta, eps):
    """Training mode: (y, cache), statistics over the batch per channel, biased."""
    axes = _channel_axes(a)
    mean = a.mean(axis=axes)
    var = ((a - _per_channel(mean, a)) ** 2).mean(axis=axes)  # two-pass
    xhat = (a - _per_channel(mean, a)) / np.sqrt(_per_channel(var, a) + eps)
    y = _per_channel(gamma, a) * xhat + _per_channel(beta, a)
    return y, (xhat, var, mean)


def batch_norm_backward(dy, cache, gamma, eps):
    """The textbook form: dx = gamma / (N sigma) (N dy - sum dy - xhat sum dy xhat)."""
    xhat, var, _ = cache
    axes = _channel_axes(dy)
    count = dy.size // dy.shape[1]
    dxhat = dy * _per_channel(gamma, dy)
    sigma = np.sqrt(_per_channel(var, dy) + eps)
    dx = (
        count * dxhat
        - _per_channel(dxhat.sum(axis=axes), dy)
        - xhat * _per_channel((dxhat * xhat).sum(axis=axes), dy)
    ) / (count * sigma)
    return dx, (dy * xhat).sum(axis=axes), dy.sum(axis=axes)


def layer_norm_train(a, gamma, beta, eps):
    """Statistics over each sample's features."""
    flat = a.reshape(a.shape[0], -1)
    mean = flat.mean(axis=1, keepdims=True)
    var = ((flat - mean) ** 2).mean(axis=1, keepdims=True)
    xhat = (flat - mean) / np.sqrt(var + eps)
    y = gamma.reshape(1, -1) * xhat + beta.reshape(1, -1)
    return y.reshape(a.shape), (xhat, var)


def layer_norm_backward(dy, cache, gamma, eps):
    xhat, var = cache
    flat = dy.reshape(dy.shape[0], -1)
    n = flat.shape[1]
    dxhat = flat * gamma.reshape(1, -1)
    dx = (
        n * dxhat
        - dxhat.sum(axis=1, keepdims=True)
        - xhat * (dxhat * xhat).sum(axis=1, keepdims=True)
    ) / (n * np.sqrt(var + eps))
    return dx.reshape(dy.shape), (flat * xhat).sum(axis=0), flat.sum(axis=0)


def loss_and_grad(
    spec: Mapping[str, Any],
    params: Sequence[np.ndarray],
    X: np.ndarray,
    Y: np.ndarray,
    masks: Sequence[np.ndarray] | None = None,
    buffers: Sequence[np.ndarray] | None = None,
) -> tuple[float, np.ndarray, list[np.ndarray]]:
    """(batch-mean loss, outputs (n, out), gradients in params' order) of a spec
    dictionary (dense with residual connections, conv, pooling, flatten,
    batch_norm, layer_norm, dropout; mse or softmax + cross_entropy) on inputs X
    of shape (n, *input). Training mode, dropout with ``masks`` (one per dropout
    layer, in order, shaped like the layer's input; none: no dropout), unless
    ``buffers`` (running means and variances, in order) are given: evaluation
    mode then (running statistics, no dropout)."""
    layers = spec["layers"]
    n = X.shape[0]
    a = X.reshape(n, *np.atleast_1d(spec["input"]))
    outputs = [a]
    position, mask_at, state_at = 0, 0, 0
    inputs, zs, layer_params, caches = [], [], [], []
    for layer in layers:
        kind = layer.get("kind", "dense")
        count = 2 if _has_params(layer) else 0
        p = [np.asarray(q, dtype=float) for q in params[position : position + count]]
        position += count
        inputs.append(a)
        cache = None
        eps = layer.get("eps", 1e-5)
        if kind == "batch_norm":
            gamma, beta = p if p else (np.ones(a.shape[1]), np.zeros(a.shape[1]))
            if buffers is None:
                z, cache = batch_norm_train(a, gamma, beta, eps)
            else:
                mean, var = buffers[state_at], buffers[state_at + 1]
                z = (a - _per_channel(mean, a)) / np.sqrt(_per_channel(var, a) + eps)
                z = _per_channel(gamma, a) * z + _per_channel(beta, a)
            state_at += 2
        elif kind == "layer_norm":
            size = a[0].size
            gamma, beta = p if p else (np.ones(size), np.zeros(size))
            z, cache = layer_norm_train(a, gamma, beta, eps)
        elif kind == "dropout":
            keep = 1.0 - layer.get("p", 0.5)
            cache = np.ones_like(a)  # evaluation, or no masks given: identity
            if masks is not None and buffers is None:
                cache = np.asarray(masks[mask_at], dtype=float).reshape(a.shape) / keep
            mask_at += 1
            z = a * cache
        else:
            z, _ = _forward_layer(layer, a, p)
        if layer.get("residual") is not None and layer.get("residual") is not False:
            source = (
                len(outputs) - 1 if layer["residual"] is True else layer["residual"]
            )
            z = z + outputs[source]
        zs.append(z)
        layer_params.append(p)
        caches.append(cache)
        act = layer.get("activation", "identity")
        a = softmax(z, axis=1) if act == "softmax" else ACTIVATIONS[act][0](z)
        outputs.append(a)
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
    if buffers is not None:  # evaluation mode: the loss and outputs only
        return value, a, []
    grads: list[list[np.ndarray]] = [[] for _ in layers]
    # d_out[l]: the gradient of layer l's output a_l (before f' of layer l)
    d_out: list[np.ndarray | float] = [0.0] * (len(layers) + 1)
    for position in range(len(layers) - 1, -1, -1):
        layer = layers[position]
        kind = layer.get("kind", "dense")
        if position < len(layers) - 1:
            act = layer.get("activation", "identity")
            delta = d_out[position + 1] * ACTIVATIONS[act][1](zs[position])
        if layer.get("residual") is not None and layer.get("residual") is not False:
            source = position if layer["residual"] is True else layer["residual"]
            d_out[source] = d_out[source] + delta
        eps = layer.get("eps", 1e-5)
        p = layer_params[position]
        if kind == "batch_norm":
            gamma = p[0] if p else np.ones(inputs[position].shape[1])
            d_input, dgamma, dbeta = batch_norm_backward(
                delta, caches[position], gamma, eps
            )
            grads[position] = [dgamma, dbeta] if p else []
        elif kind == "layer_norm":
            gamma = p[0] if p else np.ones(inputs[position][0].size)
            d_input, dgamma, dbeta = layer_norm_backward(
                delta, caches[position], gamma, eps
            )
            grads[position] = [dgamma, dbeta] if p else []
        elif kind == "dropout":
            d_input, grads[position] = delta * caches[position], []
        else:
            d_input, grads[position] = _backward_layer(
                layer, inputs[position], delta, p
            )
        d_out[position] = d_out[position] + d_input
    return value, a, [g for layer_grads in grads for g in layer_grads]


def batch_statistics(spec: Mapping[str, Any], params, X) -> list[np.ndarray]:
    """Each batch_norm layer's (mean, biased variance) of the training forward
    on X, in layer order (for running-statistics updates)."""
    layers = spec["layers"]
    out: list[np.ndarray] = []
    truncated = dict(spec)
    for position, layer in enumerate(layers):
        if layer.get("kind") != "batch_norm":
            continue
        # the input of this layer: the network cut before it
        partial = {**truncated, "layers": layers[:position]}
        a = _outputs_of(partial, params, X)
        axes = _channel_axes(a)
        mean = a.mean(axis=axes)
        out += [mean, ((a - _per_channel(mean, a)) ** 2).mean(axis=axes)]
    return out


def _outputs_of(spec, params, X):
    """The output of the spec's layers (training mode, no dropout) on X."""
    n = X.shape[0]
    a = X.reshape(n, *np.atleast_1d(spec["input"]))
    outputs = [a]
    position = 0
    for layer in spec["layers"]:
        kind = layer.get("kind", "dense")
        count = 2 if _has_params(layer) else 0
        p = [np.asarray(q, dtype=float) for q in params[position : position + count]]
        position += count
        eps = layer.get("eps", 1e-5)
        if kind == "batch_norm":
            gamma, beta = p if p else (np.ones(a.shape[1]), np.zeros(a.shape[1]))
            z, _ = batch_norm_train(a, gamma, beta, eps)
        elif kind == "layer_norm":
            size = a[0].size
            gamma, beta = p if p else (np.ones(size), np.zeros(size))
            z, _ = layer_norm_train(a, gamma, beta, eps)
        elif kind == "dropout":
            z = a
        else:
            z, _ = _forward_layer(layer, a, p)
        if layer.get("residual") is not None and layer.get("residual") is not False:
            source = (
                len(outputs) - 1 if layer["residual"] is True else layer["residual"]
            )
            z = z + outputs[source]
        act = layer.get("activation", "identity")
        a = softmax(z, axis=1) if act == "softmax" else ACTIVATIONS[act][0](z)
        outputs.append(a)
    return a
