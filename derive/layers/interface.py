"""What a spec needs of a layer kind, without SymPy: a :class:`KindInterface`.

A kind's interface is its name, attributes (typed :class:`Param` s), input rank,
whether it takes an activation, and its shape rule: the per-sample output shape
for attribute values and an input shape. The rule is plain arithmetic, so it
gives the sizes as ints for the spec's validation and, applied to the kind's
symbols, as the SymPy formulas of its definition (:func:`derive.layers.ir.
shape_sizes`): the shape is written once. The SymPy definition itself (tensors
and index-form statements, :class:`derive.layers.ir.LayerKind`) is built on
first use of :attr:`KindInterface.definition`, so loading a spec never imports
SymPy.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .ir import LayerKind

ParamType = Literal["int", "size", "float", "bool"]

#: held while a definition is built (definitions are built once per process)
_DEFINING = threading.RLock()


@dataclass(frozen=True)
class Param:
    """An attribute of a layer kind, as a spec gives it.

    ``type``: "int"; "size" (an int, or one int per spatial axis, like torch's
    ``kernel_size``); "float"; "bool". ``default`` None means required;
    ``default_from`` names another attribute whose value is the default (pooling's
    stride defaults to its kernel, as in torch). ``minimum`` bounds ints and
    floats from below; ``below`` (floats) from above, exclusive.
    """

    name: str
    type: ParamType
    doc: str
    default: Any = None
    default_from: str | None = None
    minimum: float | None = None
    below: float | None = None

    @property
    def required(self) -> bool:
        return self.default is None and self.default_from is None


#: (attributes, per-sample input shape) -> per-sample output shape; attributes
#: in canonical form (sizes as one value per spatial axis). Called with ints
#: and with SymPy symbols.
ShapeRule = Callable[[Mapping[str, Any], tuple[Any, ...]], tuple[Any, ...]]


def output_size(
    length: Any, kernel: Any, stride: Any, padding: Any, dilation: Any
) -> Any:
    """torch's output length of a convolution or pooling window:
    ``floor((L + 2p - d(k - 1) - 1) / s) + 1`` (ints, or SymPy expressions, whose
    ``//`` is ``floor`` of the quotient)."""
    return (length + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def same_shape(attrs: Mapping[str, Any], shape: tuple[Any, ...]) -> tuple[Any, ...]:
    """The shape rule of a kind that gives its input's shape back."""
    return tuple(shape)


def flat_shape(attrs: Mapping[str, Any], shape: tuple[Any, ...]) -> tuple[Any, ...]:
    """The shape rule of flatten: one axis of all the input's values."""
    return (math.prod(shape),)


def definition_in(
    definitions: Callable[[], Mapping[str, LayerKind]], name: str
) -> LayerKind:
    """``definitions()[name]``: one kind of a module that defines several, as
    an interface's ``define`` (``functools.partial(definition_in, definitions,
    name)``: a partial of module functions pickles, a lambda does not)."""
    return definitions()[name]


@dataclass(frozen=True, eq=False)
class KindInterface:
    """One layer kind as a spec sees it; ``definition`` is its SymPy form.

    ``rank``: how many axes of the input are spatial (dense 0, conv2d 2); None
    accepts any shape. ``shape``: the output shape rule. ``activation``:
    whether the layer takes an activation (dense and conv do, pooling does
    not). ``view``: the output is the input's memory in another shape
    (flatten). ``shape_of``: for kinds that take any input shape and give it
    back (normalization, dropout), how their statements see it: "channels" as
    (C, R), C the first axis and R the rest flattened; "features" as (N,).
    ``define`` builds the kind's :class:`~derive.layers.ir.LayerKind`.
    """

    name: str
    doc: str
    params: tuple[Param, ...]
    rank: int | None
    shape: ShapeRule
    define: Callable[[], LayerKind]
    activation: bool = False
    view: bool = False
    shape_of: Literal["channels", "features"] | None = None
    #: pooling: padding may be at most half the kernel (torch's rule)
    padding_at_most_half_kernel: bool = False
    torch: str = ""  # the torch.nn module with the same semantics, for docs and tests

    @functools.cached_property
    def definition(self) -> LayerKind:
        """The kind's SymPy definition (imports SymPy on first use). One per
        process: the kind modules cache their definitions, and the lock keeps
        two threads from building one twice (cached_property takes none from
        Python 3.12)."""
        with _DEFINING:
            return self.define()

    def label(self, attrs: Mapping[str, Any]) -> str:
        """``conv2d(filters=8, kernel=3x3, ...)``: the kind with attribute values."""
        if not self.params:
            return self.name
        parts = []
        for param in self.params:
            value = attrs[param.name]
            shown = "x".join(map(str, value)) if isinstance(value, tuple) else value
            parts.append(f"{param.name}={shown}")
        return f"{self.name}({', '.join(parts)})"

    def output_shape(
        self, attrs: Mapping[str, Any], input_shape: tuple[int, ...]
    ) -> tuple[int, ...]:
        """The per-sample output shape of a layer with canonical ``attrs`` on a
        per-sample input of ``input_shape``."""
        return tuple(int(size) for size in self.shape(attrs, tuple(input_shape)))
