"""The fast paths of generated modules compute the same numbers as the plain ones.

- ``_tanh_fast`` (float32 modules only) against the exact tanh, in float32 ulp,
  to the bound its docstring states;
- float64 modules never call a fast approximation;
- a float32 module with the fast tanh against the float64 module and against a
  float32 module generated with the exact ``math.tanh``;
- BLAS (``_gemm``) kernels against explicit-loop kernels, by generating the same
  spec with the lowering's thresholds forced so that every layer is BLAS, and
  so that every layer is loops: predict, loss_and_grad and shuffled fit agree.

Modules generated here are written under derive's cache directory with a name
holding the hash of their source, so a second run reuses Numba's cache.
"""

from __future__ import annotations

import math
import re

import numba
import numpy as np
import pytest
from corpus import make_spec, random_targets
from variants import assert_close_arrays, generate, load

from derive.codegen import lowering, printer
from derive.generate import generate_source
from derive.spec import Spec, spec_from_dict

# make test runs this file in its second tier, at Numba's default level (O3): the
# float32 BLAS and fast-tanh kernels are compared as shipped (fast-math lets LLVM
# reorder sums differently per level).
pytestmark = pytest.mark.optimized


def _generate(spec: Spec, **overrides) -> str:
    return generate(spec, **overrides)


def _load(spec: Spec, **overrides):
    return load("fast_paths", spec, **overrides)


def _with_dtype(spec: Spec, dtype: str) -> Spec:
    return spec_from_dict({**spec.to_dict(), "dtype": dtype})


# ------------------------------------------------------------ _tanh_fast vs tanh

TANH_SPEC = make_spec(
    "fast_tanh", [4, 10, 8, 2], ["tanh", "tanh", "tanh"], "mse", dtype="float32"
)


@pytest.fixture(scope="module")
def tanh_fast():
    """The generated float32 module's _tanh_fast and a jitted loop applying it."""
    module = _load(TANH_SPEC)
    helper = module._tanh_fast

    @numba.njit
    def apply(xs):
        out = np.empty(xs.size, dtype=np.float64)
        for i in range(xs.size):
            out[i] = helper(xs[i])
        return out

    return helper, apply


def _stated_bound(helper) -> float:
    doc = " ".join(helper.py_func.__doc__.split())
    found = re.search(r"Max error (\d+(?:\.\d+)?) float32 ulp", doc)
    assert found, f"_tanh_fast's docstring states no 'Max error N float32 ulp': {doc}"
    return float(found.group(1))


def _ordinal(values: np.ndarray) -> np.ndarray:
    """float32 values as integers in order (adjacent floats differ by 1; +-0 -> 0)."""
    bits = np.asarray(values, dtype=np.float32).view(np.int32).astype(np.int64)
    return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def _ulp_error(xs: np.ndarray, fast: np.ndarray) -> np.ndarray:
    """Distance in float32 ulp between the fast result stored as float32 and the
    exact tanh (float64 np.tanh of the float32 input) rounded to float32."""
    exact = np.tanh(xs.astype(np.float64)).astype(np.float32)
    return np.abs(_ordinal(fast.astype(np.float32)) - _ordinal(exact))


def _neighbours(center: float, count: int = 1 << 16) -> np.ndarray:
    """The `count` float32 values on each side of float32(center), in order."""
    middle = int(_ordinal(np.array([center], dtype=np.float32))[0])
    ordinals = np.arange(middle - count, middle + count + 1, dtype=np.int64)
    bits = np.where(ordinals < 0, -ordinals | 0x80000000, ordinals)
    return bits.astype(np.uint32).view(np.float32)


def _test_inputs() -> list[np.ndarray]:
    """Sorted float32 grids: a dense grid over [-10, 10], every float32 around the
    places where the approximation changes form or is worst, and magnitudes from
    the smallest subnormal to the largest float32."""
    grids = [np.linspace(-10.0, 10.0, 4_000_001, dtype=np.float32)]
    for center in (0.0004, 0.00092, 0.0025, 0.125, 1.0, 7.90531110763549805, 9.0109):
        grids.append(_neighbours(center))
        grids.append(-_neighbours(center)[::-1])
    grids.append(_neighbours(0.0, 1 << 12))  # +-0 and the smallest subnormals
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    magnitudes = np.unique(
        np.concatenate(
            [
                np.geomspace(tiny, np.finfo(np.float32).max, 200_000),
                [1e-38, 1e-20, 1e-8, 0.0004, 7.9053, 7.90531110763549805, 1e30],
            ]
        ).astype(np.float32)
    )
    grids.append(np.concatenate([-magnitudes[::-1], magnitudes]))
    grids.append(np.array([-np.inf, np.inf], dtype=np.float32))
    return grids


def test_tanh_fast_within_stated_ulp_bound(tanh_fast):
    helper, apply = tanh_fast
    bound = _stated_bound(helper)
    # worst (ulp, x) where the rational is evaluated and where it is clamped
    worst = {"|x| < 7.9053": (0, None), "|x| >= 7.9053": (0, None)}
    for xs in _test_inputs():
        errors = _ulp_error(xs, apply(xs))
        inside = np.abs(xs) < np.float32(7.90531110763549805)
        for region, mask in zip(worst, (inside, ~inside), strict=True):
            if mask.any():
                k = int(np.argmax(np.where(mask, errors, -1)))
                if errors[k] > worst[region][0]:
                    worst[region] = (int(errors[k]), float(xs[k]))
    report = "; ".join(f"{r}: {e} ulp at x = {x!r}" for r, (e, x) in worst.items())
    print(f"\n_tanh_fast max error in float32 ulp: {report}")
    measured = max(e for e, _ in worst.values())
    assert measured <= bound, (
        f"_tanh_fast is off by up to {measured} float32 ulp ({report}); "
        f"its docstring states at most {bound:g}"
    )


def test_tanh_fast_is_odd_and_bounded(tanh_fast):
    _, apply = tanh_fast
    for xs in _test_inputs():
        out = apply(xs)
        np.testing.assert_array_equal(apply(-xs), -out)  # f(-x) == -f(x) exactly
        assert np.all(np.abs(out) <= 1.0)


def test_tanh_fast_is_monotone(tanh_fast):
    """Non-decreasing on every sorted grid, as computed and once stored as float32."""
    _, apply = tanh_fast
    for xs in _test_inputs():
        out = apply(xs)
        for values in (out, out.astype(np.float32)):
            steps = np.diff(values)
            down = np.flatnonzero(steps < 0)
            assert down.size == 0, (
                f"_tanh_fast decreases from x = {xs[down[0]]!r} to "
                f"{xs[down[0] + 1]!r} ({values[down[0]]!r} -> {values[down[0] + 1]!r}, "
                f"{values.dtype}); {down.size} such steps on this grid"
            )


def test_tanh_fast_special_points(tanh_fast):
    helper, apply = tanh_fast
    # signed zeros keep their sign, as math.tanh's do
    zeros = apply(np.array([0.0, -0.0], dtype=np.float32))
    assert list(zeros) == [0.0, 0.0] and list(np.signbit(zeros)) == [False, True]
    # tiny and subnormal inputs: tanh(x) rounds to x in float32; the rational's
    # value at 0 is x * (1 - 1.3e-7), so at most 1 float32 ulp below it
    tiny = np.array(
        [1e-45, -1e-45, 1e-40, -3e-39, 1.1754944e-38, 1e-30, -1e-12, 1e-6],
        dtype=np.float32,
    )
    got = apply(tiny).astype(np.float32)
    assert np.all(np.abs(got - tiny) <= np.spacing(np.abs(tiny))), got - tiny
    # infinities and huge values give finite values near +-1 (the ulp bound is
    # checked on them in test_tanh_fast_within_stated_ulp_bound)
    big = np.array([np.inf, -np.inf, 3.4e38, -3.4e38, 1e10, 50.0], dtype=np.float32)
    out = apply(big)
    assert np.all(np.isfinite(out)) and np.all(np.abs(out) <= 1.0)
    np.testing.assert_allclose(out, np.sign(big), rtol=1e-6)
    # NaN propagates, as through math.tanh (a diverging fit stays visible)
    assert math.isnan(helper(np.float32(np.nan)))
    # the helper computes in float64 whatever the argument's type
    xs = np.linspace(-9.0, 9.0, 10_001, dtype=np.float32)
    np.testing.assert_array_equal(apply(xs), apply(xs.astype(np.float64)))


# -------------------------------------------------- fast approximations by dtype


@pytest.mark.parametrize(
    "activation", ["tanh", {"expr": "x*tanh(softplus(x))"}], ids=["tanh", "mish"]
)
def test_only_float32_modules_use_fast_approximations(activation):
    spec64 = make_spec("fast_by_dtype", [2, 3, 1], [activation, "identity"], "mse")
    source64 = generate_source(spec64)
    source32 = generate_source(_with_dtype(spec64, "float32"))
    for exact, fast in printer.FAST_FLOAT32.items():
        assert fast not in source64
        assert f"{exact}(" in source64
        assert f"def {fast}(" in source32 and f"{fast}(" in source32
        # every call in the float32 module's math goes through the approximation
        assert f"{exact}(" not in source32


# ------------------------------------------- fast float32 vs float64 and plain


def _tanh_inputs(rows: int = 23):
    rng = np.random.default_rng(11)
    # wide inputs so the tanh units see their linear, bent and saturated parts
    X = rng.normal(0, 2.0, (rows, TANH_SPEC.sizes[0])).astype(np.float32)
    Y = rng.normal(0, 0.7, (rows, TANH_SPEC.sizes[-1])).astype(np.float32)
    return X, Y


def _tanh_params(module):
    rng = np.random.default_rng(5)
    params = module.init_params(3)
    for p in params[1::2]:
        p[:] = rng.normal(0, 0.5, p.shape)
    return [p.astype(np.float32) for p in params]


_assert_close_arrays = assert_close_arrays


def test_fast_tanh_gradients_agree_with_float64_and_exact_tanh():
    fast32 = _load(TANH_SPEC)
    plain32 = _load(TANH_SPEC, FAST_FLOAT32={})
    exact64 = _load(_with_dtype(TANH_SPEC, "float64"))
    assert fast32.DTYPE == plain32.DTYPE == np.float32
    assert "_tanh_fast" not in dir(plain32) and "_tanh_fast" in dir(fast32)
    X, Y = _tanh_inputs()
    p32 = _tanh_params(exact64)
    p64 = [p.astype(np.float64) for p in p32]  # the same values in both dtypes
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)

    v64, g64 = exact64.loss_and_grad(p64, X64, Y64)
    out64 = exact64.predict(p64, X64)
    for module in (fast32, plain32):
        v32, g32 = module.loss_and_grad(p32, X, Y)
        assert abs(v32 - v64) <= 1e-5 * abs(v64)
        _assert_close_arrays(g32, g64, 1e-5, "grad vs float64")
        _assert_close_arrays([module.predict(p32, X)], [out64], 1e-5, "predict")
    # fast vs exact tanh, both float32: float32 noise only
    vf, gf = fast32.loss_and_grad(p32, X, Y)
    vp, gp = plain32.loss_and_grad(p32, X, Y)
    assert abs(vf - vp) <= 1e-5 * abs(vp)
    _assert_close_arrays(gf, gp, 1e-5, "fast vs exact tanh")


# ------------------------------------------------------------ BLAS vs loop kernels

ALL_BLAS = {"BLAS_MIN_WEIGHTS": 1, "LOOPS_MAX_INPUTS": 0}
ALL_LOOPS = {"BLAS_MIN_WEIGHTS": 10**9, "LOOPS_MAX_INPUTS": 10**9}

KERNEL_SPECS = {
    # softmax + cross-entropy; 120, 576 and 72 weights: the default rule mixes
    # kernels, BLAS for the middle layer only
    "softmax_ce": make_spec(
        "fast_kernels_ce",
        [5, 24, 24, 3],
        ["relu", "tanh", "softmax"],
        "cross_entropy",
        optimizer={"name": "adam", "lr": 0.01},
    ),
    # relu hidden layers in float32 (regression); 96, 256 and 32 weights
    "relu_float32": make_spec(
        "fast_kernels_relu",
        [6, 16, 16, 2],
        ["relu", "relu", "identity"],
        "mse",
        dtype="float32",
        optimizer={"name": "momentum", "lr": 0.05, "momentum": 0.9},
    ),
}
# rows and batch size: the last batch of each epoch is smaller (1 and 2 rows)
KERNEL_DATA = {"softmax_ce": (49, 16), "relu_float32": (50, 16)}


def _kernel_count(source: str) -> int:
    """BLAS calls in a module: through _gemm (by the arrays' dtype) or direct."""
    return source.count("_gemm(_") + source.count("_xxgemm(_GEMM_KIND")


def _compare_kernels(spec: Spec, data: tuple[int, int], reference, other) -> None:
    rtol = 1e-12 if spec.dtype == "float64" else 1e-5
    rows, batch = data
    rng = np.random.default_rng(2)
    X = rng.normal(0, 1, (rows, spec.sizes[0]))
    Y = random_targets(reference, rows, rng)
    params = reference.init_params(4)
    for p in params[1::2]:
        p[:] = rng.normal(0, 0.3, p.shape)

    _assert_close_arrays(
        [other.predict(params, X)], [reference.predict(params, X)], rtol, "predict"
    )
    # one row, a small batch and all rows
    for n in (1, 3, rows):
        v_ref, g_ref = reference.loss_and_grad(params, X[:n], Y[:n])
        v_other, g_other = other.loss_and_grad(params, X[:n], Y[:n])
        assert abs(v_other - v_ref) <= rtol * abs(v_ref)
        _assert_close_arrays(g_other, g_ref, rtol, f"grad ({n} rows)")

    trained = {}
    for key, module in (("reference", reference), ("other", other)):
        p = [q.copy() for q in params]
        history = module.fit(p, X, Y, epochs=4, batch_size=batch, shuffle=True, seed=9)
        trained[key] = (p, history["loss"])
    (p_ref, loss_ref), (p_other, loss_other) = trained["reference"], trained["other"]
    assert any(not np.array_equal(a, b) for a, b in zip(p_ref, params, strict=True))
    _assert_close_arrays([loss_other], [loss_ref], rtol, "fit loss history")
    _assert_close_arrays(p_other, p_ref, rtol, "fit params")


@pytest.mark.parametrize("name", sorted(KERNEL_SPECS))
def test_blas_kernels_agree_with_loops(name):
    spec = KERNEL_SPECS[name]
    n_layers = len(spec.sizes) - 1
    assert _kernel_count(_generate(spec, **ALL_LOOPS)) == 0
    # forward, weight gradient and (above layer 1) delta per layer, in the
    # forward, loss, gradient and training functions
    assert _kernel_count(_generate(spec, **ALL_BLAS)) > 3 * n_layers
    loops = _load(spec, **ALL_LOOPS)
    blas = _load(spec, **ALL_BLAS)
    _compare_kernels(spec, KERNEL_DATA[name], loops, blas)


def test_default_mixed_kernels_agree_with_loops():
    spec = KERNEL_SPECS["softmax_ce"]
    shapes = list(zip(spec.sizes, spec.sizes[1:], strict=False))
    blas_layers = [lowering.uses_blas(n_in, n_out) for n_in, n_out in shapes]
    if all(blas_layers) or not any(blas_layers):
        pytest.skip(f"lowering.uses_blas does not mix kernels on {shapes}")
    mixed = _load(spec)
    loops = _load(spec, **ALL_LOOPS)
    _compare_kernels(spec, KERNEL_DATA["softmax_ce"], loops, mixed)
