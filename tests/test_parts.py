"""Training a batch in parts (runtime/parts.py) computes what one _train does.

A module whose per-sample loop work reaches lowering.PARTS_MIN_LOOP_WORK (rows
are independent) trains each mini-batch in two halves at once, in two threads,
and adds their gradients before the optimizer step. The corpus specs are far
below the threshold, so each is generated twice here: with the threshold at 0
(two parts) and out of reach (the one jitted _train the other numeric tests
compare with PyTorch and NumPy references). Fits must agree, with two threads
(counted) and with BLAS limited to one thread (one part, serially); read-only
and strided inputs must not compile the part kernels twice; batch statistics,
running statistics and dropout keep a module in one part.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from corpus import CORPUS, ROOT, TRAINING_CORPUS, make_spec, random_targets
from threadpoolctl import threadpool_limits
from variants import assert_close_arrays, generate, load

import derive
from derive.codegen import lowering
from derive.generate import generate_source
from derive.spec import Spec, load_spec, spec_from_dict

PARTS = {"PARTS_MIN_LOOP_WORK": 0}
ONE = {"PARTS_MIN_LOOP_WORK": 10**12}


def _source(spec: Spec, overrides) -> str:
    return generate(spec, **overrides)


def _load(spec: Spec, overrides):
    return load("parts", spec, **overrides)


SPECS = {
    "cnn_2d_strided": CORPUS["cnn_2d_strided"],
    "cnn_1d_dilated": CORPUS["cnn_1d_dilated"],
    # outlined layer functions inside _train_part
    "deep_uniform": CORPUS["deep_uniform"],
    # float32 (fast-math kernels), AdamW, gradient clipping set in fit below
    "adamw_float32": make_spec(
        "parts_adamw", [4, 12, 3], ["tanh", "softmax"], "cross_entropy",
        dtype="float32", optimizer={"name": "adamw", "lr": 0.01, "weight_decay": 0.1},
    ),
    "rmsprop_momentum": make_spec(
        "parts_rmsprop", [3, 6, 2], ["relu", "identity"], "huber",
        optimizer={"name": "rmsprop", "lr": 0.01, "momentum": 0.5},
    ),
    "nesterov": make_spec(
        "parts_nesterov", [3, 6, 1], ["elu", "sigmoid"], "binary_cross_entropy",
        optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
    ),
}  # fmt: skip


def _data(module, rows: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (rows, module.N_INPUT))
    return X, random_targets(module, rows, rng)


def _fit(module, params, X, Y, **kwargs):
    p = [q.copy() for q in params]
    history = module.fit(p, X, Y, epochs=3, shuffle=True, seed=5, **kwargs)
    return p, history


_assert_close = assert_close_arrays


def _count_workers(module, monkeypatch) -> list[int]:
    """Counts the part threads the module starts (its _part_worker runs)."""
    started = []
    worker = module._part_worker

    def counted(jobs, results):
        started.append(1)
        worker(jobs, results)

    monkeypatch.setattr(module, "_part_worker", counted)
    return started


@pytest.mark.parametrize(
    "name",
    # float32 at Numba's default level (make test's second tier): fast-math lets
    # LLVM reorder sums differently per level
    [
        pytest.param(name, marks=pytest.mark.optimized)
        if SPECS[name].dtype == "float32"
        else name
        for name in sorted(SPECS)
    ],
)
def test_parts_train_as_one_train(name, monkeypatch):
    spec = SPECS[name]
    parts, one = _load(spec, PARTS), _load(spec, ONE)
    assert (parts._TRAIN_PARTS, one._TRAIN_PARTS) == (2, 1)
    assert not hasattr(one, "_train_part") and not hasattr(parts._train, "signatures")
    rtol = 1e-10 if spec.dtype == "float64" else 2e-4
    clip = 0.5 if name == "adamw_float32" else 0.0
    X, Y = _data(one, 41)
    params = one.init_params(3)
    started = _count_workers(parts, monkeypatch)
    # batch 16: the last batch has 9 rows (its second part 1); batch 15 (16
    # columns): 11 rows; batch 12: 5 rows, no second part; 64: one batch of 41
    for batch in (16, 15, 12, 64):
        p_one, h_one = _fit(one, params, X, Y, batch_size=batch, clip_norm=clip)
        with threadpool_limits(limits=2, user_api="blas"):  # two parts even on one core
            before = len(started)
            p_parts, h_parts = _fit(
                parts, params, X, Y, batch_size=batch, clip_norm=clip
            )
            assert len(started) == before + 1, "the two-part loop did not run"
        with threadpool_limits(limits=1, user_api="blas"):  # one part, serially
            p_serial, h_serial = _fit(
                parts, params, X, Y, batch_size=batch, clip_norm=clip
            )
        assert len(started) == before + 1, "one BLAS thread must mean one part"
        assert any(not np.array_equal(a, b) for a, b in zip(p_one, params, strict=True))
        for p, h, what in ((p_parts, h_parts, "parts"), (p_serial, h_serial, "serial")):
            _assert_close(
                [h["loss"]], [h_one["loss"]], rtol, f"{what} loss, batch {batch}"
            )
            _assert_close(p, p_one, rtol, f"{what} params, batch {batch}")


def test_parts_state_carries_across_calls_and_resumes():
    """Optimizer state, step count and epochs run on from call to call as in one
    _train: 2 + 2 epochs equal 4."""
    spec = SPECS["adamw_float32"]
    parts, one = _load(spec, PARTS), _load(spec, ONE)
    X, Y = _data(one, 30, seed=1)
    params = one.init_params(0)
    results = {}
    for key, module in (("one", one), ("parts", parts)):
        p = [q.copy() for q in params]
        state = module.init_state(p)
        module.fit(p, X, Y, epochs=2, batch_size=8, state=state)
        history = module.fit(p, X, Y, epochs=2, batch_size=8, state=state)
        results[key] = (p, history["loss"], int(state["step"][0]))
    assert results["one"][2] == results["parts"][2] == 4 * 4
    _assert_close([results["parts"][1]], [results["one"][1]], 2e-4, "loss")
    _assert_close(results["parts"][0], results["one"][0], 2e-4, "params")


def test_parts_divergence_is_reported_and_restored_as_in_one_train():
    """lr 1e6 blows the tanh regression up (as in test_divergence.py): the same
    epoch diverges with the same report, and the same state is restored."""
    spec = CORPUS["example_tanh_regression"]
    parts, one = _load(spec, PARTS), _load(spec, ONE)
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (64, 1))
    params = one.init_params(0)
    outcomes = {}
    for key, module in (("one", one), ("parts", parts)):
        p = [q.copy() for q in params]
        state = module.init_state(p)
        with pytest.warns(RuntimeWarning, match="training diverged in epoch"):
            history = module.fit(
                p, X, np.sin(X), epochs=40, batch_size=16, lr=1e6, state=state
            )
        report = history["diverged"]
        outcomes[key] = (p, history["loss"], report["epoch"], report["message"],
                         int(state["step"][0]))  # fmt: skip
    p_one, loss_one, *report_one = outcomes["one"]
    p_parts, loss_parts, *report_parts = outcomes["parts"]
    assert report_parts == report_one
    _assert_close([loss_parts], [loss_one], 1e-10, "loss before divergence")
    _assert_close(p_parts, p_one, 1e-10, "restored params")


def test_parts_read_only_and_strided_inputs_compile_once():
    parts = _load(SPECS["cnn_1d_dilated"], PARTS)
    X, Y = _data(parts, 12)
    params = parts.init_params(0)
    parts.fit(params, X, Y, epochs=1, batch_size=4)
    read_only = X.copy()
    read_only.flags.writeable = False
    for inputs in (read_only, np.repeat(X, 2, axis=0)[::2], np.asfortranarray(X)):
        parts.fit(params, inputs, Y, epochs=1, batch_size=4)
    for kernel in (parts._train_part, parts._train_step):
        assert len(kernel.signatures) == 1, (kernel, kernel.signatures)


@pytest.mark.parametrize("name", sorted(TRAINING_CORPUS))
def test_batch_coupled_layers_keep_one_part(name):
    """Batch norm (statistics over the batch), running statistics and dropout
    masks (one generator stream per batch) tie a batch's rows together."""
    spec = spec_from_dict(TRAINING_CORPUS[name])
    assert "_TRAIN_PARTS = 1\n" in _source(spec, PARTS)


def test_threshold_splits_the_cnn_workload_only():
    """At the shipped threshold the bench's W6 CNN (41k loop iterations per
    sample outside BLAS) trains in parts; W5 (a small CNN, 1.2k) and the dense
    W4 (all of its work in BLAS) in one _train."""
    expected = {"w6_mnist_cnn": 2, "w5_digits_cnn": 1, "w4_mnist_like": 1}
    for name, parts in expected.items():
        source = generate_source(load_spec(ROOT / "bench" / f"{name}.toml"))
        assert f"_TRAIN_PARTS = {parts}\n" in source, name


def test_parts_modules_are_ruff_clean_and_deterministic(tmp_path):
    from ruff.__main__ import find_ruff_bin

    ruff = str(find_ruff_bin())
    for name, spec in SPECS.items():
        source = _source(spec, PARTS)
        assert source == _source(spec, PARTS) and "_TRAIN_PARTS = 2\n" in source
        (tmp_path / f"{name}.py").write_text(source)
    config = ["--config", str(ROOT / "pyproject.toml")]
    check = subprocess.run([ruff, "check", *config, str(tmp_path)],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout[:3000]
    fmt = subprocess.run([ruff, "format", "--check", *config, str(tmp_path)],
                         capture_output=True, text=True)  # fmt: skip
    assert fmt.returncode == 0, fmt.stdout[:3000]


def test_built_parts_module_imports_its_shared_kernels(monkeypatch):
    """derive.build's form (a head importing the architecture's kernel module)
    of a module in parts: the threaded _train and its part kernels come from
    the kernel module, and train as the standalone module does."""
    spec = make_spec(
        "parts_built", [3, 9, 2], ["softsign", "identity"], "mse",
        optimizer={"name": "adam", "lr": 0.02},
    )  # fmt: skip
    with monkeypatch.context() as mp:
        mp.setattr(lowering, "PARTS_MIN_LOOP_WORK", 0)
        built = derive.build(spec)
    standalone = _load(spec, PARTS)
    assert built._TRAIN_PARTS == 2 and built._train.__module__ != built.__name__
    X, Y = _data(built, 23)
    params = built.init_params(1)
    with threadpool_limits(limits=2, user_api="blas"):
        p_built, h_built = _fit(built, params, X, Y, batch_size=6)
        p_alone, h_alone = _fit(standalone, params, X, Y, batch_size=6)
    _assert_close([h_built["loss"]], [h_alone["loss"]], 1e-12, "loss")
    _assert_close(p_built, p_alone, 1e-12, "params")
