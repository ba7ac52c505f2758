"""The generated module: ``derive.build(spec)``, then ``module.fit``."""

from __future__ import annotations

import numpy as np

NAME = "derive"


def version() -> str | None:
    import derive

    return derive.__version__


def epoch_losses(history) -> np.ndarray:
    """fit's per-epoch losses: from the history dict, or the array older modules return."""
    if isinstance(history, dict):
        history = history["loss"]
    return np.asarray(history, dtype=np.float64)


class Trainer:
    """``module.fit`` (dropout masks from the module's seeded generator, running
    statistics in ``buffers``). With ``masks`` (fixed dropout masks, row r of each
    for data row r: the agreement check), fit is a loop of the module's
    ``loss_and_grad(masks=...)`` and torch.optim's update rule in NumPy, since
    the module's fit draws its own masks; the running statistics then stay put
    (loss_and_grad does not update them)."""

    def __init__(self, workload, params, X, Y, *, shuffle, batch_size=None,
                 buffers=None, masks=None):  # fmt: skip
        import derive

        self.module = derive.build(workload.spec())
        self.params = [p.astype(self.module.DTYPE, copy=True) for p in params]
        self.state = self.module.init_state(self.params)
        self.buffers = (
            [b.astype(self.module.DTYPE, copy=True) for b in buffers]
            if buffers
            else self.module.init_buffers()
        )
        self.X = np.ascontiguousarray(X, dtype=self.module.DTYPE)
        self.Y = np.ascontiguousarray(Y, dtype=self.module.DTYPE)
        self.kwargs = dict(
            batch_size=batch_size or workload.batch_size,
            lr=workload.lr,
            shuffle=shuffle,
            seed=workload.seed,
        )
        if self.buffers:
            self.kwargs["buffers"] = self.buffers
        self.masks = masks
        if masks is not None:
            import impl_numpy

            if shuffle:
                raise ValueError("fixed masks: the agreement run is unshuffled")
            self.optim = impl_numpy.TorchOptim(
                self.params, workload.optimizer, workload.lr
            )

    def fit(self, epochs: int) -> np.ndarray:
        if self.masks is not None:
            return self._fit_masked(epochs)
        history = self.module.fit(
            self.params, self.X, self.Y, epochs=epochs, state=self.state, **self.kwargs
        )
        return epoch_losses(history)

    def _fit_masked(self, epochs: int) -> np.ndarray:
        n, B = len(self.X), self.kwargs["batch_size"]
        history = np.empty(epochs)
        for e in range(epochs):
            total = 0.0
            for start in range(0, n, B):
                rows = slice(start, start + B)
                value, grads = self.loss_and_grad(
                    self.X[rows], self.Y[rows], [m[rows] for m in self.masks]
                )
                total += value * len(self.X[rows])
                self.optim.step(grads)
            history[e] = total / n
        return history

    def loss_and_grad(self, x, y, masks):
        """The module's training-mode loss and gradients with these masks."""
        return self.module.loss_and_grad(self.params, x, y, masks=masks)

    def get_params(self) -> list[np.ndarray]:
        return [p.copy() for p in self.params]

    def get_buffers(self) -> list[np.ndarray]:
        return [b.copy() for b in self.buffers]
