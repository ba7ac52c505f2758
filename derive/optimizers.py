"""The optimizer registry: torch.optim's update rules, one definition each.

Each optimizer names its hyper-parameters with torch.optim's names and defaults,
the template that prints its update (``templates/optimizers/``), how many state
vectors (slots) it keeps, which hyper-parameters the jitted update reads at run
time (in order), and the flags that change the update's code (its variant),
decided when the module is generated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, eq=False)
class OptimizerDef:
    """One optimizer: defaults, template, slots, run-time keys, variant."""

    name: str
    defaults: Mapping[str, Any]
    template: str
    slots: int
    run_time: tuple[str, ...]
    variant: Mapping[str, Any] = field(default_factory=dict)
    torch: str = ""


_SGD_KEYS = ("momentum", "dampening", "nesterov", "weight_decay")
_ADAM_KEYS = ("betas", "eps", "weight_decay")

OPTIMIZER_DEFS: Mapping[str, OptimizerDef] = {
    d.name: d
    for d in (
        OptimizerDef(
            "sgd",
            {"lr": 0.01, "momentum": 0.0, "dampening": 0.0, "nesterov": False,
             "weight_decay": 0.0},
            "sgd.py.jinja", 1, _SGD_KEYS, torch="torch.optim.SGD",
        ),
        OptimizerDef(
            "momentum",
            {"lr": 0.01, "momentum": 0.9, "dampening": 0.0, "nesterov": False,
             "weight_decay": 0.0},
            "sgd.py.jinja", 1, _SGD_KEYS, torch="torch.optim.SGD(momentum=0.9)",
        ),
        OptimizerDef(
            "nesterov",
            {"lr": 0.01, "momentum": 0.9, "dampening": 0.0, "nesterov": True,
             "weight_decay": 0.0},
            "sgd.py.jinja", 1, _SGD_KEYS,
            torch="torch.optim.SGD(momentum=0.9, nesterov=True)",
        ),
        OptimizerDef(
            "adam",
            {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
            "adam.py.jinja", 2, _ADAM_KEYS, {"decoupled": False},
            torch="torch.optim.Adam",
        ),
        OptimizerDef(
            "adamw",
            {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01},
            "adam.py.jinja", 2, _ADAM_KEYS, {"decoupled": True},
            torch="torch.optim.AdamW",
        ),
        OptimizerDef(
            "rmsprop",
            {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0,
             "momentum": 0.0},
            "rmsprop.py.jinja", 2, ("alpha", "eps", "weight_decay", "momentum"),
            torch="torch.optim.RMSprop",
        ),
    )
}  # fmt: skip

#: Each optimizer's hyper-parameters with torch.optim's names and defaults.
OPTIMIZERS: Mapping[str, Mapping[str, Any]] = {
    name: d.defaults for name, d in OPTIMIZER_DEFS.items()
}
