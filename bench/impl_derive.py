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
    def __init__(self, workload, params, X, Y, *, shuffle, batch_size=None):
        import derive

        self.module = derive.build(workload.spec())
        self.params = [p.astype(self.module.DTYPE, copy=True) for p in params]
        self.state = self.module.init_state(self.params)
        self.X = np.ascontiguousarray(X, dtype=self.module.DTYPE)
        self.Y = np.ascontiguousarray(Y, dtype=self.module.DTYPE)
        self.kwargs = dict(
            batch_size=batch_size or workload.batch_size,
            lr=workload.lr,
            shuffle=shuffle,
            seed=workload.seed,
        )

    def fit(self, epochs: int) -> np.ndarray:
        history = self.module.fit(
            self.params, self.X, self.Y, epochs=epochs, state=self.state, **self.kwargs
        )
        return epoch_losses(history)

    def get_params(self) -> list[np.ndarray]:
        return [p.copy() for p in self.params]
