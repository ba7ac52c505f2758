"""``derive report``: the whole derivation of one architecture as one document.

A :class:`Report` holds, for one spec: the spec and the versions it was
generated with, the derivation (``explain``, with each expression's
simplification passes), the worked example of one sample when weights and data
are given, the generated code of the gradient function with its formula
comments, and the module's gradient self-test, run when the report is made. It
renders as Markdown, as a standalone LaTeX document, or as a Jupyter notebook
(nbformat, the ``notebook`` extra) whose code cells rebuild the module and run
the self-test again.
"""

from __future__ import annotations

import ast
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import DeriveError
from ..spec import Spec
from .explain import explain

if TYPE_CHECKING:
    from .worked import WorkedExample

__all__ = ["Report", "make_report"]


@dataclass(frozen=True)
class Report:
    """The parts of a report, each already rendered where it is text."""

    spec: Spec
    provenance: str  # "derive 0.3.0, SymPy 1.14.0, Numba 0.68.1"
    explanation_markdown: str
    explanation_latex: str
    worked_markdown: str | None
    worked_latex: str | None
    worked_note: str  # which sample, from which files
    gradient_code: str  # the generated _gradients kernel, comments included
    check_text: str  # str() of the module's GradientCheck
    check_ok: bool
    seconds: float  # how long making it took

    @property
    def title(self) -> str:
        return f"Derivation report: '{self.spec.name}' ({self.spec.architecture})"

    # ------------------------------------------------------------- markdown

    def markdown(self) -> str:
        parts = [
            f"# {self.title}\n",
            self._intro() + "\n",
            "## The spec\n",
            f"```toml\n{self.spec.to_toml().rstrip()}\n```\n",
            _shift(self.explanation_markdown),
        ]
        if self.worked_markdown is not None:
            parts.append(_noted(_shift(self.worked_markdown), self.worked_note))
        parts += [
            "## The gradient function\n",
            _CODE_NOTE + "\n",
            f"```python\n{self.gradient_code.rstrip()}\n```\n",
            "## Gradient self-test\n",
            _CHECK_NOTE + "\n",
            f"```text\n{self.check_text.rstrip()}\n```\n",
        ]
        return "\n".join(parts)

    def _intro(self) -> str:
        return (
            f"A {self.spec.architecture} network in {self.spec.dtype}, spec hash "
            f"{self.spec.hash}; generated with {self.provenance}. Every derivative "
            "below was derived by SymPy from the forward definitions; the gradient "
            "function is the generated code that computes them, and the self-test "
            "checks it against finite differences "
            f"({'passed' if self.check_ok else 'FAILED'})."
        )

    # ---------------------------------------------------------------- latex

    def latex(self) -> str:
        body = [
            r"\section*{The spec}",
            _verbatim(self.spec.to_toml()),
            self.explanation_latex,  # its title a section, like the report's
        ]
        if self.worked_latex is not None:
            worked = self.worked_latex.split("\n", 1)
            body += [worked[0], _latex_text(self.worked_note), *worked[1:]]
        body += [
            r"\section*{The gradient function}",
            _latex_text(_CODE_NOTE),
            r"{\footnotesize",
            _verbatim(self.gradient_code),
            "}",
            r"\section*{Gradient self-test}",
            _latex_text(_CHECK_NOTE),
            r"{\footnotesize",
            _verbatim(self.check_text),
            "}",
        ]
        return "\n".join(
            [
                r"\documentclass[10pt]{article}",
                r"\usepackage[T1]{fontenc}",
                r"\usepackage[utf8]{inputenc}",
                r"\usepackage{amsmath,amssymb}",
                r"\usepackage[margin=2cm]{geometry}",
                r"\allowdisplaybreaks",
                rf"\title{{{_latex_text(self.title)}}}",
                r"\date{}",
                r"\begin{document}",
                r"\maketitle",
                _latex_text(self._intro()),
                "",
                *body,
                r"\end{document}",
                "",
            ]
        )

    # ------------------------------------------------------------- notebook

    def notebook(self) -> Any:
        """The report as an nbformat v4 notebook: the text as Markdown cells,
        and code cells that rebuild the module and run its self-test again."""
        try:
            import nbformat
            from nbformat import v4
        except ImportError:  # pragma: no cover - the notebook extra
            raise DeriveError(
                "writing a notebook needs nbformat: pip install 'derive[notebook]'"
            ) from None
        spec_text = self.spec.to_toml()
        cells = [
            v4.new_markdown_cell(f"# {self.title}\n\n{self._intro()}"),
            v4.new_markdown_cell(
                "## The spec\n\nThe code cells rebuild the module from it (derive's "
                "cache, then Numba's, make this quick after the first time)."
            ),
            v4.new_code_cell(
                "import derive\n\n"
                f'spec = derive.parse_spec(r"""{spec_text}""")\n'
                "module = derive.build(spec)  # generated, cached, imported\n"
                "print(module.SPEC_HASH, module.GENERATED_WITH)"
            ),
            v4.new_markdown_cell(_shift(self.explanation_markdown)),
        ]
        if self.worked_markdown is not None:
            worked = _noted(_shift(self.worked_markdown), self.worked_note)
            cells.append(v4.new_markdown_cell(worked))
        cells += [
            v4.new_markdown_cell(
                f"## The gradient function\n\n{_CODE_NOTE}\n\n"
                f"```python\n{self.gradient_code.rstrip()}\n```"
            ),
            v4.new_markdown_cell(
                f"## Gradient self-test\n\n{_CHECK_NOTE} When the report was "
                f"written:\n\n```text\n{self.check_text.rstrip()}\n```\n\nRun again:"
            ),
            v4.new_code_cell(
                "result = module.check_gradients()\nprint(result)\nassert result.ok"
            ),
        ]
        notebook = v4.new_notebook(cells=cells)
        notebook.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        notebook.metadata["language_info"] = {"name": "python"}
        nbformat.validate(notebook)
        return notebook

    def notebook_text(self) -> str:
        import nbformat

        return nbformat.writes(self.notebook()) + "\n"


_CODE_NOTE = (
    "The generated kernel `_gradients`, as derive wrote it: the training forward, "
    "then the loss with the fused output delta, then each layer's derived rules, "
    "each loop nest under the formula it computes (buffers hold one column per "
    "sample)."
)
_CHECK_NOTE = (
    "The module's own check (`check_gradients`): central finite differences of "
    "the training-mode batch loss in float64 against these gradients."
)


def _shift(markdown: str) -> str:
    """A document's Markdown one heading level down (its title becomes a
    section of the report)."""
    lines = []
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        lines.append("#" + line if line.startswith("#") and not fenced else line)
    return "\n".join(lines) + "\n"


def _noted(markdown: str, note: str) -> str:
    """A document's Markdown with a note under its title."""
    title, _, rest = markdown.partition("\n")
    return f"{title}\n\n{note}\n{rest}"


def _latex_text(text: str) -> str:
    out = []
    for char in text:
        out.append(
            {
                "\\": r"\textbackslash{}",
                "_": r"\_",
                "%": r"\%",
                "&": r"\&",
                "#": r"\#",
                "$": r"\$",
                "{": r"\{",
                "}": r"\}",
                "^": r"\^{}",
                "~": r"\~{}",
            }.get(char, char)
        )
    return "".join(out).replace("`", "")


def _verbatim(text: str) -> str:
    return "\\begin{verbatim}\n" + text.rstrip("\n") + "\n\\end{verbatim}"


def _gradient_code(source: str) -> str:
    """The ``_gradients`` function of a generated module, decorator included."""
    tree = ast.parse(source)
    lines = source.splitlines()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "_gradients":
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            assert node.end_lineno is not None
            return "\n".join(lines[start - 1 : node.end_lineno]) + "\n"
    raise DeriveError(
        "the generated module has no _gradients function"
    )  # pragma: no cover


def make_report(
    spec: Spec,
    *,
    worked: WorkedExample | None = None,
    worked_note: str = "",
    passes: bool = True,
) -> Report:
    """Derive, generate, build and self-test ``spec`` into a :class:`Report`
    (``worked``: a worked example to include; ``passes``: the simplification
    passes of every derived expression)."""
    from ..codegen.head import tool_versions
    from ..generate import build, generate_source

    started = time.perf_counter()
    explanation = explain(spec, passes=passes)
    source = generate_source(spec)
    result = build(spec).check_gradients()
    sympy_version, numba_version = tool_versions()
    from .._version import __version__

    return Report(
        spec=spec,
        provenance=f"derive {__version__}, SymPy {sympy_version}, Numba {numba_version}",
        explanation_markdown=explanation.markdown(),
        explanation_latex=explanation.latex(),
        worked_markdown=worked.markdown() if worked is not None else None,
        worked_latex=worked.latex() if worked is not None else None,
        worked_note=worked_note,
        gradient_code=_gradient_code(source),
        check_text=str(result),
        check_ok=bool(result.ok),
        seconds=time.perf_counter() - started,
    )
