"""Plain NumPy: the same mini-batch loop, one array expression per line."""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from workloads import epoch_order, init_buffers

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


# ------------------------------------------------- conv2d and max_pool2d (NCHW)
def _windows(x: np.ndarray, layer: dict, fill: float) -> np.ndarray:
    """The windows of x (B, C, H, W) padded with ``fill``: a (B, C, H_out, W_out,
    k_h, k_w) view (a convolution's im2col, a pool's windows)."""
    (kh, kw), (sh, sw), (ph, pw) = layer["kernel"], layer["stride"], layer["padding"]
    dh, dw = layer.get("dilation", (1, 1))
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    return sliding_window_view(xp, span, axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]


def _scatter(parts, x_shape: tuple, layer: dict, dtype) -> np.ndarray:
    """The adjoint of :func:`_windows`: ``parts(m, n)`` (B, C, H_out, W_out), the
    gradient of every window's tap (m, n), added back where the tap read."""
    (kh, kw), (sh, sw), (ph, pw) = layer["kernel"], layer["stride"], layer["padding"]
    dh, dw = layer.get("dilation", (1, 1))
    B, C, H, W = x_shape
    dxp = np.zeros((B, C, H + 2 * ph, W + 2 * pw), dtype)
    for m in range(kh):
        for n in range(kw):
            part = parts(m, n)
            Ho, Wo = part.shape[2:]
            rows = slice(m * dh, m * dh + sh * (Ho - 1) + 1, sh)
            cols = slice(n * dw, n * dw + sw * (Wo - 1) + 1, sw)
            dxp[:, :, rows, cols] += part
    return dxp[:, :, ph : ph + H, pw : pw + W]


def conv_forward(x, W, b, layer) -> tuple[np.ndarray, np.ndarray]:
    """(z (B, F, H_out, W_out), the windows): im2col + one tensordot."""
    cols = _windows(x, layer, 0.0)
    z = np.tensordot(cols, W, axes=([1, 4, 5], [1, 2, 3]))  # (B, H_out, W_out, F)
    return z.transpose(0, 3, 1, 2) + b[:, None, None], cols


def conv_backward(dz, cols, W, x_shape, layer, need_dx: bool):
    """(dW, db, dx or None) of :func:`conv_forward`."""
    dW = np.tensordot(dz, cols, axes=([0, 2, 3], [0, 2, 3]))  # (F, C, k_h, k_w)
    db = dz.sum(axis=(0, 2, 3))
    if not need_dx:
        return dW, db, None
    dcols = np.tensordot(dz, W, axes=([1], [0]))  # (B, H_out, W_out, C, k_h, k_w)
    dx = _scatter(
        lambda m, n: dcols[..., m, n].transpose(0, 3, 1, 2), x_shape, layer, dz.dtype
    )
    return dW, db, dx


def pool_forward(x, layer) -> tuple[np.ndarray, np.ndarray]:
    """(y, the first maximum's position in each window), padding as -inf."""
    win = _windows(x, layer, -np.inf)
    flat = win.reshape(*win.shape[:4], -1)
    at = flat.argmax(axis=-1)  # the first maximum: torch's tie rule
    return np.take_along_axis(flat, at[..., None], axis=-1)[..., 0], at


def pool_backward(dy, at, x_shape, layer) -> np.ndarray:
    """Each window's gradient to its first maximum."""
    kw = layer["kernel"][1]
    return _scatter(lambda m, n: dy * (at == m * kw + n), x_shape, layer, dy.dtype)


def mean_loss(workload, params, X, Y, buffers=()) -> float:
    """Full-data mean loss at ``params`` in evaluation mode (batch norm with the
    running statistics ``buffers``, no dropout), in float64 (for the agreement
    check)."""
    params = [np.asarray(p, dtype=np.float64) for p in params]
    buffers = [np.asarray(b, dtype=np.float64) for b in buffers]
    a = np.asarray(X, dtype=np.float64)
    for layer in workload.layers:
        if layer["kind"] == "dense":
            W, b, *params = params
            z = a @ W.T + b
            a = _activate(layer["activation"], z)
        elif layer["kind"] == "batch_norm":
            mean, var, *buffers = buffers
            a = (a - mean) / np.sqrt(var + layer["eps"])
            if layer["affine"]:
                gamma, beta, *params = params
                a = gamma * a + beta
        elif layer["kind"] == "conv2d":
            W, b, *params = params
            a = _activate(layer["activation"], conv_forward(a, W, b, layer)[0])
        elif layer["kind"] == "max_pool2d":
            a = pool_forward(a, layer)[0]
        elif layer["kind"] == "flatten":
            a = a.reshape(len(a), -1)
    return _loss_sum(workload.loss, z, np.asarray(Y, dtype=np.float64)) / len(X)


class TorchOptim:
    """torch.optim's SGD or Adam (its defaults) on a list of arrays, in place."""

    def __init__(self, params: list[np.ndarray], name: str, lr: float):
        self.params, self.name = params, name
        self.lr = np.float32(lr) if params[0].dtype == np.float32 else lr
        self.t = 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        if self.name == "sgd":
            for p, g in zip(self.params, grads, strict=True):
                p -= self.lr * g
            return
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        step_size = self.lr / (1 - beta1**self.t)
        bias2_sqrt = math.sqrt(1 - beta2**self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m *= beta1
            m += (1 - beta1) * g
            v *= beta2
            v += (1 - beta2) * g * g
            p -= step_size * m / (np.sqrt(v) / bias2_sqrt + eps)


def Trainer(workload, params, X, Y, **kwargs):
    """The dense loop (W1-W4), the CNN one (W5, W6), or the layer-by-layer one
    with batch norm and dropout (W7)."""
    if workload.is_cnn:
        return CnnTrainer(workload, params, X, Y, **kwargs)
    cls = DenseTrainer if workload.dense_only else LayersTrainer
    return cls(workload, params, X, Y, **kwargs)


class DenseTrainer:
    def __init__(self, workload, params, X, Y, *, shuffle, batch_size=None):
        self.params = [p.copy() for p in params]
        self.X, self.Y = X, Y
        self.acts = workload.activations
        self.loss = workload.loss
        self.batch_size = batch_size or workload.batch_size
        self.shuffle, self.seed = shuffle, workload.seed
        self.epoch = 0
        self.optim = TorchOptim(self.params, workload.optimizer, workload.lr)

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
        self.optim.step(grads)

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


class LayersTrainer(DenseTrainer):
    """Dense, batch norm and dropout layers: a forward that keeps what the
    backward needs, the textbook batch norm backward, torch's running statistics
    (unbiased variance) and inverted dropout. Masks: ``masks`` (one (n, units)
    array per dropout layer, row r for data row r) if given, else drawn from a
    seeded NumPy generator."""

    def __init__(self, workload, params, X, Y, *, shuffle, batch_size=None,
                 buffers=None, masks=None):  # fmt: skip
        super().__init__(workload, params, X, Y, shuffle=shuffle, batch_size=batch_size)
        self.layers = workload.layers
        self.dtype = X.dtype.type
        self.buffers = (
            [b.copy() for b in buffers] if buffers else init_buffers(workload)
        )
        self.masks = masks
        self.dropout_units = workload.dropout_units
        self.rng = np.random.default_rng(workload.seed)

    def _draw(self, rows: np.ndarray | slice, m: int) -> list[np.ndarray]:
        if self.masks is not None:
            return [mask[rows] for mask in self.masks]
        return [
            (self.rng.random((m, layer_units), dtype=self.dtype) < keep).astype(
                self.dtype
            )
            for layer_units, keep in self.dropout_units
        ]

    def _grads(self, x, y, masks):
        """Batch loss sum and gradients; updates the running statistics."""
        m, one = len(x), self.dtype(1)
        a, tape = x, []
        p_at, b_at, k_at = 0, 0, 0
        for layer in self.layers:
            kind = layer["kind"]
            if kind == "dense":
                W, b = self.params[p_at], self.params[p_at + 1]
                z = a @ W.T + b
                tape.append((kind, layer, p_at, a, _activate(layer["activation"], z)))
                a = tape[-1][-1]
                p_at += 2
            elif kind == "batch_norm":
                mean = a.mean(axis=0)
                xc = a - mean
                var = (xc * xc).mean(axis=0)
                inv = one / np.sqrt(var + self.dtype(layer["eps"]))
                xhat = xc * inv
                mom = self.dtype(layer["momentum"])
                rm, rv = self.buffers[b_at], self.buffers[b_at + 1]
                rm *= one - mom
                rm += mom * mean
                rv *= one - mom
                rv += mom * var * self.dtype(m / (m - 1))
                b_at += 2
                a = xhat
                if layer["affine"]:
                    a = self.params[p_at] * xhat + self.params[p_at + 1]
                tape.append((kind, layer, p_at, xhat, inv))
                p_at += 2 if layer["affine"] else 0
            else:  # dropout
                scaled = masks[k_at] / self.dtype(1 - layer["p"])
                a = a * scaled
                tape.append((kind, layer, None, scaled, None))
                k_at += 1
        total = _loss_sum(self.loss, z, y)
        grads = [None] * len(self.params)
        da = None
        for kind, layer, at, saved, out in reversed(tape):
            if kind == "dense":
                if da is None:  # the head: sigmoid+BCE, softmax+CE
                    dz = (out - y) / self.dtype(m)
                else:
                    dz = da * _derivative(layer["activation"], out)
                grads[at] = dz.T @ saved
                grads[at + 1] = dz.sum(axis=0)
                da = dz @ self.params[at]
            elif kind == "batch_norm":
                xhat, inv = saved, out
                dxhat = da
                if layer["affine"]:
                    grads[at] = (da * xhat).sum(axis=0)
                    grads[at + 1] = da.sum(axis=0)
                    dxhat = da * self.params[at]
                da = (inv / self.dtype(m)) * (
                    self.dtype(m) * dxhat
                    - dxhat.sum(axis=0)
                    - xhat * (dxhat * xhat).sum(axis=0)
                )
            else:
                da = da * saved
        return total, grads

    def loss_and_grad(self, x, y, masks):
        """Batch-mean loss and gradients in the order of params (training mode)."""
        total, grads = self._grads(x, y, masks)
        return total / len(x), grads

    def fit(self, epochs: int) -> np.ndarray:
        n, B = len(self.X), self.batch_size
        history = np.empty(epochs)
        for e in range(epochs):
            order = epoch_order(self.seed, self.epoch, n) if self.shuffle else None
            self.epoch += 1
            total = 0.0
            for start in range(0, n, B):
                rows = (
                    slice(start, start + B)
                    if order is None
                    else order[start : start + B]
                )
                x, y = self.X[rows], self.Y[rows]
                batch_total, grads = self._grads(x, y, self._draw(rows, len(x)))
                total += batch_total
                self._update(grads)
            history[e] = total / n
        return history

    def get_buffers(self) -> list[np.ndarray]:
        return [b.copy() for b in self.buffers]


class CnnTrainer(DenseTrainer):
    """conv2d (im2col with sliding_window_view, tensordot; col2im a loop over
    the taps), max_pool2d (first maximum), flatten and dense layers."""

    def __init__(self, workload, params, X, Y, *, shuffle, batch_size=None):
        super().__init__(workload, params, X, Y, shuffle=shuffle, batch_size=batch_size)
        self.layers = workload.layers

    def _grads(self, x, y):
        """Batch loss sum and gradients of the batch-mean loss."""
        a, tape, at = x, [], 0
        last = len(self.layers) - 1
        for layer in self.layers:
            kind = layer["kind"]
            if kind == "conv2d":
                z, cols = conv_forward(a, *self.params[at : at + 2], layer)
                tape.append((layer, at, a.shape, cols))
                a, at = _activate(layer["activation"], z), at + 2
                tape[-1] += (a,)
            elif kind == "max_pool2d":
                y_pool, where = pool_forward(a, layer)
                tape.append((layer, None, a.shape, where, None))
                a = y_pool
            elif kind == "flatten":
                tape.append((layer, None, a.shape, None, None))
                a = a.reshape(len(a), -1)
            else:
                W, b = self.params[at : at + 2]
                z = a @ W.T + b
                tape.append((layer, at, a.shape, a))
                a, at = _activate(layer["activation"], z), at + 2
                tape[-1] += (a,)
        total = _loss_sum(self.loss, z, y)
        grads = [None] * len(self.params)
        da = None
        for position in range(last, -1, -1):
            layer, at, shape, saved, out = tape[position]
            kind = layer["kind"]
            if kind == "dense":
                dz = (
                    (a - y) / len(x)
                    if da is None
                    else da * _derivative(layer["activation"], out)
                )
                grads[at], grads[at + 1] = dz.T @ saved, dz.sum(axis=0)
                da = dz @ self.params[at]
            elif kind == "flatten":
                da = da.reshape(shape)
            elif kind == "max_pool2d":
                da = pool_backward(da, saved, shape, layer)
            else:
                dz = da * _derivative(layer["activation"], out)
                grads[at], grads[at + 1], da = conv_backward(
                    dz, saved, self.params[at], shape, layer, position > 0
                )
        return total, grads
