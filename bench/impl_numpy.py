"""Plain NumPy: the same mini-batch loop, one array expression per line."""

from __future__ import annotations

import math

import numpy as np
from workloads import epoch_order

NAME = "numpy"


def version() -> str | None:
    return np.__version__


def _activate(name: str, z: np.ndarray) -> np.ndarray:
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(f"numpy bench: no activation {name!r}")


def _derivative(name: str, a: np.ndarray) -> np.ndarray:
    """f'(z) from a = f(z)."""
    if name == "tanh":
        return 1 - a * a
    if name == "relu":
        return (a > 0).astype(a.dtype)
    if name == "sigmoid":
        return a * (1 - a)
    raise ValueError(f"numpy bench: no derivative of {name!r}")


def _loss_sum(loss: str, z: np.ndarray, Y: np.ndarray) -> float:
    """Sum over rows of the per-sample loss, from the output logits (stable forms)."""
    if loss == "binary_cross_entropy":  # sigmoid output
        return float(np.sum(np.logaddexp(0, z) - Y * z))
    if loss == "cross_entropy":  # softmax output
        top = z.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
        return float(np.sum(lse - (Y * z).sum(axis=1)))
    raise ValueError(f"numpy bench: no loss {loss!r}")


def mean_loss(workload, params, X, Y) -> float:
    """Full-data mean loss at ``params``, in float64 (for the agreement check)."""
    params = [np.asarray(p, dtype=np.float64) for p in params]
    a = np.asarray(X, dtype=np.float64)
    acts = workload.activations
    for i in range(len(acts)):
        z = a @ params[2 * i].T + params[2 * i + 1]
        a = _activate(acts[i], z)
    return _loss_sum(workload.loss, z, np.asarray(Y, dtype=np.float64)) / len(X)


class Trainer:
    def __init__(self, workload, params, X, Y, *, shuffle, batch_size=None):
        self.params = [p.copy() for p in params]
        self.X, self.Y = X, Y
        self.acts = workload.activations
        self.loss = workload.loss
        self.lr = np.float32(workload.lr) if X.dtype == np.float32 else workload.lr
        self.optimizer = workload.optimizer
        self.batch_size = batch_size or workload.batch_size
        self.shuffle, self.seed = shuffle, workload.seed
        self.epoch = 0
        self.t = 0
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]

    def _grads(self, x, y):
        """Batch loss sum and gradients of the batch-mean loss."""
        layers = len(self.acts)
        a, outs = x, [x]
        for i in range(layers):
            z = a @ self.params[2 * i].T + self.params[2 * i + 1]
            a = _activate(self.acts[i], z)
            outs.append(a)
        total = _loss_sum(self.loss, z, y)
        delta = (a - y) / len(x)  # sigmoid+BCE and softmax+CE: dL/dz = (a - y) / m
        grads = [None] * (2 * layers)
        for i in reversed(range(layers)):
            grads[2 * i] = delta.T @ outs[i]
            grads[2 * i + 1] = delta.sum(axis=0)
            if i:
                delta = (delta @ self.params[2 * i]) * _derivative(
                    self.acts[i - 1], outs[i]
                )
        return total, grads

    def _update(self, grads):
        self.t += 1
        if self.optimizer == "sgd":
            for p, g in zip(self.params, grads, strict=True):
                p -= self.lr * g
            return
        # torch.optim.Adam with its defaults
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        step_size = self.lr / (1 - beta1**self.t)
        bias2_sqrt = math.sqrt(1 - beta2**self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m *= beta1
            m += (1 - beta1) * g
            v *= beta2
            v += (1 - beta2) * g * g
            p -= step_size * m / (np.sqrt(v) / bias2_sqrt + eps)

    def fit(self, epochs: int) -> np.ndarray:
        n, B = len(self.X), self.batch_size
        history = np.empty(epochs)
        for e in range(epochs):
            order = epoch_order(self.seed, self.epoch, n) if self.shuffle else None
            self.epoch += 1
            total = 0.0
            for start in range(0, n, B):
                if order is None:
                    x, y = self.X[start : start + B], self.Y[start : start + B]
                else:
                    rows = order[start : start + B]
                    x, y = self.X[rows], self.Y[rows]
                batch_total, grads = self._grads(x, y)
                total += batch_total
                self._update(grads)
            history[e] = total / n
        return history

    def get_params(self) -> list[np.ndarray]:
        return [p.copy() for p in self.params]
