"""The example scripts run and print what their tutorials printed.

Each script in examples/ runs in its own interpreter, as a user would run it;
assertions read its output. Built modules are cached (conftest.py sets
DERIVE_CACHE_DIR, which the child processes inherit), so a warm run takes a
few seconds per script; the timeout leaves room for a cold Numba compile.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TIMEOUT_S = 300


def run_example(script: str, *args: str) -> str:
    """Run examples/SCRIPT with the test interpreter; return its stdout."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def number_after(pattern: str, text: str) -> float:
    """The number that follows the regex ``pattern`` in ``text``."""
    match = re.search(pattern + r"\s*([-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)", text)
    assert match, f"{pattern!r} not found in:\n{text}"
    return float(match.group(1))


def test_every_example_script_is_tested():
    tested = {
        "digits_cnn.py",
        "seed000_classifier.py",
        "seed001_adam.py",
        "seed002_regression.py",
        "seed004_xor.py",
        "two_circles_hidden.py",
    }
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_seed000_classifier():
    out = run_example("seed000_classifier.py")
    # The tutorial's init (default_rng(111)) and data give its first cost.
    first = number_after(r"first cost \(tutorial's init, raw features\):", out)
    assert first == pytest.approx(0.7031613467097517, abs=1e-10)
    assert re.search(r"^\s+1\s+0\.703161\s+0\.703161$", out, re.M)
    # With the bias gradient right, iteration 21 differs from the tutorial's.
    assert re.search(r"^\s+21\s+0\.659657\s+0\.660989$", out, re.M)
    # Standardized features: all 10 samples on the right side of 0.5.
    assert (
        number_after(r"standardized features.*?; accuracy", out.replace("\n", " "))
        == 100
    )
    rows = re.findall(r"^\s+\d+\s+\d+\s+([01])\s+[\d.]+\s+([01])$", out, re.M)
    assert len(rows) == 10 and all(label == guess for label, guess in rows)


def test_seed001_adam():
    out = run_example("seed001_adam.py")
    assert number_after(r"Cost: ours", out) == pytest.approx(0.19522886, abs=1e-8)
    assert number_after(r"tutorial's 4-decimal values:", out) < 5e-5
    # The worked example of sample 0 is printed, with the tutorial's numbers.
    assert "Worked example: 'seed001_adam' (2-3-2-1), sample 0" in out
    assert "delta3 = dL/dz3 = a - y" in out and "= [0.091123]" in out
    # Adam's first step moves each parameter by lr against its gradient's sign.
    assert number_after(r"each step equals -0\.01 \* sign\(gradient\) to", out) < 1e-6
    match = re.search(r"outputs \[([\d.]+) ([\d.]+)\] for targets", out)
    assert match and float(match.group(1)) < 0.05 and float(match.group(2)) > 0.95


def test_seed002_regression():
    out = run_example("seed002_regression.py")
    assert "delta3 = z - y" in out or "delta3 = -y + z" in out
    # The tutorial's Equation 7 with its numbers: ~ -2.77.
    assert number_after(r"\* 0\.02454 =", out) == pytest.approx(-2.7730, abs=1e-4)
    assert "Output layer 3: identity with quadratic" in out
    assert number_after(r"R\^2", out) > 0.95


def test_seed004_xor():
    out = run_example("seed004_xor.py")
    assert number_after(r"; accuracy", out) == 100
    outputs = [float(v) for v in re.findall(r"output ([\d.]+)$", out, re.M)]
    assert len(outputs) == 4
    assert (
        outputs[0] < 0.1 and outputs[1] > 0.9 and outputs[2] > 0.9 and outputs[3] < 0.1
    )
    # Two sigmoid hidden units sometimes stop in XOR's local minimum.
    assert int(re.search(r"(\d+) of 10 initializations", out).group(1)) >= 6


def test_two_circles_hidden(tmp_path):
    picture = tmp_path / "hidden.png"
    out = run_example("two_circles_hidden.py", "--plot", str(picture))
    assert number_after(r"held-out points", out) >= 95
    # No straight line separates the circles in the plane; one does in the
    # hidden layer's activations.
    assert number_after(r"input plane \(x1, x2\):", out) < 70
    assert number_after(r"hidden layer 1 \(\s*\d+ activations\):", out) >= 95
    # The first layer's units draw their lines between the two circles.
    assert int(re.search(r"(\d+) of \d+ lines pass between", out).group(1)) >= 3
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_digits_cnn(tmp_path):
    pytest.importorskip("sklearn")
    picture, curves = tmp_path / "filters.png", tmp_path / "curves.png"
    out = run_example("digits_cnn.py", "--epochs", "15", "--plot", str(picture),
                      "--curves", str(curves))  # fmt: skip
    cnn = number_after(r"digits_cnn .*?held-out accuracy", out)
    dense = number_after(r"digits_dense .*?held-out accuracy", out)
    bn = number_after(r"digits_bn .*?held-out accuracy", out)
    assert cnn >= 93 and dense >= 90 and bn >= 95, out
    assert "1x8x8 -> conv2d 8x8x8 -> max_pool2d 8x4x4 -> flatten 128 -> dense 10" in out
    assert "64 -> dense 32 -> batch_norm 32 -> dense 10" in out
    # batch norm: a lower held-out loss (evaluation mode, running statistics)
    # after 1 and 5 epochs than the same network without it (1.35 vs 0.72 and
    # 0.20 vs 0.14 when written)
    for epoch in (1, 5):
        pattern = rf"held-out loss after epoch.*?\b{epoch}:"
        dense_loss = number_after(rf"digits_dense\s+{pattern}", out)
        bn_loss = number_after(rf"digits_bn\s+{pattern}", out)
        assert bn_loss < 0.8 * dense_loss, out
    for png in (picture, curves):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
