"""One compile per architecture: the kernels depend only on the dtype, input,
layers, loss and optimizer family, so specs that differ in their name,
hyper-parameters or training settings share one kernel module in the build cache
(and one Numba compile), while each keeps its own spec, hash and defaults."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from corpus import CORPUS, ROOT, TRAINING_CORPUS
from numba_env import caching_env

import derive
from derive.codegen.lowering import lower
from derive.engine.derivation import derive as derive_expressions
from derive.generate import import_path
from derive.spec import spec_from_dict

#: one dense, one convolutional and one training-time-layer spec
SAMPLES = ["example_seed001_adam", "example_digits_cnn", "vector_bn_dropout_residual"]


def _head_variant(spec: derive.Spec, name: str = "variant") -> derive.Spec:
    """``spec`` with every run-time value changed: name, optimizer hyper-parameters
    (numbers scaled) and training settings."""
    data = copy.deepcopy(spec.to_dict())
    data["name"] = name
    for key, value in data["optimizer"].items():
        if isinstance(value, float):
            data["optimizer"][key] = min(value * 0.5 + 0.01, 0.99)
        elif isinstance(value, list):
            data["optimizer"][key] = [min(v * 0.9, 0.99) for v in value]
    training = data["training"]
    training.update(
        epochs=training["epochs"] + 3, batch_size=training["batch_size"] + 1
    )
    training.update(seed=training["seed"] + 7, shuffle=not training["shuffle"])
    training.update(clip_norm=1.5, patience=2)
    return spec_from_dict(data)


def _variant(spec: derive.Spec, edit) -> derive.Spec:
    data = copy.deepcopy(spec.to_dict())
    edit(data)
    return spec_from_dict(data)


def _sample(name: str) -> derive.Spec:
    if name in TRAINING_CORPUS:
        return spec_from_dict(copy.deepcopy(TRAINING_CORPUS[name]))
    return CORPUS[name]


@pytest.mark.parametrize("name", SAMPLES)
def test_kernels_depend_only_on_the_architecture(name):
    spec = _sample(name)
    variant = _head_variant(spec)
    assert variant.hash != spec.hash
    assert variant.architecture_hash == spec.architecture_hash
    # what the templates print for the kernels is the same, field by field
    assert lower(derive_expressions(variant)) == lower(derive_expressions(spec))


def test_what_changes_the_kernels_changes_the_architecture_hash():
    spec = CORPUS["example_seed001_adam"]

    def units(d):
        d["layers"][0]["units"] += 1

    def activation(d):
        d["layers"][0]["activation"] = "tanh"

    def dtype(d):
        d["dtype"] = "float32"

    def optimizer(d):
        d["optimizer"] = {"name": "sgd", "lr": 0.1}

    def loss(d):
        d["layers"][-1]["activation"] = "identity"
        d["loss"] = {"name": "mse"}

    hashes = {spec.architecture_hash}
    for edit in (units, activation, dtype, optimizer, loss):
        hashes.add(_variant(spec, edit).architecture_hash)
    assert len(hashes) == 6


def test_specs_of_one_architecture_share_one_compile():
    base = CORPUS["example_seed001_adam"]
    other = _variant(
        base,
        lambda d: (
            d.update(name="other_adam")
            or d["optimizer"].update(lr=0.05, weight_decay=0.1, betas=[0.8, 0.99])
        ),
    )
    first, second = derive.build(base), derive.build(other)
    assert first is not second and second.SPEC_HASH == other.hash
    assert first.ARCHITECTURE_HASH == second.ARCHITECTURE_HASH
    assert first._train is second._train  # one kernel module
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 2))
    Y = (X[:, :1] * X[:, 1:] > 0).astype(float)
    p_first, p_second = first.init_params(0), second.init_params(0)
    first.fit(p_first, X, Y, epochs=3)
    second.fit(p_second, X, Y, epochs=3)
    assert len(first._train.signatures) == 1
    # each module trains with its own spec's hyper-parameters: the same as the
    # standalone module of `other` (its own file, compiled apart) gives
    standalone = import_path(_standalone(other, "standalone_other_adam"))
    p_alone = standalone.init_params(0)
    standalone.fit(p_alone, X, Y, epochs=3)
    for a, b in zip(p_second, p_alone, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, c) for a, c in zip(p_second, p_first, strict=True))


def _standalone(spec: derive.Spec, stem: str):
    from derive.generate import atomic_write, cache_dir, generate_source

    path = cache_dir() / "standalone" / f"{stem}_{spec.hash}.py"
    if not path.exists():
        atomic_write(path, generate_source(spec))
    return path


def test_a_new_spec_of_a_cached_architecture_builds_without_deriving(tmp_path):
    """In a fresh process, a spec whose architecture another spec compiled is
    loaded and built without SymPy (no derivation, no import) and trains from Numba's cache (no compile); a
    process at another Numba optimization level builds and compiles its own."""
    env = caching_env(DERIVE_CACHE_DIR=str(tmp_path))
    level = env.get("NUMBA_OPT", "3")  # never 0: Numba caches nothing at 0
    other_level = "0"  # the quickest compile
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import derive

        spec = derive.load_spec(sys.argv[1])
        if sys.argv[2] != "first":
            data = spec.to_dict()
            data["name"] = sys.argv[2]
            data["optimizer"]["lr"] = 0.2
            data["optimizer"]["weight_decay"] = 0.01
            spec = derive.spec_from_dict(data)
        module = derive.build(spec)
        X = np.random.default_rng(0).normal(size=(8, 2))
        module.fit(module.init_params(0), X, (X[:, :1] > 0) * 1.0, epochs=2)
        stats = module._train.stats
        engine = [
            m in sys.modules for m in ("derive.engine", "derive.codegen.lowering", "sympy")
        ]
        print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()), *engine)
        """
    )
    spec_path = str(ROOT / "examples" / "seed001_adam.toml")
    runs = []
    for name, opt in [("first", level), ("second_spec", level),
                      ("third_spec", level), ("first", other_level)]:  # fmt: skip
        run = subprocess.run(
            [sys.executable, "-c", script, spec_path, name],
            capture_output=True, text=True, env={**env, "NUMBA_OPT": opt},
            timeout=300,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        runs.append(run.stdout.split())
    # the first process derived and compiled; the next two neither derived (the
    # engine, and SymPy, were never imported) nor compiled; the one at the other
    # level did both
    first, second, third, other = runs
    assert first == other == ["0", "1", "True", "True", "True"]
    assert second == third == ["1", "0", "False", "False", "False"]
    # v<version>-<fingerprint> at level 3, with -O<level> appended at the others
    other_directory = next(tmp_path.glob(f"*-O{other_level}"))
    base = other_directory.name.removesuffix(f"-O{other_level}")
    directory = tmp_path / (base if level == "3" else f"{base}-O{level}")
    assert sorted(tmp_path.iterdir()) == sorted([directory, other_directory])
    assert len(list(directory.glob("derive_*.py"))) == 3
    assert len(list(other_directory.glob("derive_*.py"))) == 1
    assert len(list(tmp_path.glob("*/kernels_*.py"))) == 2


def test_import_derive_is_lazy():
    """``import derive`` imports neither SymPy nor Numba nor the engine: the public
    names load on first use."""
    script = (
        "import sys, derive; "
        "print([m in sys.modules for m in ('sympy', 'numba', 'derive.engine')]); "
        "derive.load_table; print('derive.data' in sys.modules)"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:2] == ["[False, False, False]", "True"]
