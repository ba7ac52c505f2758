"""The engine's proofs that derived backward rules equal textbook closed forms.

Every claim of every registered layer kind (and its variants) is proved; the
proof fails for claims that are wrong in the ways hand derivations go wrong (a
dropped term, the centred values for the normalized ones, N - 1 for N, a sign)
and for a derivation with a rule left out; and the composed derived expression
the proof starts from agrees numerically with the derived scatter rules run by
the interpreter, so the composition is not itself a source of agreement.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import sympy as sp

from derive.engine.derivation import derive_kind
from derive.engine.interpret import run_rules
from derive.engine.proofs import kind_proofs, prove
from derive.layers import LAYER_KINDS
from derive.layers.ir import B, integer_symbols

BATCH_NORM = LAYER_KINDS["batch_norm"]
BATCH_NORM_PLAIN = BATCH_NORM.resolve({"affine": False})
LAYER_NORM = LAYER_KINDS["layer_norm"]
LAYER_NORM_PLAIN = LAYER_NORM.resolve({"elementwise_affine": False})
# batch norm's symbols, as derive/layers/norm.py makes them (SymPy symbols are
# equal by name and assumptions; test_the_right_claim_in_these_symbols_is_proved
# checks that these are the kind's own)
c, r, s = integer_symbols("c r s")
eps = sp.Symbol("epsilon", positive=True)
dy, gamma, var, xc, xhat = (
    sp.IndexedBase(name) for name in ("dy", "gamma", "var", "xc", "xhat")
)


def _all_kinds():
    for kind in LAYER_KINDS.values():
        yield kind
        for _, _, variant in kind.variants:
            yield variant


CLAIMED = [k for k in _all_kinds() if k.claims]


def test_the_norm_kinds_state_their_textbook_forms():
    assert {id(k) for k in CLAIMED} == {
        id(BATCH_NORM),
        id(BATCH_NORM_PLAIN),
        id(LAYER_NORM),
        id(LAYER_NORM_PLAIN),
    }


@pytest.mark.parametrize("kind", CLAIMED, ids=lambda k: f"{k.name}{len(k.tensors)}")
def test_every_claim_is_proved(kind):
    proofs = kind_proofs(kind, derive_kind(kind).gathers)
    assert proofs and all(p.holds for p in proofs)
    for proof in proofs:
        assert "mean" in proof.expanded and "xc" in proof.expanded
        assert proof.kept == ("var",)


N = sp.Symbol("N", integer=True, positive=True)
SIGMA = sp.sqrt(var[c] + eps)


def _sum(e):
    return sp.Sum(e, (s, 0, N - 1))


WRONG = {
    "no sum dy": gamma[c]
    / (N * SIGMA)
    * (N * dy[c, r] - xhat[c, r] * _sum(dy[c, s] * xhat[c, s])),
    "xc for xhat": gamma[c]
    / (N * SIGMA)
    * (N * dy[c, r] - _sum(dy[c, s]) - xc[c, r] * _sum(dy[c, s] * xhat[c, s])),
    "N - 1 for N": gamma[c]
    / ((N - 1) * SIGMA)
    * (N * dy[c, r] - _sum(dy[c, s]) - xhat[c, r] * _sum(dy[c, s] * xhat[c, s])),
    "a sign": gamma[c]
    / (N * SIGMA)
    * (N * dy[c, r] + _sum(dy[c, s]) - xhat[c, r] * _sum(dy[c, s] * xhat[c, s])),
    "no gamma": 1
    / (N * SIGMA)
    * (N * dy[c, r] - _sum(dy[c, s]) - xhat[c, r] * _sum(dy[c, s] * xhat[c, s])),
}


def test_the_right_claim_in_these_symbols_is_proved():
    """The claim written in this file's symbols is proved, so a wrong claim
    below fails for its error, not for symbols the kind does not use."""
    (claim,) = BATCH_NORM.claims
    right = (
        gamma[c]
        / (N * SIGMA)
        * (N * dy[c, r] - _sum(dy[c, s]) - xhat[c, r] * _sum(dy[c, s] * xhat[c, s]))
    )
    gathers = derive_kind(BATCH_NORM).gathers
    assert claim.index == (c, r)
    assert prove(BATCH_NORM, gathers, replace(claim, value=right)).holds


@pytest.mark.parametrize("wrong", sorted(WRONG))
def test_a_wrong_claim_is_not_proved(wrong):
    (claim,) = BATCH_NORM.claims
    gathers = derive_kind(BATCH_NORM).gathers
    assert not prove(BATCH_NORM, gathers, replace(claim, value=WRONG[wrong])).holds


def test_a_derivation_missing_a_rule_is_not_proved():
    """The mean's contribution to dx left out (the classic slip of a hand
    derivation that forgets mean depends on x)."""
    (claim,) = BATCH_NORM.claims
    gathers = tuple(
        g
        for g in derive_kind(BATCH_NORM).gathers
        if not (g.target == "x" and "dmean" in str(g.value))
    )
    assert len(gathers) == len(derive_kind(BATCH_NORM).gathers) - 1
    assert not prove(BATCH_NORM, gathers, claim).holds


@pytest.mark.parametrize("kind", CLAIMED, ids=lambda k: f"{k.name}{len(k.tensors)}")
def test_the_composed_rules_equal_the_scatter_rules_numerically(kind):
    """Evaluate the composition the proof starts from at random tensors and
    compare it with the interpreter's run of the derived scatter rules."""
    kd = derive_kind(kind)
    (proof,) = kind_proofs(kind, kd.gathers)
    rng = np.random.default_rng(0)
    channels, count = 2, 5
    if kind.name == "batch_norm":
        binding = {kind.input[0]: channels, kind.input[1]: count, B: 1}
        shape = (channels, count)
    else:
        binding = {kind.input[0]: count}
        shape = (count,)
    binding.update({symbol: sp.Float(1e-3) for symbol in kind.bind})
    arrays = {}
    for tensor in kind.tensors:
        extent = tuple(int(sp.sympify(e).xreplace(binding)) for e in tensor.shape)
        arrays[tensor.name] = rng.uniform(0.5, 1.5, extent)
    arrays["dy"] = rng.normal(size=shape)
    adjoints = run_rules(kind, kd.rules, binding, arrays)
    # the proof reads a channel's values as one axis of N (batch norm: B = 1)
    expr = proof.derived.xreplace({**binding, N: count})
    for index in np.ndindex(shape):
        at = dict(zip(proof.claim.index, index, strict=True))
        numeric = expr.xreplace(at).doit()
        numeric = numeric.replace(
            lambda e: isinstance(e, sp.Indexed),
            lambda e: sp.Float(
                arrays[str(e.base.label)][tuple(int(i) for i in e.indices)]
            ),
        )
        assert float(numeric) == pytest.approx(adjoints["dx"][index], rel=1e-12)
