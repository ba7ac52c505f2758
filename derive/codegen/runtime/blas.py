"""The BLAS gemm a generated module's products call, when some layer uses BLAS.

Everything below the marker line is copied verbatim into such modules, after
their constants (DTYPE).
"""

# ruff: noqa: I001
import numba
import numpy as np
from numba import types
from numba.np.linalg import ensure_blas

DTYPE = np.float64  # stands for the module's constant, printed before this part

# ---- generated modules include everything below this line ----

# Products of BLAS layers call gemm through numba_xxgemm, the C helper behind
# Numba's own np.dot, directly: np.dot compiles layout checks and a function per
# operand layout at every product, a third of the first fit's compile time. The
# arguments are those of BLAS ?gemm (column-major): kind, transa, transb, m, n, k,
# alpha, a, lda, b, ldb, beta, c, ldc. A row-major buffer is its transpose to
# BLAS, so out = left @ right is asked for as out.T = right.T @ left.T.
ensure_blas()  # SciPy's BLAS, with the integer width Numba was built for
_xxgemm = types.ExternalFunction(
    "numba_xxgemm",
    types.intc(
        types.char,  # kind: ord("s") float32, ord("d") float64
        types.char,  # transa: ord("N") or ord("T")
        types.char,  # transb
        types.intp,  # m
        types.intp,  # n
        types.intp,  # k
        types.voidptr,  # alpha (a pointer to a value of the kind's precision)
        types.voidptr,  # a
        types.intp,  # lda
        types.voidptr,  # b
        types.intp,  # ldb
        types.voidptr,  # beta
        types.voidptr,  # c
        types.intp,  # ldc
    ),
)
_TRANS, _NO_TRANS = ord("T"), ord("N")
_SINGLE, _DOUBLE = ord("s"), ord("d")  # the kinds of sgemm and dgemm
_ONE_S, _ZERO_S = np.ones(1, dtype=np.float32), np.zeros(1, dtype=np.float32)
_ONE_D, _ZERO_D = np.ones(1, dtype=np.float64), np.zeros(1, dtype=np.float64)
# the kind and scalars of the module's own precision, for direct calls
_GEMM_KIND = _SINGLE if DTYPE == np.float32 else _DOUBLE
_ONE, _ZERO = np.ones(1, dtype=DTYPE), np.zeros(1, dtype=DTYPE)


@numba.njit(cache=True, inline="always")
def _gemm(transa, transb, m, n, k, a, lda, b, ldb, c, ldc, accumulate):
    """c = op(a) @ op(b) in BLAS's column-major terms (c += ... if accumulate),
    in the precision of the arrays: sgemm for float32, dgemm for float64. The
    kernels are generic in their arrays' dtype, so the self-test can evaluate a
    float32 module's formulas in float64 (check_gradients)."""
    if c.itemsize == 4:
        beta = _ONE_S if accumulate else _ZERO_S
        _xxgemm(
            _SINGLE,
            transa,
            transb,
            m,
            n,
            k,
            _ONE_S.ctypes,
            a.ctypes,
            lda,
            b.ctypes,
            ldb,
            beta.ctypes,
            c.ctypes,
            ldc,
        )
    else:
        beta = _ONE_D if accumulate else _ZERO_D
        _xxgemm(
            _DOUBLE,
            transa,
            transb,
            m,
            n,
            k,
            _ONE_D.ctypes,
            a.ctypes,
            lda,
            b.ctypes,
            ldb,
            beta.ctypes,
            c.ctypes,
            ldc,
        )
