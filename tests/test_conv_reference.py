"""Checks of the NumPy conv / pool reference (tests/conv_reference.py).

* against torch.nn.functional in float64 (forward and autograd backward) on a
  grid of shapes, where torch is installed;
* exact tie-breaking of max pooling against torch;
* without torch: finite differences of every backward, and a second,
  differently written formulation of every forward.
"""

from __future__ import annotations

import itertools
import math
import zlib
from dataclasses import dataclass

import conv_reference as ref
import numpy as np
import pytest

TOL = dict(rtol=1e-12, atol=1e-12)


def _rng(case_id: str) -> np.random.Generator:
    # stable per case, independent of test order and of PYTHONHASHSEED
    return np.random.default_rng(zlib.crc32(case_id.encode()))


def _torch():
    return pytest.importorskip("torch")


# ------------------------------------------------------------------ the grid


@dataclass(frozen=True)
class Conv1dCase:
    id: str
    n: int
    C: int
    F: int
    L: int
    k: int
    s: int = 1
    p: int = 0
    d: int = 1
    bias: bool = True


@dataclass(frozen=True)
class Conv2dCase:
    id: str
    n: int
    C: int
    F: int
    H: int
    W: int
    k: tuple[int, int]
    s: tuple[int, int] | int = 1
    p: tuple[int, int] | int = 0
    d: tuple[int, int] | int = 1
    bias: bool = True


@dataclass(frozen=True)
class Pool1dCase:
    id: str
    n: int
    C: int
    L: int
    k: int
    s: int | None = None
    p: int = 0


@dataclass(frozen=True)
class Pool2dCase:
    id: str
    n: int
    C: int
    H: int
    W: int
    k: tuple[int, int] | int
    s: tuple[int, int] | int | None = None
    p: tuple[int, int] | int = 0


CONV1D = [
    # (L + 2p - d(k-1) - 1) % s != 0: trailing input no window reaches
    Conv1dCase("remainder_k7_s3_p2_L16", 2, 3, 4, 16, 7, s=3, p=2),
    Conv1dCase("remainder_k3_s2_L10", 2, 2, 3, 10, 3, s=2),
    Conv1dCase("stride_gt_kernel_k2_s3", 2, 2, 3, 12, 2, s=3),
    Conv1dCase("dilation2_pad1", 2, 3, 2, 13, 3, p=1, d=2),
    Conv1dCase("dilation3_stride2_pad3", 3, 2, 3, 17, 3, s=2, p=3, d=3),
    Conv1dCase("pad_k_minus_1_k4_p3", 2, 2, 2, 8, 4, p=3),
    Conv1dCase("kernel1", 2, 3, 4, 9, 1),
    Conv1dCase("kernel1_stride2_pad1", 2, 3, 4, 9, 1, s=2, p=1),
    Conv1dCase("batch1", 1, 3, 2, 11, 3, s=2, p=1),
    Conv1dCase("channels5_filters7_nobias", 2, 5, 7, 10, 3, p=1, bias=False),
    Conv1dCase("kernel_eq_input", 2, 2, 3, 5, 5),
]

CONV2D = [
    # CMU 10-714 hw: kernel 7, stride 3, pad 2 on 16x16 -> 13 % 3 == 1
    Conv2dCase("cmu10714_k7_s3_p2_16x16", 2, 3, 4, 16, 16, (7, 7), s=3, p=2),
    Conv2dCase("remainder_nonsquare", 2, 2, 3, 12, 11, (3, 2), s=(2, 3), p=(1, 0)),
    Conv2dCase("stride_gt_kernel_k2_s3", 2, 3, 2, 12, 12, (2, 2), s=3),
    Conv2dCase("dilation2_pad2", 2, 2, 3, 12, 12, (3, 3), p=2, d=2),
    Conv2dCase(
        "dilation3x2_nonsquare", 2, 2, 2, 12, 12, (3, 3), s=(1, 2), p=(3, 1), d=(3, 2)
    ),
    Conv2dCase("pad_k_minus_1_k3_p2", 2, 2, 2, 6, 6, (3, 3), p=2),
    Conv2dCase("pad_k_minus_1_nonsquare", 2, 2, 3, 7, 6, (4, 2), p=(3, 1)),
    Conv2dCase("kernel1x1", 2, 3, 4, 6, 5, (1, 1)),
    Conv2dCase("kernel1x1_stride2_pad1", 2, 3, 4, 6, 5, (1, 1), s=2, p=1),
    Conv2dCase("nonsquare_all", 2, 2, 3, 12, 10, (5, 3), s=(2, 1), p=(2, 1), d=(1, 2)),
    Conv2dCase("batch1_channels6_filters8", 1, 6, 8, 8, 8, (3, 3), p=1),
    Conv2dCase("rect_input_nobias", 2, 2, 3, 5, 14, (2, 5), s=(1, 3), bias=False),
    Conv2dCase("typical_4x3x12x12", 4, 3, 5, 12, 12, (3, 3), p=1),
]

POOL1D = [
    Pool1dCase("default_stride_k2", 2, 3, 10, 2),
    Pool1dCase("remainder_k3_s2_L16", 2, 2, 16, 3, s=2),
    Pool1dCase("remainder_k7_s3_p2_L16", 2, 2, 16, 7, s=3, p=2),
    Pool1dCase("default_stride_remainder_k3_L10", 2, 2, 10, 3),
    Pool1dCase("stride_gt_kernel_k2_s3", 2, 3, 12, 2, s=3),
    Pool1dCase("overlap_k3_s1_p1", 2, 2, 9, 3, s=1, p=1),
    Pool1dCase("overlap_k4_s2_p2_maxpad", 2, 2, 11, 4, s=2, p=2),
    Pool1dCase("kernel1", 2, 2, 7, 1),
    Pool1dCase("kernel1_stride2", 2, 2, 7, 1, s=2),
    Pool1dCase("batch1", 1, 4, 12, 3, s=2, p=1),
]

POOL2D = [
    Pool2dCase("default_stride_2x2", 2, 3, 8, 8, 2),
    Pool2dCase("cmu10714_k7_s3_p2_16x16", 2, 2, 16, 16, 7, s=3, p=2),
    Pool2dCase("remainder_nonsquare", 2, 2, 12, 11, (3, 2), s=(2, 1), p=(1, 1)),
    Pool2dCase("default_stride_remainder_k3_11x10", 2, 2, 11, 10, 3),
    Pool2dCase("stride_gt_kernel_k2_s3", 2, 3, 12, 12, 2, s=3),
    Pool2dCase("overlap_k3_s1_p1", 2, 2, 7, 7, 3, s=1, p=1),
    Pool2dCase("overlap_nonsquare", 2, 2, 9, 8, (3, 4), s=(2, 1), p=(1, 2)),
    Pool2dCase("pad_half_kernel_k4_s2_p2", 2, 2, 9, 9, 4, s=2, p=2),
    Pool2dCase("kernel1x1", 2, 2, 5, 6, 1),
    Pool2dCase("kernel1x1_stride2", 2, 2, 5, 6, 1, s=2),
    Pool2dCase("batch1_channels5", 1, 5, 8, 8, 2),
    Pool2dCase("rect_input", 2, 2, 5, 14, (2, 5), s=(1, 3), p=(1, 2)),
    Pool2dCase("typical_4x3x12x12", 4, 3, 12, 12, 3, s=2, p=1),
]


def _ids(cases):
    return [c.id for c in cases]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _pool_stride(c):
    return c.k if c.s is None else c.s


def _conv1d_data(c: Conv1dCase):
    rng = _rng(c.id)
    x = rng.standard_normal((c.n, c.C, c.L))
    W = rng.standard_normal((c.F, c.C, c.k))
    b = rng.standard_normal(c.F) if c.bias else None
    Lo = ref.conv_output_size(c.L, c.k, c.s, c.p, c.d)
    dy = rng.standard_normal((c.n, c.F, Lo))
    return x, W, b, dy


def _conv2d_data(c: Conv2dCase):
    rng = _rng(c.id)
    x = rng.standard_normal((c.n, c.C, c.H, c.W))
    W = rng.standard_normal((c.F, c.C, *c.k))
    b = rng.standard_normal(c.F) if c.bias else None
    (sh, sw), (ph, pw), (dh, dw) = _pair(c.s), _pair(c.p), _pair(c.d)
    Ho = ref.conv_output_size(c.H, c.k[0], sh, ph, dh)
    Wo = ref.conv_output_size(c.W, c.k[1], sw, pw, dw)
    dy = rng.standard_normal((c.n, c.F, Ho, Wo))
    return x, W, b, dy


def _pool1d_data(c: Pool1dCase):
    rng = _rng(c.id)
    x = rng.standard_normal((c.n, c.C, c.L))
    Lo = ref.pool_output_size(c.L, c.k, _pool_stride(c), c.p)
    dy = rng.standard_normal((c.n, c.C, Lo))
    return x, dy


def _pool2d_data(c: Pool2dCase):
    rng = _rng(c.id)
    x = rng.standard_normal((c.n, c.C, c.H, c.W))
    (kh, kw), (sh, sw), (ph, pw) = _pair(c.k), _pair(_pool_stride(c)), _pair(c.p)
    Ho = ref.pool_output_size(c.H, kh, sh, ph)
    Wo = ref.pool_output_size(c.W, kw, sw, pw)
    dy = rng.standard_normal((c.n, c.C, Ho, Wo))
    return x, dy


def test_grid_covers_the_required_cases():
    def rem(L, k, s, p, d=1):
        return (L + 2 * p - d * (k - 1) - 1) % s

    assert any(rem(c.L, c.k, c.s, c.p, c.d) for c in CONV1D)
    assert any(
        rem(c.H, c.k[0], *[_pair(v)[0] for v in (c.s, c.p, c.d)]) for c in CONV2D
    )
    assert any(c.s > c.k for c in CONV1D)
    assert any(_pair(c.d)[0] == 3 or _pair(c.d)[1] == 3 for c in CONV2D)
    assert any(c.p == c.k - 1 for c in CONV1D)
    assert any(c.k == (1, 1) for c in CONV2D)
    assert any(c.k[0] != c.k[1] and _pair(c.s)[0] != _pair(c.s)[1] for c in CONV2D)
    assert any(_pool_stride(c) < c.k for c in POOL1D)
    assert any(c.n == 1 for c in CONV1D + CONV2D + POOL1D + POOL2D)
    cmu = next(c for c in CONV2D if c.id.startswith("cmu10714"))
    assert (cmu.H, cmu.k, cmu.s, cmu.p) == (16, (7, 7), 3, 2)
    assert rem(16, 7, 3, 2) == 1


# ------------------------------------------------------------ torch: conv


def _t(torch, a, grad=False):
    if a is None:
        return None
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


@pytest.mark.parametrize("c", CONV1D, ids=_ids(CONV1D))
def test_conv1d_matches_torch(c: Conv1dCase):
    torch = _torch()
    x, W, b, dy = _conv1d_data(c)
    xt, Wt, bt = _t(torch, x, True), _t(torch, W, True), _t(torch, b, True)
    yt = torch.nn.functional.conv1d(xt, Wt, bt, stride=c.s, padding=c.p, dilation=c.d)
    yt.backward(_t(torch, dy))

    y = ref.conv1d(x, W, b, stride=c.s, padding=c.p, dilation=c.d)
    assert y.shape == tuple(yt.shape)
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL)

    dx, dW, db = ref.conv1d_backward(x, W, dy, stride=c.s, padding=c.p, dilation=c.d)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)
    np.testing.assert_allclose(dW, Wt.grad.numpy(), **TOL)
    if b is not None:
        np.testing.assert_allclose(db, bt.grad.numpy(), **TOL)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2)), **TOL)


@pytest.mark.parametrize("c", CONV2D, ids=_ids(CONV2D))
def test_conv2d_matches_torch(c: Conv2dCase):
    torch = _torch()
    x, W, b, dy = _conv2d_data(c)
    xt, Wt, bt = _t(torch, x, True), _t(torch, W, True), _t(torch, b, True)
    yt = torch.nn.functional.conv2d(xt, Wt, bt, stride=c.s, padding=c.p, dilation=c.d)
    yt.backward(_t(torch, dy))

    y = ref.conv2d(x, W, b, stride=c.s, padding=c.p, dilation=c.d)
    assert y.shape == tuple(yt.shape)
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL)

    dx, dW, db = ref.conv2d_backward(x, W, dy, stride=c.s, padding=c.p, dilation=c.d)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)
    np.testing.assert_allclose(dW, Wt.grad.numpy(), **TOL)
    if b is not None:
        np.testing.assert_allclose(db, bt.grad.numpy(), **TOL)


@pytest.mark.parametrize("c", CONV1D, ids=_ids(CONV1D))
def test_conv_output_size_1d_matches_torch(c: Conv1dCase):
    torch = _torch()
    x, W, _, _ = _conv1d_data(c)
    y = torch.nn.functional.conv1d(_t(torch, x), _t(torch, W), None, c.s, c.p, c.d)
    assert y.shape[2] == ref.conv_output_size(c.L, c.k, c.s, c.p, c.d)


@pytest.mark.parametrize("c", CONV2D, ids=_ids(CONV2D))
def test_conv_output_size_2d_matches_torch(c: Conv2dCase):
    torch = _torch()
    x, W, _, _ = _conv2d_data(c)
    y = torch.nn.functional.conv2d(_t(torch, x), _t(torch, W), None, c.s, c.p, c.d)
    (sh, sw), (ph, pw), (dh, dw) = _pair(c.s), _pair(c.p), _pair(c.d)
    assert y.shape[2] == ref.conv_output_size(c.H, c.k[0], sh, ph, dh)
    assert y.shape[3] == ref.conv_output_size(c.W, c.k[1], sw, pw, dw)


def test_conv_output_size_exhaustive_small_matches_torch():
    """Every (L, k, s, p, d) with a valid output in a small box."""
    torch = _torch()
    F = torch.nn.functional
    for L, k, s, p, d in itertools.product(
        range(1, 9), range(1, 5), range(1, 4), range(0, 4), range(1, 4)
    ):
        expect = ref.conv_output_size(L, k, s, p, d)
        x = torch.zeros(1, 1, L, dtype=torch.float64)
        w = torch.zeros(1, 1, k, dtype=torch.float64)
        if expect < 1:
            with pytest.raises(RuntimeError):
                F.conv1d(x, w, None, s, p, d)
            with pytest.raises(ValueError):
                ref.conv1d(x.numpy(), w.numpy(), None, s, p, d)
        else:
            assert F.conv1d(x, w, None, s, p, d).shape[2] == expect, (L, k, s, p, d)


# ------------------------------------------------------------ torch: pooling


@pytest.mark.parametrize("c", POOL1D, ids=_ids(POOL1D))
def test_max_pool1d_matches_torch(c: Pool1dCase):
    torch = _torch()
    x, dy = _pool1d_data(c)
    xt = _t(torch, x, True)
    yt, it = torch.nn.functional.max_pool1d(xt, c.k, c.s, c.p, return_indices=True)
    yt.backward(_t(torch, dy))

    y, am = ref.max_pool1d(x, c.k, c.s, c.p)
    assert y.shape == tuple(yt.shape)
    np.testing.assert_array_equal(y, yt.detach().numpy())  # a max is a copy: exact
    np.testing.assert_array_equal(am, it.numpy())
    dx = ref.max_pool1d_backward(x, dy, c.k, c.s, c.p)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)
    assert y.shape[2] == ref.pool_output_size(c.L, c.k, _pool_stride(c), c.p)


@pytest.mark.parametrize("c", POOL2D, ids=_ids(POOL2D))
def test_max_pool2d_matches_torch(c: Pool2dCase):
    torch = _torch()
    x, dy = _pool2d_data(c)
    xt = _t(torch, x, True)
    yt, it = torch.nn.functional.max_pool2d(xt, c.k, c.s, c.p, return_indices=True)
    yt.backward(_t(torch, dy))

    y, am = ref.max_pool2d(x, c.k, c.s, c.p)
    assert y.shape == tuple(yt.shape)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(am, it.numpy())
    dx = ref.max_pool2d_backward(x, dy, c.k, c.s, c.p)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)


@pytest.mark.parametrize("c", POOL1D, ids=_ids(POOL1D))
def test_avg_pool1d_matches_torch(c: Pool1dCase):
    torch = _torch()
    x, dy = _pool1d_data(c)
    xt = _t(torch, x, True)
    yt = torch.nn.functional.avg_pool1d(xt, c.k, c.s, c.p, count_include_pad=True)
    yt.backward(_t(torch, dy))

    y = ref.avg_pool1d(x, c.k, c.s, c.p)
    assert y.shape == tuple(yt.shape)
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL)
    dx = ref.avg_pool1d_backward(x.shape, dy, c.k, c.s, c.p)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)


@pytest.mark.parametrize("c", POOL2D, ids=_ids(POOL2D))
def test_avg_pool2d_matches_torch(c: Pool2dCase):
    torch = _torch()
    x, dy = _pool2d_data(c)
    xt = _t(torch, x, True)
    yt = torch.nn.functional.avg_pool2d(xt, c.k, c.s, c.p, count_include_pad=True)
    yt.backward(_t(torch, dy))

    y = ref.avg_pool2d(x, c.k, c.s, c.p)
    assert y.shape == tuple(yt.shape)
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL)
    dx = ref.avg_pool2d_backward(x.shape, dy, c.k, c.s, c.p)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_padding_limit_matches_torch(kind):
    """torch refuses padding > kernel // 2 (per axis); so does the reference."""
    torch = _torch()
    F = torch.nn.functional
    t1 = {
        "max": lambda x, k, s, p: F.max_pool1d(x, k, s, p, return_indices=True),
        "avg": F.avg_pool1d,
    }[kind]
    t2 = {
        "max": lambda x, k, s, p: F.max_pool2d(x, k, s, p, return_indices=True),
        "avg": F.avg_pool2d,
    }[kind]
    r1 = {"max": ref.max_pool1d, "avg": ref.avg_pool1d}[kind]
    r2 = {"max": ref.max_pool2d, "avg": ref.avg_pool2d}[kind]
    x1 = np.zeros((1, 1, 9))
    x2 = np.zeros((1, 1, 9, 9))
    for k in range(1, 6):
        for p in range(0, k + 1):
            ok = p <= k // 2
            for tf, rf, x, kk, pp in [
                (t1, r1, x1, k, p),
                (t2, r2, x2, (k, 2), (p, 0)),
                (t2, r2, x2, (2, k), (0, p)),
            ]:
                if ok:
                    tf(_t(torch, x), kk, 1, pp)
                    rf(x, kk, 1, pp)
                else:
                    with pytest.raises(RuntimeError, match="at most half"):
                        tf(_t(torch, x), kk, 1, pp)
                    with pytest.raises(ValueError, match="at most half"):
                        rf(x, kk, 1, pp)


# ------------------------------------------------------ torch: exact ties

TIE_CONFIGS_1D = [
    (3, 1, 1),  # overlapping, padded
    (3, 2, 1),
    (4, 2, 2),
    (2, None, 0),
    (3, 3, 0),
    (5, 1, 2),
]
TIE_CONFIGS_2D = [
    (3, 1, 1),
    ((3, 2), (1, 2), (1, 1)),
    (2, None, 0),
    (4, 2, 2),
    ((2, 4), 1, (0, 2)),
]


def _tie_inputs_1d():
    rng = np.random.default_rng(7)
    return {
        "zeros": np.zeros((2, 2, 10)),
        "int_repeats": rng.integers(0, 3, (2, 3, 10)).astype(float),
        "negative_int_repeats": -rng.integers(1, 3, (2, 2, 10)).astype(float),
        "all_minus_inf": np.full((1, 2, 10), -np.inf),
        "plateaus": np.array([[[1, 2, 2, 2, 1, 3, 3, 0, 3, 3]]], dtype=float),
    }


def _tie_inputs_2d():
    rng = np.random.default_rng(8)
    return {
        "zeros": np.zeros((2, 2, 7, 8)),
        "int_repeats": rng.integers(0, 3, (2, 3, 7, 8)).astype(float),
        "negative_int_repeats": -rng.integers(1, 3, (2, 2, 7, 8)).astype(float),
        "all_minus_inf": np.full((1, 1, 7, 8), -np.inf),
        "binary": rng.integers(0, 2, (2, 2, 7, 8)).astype(float),
    }


def _int_dy(shape, seed):
    # integer-valued upstream gradient: accumulation is exact in any order,
    # so dx can be compared bit for bit
    return np.random.default_rng(seed).integers(-5, 6, shape).astype(float)


@pytest.mark.parametrize(
    "cfg", TIE_CONFIGS_1D, ids=[f"k{k}_s{s}_p{p}" for k, s, p in TIE_CONFIGS_1D]
)
def test_max_pool1d_ties_exactly_as_torch(cfg):
    torch = _torch()
    k, s, p = cfg
    for name, x in _tie_inputs_1d().items():
        xt = _t(torch, x, True)
        yt, it = torch.nn.functional.max_pool1d(xt, k, s, p, return_indices=True)
        dy = _int_dy(tuple(yt.shape), 1)
        yt.backward(_t(torch, dy))
        y, am = ref.max_pool1d(x, k, s, p)
        np.testing.assert_array_equal(y, yt.detach().numpy(), err_msg=name)
        np.testing.assert_array_equal(am, it.numpy(), err_msg=name)
        dx = ref.max_pool1d_backward(x, dy, k, s, p)
        np.testing.assert_array_equal(dx, xt.grad.numpy(), err_msg=name)
        # and torch's other max_pool1d path (no indices returned) has the same gradient
        xt2 = _t(torch, x, True)
        torch.nn.functional.max_pool1d(xt2, k, s, p).backward(_t(torch, dy))
        np.testing.assert_array_equal(dx, xt2.grad.numpy(), err_msg=name)


@pytest.mark.parametrize(
    "cfg", TIE_CONFIGS_2D, ids=[f"k{k}_s{s}_p{p}" for k, s, p in TIE_CONFIGS_2D]
)
def test_max_pool2d_ties_exactly_as_torch(cfg):
    torch = _torch()
    k, s, p = cfg
    for name, x in _tie_inputs_2d().items():
        xt = _t(torch, x, True)
        yt, it = torch.nn.functional.max_pool2d(xt, k, s, p, return_indices=True)
        dy = _int_dy(tuple(yt.shape), 2)
        yt.backward(_t(torch, dy))
        y, am = ref.max_pool2d(x, k, s, p)
        np.testing.assert_array_equal(y, yt.detach().numpy(), err_msg=name)
        np.testing.assert_array_equal(am, it.numpy(), err_msg=name)
        dx = ref.max_pool2d_backward(x, dy, k, s, p)
        np.testing.assert_array_equal(dx, xt.grad.numpy(), err_msg=name)


def test_max_pool_nan_as_torch():
    """torch's CPU kernel takes a value if it is > the best so far *or NaN*:
    NaN propagates and the last NaN of a window wins."""
    torch = _torch()
    F = torch.nn.functional
    nan = np.nan
    x1 = np.array([[[1.0, nan, 3.0, nan, 0.0, 2.0, nan]]])
    for k, s, p in [(5, None, 0), (3, 1, 1), (2, 1, 0)]:
        xt = _t(torch, x1, True)
        yt, it = F.max_pool1d(xt, k, s, p, return_indices=True)
        dy = _int_dy(tuple(yt.shape), 3)
        yt.backward(_t(torch, dy))
        y, am = ref.max_pool1d(x1, k, s, p)
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_array_equal(am, it.numpy())
        np.testing.assert_array_equal(
            ref.max_pool1d_backward(x1, dy, k, s, p), xt.grad.numpy()
        )
    x2 = np.array([[[[1.0, nan, 0.0], [nan, 0.0, 5.0], [2.0, 2.0, nan]]]])
    for k, s, p in [(2, 1, 0), (3, 1, 1), (2, None, 1)]:
        xt = _t(torch, x2, True)
        yt, it = F.max_pool2d(xt, k, s, p, return_indices=True)
        dy = _int_dy(tuple(yt.shape), 4)
        yt.backward(_t(torch, dy))
        y, am = ref.max_pool2d(x2, k, s, p)
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_array_equal(am, it.numpy())
        np.testing.assert_array_equal(
            ref.max_pool2d_backward(x2, dy, k, s, p), xt.grad.numpy()
        )


# -------------------------------------------------- no torch: hand values


def test_conv_output_size_hand_values():
    assert ref.conv_output_size(16, 7, 3, 2, 1) == 5  # CMU 10-714: 13 // 3 + 1
    assert ref.conv_output_size(10, 3, 2, 0, 1) == 4
    assert ref.conv_output_size(12, 3, 1, 2, 2) == 12  # dilated "same"
    assert ref.conv_output_size(5, 1, 2, 1, 1) == 4
    assert ref.conv_output_size(3, 5, 1, 0, 1) == -1  # does not fit
    assert ref.pool_output_size(10, 3, 3, 0) == 3


def test_small_hand_examples():
    x = np.arange(5, dtype=float).reshape(1, 1, 5)  # 0 1 2 3 4
    W = np.array([[[1.0, 10.0]]])
    # stride 2, pad 1: windows [pad,0] [1,2] [3,4]
    np.testing.assert_array_equal(
        ref.conv1d(x, W, None, stride=2, padding=1), [[[0.0, 21.0, 43.0]]]
    )
    # dilation 2: x[o] + 10 x[o+2]
    np.testing.assert_array_equal(
        ref.conv1d(x, W, np.array([0.5]), dilation=2), [[[20.5, 31.5, 42.5]]]
    )
    y, am = ref.max_pool1d(
        -x - 1, 2, padding=1
    )  # all negative: padding (-inf) never wins
    np.testing.assert_array_equal(y, [[[-1.0, -2.0, -4.0]]])
    np.testing.assert_array_equal(am, [[[0, 1, 3]]])
    np.testing.assert_array_equal(
        ref.avg_pool1d(x + 1, 2, padding=1), [[[0.5, 2.5, 4.5]]]
    )
    xx = np.zeros((1, 1, 3, 3))
    _, am2 = ref.max_pool2d(xx, 2, stride=1)
    np.testing.assert_array_equal(
        am2, [[[[0, 1], [3, 4]]]]
    )  # ties: first in scan order
    np.testing.assert_array_equal(
        ref.max_pool2d_backward(xx, np.ones((1, 1, 2, 2)), 2, 1),
        [[[[1, 1, 0], [1, 1, 0], [0, 0, 0]]]],
    )
    # NaN, as torch's CPU kernel: it wins and propagates; the last NaN of a window wins
    xn = np.array([[[1.0, np.nan, 3.0, np.nan, 0.0]]])
    yn, an = ref.max_pool1d(xn, 5)
    assert np.isnan(yn).all() and an.tolist() == [[[3]]]
    assert ref.flatten(np.arange(24).reshape(2, 3, 2, 2)).tolist()[1][:3] == [
        12,
        13,
        14,
    ]


def test_rejects_bad_arguments():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="at most half"):
        ref.max_pool2d(x, 3, padding=2)
    with pytest.raises(ValueError, match="at most half"):
        ref.avg_pool2d(x, (4, 2), padding=(2, 2))
    with pytest.raises(ValueError, match="does not fit"):
        ref.conv2d(x, np.zeros((1, 1, 5, 5)), None)
    with pytest.raises(ValueError, match="does not fit"):
        ref.max_pool1d(np.zeros((1, 1, 2)), 3)
    with pytest.raises(ValueError):
        ref.conv1d(np.zeros((1, 2, 4)), np.zeros((1, 3, 2)), None)


# ------------------------- no torch: a second, differently written forward


def _conv2d_padded_window(x, W, b, s, p, d):
    """conv2d by explicit zero padding and a sum over each dilated window."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(s), _pair(p), _pair(d)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    F_, _, kh, kw = W.shape
    Ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    Wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    y = np.empty((x.shape[0], F_, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            win = xp[
                :,
                :,
                i * sh : i * sh + dh * (kh - 1) + 1 : dh,
                j * sw : j * sw + dw * (kw - 1) + 1 : dw,
            ]
            y[:, :, i, j] = np.einsum("nchw,fchw->nf", win, W)
    return y if b is None else y + b[None, :, None, None]


def _pool2d_padded_window(x, k, s, p, kind):
    (kh, kw), (sh, sw), (ph, pw) = _pair(k), _pair(k if s is None else s), _pair(p)
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    Ho = (xp.shape[2] - kh) // sh + 1
    Wo = (xp.shape[3] - kw) // sw + 1
    y = np.empty((*x.shape[:2], Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            win = xp[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw]
            y[:, :, i, j] = (
                win.max(axis=(2, 3)) if kind == "max" else win.mean(axis=(2, 3))
            )
    return y


@pytest.mark.parametrize("c", CONV2D, ids=_ids(CONV2D))
def test_conv2d_forward_second_formulation(c: Conv2dCase):
    x, W, b, _ = _conv2d_data(c)
    np.testing.assert_allclose(
        ref.conv2d(x, W, b, c.s, c.p, c.d),
        _conv2d_padded_window(x, W, b, c.s, c.p, c.d),
        **TOL,
    )


@pytest.mark.parametrize("c", CONV1D, ids=_ids(CONV1D))
def test_conv1d_is_conv2d_with_height_1(c: Conv1dCase):
    x, W, b, dy = _conv1d_data(c)
    y1 = ref.conv1d(x, W, b, c.s, c.p, c.d)
    y2 = ref.conv2d(x[:, :, None, :], W[:, :, None, :], b, (1, c.s), (0, c.p), (1, c.d))
    np.testing.assert_allclose(y1, y2[:, :, 0, :], **TOL)
    g1 = ref.conv1d_backward(x, W, dy, c.s, c.p, c.d)
    g2 = ref.conv2d_backward(
        x[:, :, None, :],
        W[:, :, None, :],
        dy[:, :, None, :],
        (1, c.s),
        (0, c.p),
        (1, c.d),
    )
    np.testing.assert_allclose(g1[0], g2[0][:, :, 0, :], **TOL)
    np.testing.assert_allclose(g1[1], g2[1][:, :, 0, :], **TOL)
    np.testing.assert_allclose(g1[2], g2[2], **TOL)


@pytest.mark.parametrize("c", POOL2D, ids=_ids(POOL2D))
def test_pool2d_forward_second_formulation(c: Pool2dCase):
    x, _ = _pool2d_data(c)
    np.testing.assert_array_equal(
        ref.max_pool2d(x, c.k, c.s, c.p)[0],
        _pool2d_padded_window(x, c.k, c.s, c.p, "max"),
    )
    np.testing.assert_allclose(
        ref.avg_pool2d(x, c.k, c.s, c.p),
        _pool2d_padded_window(x, c.k, c.s, c.p, "avg"),
        **TOL,
    )


@pytest.mark.parametrize("c", POOL1D, ids=_ids(POOL1D))
def test_pool1d_is_pool2d_with_height_1(c: Pool1dCase):
    x, dy = _pool1d_data(c)
    s2 = None if c.s is None else (1, c.s)
    args1 = (c.k, c.s, c.p)
    args2 = ((1, c.k), s2 if s2 is not None else (1, c.k), (0, c.p))
    x2, dy2 = x[:, :, None, :], dy[:, :, None, :]
    y1, a1 = ref.max_pool1d(x, *args1)
    y2, a2 = ref.max_pool2d(x2, *args2)
    np.testing.assert_array_equal(y1, y2[:, :, 0])
    np.testing.assert_array_equal(a1, a2[:, :, 0])
    np.testing.assert_array_equal(
        ref.max_pool1d_backward(x, dy, *args1),
        ref.max_pool2d_backward(x2, dy2, *args2)[:, :, 0],
    )
    np.testing.assert_allclose(
        ref.avg_pool1d(x, *args1), ref.avg_pool2d(x2, *args2)[:, :, 0], **TOL
    )
    np.testing.assert_allclose(
        ref.avg_pool1d_backward(x.shape, dy, *args1),
        ref.avg_pool2d_backward(x2.shape, dy2, *args2)[:, :, 0],
        **TOL,
    )


# --------------------------------------- no torch: finite-difference checks

EPS = 1e-6
FD_TOL = dict(rtol=1e-6, atol=1e-8)


def _fd_grad(f, a: np.ndarray) -> np.ndarray:
    """Central differences of scalar f at a (a is modified in place and restored)."""
    g = np.zeros_like(a)
    flat, gflat = a.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + EPS
        fp = f()
        flat[i] = old - EPS
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * EPS)
    return g


FD_CONV = [
    # (id, dims, x shape, W shape, stride, padding, dilation)
    ("1d_s2_d2_p2", 1, (2, 2, 11), (3, 2, 3), 2, 2, 2),
    ("1d_s3_p1_remainder", 1, (1, 3, 10), (2, 3, 4), 3, 1, 1),
    ("2d_s2_d2_p2x1_nonsquare", 2, (2, 2, 7, 6), (2, 2, 3, 2), 2, (2, 1), 2),
    ("2d_k3_s1_p1", 2, (1, 2, 5, 5), (3, 2, 3, 3), 1, 1, 1),
    (
        "2d_dilation_2x1_stride_1x2",
        2,
        (1, 2, 7, 7),
        (2, 2, 3, 3),
        (1, 2),
        (1, 2),
        (2, 1),
    ),
]


@pytest.mark.parametrize("case", FD_CONV, ids=[c[0] for c in FD_CONV])
def test_conv_backward_finite_differences(case):
    cid, dims, xs, ws, s, p, d = case
    rng = _rng(cid)
    fwd = ref.conv1d if dims == 1 else ref.conv2d
    bwd = ref.conv1d_backward if dims == 1 else ref.conv2d_backward
    x = rng.standard_normal(xs)
    W = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    dy = rng.standard_normal(fwd(x, W, b, s, p, d).shape)

    def loss():
        return float(np.sum(fwd(x, W, b, s, p, d) * dy))

    dx, dW, db = bwd(x, W, dy, s, p, d)
    np.testing.assert_allclose(dx, _fd_grad(loss, x), **FD_TOL)
    np.testing.assert_allclose(dW, _fd_grad(loss, W), **FD_TOL)
    np.testing.assert_allclose(db, _fd_grad(loss, b), **FD_TOL)


FD_POOL = [
    # (id, dims, x shape, kernel, stride, padding)
    ("1d_overlap_k3_s2_p1", 1, (2, 2, 9), 3, 2, 1),
    ("1d_stride_gt_kernel", 1, (1, 2, 10), 2, 3, 0),
    ("2d_overlap_k3_s1_p1", 2, (1, 2, 5, 5), 3, 1, 1),
    ("2d_nonsquare_remainder", 2, (2, 1, 7, 6), (3, 2), (2, 3), (1, 1)),
]


@pytest.mark.parametrize("case", FD_POOL, ids=[c[0] for c in FD_POOL])
def test_avg_pool_backward_finite_differences(case):
    cid, dims, xs, k, s, p = case
    rng = _rng(cid)
    fwd = ref.avg_pool1d if dims == 1 else ref.avg_pool2d
    bwd = ref.avg_pool1d_backward if dims == 1 else ref.avg_pool2d_backward
    x = rng.standard_normal(xs)
    dy = rng.standard_normal(fwd(x, k, s, p).shape)
    dx = bwd(x.shape, dy, k, s, p)
    np.testing.assert_allclose(
        dx, _fd_grad(lambda: float(np.sum(fwd(x, k, s, p) * dy)), x), **FD_TOL
    )


@pytest.mark.parametrize("case", FD_POOL, ids=[c[0] for c in FD_POOL])
def test_max_pool_backward_finite_differences(case):
    """Distinct values at least 1 apart (a shuffled arange, shifted negative so
    the -inf padding is exercised): no ties, and +-eps never changes a winner."""
    cid, dims, xs, k, s, p = case
    rng = _rng(cid)
    fwd = ref.max_pool1d if dims == 1 else ref.max_pool2d
    bwd = ref.max_pool1d_backward if dims == 1 else ref.max_pool2d_backward
    x = rng.permutation(math.prod(xs)).reshape(xs).astype(float) - math.prod(xs) - 0.5
    dy = rng.standard_normal(fwd(x, k, s, p)[0].shape)
    dx = bwd(x, dy, k, s, p)
    np.testing.assert_allclose(
        dx, _fd_grad(lambda: float(np.sum(fwd(x, k, s, p)[0] * dy)), x), **FD_TOL
    )
    # each dy lands whole on one input: the total is preserved
    np.testing.assert_allclose(dx.sum(), dy.sum(), **TOL)
