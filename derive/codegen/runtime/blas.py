"""The BLAS gemm a generated module's products call, when some layer uses BLAS.

Everything below the marker line is copied verbatim into such modules, after
their constants (DTYPE).
"""

# ruff: noqa: I001
from .module_names import DTYPE
import numba
import numpy as np
from numba import types
from numba.np.linalg import ensure_blas

# ---- generated modules include everything below this line ----

# Products of BLAS layers call gemm through numba_xxgemm, the C helper behind
# Numba's own np.dot, directly: np.dot compiles layout checks and a function per
# operand layout at every product, a third of the first fit's compile time. The
# arguments are those of BLAS ?gemm (column-major): kind, transa, transb, m, n, k,
# alpha, a, lda, b, ldb, beta, c, ldc. A row-major buffer is its transpose to
# BLAS, so out = left @ right is asked for as out.T = right.T @ left.T.
ensure_blas()  # SciPy's BLAS, with the integer width Numba was built for
_GEMM_ARRAY = types.CPointer(numba.from_dtype(DTYPE))
_xxgemm = types.ExternalFunction(
    "numba_xxgemm",
    types.intc(
        types.char,  # kind: ord("s") float32, ord("d") float64
        types.char,  # transa: ord("N") or ord("T")
        types.char,  # transb
        types.intp,  # m
        types.intp,  # n
        types.intp,  # k
        _GEMM_ARRAY,  # alpha
        _GEMM_ARRAY,  # a
        types.intp,  # lda
        _GEMM_ARRAY,  # b
        types.intp,  # ldb
        _GEMM_ARRAY,  # beta
        _GEMM_ARRAY,  # c
        types.intp,  # ldc
    ),
)
_GEMM_KIND = ord("s" if DTYPE == np.float32 else "d")
_TRANS, _NO_TRANS = ord("T"), ord("N")
_ONE = np.ones(1, dtype=DTYPE)
_ZERO = np.zeros(1, dtype=DTYPE)
