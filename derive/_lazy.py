"""SymPy imported on first use, for the definitions a spec's validation reads.

The op and layer registries hold SymPy forward definitions, but validating a
spec reads only their names, parameters and shape rules. Loading a spec, and
every command that does not derive (``derive predict``, ``derive fit`` of a
cached architecture), so never pays SymPy's import (about 0.3 s).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for a module until an attribute is read, then imports it.

    Unlike :class:`importlib.util.LazyLoader`, it puts nothing in
    ``sys.modules`` before the import: whether SymPy was imported stays true to
    ``"sympy" in sys.modules``.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)


#: ``sympy``, imported when a definition is first evaluated
sympy = LazyModule("sympy")
