"""conv1d and conv2d: cross-correlation with stride, zero padding and dilation,
as ``torch.nn.Conv1d`` / ``torch.nn.Conv2d`` (weights (out, in, k...), bias (out,))."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from .interface import KindInterface, Param, definition_in, output_size

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .ir import LayerKind


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


def _shape(attrs: Mapping[str, Any], shape: tuple[Any, ...]) -> tuple[Any, ...]:
    """(filters, one output size per spatial axis of the input)."""
    spatial = zip(
        shape[1:],
        attrs["kernel"],
        attrs["stride"],
        attrs["padding"],
        attrs["dilation"],
        strict=True,
    )
    return (attrs["filters"], *(output_size(*axis) for axis in spatial))


@functools.cache
def _definitions() -> dict[str, LayerKind]:
    import sympy as sp

    from .ir import (
        LayerKind,
        Statement,
        TensorDef,
        integer_symbols,
        shape_sizes,
        size_symbols,
    )

    W, b, x = sp.IndexedBase("W"), sp.IndexedBase("b"), sp.IndexedBase("x")
    f, c, i, j, k, m, n = integer_symbols("f c i j k m n")
    C_in, C_out = size_symbols("C_in C_out")

    # conv1d: z[f, i] = b[f] + sum_{c, k} W[f, c, k] x[c, s i + d k - p]
    L_in, kernel, s = size_symbols("L_in K s")
    (p,) = integer_symbols("p")
    (d,) = size_symbols("d")
    L_out = sp.Symbol("L_out", integer=True, positive=True)
    bind = {
        C_out: ("filters", None),
        kernel: ("kernel", 0),
        s: ("stride", 0),
        p: ("padding", 0),
        d: ("dilation", 0),
    }
    conv1d = LayerKind(
        interface=CONV1D,
        input=(C_in, L_in),
        bind=bind,
        sizes=shape_sizes(CONV1D, bind, (C_in, L_in), (C_out, L_out)),
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
        fan_in=C_in * kernel,
        fan_out=C_out * kernel,
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

    # conv2d: z[f, i, j] = b[f] + sum_{c, m, n} W[f, c, m, n]
    #                      x[c, s_h i + d_h m - p_h, s_w j + d_w n - p_w]
    H_in, W_in, k_h, k_w, s_h, s_w, d_h, d_w = size_symbols(
        "H_in W_in k_h k_w s_h s_w d_h d_w"
    )
    p_h, p_w = integer_symbols("p_h p_w")
    H_out = sp.Symbol("H_out", integer=True, positive=True)
    W_out = sp.Symbol("W_out", integer=True, positive=True)
    bind = {
        C_out: ("filters", None),
        k_h: ("kernel", 0),
        k_w: ("kernel", 1),
        s_h: ("stride", 0),
        s_w: ("stride", 1),
        p_h: ("padding", 0),
        p_w: ("padding", 1),
        d_h: ("dilation", 0),
        d_w: ("dilation", 1),
    }
    shape_in, shape_out = (C_in, H_in, W_in), (C_out, H_out, W_out)
    conv2d = LayerKind(
        interface=CONV2D,
        input=shape_in,
        bind=bind,
        sizes=shape_sizes(CONV2D, bind, shape_in, shape_out),
        tensors=(
            TensorDef("x", "input", shape_in),
            TensorDef("W", "param", (C_out, C_in, k_h, k_w), init="weight"),
            TensorDef("b", "param", (C_out,), init="zeros"),
            TensorDef("z", "output", shape_out),
        ),
        forward=(
            Statement(
                "z",
                (f, i, j),
                init=b[f],
                reduce=((c, C_in), (m, k_h), (n, k_w)),
                body=W[f, c, m, n]
                * x[c, s_h * i + d_h * m - p_h, s_w * j + d_w * n - p_w],
            ),
        ),
        output="z",
        output_shape=shape_out,
        fan_in=C_in * k_h * k_w,
        fan_out=C_out * k_h * k_w,
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
    return {"conv1d": conv1d, "conv2d": conv2d}


def _interface(rank: int, doc: str) -> KindInterface:
    name = f"conv{rank}d"
    return KindInterface(
        name=name,
        doc=doc,
        params=_params(rank),
        rank=rank,
        shape=_shape,
        define=functools.partial(definition_in, _definitions, name),
        activation=True,
        torch=f"torch.nn.Conv{rank}d",
    )


CONV1D = _interface(
    1,
    "1-D convolution (cross-correlation): "
    "z[f, i] = b[f] + sum_{c, k} W[f, c, k] x[c, s i + d k - p]",
)
CONV2D = _interface(
    2,
    "2-D convolution (cross-correlation): z[f, i, j] = b[f] + "
    "sum_{c, m, n} W[f, c, m, n] x[c, s_h i + d_h m - p_h, s_w j + d_w n - p_w]",
)
