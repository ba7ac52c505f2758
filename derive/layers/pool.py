"""Pooling: max_pool1d/2d and avg_pool1d/2d, as torch.nn.MaxPool1d/2d and
AvgPool1d/2d (stride defaults to the kernel, ceil_mode=False).

Max pooling is two statements, because calculus does not give its structure:
the first maximum of each window (an integer, counted over the window in loop
order; padded positions are left out, as torch pads with -inf; NaN wins, as in
torch's CPU kernel), then a read through it. Its backward, derived from the read,
routes each window's gradient to that first maximum (torch's tie rule); SymPy's
``d Max(a, b) / da = Heaviside(a - b)`` would split ties. Average pooling counts
padded zeros (``count_include_pad=True``): it always divides by the kernel size.
"""

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

x = sp.IndexedBase("x")
argmax = sp.IndexedBase("argmax", integer=True)


def _params(rank: int) -> tuple[Param, ...]:
    per = "an int or one per axis" if rank > 1 else "an int"
    return (
        Param("kernel", "size", f"window size: {per}", minimum=1),
        Param(
            "stride",
            "size",
            f"step between windows: {per}; default: the kernel",
            default_from="kernel",
            minimum=1,
        ),
        Param(
            "padding",
            "size",
            f"padding at each end, at most half the kernel: {per}",
            default=0,
            minimum=0,
        ),
    )


c, i, j, k, m, n = integer_symbols("c i j k m n")
C = size_symbols("C")[0]
one = sp.S.One

# ----------------------------------------------------------------------- 1-D
L_in, kernel, s = size_symbols("L_in K s")
(p,) = integer_symbols("p")
L_out = sp.Symbol("L_out", integer=True, positive=True)
_BIND_1D = {kernel: ("kernel", 0), s: ("stride", 0), p: ("padding", 0)}
_SIZES_1D = {L_out: output_size(L_in, kernel, s, p, one)}
_window_1d = x[c, s * i + k - p]
_CHECKS_1D = (
    ({"kernel": (3,), "stride": (2,), "padding": (1,)}, (2, 8)),
    ({"kernel": (2,), "stride": (3,), "padding": (0,)}, (1, 9)),
)

MAX_POOL1D = LayerKind(
    name="max_pool1d",
    doc="1-D max pooling: y[c, i] = max_k x[c, s i + k - p] (padding ignored)",
    params=_params(1),
    input=(C, L_in),
    rank=1,
    bind=_BIND_1D,
    sizes=_SIZES_1D,
    tensors=(
        TensorDef("x", "input", (C, L_in)),
        TensorDef("argmax", "index", (C, L_out)),
        TensorDef("y", "output", (C, L_out)),
    ),
    forward=(
        Statement(
            "argmax",
            (c, i),
            body=_window_1d,
            reduce=((k, kernel),),
            op="argmax",
            outside="skip",
        ),
        Statement("y", (c, i), body=x[c, s * i + argmax[c, i] - p]),
    ),
    output="y",
    output_shape=(C, L_out),
    padding_at_most_half_kernel=True,
    torch="torch.nn.MaxPool1d",
    checks=_CHECKS_1D,
)

AVG_POOL1D = LayerKind(
    name="avg_pool1d",
    doc="1-D average pooling: y[c, i] = sum_k x[c, s i + k - p] / k "
    "(padded zeros counted)",
    params=_params(1),
    input=(C, L_in),
    rank=1,
    bind=_BIND_1D,
    sizes=_SIZES_1D,
    tensors=(TensorDef("x", "input", (C, L_in)), TensorDef("y", "output", (C, L_out))),
    forward=(Statement("y", (c, i), body=_window_1d / kernel, reduce=((k, kernel),)),),
    output="y",
    output_shape=(C, L_out),
    padding_at_most_half_kernel=True,
    torch="torch.nn.AvgPool1d(count_include_pad=True)",
    checks=_CHECKS_1D,
)

# ----------------------------------------------------------------------- 2-D
H_in, W_in, k_h, k_w, s_h, s_w = size_symbols("H_in W_in k_h k_w s_h s_w")
p_h, p_w = integer_symbols("p_h p_w")
H_out = sp.Symbol("H_out", integer=True, positive=True)
W_out = sp.Symbol("W_out", integer=True, positive=True)
_BIND_2D = {
    k_h: ("kernel", 0),
    k_w: ("kernel", 1),
    s_h: ("stride", 0),
    s_w: ("stride", 1),
    p_h: ("padding", 0),
    p_w: ("padding", 1),
}
_SIZES_2D = {
    H_out: output_size(H_in, k_h, s_h, p_h, one),
    W_out: output_size(W_in, k_w, s_w, p_w, one),
}
_window_2d = x[c, s_h * i + m - p_h, s_w * j + n - p_w]
_CHECKS_2D = (
    ({"kernel": (3, 2), "stride": (2, 1), "padding": (1, 1)}, (2, 7, 6)),
    ({"kernel": (2, 3), "stride": (3, 2), "padding": (0, 1)}, (1, 8, 7)),
)
# the first maximum's position in its window, counted row by row (m k_w + n)
_max_read_2d = x[
    c,
    s_h * i + sp.floor(argmax[c, i, j] / k_w) - p_h,
    s_w * j + sp.Mod(argmax[c, i, j], k_w) - p_w,
]

MAX_POOL2D = LayerKind(
    name="max_pool2d",
    doc="2-D max pooling: y[c, i, j] = max_{m, n} x[c, s_h i + m - p_h, s_w j + n - p_w] "
    "(padding ignored)",
    params=_params(2),
    input=(C, H_in, W_in),
    rank=2,
    bind=_BIND_2D,
    sizes=_SIZES_2D,
    tensors=(
        TensorDef("x", "input", (C, H_in, W_in)),
        TensorDef("argmax", "index", (C, H_out, W_out)),
        TensorDef("y", "output", (C, H_out, W_out)),
    ),
    forward=(
        Statement(
            "argmax",
            (c, i, j),
            body=_window_2d,
            reduce=((m, k_h), (n, k_w)),
            op="argmax",
            outside="skip",
        ),
        Statement("y", (c, i, j), body=_max_read_2d),
    ),
    output="y",
    output_shape=(C, H_out, W_out),
    padding_at_most_half_kernel=True,
    torch="torch.nn.MaxPool2d",
    checks=_CHECKS_2D,
)

AVG_POOL2D = LayerKind(
    name="avg_pool2d",
    doc="2-D average pooling: y[c, i, j] = sum_{m, n} x[c, s_h i + m - p_h, "
    "s_w j + n - p_w] / (k_h k_w) (padded zeros counted)",
    params=_params(2),
    input=(C, H_in, W_in),
    rank=2,
    bind=_BIND_2D,
    sizes=_SIZES_2D,
    tensors=(
        TensorDef("x", "input", (C, H_in, W_in)),
        TensorDef("y", "output", (C, H_out, W_out)),
    ),
    forward=(
        Statement(
            "y",
            (c, i, j),
            body=_window_2d / (k_h * k_w),
            reduce=((m, k_h), (n, k_w)),
        ),
    ),
    output="y",
    output_shape=(C, H_out, W_out),
    padding_at_most_half_kernel=True,
    torch="torch.nn.AvgPool2d(count_include_pad=True)",
    checks=_CHECKS_2D,
)
