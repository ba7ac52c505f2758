"""flatten: the input's values in C order (channel, row, column) as a feature
vector, like ``torch.nn.Flatten``. A view of the same memory: no statement, no code,
and its backward is the same view of the adjoint."""

from __future__ import annotations

import sympy as sp

from .ir import LayerKind, TensorDef

#: flatten takes any per-sample shape; its output size is the product.
N = sp.Symbol("N", integer=True, positive=True)

FLATTEN = LayerKind(
    name="flatten",
    doc="the input in C order (channel, row, column) as one feature vector",
    params=(),
    input=(),
    rank=None,
    bind={},
    sizes={},
    tensors=(TensorDef("x", "input", ()), TensorDef("y", "output", (N,))),
    forward=(),
    output="y",
    output_shape=(N,),
    view=True,
    torch="torch.nn.Flatten",
)
