"""The gradient self-test modules carry (check_gradients, --self-test): it passes
on every correct module, fails on modules whose derived lines were edited, and
catches a 1% error in any single gradient, in float64 and float32 modules."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from corpus import CORPUS, ROOT, TRAINING_CORPUS

import derive
from derive.generate import generate_source, import_path
from derive.spec import load_spec, spec_from_dict

# Modules other tests compile anyway (the cache is shared by fingerprint): the
# float64 corpus, the training-time layers, and one float32 example with BLAS.
FLOAT32 = "softmax_classifier"  # float32, relu/gelu, softmax + cross-entropy, BLAS


def _float32_module():
    return derive.build(load_spec(ROOT / "examples" / f"{FLOAT32}.toml"))


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_correct_modules_pass(name):
    module = derive.build(CORPUS[name])
    for seed in range(2):
        result = module.check_gradients(seed=seed)
        assert result.ok, str(result)
        assert result.worst_relative_error < 1e-6
        assert result.checked + result.skipped == sum(
            min(p.size, 100) for p in result.parameters
        )


@pytest.mark.parametrize("name", sorted(TRAINING_CORPUS))
def test_training_time_layers_pass(name):
    """Batch norm (the batch gradient), dropout (fixed masks; and none), residual
    connections, layer norm, conv and pooling."""
    module = derive.build(spec_from_dict(TRAINING_CORPUS[name]))
    result = module.check_gradients(seed=1)
    assert result.ok, str(result)
    if module._MASKS:
        masks = [np.ones((8, *shape)) for _, shape, _ in module._MASKS]
        assert module.check_gradients(seed=2, masks=masks).ok


def test_float32_module_is_checked_in_float64():
    module = _float32_module()
    result = module.check_gradients()
    assert result.ok, str(result)
    # the float32 kernels' own gradients, against their float64 evaluation
    assert result.float32_error is not None and result.float32_error < 1e-4
    assert "float32 formulas in float64" in str(result)
    # the same kernel, compiled for float64 arrays too (and run in float32 by
    # loss_and_grad for float32_error)
    dtypes = {str(sig[0].dtype) for sig in module._gradients.signatures}
    assert dtypes == {"float32", "float64"}


def test_report_names_the_point_and_every_parameter():
    module = derive.build(CORPUS["example_circles"])
    result = module.check_gradients(seed=3, samples=4)
    text = str(result)
    assert text.startswith("gradient check of 'circles'") and ": OK" in text
    for p in result.parameters:
        assert f"\n  {p.name} " in text
        assert p.checked == min(p.size, 4)
    assert "8 rows, seed 3" in text
    assert repr(result).startswith("<GradientCheck of 'circles': ok")


def _scaled(module, param: int, factor: float, entry: bool):
    """module._gradients with one gradient (or its largest entry) scaled."""
    original = module._gradients
    count = len(module._PARAMS)

    def wrapper(*args):
        total = original(*args)
        grad = args[len(args) - count + param].reshape(-1)
        if entry:
            grad[np.argmax(np.abs(grad))] *= factor
        else:
            grad *= factor
        return total

    return wrapper


@pytest.mark.parametrize(
    "name",
    ["example_circles", "cnn_1d_dilated", "vector_bn_dropout_residual", FLOAT32],
)
def test_a_one_percent_error_in_any_single_gradient_is_caught(name, monkeypatch):
    if name == FLOAT32:
        module = _float32_module()
    elif name in TRAINING_CORPUS:
        module = derive.build(spec_from_dict(TRAINING_CORPUS[name]))
    else:
        module = derive.build(CORPUS[name])
    names = [p[0] for p in module._PARAMS]
    for param, pname in enumerate(names):
        for entry in (False, True):
            with monkeypatch.context() as patch:
                patch.setattr(module, "_gradients", _scaled(module, param, 1.01, entry))
                # an entry is caught where it is checked: check them all
                result = module.check_gradients(
                    samples=module._N_PARAMS if entry else 100
                )
            assert not result.ok, f"{pname} x1.01 (entry={entry}) not caught"
            worst = max(result.parameters, key=lambda p: p.relative_error)
            assert worst.name == pname
            assert f"grad_{pname}[" in str(result) and "FAILED" in str(result)
    assert module.check_gradients().ok  # unpatched again


def test_non_smooth_points_are_skipped_not_failed():
    """Seed 001's worked example has z = 0 exactly in layer 2 (relu'(0) = 0):
    a central difference there straddles the kink."""
    module = derive.build(CORPUS["example_seed001"])
    params = [
        np.array(p, dtype=float)
        for p in (
            [[-1, 2], [3, 0.5], [-0.1, -4]], [1, -2, 0.3],
            [[0.5, 1, -2], [0.7, 0.1, 0.3]], [-4, 5], [[0.5, -0.3]], [0.1],
        )
    ]  # fmt: skip
    X = np.array([[1.0, 2.0], [3.0, 4.0]])
    Y = np.array([[0.0], [1.0]])
    result = module.check_gradients(params, X, Y)
    assert result.ok and result.skipped > 0, str(result)
    assert "skipped at non-smooth points" in str(result)
    # near the kink (inside the first step, outside the retried one): checked
    params[1][2] = 0.3 - 1e-6 * 0.3
    near = module.check_gradients(params, X, Y)
    assert near.ok, str(near)


def test_bad_arguments():
    module = derive.build(CORPUS["example_circles"])
    with pytest.raises(ValueError, match="both X and Y"):
        module.check_gradients(X=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="samples"):
        module.check_gradients(samples=0)
    with pytest.raises(ValueError, match="shape"):
        module.check_gradients(X=np.zeros((2, 5)), Y=np.zeros((2, 1)))


# ------------------------------------------------------------------ mutations

#: Edits of the derived lines of circles' module (2-3-3-1 sigmoid, quadratic
#: cost, float64): (name, old line, new line, how many occurrences: every kernel
#: that prints the line gets the edit, as a generator bug would do).
MUTATIONS = {
    "output delta x1.01": (
        "delta = (-a * (a - 1.0) * (a - y)) * inv_rows",
        "delta = (-a * (a - 1.0) * (a - y)) * inv_rows * 1.01",
    ),
    "wrong sign in f'": (
        "            delta = back * (-a * (a - 1.0))\n            delta2[j, i] = delta",
        "            delta = back * (a * (a - 1.0))\n            delta2[j, i] = delta",
    ),
    "transposed index in grad_W2": (
        "grad_W2[j, k] = acc",
        "grad_W2[k, j] = acc",
    ),
    "dropped bias gradient term": (
        "            bias_grad += delta\n        grad_b1[j] = bias_grad",
        "            bias_grad += delta if i > 0 else 0.0\n        grad_b1[j] = bias_grad",
    ),
}
FLOAT32_MUTATION = (
    "delta = (a - y) * inv_rows",
    "delta = (a - y) * inv_rows * np.float32(1.01)",
)
MUTATION_RESULTS: dict[str, str] = {}


@pytest.fixture(scope="module")
def mutants(tmp_path_factory):
    """Each edited module written to its own file (imported once)."""
    directory = tmp_path_factory.mktemp("mutants")
    source = generate_source(load_spec(ROOT / "examples" / "circles.toml"))
    float32 = generate_source(load_spec(ROOT / "examples" / f"{FLOAT32}.toml"))
    cases = {name: (source, *edit) for name, edit in MUTATIONS.items()}
    cases["float32: output delta x1.01"] = (float32, *FLOAT32_MUTATION)
    paths = {}
    for i, (name, (text, old, new)) in enumerate(cases.items()):
        assert text.count(old) >= 1, f"{name}: the line to edit is gone"
        # the _train kernel prints the same lines: both are edited
        edited = text.replace(old, new)
        assert edited != text
        paths[name] = directory / f"mutant_{i}.py"
        paths[name].write_text(edited, encoding="utf-8")
    return paths


@pytest.mark.parametrize("name", [*MUTATIONS, "float32: output delta x1.01"])
def test_edited_modules_fail_their_self_test(name, mutants):
    # imported under its file name, as `import mutant_0` (and --self-test) would
    module = import_path(mutants[name], mutants[name].stem)
    result = module.check_gradients()
    MUTATION_RESULTS[name] = (
        f"{'caught' if not result.ok else 'MISSED'}: worst relative error "
        f"{result.worst_relative_error:.2e} ({result.problems[0] if result.problems else ''})"
    )
    assert not result.ok, str(result)
    assert "FAILED" in str(result)


def test_self_test_exits_0_on_the_module_and_1_on_an_edited_one(mutants):
    """``python module.py --self-test``: exit 0 and the report on stdout for the
    standalone module ``derive generate`` writes (the checked-in file is the same
    text: test_generated), 1 for an edited one."""
    path = ROOT / "generated" / "circles.py"
    out = subprocess.run(
        [sys.executable, str(path), "--self-test"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "gradient check of 'circles'" in out.stdout and ": OK" in out.stdout
    edited = mutants["output delta x1.01"]
    out = subprocess.run(
        [sys.executable, str(edited), "--self-test", "--samples", "3"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED: grad_" in out.stdout
    usage = subprocess.run([sys.executable, path], capture_output=True, text=True)
    assert usage.returncode == 2 and "--self-test" in usage.stdout


def test_mutation_report():
    """Prints what each edit gave (runs after the mutation tests)."""
    if not MUTATION_RESULTS:
        pytest.skip("mutation tests did not run")
    print()
    for name, text in MUTATION_RESULTS.items():
        print(f"  {name}: {text}")


def test_derive_check_command(mutants, tmp_path, capsys):
    from derive.cli import main

    assert main(["check", str(ROOT / "examples" / "circles.toml")]) == 0
    out = capsys.readouterr().out
    assert "gradient check of 'circles'" in out and ": OK" in out
    # a module file (imported under its own name, as --self-test does)
    assert main(["check", str(mutants["output delta x1.01"]), "--samples", "2"]) == 1
    assert "FAILED: grad_" in capsys.readouterr().out
    foreign = tmp_path / "mine.py"
    foreign.write_text("print('hello')\n")
    for bad, words in [
        (foreign, "not generated by derive"),
        (tmp_path / "missing.py", "file not found"),
        (ROOT / "README.md", "give a spec (.toml) or a module"),
        (tmp_path / "missing.toml", "not found"),
    ]:
        assert main(["check", str(bad)]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err
