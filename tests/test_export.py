"""`derive export`: the frozen Python module (run where derive is not importable,
the same numbers as the model) and the ONNX model from the command line, with
the CLI's file rules (exit 2 and a message, no overwrite without --force)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from corpus import ROOT, TRAINING_CORPUS

from derive import Network
from derive.cli import main
from derive.spec import load_spec, spec_from_dict


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def blobs(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    return X, np.where(X[:, 0] + X[:, 1] > 0, "up", "down")


def run_frozen(path: Path, X: np.ndarray, tmp_path: Path) -> dict[str, np.ndarray]:
    """Import the frozen module in a fresh interpreter in which derive cannot be
    imported; returns its predictions."""
    np.save(tmp_path / "X.npy", X)
    code = f"""
        import importlib.util, sys
        sys.modules["derive"] = None  # import derive fails here
        import numpy as np
        spec = importlib.util.spec_from_file_location("frozen", {str(path)!r})
        frozen = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(frozen)
        X = np.load({str(tmp_path / "X.npy")!r})
        out = {{"outputs": frozen.outputs(X), "predict": frozen.predict(X)}}
        if frozen.TASK != "regression":
            out["proba"] = frozen.predict_proba(X)
        np.savez({str(tmp_path / "frozen.npz")!r}, **out)
        print(sorted(m for m, loaded in sys.modules.items() if loaded is not None
                     and m.split(".")[0] in ("derive", "torch", "onnx", "sympy",
                                             "jinja2")))
    """
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                            capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"  # numpy and numba (and scipy's BLAS) only
    with np.load(tmp_path / "frozen.npz") as archive:
        return dict(archive)


def test_frozen_module_predicts_like_the_model(tmp_path, capsys):
    X, y = blobs()
    net = Network(load_spec(ROOT / "examples" / "xor.toml")).fit(X, y, epochs=50)
    model = net.save(tmp_path / "xor.npz")
    out = tmp_path / "predict_xor.py"
    code, stdout, _ = run(capsys, "export", model, "--format", "python", "-o", out)
    assert code == 0 and f"wrote {out}" in stdout and "predict_proba(X)" in stdout
    got = run_frozen(out, X, tmp_path)
    np.testing.assert_array_equal(got["outputs"], net.outputs(X))
    np.testing.assert_array_equal(got["predict"], net.predict(X))
    np.testing.assert_array_equal(got["proba"], net.predict_proba(X))
    assert got["predict"].tolist()[:3] == net.predict(X).tolist()[:3]
    text = out.read_text()
    assert 'CLASSES = np.array(["down", "up"])' in text
    assert "import derive" not in text and "from derive" not in text
    from ruff.__main__ import find_ruff_bin

    config = str(ROOT / "pyproject.toml")  # the rules generated modules follow
    check = subprocess.run([find_ruff_bin(), "check", "--config", config, str(out)],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout


def test_frozen_module_of_a_network_with_norms_and_images(tmp_path):
    rng = np.random.default_rng(3)
    spec = spec_from_dict(TRAINING_CORPUS["conv_bn_ln_residual"])  # batch norm, images
    net = Network(spec)
    for buffer in net.buffers:  # running statistics away from 0 and 1
        buffer[...] = rng.uniform(0.5, 2.0, buffer.shape)
    X = rng.normal(size=(20, *spec.input_shape))
    path = net.to_python(tmp_path / "predict_conv.py")
    got = run_frozen(path, X.reshape(20, -1), tmp_path)  # rows flattened, as in a CSV
    np.testing.assert_array_equal(got["outputs"], net.outputs(X))
    np.testing.assert_array_equal(got["predict"], net.predict(X))


def test_export_onnx_from_the_command_line(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    X, y = blobs()
    net = Network(load_spec(ROOT / "examples" / "xor.toml")).fit(X, y, epochs=5)
    model = net.save(tmp_path / "xor.npz")
    out = tmp_path / "model.onnx"
    code, stdout, _ = run(capsys, "export", model, "--format", "onnx", "-o", out)
    assert code == 0 and "opset 21, IR version 10" in stdout and "(N, 2)" in stdout
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(["Y"], {"X": X.astype(np.float32)})[0]
    np.testing.assert_allclose(got, net.outputs(X), rtol=1e-5, atol=1e-6)
    before = out.read_bytes()
    code, _, err = run(capsys, "export", model, "--format", "onnx", "-o", out)
    assert code == 2 and "exists; choose another path or pass --force" in err
    assert out.read_bytes() == before
    assert (
        run(capsys, "export", model, "--format", "onnx", "-o", out, "--force")[0] == 0
    )
    assert [p.name for p in tmp_path.glob(".*")] == []  # no temporary files left


def test_export_refuses_bad_arguments(tmp_path, capsys, monkeypatch):
    code, _, err = run(capsys, "export", tmp_path / "none.npz", "--format", "onnx")
    assert code == 2 and "model file not found" in err and "Traceback" not in err
    model = Network(load_spec(ROOT / "examples" / "xor.toml")).save(tmp_path / "m.npz")
    code, _, err = run(
        capsys, "export", model, "--format", "onnx", "-o", tmp_path / "m.py"
    )
    assert code == 2 and "an ONNX export is a .onnx file" in err
    code, _, err = run(capsys, "export", model, "--format", "python", "-o", tmp_path)
    assert code == 2 and "a Python export is a .py file" in err
    with pytest.raises(SystemExit) as info:
        main(["export", str(model), "--format", "keras"])
    assert info.value.code == 2
    monkeypatch.chdir(tmp_path)  # the default names
    assert run(capsys, "export", model, "--format", "python")[0] == 0
    assert (tmp_path / "predict_xor.py").is_file()


def test_exporters_and_torch_are_imported_only_when_used():
    code = """
        import sys
        import numpy as np
        import derive, derive.cli, derive.network
        net = derive.Network(derive.load_spec(sys.argv[1]))
        net.predict(np.zeros((2, 2)))
        try:
            import derive.sklearn
        except ImportError:
            pass
        print(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "onnx",
              "onnxruntime", "nbclient", "nbformat"}))
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(ROOT / "examples" / "xor.toml")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_predict_and_onnx_export_of_a_saved_model_do_not_import_sympy(tmp_path):
    """derive predict and derive export --format onnx on a model whose module is
    built derive nothing, so they never import SymPy (a user expression's ONNX
    nodes would; the xor example has none)."""
    pytest.importorskip("onnx")
    X, y = blobs()
    net = Network(load_spec(ROOT / "examples" / "xor.toml")).fit(X, y, epochs=2)
    model = net.save(tmp_path / "xor.npz")  # built here: the module is cached
    data = tmp_path / "rows.csv"
    np.savetxt(data, X, delimiter=",", header="x0,x1", comments="")
    code = """
        import sys
        from derive.cli import main
        model, data, out = sys.argv[1:]
        first = main(["predict", model, "--data", data, "--out", out + ".csv"])
        second = main(["export", model, "--format", "onnx", "-o", out + ".onnx"])
        print(first, second, "sympy" in sys.modules)
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(model), str(data),
         str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-3:] == ["0", "0", "False"]
    assert (tmp_path / "out.onnx").is_file() and (tmp_path / "out.csv").is_file()
