"""Outlined layers: the kernel code that equal layers share is one jitted
function they call. It must compute exactly what the inline code computes
(float64: bit for bit; float32 training with fast-math: to rounding), be
compiled once for all the layers that call it, and leave networks without
repeated layers printed inline."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from corpus import make_spec, random_targets

from derive.codegen import lowering
from derive.generate import atomic_write, cache_dir, generate_source, import_path
from derive.spec import Spec

#: (sizes, activations): the loop path (20 units) and the BLAS path (24 units)
DEEP = {
    "loops": ([5, 20, 20, 20, 3], ["relu"] * 3 + ["softmax"]),
    "blas": ([40, 24, 24, 24, 1], ["tanh"] * 3 + ["sigmoid"]),
}


def _spec(name: str, dtype: str = "float64") -> Spec:
    sizes, acts = DEEP[name]
    loss = "cross_entropy" if acts[-1] == "softmax" else "binary_cross_entropy"
    return make_spec(f"deep_{name}_{dtype}", sizes, acts, loss, dtype=dtype,
                     optimizer={"name": "adam", "lr": 0.01})  # fmt: skip


def _load(spec: Spec, directory: Path | None = None, **constants):
    """The module of ``spec`` (lowering constants patched), written to the test
    cache, or to ``directory`` so that Numba compiles it in this process."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in constants.items():
            mp.setattr(lowering, key, value)
        source = generate_source(spec)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    path = (directory or cache_dir() / "outline") / f"{spec.name}_{digest}.py"
    if not path.exists():
        atomic_write(path, source)
    return import_path(path, f"outline_{spec.name}_{digest}"), source


def _data(module, rows=37, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, module.N_INPUT)).astype(module.DTYPE)
    return X, random_targets(module, rows, rng).astype(module.DTYPE)


@pytest.mark.parametrize("name", sorted(DEEP))
def test_outlined_layers_compute_what_inline_code_computes(name, tmp_path):
    spec = _spec(name)
    # compiled here, not loaded from Numba's cache: the signatures are counted
    outlined, source = _load(spec, tmp_path)
    inline, inline_source = _load(spec, OUTLINE_MIN_LAYERS=10**9)
    assert "def _layer2_forward(" in source and "_layer2_" not in inline_source
    # layers 2.. call the function of layer 2 (the first of the equal layers),
    # in the three kernels that take arrays; _train calls its own copy, which
    # takes offsets into its flat vectors and makes the views itself
    n_hidden = len(DEEP[name][1]) - 1
    assert source.count("    _layer2_forward(") == 3 * (n_hidden - 1)
    assert source.count("    _layer2_training_forward_train(") == n_hidden - 1
    X, Y = _data(outlined)
    params = outlined.init_params(3)
    value, grads = outlined.loss_and_grad(params, X, Y)
    ref_value, ref_grads = inline.loss_and_grad(params, X, Y)
    assert value == ref_value
    for g, r in zip(grads, ref_grads, strict=True):
        np.testing.assert_array_equal(g, r)
    trained, ref_trained = [p.copy() for p in params], [p.copy() for p in params]
    history = outlined.fit(trained, X, Y, epochs=3, batch_size=8, shuffle=True)
    ref_history = inline.fit(ref_trained, X, Y, epochs=3, batch_size=8, shuffle=True)
    np.testing.assert_array_equal(history["loss"], ref_history["loss"])
    for p, r in zip(trained, ref_trained, strict=True):
        np.testing.assert_array_equal(p, r)
    np.testing.assert_array_equal(
        outlined.predict(trained, X), inline.predict(trained, X)
    )
    # one compile of the shared function serves every layer (the offsets are
    # run-time integers, not literals that would compile a copy per layer)
    assert len(outlined._layer2_forward.signatures) == 1
    assert len(outlined._layer2_training_forward_train.signatures) == 1


# at Numba's default level (make test's second tier): fast-math lets LLVM reorder
# sums differently per level
@pytest.mark.optimized
def test_float32_outlined_training_matches_inline_training(tmp_path):
    """_train's outlined functions are compiled with its fast-math flags."""
    spec = _spec("blas", "float32")
    outlined, source = _load(spec, tmp_path)  # compiled here: signatures counted
    inline, _ = _load(spec, OUTLINE_MIN_LAYERS=10**9)
    assert "def _layer2_training_forward_fast(" in source
    X, Y = _data(outlined, rows=64, seed=1)  # 40 inputs, BLAS layers
    params = outlined.init_params(0)
    trained, ref_trained = [p.copy() for p in params], [p.copy() for p in params]
    history = outlined.fit(trained, X, Y, epochs=4, batch_size=16)
    ref_history = inline.fit(ref_trained, X, Y, epochs=4, batch_size=16)
    np.testing.assert_allclose(history["loss"], ref_history["loss"], rtol=1e-5)
    assert len(outlined._layer2_training_forward_fast.signatures) == 1
    for p, r in zip(trained, ref_trained, strict=True):
        np.testing.assert_allclose(p, r, rtol=1e-4, atol=1e-5)
