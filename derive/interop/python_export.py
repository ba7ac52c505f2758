"""A frozen inference module: ``derive export MODEL.npz --format python``.

One Python file needing only numpy and numba: the trained weights embedded as
constants (base64 of their bytes, exact), the generated evaluation forward
kernel of the spec (the same code ``Network.outputs`` runs, so the same
numbers), the input checks, and ``predict(X)`` / ``predict_proba(X)`` /
``outputs(X)`` with the model's class labels. Rendered from
``templates/frozen.py.jinja`` and formatted with ruff, like generated modules.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..codegen.head import lower_head
from ..codegen.lowering import lower
from ..codegen.render import environment, format_python
from ..codegen.sources import frozen_source, runtime_functions
from ..engine.derivation import derive
from ..errors import DeriveError
from ..fileio import atomic_write

if TYPE_CHECKING:
    from ..network import Network


@dataclass(frozen=True)
class _Array:
    name: str
    shape: tuple[int, ...]
    data: str  # base64 of the little-endian values in C order


def _array(name: str, value: np.ndarray, dtype: str) -> _Array:
    little = np.ascontiguousarray(value, dtype=np.dtype(dtype).newbyteorder("<"))
    return _Array(name, tuple(value.shape), base64.b64encode(little.tobytes()).decode())


def _literal(values: object) -> str:
    """A Python literal of plain values (labels or names), or None."""
    if values is None:
        return "None"
    items = np.asarray(values).tolist()
    if not all(isinstance(v, bool | int | float | str) for v in items):
        raise DeriveError(
            "the model's class labels are not numbers or strings; relabel them "
            "before exporting"
        )
    return f"np.array({items!r})"


def frozen_module_source(network: Network) -> str:
    """The frozen module's source text for the trained ``network``."""
    spec = network.spec
    model = lower(derive(spec))
    names = [name for name, *_ in network.module._PARAMS]
    state = [name for name, *_ in network.module._STATE]
    extra = {
        "weights": [
            _array(n, p, spec.dtype) for n, p in zip(names, network.params, strict=True)
        ],
        "running": [
            _array(n, b, spec.dtype)
            for n, b in zip(state, network.buffers, strict=True)
        ],
        "classes": _literal(network.classes_ if network.is_classifier else None),
        "feature_names": repr(
            None
            if network.feature_names_in_ is None
            else list(network.feature_names_in_)
        ),
        "inputs": runtime_functions(),
        "runtime": frozen_source(),
    }
    head = lower_head(spec)
    raw = (
        environment()
        .get_template("frozen.py.jinja")
        .render(m=model, spec=head, x=extra)
    )
    return format_python(raw)


def export_python(network: Network, path: str | os.PathLike[str]) -> Path:
    """Write the frozen module of ``network`` to ``path`` atomically."""
    path = Path(path)
    atomic_write(path, frozen_module_source(network))
    return path
