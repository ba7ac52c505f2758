"""Demo data generated in-process, so the demo needs no download and no scikit-learn.

``make_circles`` follows scikit-learn's ``sklearn.datasets.make_circles`` step by
step (same point layout, same shuffle, same noise draws from a
``numpy.random.RandomState``), so for an integer seed it returns the same points.
"""

from __future__ import annotations

import numpy as np

#: The demo's dataset: ``two_circles()`` with these arguments.
TWO_CIRCLES = {"n_samples": 1000, "factor": 0.3, "noise": 0.1, "seed": 0}


def make_circles(
    n_samples: int = 100,
    *,
    factor: float = 0.8,
    noise: float | None = None,
    seed: int = 0,
    shuffle: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric circles in 2-D: a large one (label 0) and a small one (label 1).

    Returns ``X`` of shape (n_samples, 2) and integer labels ``y`` of shape
    (n_samples,). The outer circle has radius 1 and ``n_samples // 2`` evenly
    spaced points, the inner one radius ``factor`` and the rest; the rows are then
    shuffled and Gaussian noise of standard deviation ``noise`` is added to every
    coordinate.
    """
    if not 0 <= factor < 1:
        raise ValueError(f"factor must be in [0, 1), got {factor}")
    if n_samples < 2:
        raise ValueError(f"n_samples must be at least 2, got {n_samples}")
    rng = np.random.RandomState(seed)
    n_outer = n_samples // 2
    n_inner = n_samples - n_outer
    angles_outer = np.linspace(0, 2 * np.pi, n_outer, endpoint=False)
    angles_inner = np.linspace(0, 2 * np.pi, n_inner, endpoint=False)
    X = np.vstack(
        [
            np.append(np.cos(angles_outer), np.cos(angles_inner) * factor),
            np.append(np.sin(angles_outer), np.sin(angles_inner) * factor),
        ]
    ).T
    y = np.hstack([np.zeros(n_outer, dtype=np.int64), np.ones(n_inner, dtype=np.int64)])
    if shuffle:
        order = np.arange(n_samples)
        rng.shuffle(order)
        X, y = X[order], y[order]
    if noise is not None:
        X += rng.normal(scale=noise, size=X.shape)
    return X, y


def two_circles() -> tuple[np.ndarray, np.ndarray]:
    """The demo's embedded dataset: 1000 points, factor 0.3, noise 0.1, seed 0.

    ``X`` has shape (1000, 2), ``y`` shape (1000,) with labels 0 (outer circle)
    and 1 (inner circle), 500 of each, in shuffled order.
    """
    return make_circles(
        TWO_CIRCLES["n_samples"],
        factor=TWO_CIRCLES["factor"],
        noise=TWO_CIRCLES["noise"],
        seed=TWO_CIRCLES["seed"],
    )
