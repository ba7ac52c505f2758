"""What a generated module says about its spec, printed from the spec alone.

A module is two parts: the *architecture* (constants, helpers and jitted kernels,
which depend only on ``Spec.architecture_hash``: dtype, input, layers, loss and
optimizer family) and this *head* (name, spec hash, spec text, the optimizer's
hyper-parameters and the training defaults, all run-time values for the kernels).
``derive generate`` prints both into one standalone file; ``derive.build`` keeps
one kernel module per architecture in its cache and a small per-spec module that
imports it, so specs that differ only in their head share one Numba compile.
Nothing here derives: building a spec whose architecture is cached needs no SymPy.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from .._version import __version__
from ..layers import LAYER_KINDS
from ..spec import Spec
from .sources import check_source, runtime_source


@dataclass(frozen=True)
class HeadModel:
    """The per-spec part of a module, as already-printed strings."""

    generator_version: str
    sympy_version: str  # provenance: the versions the module was generated with
    numba_version: str
    name: str
    spec_hash: str
    spec_toml: str
    summary: str
    param_heads: tuple[str, ...]  # the first (up to four) parameter names
    input_shape: tuple[int, ...]
    n_input: int
    n_output: int
    optimizer_name: str
    optimizer_hyper: tuple[tuple[str, str], ...]  # (name, Python literal)
    training: tuple[tuple[str, str], ...]
    architecture_hash: str
    architecture_module: str  # the kernel module's name in derive.build's cache
    architecture_names: tuple[str, ...]  # what a cached head imports from it
    runtime: str  # the public API, verbatim
    check: str  # the gradient self-test (check_gradients, --self-test), verbatim


def tool_versions() -> tuple[str, str]:
    """(SymPy, Numba) versions of this environment, for a module's provenance
    line (from their metadata: rendering a head imports neither)."""
    from importlib import metadata

    versions = []
    for package in ("sympy", "numba"):
        try:
            versions.append(metadata.version(package))
        except metadata.PackageNotFoundError:  # pragma: no cover - both required
            versions.append("unknown")
    return versions[0], versions[1]


def py_literal(value: object) -> str:
    """A Python literal for a spec value (tuples printed as tuples)."""
    if isinstance(value, tuple):
        return "(" + ", ".join(py_literal(v) for v in value) + ")"
    return repr(value)


def summary(spec: Spec) -> str:
    """``2-8-1 network (tanh, sigmoid; loss binary_cross_entropy; float64)``."""
    acts = ", ".join(
        layer.activation.label for layer in spec.layers if layer.activation is not None
    )
    return f"{spec.architecture} network ({acts}; loss {spec.loss.label}; {spec.dtype})"


def architecture_module(spec: Spec) -> str:
    """The name of the spec's kernel module in ``derive.build``'s cache."""
    return f"kernels_{spec.architecture_hash}"


def param_names(spec: Spec) -> tuple[str, ...]:
    """``("W1", "b1", ...)``: the parameters in the order of ``params`` (from the
    kinds' definitions: imports SymPy; a cached kernel module lists them,
    :func:`kernel_param_names`)."""
    names = []
    for index, layer in enumerate(spec.layers, start=1):
        kind = LAYER_KINDS[layer.kind].resolve(dict(layer.attrs))
        names.extend(f"{tensor.name}{index}" for tensor in kind.param_tensors)
    return tuple(names)


def exported_names(source: str) -> tuple[str, ...]:
    """The top-level names a kernel module defines (its assignments and functions,
    not its imports): what a cached head imports from it."""
    names: list[str] = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names.extend(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)

    # in the order ruff's isort wants them: constants, classes, the rest
    def order(name: str) -> tuple[int, str]:
        kind = 0 if name.upper() == name else 1 if name.lstrip("_")[:1].isupper() else 2
        return kind, name.lower()

    return tuple(sorted(set(names), key=order))


def kernel_param_names(source: str) -> tuple[str, ...]:
    """The parameter names a kernel module's ``_PARAMS`` lists, in order: the
    names :func:`param_names` gives its specs, read without SymPy."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_PARAMS" for t in node.targets
        ):
            return tuple(entry[0] for entry in ast.literal_eval(node.value))
    raise ValueError("the kernel module has no _PARAMS")


def lower_head(
    spec: Spec,
    architecture_names: tuple[str, ...] = (),
    params: tuple[str, ...] | None = None,
) -> HeadModel:
    """The head of ``spec``'s module. With ``architecture_names`` (the names of a
    cached kernel module) it imports the architecture; without, the architecture
    is printed inline (a standalone module). ``params``: the parameter names, if
    known (a cached kernel module's, :func:`kernel_param_names`; else from the
    kinds' definitions)."""
    sympy_version, numba_version = tool_versions()
    return HeadModel(
        generator_version=__version__,
        sympy_version=sympy_version,
        numba_version=numba_version,
        name=spec.name,
        spec_hash=spec.hash,
        spec_toml=spec.to_toml(),
        summary=summary(spec),
        param_heads=(param_names(spec) if params is None else params)[:4],
        input_shape=spec.input_shape,
        n_input=spec.n_inputs,
        n_output=spec.sizes[-1],
        optimizer_name=spec.optimizer.name,
        optimizer_hyper=tuple((k, py_literal(v)) for k, v in spec.optimizer.hyper),
        training=tuple((k, py_literal(v)) for k, v in vars(spec.training).items()),
        architecture_hash=spec.architecture_hash,
        architecture_module=architecture_module(spec),
        architecture_names=architecture_names,
        runtime=runtime_source(),
        check=check_source(),
    )
