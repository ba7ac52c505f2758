"""Explanation, WorkedExample and Network in a real Jupyter kernel: a notebook
executed with nbclient shows them as LaTeX, Markdown and HTML, exactly as they
render here."""

from __future__ import annotations

import numpy as np
import pytest
from corpus import ROOT

import derive

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

SPEC = ROOT / "examples" / "xor.toml"
CELLS = [
    f"""import numpy as np
import derive
spec = derive.load_spec({str(SPEC)!r})
X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
y = np.array([0, 1, 1, 0])""",
    "derive.explain(spec)",
    "net = derive.Network(spec)\nderive.worked_example(spec, net.params, X[0], [0.0])",
    "net",
    "net.fit(X, y, epochs=30, validation_data=(X, y))",
]


def test_a_notebook_shows_explanations_examples_and_networks(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    results = []
    for cell in notebook.cells[1:]:
        (output,) = [o for o in cell.outputs if o.output_type == "execute_result"]
        results.append(output.data)
    explanation, worked, fresh, trained = results
    spec = derive.load_spec(SPEC)
    expected = derive.explain(spec)
    assert explanation["text/latex"] == expected._repr_latex_()
    assert explanation["text/markdown"] == expected._repr_markdown_()
    assert r"\delta" in explanation["text/latex"]
    net = derive.Network(spec)
    example = derive.worked_example(spec, net.params, np.zeros(2), [0.0])
    assert worked["text/latex"] == example._repr_latex_()
    assert worked["text/markdown"] == example._repr_markdown_()
    assert fresh["text/html"] == net._repr_html_()
    assert (
        "Not trained yet" in fresh["text/html"]
        and "dense(units=2)" in fresh["text/html"]
    )
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    net.fit(X, [0, 1, 1, 0], epochs=30, validation_data=(X, [0, 1, 1, 0]))
    assert trained["text/html"] == net._repr_html_()  # the same numbers, bit for bit
    last = f"<td>29</td><td>{net.history_['loss'][-1]:.6g}</td>"
    assert "Trained 30 epochs" in trained["text/html"] and last in trained["text/html"]
    assert "val_accuracy" in trained["text/html"]
