"""A small document model shared by the explanation and the worked example.

A :class:`Document` is a list of blocks (headings, paragraphs, equations),
each holding its text and LaTeX; :meth:`Document.render` writes it as plain
text, Markdown (equations as ``$$ ... $$``) or LaTeX. ``Rendered`` gives a
class ``str()``, ``render(fmt)`` and Jupyter display on top of ``document()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Format = Literal["text", "latex", "markdown"]


@dataclass(frozen=True)
class Heading:
    text: str
    level: int  # 1: the title; 2: a section; 3: a subsection


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Equation:
    """One displayed equation: its text lines (plain text) and its LaTeX."""

    lines: tuple[str, ...]
    latex: str
    note: str = ""


@dataclass(frozen=True)
class Listing:
    """Lines shown as they are: indented text, a Markdown list, a LaTeX itemize
    (``code``: a fenced Markdown block and LaTeX verbatim, columns kept)."""

    lines: tuple[str, ...]
    code: bool = False


@dataclass(frozen=True)
class Gap:
    """A blank line in the plain-text form (the other forms space blocks themselves)."""


Block = Heading | Paragraph | Equation | Listing | Gap


def _latex_text(text: str) -> str:
    return (
        text.replace("\\", r"\textbackslash{}")
        .replace("_", r"\_")
        .replace("%", r"\%")
        .replace("&", r"\&")
        .replace("#", r"\#")
        .replace("->", r"$\to$")
    )


@dataclass
class Document:
    """Blocks added in reading order."""

    blocks: list[Block] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(Heading(text, level))

    def para(self, text: str) -> None:
        self.blocks.append(Paragraph(text))

    def eq(
        self, lines: str | list[str] | tuple[str, ...], latex: str, note: str = ""
    ) -> None:
        text = (lines,) if isinstance(lines, str) else tuple(lines)
        self.blocks.append(Equation(text, latex, note))

    def listing(self, lines: list[str], code: bool = False) -> None:
        self.blocks.append(Listing(tuple(lines), code))

    def gap(self) -> None:
        self.blocks.append(Gap())

    def render(self, fmt: Format) -> str:
        out: list[str] = []
        for block in self.blocks:
            if isinstance(block, Heading):
                out.extend(_heading(block, fmt))
            elif isinstance(block, Paragraph):
                out.extend(
                    [_latex_text(block.text) if fmt == "latex" else block.text, ""]
                )
            elif isinstance(block, Equation):
                out.extend(_equation(block, fmt))
            elif isinstance(block, Listing):
                out.extend(_listing(block, fmt))
            elif fmt == "text":
                out.append("")
        return "\n".join(out).rstrip() + "\n"


def _heading(block: Heading, fmt: Format) -> list[str]:
    if fmt == "markdown":
        return ["#" * block.level + f" {block.text}", ""]
    if fmt == "latex":
        command = {1: "section", 2: "subsection"}.get(block.level, "subsubsection")
        return [rf"\{command}*{{{_latex_text(block.text)}}}", ""]
    underline = {1: "=", 2: "-"}.get(block.level, "~")
    lines = [block.text, underline * len(block.text)]
    return lines + ([""] if block.level == 1 else [])


def _equation(block: Equation, fmt: Format) -> list[str]:
    if fmt == "text":
        first, *rest = block.lines
        note = f"    [{block.note}]" if block.note else ""
        return [f"  {first}{note}", *(f"  {line}" for line in rest)]
    if fmt == "markdown":
        note = f"  \n*{block.note}*" if block.note else ""
        return [f"$$ {block.latex} $$" + note, ""]
    note = rf" \quad \text{{{_latex_text(block.note)}}}" if block.note else ""
    return [rf"\[ {block.latex} \]" + note]


def _listing(block: Listing, fmt: Format) -> list[str]:
    if fmt == "text":
        return [f"  {line}" for line in block.lines] + [""]
    if block.code:
        fence = ("```text", "```") if fmt == "markdown" else (
            r"\begin{verbatim}", r"\end{verbatim}")  # fmt: skip
        return [fence[0], *block.lines, fence[1], ""]
    if fmt == "markdown":
        return [f"- {line}" for line in block.lines] + [""]
    items = [rf"\item {_latex_text(line)}" for line in block.lines]
    return [r"\begin{itemize}", *items, r"\end{itemize}", ""]


class Rendered:
    """Something shown as text, Markdown or LaTeX: ``render(fmt)``, ``str()`` and
    Jupyter display on top of a subclass's ``document()``."""

    def document(self) -> Document:
        raise NotImplementedError

    def text(self) -> str:
        return self.document().render("text")

    def markdown(self) -> str:
        return self.document().render("markdown")

    def latex(self) -> str:
        return self.document().render("latex")

    def render(self, fmt: Format) -> str:
        return self.document().render(fmt)

    def __str__(self) -> str:
        return self.text()

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def _repr_latex_(self) -> str:
        return self.latex()
