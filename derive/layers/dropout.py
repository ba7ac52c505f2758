"""dropout: inverted dropout, as torch.nn.Dropout.

In training each value is kept with probability 1 - p (a mask drawn from the
module's seeded generator inside the training loop, or given to loss_and_grad)
and scaled by 1 / (1 - p); in evaluation the layer is the identity. Any input
shape; the statements see it as (N,).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from .interface import KindInterface, Param, same_shape

if TYPE_CHECKING:
    from .ir import LayerKind


@functools.cache
def _define() -> LayerKind:
    import sympy as sp

    from .ir import LayerKind, Statement, TensorDef, integer_symbols, size_symbols

    (k,) = integer_symbols("k")
    (N,) = size_symbols("N")
    p = sp.Symbol("p", nonnegative=True)
    x, mask = sp.IndexedBase("x"), sp.IndexedBase("mask")
    return LayerKind(
        interface=DROPOUT,
        input=(N,),
        bind={p: ("p", None)},
        sizes={},
        tensors=(
            TensorDef("x", "input", (N,)),
            TensorDef("mask", "mask", (N,), keep=1 - p),
            TensorDef("y", "output", (N,)),
        ),
        forward=(Statement("y", (k,), body=x[k] * mask[k] / (1 - p)),),
        evaluate=(Statement("y", (k,), body=x[k]),),
        output="y",
        output_shape=(N,),
        checks=(({"p": 0.25}, (5,)),),
    )


DROPOUT = KindInterface(
    name="dropout",
    doc="y = x mask / (1 - p) in training (mask 1 with probability 1 - p), y = x in "
    "evaluation",
    params=(
        Param(
            "p",
            "float",
            "probability of dropping a value",
            default=0.5,
            minimum=0.0,
            below=1.0,
        ),
    ),  # fmt: skip
    rank=None,
    shape=same_shape,
    define=_define,
    shape_of="features",
    torch="torch.nn.Dropout",
)
