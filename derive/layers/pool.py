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

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .interface import KindInterface, Param, definition_in, output_size

if TYPE_CHECKING:
    from collections.abc import Mapping

    import sympy

    from .ir import LayerKind


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


def _shape(attrs: Mapping[str, Any], shape: tuple[Any, ...]) -> tuple[Any, ...]:
    """(channels, one output size per spatial axis of the input)."""
    spatial = zip(
        shape[1:], attrs["kernel"], attrs["stride"], attrs["padding"], strict=True
    )
    return (shape[0], *(output_size(n, k, s, p, 1) for n, k, s, p in spatial))


@dataclass(frozen=True, eq=False)
class _Window:
    """What the pooling kinds of one rank share: shapes, attributes, the window."""

    rank: int
    input: tuple[sympy.Symbol, ...]
    output_shape: tuple[sympy.Expr, ...]
    bind: dict
    index: tuple[sympy.Symbol, ...]
    reduce: tuple[tuple[sympy.Symbol, sympy.Expr], ...]
    window: sympy.Indexed  # the window's read at the reduction indices
    at_maximum: sympy.Indexed  # the same read at the argmax's position
    area: sympy.Expr  # positions per window
    checks: tuple


@functools.cache
def _definitions() -> dict[str, LayerKind]:
    import sympy as sp

    from .ir import integer_symbols, size_symbols

    x = sp.IndexedBase("x")
    argmax = sp.IndexedBase("argmax", integer=True)
    c, i, j, k, m, n = integer_symbols("c i j k m n")
    C = size_symbols("C")[0]

    # 1-D: y[c, i] over x[c, s i + k - p], k < K
    L_in, kernel, s = size_symbols("L_in K s")
    (p,) = integer_symbols("p")
    L_out = sp.Symbol("L_out", integer=True, positive=True)
    window_1d = _Window(
        rank=1,
        input=(C, L_in),
        output_shape=(C, L_out),
        bind={kernel: ("kernel", 0), s: ("stride", 0), p: ("padding", 0)},
        index=(c, i),
        reduce=((k, kernel),),
        window=x[c, s * i + k - p],
        at_maximum=x[c, s * i + argmax[c, i] - p],
        area=kernel,
        checks=(
            ({"kernel": (3,), "stride": (2,), "padding": (1,)}, (2, 8)),
            ({"kernel": (2,), "stride": (3,), "padding": (0,)}, (1, 9)),
        ),
    )

    # 2-D: y[c, i, j] over x[c, s_h i + m - p_h, s_w j + n - p_w], m < k_h, n < k_w
    H_in, W_in, k_h, k_w, s_h, s_w = size_symbols("H_in W_in k_h k_w s_h s_w")
    p_h, p_w = integer_symbols("p_h p_w")
    H_out = sp.Symbol("H_out", integer=True, positive=True)
    W_out = sp.Symbol("W_out", integer=True, positive=True)
    window_2d = _Window(
        rank=2,
        input=(C, H_in, W_in),
        output_shape=(C, H_out, W_out),
        bind={
            k_h: ("kernel", 0),
            k_w: ("kernel", 1),
            s_h: ("stride", 0),
            s_w: ("stride", 1),
            p_h: ("padding", 0),
            p_w: ("padding", 1),
        },
        index=(c, i, j),
        reduce=((m, k_h), (n, k_w)),
        window=x[c, s_h * i + m - p_h, s_w * j + n - p_w],
        # the first maximum's position in its window, counted row by row (m k_w + n)
        at_maximum=x[
            c,
            s_h * i + sp.floor(argmax[c, i, j] / k_w) - p_h,
            s_w * j + sp.Mod(argmax[c, i, j], k_w) - p_w,
        ],
        area=k_h * k_w,
        checks=(
            ({"kernel": (3, 2), "stride": (2, 1), "padding": (1, 1)}, (2, 7, 6)),
            ({"kernel": (2, 3), "stride": (3, 2), "padding": (0, 1)}, (1, 8, 7)),
        ),
    )
    return {
        "max_pool1d": _max_pool(MAX_POOL1D, window_1d),
        "avg_pool1d": _avg_pool(AVG_POOL1D, window_1d),
        "max_pool2d": _max_pool(MAX_POOL2D, window_2d),
        "avg_pool2d": _avg_pool(AVG_POOL2D, window_2d),
    }


def _pool(
    interface: KindInterface, w: _Window, tensors: tuple, forward: tuple
) -> LayerKind:
    from .ir import LayerKind, TensorDef, shape_sizes

    return LayerKind(
        interface=interface,
        input=w.input,
        bind=w.bind,
        sizes=shape_sizes(interface, w.bind, w.input, w.output_shape),
        tensors=(
            TensorDef("x", "input", w.input),
            *tensors,
            TensorDef("y", "output", w.output_shape),
        ),  # fmt: skip
        forward=forward,
        output="y",
        output_shape=w.output_shape,
        checks=w.checks,
    )


def _max_pool(interface: KindInterface, w: _Window) -> LayerKind:
    """The first maximum of each window (an argmax), then the read there."""
    from .ir import Statement, TensorDef

    return _pool(
        interface,
        w,
        (TensorDef("argmax", "index", w.output_shape),),
        (
            Statement(
                "argmax",
                w.index,
                body=w.window,
                reduce=w.reduce,
                op="argmax",
                outside="skip",
            ),
            Statement("y", w.index, body=w.at_maximum),
        ),  # fmt: skip
    )


def _avg_pool(interface: KindInterface, w: _Window) -> LayerKind:
    """The window's sum over its full area, padded zeros included."""
    from .ir import Statement

    return _pool(
        interface,
        w,
        (),
        (Statement("y", w.index, body=w.window / w.area, reduce=w.reduce),),
    )


def _interface(kind: str, rank: int, doc: str, torch: str) -> KindInterface:
    name = f"{kind}{rank}d"
    return KindInterface(
        name=name,
        doc=doc,
        params=_params(rank),
        rank=rank,
        shape=_shape,
        define=functools.partial(definition_in, _definitions, name),
        padding_at_most_half_kernel=True,
        torch=torch,
    )


MAX_POOL1D = _interface(
    "max_pool",
    1,
    "1-D max pooling: y[c, i] = max_k x[c, s i + k - p] (padding ignored)",
    "torch.nn.MaxPool1d",
)
AVG_POOL1D = _interface(
    "avg_pool",
    1,
    "1-D average pooling: y[c, i] = sum_k x[c, s i + k - p] / K (padded zeros counted)",
    "torch.nn.AvgPool1d(count_include_pad=True)",
)
MAX_POOL2D = _interface(
    "max_pool",
    2,
    "2-D max pooling: y[c, i, j] = max_{m, n} x[c, s_h i + m - p_h, s_w j + n - p_w] "
    "(padding ignored)",
    "torch.nn.MaxPool2d",
)
AVG_POOL2D = _interface(
    "avg_pool",
    2,
    "2-D average pooling: y[c, i, j] = sum_{m, n} x[c, s_h i + m - p_h, "
    "s_w j + n - p_w] / (k_h k_w) (padded zeros counted)",
    "torch.nn.AvgPool2d(count_include_pad=True)",
)
