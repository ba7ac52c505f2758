"""derive.worked: the derivation evaluated at one sample, step by step.

Two independent paths meet here: the worked example evaluates the SymPy
expressions with lambdify, the generated module runs its printed Numba code.
Seed 001's numbers are the ones its author printed (cited by notebook cell).
"""

from __future__ import annotations

import numpy as np
import pytest
from corpus import CORPUS, TRAINING_CORPUS, random_targets

import derive
from derive.present.worked import WorkedExample, worked_example
from derive.spec import spec_from_dict

# Every kind of head and a few hidden activations: fused sigmoid+BCE, softmax+CE
# (index-form delta, log-sum-exp value), logits+BCE, huber's Piecewise, a user
# loss and a user activation, relu's kink, elu's a-form, 32-unit layers.
WORKED_SPECS = [
    "example_seed001",
    "example_xor",
    "example_softmax_classifier",
    "head_1_bce_with_logits",
    "head_2_cross_entropy",
    "head_6_huber",
    "head_7_expr",
    "user_activation",
    "hidden_elu",
    "out_leaky_relu_after_relu",
]


def _random_case(
    spec: derive.Spec, module, seed: int
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Params with non-zero biases, one input row and a target that fits the loss."""
    rng = np.random.default_rng(seed)
    params = module.init_params(seed=seed)
    for p in params:
        p += rng.normal(0.0, 0.3, p.shape)
    x = rng.normal(0.0, 1.0, spec.sizes[0])
    y = random_targets(module, 1, rng)[0]
    return params, x, y


@pytest.mark.parametrize("name", WORKED_SPECS)
def test_worked_numbers_equal_generated_loss_and_grad(name):
    spec = CORPUS[name]
    module = derive.build(spec)
    for seed in (0, 1):
        params, x, y = _random_case(spec, module, seed)
        worked = worked_example(spec, params, x, y)
        value, grads = module.loss_and_grad(params, x[None, :], y[None, :])
        assert worked.loss == pytest.approx(value, rel=1e-12, abs=1e-14)
        np.testing.assert_allclose(
            worked.output, module.predict(params, x[None, :])[0], rtol=1e-12, atol=1e-14
        )
        for ours, theirs in zip(worked.grads(), grads, strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-13)


# ---------------------------------------------------------------- seed 001

# The tutorial's hand-picked weights (In [5]), W of shape (n_out, n_in).
SEED001_PARAMS = [
    [[-1.0, 2.0], [3.0, 0.5], [-0.1, -4.0]],
    [1.0, -2.0, 0.3],
    [[0.5, 1.0, -2.0], [0.7, 0.1, 0.3]],
    [-4.0, 5.0],
    [[0.5, -0.3]],
    [0.1],
]
SEED001_X = [[1.0, 2.0], [3.0, 4.0]]
SEED001_Y = [[0.0], [1.0]]

# Values the tutorial printed, one row per sample. PyTorch's forward pass
# (In [7], 4 decimals):
SEED001_FORWARD = {
    (1, "z"): [[4.0, 2.0, -7.8], [6.0, 9.0, -16.0]],
    (1, "a"): [[4.0, 2.0, 0.0], [6.0, 9.0, 0.0]],
    (2, "z"): [[0.0, 8.0], [8.0, 10.1]],
    (2, "a"): [[0.0, 8.0], [8.0, 10.1]],
    (3, "z"): [[-2.3], [1.07]],
    (3, "a"): [[0.0911], [0.7446]],
}
# NumPy on PyTorch's float32 outputs (8 significant digits):
SEED001_LOSS = [0.09554543, 0.29491228]  # In [14], per-sample BCE
SEED001_DL_DA3 = [1.1002588, -1.3430085]  # In [21]
SEED001_DA3_DZ3 = [0.08281956, 0.19017236]  # In [22]
SEED001_DL_DZ3 = [0.09112295, -0.2554031]  # In [23]
SEED001_DL_DW3 = [[0.0, 0.7289836], [-2.0432248, -2.5795712]]  # In [28]
SEED001_DA2_DZ2 = [[0.0, 1.0], [1.0, 1.0]]  # In [34]: relu'(0) = 0
SEED001_COST = 0.19522885978221893  # In [12], F.binary_cross_entropy
# PyTorch's gradients of the cost (In [20], In [26], In [30]; 4 decimals).
SEED001_TORCH_GRADS = [
    [[-0.0249, -0.0396], [-0.1814, -0.2428], [0.0, 0.0]],
    [-0.0147, -0.0614, 0.0],
    [[-0.3831, -0.5747, 0.0], [0.1752, 0.3175, 0.0]],
    [-0.0639, 0.0246],
    [[-1.0216, -0.9253]],
    [-0.0821],
]


def _seed001_worked() -> list[WorkedExample]:
    spec = CORPUS["example_seed001"]
    params = [np.array(p) for p in SEED001_PARAMS]
    return [
        worked_example(spec, params, x, y, sample=i)
        for i, (x, y) in enumerate(zip(SEED001_X, SEED001_Y, strict=True))
    ]


def test_seed001_forward_numbers_match_the_tutorial():
    worked = _seed001_worked()
    for (layer, what), rows in SEED001_FORWARD.items():
        ours = [getattr(w.layers[layer - 1], what) for w in worked]
        np.testing.assert_allclose(ours, rows, rtol=0, atol=5e-5)


def test_seed001_loss_and_output_delta_match_the_tutorial():
    worked = _seed001_worked()
    np.testing.assert_allclose([w.loss for w in worked], SEED001_LOSS, rtol=1e-6)
    assert np.mean([w.loss for w in worked]) == pytest.approx(SEED001_COST, rel=1e-7)
    out = [w.layers[2] for w in worked]
    gradient = [w.head.gradient[0] for w in worked]
    np.testing.assert_allclose(gradient, SEED001_DL_DA3, rtol=1e-6)
    np.testing.assert_allclose(
        [o.derivative[0] for o in out], SEED001_DA3_DZ3, rtol=1e-6
    )
    np.testing.assert_allclose([o.delta[0] for o in out], SEED001_DL_DZ3, rtol=1e-6)
    np.testing.assert_allclose([o.grad_bias[0] for o in out], SEED001_DL_DZ3, rtol=1e-6)
    np.testing.assert_allclose(
        [o.grad_weight[0] for o in out], SEED001_DL_DW3, rtol=1e-6, atol=1e-7
    )
    # sigmoid + binary cross-entropy fuse to a - y.
    assert worked[0].head.delta_text == "a - y"


def test_seed001_hidden_deltas_and_relu_kink():
    worked = _seed001_worked()
    # z2 of sample 0 is exactly 0: PyTorch's relu'(0) = 0 (In [34]).
    np.testing.assert_array_equal(
        [w.layers[1].derivative for w in worked], SEED001_DA2_DZ2
    )
    # The tutorial's hand-computed dL_dA2 (In [32]: [[0.0456], [0.0766]]) is
    # dL_dZ3 * W3^T taken elementwise: one diagonal entry of the right (2, 2)
    # matrix dL_dZ3 @ W3, whose rows are our W3^T delta3.
    back = np.array([w.layers[1].backprop for w in worked])
    np.testing.assert_allclose(np.diag(back), [0.0456, 0.0766], atol=5e-5)
    np.testing.assert_allclose(back[:, 1], [-0.0273369, 0.0766209], atol=1e-6)


def test_seed001_mean_of_sample_gradients_is_torchs_batch_gradient():
    worked = _seed001_worked()
    per_sample = [w.grads() for w in worked]
    for i, torch_grad in enumerate(SEED001_TORCH_GRADS):
        mean = (per_sample[0][i] + per_sample[1][i]) / 2
        np.testing.assert_allclose(mean, torch_grad, rtol=0, atol=5e-5)


# ------------------------------------------------------------ presentation


def test_text_names_every_layer_and_quantity():
    worked = _seed001_worked()[0]
    text = worked.text()
    assert text.startswith("Worked example: 'seed001' (2-3-2-1), sample 0")
    for heading in ("Layer 1: relu", "Layer 2: relu", "Output layer 3: sigmoid"):
        assert heading in text
    for i in (1, 2, 3):
        for name in (f"z{i} = W{i} a{i - 1} + b{i}", f"a{i} = ", f"delta{i} = "):
            assert name in text
        assert f"grad_W{i} = delta{i} a{i - 1}^T" in text
        assert f"grad_b{i} = delta{i}" in text
    assert "delta3 = dL/dz3 = a - y" in text  # the derived, fused formula
    assert "f'(z) = (1 if z > 0 else 0)" in text  # relu's derived f'
    assert "= [4, 2, -7.8]" in text and "= [0.091123]" in text
    assert str(worked) == text


def test_markdown_and_latex():
    worked = _seed001_worked()[1]
    markdown = worked.markdown()
    assert markdown.startswith("# Worked example: 'seed001' (2-3-2-1), sample 1")
    assert "### Output layer 3: sigmoid" in markdown and "$$" in markdown
    assert r"\begin{bmatrix}" in markdown
    assert worked._repr_markdown_() == markdown
    latex = worked.latex()
    assert latex.startswith(r"\section*{Worked example") and r"\[" in latex
    assert latex.count(r"\begin{bmatrix}") == latex.count(r"\end{bmatrix}")
    assert worked.render("text") == worked.text()


def test_large_layers_show_results_without_inline_matrices():
    spec = CORPUS["example_softmax_classifier"]  # 4-32-16-3
    module = derive.build(spec)
    params, x, y = _random_case(spec, module, 3)
    text = worked_example(spec, params, x, y).text()
    assert "Output layer 3: softmax" in text and "da_i/dz_j" in text
    # W1 (32x4) and W2 (16x32) are too large to print inline; W3 (3x16) too.
    assert "z2 = W2 a1 + b2\n     = [" in text
    assert max(len(line) for line in text.splitlines()) < 500


def test_bad_shapes_are_value_errors():
    spec = CORPUS["example_seed001"]
    params = [np.array(p) for p in SEED001_PARAMS]
    with pytest.raises(ValueError, match="x must hold 2"):
        worked_example(spec, params, [1.0, 2.0, 3.0], [0.0])
    with pytest.raises(ValueError, match="y must hold 1"):
        worked_example(spec, params, [1.0, 2.0], [0.0, 1.0])
    with pytest.raises(ValueError, match=r"W2 must have shape \(2, 3\)"):
        worked_example(
            spec, [params[0], params[1], params[2].T, *params[3:]], [1, 2], 0
        )
    with pytest.raises(ValueError, match="6 arrays"):
        worked_example(spec, params[:4], [1.0, 2.0], [0.0])
    with pytest.raises(ValueError, match="finite"):
        worked_example(spec, params, [np.nan, 2.0], [0.0])


# ------------------------------------------------------------------ batches


def test_seed001_batch_is_the_mean_of_its_samples_and_matches_torch():
    """Both of the tutorial's samples as one batch: its loss is the cost torch
    printed, its gradients are torch's (4 decimals) and the mean of the two
    samples' worked gradients."""
    spec = CORPUS["example_seed001"]
    params = [np.array(p) for p in SEED001_PARAMS]
    batch = worked_example(spec, params, SEED001_X, SEED001_Y)
    assert batch.rows == 2 and batch.output.shape == (2, 1)
    assert batch.loss == pytest.approx(SEED001_COST, rel=1e-7)
    per_sample = [w.grads() for w in _seed001_worked()]
    for ours, first, second, torch_grad in zip(
        batch.grads(), *per_sample, SEED001_TORCH_GRADS, strict=True
    ):
        np.testing.assert_allclose(ours, (first + second) / 2, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(ours, torch_grad, atol=5e-5)
    text = batch.text()
    assert "a batch of 2 rows" in text and "Gradients of the batch's loss" in text


@pytest.mark.parametrize("name", sorted(TRAINING_CORPUS))
def test_training_layers_batch_matches_loss_and_grad(name):
    """Batch norm couples the rows: the worked batch (statistics folded over the
    batch in the interpreter) against the generated module, with and without
    dropout masks."""
    data = TRAINING_CORPUS[name]
    spec = spec_from_dict({**data, "dtype": "float64"})
    module = derive.build(spec)
    rng = np.random.default_rng(4)
    params = module.init_params(4)
    for p in params:
        p += rng.normal(0.0, 0.2, p.shape)
    X = rng.normal(size=(3, *module.INPUT_SHAPE))
    Y = random_targets(module, 3, rng)
    masks = [(rng.uniform(size=(3, *shape)) < keep).astype(float)
             for _, shape, keep in module._MASKS]  # fmt: skip
    for given in (None, masks or None):
        worked = worked_example(spec, params, X, Y, masks=given)
        value, grads = module.loss_and_grad(params, X, Y, masks=given)
        assert worked.loss == pytest.approx(value, rel=1e-12)
        for ours, theirs in zip(worked.grads(), grads, strict=True):
            scale = max(np.max(np.abs(theirs)), 1e-300)
            assert np.max(np.abs(ours - theirs)) / scale <= 1e-11


def test_a_batch_norm_example_needs_a_batch_and_shows_it():
    data = TRAINING_CORPUS["vector_bn_dropout_residual"]
    spec = spec_from_dict({**data, "dtype": "float64"})
    module = derive.build(spec)
    params = module.init_params(0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 6))
    Y = np.eye(3)[[0, 1, 2, 0]]
    with pytest.raises(ValueError, match="normalizes over the batch"):
        worked_example(spec, params, X[0], Y[0])
    with pytest.raises(ValueError, match="two or more rows"):
        worked_example(spec, params, X[:1], Y[:1])
    text = worked_example(spec, params, X, Y, sample=10).text()
    assert "a batch of 4 rows (rows 10..13)" in text
    assert "Batch norm needs the whole batch" in text
    assert "mean2[c] = sum_r a1[c, r]/B" in text and "dvar2[c] = " in text
    assert "No dropout masks given" in text
