"""Explanations of a derivation: text, LaTeX and Markdown, like a textbook.

``explain(spec)`` returns an :class:`Explanation`; ``str()`` gives plain text,
``.latex()`` and ``.markdown()`` the other forms, and Jupyter renders it via
``_repr_markdown_`` / ``_repr_latex_``. Every formula is printed in the
project's one notation (:mod:`derive.engine.notation`): index sums in textbook
form (``z1_j = b1_j + sum_k W1_jk a0_k``), each layer kind's derived backward
rules in gather form with their guards.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.derivation import Derivation, LayerInfo, derive
from ..engine.notation import (
    bound_gather,
    bound_statement,
    gather_latex,
    gather_text,
    latex,
    layer_names,
    rule_text,
    statement_latex,
    statement_text,
    text,
)
from ..spec import Spec
from .document import Document, Format, Rendered

__all__ = ["Explanation", "Format", "Rendered", "explain"]


@dataclass(frozen=True)
class Explanation(Rendered):
    """A rendered-on-demand explanation of one derivation."""

    derivation: Derivation

    def document(self) -> Document:
        return _document(self.derivation)


def explain(spec: Spec) -> Explanation:
    """Explain the derivation of ``spec`` (derives it first)."""
    return Explanation(derive(spec))


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _document(d: Derivation) -> Document:
    spec = d.spec
    n = len(d.layers)
    doc = Document()
    doc.heading(
        f"Derivation of '{spec.name}': a {spec.architecture} network, {spec.dtype}", 1
    )
    doc.para(
        "Formulas are per sample (the batch loss is the mean over the m rows). Layer l "
        "computes z_l from its input a_{l-1} (a0 = x), then a_l = f(z_l); dense W_l "
        "has shape (n_l, n_{l-1}). Every derivative below was derived by SymPy from "
        "the forward definitions; none was typed in."
    )

    doc.heading("Forward pass")
    for layer in d.layers:
        _forward(doc, layer)
    doc.gap()

    doc.heading("Activation derivatives")
    seen: set[str] = set()
    for layer in d.layers:
        act = layer.activation
        if act is None or act.label in seen:
            continue
        seen.add(act.label)
        if act.kind == "softmax":
            assert act.jacobian is not None
            doc.eq(
                f"{act.label}: {act.jacobian.line}", act.jacobian.latex_line, "Jacobian"
            )
            continue
        assert act.derivative_z is not None
        doc.eq(
            f"{act.label}: f'(z) = {act.derivative_z.text}",
            f"f'(z) = {act.derivative_z.latex}",
        )
        if act.derivative_a is not None:
            note = (
                "used by the code" if act.derivative_form == "a" else "found, not used"
            )
            doc.eq(
                f"{act.label}: f'   = {act.derivative_a.text}  (in terms of a = f(z))",
                f"f' = {act.derivative_a.latex}",
                note,
            )
        else:
            doc.para(
                f"{act.label}: no form in terms of a = f(z) found; the code uses z."
            )
    doc.gap()

    doc.heading("Loss")
    loss = d.loss
    reduce = "mean" if loss.reduce == "mean" else "sum"
    doc.para(
        f"Loss {loss.label}: per output element l(y_hat, y); per sample the {reduce} "
        f"over the {d.layers[-1].n_out} outputs; the batch loss is the mean over the m rows."
    )
    doc.eq(loss.per_element.line, loss.per_element.latex_line)
    doc.eq(loss.gradient.line, loss.gradient.latex_line, "loss gradient")
    doc.eq(
        f"evaluated as l = {loss.value.text}",
        loss.value.latex_line,
        "stable form, including the 1/n_out of a mean"
        if reduce == "mean"
        else "stable form",
    )
    doc.gap()

    doc.heading("Output delta (fused)")
    doc.eq(
        f"delta{n} = dL/dz{n} = ({loss.output_delta.text}) / m",
        rf"\delta^{{({n})}} = \frac{{1}}{{m}}\left({loss.output_delta.latex}\right)",
        f"reads {loss.delta_form}",
    )
    doc.gap()

    doc.heading("Backpropagation, layer by layer")
    doc.para(
        "Each layer's rules are derived from its forward statement (the chain rule "
        "through every read), shown here in gather form: the sum over the points "
        "that reach an element, with the guards that select them. Parameter "
        "gradients are summed over the batch's samples."
    )
    for layer in reversed(d.layers):
        _backward(doc, d, layer)
    doc.gap()

    doc.heading("Layer kinds")
    doc.para(
        "Each kind is written once in index form; its backward rules are derived "
        "(scatter form, exact for every stride, padding and dilation) and shown "
        "in gather form, which the engine checks numerically against the scatter "
        "form on small shapes with remainders. A read outside a tensor's range is 0."
    )
    for kd in d.kinds:
        kind = kd.kind
        doc.heading(f"{kind.name}: {kind.doc}", 3)
        for symbol, formula in kind.sizes.items():
            doc.eq(f"{symbol} = {text(formula)}", f"{latex(symbol)} = {latex(formula)}",
                   "output size")  # fmt: skip
        for st in kind.forward:
            doc.eq(statement_text(st, {}, subscripts=True), statement_latex(st, {}))
        for rule, form in zip(kd.rules, kd.gathers, strict=True):
            doc.eq(
                [
                    gather_text(form, {}, subscripts=True),
                    f"    from  {rule_text(rule, {})}",
                ],
                gather_latex(form, {}),
                "derived"
                if not form.padded
                else f"derived; {', '.join(form.padded)} read as 0 outside (padding)",
            )
        checks = len(kind.checks)
        if checks:
            doc.para(
                f"Gather forms checked against the scatter rules on {checks} shapes: "
                f"largest difference {kd.check_error:.3g}."
            )
    doc.gap()

    doc.heading("Simplification passes")
    doc.listing(d.strategy.splitlines())
    return doc


def _forward(doc: Document, layer: LayerInfo) -> None:
    i = layer.index
    kind = layer.kind.kind
    names = layer_names(layer)
    shapes = f"{_shape(layer.input_shape)} -> {_shape(layer.output_shape)}"
    if kind.view:
        doc.eq(
            f"a{i} = a{i - 1} flattened in C order (channel, row, column)   {shapes}",
            rf"a^{{({i})}} = \operatorname{{flatten}}(a^{{({i - 1})}})",
        )
        return
    for st in kind.forward:
        bound = bound_statement(st, layer)
        doc.eq(
            f"{statement_text(bound, names, subscripts=True)}        shapes: {shapes}",
            statement_latex(bound, names),
            layer_label(layer),
        )
    act = layer.activation
    if act is not None:
        doc.eq(
            f"a{i} = {act.label}(z{i}),  {act.forward.lhs_text} = {act.forward.text}",
            rf"a^{{({i})}} = {act.forward.latex}".replace("z", f"z^{{({i})}}")
            if act.kind == "elementwise"
            else rf"a^{{({i})}}_i = {act.forward.latex}",
        )


def layer_label(layer: LayerInfo) -> str:
    """``conv2d(filters=8, kernel=3x3, ...)`` with the layer's attribute values."""
    return layer.kind.kind.label(dict(layer.attrs))


def _backward(doc: Document, d: Derivation, layer: LayerInfo) -> None:
    i = layer.index
    kind = layer.kind.kind
    names = layer_names(layer)
    doc.heading(f"Layer {i}: {layer_label(layer)}", 3)
    if kind.view:
        doc.para(
            f"da{i - 1} is delta{i} in the shape of a{i - 1} (a view: no arithmetic)."
        )
        return
    for rule, form in zip(layer.kind.rules, layer.kind.gathers, strict=True):
        role = kind.tensor(rule.target).role
        if role == "input" and i == 1:
            continue  # the network input needs no gradient
        bound = bound_gather(form, layer)
        target_shape = layer.input_shape if role == "input" else None
        shape = f"   -> {_shape(target_shape)}" if target_shape else ""
        doc.eq(
            gather_text(bound, names, subscripts=True) + shape,
            gather_latex(bound, names),
        )
    if kind.name == "dense":
        prev = "a0" if i == 1 else f"a{i - 1}"
        doc.eq(
            f"matrix form: grad_W{i} = delta{i} {prev}^T, grad_b{i} = delta{i}"
            + (f", da{i - 1} = W{i}^T delta{i}" if i > 1 else ""),
            rf"\nabla_{{W^{{({i})}}}} = \delta^{{({i})}} a^{{({i - 1})\top}}",
            "what the BLAS path computes",
        )
    if i > 1:
        below = d.layers[i - 2]
        act = below.activation
        if act is not None and act.derivative is not None:
            doc.eq(
                f"delta{i - 1} = da{i - 1} * f'(z{i - 1}),  f' = {act.derivative.text}",
                rf"\delta^{{({i - 1})}} = \delta a^{{({i - 1})}} \odot "
                rf"\left({act.derivative.latex}\right)",
            )
