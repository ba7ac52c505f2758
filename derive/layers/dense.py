"""dense: a fully connected layer, ``z_j = b_j + sum_k W_jk a_k``."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from .interface import KindInterface, Param

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .ir import LayerKind


def _shape(attrs: Mapping[str, Any], shape: tuple[Any, ...]) -> tuple[Any, ...]:
    return (attrs["units"],)


@functools.cache
def _define() -> LayerKind:
    import sympy as sp

    from .ir import LayerKind, Statement, TensorDef, integer_symbols, size_symbols

    j, k = integer_symbols("j k")
    n_in, n_out = size_symbols("n_in n_out")
    W, b, a = sp.IndexedBase("W"), sp.IndexedBase("b"), sp.IndexedBase("a")
    return LayerKind(
        interface=DENSE,
        input=(n_in,),
        bind={n_out: ("units", None)},
        sizes={},
        tensors=(
            TensorDef("a", "input", (n_in,)),
            TensorDef("W", "param", (n_out, n_in), init="weight"),
            TensorDef("b", "param", (n_out,), init="zeros"),
            TensorDef("z", "output", (n_out,)),
        ),
        forward=(
            Statement("z", (j,), init=b[j], reduce=((k, n_in),), body=W[j, k] * a[k]),
        ),
        output="z",
        output_shape=(n_out,),
        fan_in=n_in,
        fan_out=n_out,
        checks=(({"units": 3}, (4,)),),
    )


DENSE = KindInterface(
    name="dense",
    doc="fully connected: z_j = b_j + sum_k W_jk a_k (torch.nn.Linear)",
    params=(Param("units", "int", "number of output units", minimum=1),),
    rank=0,
    shape=_shape,
    define=_define,
    activation=True,
    torch="torch.nn.Linear",
)
