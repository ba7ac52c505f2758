"""JAX: the whole fit call (epochs x batches) in one jit, lax.scan over batches.

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


def make_run(acts, loss, optimizer, lr, batch_size, n, shuffle):
    """A jitted ``run(carry, X, Y, orders, epochs) -> (carry, epoch losses)``."""
    import jax
    import jax.numpy as jnp

    full, rem = divmod(n, batch_size)
    hidden = {"tanh": jnp.tanh, "relu": jax.nn.relu}

    def logits(params, x):
        a = x
        for i, (W, b) in enumerate(params):
            z = a @ W.T + b
            a = hidden[acts[i]](z) if i < len(params) - 1 else z
        return z

    def mean_loss(params, x, y):
        z = logits(params, x)
        if loss == "binary_cross_entropy":  # sigmoid output: softplus(z) - y z
            per_row = jnp.sum(jnp.logaddexp(0.0, z) - y * z, axis=1)
        else:  # softmax + cross_entropy: logsumexp(z) - y . z
            per_row = jax.nn.logsumexp(z, axis=1) - jnp.sum(y * z, axis=1)
        return jnp.mean(per_row)

    value_and_grad = jax.value_and_grad(mean_loss)

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

    def step(carry, batch):
        params, opt = carry
        x, y = batch
        value, grads = value_and_grad(params, x, y)
        return update(params, grads, opt), value

    def run(carry, X, Y, orders, epochs):
        def epoch(carry, order):
            Xe, Ye = (X[order], Y[order]) if shuffle else (X, Y)
            xb = Xe[: full * batch_size].reshape(full, batch_size, -1)
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


class Trainer:
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
