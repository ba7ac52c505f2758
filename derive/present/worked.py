"""A worked example: the derivation with the numbers of one sample, step by step.

``worked_example(spec, params, x, y)`` evaluates the spec's
:class:`~derive.engine.derivation.Derivation` at one sample: each layer's
forward statements and derived backward rules through the IR interpreter
(:mod:`derive.engine.interpret`), each activation's ``f(z)`` and ``f'(z)``, the
loss value and the fused output delta through their SymPy expressions. It
returns a :class:`WorkedExample`: every ``z``, ``a``, ``delta`` and gradient with
the formula each came from, rendered as plain text, Markdown or LaTeX like a
worked example in a textbook.

The numbers never come from a generated module (the formulas are evaluated with
``sympy.lambdify`` and NumPy; nothing is passed to ``eval``), so the tests can
compare this path with ``loss_and_grad``. Shapes follow the module contract:
dense ``W_l`` is (n_l, n_{l-1}), conv ``W_l`` (out, in, k...), biases (out,).
All arithmetic is float64, whatever the spec's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import sympy as sp

from ..engine.derivation import (
    LSE,
    Y_HAT,
    A,
    ActivationDerivation,
    Derivation,
    Z,
    derive,
)
from ..engine.derivation import Y as Y_SYMBOL
from ..engine.interpret import run_forward, run_rules
from ..engine.notation import (
    bound_gather,
    bound_statement,
    gather_latex,
    gather_text,
    layer_names,
    statement_latex,
    statement_text,
)
from ..layers.ir import B, LayerKind
from ..spec import Spec
from .document import Document, Rendered

#: Substituted matrices are printed only up to this many entries; larger layers
#: show the result alone (a 16x32 weight matrix is not readable inline).
MAX_INLINE_ENTRIES = 24
#: Tensors of conv and pooling layers are printed whole up to this many entries;
#: larger ones show their first channel and the shape.
MAX_TENSOR_ENTRIES = 64


# ------------------------------------------------------------------ the data


@dataclass(frozen=True, eq=False)
class LayerStep:
    """The numbers of one layer for one sample (shapes per sample, no batch
    axis), or for a batch (batched arrays with the rows on axis 0).

    ``z`` is the kind's output before the activation (None for a kind without
    one, such as pooling: then ``a`` is that output); ``delta`` is the adjoint
    of ``z`` (or of ``a``); ``backprop`` the adjoint of ``a`` before f' is applied
    (hidden layers with an activation).
    """

    index: int  # 1-based
    kind: str
    activation: str | None  # the activation's label, e.g. "relu"
    is_output: bool
    params: tuple[tuple[str, np.ndarray], ...]  # (name, value), e.g. ("W1", ...)
    input: np.ndarray  # a_{l-1}; a_0 = x
    z: np.ndarray | None
    a: np.ndarray
    work: tuple[tuple[str, np.ndarray], ...]  # the other statements' targets
    adjoints: tuple[tuple[str, np.ndarray], ...]  # theirs (e.g. dvar2), in rule order
    statements: tuple[tuple[str, str], ...]  # forward in index form (text, LaTeX)
    rules: tuple[tuple[str, str, str], ...]  # (adjoint, gather text, LaTeX)
    forward_text: str | None  # f(z), derived form
    forward_latex: str | None
    derivative: np.ndarray | None  # f'(z_l); None for a softmax output
    derivative_text: str | None
    derivative_latex: str | None
    derivative_a_text: str | None  # f' in terms of a, when the derivation found one
    backprop: np.ndarray | None
    delta: np.ndarray
    grads: tuple[tuple[str, np.ndarray], ...]  # (name, gradient), params' order

    def _param(self, prefix: str) -> np.ndarray:
        return dict(self.params)[f"{prefix}{self.index}"]

    @property
    def weight(self) -> np.ndarray:
        return self._param("W")

    @property
    def bias(self) -> np.ndarray:
        return self._param("b")

    @property
    def grad_weight(self) -> np.ndarray:
        return dict(self.grads)[f"grad_W{self.index}"]

    @property
    def grad_bias(self) -> np.ndarray:
        return dict(self.grads)[f"grad_b{self.index}"]


@dataclass(frozen=True, eq=False)
class LossStep:
    """The loss head of one sample: value, loss gradient and fused output delta."""

    label: str
    reduce: Literal["mean", "sum"]
    per_element_text: str  # l(y_hat, y)
    per_element_latex: str
    value_text: str  # the stable form evaluated (includes 1/n_out of a mean)
    value_latex: str
    value: float  # per-sample loss
    gradient_text: str  # dl/dy_hat
    gradient_latex: str
    gradient: np.ndarray | None  # dl/dy_hat at y_hat = a_L; None for softmax
    scale: float  # 1/n_out for a mean over outputs, 1 for a sum
    jacobian_text: str | None  # softmax: da_i/dz_j
    delta_text: str  # the derived fused delta dl/dz
    delta_latex: str
    delta_reads: str  # which quantities the delta reads, e.g. "a, y"


@dataclass(frozen=True, eq=False)
class WorkedExample(Rendered):
    """One sample's (or one batch's) forward and backward pass with every
    number and formula.

    ``layers[l - 1]`` holds layer ``l``; ``loss`` is the sample's loss (a
    batch's: the mean over its rows) and ``grads()`` its gradients in the order
    of the params: what the generated module's ``loss_and_grad`` returns for
    these rows. ``rows`` is None for one sample; for a batch, every batched
    array has the rows on axis 0 (statistics and gradients do not).
    """

    spec: Spec
    x: np.ndarray  # the input, per-sample shape (a batch: (rows, ...))
    y: np.ndarray  # (n_out,) (a batch: (rows, n_out))
    layers: tuple[LayerStep, ...]
    head: LossStep
    sample: int | None = None
    rows: int | None = None
    masked: bool = False  # dropout masks given (else no dropout)

    @property
    def loss(self) -> float:
        return self.head.value

    @property
    def output(self) -> np.ndarray:
        """The network's output a_L, (n_out,) (a batch: (rows, n_out))."""
        return self.layers[-1].a

    def grads(self) -> list[np.ndarray]:
        """The gradients in the params' order ([grad_W1, grad_b1, ...])."""
        return [g for layer in self.layers for _, g in layer.grads]

    def document(self) -> Document:
        return _render(self)


# --------------------------------------------------------- numeric formulas


def _sigmoid(u: float) -> float:
    if u >= 0:
        return 1.0 / (1.0 + math.exp(-u))
    e = math.exp(u)
    return e / (1.0 + e)


def _softplus(u: float) -> float:
    return max(u, 0.0) + math.log1p(math.exp(-abs(u)))


def _heaviside(u: float, at_zero: float = 0.5) -> float:
    return 1.0 if u > 0 else 0.0 if u < 0 else float(at_zero)


# The derivation's stable helpers are SymPy Function classes with no numeric
# implementation of their own; lambdify looks them up here by name.
_HELPERS: dict[str, Callable[..., float]] = {
    "Sigmoid": _sigmoid,
    "Softplus": _softplus,
    "Heaviside": _heaviside,
}


def _scalar_function(
    expr: sp.Expr, symbols: Sequence[sp.Symbol]
) -> Callable[..., float]:
    """``expr`` as a float function of ``symbols``, evaluated in scalar math.

    Scalar ``math`` keeps Piecewise, Max/Min and the helpers exact per element;
    a domain error or overflow becomes nan rather than an exception, since the
    worked example only reports what the formula gives.
    """
    fn = sp.lambdify(list(symbols), expr, modules=[_HELPERS, "math"])

    def call(*args: float) -> float:
        try:
            return float(fn(*args))
        except (OverflowError, ValueError, ZeroDivisionError):
            return math.nan

    return call


def _elementwise(
    expr: sp.Expr, symbols: Sequence[sp.Symbol], *arrays: np.ndarray
) -> np.ndarray:
    """Evaluate ``expr`` at each element of the given same-shape arrays."""
    fn = _scalar_function(expr, symbols)
    shape = np.shape(arrays[0])
    flat = [np.ravel(a) for a in arrays]
    return np.array([fn(*map(float, row)) for row in zip(*flat, strict=True)]).reshape(
        shape
    )


def _softmax(forward: sp.Expr, z: np.ndarray) -> np.ndarray:
    """Evaluate the index-form softmax ``exp(z[i]) / Sum(exp(z[k]))`` at ``z``.

    It is evaluated at ``z - max(z)``: softmax is invariant under adding a
    constant to every logit, and the shift keeps exp from overflowing.
    """
    n = len(z)
    by_name = {s.name: s for s in forward.free_symbols if isinstance(s, sp.Symbol)}
    explicit = forward.subs(by_name["n"], n).doit()
    (base,) = {e.base for e in explicit.atoms(sp.Indexed)}
    logits = sp.symbols(f"z_0:{n}", real=True)
    to_logits = {base[k]: logits[k] for k in range(n)}
    shifted = [float(v) for v in z - np.max(z)]
    outputs = []
    for i in range(n):
        component = explicit.subs(by_name["i"], i).xreplace(to_logits)
        outputs.append(_scalar_function(component, logits)(*shifted))
    return np.array(outputs)


def _log_sum_exp(z: np.ndarray) -> float:
    """``lse = log(sum_k exp(z_k))`` (the derivation's LSE symbol), max-shifted."""
    top = float(np.max(z))
    return top + math.log(float(np.sum(np.exp(z - top))))


# --------------------------------------------------------------- the steps


def _param_shapes(d: Derivation) -> list[tuple[str, tuple[int, ...]]]:
    shapes = []
    for layer in d.layers:
        kind = layer.kind.kind
        binding = dict(layer.binding)
        for tensor in kind.param_tensors:
            shape = tuple(int(sp.sympify(e).xreplace(binding)) for e in tensor.shape)
            shapes.append((f"{tensor.name}{layer.index}", shape))
    return shapes


def _check_inputs(
    d: Derivation, params: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The inputs as a batch (rows, *input shape), the targets (rows, n_out), and
    whether they were given as a batch, after checking every shape."""
    spec = d.spec
    shapes = _param_shapes(d)
    if len(params) != len(shapes):
        names = ", ".join(n for n, _ in shapes)
        raise ValueError(
            f"params must be [{names}] ({len(shapes)} arrays) for spec "
            f"'{spec.name}', got {len(params)}"
        )
    for (name, shape), p in zip(shapes, params, strict=True):
        if np.shape(p) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {np.shape(p)}")
    n_in, n_out = spec.n_inputs, d.layers[-1].n_out
    rank = len(spec.input_shape)
    batch = x.ndim == rank + 1 or (x.ndim == 2 and rank > 1 and x.shape[1] == n_in)
    if batch:
        if x[0].size != n_in:
            raise ValueError(
                f"each row of x must hold {n_in} input values, got shape {x.shape}"
            )
        rows = x.shape[0]
        y = y.reshape(rows, -1) if y.size == rows * n_out else y
        if y.shape != (rows, n_out):
            raise ValueError(
                f"y must hold {n_out} target values per row of x ({rows}, "
                f"{n_out}), got shape {y.shape}"
            )
    else:
        if x.size != n_in:
            raise ValueError(f"x must hold {n_in} input values, got shape {x.shape}")
        y = y.reshape(-1)
        if y.shape != (n_out,):
            raise ValueError(f"y must hold {n_out} target values, got shape {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x and y must be finite numbers (found NaN or inf)")
    X = x.reshape(-1, *spec.input_shape)
    if _coupled_layers(d) and X.shape[0] < 2:
        raise ValueError(
            f"{_coupled_layers(d)[0]} normalizes over the batch: give x as a batch "
            "of two or more rows (rows, *input) and y as (rows, n_out)"
        )
    return X, y.reshape(X.shape[0], n_out), batch


def _coupled(kind: LayerKind) -> bool:
    """Whether a kind's statements couple the rows of a batch (statistics)."""
    return any(t.role == "stat" for t in kind.tensors)


def _coupled_layers(d: Derivation) -> list[str]:
    return [f"layer {ly.index} ({ly.kind.kind.name})" for ly in d.layers
            if _coupled(ly.kind.kind)]  # fmt: skip


def _activate(act: ActivationDerivation, z: np.ndarray) -> np.ndarray:
    if act.kind == "softmax":
        return _softmax(act.forward.expr, z)
    return _elementwise(act.forward.expr, [Z], z)


def _derivative(act: ActivationDerivation | None, z: np.ndarray) -> np.ndarray | None:
    if act is None or act.derivative_z is None:
        return None
    return _elementwise(act.derivative_z.expr, [Z], z)


def _loss_step(d: Derivation, z: np.ndarray, a: np.ndarray, y: np.ndarray) -> LossStep:
    """The loss head: z, a, y are the output layer's (rows, n_out); the value is
    the mean over the rows of each row's loss."""
    loss = d.loss
    values = []
    for z_row, a_row, y_row in zip(z, a, y, strict=True):
        lse = _log_sum_exp(z_row) if loss.needs_lse else math.nan
        per_output = _elementwise(loss.value.expr, [Z, A, Y_SYMBOL, LSE], z_row, a_row,
                                  y_row, np.full_like(z_row, lse))  # fmt: skip
        values.append(float(np.sum(per_output)))
    out_act = d.layers[-1].activation
    assert out_act is not None
    gradient = None
    if out_act.kind == "elementwise":  # softmax couples outputs: no per-output chain
        gradient = _elementwise(loss.gradient.expr, [Y_HAT, Y_SYMBOL], a, y)
    return LossStep(
        label=loss.label,
        reduce=loss.reduce,
        per_element_text=loss.per_element.text,
        per_element_latex=loss.per_element.latex,
        value_text=loss.value.text,
        value_latex=loss.value.latex,
        value=float(np.mean(values)),
        gradient_text=loss.gradient.text,
        gradient_latex=loss.gradient.latex,
        gradient=gradient,
        scale=1.0 / z.shape[-1] if loss.reduce == "mean" else 1.0,
        jacobian_text=out_act.jacobian.text if out_act.jacobian is not None else None,
        delta_text=loss.output_delta.text,
        delta_latex=loss.output_delta.latex,
        delta_reads=loss.delta_form,
    )


def worked_example(
    spec: Spec,
    params: Sequence[np.ndarray],
    x: np.ndarray | Sequence[float],
    y: np.ndarray | Sequence[float] | float,
    *,
    sample: int | None = None,
    masks: Sequence[np.ndarray] | None = None,
) -> WorkedExample:
    """Evaluate the derivation of ``spec`` at one sample, or at a batch, step by step.

    params: as ``init_params`` returns them ([W1, b1, ...]); x: one input, in its
    per-sample shape or flattened in C order, or a batch (rows, *input) or
    (rows, n_inputs); y: (n_out,) (a scalar is accepted for one output), or
    (rows, n_out) with a batch. A network with batch statistics (batch_norm)
    needs a batch of two or more rows: its statistics are the batch's. The
    network is the training-mode one, as ``loss_and_grad`` runs it: ``masks``,
    one (rows, *shape) array of 0s and 1s per dropout layer, else no dropout.
    ``sample`` is only the (first) row number shown in the title.
    Raises ValueError for shapes that do not fit the spec.
    """
    d = derive(spec)
    x_arr = np.asarray(x, dtype=np.float64)
    y_arr = np.asarray(y, dtype=np.float64)
    X, Y_rows, batch = _check_inputs(d, params, x_arr, y_arr)
    values = [np.asarray(p, dtype=np.float64) for p in params]
    mask_values = _check_masks(d, masks, X.shape[0])
    forward = _forward_pass(d, values, X, mask_values)
    steps = _backward_pass(d, forward, Y_rows)
    out = steps[-1]
    assert out.z is not None
    head = _loss_step(d, out.z, out.a, Y_rows)
    example = WorkedExample(spec, X, Y_rows, tuple(steps), head, sample,
                            rows=X.shape[0], masked=masks is not None)  # fmt: skip
    return example if batch else _one_sample(example)


def _check_masks(
    d: Derivation, masks: Sequence[np.ndarray] | None, rows: int
) -> list[np.ndarray | None]:
    """One entry per dropout layer: its (rows, *shape) mask, or None (no dropout)."""
    layers = [
        ly for ly in d.layers if any(t.role == "mask" for t in ly.kind.kind.tensors)
    ]
    if masks is None:
        return [None] * len(layers)
    if len(masks) != len(layers):
        raise ValueError(
            f"masks must be a list of {len(layers)} arrays, one per dropout layer"
        )
    out: list[np.ndarray | None] = []
    for layer, mask in zip(layers, masks, strict=True):
        m = np.asarray(mask, dtype=np.float64)
        if m.size != rows * math.prod(layer.input_shape):
            raise ValueError(
                f"the mask of layer {layer.index} must have shape "
                f"{(rows, *layer.input_shape)}, got {m.shape}"
            )
        if not np.all((m == 0) | (m == 1)):
            raise ValueError(f"the mask of layer {layer.index} must hold 0s and 1s")
        out.append(m.reshape(rows, *layer.input_shape))
    return out


@dataclass
class _Forward:
    """One layer's forward numbers over the batch, gathered before the
    backward pass: every tensor of the kind by local name, batched ones with
    the rows on axis 0."""

    params: list[tuple[str, np.ndarray]]
    input: np.ndarray
    arrays: dict[str, np.ndarray]
    z: np.ndarray | None
    a: np.ndarray


def _shapes(
    kind: LayerKind, binding: dict[sp.Symbol, Any]
) -> dict[str, tuple[int, ...]]:
    return {
        t.name: tuple(int(sp.sympify(e).xreplace(binding)) for e in t.shape)
        for t in kind.tensors
    }


def _folding(
    kind: LayerKind, binding: dict[sp.Symbol, Any], rows: int
) -> dict[sp.Symbol, Any]:
    """A batch-coupled kind (statistics over (C, R) values per channel and the
    batch) evaluated as one sample of R * rows positions: the same sums."""
    assert kind.shape_of == "channels", kind.name
    positions = kind.input[1]
    return {**binding, positions: binding[positions] * rows, B: 1}


def _fold(values: np.ndarray) -> np.ndarray:
    """(rows, C, R) -> (C, R * rows)."""
    rows, channels, positions = values.shape
    return values.transpose(1, 2, 0).reshape(channels, positions * rows)


def _unfold(values: np.ndarray, rows: int) -> np.ndarray:
    """(C, R * rows) -> (rows, C, R)."""
    channels = values.shape[0]
    return values.reshape(channels, -1, rows).transpose(2, 0, 1)


def _run_batch(
    kind: LayerKind,
    binding: dict[sp.Symbol, Any],
    given: dict[str, np.ndarray],
    run: Callable[[dict[sp.Symbol, Any], dict[str, np.ndarray]], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """``run(binding, arrays)`` over a batch: ``given`` holds the batched
    tensors (rows on axis 0, in any per-sample shape) and the unbatched ones
    (parameters, statistics) by local name; the result, likewise, with what
    ``run`` computed added (``given`` passes through unchanged). Row by row,
    or folded into one sample for a batch-coupled kind; adjoints of unbatched
    tensors (parameter gradients) are summed over the rows."""
    shapes = _shapes(kind, binding)
    batched = {t.name for t in kind.tensors if t.batched}
    batched |= {f"d{name}" for name in batched}
    rows = next(v.shape[0] for k, v in given.items() if k in batched)

    def shaped(name: str, v: np.ndarray) -> np.ndarray:
        return v.reshape(rows, *shapes[name.removeprefix("d")])

    if _coupled(kind):
        arrays = {k: _fold(shaped(k, v)) if k in batched else v
                  for k, v in given.items()}  # fmt: skip
        out = run(_folding(kind, binding, rows), arrays)
        computed = {k: _unfold(v, rows) if k in batched else v
                    for k, v in out.items() if k not in given}  # fmt: skip
        return {**given, **computed}
    per_row = []
    for r in range(rows):
        arrays = {k: shaped(k, v)[r] if k in batched else v for k, v in given.items()}
        per_row.append(run(binding, arrays))
    computed = {
        k: np.stack([o[k] for o in per_row])
        if k in batched
        else np.sum([o[k] for o in per_row], axis=0)
        for k in per_row[0]
        if k not in given
    }
    return {**given, **computed}


def _forward_pass(
    d: Derivation,
    values: list[np.ndarray],
    X: np.ndarray,
    masks: list[np.ndarray | None],
) -> list[_Forward]:
    """Each layer's statements through the interpreter, then its activation."""
    out = []
    a = X
    outputs = [X]  # a0, a1, ...: what a residual connection reads
    rows = X.shape[0]
    position = 0
    mask_at = iter(masks)
    for layer in d.layers:
        kind = layer.kind.kind
        binding = dict(layer.binding)
        (source,) = [t.name for t in kind.tensors if t.role == "input"]
        given = {source: a}
        for tensor in kind.tensors:
            if tensor.role == "residual":
                assert layer.residual is not None
                given[tensor.name] = outputs[layer.residual]
        params = []
        for tensor in kind.param_tensors:
            given[tensor.name] = values[position]
            params.append((f"{tensor.name}{layer.index}", values[position]))
            position += 1
        for tensor in kind.tensors:
            if tensor.role == "mask":
                keep = float(sp.sympify(tensor.keep).xreplace(binding))
                mask = next(mask_at)
                # no mask: every value kept and not scaled (mask / keep = 1)
                given[tensor.name] = np.full(a.shape, keep) if mask is None else mask
        if kind.view:
            arrays = {**given, kind.output: a.reshape(rows, -1)}
        else:
            arrays = _run_batch(kind, binding, given,
                                lambda b, arr, kind=kind: run_forward(kind, b, arr))  # fmt: skip
        result = arrays[kind.output].reshape(rows, *layer.output_shape)
        if layer.activation is not None:
            z = result
            a_next = np.stack([_activate(layer.activation, row) for row in z])
        else:
            z, a_next = None, result
        out.append(_Forward(params, a, arrays, z, a_next))
        a = a_next
        outputs.append(a)
    return out


def _backward_pass(
    d: Derivation, forward: list[_Forward], Y: np.ndarray
) -> list[LayerStep]:
    """delta_L from the derived fused formula (over the rows: the loss is their
    mean); each layer's derived rules give its gradients and the adjoint of its
    input; delta_l = da_l * f'(z_l)."""
    n = len(d.layers)
    out_fwd = forward[-1]
    assert out_fwd.z is not None
    rows = Y.shape[0]
    delta = _elementwise(d.loss.output_delta.expr, [Z, A, Y_SYMBOL], out_fwd.z,
                         out_fwd.a, Y) / rows  # fmt: skip
    steps: list[LayerStep | None] = [None] * n
    backprop: np.ndarray | None = None
    # adjoints of a_l from residual connections above, added when l is reached
    residual: dict[int, np.ndarray] = {}
    for position in range(n - 1, -1, -1):
        layer, fwd = d.layers[position], forward[position]
        kind = layer.kind.kind
        binding = dict(layer.binding)
        act = layer.activation
        fprime = _derivative(act, fwd.z) if fwd.z is not None else None
        if position < n - 1:
            assert backprop is not None
            if layer.index in residual:
                backprop = backprop + residual.pop(layer.index).reshape(backprop.shape)
            delta = (
                backprop.reshape(fwd.a.shape) * fprime
                if (act is not None and fprime is not None)
                else backprop.reshape(fwd.a.shape)
            )
        names = layer_names(layer)
        (source,) = [t.name for t in kind.tensors if t.role == "input"]
        if kind.view:
            adjoints = {f"d{source}": delta.reshape(fwd.input.shape)}
        else:
            given = {**fwd.arrays, f"d{kind.output}": delta}
            rules = layer.kind.rules
            adjoints = _run_batch(
                kind, binding, given,
                lambda b, arr, kind=kind, rules=rules: run_rules(kind, rules, b, arr),
            )  # fmt: skip
        grads = tuple(
            (f"grad_{t.name}{layer.index}", adjoints[f"d{t.name}"])
            for t in kind.param_tensors
        )
        for tensor in kind.tensors:
            if tensor.role == "residual" and layer.residual:  # a0 needs none
                extra = adjoints[f"d{tensor.name}"].reshape(
                    forward[layer.residual - 1].a.shape
                )
                residual[layer.residual] = residual.get(layer.residual, 0) + extra
        step_backprop = backprop if position < n - 1 and act is not None else None
        backprop = adjoints.get(f"d{source}")
        if backprop is not None:
            backprop = backprop.reshape(fwd.input.shape)
        statements = tuple(
            (
                statement_text(bound_statement(st, layer), names, subscripts=False),
                statement_latex(bound_statement(st, layer), names),
            )
            for st in kind.forward
        )
        written: set[str] = set()
        rules_text = []
        for form in layer.kind.gathers:
            if kind.tensor(form.target).role == "input" and layer.index == 1:
                continue
            adjoint = names.get(f"d{form.target}", form.target)
            assign = "+=" if adjoint in written else "="
            written.add(adjoint)
            bound = bound_gather(form, layer)
            rules_text.append(
                (adjoint, gather_text(bound, names, assign=assign),
                 gather_latex(bound, names))
            )  # fmt: skip
        shapes = (fwd.input.shape[1:], fwd.a.shape[1:])
        work = tuple(
            (
                names.get(st.target, st.target),
                _shown(kind, st.target, fwd.arrays[st.target], shapes),
            )
            for st in kind.forward
            if st.target != kind.output
        )
        inner = [t.name for t in kind.tensors if t.role in ("work", "stat")]
        inner_adjoints = tuple(
            (names.get(f"d{t}", f"d{t}"), _shown(kind, t, adjoints[f"d{t}"], shapes))
            for t in dict.fromkeys(f.target for f in layer.kind.gathers)
            if t in inner and f"d{t}" in adjoints
        )
        steps[position] = LayerStep(
            index=layer.index,
            kind=kind.name,
            activation=act.label if act is not None else None,
            is_output=layer.is_output,
            params=tuple(fwd.params),
            input=fwd.input,
            z=fwd.z,
            a=fwd.a,
            work=work,
            adjoints=inner_adjoints,
            statements=statements,
            rules=tuple(rules_text),
            forward_text=act.forward.text if act is not None else None,
            forward_latex=act.forward.latex if act is not None else None,
            derivative=fprime,
            derivative_text=act.derivative_z.text if act and act.derivative_z else None,
            derivative_latex=act.derivative_z.latex
            if act and act.derivative_z
            else None,
            derivative_a_text=act.derivative_a.text
            if act and act.derivative_a
            else None,
            backprop=step_backprop,
            delta=delta,
            grads=grads,
        )
    return [s for s in steps if s is not None]


def _shown(
    kind: LayerKind, name: str, v: np.ndarray, shapes: Sequence[tuple[int, ...]]
) -> np.ndarray:
    """A batched tensor of the kind in the layer's input or output shape (per
    row) when it has as many values (batch norm's (C, R) view of a vector)."""
    if not kind.tensor(name).batched or v.ndim == 1:
        return v
    for shape in shapes:
        if v[0].size == math.prod(shape):
            return v.reshape(v.shape[0], *shape)
    return v


def _one_sample(w: WorkedExample) -> WorkedExample:
    """A batch of one row as one sample: every batched array without its row
    axis (statistics and gradients are already per sample)."""

    def row(v: np.ndarray | None) -> np.ndarray | None:
        return None if v is None else v[0]

    layers = tuple(
        replace(
            ly,
            input=ly.input[0],
            z=row(ly.z),
            a=ly.a[0],
            # one sample: no statistics (they need a batch), every work tensor batched
            work=tuple((name, v[0]) for name, v in ly.work),
            adjoints=tuple((name, v[0]) for name, v in ly.adjoints),
            derivative=row(ly.derivative),
            backprop=row(ly.backprop),
            delta=ly.delta[0],
        )
        for ly in w.layers
    )
    head = replace(w.head, gradient=row(w.head.gradient))
    return replace(w, x=w.x[0], y=w.y[0], layers=layers, head=head, rows=None)


# --------------------------------------------------------------- rendering


def _num(v: float) -> str:
    if v == 0:
        return "0"  # also -0.0
    return f"{v:.6g}"


def _vec_text(v: np.ndarray) -> str:
    return "[" + ", ".join(_num(float(e)) for e in np.ravel(v)) + "]"


def _mat_text(m: np.ndarray) -> str:
    return "[" + ", ".join(_vec_text(row) for row in m) + "]"


def _mat_lines(prefix: str, m: np.ndarray, width: int = 100) -> list[str]:
    """``prefix`` + the matrix: on one line if short, else one row per line
    aligned under the first (a 16x32 gradient stays readable)."""
    if m.ndim == 1:
        return [prefix + _vec_text(m)]
    if m.ndim > 2:
        return _tensor_lines(prefix, m)
    inline = prefix + _mat_text(m)
    if len(inline) <= width or m.shape[0] == 1:
        return [inline]
    pad = " " * (len(prefix) + 1)
    rows = [_vec_text(row) for row in m]
    lines = [f"{prefix}[{rows[0]},"]
    lines.extend(f"{pad}{row}," for row in rows[1:-1])
    lines.append(f"{pad}{rows[-1]}]")
    return lines


def _tensor_lines(prefix: str, t: np.ndarray) -> list[str]:
    """A tensor of 3 or more axes as matrices per leading index (channel), the
    first ones only when it has more than MAX_TENSOR_ENTRIES entries."""
    shape = "x".join(str(s) for s in t.shape)
    lines = [f"{prefix}({shape})"]
    flat = t.reshape(-1, *t.shape[-2:])
    show = flat if t.size <= MAX_TENSOR_ENTRIES else flat[:1]
    for n, matrix in enumerate(show):
        where = np.unravel_index(n, t.shape[:-2])
        label = "[" + ", ".join(str(int(i)) for i in where) + "]"
        lines.extend(_mat_lines(f"    {label} ", matrix))
    if len(show) < len(flat):
        lines.append(f"    ... {len(flat) - len(show)} more; largest |value| "
                     f"{_num(float(np.max(np.abs(t))))}")  # fmt: skip
    return lines


def _value_lines(prefix: str, t: np.ndarray) -> list[str]:
    if t.ndim <= 1:
        return [prefix + _vec_text(t)]
    if t.ndim == 2 and t.size <= MAX_TENSOR_ENTRIES:
        return _mat_lines(prefix, t)
    return _tensor_lines(prefix, t)


def _vec_latex(v: np.ndarray) -> str:
    """A column vector."""
    return (
        r"\begin{bmatrix} "
        + r" \\ ".join(_num(float(e)) for e in np.ravel(v))
        + r" \end{bmatrix}"
    )


def _row_latex(v: np.ndarray) -> str:
    return (
        r"\begin{bmatrix} " + " & ".join(_num(float(e)) for e in v) + r" \end{bmatrix}"
    )


def _mat_latex(m: np.ndarray) -> str:
    rows = [" & ".join(_num(float(e)) for e in row) for row in m]
    return r"\begin{bmatrix} " + r" \\ ".join(rows) + r" \end{bmatrix}"


def _tensor_latex(t: np.ndarray) -> str:
    """Small tensors as matrices per leading index; large ones by their shape."""
    if t.ndim <= 1:
        return _vec_latex(t)
    if t.size > MAX_TENSOR_ENTRIES:
        return r"\text{(" + r"\times ".join(str(s) for s in t.shape) + r" values)}"
    if t.ndim == 2:
        return _mat_latex(t)
    flat = t.reshape(-1, *t.shape[-2:])
    return r",\ ".join(_mat_latex(m) for m in flat)


def _latex_label(label: str) -> str:
    """An activation label safe inside \\mathrm{...}."""
    return label.replace("_", r"\_").replace("{", "").replace("}", "")


def _shape(t: np.ndarray) -> str:
    return "x".join(str(s) for s in t.shape) if t.ndim > 1 else str(t.size)


def _render(w: WorkedExample, doc: Document | None = None) -> Document:
    spec = w.spec
    doc = doc or Document()
    n = len(w.layers)
    batch = w.rows is not None
    if batch:
        first = w.sample if w.sample is not None else 0
        which = f"a batch of {w.rows} rows"
        if w.sample is not None:
            which += f" (rows {first}..{first + w.rows - 1})"
    else:
        which = f"sample {w.sample}" if w.sample is not None else "one sample"
    doc.heading(f"Worked example: '{spec.name}' ({spec.architecture}), {which}", 1)
    if batch:
        doc.para(
            f"Input x = a0, {_shape(w.x)}, and target y, {_shape(w.y)}: one row "
            "per sample, as every batched tensor below (axis 0). Each number is "
            "a derived formula evaluated at this batch (float64), in training "
            "mode as loss_and_grad runs it; the loss is the mean over the rows "
            "and the gradients are its gradients."
        )
        coupled = [ly.index for ly in w.layers if ly.kind == "batch_norm"]
        if coupled:
            doc.para(
                "Batch norm needs the whole batch: its mean and var are over every "
                "row (and position) of a channel, so each row's output depends on "
                "the others, and so does each row's gradient; layer(s) "
                f"{', '.join(map(str, coupled))}."
            )
        doc.eq(_value_lines("x = ", w.x), f"x = {_tensor_latex(w.x)}")
        doc.eq(_value_lines("y = ", w.y), f"y = {_tensor_latex(w.y)}")
    else:
        x_text = (
            _vec_text(w.x)
            if w.x.size <= MAX_TENSOR_ENTRIES
            else f"({_shape(w.x)} values)"
        )
        doc.para(
            f"Input x = a0 = {x_text}, target y = {_vec_text(w.y)}. Each number "
            "below is a derived formula evaluated at this sample (float64); the "
            "gradients are those of this one sample's loss."
        )
    if any(ly.kind == "dropout" for ly in w.layers) and not w.masked:
        doc.para(
            "No dropout masks given: no dropout, as loss_and_grad without masks "
            "(each mask holds the keep probability 1 - p, so mask / (1 - p) = 1)."
        )

    doc.heading("Forward pass")
    for layer in w.layers:
        if layer.kind == "dense" and not batch:
            _dense_forward(doc, layer)
        else:
            _kind_forward(doc, layer, batch)
        doc.gap()

    doc.heading("Loss")
    h = w.head
    reduce = "mean" if h.reduce == "mean" else "sum"
    over = f"each row, and the mean over the {w.rows} rows" if batch else "this sample"
    doc.para(
        f"Loss {h.label}: l(y_hat, y) per output, the {reduce} over the "
        f"{w.y.shape[-1]} output(s) for {over}, with y_hat = a{n}."
    )
    doc.eq([f"l = {h.per_element_text}"], f"l = {h.per_element_latex}")
    doc.eq(
        [f"evaluated as l = {h.value_text}    [stable form]", f"L = {_num(h.value)}"],
        rf"L = {h.value_latex} = {_num(h.value)}",
    )
    doc.gap()

    doc.heading("Backward pass")
    last = w.layers[-1]
    doc.heading(f"Output layer {n}: {last.activation} with {h.label}", 3)
    if batch:
        doc.eq(
            [f"delta{n} = dL/dz{n} = ({h.delta_text}) / {w.rows}    [derived, fused; "
             f"reads {h.delta_reads}; the loss is the mean over the rows]",
             *_value_lines("   = ", last.delta)],
            rf"\delta^{{({n})}} = \frac{{1}}{{{w.rows}}}\left({h.delta_latex}\right) = "
            rf"{_tensor_latex(last.delta)}",
        )  # fmt: skip
    elif h.gradient is not None and last.derivative is not None:
        scale = "" if h.scale == 1.0 else f"{_num(h.scale)} * "
        scale_latex = "" if h.scale == 1.0 else rf"{_num(h.scale)} \cdot "
        doc.eq(
            [
                f"dl/dy_hat = {h.gradient_text}",
                f"   = {_vec_text(h.gradient)}    at y_hat = a{n}",
                f"f'(z{n}) = {last.derivative_text}",
                f"   = {_vec_text(last.derivative)}",
                f"chain rule: delta{n} = {scale}dl/dy_hat * f'(z{n})",
            ],
            rf"\frac{{\partial l}}{{\partial \hat y}} = {h.gradient_latex} = "
            rf"{_vec_latex(h.gradient)}, \quad f'(z^{{({n})}}) = "
            rf"{last.derivative_latex} = {_vec_latex(last.derivative)}, \quad "
            rf"\delta^{{({n})}} = {scale_latex}\frac{{\partial l}}{{\partial \hat y}}"
            rf" \odot f'(z^{{({n})}})",
        )
    if not batch and h.gradient is None and h.jacobian_text is not None:
        doc.para(
            f"The {last.activation} output couples its outputs (Jacobian "
            f"da_i/dz_j = {h.jacobian_text}); summed over i with the loss "
            "gradient it reduces to the fused delta below."
        )
    if not batch:
        doc.eq(
            [
                f"delta{n} = dL/dz{n} = {h.delta_text}    [derived, fused; reads "
                f"{h.delta_reads}]",
                f"   = {_vec_text(last.delta)}",
            ],
            rf"\delta^{{({n})}} = \frac{{\partial L}}{{\partial z^{{({n})}}}} = "
            rf"{h.delta_latex} = {_vec_latex(last.delta)}",
        )
    _gradients(doc, last, batch)

    for layer in reversed(w.layers[:-1]):
        above = w.layers[layer.index]
        if layer.kind == "dense" and above.kind == "dense" and not batch:
            _dense_delta(doc, layer, above)
        else:
            _kind_delta(doc, layer, above, batch)
        _gradients(doc, layer, batch)

    doc.heading(
        "Gradients of the batch's loss" if batch else "Gradients of this sample's loss"
    )
    for layer in w.layers:
        if not layer.grads:
            continue
        lines: list[str] = []
        latex = []
        for name, g in layer.grads:
            lines.extend(
                _value_lines(f"{name} = ", g)
                if g.ndim != 2
                else _mat_lines(f"{name} = ", g)
            )
            latex.append(rf"\nabla_{{{_latex_name(name)}}} L = "
                         + (_row_latex(g) if g.ndim == 1 else _tensor_latex(g)))  # fmt: skip
        doc.eq(lines, r", \quad ".join(latex))
    doc.gap()
    if batch:
        doc.para(
            "What the generated module's loss_and_grad returns for these rows "
            "(parameter gradients are summed over the rows of the delta, which "
            "carries the 1/rows of the mean)."
        )
    else:
        doc.para(
            "A batch's gradient is the mean of its samples' gradients (the generated "
            "module's loss_and_grad); with batch norm it is not: its statistics "
            "couple the rows (see a batch's worked example)."
        )
    return doc


def _latex_name(name: str) -> str:
    """grad_W3 -> W^{(3)}."""
    base = name.removeprefix("grad_")
    letters = base.rstrip("0123456789")
    return f"{letters}^{{({base[len(letters) :]})}}"


def _dense_forward(doc: Document, layer: LayerStep) -> None:
    i = layer.index
    kind = "output layer" if layer.is_output else "layer"
    assert layer.z is not None and layer.activation is not None
    doc.heading(
        f"{kind.capitalize()} {i}: {layer.activation}, "
        f"{layer.weight.shape[1]} -> {layer.weight.shape[0]}",
        3,
    )
    inline = layer.weight.size <= MAX_INLINE_ENTRIES
    text = [f"z{i} = W{i} a{i - 1} + b{i}"]
    latex = rf"z^{{({i})}} = W^{{({i})}} a^{{({i - 1})}} + b^{{({i})}}"
    if inline:
        text.append(
            f"   = {_mat_text(layer.weight)} {_vec_text(layer.input)} + "
            f"{_vec_text(layer.bias)}"
        )
        latex += (
            f" = {_mat_latex(layer.weight)} {_vec_latex(layer.input)} + "
            f"{_vec_latex(layer.bias)}"
        )
    text.append(f"   = {_vec_text(layer.z)}")
    latex += f" = {_vec_latex(layer.z)}"
    doc.eq(text, latex)
    _activation(doc, layer)


def _activation(doc: Document, layer: LayerStep) -> None:
    i = layer.index
    assert layer.activation is not None
    fname = "a_i" if layer.derivative is None and layer.is_output else "f(z)"
    doc.eq(
        [
            f"a{i} = {layer.activation}(z{i}),  {fname} = {layer.forward_text}",
            *_value_lines("   = ", layer.a),
        ],
        rf"a^{{({i})}} = \mathrm{{{_latex_label(layer.activation)}}}"
        rf"(z^{{({i})}}) = {_tensor_latex(layer.a)},"
        rf"\quad {'a_i' if fname == 'a_i' else 'f(z)'} = {layer.forward_latex}",
    )


def _kind_forward(doc: Document, layer: LayerStep, batch: bool = False) -> None:
    """A layer through its statements and their values (every kind but dense
    for one sample, every kind for a batch)."""
    i = layer.index
    out = layer.z if layer.z is not None else layer.a
    act = f", {layer.activation}" if layer.activation else ""
    shapes = (
        f"{_shape(layer.input[0])} -> {_shape(out[0])} per row"
        if batch
        else f"{_shape(layer.input)} -> {_shape(out)}"
    )
    doc.heading(f"Layer {i}: {layer.kind}{act}, {shapes}", 3)
    if not layer.statements:
        doc.eq(
            [f"a{i} = a{i - 1} flattened in C order (channel, row, column)",
             *_value_lines("   = ", layer.a)],
            rf"a^{{({i})}} = \operatorname{{flatten}}(a^{{({i - 1})}}) = "
            rf"{_tensor_latex(layer.a)}",
        )  # fmt: skip
        return
    for (text, latex), (_, value) in zip(
        layer.statements,
        [*layer.work, ("z" if layer.z is not None else "a", out)],
        strict=False,
    ):
        doc.eq(
            [text, *_value_lines("   = ", value)], f"{latex} = {_tensor_latex(value)}"
        )
    if layer.activation is not None:
        _activation(doc, layer)


def _dense_delta(doc: Document, layer: LayerStep, above: LayerStep) -> None:
    i = layer.index
    assert layer.backprop is not None and layer.derivative is not None
    doc.heading(f"Layer {i}: {layer.activation}", 3)
    also = (
        f"  (= {layer.derivative_a_text} in terms of a)"
        if layer.derivative_a_text is not None
        else ""
    )
    inline = above.weight.size <= MAX_INLINE_ENTRIES
    text = [
        f"delta{i} = (W{i + 1}^T delta{i + 1}) * f'(z{i}),  "
        f"f'(z) = {layer.derivative_text}{also}",
    ]
    latex = (
        rf"\delta^{{({i})}} = \left(W^{{({i + 1})\top}} \delta^{{({i + 1})}}\right)"
        rf" \odot f'(z^{{({i})}})"
    )
    if inline:
        text.append(
            f"   = ({_mat_text(above.weight.T)} {_vec_text(above.delta)}) * "
            f"{_vec_text(layer.derivative)}"
        )
        latex += (
            rf" = \left({_mat_latex(above.weight.T)} {_vec_latex(above.delta)}"
            rf"\right) \odot {_vec_latex(layer.derivative)}"
        )
    text.append(f"   = {_vec_text(layer.backprop)} * {_vec_text(layer.derivative)}")
    text.append(f"   = {_vec_text(layer.delta)}")
    latex += (
        rf" = {_vec_latex(layer.backprop)} \odot {_vec_latex(layer.derivative)}"
        rf" = {_vec_latex(layer.delta)},\quad f'(z) = {layer.derivative_latex}"
    )
    doc.eq(text, latex)


def _kind_delta(
    doc: Document, layer: LayerStep, above: LayerStep, batch: bool = False
) -> None:
    """The adjoint of a layer's output from the layer above's derived rule (gather
    form), then f' for a layer with an activation."""
    i = layer.index
    doc.heading(
        f"Layer {i}: {layer.kind}"
        + (f", {layer.activation}" if layer.activation else ""),
        3,
    )
    into = [r for r in above.rules if r[0] in (f"da{i}", f"delta{i}")]
    back = layer.backprop if layer.backprop is not None else layer.delta
    if into:
        *first, last = into
        for _, text, latex in first:
            doc.eq(text, latex)
        _, text, latex = last
        doc.eq([text, *_value_lines("   = ", back)], f"{latex} = {_tensor_latex(back)}")
    else:  # a view (flatten) above: the same numbers in its shape
        doc.eq(
            [
                f"da{i} = delta{i + 1} in the shape of a{i}",
                *_value_lines("   = ", back),
            ],
            rf"\delta a^{{({i})}} = {_tensor_latex(back)}",
        )
    if layer.activation is not None and layer.derivative is not None:
        also = (
            f"  (= {layer.derivative_a_text} in terms of a)"
            if layer.derivative_a_text is not None
            else ""
        )
        doc.eq(
            [f"delta{i} = da{i} * f'(z{i}),  f'(z) = {layer.derivative_text}{also}",
             *_value_lines("   = ", layer.delta)],
            rf"\delta^{{({i})}} = \delta a^{{({i})}} \odot f'(z^{{({i})}}) = "
            rf"{_tensor_latex(layer.delta)},\quad f'(z) = {layer.derivative_latex}",
        )  # fmt: skip


def _gradients(doc: Document, layer: LayerStep, batch: bool = False) -> None:
    i = layer.index
    if not layer.grads:
        doc.gap()
        return
    if layer.kind == "dense" and not batch:
        doc.eq(
            [
                f"grad_W{i} = delta{i} a{i - 1}^T = {_vec_text(layer.delta)} "
                f"{_vec_text(layer.input)}^T",
                *_mat_lines("   = ", layer.grad_weight),
                f"grad_b{i} = delta{i} = {_vec_text(layer.grad_bias)}",
            ],
            rf"\nabla_{{W^{{({i})}}}} L = \delta^{{({i})}} a^{{({i - 1})\top}} = "
            rf"{_vec_latex(layer.delta)} {_row_latex(layer.input)} = "
            rf"{_mat_latex(layer.grad_weight)}, \quad \nabla_{{b^{{({i})}}}} L = "
            rf"\delta^{{({i})}} = {_vec_latex(layer.grad_bias)}",
        )
    else:
        # every rule into a parameter or an intermediate, in the derived order;
        # a value after the last rule that adds to its adjoint
        values = {**dict(layer.grads), **dict(layer.adjoints)}
        grads = dict(layer.grads)
        last = {name: n for n, (name, _, _) in enumerate(layer.rules)}
        for n, (name, text, latex) in enumerate(layer.rules):
            if name not in values:
                continue  # the input's adjoint: the layer below shows it
            summed = "   (summed over the rows)" if batch and name in grads else ""
            if last[name] != n:
                doc.eq(text, latex)
                continue
            v = values[name]
            doc.eq([text + summed, *_value_lines("   = ", v)],
                   f"{latex} = {_tensor_latex(v)}")  # fmt: skip
    doc.gap()


__all__ = ["LayerStep", "LossStep", "WorkedExample", "worked_example"]
