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

import sympy as sp

from ..engine.adjoint import GatherRule
from ..engine.derivation import Derivation, KindDerivation, LayerInfo, derive
from ..engine.domains import domain_warnings
from ..engine.notation import (
    bound_gather,
    bound_statement,
    display_gather,
    gather_latex,
    gather_text,
    latex,
    layer_names,
    rename,
    rule_text,
    statement_latex,
    statement_text,
    text,
)
from ..engine.proofs import Proof, kind_proofs
from ..engine.simplify import STRATEGIES, Trace
from ..spec import Spec
from .document import Document, Format, Rendered

__all__ = ["Explanation", "Format", "Rendered", "explain"]


@dataclass(frozen=True)
class Explanation(Rendered):
    """A rendered-on-demand explanation of one derivation (``passes``: with what
    each simplification pass did to each derived expression)."""

    derivation: Derivation
    passes: bool = False

    def document(self) -> Document:
        doc = _document(self.derivation)
        if self.passes:
            _passes(doc, self.derivation)
        return doc


def explain(spec: Spec, *, passes: bool = False) -> Explanation:
    """Explain the derivation of ``spec`` (derives it first); ``passes=True``
    adds each derived expression's simplification passes with the operation
    count after each."""
    return Explanation(derive(spec), passes)


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
    if any(t.role == "stat" for layer in d.layers for t in layer.kind.kind.tensors):
        doc.para(
            "Batch statistics (batch_norm's mean and var) are over the whole "
            "batch: their sums run over the batch's B rows too (a training batch; "
            "evaluation reads the running statistics instead), and so do the sums "
            "of their adjoints. The training-mode network is shown; dropout's "
            "mask is drawn per batch."
        )

    warnings = domain_warnings(spec)
    if warnings:
        doc.heading("Domain warnings")
        doc.para(
            "SymPy finds these user expressions defined on only part of the reals "
            "(where they are NaN or infinite outside):"
        )
        doc.listing([str(w) for w in warnings])
        doc.gap()

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
    written: set[str] = set()  # adjoints a rule has assigned: the next one adds
    for layer in reversed(d.layers):
        _backward(doc, d, layer, written)
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
        for (rule, form), assign in zip(
            zip(kd.rules, kd.gathers, strict=True),
            _assignments(kd.gathers),
            strict=True,
        ):
            form = display_gather(form, {})
            doc.eq(
                [
                    gather_text(form, {}, subscripts=True, assign=assign),
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
                "Gather forms checked against the scatter rules on "
                f"{checks} shape{'s' if checks > 1 else ''}: "
                f"largest difference {kd.check_error:.3g}."
            )
        for proof in kind_proofs(kind, kd.gathers):
            _proof(doc, proof)
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
    for n, st in enumerate(kind.forward):
        bound = bound_statement(st, layer)
        line = statement_text(bound, names, subscripts=True)
        doc.eq(
            f"{line}        shapes: {shapes}" if n == 0 else line,
            statement_latex(bound, names),
            layer_label(layer) if n == 0 else "",
        )
    act = layer.activation
    if act is not None:
        doc.eq(
            f"a{i} = {act.label}(z{i}),  {act.forward.lhs_text} = {act.forward.text}",
            rf"a^{{({i})}} = {act.forward.latex}".replace("z", f"z^{{({i})}}")
            if act.kind == "elementwise"
            else rf"a^{{({i})}}_i = {act.forward.latex}",
        )


def _claims(
    doc: Document, kd: KindDerivation, layer: LayerInfo, names: dict[str, str]
) -> None:
    """A layer's proved closed forms in its own names."""
    binding = dict(layer.binding)
    for proof in kind_proofs(kd.kind, kd.gathers):
        if not proof.holds:
            continue
        claim = proof.claim
        target = rename(sp.IndexedBase(f"d{claim.target}")[claim.index], names)
        value = rename(claim.value, names).xreplace(binding)
        count = text(sp.sympify(claim.count).xreplace(binding))
        doc.eq(
            f"{text(target, subscripts=True)} = {text(value, subscripts=True)},  "
            f"N = {count}",
            f"{latex(target)} = {latex(value)}, \\quad N = {latex(claim.count)}",
            "this layer's part, in closed form: proved (Layer kinds)",
        )


def _assignments(gathers: tuple[GatherRule, ...]) -> list[str]:
    """ "=" for a target's first rule, "+=" for the ones that add to it (a tensor
    read twice: the adjoint is the sum of both contributions)."""
    seen: set[str] = set()
    out = []
    for form in gathers:
        out.append("+=" if form.target in seen else "=")
        seen.add(form.target)
    return out


def _proof(doc: Document, proof: Proof) -> None:
    """The claim, the derived rules composed, and how SymPy proved them equal."""
    claim = proof.claim
    target = sp.IndexedBase(f"d{claim.target}")[claim.index]
    lhs, lhs_latex = text(target, subscripts=True), latex(target)
    n = str(claim.count) if isinstance(claim.count, sp.Symbol) else "N"
    status = "proved" if proof.holds else "NOT PROVED: the derivation is wrong"
    doc.para(f"Claim ({claim.source}): d{claim.target} = {claim.text}.")
    doc.eq(
        f"{lhs} = {text(claim.value, subscripts=True)}",
        f"{lhs_latex} = {latex(claim.value)}",
        "textbook form",
    )
    doc.eq(
        f"{lhs} = {text(proof.derived_split, subscripts=True)}",
        f"{lhs_latex} = {latex(proof.derived_split)}",
        "the derived rules above, composed; sums split by linearity",
    )
    kept = (
        f"; {', '.join(proof.kept)} kept as a symbol (read only under the root: "
        "the difference vanishes for every value of it)"
        if proof.kept
        else ""
    )
    count = "" if claim.count == sp.Symbol(n) else f" = {text(claim.count)} values"
    doc.para(
        f"Proof (SymPy, {n}{count} symbolic): "
        f"{', '.join(proof.expanded)} replaced by their forward statements "
        f"down to x{kept}; every sum split by linearity; the difference of the two "
        f"sides is 0. {status.capitalize()}."
    )


def layer_label(layer: LayerInfo) -> str:
    """``conv2d(filters=8, kernel=3x3, ...)`` with the layer's attribute values."""
    return layer.kind.kind.label(dict(layer.attrs))


def _backward(
    doc: Document, d: Derivation, layer: LayerInfo, written: set[str]
) -> None:
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
        adjoint = names.get(f"d{form.target}", f"d{form.target}")
        assign = "+=" if adjoint in written else "="
        written.add(adjoint)
        bound = bound_gather(form, layer)
        target_shape = layer.input_shape if role == "input" else None
        shape = f"   -> {_shape(target_shape)}" if target_shape else ""
        doc.eq(
            gather_text(bound, names, subscripts=True, assign=assign) + shape,
            gather_latex(bound, names),
        )
    if i > 1:
        _claims(doc, layer.kind, layer, names)
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


def _passes(doc: Document, d: Derivation) -> None:
    """Each derived expression through its strategy's passes, in order, with the
    operation count (sympy.count_ops) after each: how the chosen form was reached."""
    doc.heading("Simplification, pass by pass")
    doc.para(
        "Each derived expression as SymPy gave it (input), then after each pass of "
        "its strategy in order, with its operation count (sympy.count_ops); a pass "
        "that changed nothing says so. The passes are listed below."
    )
    seen: set[str] = set()
    for layer in d.layers:
        act = layer.activation
        if act is None or act.label in seen or not act.passes:
            continue
        seen.add(act.label)
        doc.heading(f"Activation {act.label} (layer {layer.index})", 3)
        for label, trace in act.passes:
            _trace(doc, label, trace)
    doc.heading(f"Loss {d.loss.label} on {d.layers[-1].activation.label}", 3)  # type: ignore[union-attr]
    for label, trace in d.loss.passes:
        _trace(doc, label, trace)
    for strategy in STRATEGIES:
        doc.para(f"The {strategy.name} strategy's passes:")
        doc.listing(strategy.describe().splitlines())


def _trace(doc: Document, label: str, trace: Trace) -> None:
    width = max(len(step.name) for step in trace.steps) + 4
    lines = [f"{'input':{width}} {trace.input_ops:3d} ops   {text(trace.input)}"]
    for n, step in enumerate(trace.steps, 1):
        shown = text(step.expr) if step.changed else "(unchanged)"
        name = f"{n}. {step.name}"
        lines.append(f"{name:{width}} {step.ops:3d} ops   {shown}")
    doc.para(f"{label} ({trace.strategy} strategy): {trace.input_ops} -> "
             f"{trace.steps[-1].ops if trace.steps else trace.input_ops} operations")  # fmt: skip
    doc.listing(lines, code=True)
