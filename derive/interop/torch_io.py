"""PyTorch round trip: ``Network.to_torch`` and ``Network.from_torch``.

Each derive layer kind has its torch.nn counterpart with the same semantics
(derive's kinds follow torch's): dense -> ``nn.Linear``, conv1d/2d ->
``nn.Conv1d/2d``, max/avg pooling -> ``nn.MaxPool*`` / ``nn.AvgPool*``
(``count_include_pad=True``), flatten -> ``nn.Flatten``, dropout ->
``nn.Dropout``, batch_norm -> ``nn.BatchNorm1d/2d``, layer_norm ->
``nn.LayerNorm`` over the sample's shape, and every built-in activation its
``nn`` module (a user expression: :class:`ExprActivation`, its SymPy tree in
torch operations). The weights have derive's layouts already (``W`` is
``(out, in)`` as ``nn.Linear.weight``), so they are copied as they are.

A network without residual connections becomes a plain ``nn.Sequential``; with
them, a :class:`ResidualSequential`, an ``nn.Sequential`` of one block per
layer whose ``forward`` adds each residual source before the activation.
Inputs are torch's layouts: ``(n, features)``, ``(n, C, L)``, ``(n, C, H, W)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import DeriveError
from ..spec import OpRef, Spec, load_spec, spec_from_dict
from . import ExprWalker, LayerInfo, network_layers, user_expression

if TYPE_CHECKING:
    import sympy as sp

    from ..network import Network

_DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: the torch.optim class of each derive optimizer
_OPTIMIZERS = {
    "sgd": "SGD", "momentum": "SGD", "nesterov": "SGD",
    "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop",
}  # fmt: skip


class _TorchWalker(ExprWalker[torch.Tensor]):
    def __init__(self, x: sp.Symbol, value: torch.Tensor, what: str) -> None:
        super().__init__(x, what)
        self.value = value

    def variable(self) -> torch.Tensor:
        return self.value

    def constant(self, value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=self.value.dtype)

    def binary(self, op: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        functions = {
            "add": torch.add, "mul": torch.mul, "div": torch.div,
            "pow": torch.pow, "max": torch.maximum, "min": torch.minimum,
        }  # fmt: skip
        return functions[op](a, b)

    def unary(self, op: str, a: torch.Tensor) -> torch.Tensor:
        return getattr(torch, op)(a)


class ExprActivation(nn.Module):
    """A user expression activation, elementwise: its SymPy tree evaluated with
    torch operations (differentiable by autograd)."""

    def __init__(self, expr: str, constants: Iterable[tuple[str, float]] = ()) -> None:
        super().__init__()
        self.expr = expr
        self.constants = tuple(constants)
        self._tree, self._x = user_expression(OpRef("expr", self.constants, expr))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _TorchWalker(self._x, x, f"activation {self.expr!r}").walk(self._tree)

    def extra_repr(self) -> str:
        return repr(self.expr)


def activation_module(ref: OpRef | None) -> nn.Module | None:
    """The torch module of an activation (None for the identity)."""
    if ref is None or ref.name == "identity":
        return None
    if ref.expr is not None:
        return ExprActivation(ref.expr, ref.params)
    params = dict(ref.params)
    simple = {
        "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "selu": nn.SELU,
        "silu": nn.SiLU, "gelu": nn.GELU, "softsign": nn.Softsign,
    }  # fmt: skip
    if ref.name in simple:
        return simple[ref.name]()
    if ref.name == "leaky_relu":
        return nn.LeakyReLU(params["alpha"])
    if ref.name == "elu":
        return nn.ELU(params["alpha"])
    if ref.name == "softplus":
        # torch's default threshold 20 returns x above it; at 40 the result is
        # log(1 + exp(x)) to the last bit in float32 and float64, as derive's
        return nn.Softplus(beta=1.0, threshold=40.0)
    if ref.name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if ref.name == "softmax":
        return nn.Softmax(dim=1)
    raise DeriveError(f"no torch module for activation '{ref.label}'")


class ResidualSequential(nn.Sequential):
    """One block per derive layer; ``residual[i] = j`` adds the output of block
    j (0: the input) to block i's pre-activation: ``a_i = f(layer_i(a_{i-1}) +
    a_j)``, where block i is ``nn.Sequential(layer_i, f)`` (or the layer alone
    for the identity)."""

    def __init__(
        self, blocks: Iterable[nn.Module], residual: Mapping[int, int]
    ) -> None:
        super().__init__(*blocks)
        self.residual = dict(residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        for i, block in enumerate(self, start=1):
            if i in self.residual:
                parts = list(block) if isinstance(block, nn.Sequential) else [block]
                out = parts[0](outputs[-1]) + outputs[self.residual[i]]
                for part in parts[1:]:
                    out = part(out)
            else:
                out = block(outputs[-1])
            outputs.append(out)
        return outputs[-1]

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


def _tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(np.array(array), dtype=dtype)


def _layer_modules(info: LayerInfo, dtype: torch.dtype) -> list[nn.Module]:
    """The torch modules of one derive layer (its activation last), weights set."""
    kind, shape = info.kind, info.in_shape
    with torch.no_grad():
        if kind == "dense":
            module: nn.Module = nn.Linear(shape[0], info.attr("units"), dtype=dtype)
        elif kind in ("conv1d", "conv2d"):
            conv = nn.Conv1d if kind == "conv1d" else nn.Conv2d
            module = conv(
                shape[0], info.attr("filters"), info.attr("kernel"),
                stride=info.attr("stride"), padding=info.attr("padding"),
                dilation=info.attr("dilation"), dtype=dtype,
            )  # fmt: skip
        elif kind.startswith(("max_pool", "avg_pool")):
            name = ("MaxPool" if kind.startswith("max") else "AvgPool") + kind[-2:]
            extra = {} if kind.startswith("max") else {"count_include_pad": True}
            module = getattr(nn, name)(
                info.attr("kernel"), stride=info.attr("stride"),
                padding=info.attr("padding"), **extra,
            )  # fmt: skip
        elif kind == "flatten":
            module = nn.Flatten()
        elif kind == "dropout":
            module = nn.Dropout(info.attr("p"))
        elif kind == "batch_norm":
            norm = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
            module = norm(
                shape[0], eps=info.attr("eps"), momentum=info.attr("momentum"),
                affine=info.attr("affine"), dtype=dtype,
            )  # fmt: skip
            module.running_mean.copy_(_tensor(info.buffers["running_mean"], dtype))
            module.running_var.copy_(_tensor(info.buffers["running_var"], dtype))
        elif kind == "layer_norm":
            module = nn.LayerNorm(
                shape, eps=info.attr("eps"),
                elementwise_affine=info.attr("elementwise_affine"), dtype=dtype,
            )  # fmt: skip
        else:
            raise DeriveError(f"layer {info.index}: no torch module for kind '{kind}'")
        _set_weights(module, info, dtype)
    act = activation_module(info.layer.activation)
    return [module] if act is None else [module, act]


_WEIGHTS = {"W": "weight", "b": "bias", "gamma": "weight", "beta": "bias"}


def _set_weights(module: nn.Module, info: LayerInfo, dtype: torch.dtype) -> None:
    for name, value in info.params.items():
        target = getattr(module, _WEIGHTS[name])
        target.copy_(_tensor(value, dtype).reshape(target.shape))


def to_torch(
    network: Network, *, optimizer: bool = False, lr: float | None = None
) -> nn.Module | tuple[nn.Module, torch.optim.Optimizer]:
    """The network as a torch module in evaluation mode (call ``.train()`` to
    train it), with the same weights and running statistics; with
    ``optimizer``, also the ``torch.optim`` optimizer over its parameters,
    holding derive's optimizer state (moments, step count), so training
    continues as it would in derive. ``lr``: the optimizer's learning rate
    (default: that of the last epoch trained, the spec's before any)."""
    dtype = _DTYPES[network.spec.dtype]
    infos = network_layers(network)
    blocks = [_layer_modules(info, dtype) for info in infos]
    residual = {
        info.index: info.layer.residual
        for info in infos
        if info.layer.residual is not None
    }
    if residual:
        model: nn.Module = ResidualSequential(
            [b[0] if len(b) == 1 else nn.Sequential(*b) for b in blocks], residual
        )
    else:
        model = nn.Sequential(*(m for block in blocks for m in block))
    steps = int(network.state["step"][0])
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.num_batches_tracked.fill_(steps)
    model.eval()
    if not optimizer:
        return model
    return model, _optimizer(network, model, lr)


def _optimizer(
    network: Network, model: nn.Module, lr: float | None
) -> torch.optim.Optimizer:
    spec = network.spec
    hyper = dict(spec.optimizer.hyper)
    if lr is None:
        lrs = network.history_.get("lr")
        lr = float(lrs[-1]) if lrs is not None and len(lrs) else hyper["lr"]
    hyper["lr"] = float(lr)
    name = spec.optimizer.name
    cls = getattr(torch.optim, _OPTIMIZERS[name])
    if "betas" in hyper:
        hyper["betas"] = tuple(hyper["betas"])
    params = list(model.parameters())
    opt = cls(params, **hyper)
    step = int(network.state["step"][0])
    if step == 0:
        return opt
    slots = network.state["buffers"]
    offset = 0
    for p in params:
        n = p.numel()
        views = [
            _tensor(slot[offset : offset + n], p.dtype).reshape(p.shape)
            for slot in slots
        ]
        offset += n
        state: dict[str, Any]
        if cls is torch.optim.SGD:
            state = {"momentum_buffer": views[0]} if hyper["momentum"] != 0 else {}
        elif cls in (torch.optim.Adam, torch.optim.AdamW):
            state = {"step": torch.tensor(float(step)), "exp_avg": views[0],
                     "exp_avg_sq": views[1]}  # fmt: skip
        else:  # RMSprop
            state = {"step": torch.tensor(float(step)), "square_avg": views[0]}
            if hyper["momentum"] > 0:
                state["momentum_buffer"] = views[1]
        opt.state[p] = state
    return opt


# ------------------------------------------------------------- from torch

_MODULE_KINDS = {
    "dense": (nn.Linear,),
    "conv1d": (nn.Conv1d,),
    "conv2d": (nn.Conv2d,),
    "batch_norm": (nn.modules.batchnorm._BatchNorm,),
    "layer_norm": (nn.LayerNorm,),
}


def _spec(spec: Spec | Mapping[str, Any] | str | os.PathLike[str]) -> Spec:
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, Mapping):
        return spec_from_dict(spec)
    return load_spec(spec)


def _check_module(info: LayerInfo, module: nn.Module) -> None:
    """Refuse a torch module whose settings would read the weights differently."""
    where = f"layer {info.index} ({info.layer.label})"
    expected: dict[str, Any] = {}
    got: dict[str, Any] = {}
    if info.kind in ("conv1d", "conv2d"):
        for name in ("kernel", "stride", "padding", "dilation"):
            expected[name] = tuple(info.attr(name))
        got = {
            "kernel": tuple(module.kernel_size), "stride": tuple(module.stride),
            "padding": tuple(module.padding), "dilation": tuple(module.dilation),
        }  # fmt: skip
        if module.groups != 1 or module.padding_mode != "zeros":
            raise DeriveError(f"{where}: the torch {module} has groups or a padding mode "
                              "derive does not have (groups=1, zeros)")  # fmt: skip
    elif info.kind == "batch_norm":
        expected = {"eps": info.attr("eps"), "momentum": info.attr("momentum"),
                    "affine": info.attr("affine")}  # fmt: skip
        got = {"eps": module.eps, "momentum": module.momentum, "affine": module.affine}
        if not module.track_running_stats:
            raise DeriveError(
                f"{where}: the torch {module} keeps no running statistics"
            )
    elif info.kind == "layer_norm":
        expected = {"eps": info.attr("eps"),
                    "elementwise_affine": info.attr("elementwise_affine"),
                    "shape": info.in_shape}  # fmt: skip
        got = {"eps": module.eps, "elementwise_affine": module.elementwise_affine,
               "shape": tuple(module.normalized_shape)}  # fmt: skip
    for key, value in expected.items():
        if got[key] != value:
            raise DeriveError(
                f"{where}: the torch {type(module).__name__} has {key}={got[key]!r}, "
                f"the spec {value!r}; give a spec that matches the module"
            )


def from_torch(
    module: nn.Module,
    spec: Spec | Mapping[str, Any] | str | os.PathLike[str],
    optimizer: torch.optim.Optimizer | None = None,
) -> Network:
    """A Network of ``spec`` holding the weights (and running statistics) of a
    torch module: its Linear / Conv / BatchNorm / LayerNorm submodules, in
    order, one per dense, conv, batch_norm and layer_norm layer of the spec
    (activations, pooling, flatten and dropout hold no weights; the spec says
    what they are). With ``optimizer`` (over the module's parameters), its
    state becomes the network's optimizer state, so training continues."""
    from ..network import Network

    spec = _spec(spec)
    network = Network(spec)
    infos = [i for i in network_layers(network) if i.kind in _MODULE_KINDS]
    found = [
        m for m in module.modules()
        if isinstance(m, tuple(t for ts in _MODULE_KINDS.values() for t in ts))
    ]  # fmt: skip
    if len(found) != len(infos):
        names = ", ".join(type(m).__name__ for m in found) or "none"
        wanted = ", ".join(i.kind for i in infos)
        raise DeriveError(
            f"the torch module has {len(found)} layers with weights ({names}) but "
            f"spec '{spec.name}' has {len(infos)} ({wanted}); give the spec the "
            "module was built from"
        )
    dtype = np.dtype(spec.dtype)
    for info, sub in zip(infos, found, strict=True):
        if not isinstance(sub, _MODULE_KINDS[info.kind]):
            raise DeriveError(
                f"layer {info.index} of spec '{spec.name}' is {info.kind} but the "
                f"torch module's layer {infos.index(info) + 1} with weights is "
                f"{type(sub).__name__}; give the spec the module was built from"
            )
        _check_module(info, sub)
        for name, value in info.params.items():
            source = getattr(sub, _WEIGHTS[name])
            if source is None or source.numel() != value.size:
                got = None if source is None else tuple(source.shape)
                raise DeriveError(
                    f"layer {info.index} ({info.layer.label}): the torch "
                    f"{type(sub).__name__}.{_WEIGHTS[name]} has shape {got}, the spec "
                    f"needs {value.shape}; give the spec the module was built from"
                )
            value[...] = source.detach().cpu().numpy().reshape(value.shape)
        for name, value in info.buffers.items():
            value[...] = getattr(sub, name).detach().cpu().numpy().astype(dtype)
    if optimizer is not None:
        _read_optimizer(network, [p for m in found for p in _weights(m)], optimizer)
    return network


def _weights(module: nn.Module) -> list[torch.Tensor]:
    names = ("weight", "bias")
    return [getattr(module, n) for n in names if getattr(module, n, None) is not None]


def _read_optimizer(
    network: Network, params: list[torch.Tensor], opt: torch.optim.Optimizer
) -> None:
    name = network.spec.optimizer.name
    expected = getattr(torch.optim, _OPTIMIZERS[name])
    if type(opt) is not expected:
        raise DeriveError(
            f"the optimizer is {type(opt).__name__}, spec '{network.spec.name}' "
            f"trains with {name} (torch.optim.{expected.__name__}); give a spec with "
            "the optimizer's name and hyper-parameters"
        )
    group = opt.param_groups[0]
    for key, value in network.spec.optimizer.hyper:
        if key == "lr":
            continue
        have = tuple(group[key]) if isinstance(value, tuple) else group[key]
        if have != value:
            raise DeriveError(
                f"the optimizer has {key}={have!r}, spec '{network.spec.name}' "
                f"{value!r}; give a spec with the optimizer's hyper-parameters"
            )
    slots = network.state["buffers"]
    step = 0
    offset = 0
    for p in params:
        state = opt.state.get(p, {})
        n = p.numel()
        keys = {
            "SGD": ["momentum_buffer"],
            "Adam": ["exp_avg", "exp_avg_sq"],
            "AdamW": ["exp_avg", "exp_avg_sq"],
            "RMSprop": ["square_avg", "momentum_buffer"],
        }[expected.__name__]
        for slot, key in zip(slots, keys, strict=False):
            value = state.get(key)
            if value is not None:
                slot[offset : offset + n] = value.detach().cpu().numpy().reshape(-1)
        if "step" in state:
            step = int(state["step"])
        elif state.get("momentum_buffer") is not None:
            step = max(step, 1)  # SGD keeps no count; its buffer exists after one
        offset += n
    network.state["step"][0] = step
