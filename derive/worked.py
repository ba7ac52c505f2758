"""A worked example: the derivation with the numbers of one sample, step by step.

``worked_example(spec, params, x, y)`` evaluates the SymPy expressions of the
spec's :class:`~derive.derivation.Derivation` (forward ``f(z)``, the loss value,
the fused output delta, each hidden layer's ``f'(z)``) at one sample and
returns a :class:`WorkedExample`: every ``z``, ``a``, ``delta`` and gradient,
with the formula each came from, rendered as plain text, Markdown or LaTeX like
a worked example in a textbook.

The numbers never come from a generated module: the formulas are turned into
scalar Python functions with ``sympy.lambdify`` (nothing is passed to
``eval``), so the tests can compare this path with ``loss_and_grad``. Shapes
follow the module contract: ``W_l`` is (n_l, n_{l-1}), ``b_l`` is (n_l,); for
one sample ``z_l = W_l a_{l-1} + b_l`` and ``grad_W_l = delta_l a_{l-1}^T``.
All arithmetic is float64, whatever the spec's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import sympy as sp

from .derivation import LSE, Y_HAT, A, ActivationDerivation, Derivation, Y, Z, derive
from .explain import Format, Rendered, title_lines
from .spec import Spec

#: Substituted matrices are printed only up to this many entries; larger layers
#: show the result alone (a 16x32 weight matrix is not readable inline).
MAX_INLINE_ENTRIES = 24


# ------------------------------------------------------------------ the data


@dataclass(frozen=True, eq=False)
class LayerStep:
    """The numbers of one dense layer for one sample (vectors are 1-D)."""

    index: int  # 1-based
    activation: str  # the activation's label, e.g. "relu"
    is_output: bool
    weight: np.ndarray  # W_l, (n_out, n_in)
    bias: np.ndarray  # b_l, (n_out,)
    input: np.ndarray  # a_{l-1}, (n_in,); a_0 = x
    z: np.ndarray  # (n_out,)
    a: np.ndarray  # (n_out,)
    forward_text: str  # f(z), derived form
    forward_latex: str
    derivative: np.ndarray | None  # f'(z_l), (n_out,); None for a softmax output
    derivative_text: str | None  # the f'(z) formula evaluated
    derivative_latex: str | None
    derivative_a_text: str | None  # f' in terms of a, when the derivation found one
    backprop: np.ndarray | None  # hidden layers: W_{l+1}^T delta_{l+1}, (n_out,)
    delta: np.ndarray  # dL/dz_l, (n_out,)
    grad_weight: np.ndarray  # delta_l a_{l-1}^T, (n_out, n_in)
    grad_bias: np.ndarray  # delta_l, (n_out,)


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
    """One sample's forward and backward pass with every number and formula.

    ``layers[l - 1]`` holds layer ``l``; ``loss`` is the sample's loss and
    ``grads()`` its gradients in the order of the params (what the generated
    module's ``loss_and_grad`` returns for a batch of this one row).
    """

    spec: Spec
    x: np.ndarray  # (n_in,)
    y: np.ndarray  # (n_out,)
    layers: tuple[LayerStep, ...]
    head: LossStep
    sample: int | None = None

    @property
    def loss(self) -> float:
        return self.head.value

    @property
    def output(self) -> np.ndarray:
        """The network's output a_L, (n_out,)."""
        return self.layers[-1].a

    def grads(self) -> list[np.ndarray]:
        """[grad_W1, grad_b1, grad_W2, ...]: the params' order."""
        out: list[np.ndarray] = []
        for layer in self.layers:
            out.extend([layer.grad_weight, layer.grad_bias])
        return out

    def text(self) -> str:
        return "\n".join(_render(self, "text")).rstrip() + "\n"

    def markdown(self) -> str:
        return "\n".join(_render(self, "markdown")).rstrip() + "\n"

    def latex(self) -> str:
        return "\n".join(_render(self, "latex")).rstrip() + "\n"


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
    expr: sp.Expr, symbols: Sequence[sp.Symbol], *columns: np.ndarray
) -> np.ndarray:
    """Evaluate ``expr`` at each row of the given same-length vectors."""
    fn = _scalar_function(expr, symbols)
    return np.array([fn(*map(float, row)) for row in zip(*columns, strict=True)])


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


def _check_inputs(
    spec: Spec, params: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray
) -> None:
    sizes = spec.sizes
    if len(params) != 2 * len(spec.layers):
        raise ValueError(
            f"params must be [W1, b1, ..., W{len(spec.layers)}, b{len(spec.layers)}] "
            f"({2 * len(spec.layers)} arrays) for spec '{spec.name}', got {len(params)}"
        )
    for i in range(len(spec.layers)):
        w_shape = (sizes[i + 1], sizes[i])
        if np.shape(params[2 * i]) != w_shape:
            raise ValueError(
                f"W{i + 1} must have shape {w_shape}, got {np.shape(params[2 * i])}"
            )
        if np.shape(params[2 * i + 1]) != (sizes[i + 1],):
            raise ValueError(
                f"b{i + 1} must have shape ({sizes[i + 1]},), "
                f"got {np.shape(params[2 * i + 1])}"
            )
    if x.shape != (sizes[0],):
        raise ValueError(f"x must hold {sizes[0]} input values, got shape {x.shape}")
    if y.shape != (sizes[-1],):
        raise ValueError(f"y must hold {sizes[-1]} target values, got shape {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x and y must be finite numbers (found NaN or inf)")


def _forward(act: ActivationDerivation, z: np.ndarray) -> np.ndarray:
    if act.kind == "softmax":
        return _softmax(act.forward.expr, z)
    return _elementwise(act.forward.expr, [Z], z)


def _derivative(act: ActivationDerivation, z: np.ndarray) -> np.ndarray | None:
    if act.derivative_z is None:
        return None
    return _elementwise(act.derivative_z.expr, [Z], z)


def _loss_step(d: Derivation, z: np.ndarray, a: np.ndarray, y: np.ndarray) -> LossStep:
    """The loss head at one sample: z, a, y are the output layer's (n_out,)."""
    loss = d.loss
    lse = _log_sum_exp(z) if loss.needs_lse else math.nan
    values = _elementwise(
        loss.value.expr, [Z, A, Y, LSE], z, a, y, np.full_like(z, lse)
    )
    out_act = d.layers[-1].activation
    gradient = None
    if out_act.kind == "elementwise":  # softmax couples outputs: no per-output chain
        gradient = _elementwise(loss.gradient.expr, [Y_HAT, Y], a, y)
    return LossStep(
        label=loss.label,
        reduce=loss.reduce,
        per_element_text=loss.per_element.text,
        per_element_latex=loss.per_element.latex,
        value_text=loss.value.text,
        value_latex=loss.value.latex,
        value=float(np.sum(values)),
        gradient_text=loss.gradient.text,
        gradient_latex=loss.gradient.latex,
        gradient=gradient,
        scale=1.0 / len(z) if loss.reduce == "mean" else 1.0,
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
) -> WorkedExample:
    """Evaluate the derivation of ``spec`` at one sample, step by step.

    params: [W1, b1, ..., WL, bL] with W_l (n_l, n_{l-1}) and b_l (n_l,), as
    ``init_params`` returns them; x: (n_in,); y: (n_out,) (a scalar is accepted
    for one output). ``sample`` is only the row number shown in the title.
    Raises ValueError for shapes that do not fit the spec.
    """
    x_vec = np.asarray(x, dtype=np.float64).reshape(-1)
    y_vec = np.asarray(y, dtype=np.float64).reshape(-1)
    _check_inputs(spec, params, x_vec, y_vec)
    d = derive(spec)
    weights = [np.asarray(p, dtype=np.float64) for p in params[0::2]]
    biases = [np.asarray(p, dtype=np.float64) for p in params[1::2]]
    inputs, zs, activations = _forward_pass(d, weights, biases, x_vec)
    derivatives = [
        _derivative(info.activation, z) for info, z in zip(d.layers, zs, strict=True)
    ]
    deltas, backprops = _backward_pass(d, weights, zs, activations, derivatives, y_vec)
    steps = []
    for i, info in enumerate(d.layers):
        act = info.activation
        steps.append(
            LayerStep(
                index=info.index,
                activation=act.label,
                is_output=info.is_output,
                weight=weights[i],
                bias=biases[i],
                input=inputs[i],
                z=zs[i],
                a=activations[i],
                forward_text=act.forward.text,
                forward_latex=act.forward.latex,
                derivative=derivatives[i],
                derivative_text=act.derivative_z.text if act.derivative_z else None,
                derivative_latex=act.derivative_z.latex if act.derivative_z else None,
                derivative_a_text=act.derivative_a.text if act.derivative_a else None,
                backprop=backprops[i],
                delta=deltas[i],
                grad_weight=np.outer(deltas[i], inputs[i]),
                grad_bias=deltas[i].copy(),
            )
        )
    head = _loss_step(d, zs[-1], activations[-1], y_vec)
    return WorkedExample(spec, x_vec, y_vec, tuple(steps), head, sample)


def _forward_pass(
    d: Derivation,
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    x: np.ndarray,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per layer: its input a_{l-1} (n_in,), z_l = W_l a_{l-1} + b_l (the dense
    rule) and a_l = f(z_l) (the derived forward), each (n_out,)."""
    inputs, zs, activations = [], [], []
    a = x
    for info, w, b in zip(d.layers, weights, biases, strict=True):
        inputs.append(a)
        z = w @ a + b
        a = _forward(info.activation, z)
        zs.append(z)
        activations.append(a)
    return inputs, zs, activations


def _backward_pass(
    d: Derivation,
    weights: list[np.ndarray],
    zs: list[np.ndarray],
    activations: list[np.ndarray],
    derivatives: list[np.ndarray | None],
    y: np.ndarray,
) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Per layer: delta_l = dL/dz_l (n_out,), and for hidden layers the
    back-propagated W_{l+1}^T delta_{l+1} (n_out,) it was multiplied from.

    The output delta is the derived fused formula in (z, a, y); hidden deltas
    follow delta_l = (W_{l+1}^T delta_{l+1}) * f'(z_l).
    """
    n = len(d.layers)
    deltas: list[np.ndarray] = [np.empty(0)] * n
    backprops: list[np.ndarray | None] = [None] * n
    deltas[-1] = _elementwise(
        d.loss.output_delta.expr, [Z, A, Y], zs[-1], activations[-1], y
    )
    for i in range(n - 2, -1, -1):
        fprime = derivatives[i]
        assert fprime is not None  # softmax is an output-only op
        backprop = weights[i + 1].T @ deltas[i + 1]
        backprops[i] = backprop
        deltas[i] = backprop * fprime
    return deltas, backprops


# --------------------------------------------------------------- rendering


def _num(v: float) -> str:
    if v == 0:
        return "0"  # also -0.0
    return f"{v:.6g}"


def _vec_text(v: np.ndarray) -> str:
    return "[" + ", ".join(_num(float(e)) for e in v) + "]"


def _mat_text(m: np.ndarray) -> str:
    return "[" + ", ".join(_vec_text(row) for row in m) + "]"


def _mat_lines(prefix: str, m: np.ndarray, width: int = 100) -> list[str]:
    """``prefix`` + the matrix: on one line if short, else one row per line
    aligned under the first (a 16x32 gradient stays readable)."""
    inline = prefix + _mat_text(m)
    if len(inline) <= width or m.shape[0] == 1:
        return [inline]
    pad = " " * (len(prefix) + 1)
    rows = [_vec_text(row) for row in m]
    lines = [f"{prefix}[{rows[0]},"]
    lines.extend(f"{pad}{row}," for row in rows[1:-1])
    lines.append(f"{pad}{rows[-1]}]")
    return lines


def _vec_latex(v: np.ndarray) -> str:
    """A column vector."""
    return (
        r"\begin{bmatrix} "
        + r" \\ ".join(_num(float(e)) for e in v)
        + r" \end{bmatrix}"
    )


def _row_latex(v: np.ndarray) -> str:
    return (
        r"\begin{bmatrix} " + " & ".join(_num(float(e)) for e in v) + r" \end{bmatrix}"
    )


def _mat_latex(m: np.ndarray) -> str:
    rows = [" & ".join(_num(float(e)) for e in row) for row in m]
    return r"\begin{bmatrix} " + r" \\ ".join(rows) + r" \end{bmatrix}"


def _render(w: WorkedExample, fmt: Format) -> list[str]:
    spec = w.spec
    out: list[str] = []
    n = len(w.layers)

    def heading(title: str, level: int = 2) -> None:
        if fmt == "markdown":
            out.extend(["#" * level + f" {title}", ""])
        elif fmt == "latex":
            command = "subsection" if level == 2 else "subsubsection"
            title = title.replace("_", r"\_").replace("->", r"$\to$")
            out.extend([rf"\{command}*{{{title}}}", ""])
        else:
            underline = "-" if level == 2 else "~"
            out.extend([title, underline * len(title)])

    def eq(text_lines: list[str], latex: str) -> None:
        if fmt == "text":
            out.extend("  " + line for line in text_lines)
        elif fmt == "markdown":
            out.extend([f"$$ {latex} $$", ""])
        else:
            out.append(rf"\[ {latex} \]")

    def para(text: str) -> None:
        if fmt == "latex":
            text = text.replace("_", r"\_")
        out.extend([text, ""])

    arch = "-".join(str(s) for s in spec.sizes)
    which = f"sample {w.sample}" if w.sample is not None else "one sample"
    title = f"Worked example: '{spec.name}' ({arch}), {which}"
    out.extend(title_lines(title, fmt))
    para(
        f"Input x = a0 = {_vec_text(w.x)}, target y = {_vec_text(w.y)}. Each number "
        "below is a derived formula evaluated at this sample (float64); the "
        "gradients are those of this one sample's loss."
    )

    heading("Forward pass")
    for layer in w.layers:
        i = layer.index
        kind = "output layer" if layer.is_output else "layer"
        heading(
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
        eq(text, latex)
        fname = "a_i" if layer.derivative is None and layer.is_output else "f(z)"
        eq(
            [
                f"a{i} = {layer.activation}(z{i}),  {fname} = {layer.forward_text}",
                f"   = {_vec_text(layer.a)}",
            ],
            rf"a^{{({i})}} = \mathrm{{{_latex_label(layer.activation)}}}"
            rf"(z^{{({i})}}) = {_vec_latex(layer.a)},"
            rf"\quad {'a_i' if fname == 'a_i' else 'f(z)'} = {layer.forward_latex}",
        )
        if fmt == "text":
            out.append("")

    heading("Loss")
    h = w.head
    reduce = "mean" if h.reduce == "mean" else "sum"
    para(
        f"Loss {h.label}: l(y_hat, y) per output, the {reduce} over the "
        f"{len(w.y)} output(s) for this sample, with y_hat = a{n}."
    )
    eq([f"l = {h.per_element_text}"], f"l = {h.per_element_latex}")
    eq(
        [f"evaluated as l = {h.value_text}    [stable form]", f"L = {_num(h.value)}"],
        rf"L = {h.value_latex} = {_num(h.value)}",
    )
    if fmt == "text":
        out.append("")

    heading("Backward pass")
    last = w.layers[-1]
    heading(f"Output layer {n}: {last.activation} with {h.label}", 3)
    if h.gradient is not None and last.derivative is not None:
        scale = "" if h.scale == 1.0 else f"{_num(h.scale)} * "
        scale_latex = "" if h.scale == 1.0 else rf"{_num(h.scale)} \cdot "
        eq(
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
    elif h.jacobian_text is not None:
        para(
            f"The {last.activation} output couples its outputs (Jacobian "
            f"da_i/dz_j = {h.jacobian_text}); summed over i with the loss "
            "gradient it reduces to the fused delta below."
        )
    eq(
        [
            f"delta{n} = dL/dz{n} = {h.delta_text}    [derived, fused; reads "
            f"{h.delta_reads}]",
            f"   = {_vec_text(last.delta)}",
        ],
        rf"\delta^{{({n})}} = \frac{{\partial L}}{{\partial z^{{({n})}}}} = "
        rf"{h.delta_latex} = {_vec_latex(last.delta)}",
    )
    _gradients(last, eq, fmt, out)

    for layer in reversed(w.layers[:-1]):
        i = layer.index
        above = w.layers[i]
        assert layer.backprop is not None and layer.derivative is not None
        heading(f"Layer {i}: {layer.activation}", 3)
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
        eq(text, latex)
        _gradients(layer, eq, fmt, out)

    heading("Gradients of this sample's loss")
    for layer in w.layers:
        i = layer.index
        eq(
            [
                *_mat_lines(f"grad_W{i} = ", layer.grad_weight),
                f"grad_b{i} = {_vec_text(layer.grad_bias)}",
            ],
            rf"\nabla_{{W^{{({i})}}}} L = {_mat_latex(layer.grad_weight)}, \quad "
            rf"\nabla_{{b^{{({i})}}}} L = {_row_latex(layer.grad_bias)}",
        )
    if fmt == "text":
        out.append("")
    para(
        "A batch's gradient is the mean of its samples' gradients (the generated "
        "module's loss_and_grad)."
    )
    return out


def _gradients(
    layer: LayerStep,
    eq: Callable[[list[str], str], None],
    fmt: Format,
    out: list[str],
) -> None:
    i = layer.index
    eq(
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
    if fmt == "text":
        out.append("")


def _latex_label(label: str) -> str:
    """An activation label safe inside \\mathrm{...}."""
    return label.replace("_", r"\_").replace("{", "").replace("}", "")


__all__ = ["LayerStep", "LossStep", "WorkedExample", "worked_example"]
