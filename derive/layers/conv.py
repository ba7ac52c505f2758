"""conv1d and conv2d: cross-correlation with stride, zero padding and dilation,
as ``torch.nn.Conv1d`` / ``torch.nn.Conv2d`` (weights (out, in, k...), bias (out,))."""

from __future__ import annotations

import sympy as sp

from .ir import (
    LayerKind,
    Param,
    Statement,
    TensorDef,
    integer_symbols,
    output_size,
    size_symbols,
)

W, b, x = sp.IndexedBase("W"), sp.IndexedBase("b"), sp.IndexedBase("x")


def _params(rank: int) -> tuple[Param, ...]:
    per = "an int or one per axis" if rank > 1 else "an int"
    return (
        Param("filters", "int", "number of output channels (filters)", minimum=1),
        Param("kernel", "size", f"kernel size: {per}", minimum=1),
        Param("stride", "size", f"step between windows: {per}", default=1, minimum=1),
        Param(
            "padding", "size", f"zeros added at each end: {per}", default=0, minimum=0
        ),
        Param(
            "dilation", "size", f"spacing of kernel taps: {per}", default=1, minimum=1
        ),
    )


f, c, i, j, k, m, n = integer_symbols("f c i j k m n")
C_in, C_out = size_symbols("C_in C_out")

# conv1d: z[f, i] = b[f] + sum_{c, k} W[f, c, k] x[c, s i + d k - p]
L_in, kernel, s = size_symbols("L_in K s")
(p,) = integer_symbols("p")
(d,) = size_symbols("d")
L_out = sp.Symbol("L_out", integer=True, positive=True)

CONV1D = LayerKind(
    name="conv1d",
    doc="1-D convolution (cross-correlation): "
    "z[f, i] = b[f] + sum_{c, k} W[f, c, k] x[c, s i + d k - p]",
    params=_params(1),
    input=(C_in, L_in),
    rank=1,
    bind={
        C_out: ("filters", None),
        kernel: ("kernel", 0),
        s: ("stride", 0),
        p: ("padding", 0),
        d: ("dilation", 0),
    },
    sizes={L_out: output_size(L_in, kernel, s, p, d)},
    tensors=(
        TensorDef("x", "input", (C_in, L_in)),
        TensorDef("W", "param", (C_out, C_in, kernel), init="weight"),
        TensorDef("b", "param", (C_out,), init="zeros"),
        TensorDef("z", "output", (C_out, L_out)),
    ),
    forward=(
        Statement(
            "z",
            (f, i),
            init=b[f],
            reduce=((c, C_in), (k, kernel)),
            body=W[f, c, k] * x[c, s * i + d * k - p],
        ),
    ),
    output="z",
    output_shape=(C_out, L_out),
    activation=True,
    fan_in=C_in * kernel,
    fan_out=C_out * kernel,
    torch="torch.nn.Conv1d",
    checks=(
        (
            {
                "filters": 2,
                "kernel": (3,),
                "stride": (2,),
                "padding": (1,),
                "dilation": (2,),
            },
            (2, 9),
        ),
        (
            {
                "filters": 1,
                "kernel": (2,),
                "stride": (3,),
                "padding": (0,),
                "dilation": (1,),
            },
            (1, 8),
        ),
    ),
)

# conv2d: z[f, i, j] = b[f] + sum_{c, m, n} W[f, c, m, n] x[c, s_h i + d_h m - p_h,
#                                                          s_w j + d_w n - p_w]
H_in, W_in, k_h, k_w, s_h, s_w, d_h, d_w = size_symbols(
    "H_in W_in k_h k_w s_h s_w d_h d_w"
)
p_h, p_w = integer_symbols("p_h p_w")
H_out = sp.Symbol("H_out", integer=True, positive=True)
W_out = sp.Symbol("W_out", integer=True, positive=True)

CONV2D = LayerKind(
    name="conv2d",
    doc="2-D convolution (cross-correlation): z[f, i, j] = b[f] + "
    "sum_{c, m, n} W[f, c, m, n] x[c, s_h i + d_h m - p_h, s_w j + d_w n - p_w]",
    params=_params(2),
    input=(C_in, H_in, W_in),
    rank=2,
    bind={
        C_out: ("filters", None),
        k_h: ("kernel", 0),
        k_w: ("kernel", 1),
        s_h: ("stride", 0),
        s_w: ("stride", 1),
        p_h: ("padding", 0),
        p_w: ("padding", 1),
        d_h: ("dilation", 0),
        d_w: ("dilation", 1),
    },
    sizes={
        H_out: output_size(H_in, k_h, s_h, p_h, d_h),
        W_out: output_size(W_in, k_w, s_w, p_w, d_w),
    },
    tensors=(
        TensorDef("x", "input", (C_in, H_in, W_in)),
        TensorDef("W", "param", (C_out, C_in, k_h, k_w), init="weight"),
        TensorDef("b", "param", (C_out,), init="zeros"),
        TensorDef("z", "output", (C_out, H_out, W_out)),
    ),
    forward=(
        Statement(
            "z",
            (f, i, j),
            init=b[f],
            reduce=((c, C_in), (m, k_h), (n, k_w)),
            body=W[f, c, m, n] * x[c, s_h * i + d_h * m - p_h, s_w * j + d_w * n - p_w],
        ),
    ),
    output="z",
    output_shape=(C_out, H_out, W_out),
    activation=True,
    fan_in=C_in * k_h * k_w,
    fan_out=C_out * k_h * k_w,
    torch="torch.nn.Conv2d",
    checks=(
        (
            {
                "filters": 2,
                "kernel": (3, 2),
                "stride": (2, 3),
                "padding": (1, 1),
                "dilation": (2, 1),
            },
            (2, 7, 8),
        ),
        (
            {
                "filters": 1,
                "kernel": (1, 2),
                "stride": (1, 2),
                "padding": (0, 1),
                "dilation": (1, 2),
            },
            (1, 5, 6),
        ),
    ),
)
