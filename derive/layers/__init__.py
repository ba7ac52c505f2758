"""Layer kinds, one definition each: the registries ``LAYER_INTERFACES`` (what a
spec sees: name, attributes, shape rule; no SymPy) and ``LAYER_KINDS`` (the
SymPy definitions in index form, :mod:`derive.layers.ir`, built on first use),
next to ``ACTIVATIONS`` and ``LOSSES`` in :mod:`derive.ops`.

A spec's ``[[layers]]`` table names its kind with ``kind = "..."``; a table
without ``kind`` is dense.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .conv import CONV1D, CONV2D
from .dense import DENSE
from .dropout import DROPOUT
from .flatten import FLATTEN
from .interface import KindInterface, Param
from .norm import BATCH_NORM, LAYER_NORM
from .pool import AVG_POOL1D, AVG_POOL2D, MAX_POOL1D, MAX_POOL2D

if TYPE_CHECKING:
    from .ir import LayerKind

#: The layer kinds by name, as a spec's validation reads them.
LAYER_INTERFACES: Mapping[str, KindInterface] = {
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


class _Definitions(Mapping[str, "LayerKind"]):
    """Each interface's SymPy definition, built (and SymPy imported) on first
    lookup."""

    def __getitem__(self, name: str) -> LayerKind:
        return LAYER_INTERFACES[name].definition

    def __contains__(self, name: object) -> bool:
        return name in LAYER_INTERFACES  # without building the definition

    def __iter__(self) -> Iterator[str]:
        return iter(LAYER_INTERFACES)

    def __len__(self) -> int:
        return len(LAYER_INTERFACES)


#: The layer kinds' definitions by name.
LAYER_KINDS: Mapping[str, LayerKind] = _Definitions()

#: The kind of a [[layers]] table that names none.
DEFAULT_KIND = "dense"


def __getattr__(name: str) -> Any:
    # the IR's classes, from the module that imports SymPy, when first asked for
    if name in ("LayerKind", "Statement", "TensorDef"):
        from . import ir

        return getattr(ir, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_KIND",
    "LAYER_INTERFACES",
    "LAYER_KINDS",
    "KindInterface",
    "LayerKind",
    "Param",
    "Statement",
    "TensorDef",
]
