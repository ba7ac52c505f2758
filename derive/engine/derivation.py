"""The derivation engine: SymPy derives every chain-rule expression of a spec.

Input: a validated :class:`~derive.spec.Spec`. Output: a :class:`Derivation`,
plain frozen data. Each derived item is a :class:`Formula` holding its SymPy
expression and its text and LaTeX for explanations; the code is printed later,
by the lowering, with the printer of the module's dtype.

What is derived, never typed in:

* each activation's derivative ``f'(z)``, and, where the engine can find and
  prove one, the same derivative as a function of the output ``a = f(z)``;
* each loss's gradient ``dl/dy_hat``;
* the fused output delta ``dL/dz`` of (output activation, loss), in its
  cheapest proven form, and the loss value in a numerically stable form;
* every layer kind's backward rules, from its forward statements in index form
  (:mod:`derive.engine.adjoint`), each with its textbook gather form checked
  numerically against the scatter form the code runs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import sympy as sp

from ..errors import DerivationError
from ..layers import LAYER_KINDS, LayerKind
from ..layers.ir import B
from ..ops import Activation, Loss
from ..spec import Spec
from .adjoint import AdjointRule, GatherRule, derive_rules, gather
from .interpret import check_gather
from .notation import latex, text
from .simplify import (
    DERIVATIVE_STRATEGY,
    LOSS_VALUE_STRATEGY,
    Sigmoid,
    Softplus,
    Trace,
    introduce_sigmoid,
    introduce_softplus,
    simplified,
)
from .transforms import im2col, with_residual

# The scalar symbols every elementwise formula is written in.
Z = sp.Symbol("z", real=True)
A = sp.Symbol("a", real=True)
Y = sp.Symbol("y", real=True)
Y_HAT = sp.Symbol("y_hat", real=True)
#: log(sum_k exp(z_k)) of one sample's output row (evaluated max-shifted).
LSE = sp.Symbol("lse", real=True)


@dataclass(frozen=True)
class Formula:
    """One derived expression: SymPy form plus its printed text and LaTeX."""

    lhs_text: str
    lhs_latex: str
    expr: sp.Expr
    text: str
    latex: str

    @property
    def line(self) -> str:
        return f"{self.lhs_text} = {self.text}"

    @property
    def latex_line(self) -> str:
        return f"{self.lhs_latex} = {self.latex}"


def formula(lhs_text: str, lhs_latex: str, expr: sp.Expr) -> Formula:
    """A Formula in the project's one notation (:mod:`derive.engine.notation`):
    index sums and reads in textbook form, ``sum_k exp(z_k)``, never SymPy's
    ``Sum(...)`` or ``KroneckerDelta(i, j)``."""
    return Formula(lhs_text, lhs_latex, expr, text(expr, subscripts=True), latex(expr))


@dataclass(frozen=True)
class ActivationDerivation:
    """Everything derived for one activation op (shared by layers that use it)."""

    label: str
    kind: Literal["elementwise", "softmax"]
    init: str
    forward: Formula  # a = f(z)
    forward_stable: sp.Expr | None  # f(z) as the code evaluates it (elementwise only)
    derivative_z: Formula | None  # f'(z)
    derivative_a: Formula | None  # f' in terms of a (None if not found)
    derivative_form: Literal["a", "z", "jacobian"]
    jacobian: Formula | None  # softmax: da_i/dz_j
    #: what each simplification pass did to each derived form (explain --passes)
    passes: tuple[tuple[str, Trace], ...] = field(default=(), compare=False)

    @property
    def derivative(self) -> Formula | None:
        """The chosen form of f', which the code evaluates (hidden layers)."""
        return self.derivative_a if self.derivative_form == "a" else self.derivative_z


@dataclass(frozen=True)
class LossDerivation:
    """The loss, its gradient, and the fused output delta with the output op."""

    label: str
    reduce: Literal["mean", "sum"]
    targets: str
    per_element: Formula  # l(y_hat, y)
    gradient: Formula  # dl/dy_hat
    value: Formula  # the form evaluated for the loss value (z or a)
    needs_lse: bool  # the value uses the row's log-sum-exp
    output_delta: Formula  # per sample: dl_sample/dz for one output element
    delta_form: str  # which quantities the delta reads, e.g. "a, y"
    #: what each simplification pass did to each derived form (explain --passes)
    passes: tuple[tuple[str, Trace], ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class KindDerivation:
    """A layer kind's derived backward: the scatter rules the code runs and
    their textbook gather forms (one per rule), the largest difference between
    the two on the kind's check shapes."""

    kind: LayerKind
    rules: tuple[AdjointRule, ...]
    gathers: tuple[GatherRule, ...]
    check_error: float


@dataclass(frozen=True)
class LayerInfo:
    """One layer of the network: its kind's derivation, bound to this layer's
    attributes and input shape (``binding``: every symbol of the kind -> int)."""

    index: int  # 1-based
    kind: KindDerivation
    attrs: tuple[tuple[str, Any], ...]
    binding: tuple[tuple[sp.Symbol, int], ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    activation: ActivationDerivation | None
    is_output: bool
    #: the same kind as im2col + a matrix product (convolutions), derived too;
    #: the lowering picks one of the two forms per layer
    im2col: KindDerivation | None = None
    #: a residual connection: the layer whose output is added (0: the input)
    residual: int | None = None

    @property
    def n_in(self) -> int:
        return math.prod(self.input_shape)

    @property
    def n_out(self) -> int:
        return math.prod(self.output_shape)

    @property
    def name(self) -> str:
        return self.kind.kind.name


@dataclass(frozen=True)
class Derivation:
    """The derivation of one spec: per layer, the loss head, and the kinds used."""

    spec: Spec
    layers: tuple[LayerInfo, ...]
    loss: LossDerivation
    kinds: tuple[KindDerivation, ...]
    strategy: str

    def formulas(self) -> dict[str, str]:
        """Plain-text formulas by name (the generated module's ``FORMULAS``)."""
        from .notation import layer_formulas

        out: dict[str, str] = {}
        for layer in self.layers:
            out.update(layer_formulas(self, layer))
        n = len(self.layers)
        out["loss"] = (
            f"L = mean over rows of {self.loss.reduce} over outputs of "
            f"{self.loss.per_element.text}"
        )
        out[f"delta{n}"] = (
            f"delta{n} = dL/dz{n} = ({self.loss.output_delta.text}) / batch_size"
        )
        return out


# ---------------------------------------------------------------- activations


def _eval_points(expr: sp.Expr, points: np.ndarray) -> np.ndarray:
    fn = sp.lambdify(Z, expr, modules=["math"])
    out = []
    for p in points:
        try:
            out.append(float(fn(float(p))))
        except (ValueError, OverflowError, ZeroDivisionError, TypeError):
            out.append(math.nan)
    return np.array(out)


def _proved_equal(lhs: sp.Expr, rhs: sp.Expr) -> bool:
    """Symbolic proof that lhs == rhs (as functions of z)."""
    diff = sp.simplify(lhs - rhs)
    if diff == 0:
        return True
    return sp.simplify(diff.rewrite(sp.exp)) == 0


def _branch_output_form(
    f_branch: sp.Expr, d_branch: sp.Expr, points: np.ndarray
) -> sp.Expr | None:
    """d_branch as an expression in a = f_branch, proven symbolically, or None."""
    if not d_branch.has(Z):
        return d_branch
    # 1. Invert the forward where SymPy can: only when z occurs once, since
    #    solving e.g. a = z sigmoid(z) needs Lambert W and takes SymPy seconds.
    inverses = []
    if sum(1 for e in sp.preorder_traversal(f_branch) if e == Z) == 1:
        try:
            inverses = sp.solve(sp.Eq(A, f_branch), Z)
        except (NotImplementedError, ValueError, TypeError):
            inverses = []
    candidates = []
    for inv in inverses[:2]:
        cand = sp.simplify(d_branch.subs(Z, inv))
        if not cand.has(Z):
            candidates.append(cand)
    # 2. A polynomial ansatz of degree <= 2, fitted at sample points, then
    #    rounded to exact rationals and proven below.
    fa = _eval_points(f_branch, points)
    da = _eval_points(d_branch, points)
    ok = np.isfinite(fa) & np.isfinite(da)
    if ok.sum() >= 4:
        vander = np.vander(fa[ok], 3, increasing=True)
        coef, *_ = np.linalg.lstsq(vander, da[ok], rcond=None)
        if np.max(np.abs(vander @ coef - da[ok])) < 1e-9 * max(
            1.0, np.max(np.abs(da[ok]))
        ):
            exact = [sp.nsimplify(round(c, 10), rational=True) for c in coef]
            candidates.append(sum(c * A**k for k, c in enumerate(exact)))
    for cand in sorted(candidates, key=sp.count_ops):
        if _proved_equal(d_branch, cand.subs(A, f_branch)):
            return sp.factor(cand)
    return None


def _output_form(f: sp.Expr, d: sp.Expr) -> sp.Expr | None:
    """Express f'(z) = d in terms of a = f(z), per Piecewise branch; None if not found.

    Branch conditions ``z > c`` (or ``>=``) are rewritten as ``a > f(c)``, which
    is checked on a dense grid including ``c`` itself.
    """
    grid = np.concatenate([np.linspace(-4, 4, 81), [-0.3, 0.0, 0.7]])
    if not isinstance(f, sp.Piecewise) and not isinstance(d, sp.Piecewise):
        return _branch_output_form(f, d, grid[(grid != 0) | True])
    if not (isinstance(f, sp.Piecewise) and isinstance(d, sp.Piecewise)):
        return None
    if [c for _, c in f.args] != [c for _, c in d.args]:
        return None
    branches = []
    taken = np.zeros_like(grid, dtype=bool)
    f_fn = sp.lambdify(Z, f, modules=["math"])  # on scalars; "numpy" imports 0.15 s
    for (fb, cond), (db, _) in zip(f.args, d.args, strict=True):
        if cond is sp.true:
            mask = ~taken
            a_cond = sp.true
        else:
            if not (isinstance(cond, sp.core.relational.Relational) and cond.lhs == Z
                    and cond.rhs.is_number and cond.rel_op in (">", ">=")):  # fmt: skip
                return None
            mask = (
                (grid > float(cond.rhs))
                if cond.rel_op == ">"
                else (grid >= float(cond.rhs))
            )
            mask &= ~taken
            threshold = sp.nsimplify(f.subs(Z, cond.rhs))
            a_cond = A > threshold if cond.rel_op == ">" else A >= threshold
            # The rewritten condition must select exactly the same points.
            a_vals = np.array([float(f_fn(float(p))) for p in grid])
            a_mask = (
                (a_vals > float(threshold))
                if cond.rel_op == ">"
                else (a_vals >= float(threshold))
            )
            if not np.array_equal(a_mask & ~taken, mask):
                return None
        form = _branch_output_form(fb, db, grid[mask])
        if form is None:
            return None
        branches.append((form, a_cond))
        taken |= mask
    return sp.Piecewise(*branches)


def _ops_cost(expr: sp.Expr) -> int:
    return int(sp.count_ops(expr)) + 8 * len(expr.atoms(sp.Function))


@functools.lru_cache(maxsize=256)
def derive_activation(
    op: Activation, label: str, params: tuple[tuple[str, float], ...] = ()
) -> ActivationDerivation:
    """Derive an activation's forward and derivative forms (cached per op).

    ``params`` are the op's parameter values; they enter as exact rationals.
    """
    if op.kind == "softmax":
        return _derive_softmax(op, label)
    f = op.forward(Z, **_exact(params))
    if not isinstance(f, sp.Expr) or f.free_symbols - {Z}:
        raise DerivationError(f"activation {label} must be an expression in x only")
    d_raw = sp.diff(f, Z)
    if d_raw.has(sp.Derivative, sp.Subs):
        raise DerivationError(f"SymPy cannot differentiate activation {label}: {d_raw}")
    d_z, z_trace = DERIVATIVE_STRATEGY.run(d_raw)
    passes = [("f'(z), from sympy.diff of the forward", z_trace)]
    d_a = _output_form(sp.piecewise_fold(f), sp.piecewise_fold(simplified(d_raw)))
    if d_a is not None:
        d_a, a_trace = DERIVATIVE_STRATEGY.run(d_a)
        passes.append(("f'(a), from the proved form in a = f(z)", a_trace))
    use_a = d_a is not None and _ops_cost(d_a) <= _ops_cost(d_z)
    stable_forward, forward_trace = DERIVATIVE_STRATEGY.run(f)
    passes.append(("f(z) as the code evaluates it", forward_trace))
    return ActivationDerivation(
        label=label,
        kind="elementwise",
        init=op.init,
        forward=formula("a", "a", f),
        forward_stable=stable_forward,
        derivative_z=formula("f'(z)", "f'(z)", d_z),
        derivative_a=formula("f'(a)", "f'(a)", d_a) if d_a is not None else None,
        derivative_form="a" if use_a else "z",
        jacobian=None,
        passes=tuple(passes),
    )


def _exact(params: tuple[tuple[str, float], ...]) -> dict[str, sp.Expr]:
    return {k: sp.nsimplify(v, rational=True) for k, v in params}


# Index symbols for the vector (softmax) and dense derivations.
_i, _j, _k, _p, _q = sp.symbols("i j k p q", integer=True, nonnegative=True)
_n = sp.Symbol("n", integer=True, positive=True)


def _strip_range_conditions(expr: sp.Expr) -> sp.Expr:
    """Evaluate sums over index ranges; every free index is in range by
    construction, so Piecewise range guards SymPy adds take their first branch."""
    for _ in range(6):
        new = expr.doit()
        new = new.replace(
            lambda e: (
                isinstance(e, sp.Piecewise)
                and all(
                    isinstance(c, sp.core.relational.Relational | sp.And)
                    or c is sp.true
                    for _, c in e.args
                )
            ),  # fmt: skip
            lambda e: e.args[0][0],
        )
        if new == expr:
            break
        expr = new
    return expr


def _derive_softmax(op: Activation, label: str) -> ActivationDerivation:
    zb = sp.IndexedBase("z")
    ab = sp.IndexedBase("a")
    a_i = op.forward(zb, _i, _k, _n)
    jac = _strip_range_conditions(sp.diff(a_i, zb[_j]))
    denominator = sp.Sum(sp.exp(zb[_k]), (_k, 0, _n - 1))
    # Rewrite exp(z_m) / S as a_m: the Jacobian in terms of the outputs.
    s = sp.Symbol("S", positive=True)
    jac_s = sp.expand(jac.subs(denominator, s))
    jac_a = jac_s.replace(
        lambda e: isinstance(e, sp.exp) and isinstance(e.args[0], sp.Indexed),
        lambda e: ab[e.args[0].indices[0]] * s,
    )
    jac_a = sp.simplify(jac_a)
    if jac_a.has(s) or jac_a.has(zb):
        raise DerivationError(f"could not express the {label} Jacobian in its outputs")
    return ActivationDerivation(
        label=label,
        kind="softmax",
        init=op.init,
        forward=formula("a_i", "a_i", a_i),
        forward_stable=None,
        derivative_z=None,
        derivative_a=None,
        derivative_form="jacobian",
        jacobian=formula("da_i/dz_j", r"\frac{\partial a_i}{\partial z_j}", jac_a),
    )


# ----------------------------------------------------------------------- loss


def _contains_stable_helpers(expr: sp.Expr) -> bool:
    return expr.has(Softplus) or expr.has(Sigmoid) or expr.has(LSE)


@functools.lru_cache(maxsize=256)
def derive_loss(
    loss: Loss,
    loss_label: str,
    loss_params: tuple[tuple[str, float], ...],
    act: ActivationDerivation,
    act_op: Activation,
    act_params: tuple[tuple[str, float], ...],
    n_out: int,
) -> LossDerivation:
    """Derive the loss gradient and the fused output delta for an output op."""
    per_element = loss.forward(Y_HAT, Y, **_exact(loss_params))
    gradient, gradient_trace = DERIVATIVE_STRATEGY.run(sp.diff(per_element, Y_HAT))
    passes = [("dl/dy_hat, from sympy.diff of the loss", gradient_trace)]
    scale = sp.Rational(1, n_out) if loss.reduce == "mean" else sp.Integer(1)
    if act.kind == "softmax":
        value, delta, value_trace = _softmax_head(loss, loss_params, act_op)
        passes.append(("l of softmax(z), before log-sum-exp", value_trace))
        value_form = value
        needs_lse = True
        delta = delta * scale
    else:
        f = act_op.forward(Z, **_exact(act_params))
        composed = per_element.subs(Y_HAT, f)
        stable_value, value_trace = LOSS_VALUE_STRATEGY.run(composed)
        if _contains_stable_helpers(stable_value):
            value_form = stable_value  # evaluated from z without overflow
            passes.append(("l(f(z)) as the code evaluates it", value_trace))
        else:
            value_form, a_trace = DERIVATIVE_STRATEGY.run(per_element.subs(Y_HAT, A))
            passes.append(("l(f(z)): no stable form in z (not used)", value_trace))
            passes.append(("l(a) as the code evaluates it", a_trace))
        needs_lse = False
        # Fused delta: the chain rule done symbolically, two ways; keep the cheaper.
        delta_z, z_trace = DERIVATIVE_STRATEGY.run(sp.diff(composed, Z))
        candidates = [(delta_z, "dl/dz from sympy.diff of l(f(z))", z_trace)]
        if act.derivative_a is not None:
            dl_da = sp.diff(per_element, Y_HAT).subs(Y_HAT, A)
            chained = sp.piecewise_fold(dl_da * act.derivative_a.expr)
            via_a, a_trace = DERIVATIVE_STRATEGY.run(sp.factor(sp.cancel(chained))
                                                     if not chained.has(sp.Piecewise)
                                                     else chained)  # fmt: skip
            candidates.append((via_a, "dl/dz as dl/dy_hat * f'(a)", a_trace))
        chosen = min(candidates, key=lambda c: _ops_cost(c[0]))
        for form, label, trace in candidates:
            used = "used by the code" if form is chosen[0] else "not used: costlier"
            passes.append((f"{label} ({used})", trace))
        delta = chosen[0] * scale
        delta = sp.factor_terms(delta) if not delta.has(sp.Piecewise) else delta
    value_scaled = value_form * scale
    reads = ", ".join(str(s) for s in sorted(delta.free_symbols, key=str))
    return LossDerivation(
        label=loss_label,
        reduce=loss.reduce,
        targets=loss.targets,
        per_element=formula("l", "l", per_element),
        gradient=formula("dl/dy_hat", r"\frac{\partial l}{\partial \hat{y}}", gradient),
        value=formula("l", "l", value_scaled),
        needs_lse=needs_lse,
        output_delta=formula("dl/dz", r"\frac{\partial l}{\partial z}", delta),
        delta_form=reads,
        passes=tuple(passes),
    )


def _softmax_head(
    loss: Loss, loss_params: tuple[tuple[str, float], ...], act_op: Activation
) -> tuple[sp.Expr, sp.Expr, Trace]:
    """Loss value per element and the fused delta for a softmax output, derived
    in index form: L = sum_i l(a_i, y_i), a_i = softmax(z)_i."""
    zb, yb, ab = sp.IndexedBase("z"), sp.IndexedBase("y"), sp.IndexedBase("a")
    a_i = act_op.forward(zb, _i, _k, _n)
    per_element = loss.forward(a_i, yb[_i], **_exact(loss_params))
    sample_loss = sp.Sum(per_element, (_i, 0, _n - 1))
    denominator = sp.Sum(sp.exp(zb[_k]), (_k, 0, _n - 1))
    # Value: log(softmax) = z - log-sum-exp; the LSE is evaluated max-shifted.
    element, trace = LOSS_VALUE_STRATEGY.run(per_element)
    element = sp.expand(element.subs(sp.log(denominator), LSE))
    if element.has(sp.Sum) or element.has(sp.exp):
        raise DerivationError(f"no stable form for {loss.name} on {act_op.name}")
    value = element.subs({zb[_i]: Z, yb[_i]: Y})
    # Delta: d/dz_j of the whole sample loss.
    d = _strip_range_conditions(sp.diff(sample_loss, zb[_j]))
    s = sp.Symbol("S", positive=True)
    d = sp.expand(sp.expand_log(d, force=True).subs(denominator, s))
    d = d.replace(
        lambda e: isinstance(e, sp.exp) and isinstance(e.args[0], sp.Indexed),
        lambda e: ab[e.args[0].indices[0]] * s,
    )
    d = sp.simplify(_strip_range_conditions(sp.expand(d)))
    if loss.targets == "distribution":
        # Targets are distributions: sum_i y_i = 1 (checked at the module boundary).
        d = d.replace(
            lambda e: (
                isinstance(e, sp.Sum)
                and isinstance(e.function, sp.Indexed)
                and e.function.base == yb
            ),
            lambda e: sp.S.One,
        )
    d = sp.simplify(d)
    if d.has(sp.Sum) or d.has(s) or d.has(zb):
        raise DerivationError(
            f"could not reduce the {loss.name} delta to elementwise form: {d}"
        )
    delta = d.subs({ab[_j]: A, yb[_j]: Y})
    return value, delta, trace


# ---------------------------------------------------------------------- layers


#: The batch size of the numeric checks of statements that reduce over a batch.
CHECK_BATCH = 3


@functools.lru_cache(maxsize=64)
def derive_kind(kind: LayerKind) -> KindDerivation:
    """A layer kind's backward rules, their gather forms, and the numeric check
    of the two forms on the kind's check shapes (``kind.checks``)."""
    rules = derive_rules(kind)
    taken = {str(s) for s in kind.bind} | {str(s) for s in kind.input}
    gathers = tuple(gather(r, kind.tensor(r.target).shape, taken) for r in rules)
    worst = 0.0
    for attrs, input_shape in kind.checks:
        binding = {**kind.binding(attrs, input_shape), B: CHECK_BATCH}
        for rule, form in zip(rules, gathers, strict=True):
            error = check_gather([rule], form, kind, binding)
            if not error <= 1e-9:
                raise DerivationError(
                    f"layer kind {kind.name}: the gather form of d{rule.target} "
                    f"differs from the scatter rule by {error:.3g} at {attrs}, "
                    f"input {input_shape}"
                )
            worst = max(worst, error)
    return KindDerivation(kind, rules, gathers, worst)


# ---------------------------------------------------------------------- entry


def derive(spec: Spec) -> Derivation:
    """Derive every expression the spec's network needs (see module docstring)."""
    layers = []
    shapes = spec.shapes  # per sample: the input's, then each layer's output
    kinds: dict[int, KindDerivation] = {}
    n_layers = len(spec.layers)
    for idx, layer in enumerate(spec.layers):
        kind = LAYER_KINDS[layer.kind].resolve(dict(layer.attrs))
        if layer.residual is not None:
            kind = with_residual(kind)
        if id(kind) not in kinds:
            kinds[id(kind)] = derive_kind(kind)
        binding = kind.binding(dict(layer.attrs), shapes[idx])
        act = None
        if layer.activation is not None:
            op = spec.activation_def(idx)
            ref = layer.activation
            # a user expression's constants are in its forward already
            act = derive_activation(
                op, ref.label, ref.params if ref.expr is None else ()
            )
        windows = im2col(kind)
        layers.append(
            LayerInfo(
                index=idx + 1,
                kind=kinds[id(kind)],
                attrs=layer.attrs,
                binding=tuple(sorted(binding.items(), key=lambda kv: str(kv[0]))),
                input_shape=shapes[idx],
                output_shape=shapes[idx + 1],
                activation=act,
                is_output=idx == n_layers - 1,
                im2col=derive_kind(windows) if windows is not None else None,
                residual=layer.residual,
            )
        )
    out_layer = spec.layers[-1]
    assert out_layer.activation is not None and layers[-1].activation is not None
    loss = derive_loss(
        spec.loss_def(),
        spec.loss.label,
        spec.loss.params if spec.loss.expr is None else (),
        layers[-1].activation,
        spec.activation_def(n_layers - 1),
        out_layer.activation.params if out_layer.activation.expr is None else (),
        layers[-1].n_out,
    )
    return Derivation(
        spec=spec,
        layers=tuple(layers),
        loss=loss,
        kinds=tuple(kinds.values()),
        strategy=DERIVATIVE_STRATEGY.describe(),
    )


__all__ = [
    "A",
    "LSE",
    "Y",
    "Y_HAT",
    "Z",
    "ActivationDerivation",
    "Derivation",
    "Formula",
    "KindDerivation",
    "LayerInfo",
    "LossDerivation",
    "derive",
    "derive_activation",
    "derive_kind",
    "derive_loss",
    "introduce_sigmoid",
    "introduce_softplus",
]
