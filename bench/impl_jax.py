"""JAX: the whole fit call (epochs x batches) in one jit, lax.scan over batches
(W5, W6: lax.conv_general_dilated and lax.reduce_window).

optax is not installed, so SGD and Adam are written in jax.numpy following
torch.optim's update rules (Adam: bias-corrected, eps outside the square root).
Set XLA_FLAGS before this module imports jax (run.py does it for its workers).
"""

from __future__ import annotations

import numpy as np
from workloads import epoch_order

NAME = "jax"
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam defaults


def version() -> str | None:
    try:
        import jax
    except ImportError:
        return None
    return jax.__version__


def make_update(optimizer, lr):
    """``update(params, grads, opt) -> (params, opt)``: torch.optim's rule."""
    import jax
    import jax.numpy as jnp

    def update(params, grads, opt):
        if optimizer == "sgd":
            new = jax.tree.map(lambda p, g: p - lr * g, params, grads)
            return new, opt
        t, m, v = opt
        t = t + 1.0
        m = jax.tree.map(lambda m, g: BETA1 * m + (1.0 - BETA1) * g, m, grads)
        v = jax.tree.map(lambda v, g: BETA2 * v + (1.0 - BETA2) * g * g, v, grads)
        step_size = lr / (1.0 - BETA1**t)
        bias2_sqrt = jnp.sqrt(1.0 - BETA2**t)
        new = jax.tree.map(
            lambda p, m, v: p - step_size * m / (jnp.sqrt(v) / bias2_sqrt + EPS),
            params, m, v,
        )  # fmt: skip
        return new, (t, m, v)

    return update


def cnn_logits(layers):
    """``logits(params, x)`` of conv2d (lax.conv_general_dilated, NCHW/OIHW),
    max_pool2d (lax.reduce_window), flatten and dense layers; params a (W, b)
    pair per conv2d and dense layer."""
    import jax
    import jax.numpy as jnp

    hidden = {"tanh": jnp.tanh, "relu": jax.nn.relu}
    last = sum(layer["kind"] == "dense" for layer in layers) - 1

    def logits(params, x):
        a, at, dense = x, 0, 0
        for layer in layers:
            kind = layer["kind"]
            if kind == "conv2d":
                W, b = params[at]
                z = jax.lax.conv_general_dilated(
                    a, W, window_strides=layer["stride"],
                    padding=[(p, p) for p in layer["padding"]],
                    rhs_dilation=layer["dilation"],
                    dimension_numbers=("NCHW", "OIHW", "NCHW"),
                ) + b[None, :, None, None]  # fmt: skip
                a, at = hidden[layer["activation"]](z), at + 1
            elif kind == "max_pool2d":
                a = jax.lax.reduce_window(
                    a, -jnp.inf, jax.lax.max, (1, 1, *layer["kernel"]),
                    (1, 1, *layer["stride"]),
                    [(0, 0), (0, 0), *((p, p) for p in layer["padding"])],
                )  # fmt: skip
            elif kind == "flatten":
                a = a.reshape(a.shape[0], -1)
            else:
                W, b = params[at]
                z = a @ W.T + b
                a = hidden[layer["activation"]](z) if dense < last else z
                at, dense = at + 1, dense + 1
        return z

    return logits


def make_run(acts, loss, optimizer, lr, batch_size, n, shuffle, logits=None):
    """A jitted ``run(carry, X, Y, orders, epochs) -> (carry, epoch losses)``;
    the network is ``logits(params, x)`` (default: dense layers with ``acts``)."""
    import jax
    import jax.numpy as jnp

    full, rem = divmod(n, batch_size)
    hidden = {"tanh": jnp.tanh, "relu": jax.nn.relu}

    def dense_logits(params, x):
        a = x
        for i, (W, b) in enumerate(params):
            z = a @ W.T + b
            a = hidden[acts[i]](z) if i < len(params) - 1 else z
        return z

    logits = logits or dense_logits

    def mean_loss(params, x, y):
        z = logits(params, x)
        if loss == "binary_cross_entropy":  # sigmoid output: softplus(z) - y z
            per_row = jnp.sum(jnp.logaddexp(0.0, z) - y * z, axis=1)
        else:  # softmax + cross_entropy: logsumexp(z) - y . z
            per_row = jax.nn.logsumexp(z, axis=1) - jnp.sum(y * z, axis=1)
        return jnp.mean(per_row)

    value_and_grad = jax.value_and_grad(mean_loss)
    update = make_update(optimizer, lr)

    def step(carry, batch):
        params, opt = carry
        x, y = batch
        value, grads = value_and_grad(params, x, y)
        return update(params, grads, opt), value

    def run(carry, X, Y, orders, epochs):
        def epoch(carry, order):
            Xe, Ye = (X[order], Y[order]) if shuffle else (X, Y)
            xb = Xe[: full * batch_size].reshape(full, batch_size, *X.shape[1:])
            yb = Ye[: full * batch_size].reshape(full, batch_size, -1)
            carry, values = jax.lax.scan(step, carry, (xb, yb))
            total = jnp.sum(values) * batch_size
            if rem:
                carry, value = step(
                    carry, (Xe[full * batch_size :], Ye[full * batch_size :])
                )
                total = total + value * rem
            return carry, total / n

        return jax.lax.scan(epoch, carry, orders, length=epochs)

    return jax.jit(run, static_argnames=("epochs",))


def make_layers_run(layers, optimizer, lr, batch_size, n, shuffle, fixed):
    """W7's layers (dense, batch norm, dropout), softmax + cross_entropy: a jitted
    ``run(carry, X, Y, masks, orders, epochs) -> (carry, epoch losses)`` with
    carry (params, opt, running statistics, PRNG key), and a jitted
    ``loss_and_grad(params, x, y, masks)``. Dropout masks come from
    ``jax.random.bernoulli`` (a key split per step) or, with ``fixed``, from the
    ``masks`` arrays (row r for data row r: the agreement check). Batch norm uses
    the batch's mean and biased variance, and updates the running statistics
    with the unbiased one, as torch."""
    import jax
    import jax.numpy as jnp

    full, rem = divmod(n, batch_size)
    hidden = {"tanh": jnp.tanh, "relu": jax.nn.relu}
    last = sum(layer["kind"] == "dense" for layer in layers) - 1
    n_dropout = sum(layer["kind"] == "dropout" for layer in layers)

    def mean_loss(params, x, y, masks):
        a, at, dense, drop, stats = x, 0, 0, 0, []
        for layer in layers:
            if layer["kind"] == "dense":
                z = a @ params[at].T + params[at + 1]
                a = hidden[layer["activation"]](z) if dense < last else z
                at, dense = at + 2, dense + 1
            elif layer["kind"] == "batch_norm":
                mean = jnp.mean(a, axis=0)
                xc = a - mean
                var = jnp.mean(xc * xc, axis=0)
                a = xc / jnp.sqrt(var + layer["eps"])
                if layer["affine"]:
                    a = params[at] * a + params[at + 1]
                    at += 2
                stats.append((mean, var))
            else:
                a = a * masks[drop] * (1.0 / (1.0 - layer["p"]))
                drop += 1
        per_row = jax.nn.logsumexp(z, axis=1) - jnp.sum(y * z, axis=1)
        return jnp.mean(per_row), stats

    value_and_grad = jax.value_and_grad(mean_loss, has_aux=True)
    update = make_update(optimizer, lr)
    momenta = [layer["momentum"] for layer in layers if layer["kind"] == "batch_norm"]
    widths, keeps, width = [], [], None  # of each dropout layer
    for layer in layers:
        if layer["kind"] == "dense":
            width = layer["units"]
        elif layer["kind"] == "dropout":
            widths.append(width)
            keeps.append(1.0 - layer["p"])

    def step(carry, batch):
        params, opt, running, key = carry
        x, y, masks = batch
        if not fixed:
            key, sub = jax.random.split(key)
            subs = jax.random.split(sub, n_dropout)
            masks = [
                jax.random.bernoulli(subs[k], keeps[k], (x.shape[0], units)).astype(
                    x.dtype
                )
                for k, units in enumerate(widths)
            ]
        (value, stats), grads = value_and_grad(params, x, y, masks)
        rows = x.shape[0]
        new_running = []
        for k, (mean, var) in enumerate(stats):
            m = momenta[k]
            new_running.append((1.0 - m) * running[2 * k] + m * mean)
            new_running.append(
                (1.0 - m) * running[2 * k + 1] + m * var * (rows / (rows - 1))
            )
        params, opt = update(params, grads, opt)
        return (params, opt, new_running, key), value

    def run(carry, X, Y, M, orders, epochs):
        def batches(A, stop):
            return A[:stop].reshape(full, batch_size, -1)

        def epoch(carry, order):
            Xe, Ye = (X[order], Y[order]) if shuffle else (X, Y)
            Me = M if fixed else None
            stop = full * batch_size
            mb = [batches(m, stop) for m in Me] if fixed else None
            carry, values = jax.lax.scan(
                step, carry, (batches(Xe, stop), batches(Ye, stop), mb)
            )
            total = jnp.sum(values) * batch_size
            if rem:
                tail = [m[stop:] for m in Me] if fixed else None
                carry, value = step(carry, (Xe[stop:], Ye[stop:], tail))
                total = total + value * rem
            return carry, total / n

        return jax.lax.scan(epoch, carry, orders, length=epochs)

    def loss_and_grad(params, x, y, masks):
        (value, _), grads = value_and_grad(params, x, y, masks)
        return value, grads

    return jax.jit(run, static_argnames=("epochs",)), jax.jit(loss_and_grad)


def Trainer(workload, params, X, Y, **kwargs):
    """The dense program (W1-W4; W5, W6 with cnn_logits), or the one with batch
    norm and dropout (W7)."""
    cls = DenseTrainer if workload.dense_only or workload.is_cnn else LayersTrainer
    return cls(workload, params, X, Y, **kwargs)


class DenseTrainer:
    def __init__(self, workload, params, X, Y, *, shuffle, batch_size=None):
        import jax.numpy as jnp

        self.jnp = jnp
        pairs = [
            (jnp.asarray(params[i]), jnp.asarray(params[i + 1]))
            for i in range(0, len(params), 2)
        ]
        if workload.optimizer == "adam":
            zeros = [(jnp.zeros_like(W), jnp.zeros_like(b)) for W, b in pairs]
            opt = (jnp.float32(0.0), zeros, zeros)
        elif workload.optimizer == "sgd":
            opt = ()
        else:
            raise ValueError(f"jax bench: no optimizer {workload.optimizer!r}")
        self.carry = (pairs, opt)
        self.X, self.Y = jnp.asarray(X), jnp.asarray(Y)
        self.n = len(X)
        self.shuffle, self.seed, self.epoch = shuffle, workload.seed, 0
        self.run = make_run(
            workload.activations, workload.loss, workload.optimizer, workload.lr,
            batch_size or workload.batch_size, self.n, shuffle,
            cnn_logits(workload.layers) if workload.is_cnn else None,
        )  # fmt: skip

    def fit(self, epochs: int) -> np.ndarray:
        orders = None
        if self.shuffle:
            orders = np.stack(
                [epoch_order(self.seed, self.epoch + e, self.n) for e in range(epochs)]
            ).astype(np.int32)
        self.epoch += epochs
        self.carry, losses = self.run(self.carry, self.X, self.Y, orders, epochs=epochs)
        return np.asarray(losses, dtype=np.float64)  # waits for the result

    def get_params(self) -> list[np.ndarray]:
        return [np.asarray(a) for pair in self.carry[0] for a in pair]


class LayersTrainer:
    """W7: batch norm and dropout (make_layers_run); params a flat list in the
    generated module's order."""

    def __init__(self, workload, params, X, Y, *, shuffle, batch_size=None,
                 buffers=None, masks=None):  # fmt: skip
        import jax
        import jax.numpy as jnp
        from workloads import init_buffers

        if masks is not None and shuffle:
            raise ValueError("fixed masks: the agreement run is unshuffled")
        flat = [jnp.asarray(p) for p in params]
        if workload.optimizer == "adam":
            zeros = [jnp.zeros_like(p) for p in flat]
            opt = (jnp.float32(0.0), zeros, zeros)
        else:
            opt = ()
        running = [jnp.asarray(b) for b in (buffers or init_buffers(workload))]
        self.carry = (flat, opt, running, jax.random.key(workload.seed))
        self.X, self.Y = jnp.asarray(X), jnp.asarray(Y)
        self.masks = None if masks is None else [jnp.asarray(m) for m in masks]
        self.n = len(X)
        self.shuffle, self.seed, self.epoch = shuffle, workload.seed, 0
        self.run, self._loss_and_grad = make_layers_run(
            workload.layers, workload.optimizer, workload.lr,
            batch_size or workload.batch_size, self.n, shuffle, masks is not None,
        )  # fmt: skip

    def fit(self, epochs: int) -> np.ndarray:
        orders = None
        if self.shuffle:
            orders = np.stack(
                [epoch_order(self.seed, self.epoch + e, self.n) for e in range(epochs)]
            ).astype(np.int32)
        self.epoch += epochs
        self.carry, losses = self.run(
            self.carry, self.X, self.Y, self.masks, orders, epochs=epochs
        )
        return np.asarray(losses, dtype=np.float64)  # waits for the result

    def loss_and_grad(self, x, y, masks):
        """Training-mode batch loss and gradients in the order of params."""
        value, grads = self._loss_and_grad(self.carry[0], x, y, list(masks))
        return float(value), [np.asarray(g) for g in grads]

    def get_params(self) -> list[np.ndarray]:
        return [np.asarray(p) for p in self.carry[0]]

    def get_buffers(self) -> list[np.ndarray]:
        return [np.asarray(b) for b in self.carry[2]]
