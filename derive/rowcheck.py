"""A jitted finiteness check for the fast predict path (``Network.outputs``).

NumPy's ``np.isfinite(X).all()`` costs about 1.3 µs on a single row, as much as
half of a one-row forward; this loop costs the call into Numba (about 0.2 µs).
Imported on the first fast predict, so ``import derive`` does not bring Numba.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def all_finite(X: np.ndarray) -> bool:
    """Whether every value of the 2-D array X (n, features) is finite.

    x * 0 is 0 for finite x and NaN for NaN or +-inf, so the sum of x * 0 is 0
    exactly when every x is finite (no fastmath here: it would fold x * 0)."""
    check = X.dtype.type(0.0)
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            check += X[i, j] * 0
    return check == 0
