"""derive: SymPy derives the backprop of a network spec; Jinja renders a
standalone Numba trainer from the derivation.

Flow: ``load_spec`` -> ``derive`` -> ``lower`` -> ``render`` -> ``build``;
``Network`` trains a built module scikit-learn style, ``load_table`` reads data.
"""

from ._version import __version__
from .data import DataError, Table, load_table
from .engine.derivation import Derivation, derive
from .errors import DerivationError, DeriveError, ExpressionError, SpecError
from .generate import build, generate_source, write_module
from .network import Network
from .present.diff import SpecDiff, diff
from .present.explain import Explanation, explain
from .present.worked import WorkedExample, worked_example
from .spec import Spec, load_spec, parse_spec, spec_from_dict

__all__ = [
    "DataError",
    "Derivation",
    "DeriveError",
    "DerivationError",
    "Explanation",
    "ExpressionError",
    "Network",
    "Spec",
    "SpecDiff",
    "SpecError",
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
    "worked_example",
    "write_module",
]
