"""The names a generated module defines before its runtime part.

``runtime.py`` is included verbatim at the end of every generated module, where
these names exist; it imports them from here only so that it is a real Python
file that ruff can check and a reader can follow. The values below are
placeholders: each module prints its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SPEC_NAME = "spec"
GENERATOR_VERSION = "0.0.0"
#: the versions of derive, SymPy and Numba the module was generated with
GENERATED_WITH = {"derive": "0.0.0", "sympy": "0.0", "numba": "0.0"}
FORMULAS: dict[str, str] = {}
DTYPE: Any = np.float64
#: per-sample input shape, e.g. (2,) or (1, 8, 8); N_INPUT is its product
INPUT_SHAPE: tuple[int, ...] = (1,)
N_INPUT = 1
N_OUTPUT = 1
TARGETS = "any"  # "any" | "probability" | "distribution"
TARGET_TOLERANCE = 1e-8  # how far a distribution row's sum may be from 1
TASK = "regression"  # "binary" | "multiclass" | "regression"
THRESHOLD = 0.5
OPTIMIZER: dict[str, Any] = {}
TRAINING: dict[str, Any] = {}
#: (name, shape, init, scale) per parameter: init "uniform" (+-scale), "normal"
#: (std scale), "zeros" or "ones" (a norm's gamma)
_PARAMS: tuple[tuple[str, tuple[int, ...], str, float], ...] = ()
#: (name, per-sample shape, "float" | "int") of the forward pass's work buffers,
#: in the kernels' argument order; the batch axis comes last
_FORWARD_BUFFERS: tuple[tuple[str, tuple[int, ...], str], ...] = ()
#: what only the training forward uses: batch statistics, normalized values, masks
_TRAINING_BUFFERS: tuple[tuple[str, tuple[int, ...], str], ...] = ()
#: (name, per-sample shape, kind) of the backward pass's adjoint buffers
_DELTA_BUFFERS: tuple[tuple[str, tuple[int, ...], str], ...] = ()
#: (name, shape, "zeros" | "ones"): running statistics, updated by fit
_STATE: tuple[tuple[str, tuple[int, ...], str], ...] = ()
#: (name, per-sample shape, keep probability) of each dropout mask
_MASKS: tuple[tuple[str, tuple[int, ...], float], ...] = ()
#: the fewest rows of a training batch (2 with batch norm of single values)
_MIN_TRAINING_ROWS = 1
#: position in _FORWARD_BUFFERS of the network's output
_OUTPUT_BUFFER = 0
#: _train's work vectors: floats per column of a batch, fixed floats; the same for ints
_TRAIN_WORK = (0, 0, 0, 0)
#: how many parts _train splits a batch into: 1 (one jitted _train), or 2 (two
#: threads run _train_part on half the batch each, runtime/parts.py)
_TRAIN_PARTS = 1
#: the optimizer's hyper-parameters the jitted update reads, in order, and the
#: number of state vectors (slots) it keeps
_HYPER_KEYS: tuple[str, ...] = ()
_STATE_SLOTS = 0


def _forward(*args: Any) -> None: ...


def _evaluate(*args: Any) -> float: ...


def _gradients(*args: Any) -> float: ...


def _train(*args: Any) -> None: ...


def _epoch_order(seed: int, epoch_index: int, order: np.ndarray) -> None: ...


def _train_part(*args: Any) -> float: ...


def _train_step(*args: Any) -> None: ...


# The names a frozen inference module (runtime/frozen.py) defines before its
# runtime part: the embedded weights and running statistics as (shape, base64)
# pairs, the class labels, and the input helpers it takes from runtime.py.
_WEIGHTS: tuple[tuple[tuple[int, ...], str], ...] = ()
_RUNNING: tuple[tuple[tuple[int, ...], str], ...] = ()
CLASSES: Any = None


def _as_inputs(name: str, values: Any) -> Any: ...


def _run_forward(params: Any, X: Any, state: Any) -> Any: ...


def _outputs(buffers: Any) -> Any: ...
