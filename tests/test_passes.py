"""Simplification you can see: each derived expression's passes, in order, with
the operation count after each (derive explain --passes)."""

from __future__ import annotations

import sympy as sp
from corpus import CORPUS, ROOT

import derive
from derive.cli import main
from derive.engine.derivation import Z, derive_activation
from derive.engine.simplify import DERIVATIVE_STRATEGY, LOSS_VALUE_STRATEGY
from derive.ops import ACTIVATIONS


def test_run_applies_the_passes_in_order_and_counts_operations():
    f = 1 / (1 + sp.exp(-Z))
    d = sp.diff(f, Z)
    result, trace = DERIVATIVE_STRATEGY.run(d)
    assert result == DERIVATIVE_STRATEGY.apply(d)
    assert [s.name for s in trace.steps] == [p.name for p in DERIVATIVE_STRATEGY.passes]
    assert trace.input == d and trace.input_ops == sp.count_ops(d)
    assert trace.output == result
    assert [s.ops for s in trace.steps] == [sp.count_ops(s.expr) for s in trace.steps]
    changed = [s.name for s in trace.steps if s.changed]
    assert "introduce_sigmoid" in changed and "introduce_softplus" not in changed


def test_the_derivation_keeps_the_trace_of_the_form_it_uses():
    act = derive_activation(ACTIVATIONS["sigmoid"], "sigmoid")
    traces = dict(act.passes)
    (z_label,) = [k for k in traces if k.startswith("f'(z)")]
    assert traces[z_label].output == act.derivative_z.expr
    (a_label,) = [k for k in traces if k.startswith("f'(a)")]
    assert traces[a_label].output == act.derivative_a.expr
    loss = derive.derive(CORPUS["example_xor"]).loss  # sigmoid + BCE
    labels = [label for label, _ in loss.passes]
    assert any("used by the code" in label for label in labels)
    assert any("not used: costlier" in label for label in labels)
    value = dict(loss.passes)["l(f(z)) as the code evaluates it"]
    assert value.strategy == LOSS_VALUE_STRATEGY.name
    assert [s.name for s in value.steps] == [p.name for p in LOSS_VALUE_STRATEGY.passes]


def test_explain_passes_shows_every_expression_pass_by_pass(capsys):
    text = str(derive.explain(CORPUS["example_two_circles"], passes=True))
    assert "Simplification, pass by pass" in text
    assert "Activation tanh (layer 1)" in text and "Loss binary_cross_entropy" in text
    assert "  input                    7 ops   exp(-z)/(1 + exp(-z))**2" in text
    assert "2. introduce_sigmoid     5 ops   -(-1 + sigmoid(z))*sigmoid(z)" in text
    assert "4. expand                3 ops   -y*z + softplus(z)" in text
    assert "The loss value strategy's passes:" in text
    assert "pass by pass" not in str(derive.explain(CORPUS["example_two_circles"]))
    spec = str(ROOT / "examples" / "two_circles.toml")
    assert main(["explain", spec, "--passes", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "```text\ninput" in out  # columns kept in a fenced block
    code = main(["explain", spec, "--passes", "--weights", "m.npz", "--data", "d.csv"])
    assert code == 2 and "--passes" in capsys.readouterr().err


def test_softmax_and_user_losses_have_traces():
    text = str(derive.explain(CORPUS["head_2_cross_entropy"], passes=True))
    assert "l of softmax(z), before log-sum-exp (loss value strategy)" in text
    text = str(derive.explain(CORPUS["head_7_expr"], passes=True))
    assert "Loss expr: log(cosh(y_hat - y)) on sigmoid" in text
