"""Provenance: a module records the derive, SymPy and Numba versions it was
generated with, without making the golden files depend on the environment;
`derive check` warns when the running Numba is another one."""

from __future__ import annotations

import numba
import pytest
import sympy
from corpus import ROOT

import derive
from derive.cli import main
from derive.codegen import head
from derive.generate import comparable, generate_source, write_module
from derive.spec import load_spec

XOR = ROOT / "examples" / "xor.toml"


def test_the_header_records_the_versions_and_the_spec_hash():
    spec = load_spec(XOR)
    source = generate_source(spec)
    third = source.splitlines()[2]
    assert third == (
        f"# Provenance: derive {derive.__version__}, SymPy {sympy.__version__}, "
        f"Numba {numba.__version__}; spec hash {spec.hash}."
    )
    module = derive.build(spec)
    assert module.GENERATED_WITH == {
        "derive": derive.__version__,
        "sympy": sympy.__version__,
        "numba": numba.__version__,
    }


def test_other_versions_give_the_same_code_and_rewrite_nothing(
    tmp_path, monkeypatch, capsys
):
    """CI's fresh install (a newer Numba, another SymPy printing the same code)
    neither fails the golden files nor rewrites them."""
    spec = load_spec(XOR)
    here = generate_source(spec)
    monkeypatch.setattr(head, "tool_versions", lambda: ("9.9.9", "0.99.0rc1"))
    there = generate_source(spec)
    assert here != there and comparable(here) == comparable(there)
    changed = [
        (a, b) for a, b in zip(here.splitlines(), there.splitlines(), strict=True)
        if a != b
    ]  # fmt: skip
    assert len(changed) == 2 and "Numba 0.99.0rc1" in changed[0][1]
    path = tmp_path / "xor.py"
    path.write_text(here)
    assert write_module(spec, path) is False  # the same code: left as it is
    assert path.read_text() == here
    assert main(["generate", str(XOR), "-o", str(path), "--check"]) == 0
    assert "up to date" in capsys.readouterr().out
    # the golden file compares equal too (what test_generated checks)
    golden = (ROOT / "generated" / "xor.py").read_text()
    assert comparable(golden) == comparable(there)
    # a real change of the code still counts
    path.write_text(here.replace("acc += W1[j, k]", "acc -= W1[j, k]"))
    assert main(["generate", str(XOR), "-o", str(path), "--check"]) == 1


def test_spec_hashes_are_unchanged():
    """Provenance is in the module, not the spec: hashes (and so saved models,
    whose spec hash is checked on load) stay as they were."""
    assert load_spec(ROOT / "examples" / "seed001.toml").hash == "67d582b17686fdcb"
    assert load_spec(XOR).hash == "2164d704faf3b019"


def test_check_warns_when_the_running_numba_differs(monkeypatch, capsys):
    spec_path = ROOT / "examples" / "circles.toml"
    module = derive.build(load_spec(spec_path))
    monkeypatch.setitem(module.GENERATED_WITH, "numba", "0.1.0")
    assert main(["check", str(spec_path), "--samples", "2"]) == 0
    out, err = capsys.readouterr()
    assert "generated with Numba 0.1.0, this is Numba" in err
    assert f"Numba 0.1.0; running Numba {numba.__version__}" in out
    monkeypatch.setitem(module.GENERATED_WITH, "numba", numba.__version__)
    assert main(["check", str(spec_path), "--samples", "2"]) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("name", ["seed001", "digits_cnn"])
def test_golden_files_record_provenance(name):
    text = (ROOT / "generated" / f"{name}.py").read_text()
    assert text.splitlines()[2].startswith(f"# Provenance: derive {derive.__version__}")
