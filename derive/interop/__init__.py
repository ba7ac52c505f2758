"""derive's networks in other ecosystems: PyTorch (``torch_io``), ONNX
(``onnx_io``) and a frozen inference module (``python_export``).

Each exporter imports its library only when called, so ``import derive``
never imports torch or onnx. What they share lives here: the layers of a
network with their parameters and running statistics in layer order
(:func:`network_layers`), and a walk over a user expression's SymPy tree
(:class:`ExprWalker`) that each exporter turns into its own operations.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from .._lazy import sympy as sp
from ..errors import DeriveError
from ..spec import Layer, OpRef, resolve_activation

if TYPE_CHECKING:
    from ..network import Network
    from ..spec import Spec

T = TypeVar("T")


@dataclass
class LayerInfo:
    """One layer of a network: its spec entry, 1-based index, input and output
    shapes (per sample), and its arrays by name without the layer number
    (``W``, ``b``, ``gamma``, ``beta``; ``running_mean``, ``running_var``)."""

    layer: Layer
    index: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: dict[str, np.ndarray] = field(default_factory=dict)
    buffers: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.layer.kind

    def attr(self, name: str) -> Any:
        return self.layer.get(name)


_NAME = re.compile(r"([A-Za-z_]+?)(\d+)")


def _split(name: str) -> tuple[str, int]:
    match = _NAME.fullmatch(name)
    assert match is not None, name
    return match.group(1), int(match.group(2))


def network_layers(network: Network) -> list[LayerInfo]:
    """The network's layers in order, each with its parameters and running
    statistics (the module's ``_PARAMS`` and ``_STATE`` names: W1, gamma2, ...)."""
    spec = network.spec
    layers = [
        LayerInfo(layer, i + 1, spec.shapes[i], spec.shapes[i + 1])
        for i, layer in enumerate(spec.layers)
    ]
    for (name, *_), value in zip(network.module._PARAMS, network.params, strict=True):
        base, index = _split(name)
        layers[index - 1].params[base] = value
    for (name, *_), value in zip(network.module._STATE, network.buffers, strict=True):
        base, index = _split(name)
        layers[index - 1].buffers[base] = value
    return layers


def layer_shapes(spec: Spec) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(input shape, output shape) per sample of each layer."""
    return [(spec.shapes[i], spec.shapes[i + 1]) for i in range(len(spec.layers))]


def size(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


# ------------------------------------------------------------ expressions


@functools.cache
def _unary_ops() -> dict[type, str]:
    """The SymPy functions an exporter has a unary operation for (made on first
    use: exporting a network without user expressions never imports SymPy)."""
    return {
        sp.exp: "exp", sp.log: "log", sp.Abs: "abs", sp.tanh: "tanh",
        sp.sinh: "sinh", sp.cosh: "cosh", sp.sin: "sin", sp.cos: "cos",
        sp.atan: "atan", sp.erf: "erf",
    }  # fmt: skip


class ExprWalker(Generic[T]):
    """Folds a user activation's SymPy expression in ``x`` into an exporter's
    operations, node by node: subclasses give ``variable``, ``constant``,
    ``binary(op, a, b)`` (op: add, mul, div, pow, max, min) and
    ``unary(op, a)`` (op: neg, exp, log, sqrt, abs, tanh, sinh, cosh, sin, cos,
    atan, erf). Anything else is refused (``DeriveError``) naming it."""

    def __init__(self, x: sp.Symbol, what: str) -> None:
        self.x = x
        self.what = what
        self._seen: dict[sp.Expr, T] = {}

    def variable(self) -> T:
        raise NotImplementedError

    def constant(self, value: float) -> T:
        raise NotImplementedError

    def binary(self, op: str, a: T, b: T) -> T:
        raise NotImplementedError

    def unary(self, op: str, a: T) -> T:
        raise NotImplementedError

    def walk(self, expr: sp.Expr) -> T:
        """The operations computing ``expr`` (a shared subexpression once)."""
        if expr not in self._seen:
            self._seen[expr] = self._node(expr)
        return self._seen[expr]

    def _fold(self, op: str, args: tuple[sp.Expr, ...]) -> T:
        result = self.walk(args[0])
        for arg in args[1:]:
            result = self.binary(op, result, self.walk(arg))
        return result

    def _node(self, expr: sp.Expr) -> T:
        if expr == self.x:
            return self.variable()
        if not expr.free_symbols:
            try:
                return self.constant(float(expr))
            except TypeError:
                pass
        if expr.is_Add:
            return self._fold("add", expr.args)
        if expr.is_Mul:
            if expr.args[0] == -1:  # -u: a negation, not a product with -1
                rest = sp.Mul(*expr.args[1:])
                return self.unary("neg", self.walk(rest))
            return self._fold("mul", expr.args)
        if expr.is_Pow:
            base, exponent = expr.args
            if exponent == sp.Rational(1, 2):
                return self.unary("sqrt", self.walk(base))
            if exponent == -1:
                return self.binary("div", self.constant(1.0), self.walk(base))
            if exponent == 2:
                node = self.walk(base)
                return self.binary("mul", node, node)
            return self.binary("pow", self.walk(base), self.walk(exponent))
        if isinstance(expr, sp.Max | sp.Min):
            return self._fold("max" if isinstance(expr, sp.Max) else "min", expr.args)
        op = _unary_ops().get(type(expr))
        if op is not None and len(expr.args) == 1:
            return self.unary(op, self.walk(expr.args[0]))
        raise DeriveError(
            f"{self.what}: cannot export the expression part {expr} "
            f"({type(expr).__name__}); use a built-in activation instead"
        )


def user_expression(ref: OpRef) -> tuple[sp.Expr, sp.Symbol]:
    """A user activation's forward expression and its variable."""
    z = sp.Symbol("z", real=True)
    return resolve_activation(ref).forward(z), z
