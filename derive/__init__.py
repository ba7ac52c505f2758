"""derive: SymPy derives the backprop of a network spec; Jinja renders a
standalone Numba trainer from the derivation.

Flow: ``load_spec`` -> ``derive`` -> ``lower`` -> ``render`` -> ``build``;
``Network`` trains a built module scikit-learn style, ``load_table`` reads data.

The names below are imported on first use (PEP 562), so ``import derive`` is
cheap and a program that only loads data or a cached module never imports the
derivation engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

#: public name -> the module that defines it
_LAZY = {
    "DataError": "data",
    "Table": "data",
    "load_table": "data",
    "Derivation": "engine.derivation",
    "derive": "engine.derivation",
    "DerivationError": "errors",
    "DeriveError": "errors",
    "ExpressionError": "errors",
    "SpecError": "errors",
    "build": "generate",
    "generate_source": "generate",
    "write_module": "generate",
    "Network": "network",
    "SpecDiff": "present.diff",
    "diff": "present.diff",
    "Explanation": "present.explain",
    "explain": "present.explain",
    "WorkedExample": "present.worked",
    "worked_example": "present.worked",
    "Spec": "spec",
    "load_spec": "spec",
    "parse_spec": "spec",
    "spec_from_dict": "spec",
    "SweepResult": "sweeps",
    "sweep": "sweeps",
}

__all__ = [
    "DataError",
    "Derivation",
    "DerivationError",
    "DeriveError",
    "Explanation",
    "ExpressionError",
    "Network",
    "Spec",
    "SpecDiff",
    "SpecError",
    "SweepResult",
    "Table",
    "WorkedExample",
    "__version__",
    "build",
    "derive",
    "diff",
    "explain",
    "generate_source",
    "load_spec",
    "load_table",
    "parse_spec",
    "spec_from_dict",
    "sweep",
    "worked_example",
    "write_module",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'derive' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from .data import DataError, Table, load_table
    from .engine.derivation import Derivation, derive
    from .errors import DerivationError, DeriveError, ExpressionError, SpecError
    from .generate import build, generate_source, write_module
    from .network import Network
    from .present.diff import SpecDiff, diff
    from .present.explain import Explanation, explain
    from .present.worked import WorkedExample, worked_example
    from .spec import Spec, load_spec, parse_spec, spec_from_dict
    from .sweeps import SweepResult, sweep
