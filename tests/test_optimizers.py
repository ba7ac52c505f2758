"""fit()'s optimizers, schedules, clipping, resume, early stopping and callback.

Every optimizer is checked against an independent NumPy implementation of the
update rule published in the torch.optim documentation (written out below, one
function per algorithm), driven by the gradients of the module's own
``loss_and_grad`` (proven against finite differences in test_gradients.py) on the
same mini-batches. Early stopping, resume and the callback are tested by
behaviour: what a user can observe from outside the module.

Numba compiles each distinct spec once per process (and caches it on disk), so
every spec here is a tiny 3-4-2 (or 3-4-1) network and the specs are shared.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from corpus import ADAM_NORMS, make_spec

import derive
from derive.optimizers import OPTIMIZERS

# ---------------------------------------------------------------- the specs

REGRESSION = ([3, 4, 2], ["tanh", "identity"], "mse")
BINARY = ([3, 4, 1], ["tanh", "sigmoid"], "binary_cross_entropy")

#: name -> (network, [optimizer] table). Every hyper-parameter is written out here
#: (torch.optim names), so the reference below never reads the module's values.
CONFIGS: dict[str, tuple[tuple, dict]] = {
    "sgd": (REGRESSION, {"name": "sgd", "lr": 0.1, "momentum": 0.0,
                         "dampening": 0.0, "nesterov": False, "weight_decay": 0.0}),
    "sgd_wd": (BINARY, {"name": "sgd", "lr": 0.5, "momentum": 0.0,
                        "dampening": 0.0, "nesterov": False, "weight_decay": 0.05}),
    "momentum": (REGRESSION, {"name": "momentum", "lr": 0.05, "momentum": 0.9,
                              "dampening": 0.0, "nesterov": False,
                              "weight_decay": 0.0}),
    "momentum_dampening_wd": (REGRESSION, {"name": "momentum", "lr": 0.05,
                                           "momentum": 0.8, "dampening": 0.3,
                                           "nesterov": False, "weight_decay": 0.02}),
    "nesterov": (REGRESSION, {"name": "nesterov", "lr": 0.05, "momentum": 0.9,
                              "dampening": 0.0, "nesterov": True,
                              "weight_decay": 0.0}),
    "nesterov_wd": (REGRESSION, {"name": "nesterov", "lr": 0.05, "momentum": 0.7,
                                 "dampening": 0.0, "nesterov": True,
                                 "weight_decay": 0.03}),
    "adam": (REGRESSION, {"name": "adam", "lr": 0.02, "betas": [0.9, 0.999],
                          "eps": 1e-8, "weight_decay": 0.0}),
    "adam_wd": (REGRESSION, {"name": "adam", "lr": 0.02, "betas": [0.8, 0.95],
                             "eps": 1e-6, "weight_decay": 0.05}),
    "adamw": (REGRESSION, {"name": "adamw", "lr": 0.02, "betas": [0.85, 0.99],
                           "eps": 1e-7, "weight_decay": 0.1}),
    "rmsprop": (REGRESSION, {"name": "rmsprop", "lr": 0.01, "alpha": 0.99,
                             "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0}),
    "rmsprop_wd": (REGRESSION, {"name": "rmsprop", "lr": 0.01, "alpha": 0.9,
                                "eps": 1e-6, "weight_decay": 0.05, "momentum": 0.0}),
    "rmsprop_momentum": (REGRESSION, {"name": "rmsprop", "lr": 0.005, "alpha": 0.95,
                                      "eps": 1e-8, "weight_decay": 0.0,
                                      "momentum": 0.6}),
    "rmsprop_momentum_wd": (REGRESSION, {"name": "rmsprop", "lr": 0.005,
                                         "alpha": 0.9, "eps": 1e-8,
                                         "weight_decay": 0.02, "momentum": 0.8}),
}  # fmt: skip

N_ROWS, BATCH, EPOCHS = 13, 4, 6  # batches of 4, 4, 4, 1: 24 optimizer steps


@functools.cache
def module_for(key: str):
    (sizes, activations, loss), optimizer = CONFIGS[key]
    spec = make_spec(f"opt_{key}", sizes, activations, loss, optimizer=optimizer)
    return derive.build(spec)


def hyper_of(key: str) -> dict:
    return CONFIGS[key][1]


def data(module, rows: int = N_ROWS, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 1.0, (rows, module.N_INPUT))
    if module.N_OUTPUT == 1:  # the binary classifier
        Y = (X[:, :1] + 0.5 * X[:, 1:2] > 0).astype(float)
    else:
        Y = rng.normal(0.0, 1.0, (rows, module.N_OUTPUT))
    return X, Y


# --------------------------------------------- torch.optim, written out in NumPy


def sgd_rule(p, g, s, lr, t, h):
    """torch.optim.SGD: g += wd p; b = g at t=1, else mu b + (1 - tau) g;
    g = g + mu b (nesterov) or b; p -= lr g."""
    if h["weight_decay"] != 0:
        g = g + h["weight_decay"] * p
    if h["momentum"] != 0:
        if t == 1:
            s["b"] = g.copy()
        else:
            s["b"] = h["momentum"] * s["b"] + (1 - h["dampening"]) * g
        g = g + h["momentum"] * s["b"] if h["nesterov"] else s["b"]
    return p - lr * g


def adam_rule(p, g, s, lr, t, h):
    """torch.optim.Adam (L2: g += wd p) and AdamW (decoupled: p *= 1 - lr wd):
    m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; m^ = m/(1-b1^t); v^ = v/(1-b2^t);
    p -= lr m^ / (sqrt(v^) + eps)."""
    beta1, beta2 = h["betas"]
    if h["name"] == "adamw":
        p = p * (1 - lr * h["weight_decay"])
    elif h["weight_decay"] != 0:
        g = g + h["weight_decay"] * p
    s["m"] = beta1 * s.get("m", 0.0) + (1 - beta1) * g
    s["v"] = beta2 * s.get("v", 0.0) + (1 - beta2) * g * g
    m_hat = s["m"] / (1 - beta1**t)
    v_hat = s["v"] / (1 - beta2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + h["eps"])


def rmsprop_rule(p, g, s, lr, t, h):
    """torch.optim.RMSprop (not centered): g += wd p; v = alpha v + (1-alpha) g^2;
    with momentum: b = mu b + g / (sqrt(v) + eps), p -= lr b; else
    p -= lr g / (sqrt(v) + eps)."""
    if h["weight_decay"] != 0:
        g = g + h["weight_decay"] * p
    s["v"] = h["alpha"] * s.get("v", 0.0) + (1 - h["alpha"]) * g * g
    avg = np.sqrt(s["v"]) + h["eps"]
    if h["momentum"] > 0:
        s["b"] = h["momentum"] * s.get("b", 0.0) + g / avg
        return p - lr * s["b"]
    return p - lr * g / avg


RULES = {"sgd": sgd_rule, "momentum": sgd_rule, "nesterov": sgd_rule,
         "adam": adam_rule, "adamw": adam_rule, "rmsprop": rmsprop_rule}  # fmt: skip


def clip_grad_norm(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_: the global 2-norm over all gradients;
    every gradient times min(1, max_norm / (norm + 1e-6)). Returns (grads, clipped)."""
    total = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
    coef = max_norm / (total + 1e-6)
    if coef >= 1.0:
        return grads, False
    return [g * coef for g in grads], True


def step_lr(lr, gamma, step_size, epoch):
    """torch StepLR, stepped once per epoch."""
    return lr * gamma ** (epoch // step_size)


def cosine_lr(lr, min_lr, t_max, epoch):
    """torch CosineAnnealingLR (closed form), stepped once per epoch."""
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * epoch / t_max)) / 2


def reference_fit(module, params, X, Y, hyper, *, epochs, batch_size, lrs,
                  orders=None, clip_norm=0.0):  # fmt: skip
    """Mini-batch training with the rule of ``hyper['name']``; lrs[e] is epoch e's
    learning rate, orders[e] its row order (default 0..n-1). Returns the params,
    the per-epoch mean of the pre-update batch losses and the number of clipped
    steps."""
    rule = RULES[hyper["name"]]
    params = [np.array(p, dtype=np.float64) for p in params]
    slots = [{} for _ in params]
    n, t, clipped, losses = len(X), 0, 0, []
    for epoch in range(epochs):
        order = np.arange(n) if orders is None else orders[epoch]
        total = 0.0
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            value, grads = module.loss_and_grad(params, X[rows], Y[rows])
            grads = [np.array(g, dtype=np.float64) for g in grads]
            total += value * len(rows)
            if clip_norm > 0:
                grads, was_clipped = clip_grad_norm(grads, clip_norm)
                clipped += was_clipped
            t += 1
            params = [
                rule(p, g, s, lrs[epoch], t, hyper)
                for p, g, s in zip(params, grads, slots, strict=True)
            ]
        losses.append(total / n)
    return params, np.array(losses), clipped


def assert_params_close(got, want, rtol=1e-10, what="", atol=0.0):
    """Each array equal to rtol relative to its largest entry (plus atol, for a
    parameter whose true gradient is zero, such as a bias right before batch
    norm: its trajectory is rounding noise)."""
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        scale = float(np.max(np.abs(w)))
        err = float(np.max(np.abs(np.asarray(g) - w)))
        assert err <= rtol * scale + atol, (
            f"{what} param {k}: max |got - want| = {err:.3e} "
            f"(relative {err / scale:.3e} > {rtol:g})\ngot  {np.asarray(g)}\nwant {w}"
        )


def assert_moved(before, after, at_least=1e-3):
    moved = max(
        float(np.max(np.abs(a - b))) for a, b in zip(before, after, strict=True)
    )
    assert moved > at_least, f"params barely moved ({moved:.2e}); the test is weak"


def copy(params):
    return [p.copy() for p in params]


# ------------------------------------------------------------------- the tests


def test_defaults_are_torch_optim_defaults():
    """Written from the torch.optim documentation (SGD's lr default changed across
    torch versions, and momentum/nesterov are derive's names for SGD settings)."""
    torch_defaults = {
        "sgd": {"momentum": 0.0, "dampening": 0.0, "nesterov": False,
                "weight_decay": 0.0},
        "adam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
        "adamw": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8,
                  "weight_decay": 1e-2},
        "rmsprop": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0,
                    "momentum": 0.0},
    }  # fmt: skip
    for name, expected in torch_defaults.items():
        got = {k: OPTIMIZERS[name][k] for k in expected}
        assert got == expected, name
    assert OPTIMIZERS["nesterov"]["nesterov"] is True
    assert OPTIMIZERS["momentum"]["nesterov"] is False
    assert set(OPTIMIZERS) == {"sgd", "momentum", "nesterov", "adam", "adamw",
                               "rmsprop"}  # fmt: skip


@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_optimizer_follows_published_rule(key):
    """fit (spec's lr, shuffle off) equals the NumPy rule over 24 steps to 1e-10."""
    module, hyper = module_for(key), hyper_of(key)
    X, Y = data(module)
    params = module.init_params(3)
    start = copy(params)
    state = module.init_state(params)
    history = module.fit(
        params, X, Y, epochs=EPOCHS, batch_size=BATCH, shuffle=False, state=state
    )
    want, losses, _ = reference_fit(
        module, start, X, Y, hyper, epochs=EPOCHS, batch_size=BATCH,
        lrs=[hyper["lr"]] * EPOCHS,
    )  # fmt: skip
    assert_moved(start, want)
    assert_params_close(params, want, what=key)
    np.testing.assert_allclose(history["loss"], losses, rtol=1e-10)
    np.testing.assert_allclose(history["lr"], [hyper["lr"]] * EPOCHS, rtol=1e-15)
    assert history["best_epoch"] is None
    assert history["stopped_early"] is False
    assert int(state["step"][0]) == EPOCHS * 4
    assert int(state["epoch"][0]) == EPOCHS


def test_adam_next_to_norm_layers_named_beta1_and_beta2():
    """Layer norm as layer 1 and batch norm as layer 2 have parameters beta1 and
    beta2, the names Adam's betas once had in the training loop (which then
    read a float where it indexed an array): fit still follows the rule."""
    spec = derive.spec_from_dict(ADAM_NORMS)
    module = derive.build(spec)
    X, Y = data(module, rows=12)
    params = module.init_params(1)
    start = copy(params)
    module.fit(params, X, Y, epochs=3, batch_size=4, shuffle=False,
               buffers=module.init_buffers())  # fmt: skip
    hyper = dict(spec.optimizer.hyper, name="adam")
    want, _, _ = reference_fit(module, start, X, Y, hyper, epochs=3, batch_size=4,
                               lrs=[0.01] * 3)  # fmt: skip
    assert_moved(start, want)
    # the bias of the dense layer before batch norm has a zero gradient (the
    # normalization removes it): compare it to rounding, not relative to itself
    assert_params_close(params, want, what="adam next to beta1, beta2", atol=1e-9)


def test_optimizer_locals_do_not_look_like_layer_tensors():
    """Layer tensors are named by a name and their layer number (W2, beta2,
    grad_b3): no hyper-parameter or slot an optimizer unpacks in the training
    loop is named so (beta_1 is not)."""
    import re

    from derive.codegen.render import templates_dir

    for path in sorted((templates_dir() / "optimizers").glob("*.jinja")):
        unpack = (
            path.read_text().split("{% macro unpack() %}")[1].split("{% endmacro")[0]
        )
        names = re.findall(r"^(\w+) =", unpack, re.M)
        assert names, path
        clashing = [n for n in names if re.fullmatch(r"\w*[A-Za-z]\d+", n)]
        assert not clashing, (path.name, clashing)


@pytest.mark.parametrize(
    ("key", "schedule", "options"),
    [
        ("adamw", "step", {"step_size": 2, "gamma": 0.5}),
        ("momentum_dampening_wd", "cosine", {"min_lr": 0.004}),
        ("rmsprop_momentum_wd", "cosine", {"min_lr": 0.0}),
    ],
)
def test_schedule_lr_and_params(key, schedule, options):
    module, hyper = module_for(key), hyper_of(key)
    X, Y = data(module)
    lr, epochs = 0.03, 7  # not the spec's lr: fit's lr argument is the base lr
    if schedule == "step":
        lrs = [step_lr(lr, options["gamma"], options["step_size"], e)
               for e in range(epochs)]  # fmt: skip
    else:
        lrs = [cosine_lr(lr, options["min_lr"], epochs, e) for e in range(epochs)]
    assert len(set(lrs)) > 2
    params = module.init_params(4)
    start = copy(params)
    history = module.fit(params, X, Y, epochs=epochs, batch_size=BATCH, lr=lr,
                         shuffle=False, schedule=schedule, **options)  # fmt: skip
    np.testing.assert_allclose(history["lr"], lrs, rtol=1e-14, atol=1e-17)
    want, losses, _ = reference_fit(module, start, X, Y, hyper, epochs=epochs,
                                    batch_size=BATCH, lrs=lrs)  # fmt: skip
    assert_params_close(params, want, what=f"{key} {schedule}")
    np.testing.assert_allclose(history["loss"], losses, rtol=1e-10)


@pytest.mark.parametrize("key", ["adam_wd", "adamw"])
def test_norm_shifts_at_layers_1_and_2_beside_adam(key):
    """Norm layers at positions 1 and 2 have shifts named beta1 and beta2, the
    names of Adam's hyper-parameters in torch's documentation: fit compiles (the
    update's locals once shadowed those kernel arguments) and follows the rule.
    Batches of 4, 4, 4: batch norm refuses a batch of one row."""
    hyper = hyper_of(key)
    spec = derive.spec_from_dict({
        "name": f"opt_{key}_norms", "dtype": "float64", "input": 3,
        "layers": [{"kind": "layer_norm"}, {"kind": "batch_norm"},
                   {"units": 2, "activation": "identity"}],
        "loss": {"name": "mse"}, "optimizer": hyper,
    })  # fmt: skip
    module = derive.build(spec)
    assert [p[0] for p in module._PARAMS][:4] == ["gamma1", "beta1", "gamma2", "beta2"]
    X, Y = data(module, rows=12)
    params = module.init_params(3)
    for p in params:  # away from gamma 1, beta 0, so every entry moves differently
        p += np.random.default_rng(4).normal(0.0, 0.3, p.shape)
    start = copy(params)
    history = module.fit(params, X, Y, epochs=EPOCHS, batch_size=BATCH, shuffle=False,
                         buffers=module.init_buffers())  # fmt: skip
    want, losses, _ = reference_fit(module, start, X, Y, hyper, epochs=EPOCHS,
                                    batch_size=BATCH, lrs=[hyper["lr"]] * EPOCHS)  # fmt: skip
    assert_moved(start, want)
    # 24 steps through two normalizations of 4-row batches amplify rounding: 1e-9
    assert_params_close(params, want, rtol=1e-9, what=f"{key} with norms")
    np.testing.assert_allclose(history["loss"], losses, rtol=1e-10)


def test_schedules_count_global_epochs_when_resuming():
    """step: the decay continues across fit calls; cosine: t_max is the epoch
    count at the end of each call, the position e the global epoch."""
    module = module_for("adamw")
    X, Y = data(module)
    lr = 0.04
    params = module.init_params(0)
    state = module.init_state(params)
    first = module.fit(params, X, Y, epochs=3, lr=lr, shuffle=False, state=state,
                       schedule="step", step_size=2, gamma=0.3)  # fmt: skip
    second = module.fit(params, X, Y, epochs=3, lr=lr, shuffle=False, state=state,
                        schedule="step", step_size=2, gamma=0.3)  # fmt: skip
    got = np.concatenate([first["lr"], second["lr"]])
    np.testing.assert_allclose(got, [step_lr(lr, 0.3, 2, e) for e in range(6)],
                               rtol=1e-14)  # fmt: skip
    params = module.init_params(0)
    state = module.init_state(params)
    first = module.fit(params, X, Y, epochs=2, lr=lr, shuffle=False, state=state,
                       schedule="cosine", min_lr=0.001)  # fmt: skip
    second = module.fit(params, X, Y, epochs=3, lr=lr, shuffle=False, state=state,
                        schedule="cosine", min_lr=0.001)  # fmt: skip
    np.testing.assert_allclose(first["lr"], [cosine_lr(lr, 0.001, 2, e)
                                             for e in range(2)], rtol=1e-14)  # fmt: skip
    np.testing.assert_allclose(second["lr"], [cosine_lr(lr, 0.001, 5, e)
                                              for e in range(2, 5)], rtol=1e-14)  # fmt: skip


@pytest.mark.parametrize("key", ["sgd_wd", "momentum_dampening_wd", "adam_wd"])
def test_clip_norm(key):
    module, hyper = module_for(key), hyper_of(key)
    X, Y = data(module)
    clip = 0.05
    params = module.init_params(5)
    start = copy(params)
    history = module.fit(params, X, Y, epochs=EPOCHS, batch_size=BATCH,
                         shuffle=False, clip_norm=clip)  # fmt: skip
    want, losses, clipped = reference_fit(
        module, start, X, Y, hyper, epochs=EPOCHS, batch_size=BATCH,
        lrs=[hyper["lr"]] * EPOCHS, clip_norm=clip,
    )  # fmt: skip
    assert clipped >= EPOCHS * 4 // 2, f"clipping active in only {clipped} steps"
    unclipped, _, _ = reference_fit(module, start, X, Y, hyper, epochs=EPOCHS,
                                    batch_size=BATCH, lrs=[hyper["lr"]] * EPOCHS)  # fmt: skip
    assert max(float(np.max(np.abs(a - b)))
               for a, b in zip(want, unclipped, strict=True)) > 1e-4  # fmt: skip
    assert_params_close(params, want, what=f"{key} clip_norm={clip}")
    np.testing.assert_allclose(history["loss"], losses, rtol=1e-10)


@pytest.mark.parametrize(
    ("key", "options"),
    [("adam", {}), ("adamw", {"schedule": "step", "step_size": 2, "gamma": 0.5})],
)
def test_resume_with_shuffle_equals_one_fit(key, options):
    module, hyper = module_for(key), hyper_of(key)
    X, Y = data(module)
    seed, e1, e2 = 11, 2, 3
    once = module.init_params(1)
    start = copy(once)
    whole = module.fit(once, X, Y, epochs=e1 + e2, batch_size=BATCH, shuffle=True,
                       seed=seed, **options)  # fmt: skip
    twice = module.init_params(1)
    state = module.init_state(twice)
    h1 = module.fit(twice, X, Y, epochs=e1, batch_size=BATCH, shuffle=True,
                    seed=seed, state=state, **options)  # fmt: skip
    h2 = module.fit(twice, X, Y, epochs=e2, batch_size=BATCH, shuffle=True,
                    seed=seed, state=state, **options)  # fmt: skip
    assert_params_close(twice, once, rtol=1e-12, what=f"{key} resumed")
    np.testing.assert_allclose(np.concatenate([h1["loss"], h2["loss"]]),
                               whole["loss"], rtol=1e-12)  # fmt: skip
    np.testing.assert_allclose(np.concatenate([h1["lr"], h2["lr"]]), whole["lr"],
                               rtol=1e-15)  # fmt: skip
    assert int(state["epoch"][0]) == e1 + e2
    assert int(state["step"][0]) == (e1 + e2) * 4
    # The orders of the contract: module.epoch_order(seed, e, n), e global.
    orders = [module.epoch_order(seed, e, len(X)) for e in range(e1 + e2)]
    assert any(not np.array_equal(o, np.arange(len(X))) for o in orders)
    want, losses, _ = reference_fit(module, start, X, Y, hyper, epochs=e1 + e2,
                                    batch_size=BATCH, lrs=whole["lr"],
                                    orders=orders)  # fmt: skip
    assert_params_close(once, want, what=f"{key} shuffled")
    np.testing.assert_allclose(whole["loss"], losses, rtol=1e-10)


# ------------------------------------------------------- early stopping, callback


def expected_stop(curve, patience, min_delta):
    """(best_epoch, epochs run) of early stopping on a monitored curve, or None
    if it never stops: an epoch improves when its value < best - min_delta."""
    best, best_epoch, wait = math.inf, None, 0
    for e, value in enumerate(curve):
        if value < best - min_delta:
            best, best_epoch, wait = value, e, 0
        else:
            wait += 1
            if wait >= patience:
                return best_epoch, e + 1
    return None


def overfit_data(module):
    """Few noisy training rows, clean validation rows: val loss falls, then rises."""
    rng = np.random.default_rng(42)
    A = rng.normal(0, 1, (module.N_INPUT, module.N_OUTPUT))
    X = rng.normal(0, 1, (8, module.N_INPUT))
    Y = np.tanh(X @ A) + rng.normal(0, 0.6, (8, module.N_OUTPUT))
    X_val = rng.normal(0, 1, (40, module.N_INPUT))
    Y_val = np.tanh(X_val @ A)
    return X, Y, X_val, Y_val


ES_KEY, ES_LR, ES_EPOCHS = "adam", 0.05, 120


@pytest.mark.parametrize(("patience", "min_delta"), [(4, 0.0), (6, 1e-3)])
def test_early_stopping_restores_best_epoch(patience, min_delta):
    module = module_for(ES_KEY)
    X, Y, X_val, Y_val = overfit_data(module)
    fit = functools.partial(module.fit, batch_size=4, lr=ES_LR, shuffle=False)
    # The monitored curve, measured independently after every epoch.
    params = module.init_params(2)
    measured = []
    full = fit(params, X, Y, epochs=ES_EPOCHS, X_val=X_val, Y_val=Y_val,
               callback=lambda e, logs: measured.append(
                   module.loss(params, X_val, Y_val)))  # fmt: skip
    np.testing.assert_allclose(full["val_loss"], measured, rtol=1e-12)
    assert full["stopped_early"] is False
    stop = expected_stop(measured, patience, min_delta)
    assert stop is not None and stop[0] >= 2, "setup: val loss must fall, then rise"
    best_epoch, ran = stop

    params = module.init_params(2)
    history = fit(params, X, Y, epochs=ES_EPOCHS, X_val=X_val, Y_val=Y_val,
                  patience=patience, min_delta=min_delta)  # fmt: skip
    assert history["stopped_early"] is True
    assert history["best_epoch"] == best_epoch
    assert len(history["loss"]) == ran == best_epoch + patience + 1
    assert len(history["val_loss"]) == len(history["lr"]) == ran
    np.testing.assert_allclose(history["val_loss"], measured[:ran], rtol=1e-12)
    np.testing.assert_allclose(history["loss"], full["loss"][:ran], rtol=1e-12)
    # The params restored in place are those after epoch best_epoch.
    best = module.init_params(2)
    fit(best, X, Y, epochs=best_epoch + 1)
    assert_params_close(params, best, rtol=1e-12, what="restored")
    assert module.loss(params, X_val, Y_val) == pytest.approx(
        measured[best_epoch], rel=1e-12
    )


def test_early_stopping_on_training_loss_without_validation():
    """Without validation data, patience monitors the epoch's training loss."""
    module = module_for("sgd")
    X, Y = data(module, rows=12, seed=3)
    fit = functools.partial(module.fit, batch_size=3, lr=0.7, shuffle=False)
    full = fit(module.init_params(0), X, Y, epochs=60)
    assert "val_loss" not in full
    stop = expected_stop(full["loss"], 3, 0.0)
    assert stop is not None and stop[0] >= 1, "setup: training loss must rise"
    best_epoch, ran = stop
    params = module.init_params(0)
    history = fit(params, X, Y, epochs=60, patience=3)
    assert history["stopped_early"] is True
    assert history["best_epoch"] == best_epoch
    assert len(history["loss"]) == ran
    best = module.init_params(0)
    fit(best, X, Y, epochs=best_epoch + 1)
    assert_params_close(params, best, rtol=1e-12, what="restored")


def test_validation_accuracy_of_a_classifier():
    module = module_for("sgd_wd")
    assert module.TASK == "binary"
    X, Y = data(module, rows=30, seed=4)
    X_val, Y_val = data(module, rows=25, seed=5)
    params = module.init_params(6)
    seen = []

    def record(epoch, logs):
        outputs = module.predict(params, X_val)
        mine = float(np.mean((outputs > 0.5) == (Y_val >= 0.5)))
        seen.append((module.loss(params, X_val, Y_val), mine,
                     module.accuracy(params, X_val, Y_val), logs))  # fmt: skip

    history = module.fit(params, X, Y, epochs=5, batch_size=8, X_val=X_val,
                         Y_val=Y_val, callback=record)  # fmt: skip
    losses, mine, theirs, logs = zip(*seen, strict=True)
    np.testing.assert_allclose(history["val_loss"], losses, rtol=1e-12)
    np.testing.assert_array_equal(history["val_accuracy"], mine)
    np.testing.assert_array_equal(theirs, mine)
    assert len(set(mine)) > 1 or 0 < mine[0] < 1
    for e, entry in enumerate(logs):
        assert set(entry) == {"epoch", "loss", "lr", "val_loss", "val_accuracy",
                              "samples_per_s"}  # fmt: skip
        assert entry["val_accuracy"] == history["val_accuracy"][e]
        assert entry["val_loss"] == history["val_loss"][e]


def test_regression_has_no_accuracy():
    module = module_for("sgd")
    X, Y = data(module)
    history = module.fit(module.init_params(0), X, Y, epochs=2, X_val=X, Y_val=Y)
    assert "val_loss" in history and "val_accuracy" not in history
    with pytest.raises(ValueError):
        module.accuracy(module.init_params(0), X, Y)


def test_callback_once_per_epoch_with_documented_logs():
    module = module_for("nesterov")
    X, Y = data(module)
    calls = []
    params = module.init_params(7)
    state = module.init_state(params)
    history = module.fit(params, X, Y, epochs=4, batch_size=BATCH, state=state,
                         callback=lambda e, logs: calls.append((e, dict(logs))))  # fmt: skip
    assert [e for e, _ in calls] == [0, 1, 2, 3]
    for e, logs in calls:
        assert set(logs) == {"epoch", "loss", "lr", "samples_per_s"}
        assert logs["epoch"] == e
        assert logs["loss"] == history["loss"][e]
        assert logs["lr"] == history["lr"][e]
        assert logs["samples_per_s"] > 0
    # Resumed: epochs are counted globally.
    calls.clear()
    module.fit(params, X, Y, epochs=2, batch_size=BATCH, state=state,
               callback=lambda e, logs: calls.append((e, dict(logs))))  # fmt: skip
    assert [e for e, _ in calls] == [4, 5]


def test_callback_returning_true_stops_training():
    module = module_for("nesterov")
    X, Y = data(module)
    calls = []

    def stop_after_third(epoch, logs):
        calls.append(epoch)
        return len(calls) == 3

    params = module.init_params(8)
    state = module.init_state(params)
    history = module.fit(params, X, Y, epochs=10, batch_size=BATCH, shuffle=False,
                         state=state, callback=stop_after_third)  # fmt: skip
    assert calls == [0, 1, 2]
    assert len(history["loss"]) == len(history["lr"]) == 3
    assert int(state["epoch"][0]) == 3
    same = module.init_params(8)  # nothing is restored: the params of epoch 2
    module.fit(same, X, Y, epochs=3, batch_size=BATCH, shuffle=False)
    assert_params_close(params, same, rtol=1e-12, what="stopped by callback")


# ------------------------------------------------ optional: PyTorch itself
# CI does not install torch; these skip there. The NumPy references above are the
# tests that run everywhere; these check the references themselves against torch.


def torch_fit(torch, module, params, X, Y, hyper, *, epochs, lr, schedule=None,
              options=None, clip_norm=0.0):  # fmt: skip
    """The same training in PyTorch (float64, shuffle off): returns the params."""
    options = options or {}
    tensors = [torch.tensor(p.copy(), dtype=torch.float64, requires_grad=True)
               for p in params]  # fmt: skip
    kwargs = {k: tuple(v) if isinstance(v, list) else v
              for k, v in hyper.items() if k not in ("name", "lr")}  # fmt: skip
    make = {"sgd": torch.optim.SGD, "momentum": torch.optim.SGD,
            "nesterov": torch.optim.SGD, "adam": torch.optim.Adam,
            "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}  # fmt: skip
    opt = make[hyper["name"]](tensors, lr=lr, **kwargs)
    if schedule == "step":
        sched = torch.optim.lr_scheduler.StepLR(
            opt, step_size=options["step_size"], gamma=options["gamma"]
        )
    elif schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=epochs, eta_min=options["min_lr"]
        )
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    for _ in range(epochs):
        for start in range(0, len(X), BATCH):
            xb, yb = Xt[start : start + BATCH], Yt[start : start + BATCH]
            W1, b1, W2, b2 = tensors
            out = torch.tanh(xb @ W1.T + b1) @ W2.T + b2
            if module.N_OUTPUT == 1:  # the binary classifier: sigmoid + BCE
                loss = torch.nn.functional.binary_cross_entropy(torch.sigmoid(out), yb)
            else:
                loss = torch.nn.functional.mse_loss(out, yb)
            opt.zero_grad()
            loss.backward()
            if clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(tensors, clip_norm)
            opt.step()
        if schedule is not None:
            sched.step()
    return [t.detach().numpy() for t in tensors]


@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_against_pytorch(key):
    torch = pytest.importorskip("torch")
    module, hyper = module_for(key), hyper_of(key)
    X, Y = data(module)
    params = module.init_params(3)
    want = torch_fit(torch, module, params, X, Y, hyper, epochs=EPOCHS,
                     lr=hyper["lr"])  # fmt: skip
    module.fit(params, X, Y, epochs=EPOCHS, batch_size=BATCH, shuffle=False)
    assert_params_close(params, want, what=f"torch {key}")


@pytest.mark.parametrize(
    ("key", "schedule", "options", "clip_norm"),
    [
        ("adamw", "step", {"step_size": 2, "gamma": 0.5}, 0.05),
        ("momentum_dampening_wd", "cosine", {"min_lr": 0.004}, 0.05),
        ("sgd_wd", "cosine", {"min_lr": 0.0}, 0.0),
    ],
)
def test_schedule_and_clip_against_pytorch(key, schedule, options, clip_norm):
    torch = pytest.importorskip("torch")
    module, hyper = module_for(key), hyper_of(key)
    X, Y = data(module)
    lr, epochs = 0.03, 7
    params = module.init_params(4)
    want = torch_fit(torch, module, params, X, Y, hyper, epochs=epochs, lr=lr,
                     schedule=schedule, options=options, clip_norm=clip_norm)  # fmt: skip
    module.fit(params, X, Y, epochs=epochs, batch_size=BATCH, lr=lr, shuffle=False,
               schedule=schedule, clip_norm=clip_norm, **options)  # fmt: skip
    assert_params_close(params, want, what=f"torch {key} {schedule}")
