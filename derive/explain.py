"""Explanations of a derivation: text, LaTeX and Markdown, like a textbook.

``explain(spec)`` returns an :class:`Explanation`; ``str()`` gives plain text,
``.latex()`` and ``.markdown()`` the other forms, and Jupyter renders it via
``_repr_markdown_`` / ``_repr_latex_``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .derivation import Derivation, derive
from .spec import Spec

Format = Literal["text", "latex", "markdown"]


class Rendered:
    """Something shown as text, Markdown or LaTeX: ``render(fmt)``, ``str()`` and
    Jupyter display on top of a subclass's ``text``/``markdown``/``latex``."""

    def text(self) -> str:
        raise NotImplementedError

    def markdown(self) -> str:
        raise NotImplementedError

    def latex(self) -> str:
        raise NotImplementedError

    def render(self, fmt: Format) -> str:
        renderers = {"text": self.text, "latex": self.latex, "markdown": self.markdown}
        return renderers[fmt]()

    def __str__(self) -> str:
        return self.text()

    def _repr_markdown_(self) -> str:
        return self.markdown()


def title_lines(title: str, fmt: Format) -> list[str]:
    """A document title in the format, followed by a blank line."""
    if fmt == "markdown":
        return [f"# {title}", ""]
    if fmt == "latex":
        return [rf"\section*{{{title.replace('_', chr(92) + '_')}}}", ""]
    return [title, "=" * len(title), ""]


@dataclass(frozen=True)
class Explanation(Rendered):
    """A rendered-on-demand explanation of one derivation."""

    derivation: Derivation

    def text(self) -> str:
        return "\n".join(_lines(self.derivation, "text"))

    def markdown(self) -> str:
        return "\n".join(_lines(self.derivation, "markdown"))

    def latex(self) -> str:
        return "\n".join(_lines(self.derivation, "latex"))

    def _repr_latex_(self) -> str:
        return self.latex()


def explain(spec: Spec) -> Explanation:
    """Explain the derivation of ``spec`` (derives it first)."""
    return Explanation(derive(spec))


def _lines(d: Derivation, fmt: Format) -> list[str]:
    spec = d.spec
    n = len(d.layers)
    out: list[str] = []

    def heading(title: str) -> None:
        if fmt == "markdown":
            out.extend([f"## {title}", ""])
        elif fmt == "latex":
            out.extend([rf"\subsection*{{{title}}}", ""])
        else:
            out.extend([title, "-" * len(title)])

    def eq(text: str, latex: str, note: str = "") -> None:
        if fmt == "text":
            out.append(f"  {text}" + (f"    [{note}]" if note else ""))
        elif fmt == "markdown":
            out.append(f"$$ {latex} $$" + (f"  \n*{note}*" if note else ""))
            out.append("")
        else:
            out.append(rf"\[ {latex} \]" + (rf" \quad \text{{{note}}}" if note else ""))

    def para(text: str) -> None:
        if fmt == "latex":
            text = text.replace("_", r"\_")
        out.append(text)
        out.append("")

    arch = "-".join(str(s) for s in spec.sizes)
    title = f"Derivation of '{spec.name}': a {arch} network, {spec.dtype}"
    out.extend(title_lines(title, fmt))
    para(
        "Rows of X are samples; layer l has W_l of shape (n_l, n_{l-1}) and b_l of "
        "shape (n_l,). Every derivative below was derived by SymPy from the forward "
        "definitions; none was typed in."
    )

    heading("Forward pass")
    for layer in d.layers:
        i = layer.index
        act = layer.activation
        eq(
            f"z{i} = a{i - 1} @ W{i}.T + b{i}        shapes: ({'m'}, {layer.n_in}) @ "
            f"({layer.n_in}, {layer.n_out}) -> (m, {layer.n_out})",
            rf"z^{{({i})}} = a^{{({i - 1})}} W^{{({i})\top}} + b^{{({i})}}",
        )
        eq(
            f"a{i} = {act.label}(z{i}),  {act.forward.lhs_text} = {act.forward.text}",
            rf"a^{{({i})}} = {act.forward.latex}".replace("z", f"z^{{({i})}}")
            if act.kind == "elementwise"
            else rf"a^{{({i})}}_i = {act.forward.latex}",
        )
    out.append("")

    heading("Activation derivatives")
    seen: set[str] = set()
    for layer in d.layers:
        act = layer.activation
        if act.label in seen:
            continue
        seen.add(act.label)
        if act.kind == "softmax":
            assert act.jacobian is not None
            eq(f"{act.label}: {act.jacobian.line}", act.jacobian.latex_line, "Jacobian")
            continue
        assert act.derivative_z is not None
        eq(
            f"{act.label}: f'(z) = {act.derivative_z.text}",
            f"f'(z) = {act.derivative_z.latex}",
        )
        if act.derivative_a is not None:
            note = (
                "used by the code" if act.derivative_form == "a" else "found, not used"
            )
            eq(
                f"{act.label}: f'   = {act.derivative_a.text}  (in terms of a = f(z))",
                f"f' = {act.derivative_a.latex}",
                note,
            )
        else:
            para(f"{act.label}: no form in terms of a = f(z) found; the code uses z.")
    out.append("")

    heading("Loss")
    loss = d.loss
    reduce = "mean" if loss.reduce == "mean" else "sum"
    para(
        f"Loss {loss.label}: per output element l(y_hat, y); per sample the {reduce} "
        f"over the {spec.sizes[-1]} outputs; the batch loss is the mean over the m rows."
    )
    eq(loss.per_element.line, loss.per_element.latex_line)
    eq(loss.gradient.line, loss.gradient.latex_line, "loss gradient")
    eq(
        f"evaluated as l = {loss.value.text}",
        loss.value.latex_line,
        "stable form, including the 1/n_out of a mean"
        if reduce == "mean"
        else "stable form",
    )
    out.append("")

    heading("Output delta (fused)")
    eq(
        f"delta{n} = dL/dz{n} = ({loss.output_delta.text}) / m",
        rf"\delta^{{({n})}} = \frac{{1}}{{m}}\left({loss.output_delta.latex}\right)",
        f"reads {loss.delta_form}",
    )
    out.append("")

    heading("Backpropagation (dense layer rules)")
    para("Derived from the index form, then checked against the matrix rules:")
    for f in d.dense.index_forms:
        eq(f.line, f.latex_line)
    for name, text, latex in d.dense.matrix_forms:
        eq(f"{name}: {text}", latex)
    out.append("")

    heading("Per layer")
    for layer in reversed(d.layers):
        i = layer.index
        prev = "X" if i == 1 else f"a{i - 1}"
        eq(
            f"grad_W{i} = delta{i}.T @ {prev}     ({layer.n_out}, m) @ (m, {layer.n_in}) "
            f"-> ({layer.n_out}, {layer.n_in})",
            rf"\nabla_{{W^{{({i})}}}} = \delta^{{({i})\top}} a^{{({i - 1})}}",
        )
        eq(
            f"grad_b{i} = sum over rows of delta{i}     -> ({layer.n_out},)",
            rf"\nabla_{{b^{{({i})}}}} = \textstyle\sum_{{rows}} \delta^{{({i})}}",
        )
        if i > 1:
            below = d.layers[i - 2]
            act = below.activation
            chosen = (
                act.derivative_a if act.derivative_form == "a" else act.derivative_z
            )
            assert chosen is not None
            eq(
                f"delta{i - 1} = (delta{i} @ W{i}) * f'(z{i - 1}),  f' = {chosen.text}"
                f"     (m, {layer.n_out}) @ ({layer.n_out}, {layer.n_in}) -> "
                f"(m, {layer.n_in})",
                rf"\delta^{{({i - 1})}} = \left(\delta^{{({i})}} W^{{({i})}}\right) "
                rf"\odot \left({chosen.latex}\right)",
            )
    out.append("")
    heading("Simplification passes")
    for line in d.strategy.splitlines():
        para(line) if fmt != "text" else out.append(f"  {line}")
    return out
