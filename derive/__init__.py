"""derive: SymPy derives the backprop of a network spec; Jinja renders a
standalone Numba trainer from the derivation.

Flow: ``load_spec`` -> ``derive`` -> ``lower`` -> ``render`` -> ``build``.
"""

from ._version import __version__
from .derivation import Derivation, derive
from .errors import DerivationError, DeriveError, ExpressionError, SpecError
from .explain import Explanation, explain
from .generate import build, generate_source, write_module
from .spec import Spec, load_spec, parse_spec, spec_from_dict

__all__ = [
    "Derivation",
    "DeriveError",
    "DerivationError",
    "Explanation",
    "ExpressionError",
    "Spec",
    "SpecError",
    "__version__",
    "build",
    "derive",
    "explain",
    "generate_source",
    "load_spec",
    "parse_spec",
    "spec_from_dict",
    "write_module",
]
