"""The hand-written code generated modules carry, read from real Python files.

``runtime/runtime.py`` (the public API), ``runtime/check.py`` (the gradient
self-test), ``runtime/blas.py`` (the gemm declaration) and
``runtime/helpers.py`` (scalar helpers) are ordinary, linted
modules; a generated module includes the part of each below its marker line, or
one helper function whole, verbatim.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

RUNTIME = Path(__file__).resolve().parent / "runtime"
MARKER = "# ---- generated modules include everything below this line ----"


@functools.lru_cache(maxsize=8)
def _included(name: str) -> str:
    text = (RUNTIME / name).read_text(encoding="utf-8")
    head, marker, body = text.partition(MARKER)
    if not marker:
        raise RuntimeError(f"{RUNTIME / name} has no include marker line")
    return body.strip("\n")


def runtime_source() -> str:
    """The runtime half of every module (public API)."""
    return _included("runtime.py")


def check_source() -> str:
    """The gradient self-test every module carries (check_gradients, --self-test)."""
    return _included("check.py")


def blas_source() -> str:
    """The gemm declaration of modules whose products call BLAS."""
    return _included("blas.py")


@functools.lru_cache(maxsize=8)
def helper_source(name: str) -> str:
    """One helper function from runtime/helpers.py, decorator included."""
    path = RUNTIME / "helpers.py"
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            assert node.end_lineno is not None
            return "\n".join(lines[start - 1 : node.end_lineno])
    raise KeyError(f"no helper {name} in {path}")
