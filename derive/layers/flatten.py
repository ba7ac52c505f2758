"""flatten: the input's values in C order (channel, row, column) as a feature
vector, like ``torch.nn.Flatten``. A view of the same memory: no statement, no code,
and its backward is the same view of the adjoint."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from .interface import KindInterface, flat_shape

if TYPE_CHECKING:
    from .ir import LayerKind


@functools.cache
def _define() -> LayerKind:
    import sympy as sp

    from .ir import LayerKind, TensorDef

    # flatten takes any per-sample shape; its output size is the product
    N = sp.Symbol("N", integer=True, positive=True)
    return LayerKind(
        interface=FLATTEN,
        input=(),
        bind={},
        sizes={},
        tensors=(TensorDef("x", "input", ()), TensorDef("y", "output", (N,))),
        forward=(),
        output="y",
        output_shape=(N,),
    )


FLATTEN = KindInterface(
    name="flatten",
    doc="the input in C order (channel, row, column) as one feature vector",
    params=(),
    rank=None,
    shape=flat_shape,
    define=_define,
    view=True,
    torch="torch.nn.Flatten",
)
