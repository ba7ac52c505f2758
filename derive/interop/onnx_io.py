"""ONNX export: ``Network.to_onnx(path)`` and ``derive export --format onnx``.

The graph takes ``X`` of shape (N, *input shape) (torch's layouts: (N, features),
(N, C, L), (N, C, H, W)) and gives ``Y`` of shape (N, outputs), the network's
outputs as ``Network.outputs`` (probabilities of a sigmoid or softmax head,
logits of bce_with_logits, values of a regression), in evaluation mode. One
node (or a few) per layer, built with ``onnx.helper``:

* dense: ``Gemm`` with ``transB=1`` (W is (out, in)); conv1d/2d: ``Conv``;
  max pooling: ``MaxPool`` (padding never wins a maximum, as in derive);
  average pooling: ``AveragePool`` with ``count_include_pad=1``; flatten:
  ``Flatten``; dropout: nothing (the identity at inference); batch_norm:
  ``BatchNormalization`` with the running statistics; layer_norm:
  ``LayerNormalization`` over the sample's axes; a residual connection: ``Add``
  before the activation.
* activations: ``Sigmoid``, ``Tanh``, ``Relu``, ``LeakyRelu``, ``Elu``,
  ``Selu`` (derive's constants), ``Softplus``, ``Softsign``, ``Gelu``
  (``approximate`` none or tanh), ``Softmax`` (axis 1); silu as ``x *
  Sigmoid(x)``; a user expression node by node from its SymPy tree (``Add``,
  ``Mul``, ``Div``, ``Pow``, ``Exp``, ``Log``, ``Sqrt``, ``Abs``, ``Tanh``,
  ``Erf``, ``Max``, ...).

The opset and IR version are pinned (:data:`OPSET`, :data:`IR_VERSION`), and
every model passes ``onnx.checker.check_model(full_check=True)`` before it is
written. The spec (TOML), its hash, the task and the class labels ride along
as metadata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .._version import __version__
from ..errors import DeriveError
from ..fileio import atomic_open
from ..spec import OpRef
from . import ExprWalker, LayerInfo, network_layers, user_expression

if TYPE_CHECKING:
    import sympy as sp

    from ..network import Network

#: The opset the exports use: 21 has every operator they need (Gelu from 20,
#: LayerNormalization from 17) and loads in onnxruntime >= 1.18.
OPSET = 21
#: The IR version of ONNX 1.16, the first with opset 21.
IR_VERSION = 10


class _Graph:
    """Nodes and initializers being built, with fresh names."""

    def __init__(self, dtype: str) -> None:
        self.dtype = np.dtype(dtype)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def constant(self, stem: str, value: Any) -> str:
        """An initializer of the model's dtype holding ``value``."""
        name = self.name(stem)
        array = np.asarray(value, dtype=self.dtype)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(
        self, op: str, inputs: list[str], stem: str | None = None, **attrs: Any
    ) -> str:
        output = self.name(stem or op.lower())
        self.nodes.append(
            helper.make_node(op, inputs, [output], name=f"{output}_node", **attrs)
        )
        return output


class _OnnxWalker(ExprWalker[str]):
    """A user expression as ONNX nodes, reading the tensor ``source``."""

    _BINARY = {"add": "Add", "mul": "Mul", "div": "Div", "pow": "Pow",
               "max": "Max", "min": "Min"}  # fmt: skip
    _UNARY = {"neg": "Neg", "exp": "Exp", "log": "Log", "sqrt": "Sqrt",
              "abs": "Abs", "tanh": "Tanh", "sinh": "Sinh", "cosh": "Cosh",
              "sin": "Sin", "cos": "Cos", "atan": "Atan", "erf": "Erf"}  # fmt: skip

    def __init__(self, x: sp.Symbol, graph: _Graph, source: str, what: str) -> None:
        super().__init__(x, what)
        self.graph = graph
        self.source = source

    def variable(self) -> str:
        return self.source

    def constant(self, value: float) -> str:
        return self.graph.constant("c", value)

    def binary(self, op: str, a: str, b: str) -> str:
        return self.graph.node(self._BINARY[op], [a, b])

    def unary(self, op: str, a: str) -> str:
        return self.graph.node(self._UNARY[op], [a])


def _activation(graph: _Graph, ref: OpRef | None, x: str, where: str) -> str:
    """The nodes of an activation applied to tensor ``x``; returns its output."""
    if ref is None or ref.name == "identity":
        return x
    if ref.expr is not None:
        tree, variable = user_expression(ref)
        return _OnnxWalker(variable, graph, x, f"{where}: activation {ref.label}").walk(
            tree
        )
    params = dict(ref.params)
    simple = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu",
              "softplus": "Softplus", "softsign": "Softsign"}  # fmt: skip
    if ref.name in simple:
        return graph.node(simple[ref.name], [x])
    if ref.name == "leaky_relu":
        return graph.node("LeakyRelu", [x], alpha=params["alpha"])
    if ref.name == "elu":
        return graph.node("Elu", [x], alpha=params["alpha"])
    if ref.name == "selu":
        from ..ops import SELU_ALPHA, SELU_SCALE  # SymPy Floats, made on use

        return graph.node("Selu", [x], alpha=float(SELU_ALPHA), gamma=float(SELU_SCALE))
    if ref.name == "silu":
        return graph.node("Mul", [x, graph.node("Sigmoid", [x])], stem="silu")
    if ref.name in ("gelu", "gelu_tanh"):
        approximate = "tanh" if ref.name == "gelu_tanh" else "none"
        return graph.node("Gelu", [x], approximate=approximate)
    if ref.name == "softmax":
        return graph.node("Softmax", [x], axis=1)
    raise DeriveError(f"{where}: no ONNX operator for activation '{ref.label}'")


def _layer(graph: _Graph, info: LayerInfo, x: str, outputs: list[str]) -> str:
    """The nodes of one layer reading ``x``; ``outputs`` holds the earlier
    layers' outputs (0: the input) for a residual connection."""
    kind, attr = info.kind, info.attr
    where = f"layer {info.index} ({info.layer.label})"
    if kind == "dense":
        W = graph.constant(f"W{info.index}", info.params["W"])
        b = graph.constant(f"b{info.index}", info.params["b"])
        z = graph.node("Gemm", [x, W, b], stem=f"z{info.index}", transB=1)
    elif kind in ("conv1d", "conv2d"):
        W = graph.constant(f"W{info.index}", info.params["W"])
        b = graph.constant(f"b{info.index}", info.params["b"])
        padding = list(attr("padding"))
        z = graph.node(
            "Conv", [x, W, b], stem=f"z{info.index}",
            kernel_shape=list(attr("kernel")), strides=list(attr("stride")),
            pads=padding + padding, dilations=list(attr("dilation")),
        )  # fmt: skip
    elif kind.startswith(("max_pool", "avg_pool")):
        padding = list(attr("padding"))
        options: dict[str, Any] = {
            "kernel_shape": list(attr("kernel")), "strides": list(attr("stride")),
            "pads": padding + padding,
        }  # fmt: skip
        if kind.startswith("avg"):
            options["count_include_pad"] = 1
        op = "MaxPool" if kind.startswith("max") else "AveragePool"
        return graph.node(op, [x], stem=f"a{info.index}", **options)
    elif kind == "flatten":
        return graph.node("Flatten", [x], stem=f"a{info.index}", axis=1)
    elif kind == "dropout":
        return x  # the identity at inference
    elif kind == "batch_norm":
        channels = info.in_shape[0]
        scale = info.params.get("gamma", np.ones(channels))
        shift = info.params.get("beta", np.zeros(channels))
        inputs = [
            x, graph.constant(f"gamma{info.index}", scale),
            graph.constant(f"beta{info.index}", shift),
            graph.constant(f"running_mean{info.index}", info.buffers["running_mean"]),
            graph.constant(f"running_var{info.index}", info.buffers["running_var"]),
        ]  # fmt: skip
        return graph.node(
            "BatchNormalization", inputs, stem=f"a{info.index}",
            epsilon=float(attr("eps")), momentum=1.0 - float(attr("momentum")),
        )  # fmt: skip
    elif kind == "layer_norm":
        shape = info.in_shape
        scale = info.params.get("gamma", np.ones(shape)).reshape(shape)
        shift = info.params.get("beta", np.zeros(shape)).reshape(shape)
        inputs = [
            x, graph.constant(f"gamma{info.index}", scale),
            graph.constant(f"beta{info.index}", shift),
        ]  # fmt: skip
        return graph.node(
            "LayerNormalization", inputs, stem=f"a{info.index}", axis=1,
            epsilon=float(attr("eps")),
        )  # fmt: skip
    else:
        raise DeriveError(f"{where}: no ONNX operator for layer kind '{kind}'")
    if info.layer.residual is not None:
        z = graph.node("Add", [z, outputs[info.layer.residual]], stem=f"r{info.index}")
    return _activation(graph, info.layer.activation, z, where)


def onnx_model(network: Network) -> onnx.ModelProto:
    """The network as a float32 ONNX model, checked with
    ``onnx.checker.check_model(full_check=True)``. (float32 only: onnxruntime's
    CPU kernels of Conv, Elu, LeakyRelu, Selu, Softplus and Softsign take no
    float64.)"""
    spec = network.spec
    graph = _Graph("float32")
    outputs = ["X"]
    for info in network_layers(network):
        outputs.append(_layer(graph, info, outputs[-1], outputs))
    graph.nodes.append(helper.make_node("Identity", [outputs[-1]], ["Y"], name="Y"))
    element = TensorProto.FLOAT
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            spec.name,
            [helper.make_tensor_value_info("X", element, ["N", *spec.input_shape])],
            [helper.make_tensor_value_info("Y", element, ["N", spec.sizes[-1]])],
            graph.initializers,
        ),
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="derive",
        producer_version=__version__,
        doc_string=f"{spec.name}: {spec.architecture}, outputs as Network.outputs",
    )
    metadata = {
        "derive_spec": spec.to_toml(),
        "derive_spec_hash": spec.hash,
        "task": network.task,
    }
    if network.is_classifier:
        metadata["classes"] = json.dumps(np.asarray(network.classes_).tolist())
    if network.feature_names_in_ is not None:
        metadata["feature_names"] = json.dumps(list(network.feature_names_in_))
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    return model


def to_onnx(network: Network, path: str | os.PathLike[str]) -> Path:
    """Write the network's ONNX model to ``path`` atomically; returns the path."""
    model = onnx_model(network)
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fh.write(model.SerializeToString())
    return path
