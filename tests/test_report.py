"""derive report: the whole derivation of one architecture as a notebook (run
in a real kernel by nbclient), Markdown, or LaTeX (compiled where TeX is)."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from corpus import ROOT

import derive
from derive.cli import main
from derive.present.report import make_report

SPEC = ROOT / "examples" / "two_circles.toml"  # 2-8-1 tanh/sigmoid, BCE, adam


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    """A trained two_circles model and its data, as `derive fit` leaves them."""
    folder = tmp_path_factory.mktemp("report")
    from derive.datasets import two_circles

    X, y = two_circles()
    X, y = X[:200], y[:200]
    data = folder / "points.csv"
    rows = [f"{a!r},{b!r},{int(c)}" for (a, b), c in zip(X.tolist(), y, strict=True)]
    data.write_text("x1,x2,label\n" + "\n".join(rows) + "\n")
    network = derive.Network.from_spec(SPEC)
    network.fit(X, y, epochs=2)
    model = folder / "model.npz"
    network.save(model)
    return folder, model, data


@pytest.fixture(scope="module")
def report(model_and_data):
    """The report of two_circles with the worked example of row 3 (the CLI's way)."""
    from argparse import Namespace

    from derive.cli_trust import _worked_example

    folder, model, data = model_and_data
    spec = derive.load_spec(SPEC)
    args = Namespace(weights=model, data=data, target=None, sample=3)
    worked, note = _worked_example(spec, args)
    return make_report(spec, worked=worked, worked_note=note)


def test_markdown_from_the_cli(model_and_data, capsys):
    folder, model, data = model_and_data
    out = folder / "report.md"
    args = ["report", str(SPEC), "-o", str(out), "--weights", str(model),
            "--data", str(data), "--sample", "3"]  # fmt: skip
    assert main(args) == 0
    said = capsys.readouterr().out
    assert re.match(
        r"wrote .*report\.md \(markdown, \d+ KiB, in [\d.]+ s; self-test passed\)", said
    )
    text = out.read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "## The spec",
        "## Derivation of 'two_circles': a 2-8-1 network, float64",
        "## Worked example: 'two_circles' (2-8-1), sample 3",
        "## The gradient function",
        "## Gradient self-test",
    ]
    assert '```toml\nname = "two_circles"' in text
    assert "### Simplification, pass by pass" in text
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert code.startswith("@numba.njit(cache=True") and "def _gradients(" in code
    assert "# delta2 = dL/dz2 = (a - y) / batch_size" in code
    assert "gradient check of 'two_circles': OK" in text
    assert "row 3 of points.csv with the weights of model.npz" in text
    # never over a file without --force; a clear message for a bad name
    assert main(args) == 2
    assert "exists; choose another path or pass --force" in capsys.readouterr().err
    assert main(["report", str(SPEC), "-o", str(folder / "r.docx")]) == 2
    assert "give a .ipynb, .md or .tex file name" in capsys.readouterr().err
    assert main(["report", str(SPEC), "--weights", str(model)]) == 2
    assert "needs both --weights" in capsys.readouterr().err


def test_latex_structure_and_compile(report, tmp_path):
    tex = report.latex()
    assert tex.startswith("\\documentclass") and tex.rstrip().endswith(
        "\\end{document}"
    )
    for name in ("document", "verbatim"):
        assert tex.count(f"\\begin{{{name}}}") == tex.count(f"\\end{{{name}}}") >= 1
    opened = re.findall(r"\\begin\{(\w+\*?)\}", tex)
    closed = re.findall(r"\\end\{(\w+\*?)\}", tex)
    assert sorted(opened) == sorted(closed)
    sections = re.findall(r"\\section\*\{([^}]*)\}", tex)
    assert sections[0] == "The spec" and "The gradient function" in sections
    assert "Gradient self-test" in sections
    assert any(section.startswith("Worked example") for section in sections)
    assert "Derivation of 'two\\_circles'" in " ".join(sections)
    assert "def _gradients(" in tex and "\\[" in tex  # code and equations
    if shutil.which("pdflatex") is None:
        pytest.skip("no TeX installation: structure checked, not compiled")
    (tmp_path / "report.tex").write_text(tex)
    out = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:]
    assert (tmp_path / "report.pdf").stat().st_size > 10_000


def test_notebook_runs_in_a_real_kernel(report, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = tmp_path / "report.ipynb"
    path.write_text(report.notebook_text())
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds.count("code") == 2 and kinds[0] == "markdown"
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert "$$" in markdown and "def _gradients(" in markdown
    assert "## Worked example: 'two_circles'" in markdown
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3").execute()
    outputs = [
        "".join(o.get("text", "") for o in cell.outputs)
        for cell in notebook.cells
        if cell.cell_type == "code"
    ]
    assert derive.load_spec(SPEC).hash in outputs[0]
    assert "gradient check of 'two_circles': OK" in outputs[1]
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]  # fmt: skip
    assert not errors


def test_report_without_a_worked_example_and_a_float32_spec():
    spec = derive.load_spec(ROOT / "examples" / "softmax_classifier.toml")
    report = make_report(spec, passes=False)
    text = report.markdown()
    assert "## Worked example" not in text and "pass by pass" not in text
    assert "float32 formulas in float64" in text and report.check_ok
    assert report.seconds > 0 and np.isfinite(report.seconds)
