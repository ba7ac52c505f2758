"""The hand-written code generated modules carry, read from real Python files.

``runtime/runtime.py`` (the public API), ``runtime/check.py`` (the gradient
self-test), ``runtime/blas.py`` (the gemm declaration), ``runtime/views.py``
(_train's array views), ``runtime/parts.py`` (the threaded _train of modules
that train a batch in parts) and ``runtime/helpers.py`` (scalar helpers) are
ordinary, linted modules; a generated module includes the part of each below
its marker line, or one helper function whole, verbatim.
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


def views_source() -> str:
    """The view intrinsic _train carves its arrays out of flat vectors with."""
    return _included("views.py")


def parts_source() -> str:
    """The threaded _train of modules that train a batch in parts (runtime/parts.py)."""
    return _included("parts.py")


def frozen_source() -> str:
    """The runtime half of a frozen inference module (public API)."""
    return _included("frozen.py")


#: What a frozen inference module takes from runtime.py: checking and shaping
#: the inputs, the forward's work buffers, running the forward kernel.
FROZEN_FROM_RUNTIME = (
    "_numeric", "_finite_rows", "_as_inputs", "_kernel_input", "_stored",
    "_allocate", "_kernel_view", "_buffers", "_run_forward", "_outputs",
)  # fmt: skip


def runtime_functions(names: tuple[str, ...] = FROZEN_FROM_RUNTIME) -> str:
    """Functions of runtime/runtime.py by name, each whole, in the given order."""
    return "\n\n\n".join(function_source(name, "runtime.py") for name in names)


@functools.lru_cache(maxsize=64)
def function_source(name: str, file: str = "helpers.py") -> str:
    """One function of a runtime file, decorator included."""
    path = RUNTIME / file
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            assert node.end_lineno is not None
            return "\n".join(lines[start - 1 : node.end_lineno])
    raise KeyError(f"no function {name} in {path}")


def helper_source(name: str) -> str:
    """One helper function from runtime/helpers.py, decorator included."""
    return function_source(name, "helpers.py")
