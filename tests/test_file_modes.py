"""Files derive writes get the mode a plain ``open`` gives (0666 less the
umask), not mkstemp's 0600: users' outputs, and the module cache shared by
other users and worker processes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from corpus import ROOT
from numba_env import caching_env

from derive.cli import main

XOR = ROOT / "examples" / "xor.toml"


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_cli_outputs_have_the_umask_mode(tmp_path, capsys, mask):
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (16, 2))
    lines = ["x1,x2,label"] + [f"{a},{b},{int(a > b)}" for a, b in X]
    data = tmp_path / "data.csv"
    data.write_text("\n".join(lines) + "\n")
    outputs = {
        "module": tmp_path / "xor.py",
        "model": tmp_path / "xor.npz",
        "curve": tmp_path / "curve.png",
        "predictions": tmp_path / "predictions.csv",
    }
    with umask(mask):
        assert main(["generate", str(XOR), "-o", str(outputs["module"])]) == 0
        assert main(["fit", str(XOR), "--data", str(data), "--epochs", "2",
                     "--out", str(outputs["model"]), "--plot", str(outputs["curve"]),
                     "--quiet"]) == 0  # fmt: skip
        assert main(["predict", str(outputs["model"]), "--data", str(data),
                     "--out", str(outputs["predictions"])]) == 0  # fmt: skip
    capsys.readouterr()
    for name, path in outputs.items():
        assert mode(path) == 0o666 & ~mask, (name, oct(mode(path)))


@pytest.mark.parametrize("mask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_module_cache_files_have_the_umask_mode(tmp_path, mask):
    """A fresh interpreter with this umask builds a module into an empty cache
    and compiles a kernel: the module, Numba's cache files and the folders are
    readable by the group (and others under 022), as a shared cache needs."""
    cache = tmp_path / "cache"
    code = f"""
        import os
        os.umask({mask:#o})
        import numpy as np
        import derive
        module = derive.build(derive.load_spec({str(XOR)!r}))
        module.predict(module.init_params(0), np.zeros((3, 2)))
        print(module.__file__)
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=caching_env(DERIVE_CACHE_DIR=str(cache)),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    module_file = Path(result.stdout.split()[-1])
    assert module_file.parent.parent == cache
    files = [p for p in cache.rglob("*") if p.is_file()]
    numba_files = [p for p in files if p.suffix in (".nbi", ".nbc")]
    assert module_file in files and numba_files, files
    for path in files:
        assert mode(path) == 0o666 & ~mask, (path, oct(mode(path)))
    for path in [cache, *(p for p in cache.rglob("*") if p.is_dir())]:
        assert mode(path) == 0o777 & ~mask, (path, oct(mode(path)))
