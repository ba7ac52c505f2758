"""Training-time layers: dropout, batch norm, layer norm, residual connections.

Generated modules against the independent NumPy reference network (batch and
layer norm's backward there is the textbook closed form, not a derivation) and
against torch in float64 where it is installed: the training-mode loss and every
gradient (dropout with injected masks), evaluation with running statistics,
the running statistics after several training steps; finite differences of the
whole batch's loss; the train/eval switch, save/load, early stopping.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import reference_network as refnet
from corpus import TRAINING_CORPUS, relative_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import derive
from derive.spec import spec_from_dict

CHAINS = TRAINING_CORPUS


def _module(data: dict, dtype: str = "float64"):
    return derive.build(spec_from_dict({**data, "dtype": dtype}))


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
    masks = [
        (rng.uniform(size=(rows, *shape)) < keep).astype(float)
        for _, shape, keep in module._MASKS
    ]
    return params, X, Y, masks


def _worst(got, want) -> float:
    return max(
        float(np.max(np.abs(np.asarray(g) - w)) / max(np.max(np.abs(w)), 1e-300))
        for g, w in zip(got, want, strict=True)
    )


# ------------------------------------------------------- against the reference


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_training_mode_matches_the_reference(name):
    data = CHAINS[name]
    module = _module(data)
    params, X, Y, masks = _case(module, 7, seed=1)
    for given_masks in (None, masks):
        value, grads = module.loss_and_grad(params, X, Y, masks=given_masks or None)
        ref_value, _, ref_grads = refnet.loss_and_grad(data, params, X, Y, given_masks)
        assert value == pytest.approx(ref_value, rel=1e-12)
        assert _worst(grads, ref_grads) <= 1e-11, name


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_evaluation_mode_reads_the_running_statistics(name):
    data = CHAINS[name]
    module = _module(data)
    params, X, Y, _ = _case(module, 5, seed=2)
    buffers = module.init_buffers()
    rng = np.random.default_rng(3)
    for b in buffers:
        b += rng.uniform(0.1, 0.5, b.shape)
    ref_value, ref_out, _ = refnet.loss_and_grad(data, params, X, Y, buffers=buffers)
    kwargs = {"buffers": buffers} if buffers else {}
    np.testing.assert_allclose(module.predict(params, X, **kwargs), ref_out,
                               rtol=1e-12, atol=1e-14)  # fmt: skip
    assert module.loss(params, X, Y, **kwargs) == pytest.approx(ref_value, rel=1e-12)


@pytest.mark.parametrize("name", ["conv_bn_ln_residual", "signal_plain_norms"])
def test_running_statistics_after_training_steps(name):
    """fit with plain SGD (4 batches of 3 rows, in order) against the reference:
    the same parameters and running statistics, updated with the unbiased
    variance and the momentum as torch does."""
    data = copy.deepcopy(CHAINS[name])
    module = _module(data)
    params, X, Y, _ = _case(module, 12, seed=4)
    buffers = module.init_buffers()
    ref_params = [p.copy() for p in params]
    ref_buffers = [b.copy() for b in buffers]
    momenta = [layer.get("momentum", 0.1) for layer in data["layers"]
               if layer.get("kind") == "batch_norm"]  # fmt: skip
    for start in range(0, 12, 3):
        rows = slice(start, start + 3)
        stats = refnet.batch_statistics(data, ref_params, X[rows])
        _, _, grads = refnet.loss_and_grad(data, ref_params, X[rows], Y[rows])
        for k, momentum in enumerate(momenta):
            mean, var = stats[2 * k], stats[2 * k + 1]
            count = 3 * _positions(data, k)
            ref_buffers[2 * k] = (1 - momentum) * ref_buffers[2 * k] + momentum * mean
            ref_buffers[2 * k + 1] = (1 - momentum) * ref_buffers[2 * k + 1] + (
                momentum * var * count / (count - 1)
            )
        for p, g in zip(ref_params, grads, strict=True):
            p -= 0.05 * g
    module.fit(params, X, Y, epochs=1, batch_size=3, lr=0.05, shuffle=False,
               buffers=buffers)  # fmt: skip
    assert _worst(params, ref_params) <= 1e-12
    assert _worst(buffers, ref_buffers) <= 1e-12


def _positions(data: dict, k: int) -> int:
    """Values per channel of one sample at the k-th batch_norm layer's input."""
    spec = spec_from_dict(data)
    layers = [i for i, layer in enumerate(spec.layers) if layer.kind == "batch_norm"]
    shape = spec.shapes[layers[k]]
    return int(np.prod(shape[1:]))


# ------------------------------------------------------------ against torch


def _torch_network(data: dict, params, buffers, training: bool):
    """A function of a float64 tensor X (and dropout masks) that runs the chain
    with torch.nn.functional, the parameter tensors in order, and the running
    statistics' tensors (batch norm in training mode updates them in place)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    tensors = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params]
    running = [torch.tensor(b, dtype=torch.float64) for b in buffers]

    def run(X, masks=None):
        a = X
        outputs = [a]
        position, mask_at, state_at = 0, 0, 0
        for layer in data["layers"]:
            kind = layer.get("kind", "dense")
            if kind == "dense":
                z = F.linear(a, tensors[position], tensors[position + 1])
                position += 2
            elif kind.startswith("conv"):
                conv = F.conv2d if kind == "conv2d" else F.conv1d
                z = conv(a, tensors[position], tensors[position + 1],
                         padding=layer.get("padding", 0))  # fmt: skip
                position += 2
            elif kind == "max_pool2d":
                z = F.max_pool2d(a, layer["kernel"])
            elif kind == "flatten":
                z = torch.flatten(a, 1)
            elif kind == "dropout":
                keep = 1.0 - layer.get("p", 0.5)
                z = a * masks[mask_at] / keep if training else a
                mask_at += 1
            elif kind == "batch_norm":
                weight = bias = None
                if layer.get("affine", True):
                    weight, bias = tensors[position], tensors[position + 1]
                    position += 2
                mean, var = running[state_at], running[state_at + 1]
                state_at += 2
                z = F.batch_norm(a, mean, var, weight, bias, training=training,
                                 momentum=layer.get("momentum", 0.1),
                                 eps=layer.get("eps", 1e-5))  # fmt: skip
            elif kind == "layer_norm":
                shape = a.shape[1:]
                weight = bias = None
                if layer.get("elementwise_affine", True):
                    weight = tensors[position].reshape(shape)
                    bias = tensors[position + 1].reshape(shape)
                    position += 2
                z = F.layer_norm(a, shape, weight, bias, eps=layer.get("eps", 1e-5))
            if layer.get("residual") not in (None, False):
                source = (
                    len(outputs) - 1 if layer["residual"] is True else layer["residual"]
                )
                z = z + outputs[source]
            act = layer.get("activation", "identity")
            a = getattr(torch, act)(z) if act in ("tanh", "relu", "sigmoid") else z
            outputs.append(a)
        return a

    return run, tensors, running


def _torch_loss(data, out, Y):
    torch = pytest.importorskip("torch")
    target = torch.tensor(Y, dtype=torch.float64)
    if data["loss"]["name"] == "cross_entropy":
        return torch.nn.functional.cross_entropy(out, target)
    return torch.nn.functional.mse_loss(out, target)


@pytest.mark.parametrize("name", ["vector_bn_dropout_residual", "conv_bn_ln_residual"])
def test_training_mode_matches_torch_float64(name, record_torch_error):
    torch = pytest.importorskip("torch")
    data = CHAINS[name]
    module = _module(data)
    params, X, Y, masks = _case(module, 6, seed=5)
    value, grads = module.loss_and_grad(params, X, Y, masks=masks or None)
    run, tensors, _ = _torch_network(data, params, module.init_buffers(), training=True)
    torch_masks = [torch.tensor(m, dtype=torch.float64) for m in masks]
    loss = _torch_loss(data, run(torch.tensor(X), torch_masks), Y)
    loss.backward()
    assert value == pytest.approx(float(loss.detach()), rel=1e-12)
    worst = _worst(grads, [t.grad.numpy() for t in tensors])
    record_torch_error(worst)
    assert worst <= 1e-11


def test_running_statistics_and_evaluation_match_torch_after_steps():
    """Three SGD steps of the conv chain in derive's fit and in torch (batch norm
    in training mode updates its running statistics in place), then evaluation
    with those statistics."""
    torch = pytest.importorskip("torch")
    data = CHAINS["conv_bn_ln_residual"]
    module = _module(data)
    params, X, Y, _ = _case(module, 12, seed=6)
    buffers = module.init_buffers()
    run, tensors, running = _torch_network(data, params, buffers, training=True)
    optimizer = torch.optim.SGD(tensors, lr=0.05)
    for start in range(0, 12, 4):
        optimizer.zero_grad()
        out = run(torch.tensor(X[start : start + 4]))
        _torch_loss(data, out, Y[start : start + 4]).backward()
        optimizer.step()
    module.fit(params, X, Y, epochs=1, batch_size=4, lr=0.05, shuffle=False,
               buffers=buffers)  # fmt: skip
    trained = [t.detach().numpy() for t in tensors]
    assert _worst(params, trained) <= 1e-12
    assert _worst(buffers, [r.numpy() for r in running]) <= 1e-12
    evaluate, _, _ = _torch_network(data, trained, [r.numpy() for r in running],
                                    training=False)  # fmt: skip
    expected = evaluate(torch.tensor(X)).detach().numpy()
    np.testing.assert_allclose(module.predict(params, X, buffers=buffers), expected,
                               rtol=1e-12, atol=1e-14)  # fmt: skip


def test_dropout_matches_torch_semantics():
    """torch's inverted dropout keeps values scaled by 1 / (1 - p) and zeroes the
    rest; in evaluation it is the identity: derive's injected-mask training
    network and its evaluation network are exactly that."""
    torch = pytest.importorskip("torch")
    data = {
        "name": "only_dropout",
        "input": 4,
        "layers": [
            {"kind": "dropout", "p": 0.4},
            {"units": 2, "activation": "identity"},
        ],
        "loss": {"name": "mse"},
    }
    module = _module(data)
    params, X, Y, masks = _case(module, 5, seed=7)
    torch.manual_seed(0)
    dropped = torch.nn.functional.dropout(torch.ones(10000, dtype=torch.float64), 0.4)
    assert set(np.unique(dropped.numpy()).round(12)) == {0.0, round(1 / 0.6, 12)}
    W, b = params
    value, _ = module.loss_and_grad(params, X, Y, masks=masks)
    expected = np.mean(((X * masks[0] / 0.6) @ W.T + b - Y) ** 2)
    assert value == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(module.predict(params, X), X @ W.T + b, rtol=1e-13)


# ------------------------------------------------------- finite differences


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_batch_gradient_matches_finite_differences(name):
    """Batch norm in training mode is a function of the whole batch: central
    differences of the batch's training loss (masks fixed)."""
    module = _module(CHAINS[name])
    params, X, Y, masks = _case(module, 5, seed=8)
    _, grads = module.loss_and_grad(params, X, Y, masks=masks or None)
    assert relative_error(_fd(module, params, X, Y, masks), grads) < 1e-7


def _fd(module, params, X, Y, masks, eps=1e-6):
    out = []
    for p in params:
        g = np.zeros(p.shape)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + eps
            plus = module.loss_and_grad(params, X, Y, masks=masks or None)[0]
            p[idx] = old - eps
            minus = module.loss_and_grad(params, X, Y, masks=masks or None)[0]
            p[idx] = old
            g[idx] = (plus - minus) / (2 * eps)
        out.append(g)
    return out


@st.composite
def mixed_architectures(draw):
    """Dense or conv, then a random mix of batch/layer norm, dropout and
    residual dense layers."""
    layers: list[dict] = []
    if draw(st.booleans()):
        shape = [2, 5, 5]
        layers.append({"kind": "conv2d", "filters": 2, "kernel": 3, "padding": 1,
                       "activation": draw(st.sampled_from(["tanh", "relu"]))})  # fmt: skip
        if draw(st.booleans()):
            layers.append({"kind": "batch_norm"})
        layers.append({"kind": "flatten"})
        width = 50
    else:
        shape = 4
        width = draw(st.integers(2, 5))
        layers.append({"units": width, "activation": "tanh"})
    for _ in range(draw(st.integers(1, 3))):
        choice = draw(
            st.sampled_from(["batch_norm", "layer_norm", "dropout", "residual"])
        )
        if choice == "residual":
            layers.append({"units": width, "activation": "tanh", "residual": True})
        elif choice == "dropout":
            layers.append({"kind": "dropout", "p": draw(st.sampled_from([0.2, 0.5]))})
        else:
            layers.append({"kind": choice})
    layers.append({"units": 2, "activation": "identity"})
    return {"name": "mixed", "input": shape, "layers": layers, "loss": {"name": "mse"}}


@settings(
    max_examples=5,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mixed_architectures())
def test_random_mixed_architectures_match_finite_differences(data):
    module = _module(data)
    params, X, Y, masks = _case(module, 4, seed=9)
    _, grads = module.loss_and_grad(params, X, Y, masks=masks or None)
    assert relative_error(_fd(module, params, X, Y, masks), grads) < 1e-7, data


# ---------------------------------------------------------- train/eval switch


def test_evaluation_uses_running_statistics_and_no_dropout():
    """After fit: predict is deterministic (no dropout), equals the reference's
    evaluation with the trained running statistics, and differs from the
    training-mode network on the same batch (batch statistics)."""
    data = CHAINS["vector_bn_dropout_residual"]
    module = _module(data)
    params, X, Y, _ = _case(module, 40, seed=10)
    buffers = module.init_buffers()
    module.fit(params, X, Y, epochs=3, batch_size=8, buffers=buffers)
    assert not np.allclose(buffers[0], 0.0) and not np.allclose(buffers[1], 1.0)
    first = module.predict(params, X, buffers=buffers)
    np.testing.assert_array_equal(first, module.predict(params, X, buffers=buffers))
    _, expected, _ = refnet.loss_and_grad(data, params, X, Y, buffers=buffers)
    np.testing.assert_allclose(first, expected, rtol=1e-12, atol=1e-14)
    training_loss, _ = module.loss_and_grad(params, X, Y)
    assert training_loss != pytest.approx(module.loss(params, X, Y, buffers=buffers))
    with pytest.raises(ValueError, match="pass buffers="):
        module.predict(params, X)


def test_norm_parameters_start_as_torchs():
    """init_params: a norm's gamma starts at one and beta at zero, as torch's
    BatchNorm/LayerNorm reset_parameters leave weight and bias (a zero gamma
    would zero the layer's output and every gradient below it at the start)."""
    torch = pytest.importorskip("torch")
    module = _module(CHAINS["conv_bn_ln_residual"])  # batch norm and layer norm
    params = dict(zip([p[0] for p in module._PARAMS], module.init_params(0),
                      strict=True))  # fmt: skip
    batch = torch.nn.BatchNorm2d(3, dtype=torch.float64)
    layer = torch.nn.LayerNorm([3, 3, 3], dtype=torch.float64)
    for name, norm in (("2", batch), ("4", layer)):
        np.testing.assert_array_equal(
            params[f"gamma{name}"], norm.weight.detach().numpy().reshape(-1)
        )
        np.testing.assert_array_equal(
            params[f"beta{name}"], norm.bias.detach().numpy().reshape(-1)
        )
    assert np.all(params["gamma2"] == 1.0) and np.all(params["beta4"] == 0.0)


def test_dropout_masks_come_from_the_seed():
    data = CHAINS["vector_bn_dropout_residual"]
    module = _module(data)
    results = []
    for seed in (0, 0, 1):
        params, X, Y, _ = _case(module, 24, seed=11)
        buffers = module.init_buffers()
        module.fit(params, X, Y, epochs=2, batch_size=8, seed=seed, buffers=buffers)
        results.append(params[0].copy())
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.allclose(results[0], results[2])


def test_a_training_batch_of_one_row_is_refused():
    module = _module(CHAINS["vector_bn_dropout_residual"])
    params, X, Y, _ = _case(module, 9, seed=12)
    with pytest.raises(ValueError, match="training batch of one row"):
        module.loss_and_grad(params, X[:1], Y[:1])
    with pytest.raises(ValueError, match="last batch has two or more rows"):
        module.fit(params, X, Y, batch_size=4, buffers=module.init_buffers())
    # per channel over 36 positions, one image is a valid batch (as in torch)
    conv = _module(CHAINS["conv_bn_ln_residual"])
    conv_params, conv_X, conv_Y, _ = _case(conv, 1, seed=12)
    conv.loss_and_grad(conv_params, conv_X, conv_Y)


def test_network_saves_loads_and_early_stopping_restores_running_statistics(tmp_path):
    data = CHAINS["conv_bn_ln_residual"]
    # the spec the other tests build (one compiled module between them)
    network = derive.Network(spec_from_dict({**data, "dtype": "float64"}))
    rng = np.random.default_rng(13)
    X = rng.normal(size=(48, 2, 6, 6))
    y = rng.normal(size=(48, 4))
    seen = []

    def keep(epoch, logs):
        seen.append([b.copy() for b in network.buffers])

    network.fit(X, y, epochs=8, batch_size=8, validation_split=0.25, patience=2,
                lr=0.5, seed=3, callback=keep)  # fmt: skip
    assert network.best_epoch_ is not None
    np.testing.assert_array_equal(network.buffers[0], seen[network.best_epoch_][0])
    path = network.save(tmp_path / "model.npz")
    loaded = derive.Network.load(path)
    for a, b in zip(loaded.buffers, network.buffers, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict(X), network.predict(X))
