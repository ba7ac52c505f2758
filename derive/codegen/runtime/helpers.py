"""Scalar helpers a generated module defines when its printed formulas call them.

Each function below is copied verbatim (decorator, signature, body) into the
modules whose derived expressions use it; ``HELPERS`` lists them by name, in the
order modules print them. They are jitted with ``inline="always"`` so that Numba
compiles them into each kernel rather than as separate calls.
"""

import math

import numba


@numba.njit(cache=True, error_model="numpy", inline="always")
def _sigmoid(u):
    """1 / (1 + exp(-u)), never exponentiating a large positive number."""
    if u >= 0.0:
        return 1.0 / (1.0 + math.exp(-u))
    e = math.exp(u)
    return e / (1.0 + e)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _softplus(u):
    """log(1 + exp(u)) without overflow: max(u, 0) + log1p(exp(-|u|))."""
    # a conditional expression rather than max: a call Numba compiles separately
    # (this is scalar code; the vectorized tanh clamps keep min/max)
    return (u if u > 0.0 else 0.0) + math.log1p(math.exp(-abs(u)))


@numba.njit(cache=True, error_model="numpy", inline="always")
def _tanh_fast(u):
    """tanh for float32 modules: Eigen's rational approximation (odd degree-13
    numerator over even degree-6 denominator) evaluated in float64, clamped at
    |u| = 9 (float32 tanh is within 1 ulp of +-1 from there). Numba has no vector
    libm here and math.tanh is a scalar call; this one inlines and vectorizes.
    Max error 3 float32 ulp (tests/test_fast_paths.py)."""
    # min/max, not conditional expressions: LLVM vectorizes these clamps
    x = min(max(u, -9.0), 9.0)
    x2 = x * x
    p = x2 * -2.76076847742355e-16 + 2.00018790482477e-13
    p = x2 * p + -8.60467152213735e-11
    p = x2 * p + 5.12229709037114e-08
    p = x2 * p + 1.48572235717979e-05
    p = x2 * p + 6.37261928875436e-04
    p = x2 * p + 4.89352455891786e-03
    q = x2 * 1.19825839466702e-06 + 1.18534705686654e-04
    q = x2 * q + 2.26843463243900e-03
    q = x2 * q + 4.89352518554385e-03
    return min(max(x * p / q, -1.0), 1.0)


#: The helpers by name, in the order a module prints them.
HELPERS = ("_sigmoid", "_softplus", "_tanh_fast")
