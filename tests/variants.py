"""Modules generated with the code generator's constants overridden (thresholds,
fast paths), for the tests that compare a spec's variants with each other.

Modules are written under derive's cache directory with a name holding the
hash of their source, so a second run reuses Numba's cache.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from derive.codegen import lowering, printer
from derive.generate import atomic_write, cache_dir, generate_source, import_path
from derive.spec import Spec

_MODULES: dict[str, object] = {}


def generate(spec: Spec, **overrides) -> str:
    """generate_source(spec) with the lowering's or printer's constants overridden."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in overrides.items():
            mp.setattr(lowering if hasattr(lowering, name) else printer, name, value)
        return generate_source(spec)


def load(group: str, spec: Spec, **overrides):
    """Generate, write (content-addressed, under cache_dir() / group) and import
    the spec's module."""
    source = generate(spec, **overrides)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    name = f"{group}_{spec.name}_{digest}"
    if name not in _MODULES:
        path = cache_dir() / group / f"{name}.py"
        if not path.exists():
            atomic_write(path, source)
        _MODULES[name] = import_path(path, name)
    return _MODULES[name]


def assert_close_arrays(got, want, rtol: float, what: str) -> None:
    """Each array within rtol of the reference's largest entry (scale-aware)."""
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        w = np.asarray(w, dtype=np.float64)
        scale = max(float(np.max(np.abs(w))), 1e-30)
        err = float(np.max(np.abs(np.asarray(g, dtype=np.float64) - w))) / scale
        assert err <= rtol, f"{what}[{i}]: error {err:.3g} of max |ref| > {rtol:g}"
