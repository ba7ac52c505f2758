"""Layer kinds on the IR: conv1d/2d, max and average pooling, flatten.

Generated modules against the independent NumPy reference network
(``reference_network``, built on ``conv_reference``) and against
``torch.nn.functional`` in float64 where torch is installed, on chains of
layers that cover the shape grid: ``(L + 2p - d(k-1) - 1) % s != 0``, stride
larger than the kernel, dilation above 1, padding up to kernel - 1, 1x1
kernels, overlapping pool windows, exact ties in max pooling, a batch of one
and a padded last batch. Each chain starts with a 1x1 convolution so that the
input gradient of every layer under test is part of a parameter's gradient.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import reference_network as refnet
import sympy as sp
from corpus import finite_difference_grad, relative_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import derive
from derive.engine.adjoint import GatherRule, derive_rules, gather
from derive.engine.interpret import check_gather
from derive.errors import SpecError
from derive.layers import LAYER_KINDS
from derive.spec import spec_from_dict


def _conv(dim: int, filters: int, activation: str = "identity", **attrs: Any) -> dict:
    return {
        "kind": f"conv{dim}d",
        "filters": filters,
        "activation": activation,
        **attrs,
    }


def _pool(kind: str, **attrs: Any) -> dict:
    return {"kind": kind, **attrs}


def _network(name: str, input_shape, layers, outputs=3, head="mse") -> dict:
    head_act = "softmax" if head == "cross_entropy" else "identity"
    return {
        "name": name,
        "input": list(input_shape),
        "layers": [
            *layers,
            {"kind": "flatten"},
            {"units": outputs, "activation": head_act},
        ],
        "loss": {"name": head},
        "optimizer": {"name": "sgd", "lr": 0.05},
    }


ONE_BY_ONE = {"kernel": 1}

#: Chains of layers, named by the grid cases they cover.
CHAINS = {
    # CMU 10-714 #6: 7x7, stride 3, padding 2 on 16x16: (16 + 4 - 6 - 1) % 3 = 1
    "conv2d_cmu_remainder": _network(
        "cmu_remainder",
        (2, 16, 16),
        [_conv(2, 2, **ONE_BY_ONE), _conv(2, 3, "tanh", kernel=7, stride=3, padding=2)],
    ),
    # stride above the kernel, non-square; then a dilated kernel with padding
    "conv2d_stride_gt_kernel_dilation": _network(
        "stride_dilation",
        (1, 11, 10),
        [
            _conv(2, 2, **ONE_BY_ONE),
            _conv(2, 2, "relu", kernel=[2, 3], stride=[3, 4], padding=[1, 2]),
            _conv(2, 2, "tanh", kernel=2, dilation=2, padding=1),
        ],
        outputs=2,
    ),
    # dilation 3 with padding kernel - 1; a 1x1 kernel with stride 2 and padding
    "conv2d_dilation3_pad_k_minus_1_1x1": _network(
        "dilation_pad",
        (2, 9, 9),
        [
            _conv(2, 2, **ONE_BY_ONE),
            _conv(2, 2, "sigmoid", kernel=3, dilation=3, padding=2),
            _conv(2, 1, kernel=1, stride=2, padding=1),
        ],
    ),
    # every attribute non-square, softmax + cross-entropy head
    "conv2d_nonsquare_all": _network(
        "nonsquare",
        (1, 10, 7),
        [
            _conv(2, 2, **ONE_BY_ONE),
            _conv(
                2,
                2,
                "tanh",
                kernel=[5, 3],
                stride=[2, 1],
                padding=[2, 1],
                dilation=[1, 2],
            ),
        ],  # fmt: skip
        head="cross_entropy",
    ),
    # overlapping windows (stride < kernel) with padding; stride > kernel, non-square
    "max_pool2d_overlap_padding": _network(
        "max_pool_grid",
        (2, 9, 8),
        [
            _conv(2, 2, **ONE_BY_ONE),
            _pool("max_pool2d", kernel=3, stride=1, padding=1),
            _pool("max_pool2d", kernel=[2, 3], stride=[3, 2], padding=[1, 1]),
        ],
        outputs=2,
    ),
    # count_include_pad: padded zeros counted; remainders in both axes
    "avg_pool2d_padding_remainder": _network(
        "avg_pool_grid",
        (2, 9, 8),
        [
            _conv(2, 2, **ONE_BY_ONE),
            _pool("avg_pool2d", kernel=3, stride=2, padding=1),
            _pool("avg_pool2d", kernel=2),
        ],
        outputs=2,
    ),
    # 1-D: the remainder case, dilation with padding, overlapping max pool with
    # padding, stride > kernel average pool
    "conv1d_pool1d_grid": _network(
        "one_d_grid",
        (2, 16),
        [
            _conv(1, 2, **ONE_BY_ONE),
            _conv(1, 3, "tanh", kernel=7, stride=3, padding=2),
            _conv(1, 2, "relu", kernel=2, padding=1, dilation=2),
            _pool("max_pool1d", kernel=2, stride=1, padding=1),
            _pool("avg_pool1d", kernel=2, stride=3),
        ],
        outputs=2,
    ),
}


def _spec(data: dict, dtype: str = "float64") -> derive.Spec:
    return spec_from_dict({**data, "dtype": dtype})


def _case(module, rows: int, seed: int):
    rng = np.random.default_rng(seed)
    params = module.init_params(seed)
    for p in params:
        p += rng.normal(0.0, 0.2, p.shape)
    X = rng.normal(size=(rows, *module.INPUT_SHAPE))
    if module.TARGETS == "distribution":
        Y = np.eye(module.N_OUTPUT)[rng.integers(0, module.N_OUTPUT, rows)]
    else:
        Y = rng.normal(size=(rows, module.N_OUTPUT))
    return params, X, Y


def _close(got, want, rtol: float, what: str) -> None:
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        scale = max(float(np.max(np.abs(w))), 1e-300)
        err = float(np.max(np.abs(np.asarray(g) - w))) / scale
        assert err <= rtol, f"{what}[{i}]: relative error {err:.3g} > {rtol:g}"


# ------------------------------------------------------- against the reference


@pytest.mark.parametrize("name", sorted(CHAINS))
@pytest.mark.parametrize("rows", [1, 5])
def test_module_matches_numpy_reference(name, rows):
    data = CHAINS[name]
    module = derive.build(_spec(data))
    params, X, Y = _case(module, rows, seed=rows)
    value, grads = module.loss_and_grad(params, X, Y)
    ref_value, ref_out, ref_grads = refnet.loss_and_grad(data, params, X, Y)
    assert value == pytest.approx(ref_value, rel=1e-12)
    np.testing.assert_allclose(
        module.predict(params, X), ref_out, rtol=1e-12, atol=1e-14
    )
    _close(grads, ref_grads, 1e-11, name)
    # rows flattened in C order (what a CSV holds) are the same inputs
    flat_value, flat_grads = module.loss_and_grad(params, X.reshape(rows, -1), Y)
    assert flat_value == value
    _close(flat_grads, grads, 0.0, f"{name} flattened")


def _load_with(spec: derive.Spec, **constants):
    """Generate the spec's module with the lowering's constants overridden (e.g.
    IM2COL_MIN_TAPS) and import it from a content-addressed file."""
    import hashlib

    from derive.codegen import lowering
    from derive.generate import atomic_write, cache_dir, generate_source, import_path

    with pytest.MonkeyPatch.context() as mp:
        for name, value in constants.items():
            mp.setattr(lowering, name, value)
        source = generate_source(spec)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    path = cache_dir() / "layers" / f"{spec.name}_{digest}.py"
    if not path.exists():
        atomic_write(path, source)
    return import_path(path, f"layers_{spec.name}_{digest}"), source


@pytest.mark.parametrize(
    "name",
    ["conv2d_cmu_remainder", "conv2d_stride_gt_kernel_dilation", "conv1d_pool1d_grid"],
)
def test_direct_convolution_loops_match_numpy_reference(name):
    """The direct form (loops over the derived scatter rules, no im2col) that
    layers below IM2COL_MIN_TAPS would use."""
    data = CHAINS[name]
    module, source = _load_with(_spec(data), IM2COL_MIN_TAPS=10**9)
    assert "cols1" not in source  # no im2col windows: the derived scatter rules
    params, X, Y = _case(module, 3, seed=4)
    value, grads = module.loss_and_grad(params, X, Y)
    ref_value, ref_out, ref_grads = refnet.loss_and_grad(data, params, X, Y)
    assert value == pytest.approx(ref_value, rel=1e-12)
    np.testing.assert_allclose(
        module.predict(params, X), ref_out, rtol=1e-12, atol=1e-14
    )
    _close(grads, ref_grads, 1e-11, f"{name} direct")


def test_max_pool_ties_route_to_the_first_maximum():
    """Integer inputs with equal values in overlapping windows: the 1x1
    convolution (weight 1, bias 0) passes them on exactly, so the gradient of its
    weight shows where every window's gradient went (torch: the first maximum)."""
    data = _network(
        "ties",
        (1, 6, 6),
        [_conv(2, 1, **ONE_BY_ONE), _pool("max_pool2d", kernel=3, stride=1, padding=1)],
        outputs=2,
    )
    module = derive.build(_spec(data))
    rng = np.random.default_rng(3)
    X = rng.integers(0, 3, size=(4, 1, 6, 6)).astype(float)  # many ties
    Y = rng.normal(size=(4, 2))
    params = module.init_params(0)
    params[0][:] = 1.0
    params[1][:] = 0.0
    value, grads = module.loss_and_grad(params, X, Y)
    ref_value, _, ref_grads = refnet.loss_and_grad(data, params, X, Y)
    assert value == pytest.approx(ref_value, rel=1e-13)
    _close(grads, ref_grads, 1e-12, "ties")
    # a rule that split ties (SymPy's Heaviside of Max) would move weight: the
    # first conv's weight gradient must be the reference's exactly in sum
    assert np.isclose(grads[0].sum(), ref_grads[0].sum(), rtol=1e-12)


def test_padded_last_batch_trains_like_the_batches_it_is_made_of():
    """fit with 5 rows in batches of 2 (the last one padded to 2 columns) equals
    three plain SGD steps computed from loss_and_grad on 2, 2 and 1 rows."""
    data = CHAINS["max_pool2d_overlap_padding"]
    module = derive.build(_spec(data))
    params, X, Y = _case(module, 5, seed=11)
    manual = [p.copy() for p in params]
    for start in range(0, 5, 2):
        _, grads = module.loss_and_grad(
            manual, X[start : start + 2], Y[start : start + 2]
        )
        for p, g in zip(manual, grads, strict=True):
            p -= 0.05 * g
    module.fit(params, X, Y, epochs=1, batch_size=2, shuffle=False, lr=0.05)
    _close(params, manual, 1e-13, "padded last batch")


@pytest.mark.parametrize("name", ["conv2d_nonsquare_all", "conv1d_pool1d_grid"])
def test_float32_module_agrees_with_float64(name):
    m64 = derive.build(_spec(CHAINS[name]))
    m32 = derive.build(_spec(CHAINS[name], "float32"))
    params, X, Y = _case(m64, 6, seed=2)
    v64, g64 = m64.loss_and_grad(params, X, Y)
    p32 = [p.astype(np.float32) for p in params]
    v32, g32 = m32.loss_and_grad(p32, X.astype(np.float32), Y.astype(np.float32))
    assert all(g.dtype == np.float32 for g in g32)
    assert abs(v32 - v64) <= 1e-5 * max(1.0, abs(v64))
    assert relative_error(g32, g64) < 1e-5


# ------------------------------------------------------------ against torch


def _torch_loss_and_grad(data: dict, params, X, Y):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    tensors = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params]
    a = torch.tensor(X, dtype=torch.float64)
    position = 0
    for layer in data["layers"]:
        kind = layer.get("kind", "dense")
        if kind == "flatten":
            a = torch.flatten(a, 1)
            continue
        if kind == "dense":
            a = F.linear(a, tensors[position], tensors[position + 1])
            position += 2
        elif kind.startswith("conv"):
            conv = F.conv2d if kind == "conv2d" else F.conv1d
            a = conv(a, tensors[position], tensors[position + 1],
                     stride=layer.get("stride", 1), padding=layer.get("padding", 0),
                     dilation=layer.get("dilation", 1))  # fmt: skip
            position += 2
        else:
            two = kind.endswith("2d")
            options = {
                "kernel_size": layer["kernel"],
                "stride": layer.get("stride", layer["kernel"]),
                "padding": layer.get("padding", 0),
            }
            if kind.startswith("max"):
                a = (F.max_pool2d if two else F.max_pool1d)(a, **options)
            else:
                pool = F.avg_pool2d if two else F.avg_pool1d
                a = pool(a, count_include_pad=True, **options)
        act = layer.get("activation", "identity")
        if act in ("relu", "tanh", "sigmoid"):
            a = getattr(torch, act)(a)
    target = torch.tensor(Y, dtype=torch.float64)
    if data["loss"]["name"] == "cross_entropy":
        loss = F.cross_entropy(a, target)
    else:
        loss = F.mse_loss(a, target)
    loss.backward()
    return float(loss.detach()), [t.grad.numpy() for t in tensors]


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_module_matches_torch_float64(name, record_torch_error):
    data = CHAINS[name]
    module = derive.build(_spec(data))
    params, X, Y = _case(module, 4, seed=7)
    value, grads = module.loss_and_grad(params, X, Y)
    torch_value, torch_grads = _torch_loss_and_grad(data, params, X, Y)
    assert value == pytest.approx(torch_value, rel=1e-12)
    worst = max(
        float(np.max(np.abs(g - t)) / max(np.max(np.abs(t)), 1e-300))
        for g, t in zip(grads, torch_grads, strict=True)
    )
    record_torch_error(worst)
    assert worst <= 1e-11, f"{name}: worst relative gradient error {worst:.3g}"


# ------------------------------------------------------- finite differences


@st.composite
def cnn_architectures(draw):
    """A random chain of conv and pooling layers on a small image or signal
    whose every shape is valid, then flatten and a dense head."""
    two = draw(st.booleans())
    size = draw(st.integers(5, 9))
    shape = [draw(st.integers(1, 2)), size] + ([draw(st.integers(5, 8))] if two else [])
    layers = []
    spatial = list(shape[1:])
    for _ in range(draw(st.integers(1, 3))):
        pool = draw(st.booleans()) and layers
        k = draw(st.integers(1, 3))
        s = draw(st.integers(1, 3))
        if pool:
            p = draw(st.integers(0, k // 2))
            d = 1
            kind = draw(st.sampled_from(["max_pool", "avg_pool"])) + (
                "2d" if two else "1d"
            )
            layer = {"kind": kind, "kernel": k, "stride": s, "padding": p}
        else:
            p = draw(st.integers(0, k - 1))
            d = draw(st.integers(1, 2))
            act = draw(st.sampled_from(["tanh", "sigmoid", "identity"]))
            layer = _conv(2 if two else 1, draw(st.integers(1, 3)), act, kernel=k,
                          stride=s, padding=p, dilation=d)  # fmt: skip
        out = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n in spatial]
        if min(out) < 1:
            break
        layers.append(layer)
        spatial = out
    if not layers:
        layers = [_conv(2 if two else 1, 2, "tanh", kernel=1)]
    rows = draw(st.sampled_from([1, 3]))
    return _network("random_cnn", shape, layers, outputs=2), rows


@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(cnn_architectures())
def test_random_cnn_architectures_match_finite_differences(case):
    data, rows = case
    module = derive.build(_spec(data))
    params, X, Y = _case(module, rows, seed=5)
    _, grads = module.loss_and_grad(params, X, Y)
    fd = finite_difference_grad(module, params, X.reshape(rows, -1), Y)
    assert relative_error(fd, grads) < 1e-7, data["layers"]


# ------------------------------------------------------------ the engine


def test_gather_check_catches_an_unsound_elimination():
    """``y[t] = x[2t]``-style reads: dropping the divisibility guard (what
    ``Sum(...).doit()`` over KroneckerDelta does) must fail the numeric check."""
    kind = LAYER_KINDS["avg_pool1d"]
    (rule,) = derive_rules(kind)
    form = gather(rule, kind.tensor("x").shape)
    assert any(isinstance(c, sp.Eq) and c.lhs.has(sp.Mod) for c in form.conditions)
    attrs, input_shape = {"kernel": (1,), "stride": (2,), "padding": (0,)}, (1, 8)
    binding = kind.binding(attrs, input_shape)
    assert check_gather([rule], form, kind, binding) < 1e-12
    unsound = GatherRule(
        form.target,
        form.target_index,
        form.sums,
        tuple(c for c in form.conditions if not c.has(sp.Mod)),
        form.value,
    )
    assert check_gather([rule], unsound, kind, binding) > 0.1


def test_conv_input_gradient_is_the_textbook_gather_form():
    kind = LAYER_KINDS["conv1d"]
    rules = {r.target: r for r in derive_rules(kind)}
    form = gather(rules["x"], kind.tensor("x").shape)
    (u,) = [s for s in form.target_index if str(s) == "u"]
    names = {str(s) for s, _ in form.sums}
    assert names == {"f", "k"}  # the sum runs over the filters and kernel taps
    text = " ".join(str(c) for c in form.conditions)
    assert "Mod" in text and "L_out" in text  # divisibility and range guards
    assert (
        form.value.has(
            sp.IndexedBase("W")[sp.Symbol("f", integer=True, nonnegative=True), 0, 0]
        )
        is False
    )
    assert u in form.value.free_symbols


# ---------------------------------------------------------------- the spec


BASE = _network("valid", (1, 8, 8), [_conv(2, 4, "relu", kernel=3, padding=1)])


def _problems(mutate) -> str:
    data = copy.deepcopy(BASE)
    mutate(data)
    with pytest.raises(SpecError) as info:
        spec_from_dict(data)
    return str(info.value)


SPEC_CASES = {
    "kernel larger than the padded input": (
        lambda d: d["layers"][0].update(kernel=11),
        ["kernel 11 is larger than the padded height 10", "would be", "= 0"],
    ),
    "dilated kernel too large": (
        lambda d: d["layers"][0].update(kernel=3, dilation=5, padding=0),
        ["dilated by 5, it spans 11", "= -2"],
    ),
    "pool padding over half the kernel": (
        lambda d: d["layers"].insert(1, _pool("max_pool2d", kernel=2, padding=2)),
        ["padding 2 along the height is more than half the kernel 2"],
    ),
    "softmax on a conv layer": (
        lambda d: d["layers"][0].update(activation="softmax"),
        ["'softmax'", "only allowed on the output layer"],
    ),
    "unknown key with did-you-mean": (
        lambda d: d["layers"][0].update(filter=3),
        ["unknown key 'filter'", "did you mean 'filters'"],
    ),
    "unknown kind": (
        lambda d: d["layers"][0].update(kind="conv3d"),
        ["unknown layer kind 'conv3d'", "did you mean", "conv2d"],
    ),
    "dense after a spatial layer": (
        lambda d: d["layers"].pop(1),
        ["needs a feature vector", "4x8x8", 'kind = "flatten"'],
    ),
    "conv2d on a feature vector": (
        lambda d: d.update(input=64),
        ["conv2d layer needs an input of shape [channels, height, width]", "64"],
    ),
    "kernel with the wrong number of axes": (
        lambda d: d["layers"][0].update(kernel=[3, 3, 3]),
        ["kernel must be an int or a list of 2 ints"],
    ),
    "activation on a pooling layer": (
        lambda d: d["layers"].insert(
            1, {**_pool("max_pool2d", kernel=2), "activation": "relu"}
        ),  # fmt: skip
        ["max_pool2d layer takes no activation"],
    ),
    "missing filters": (
        lambda d: d["layers"][0].pop("filters"),
        ["missing 'filters'"],
    ),
    "zero stride": (
        lambda d: d["layers"][0].update(stride=0),
        ["stride must be a positive integer", "0"],
    ),
    "bad input shape": (
        lambda d: d.update(input=[1, 0, 8]),
        ["input", "[channels, height, width]"],
    ),
    "spatial output layer": (
        lambda d: d["layers"].__delitem__(slice(1, None)),
        ["the output layer must be dense"],
    ),
}


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_spec_problems_name_the_problem_and_the_fix(case):
    mutate, words = SPEC_CASES[case]
    message = _problems(mutate)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_canonical_form_fills_defaults_and_keeps_dense_hashes():
    spec = spec_from_dict(
        _network(
            "canonical",
            (1, 8, 8),
            [_conv(2, 4, "relu", kernel=3), _pool("max_pool2d", kernel=2)],
        )  # fmt: skip
    )
    conv, pool = spec.layers[0], spec.layers[1]
    assert dict(conv.attrs) == {"filters": 4, "kernel": (3, 3), "stride": (1, 1),
                                "padding": (0, 0), "dilation": (1, 1)}  # fmt: skip
    assert dict(pool.attrs)["stride"] == (
        2,
        2,
    )  # torch: the stride defaults to the kernel
    assert spec.shapes == ((1, 8, 8), (4, 6, 6), (4, 3, 3), (36,), (3,))
    again = derive.parse_spec(spec.to_toml())
    assert again == spec and again.hash == spec.hash
    assert "kind" not in spec.to_dict()["layers"][-1]  # a dense layer names no kind


def _check_cases():
    for kind in LAYER_KINDS.values():
        for variant in (kind, *(v for _, _, v in kind.variants)):
            for n, (attrs, shape) in enumerate(variant.checks):
                yield pytest.param(variant, attrs, shape, id=f"{variant.name}-{n}")
    # flatten has no checks: a view of any shape
    yield pytest.param(LAYER_KINDS["flatten"], {}, (3, 4, 5), id="flatten")


@pytest.mark.parametrize(("kind", "attrs", "shape"), list(_check_cases()))
def test_interface_shape_rule_is_the_definitions_shape(kind, attrs, shape):
    """The spec's output shapes (the SymPy-free shape rule, in ints) are the ones
    the SymPy definition gives (its size formulas, bound), on every kind's
    checks: the formulas come from the rule, through the attribute symbols."""
    binding = kind.binding(attrs, shape)
    if kind.shape_of is None:  # else its symbols are the statements' view
        bound = tuple(int(sp.sympify(e).xreplace(binding)) for e in kind.output_shape)
    else:
        bound = tuple(shape)
    assert kind.interface.output_shape(attrs, shape) == bound


def _torch_size(length, kernel, stride, padding, dilation=1):
    """torch's documented output length, written here with sympy.floor."""
    return sp.floor((length + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1


def test_window_size_formulas_are_torchs():
    """The windowed kinds' size formulas, which come from the interfaces' shape
    rule applied to symbols, are torch's formula term for term (the formula
    the definitions wrote out before the rule existed; the goldens print it)."""

    def symbols(kind, names):
        own = {s.name: s for s in (*kind.bind, *kind.input, *kind.sizes)}
        return [own[n] for n in names.split()]

    conv1d = LAYER_KINDS["conv1d"]
    L, K, s_, p, d, L_out = symbols(conv1d, "L_in K s p d L_out")
    assert conv1d.sizes == {L_out: _torch_size(L, K, s_, p, d)}
    for name in ("max_pool1d", "avg_pool1d"):
        pool = LAYER_KINDS[name]
        L, K, s_, p, L_out = symbols(pool, "L_in K s p L_out")
        assert pool.sizes == {L_out: _torch_size(L, K, s_, p)}
    conv2d = LAYER_KINDS["conv2d"]
    H, W, kh, kw, sh, sw, ph, pw, dh, dw, H_out, W_out = symbols(
        conv2d, "H_in W_in k_h k_w s_h s_w p_h p_w d_h d_w H_out W_out"
    )
    assert conv2d.sizes == {
        H_out: _torch_size(H, kh, sh, ph, dh),
        W_out: _torch_size(W, kw, sw, pw, dw),
    }
    for name in ("max_pool2d", "avg_pool2d"):
        pool = LAYER_KINDS[name]
        H, W, kh, kw, sh, sw, ph, pw, H_out, W_out = symbols(
            pool, "H_in W_in k_h k_w s_h s_w p_h p_w H_out W_out"
        )
        assert pool.sizes == {
            H_out: _torch_size(H, kh, sh, ph),
            W_out: _torch_size(W, kw, sw, pw),
        }
    # the kinds that keep their shape derive no size
    for name in ("dense", "flatten", "dropout", "batch_norm", "layer_norm"):
        assert LAYER_KINDS[name].sizes == {}


def test_loading_specs_of_every_kind_does_not_import_sympy(tmp_path):
    """Validating a spec (every layer kind, shapes, hashes) reads the kinds'
    interfaces only: a process that loads specs and never derives never imports
    SymPy (derive predict, derive fit of a cached architecture)."""
    from corpus import CNN_CORPUS, TRAINING_CORPUS

    avg_pool1d = _network(
        "avg_pool1d", (2, 9), [_conv(1, 2, kernel=3), _pool("avg_pool1d", kernel=2)]
    )
    specs = [
        *CNN_CORPUS.values(),
        *map(spec_from_dict, [*TRAINING_CORPUS.values(), avg_pool1d]),
    ]
    paths = []
    for n, spec in enumerate(specs):
        path = tmp_path / f"spec{n}.toml"
        path.write_text(spec.to_toml(), encoding="utf-8")
        paths.append(str(path))
    assert {layer.kind for spec in specs for layer in spec.layers} == set(LAYER_KINDS)
    script = (
        "import sys, derive\n"
        "for path in sys.argv[1:]:\n"
        "    spec = derive.load_spec(path)\n"
        "    print(spec.hash, spec.architecture_hash, spec.shapes)\n"
        "print('sympy' in sys.modules)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, *paths],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    *lines, imported = run.stdout.splitlines()
    assert imported == "False"
    # the same hashes and shapes as in this process, where SymPy is loaded
    for path, line in zip(paths, lines, strict=True):
        spec = derive.load_spec(path)
        assert line == f"{spec.hash} {spec.architecture_hash} {spec.shapes}"


@pytest.mark.parametrize("name", sorted(LAYER_KINDS))
def test_kinds_and_interfaces_pickle(name):
    """Interfaces hold functions, not lambdas, so a kind (and a derivation that
    holds one) can go to another process."""
    kind = LAYER_KINDS[name]
    again = pickle.loads(pickle.dumps(kind))
    assert again.name == name and again.forward == kind.forward
    assert again.sizes == kind.sizes and again.tensors == kind.tensors
    # an interface whose definition was never built: unpickled, it builds it
    fresh = dataclasses.replace(kind.interface)
    interface = pickle.loads(pickle.dumps(fresh))
    assert "definition" not in vars(interface)
    assert interface.name == name and interface.definition is kind
