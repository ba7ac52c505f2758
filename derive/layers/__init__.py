"""Layer kinds, one definition each (:mod:`derive.layers.ir`): the registry
``LAYER_KINDS``, next to ``ACTIVATIONS`` and ``LOSSES`` in :mod:`derive.ops`.

A spec's ``[[layers]]`` table names its kind with ``kind = "..."``; a table
without ``kind`` is dense.
"""

from __future__ import annotations

from collections.abc import Mapping

from .conv import CONV1D, CONV2D
from .dense import DENSE
from .dropout import DROPOUT
from .flatten import FLATTEN
from .ir import LayerKind, Param, Statement, TensorDef
from .norm import BATCH_NORM, LAYER_NORM
from .pool import AVG_POOL1D, AVG_POOL2D, MAX_POOL1D, MAX_POOL2D

#: The layer kinds by name.
LAYER_KINDS: Mapping[str, LayerKind] = {
    kind.name: kind
    for kind in (
        DENSE,
        CONV1D,
        CONV2D,
        MAX_POOL1D,
        MAX_POOL2D,
        AVG_POOL1D,
        AVG_POOL2D,
        FLATTEN,
        DROPOUT,
        BATCH_NORM,
        LAYER_NORM,
    )
}

#: The kind of a [[layers]] table that names none.
DEFAULT_KIND = "dense"

__all__ = [
    "DEFAULT_KIND",
    "LAYER_KINDS",
    "LayerKind",
    "Param",
    "Statement",
    "TensorDef",
]
