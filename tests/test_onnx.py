"""Network.to_onnx against onnxruntime: every corpus network (every head,
every built-in activation, a user expression, CNNs, batch and layer norm,
dropout, residual connections) gives ``outputs`` to 1e-5 in float32; the model
passes the full checker at the pinned opset and carries its spec."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sympy as sp
from corpus import CORPUS, ROOT, TRAINING_CORPUS, make_spec

from derive import DeriveError, Network, parse_spec
from derive.spec import load_spec, spec_from_dict

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from derive.interop import ExprWalker  # noqa: E402
from derive.interop.onnx_io import IR_VERSION, OPSET  # noqa: E402

#: every function a user expression may call, and a named constant (over three
#: layers: SymPy takes minutes to derive all of them as one expression)
EVERY_FUNCTION = make_spec(
    "every_function",
    [3, 4, 4, 4, 2],
    [
        {"expr": "sinh(x)/cosh(x) + atan(x)*erf(x) - min(x, 0.5)"},
        {"expr": "k*max(abs(x), sqrt(abs(x) + 1)) + log(1 + exp(-x))*sigmoid(x)"
                 " + softplus(x)", "k": 0.25},
        {"expr": "sin(x)*cos(x) + x**3/(1 + x**2) + e**(-x*x) + pi"},
        "identity",
    ],
    "mse",
)  # fmt: skip
SPECS = {
    **CORPUS,
    **{k: spec_from_dict(v) for k, v in TRAINING_CORPUS.items()},
    "every_function": EVERY_FUNCTION,
}
FLOAT32 = ["softmax_classifier", "digits_cnn", "digits_dense"]


def run(path, X, spec):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.asarray(X, dtype=np.float32).reshape(len(X), *spec.input_shape)
    return session.run(["Y"], {"X": x})[0]


def trained(spec, rng, rows=24):
    net = Network(spec)
    if any(layer.kind in ("batch_norm", "dropout") for layer in spec.layers):
        X = rng.normal(size=(rows, spec.n_inputs))
        if net.is_classifier and not net._multilabel:
            y = rng.integers(0, net._n_classes, rows)
        else:
            y = rng.uniform(0, 1, (rows, net.n_outputs))
        net.fit(X, y, epochs=2, batch_size=8)  # running statistics away from 0, 1
    return net


def compare(net, path, X, record):
    """onnxruntime's outputs against derive's, to 1e-5; records the largest
    difference relative to the outputs' size (printed at the end of the run)."""
    got, want = run(path, X, net.spec), net.outputs(X).astype(np.float64)
    absolute = float(np.max(np.abs(got - want)))
    record(absolute / max(1.0, float(np.max(np.abs(want)))))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_onnxruntime_outputs_equal_derive(name, tmp_path, record_onnx_difference):
    rng = np.random.default_rng(len(name))
    net = trained(SPECS[name], rng)
    path = net.to_onnx(tmp_path / f"{name}.onnx")
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == IR_VERSION
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)]
    X = 2.0 * rng.normal(size=(11, net.spec.n_inputs))
    compare(net, path, X, record_onnx_difference)


@pytest.mark.parametrize("name", FLOAT32)
def test_float32_examples(name, tmp_path, record_onnx_difference):
    net = Network(load_spec(ROOT / "examples" / f"{name}.toml"))
    X = np.random.default_rng(0).uniform(0, 16, (9, net.spec.n_inputs))
    compare(net, net.to_onnx(tmp_path / "m.onnx"), X, record_onnx_difference)


def test_large_inputs_stay_finite(tmp_path, record_onnx_difference):
    """Softplus, sigmoid and softmax of large pre-activations (|z| ~ 1e3)."""
    for name in (
        "hidden_softplus",
        "head_2_cross_entropy",
        "head_0_binary_cross_entropy",
    ):
        net = Network(SPECS[name])
        X = 500.0 * np.random.default_rng(1).normal(size=(8, net.spec.n_inputs))
        compare(net, net.to_onnx(tmp_path / "m.onnx"), X, record_onnx_difference)


def ops(path):
    return [node.op_type for node in onnx.load(path).graph.node]


def test_the_nodes_are_onnxs(tmp_path):
    dense = Network(SPECS["example_xor"]).to_onnx(tmp_path / "a.onnx")
    graph = onnx.load(dense).graph
    assert ops(dense) == ["Gemm", "Sigmoid", "Gemm", "Sigmoid", "Identity"]
    gemm = graph.node[0]
    assert {a.name: a.i for a in gemm.attribute} == {"transB": 1}
    assert [
        d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim
    ] == ["N", 2]
    cnn = Network(SPECS["cnn_2d_strided"]).to_onnx(tmp_path / "b.onnx")
    assert ops(cnn) == ["Conv", "Tanh", "Conv", "Elu", "AveragePool", "Flatten",
                        "Gemm", "Sigmoid", "Identity"]  # fmt: skip
    pool = onnx.load(cnn).graph.node[4]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in pool.attribute}
    assert attrs["count_include_pad"] == 1 and attrs["pads"] == [1, 1, 1, 1]
    norms = Network(SPECS["vector_bn_dropout_residual"]).to_onnx(tmp_path / "c.onnx")
    assert ops(norms) == ["Gemm", "Tanh", "BatchNormalization", "Gemm", "Add", "Relu",
                          "Gemm", "Softmax", "Identity"]  # dropout: no node  # fmt: skip
    conv_norms = Network(SPECS["conv_bn_ln_residual"]).to_onnx(tmp_path / "d.onnx")
    assert "LayerNormalization" in ops(conv_norms) and "MaxPool" in ops(conv_norms)
    gelu = Network(SPECS["hidden_gelu_tanh"]).to_onnx(tmp_path / "e.onnx")
    node = onnx.load(gelu).graph.node[1]
    assert node.op_type == "Gelu" and node.attribute[0].s == b"tanh"


def test_metadata_carries_spec_and_classes(tmp_path):
    rng = np.random.default_rng(0)
    net = Network(SPECS["head_2_cross_entropy"])
    net.fit(rng.normal(size=(12, 3)), np.array(["a", "b", "c"] * 4), epochs=1)
    model = onnx.load(net.to_onnx(tmp_path / "m.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert parse_spec(meta["derive_spec"]) == net.spec
    assert meta["derive_spec_hash"] == net.spec.hash and meta["task"] == "multiclass"
    assert json.loads(meta["classes"]) == ["a", "b", "c"]
    assert model.producer_name == "derive"


def test_an_expression_onnx_cannot_express_is_refused():
    """Every function a spec may use has an operator; a SymPy node beyond them
    (here floor) is refused with its name."""
    x = sp.Symbol("z", real=True)

    class Names(ExprWalker[str]):
        def variable(self):
            return "x"

        def constant(self, value):
            return repr(value)

        def binary(self, op, a, b):
            return f"{op}({a}, {b})"

        def unary(self, op, a):
            return f"{op}({a})"

    assert Names(x, "t").walk(sp.exp(-x) * 3) == "mul(3.0, exp(neg(x)))"
    with pytest.raises(DeriveError, match="layer 1: cannot export the expression "
                       "part floor\\(z\\) \\(floor\\)"):  # fmt: skip
        Names(x, "layer 1").walk(sp.floor(x) + x)
