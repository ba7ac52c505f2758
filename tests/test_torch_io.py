"""Network.to_torch / Network.from_torch against torch itself: the same outputs
for every corpus network (1e-12 in float64, 1e-6 in float32), the same layers,
bit-exact round trips, a module built by hand read back, and k further training
steps in torch equal to k further steps in derive (every optimizer, batch and
layer norm's running statistics included)."""

from __future__ import annotations

import numpy as np
import pytest
from corpus import ADAM_NORMS, CORPUS, ROOT, TRAINING_CORPUS, make_spec

from derive import DeriveError, Network
from derive.spec import load_spec, spec_from_dict

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from test_optimizers import CONFIGS  # noqa: E402

from derive.interop.torch_io import ResidualSequential  # noqa: E402

SPECS = {**CORPUS, **{k: spec_from_dict(v) for k, v in TRAINING_CORPUS.items()}}
FLOAT32 = ["softmax_classifier", "digits_cnn"]  # float32 examples
#: group -> name -> (max absolute, max relative difference), for the report
WORST: dict[str, dict[str, tuple[float, float]]] = {
    "float64 outputs": {}, "float32 outputs": {}, "after k steps": {},
}  # fmt: skip


def torch_outputs(model, X, spec):
    dtype = torch.float64 if spec.dtype == "float64" else torch.float32
    with torch.no_grad():
        x = torch.tensor(X.reshape(len(X), *spec.input_shape), dtype=dtype)
        return model(x).numpy()


def trained(spec, rng, rows=24):
    """A network of spec after two epochs (non-trivial running statistics)."""
    net = Network(spec)
    X = rng.normal(size=(rows, spec.n_inputs))
    if net.is_classifier and not net._multilabel:
        y = rng.integers(0, net._n_classes, rows)
    else:
        y = rng.uniform(0, 1, (rows, net.n_outputs))
    if any(layer.kind in ("batch_norm", "dropout") for layer in spec.layers):
        net.fit(X, y, epochs=2, batch_size=8)
    return net


def differences(got, want):
    absolute = float(np.max(np.abs(got - want)))
    return absolute, absolute / max(float(np.max(np.abs(want))), 1e-300)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_to_torch_outputs_equal_derive_float64(name):
    rng = np.random.default_rng(len(name))
    spec = SPECS[name]
    net = trained(spec, rng)
    model = net.to_torch()
    assert not model.training  # evaluation mode: running statistics, no dropout
    X = rng.normal(size=(9, spec.n_inputs))
    absolute, relative = differences(torch_outputs(model, X, spec), net.outputs(X))
    WORST["float64 outputs"][name] = (absolute, relative)
    assert relative < 1e-12, (absolute, relative)


@pytest.mark.parametrize("name", FLOAT32)
def test_to_torch_outputs_equal_derive_float32(name):
    spec = load_spec(ROOT / "examples" / f"{name}.toml")
    net = Network(spec)
    model = net.to_torch()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    X = np.random.default_rng(0).normal(size=(9, spec.n_inputs)).astype(np.float32)
    absolute, relative = differences(torch_outputs(model, X, spec), net.outputs(X))
    WORST["float32 outputs"][name] = (absolute, relative)
    assert relative < 1e-6, (absolute, relative)


def test_the_layers_are_torchs():
    cnn = Network(SPECS["cnn_2d_strided"]).to_torch()
    kinds = [type(m).__name__ for m in cnn]
    assert kinds == ["Conv2d", "Tanh", "Conv2d", "ELU", "AvgPool2d", "Flatten",
                     "Linear", "Sigmoid"]  # fmt: skip
    assert cnn[0].stride == (2, 2) and cnn[0].padding == (1, 1)
    assert cnn[4].count_include_pad and cnn[4].padding == (1, 1)
    norms = Network(SPECS["vector_bn_dropout_residual"]).to_torch()
    assert isinstance(norms, ResidualSequential) and norms.residual == {4: 3}
    assert isinstance(norms[1], nn.BatchNorm1d) and isinstance(norms[2], nn.Dropout)
    assert norms[2].p == 0.25 and isinstance(norms[4][0], nn.Linear)
    conv_norms = Network(SPECS["conv_bn_ln_residual"]).to_torch()
    assert isinstance(conv_norms[1], nn.BatchNorm2d) and conv_norms[1].momentum == 0.2
    assert conv_norms[3].normalized_shape == (3, 3, 3)


def test_round_trip_is_bit_exact():
    rng = np.random.default_rng(1)
    for name in ("conv_bn_ln_residual", "signal_plain_norms", "user_activation"):
        net = trained(SPECS[name], rng)
        back = Network.from_torch(net.to_torch(), net.spec)
        for a, b in zip(back.params + back.buffers, net.params + net.buffers,
                        strict=True):  # fmt: skip
            np.testing.assert_array_equal(a, b)


def test_a_module_built_by_hand_is_read_back():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2), nn.Softmax(dim=1)
    ).double()
    spec = CORPUS["head_2_cross_entropy"]  # 3-5-3 tanh/softmax: one unit short
    with pytest.raises(
        DeriveError,
        match="Linear.weight has shape \\(2, 5\\), the spec needs \\(3, 5\\)",
    ):
        Network.from_torch(model, spec)
    spec = make_spec("by_hand", [3, 5, 2], ["tanh", "softmax"], "cross_entropy")
    net = Network.from_torch(model, spec.to_dict())
    X = np.random.default_rng(2).normal(size=(6, 3))
    absolute, relative = differences(net.outputs(X), torch_outputs(model, X, spec))
    assert relative < 1e-12
    with pytest.raises(
        DeriveError, match="has 2 layers with weights \\(Linear, Linear\\)"
    ):
        Network.from_torch(model, CORPUS["example_seed001"])
    conv = Network(SPECS["cnn_2d_strided"]).to_torch()
    conv[0].stride = (1, 1)
    with pytest.raises(DeriveError, match="stride=\\(1, 1\\), the spec \\(2, 2\\)"):
        Network.from_torch(conv, SPECS["cnn_2d_strided"])


# ------------------------------------------------------- k more steps


def torch_loss(spec, out, Y):
    name = spec.loss.name
    if name == "mse":
        return F.mse_loss(out, Y)
    if name == "binary_cross_entropy":
        return F.binary_cross_entropy(out, Y)
    raise AssertionError(name)


TRAINING = {f"opt_{k}": make_spec(f"opt_{k}", *CONFIGS[k][0], optimizer=CONFIGS[k][1])
            for k in ("momentum_dampening_wd", "nesterov_wd", "adam_wd", "adamw",
                      "rmsprop_momentum_wd", "sgd_wd")}  # fmt: skip
TRAINING["adam_norms"] = spec_from_dict(ADAM_NORMS)


@pytest.mark.parametrize("name", sorted(TRAINING))
def test_k_more_steps_in_torch_are_k_more_steps_in_derive(name):
    """Both networks train on from derive's state after three epochs; four more
    full-batch steps in torch and in derive end at the same weights, running
    statistics and optimizer moments (and from_torch reads those back)."""
    spec = TRAINING[name]
    rng = np.random.default_rng(5)
    X = rng.normal(size=(12, spec.n_inputs))
    net = Network(spec)
    Y = rng.uniform(0, 1, (12, net.n_outputs))
    if net.is_classifier:
        Y = (Y > 0.5).astype(float)
    net.fit(X, Y, epochs=3, batch_size=5)  # moments and step count to carry over
    model, opt = net.to_torch(optimizer=True)
    assert type(opt).__name__ == {
        "adam": "Adam",
        "adamw": "AdamW",
        "rmsprop": "RMSprop",
    }.get(spec.optimizer.name, "SGD")
    model.train()
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    with torch.no_grad():  # the same loss, in evaluation mode
        assert torch_loss(spec, model.eval()(Xt), Yt).item() == pytest.approx(
            net.module.loss(net.params, X, Y, **net._buffers_kwarg()), rel=1e-12
        )
    model.train()
    for _ in range(4):
        opt.zero_grad()
        torch_loss(spec, model(Xt), Yt).backward()
        opt.step()
    net.fit(X, Y, epochs=4, batch_size=12, shuffle=False)
    back = Network.from_torch(model, spec, opt)
    worst = (0.0, 0.0)
    for got, want in zip(back.params + back.buffers, net.params + net.buffers,
                         strict=True):  # fmt: skip
        absolute, relative = differences(got, want)
        # a bias right before batch norm has a zero true gradient: its values
        # are rounding noise, compared absolutely
        assert relative < 1e-12 or absolute < 1e-9, (name, absolute, relative)
        worst = max(worst, (absolute, relative), key=lambda pair: pair[1])
    WORST["after k steps"][name] = worst
    assert net.state["step"][0] == 3 * 3 + 4
    if isinstance(opt, torch.optim.SGD):  # torch's SGD counts no steps
        assert back.state["step"][0] == (1 if opt.defaults["momentum"] else 0)
    else:
        assert back.state["step"][0] == net.state["step"][0]
    for got, want in zip(back.state["buffers"], net.state["buffers"], strict=True):
        absolute, relative = differences(got, want)
        assert relative < 1e-10, (name, absolute, relative)


def test_from_torch_refuses_another_optimizer():
    spec = TRAINING["opt_adamw"]
    model = Network(spec).to_torch()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(DeriveError, match="the optimizer is SGD, spec 'opt_adamw' "
                       "trains with adamw"):  # fmt: skip
        Network.from_torch(model, spec, sgd)
    adamw = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.9, 0.999))
    with pytest.raises(DeriveError, match="betas=\\(0.9, 0.999\\), spec 'opt_adamw' "
                       "\\(0.85, 0.99\\)"):  # fmt: skip
        Network.from_torch(model, spec, adamw)


def test_worst_torch_difference_report():
    """Prints the largest differences (runs after the comparisons; -s shows it)."""
    if not any(WORST.values()):
        pytest.skip("the comparisons did not run")
    for group, found in WORST.items():
        if found:
            name = max(found, key=lambda k: found[k][1])
            print(f"\nto_torch {group}: max |torch - derive| "
                  f"{max(a for a, _ in found.values()):.3g}, max relative "
                  f"{found[name][1]:.3g} ({name}; {len(found)} networks)")  # fmt: skip
