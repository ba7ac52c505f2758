"""The runtime half of a frozen inference module (``derive export --format
python``): its public API in plain NumPy.

Everything below the marker line is copied verbatim to the end of each frozen
module, after the constants, the embedded weights, the evaluation forward kernel
and the input helpers of ``runtime.py`` (``_as_inputs``, ``_run_forward``,
``_outputs``, ...) that the imports below stand in for here.
"""

# ruff: noqa: I001
from .module_names import (
    CLASSES,
    DTYPE,
    N_OUTPUT,
    TASK,
    THRESHOLD,
    _RUNNING,
    _WEIGHTS,
    _as_inputs,
    _outputs,
    _run_forward,
)
import base64

import numpy as np

# ---- generated modules include everything below this line ----


def _decode(table):
    """Arrays from (shape, base64 of their bytes in C order, little-endian DTYPE)."""
    dtype = np.dtype(DTYPE).newbyteorder("<")
    return [
        np.frombuffer(base64.b64decode(text), dtype=dtype).reshape(shape).astype(DTYPE)
        for shape, text in table
    ]


PARAMS = _decode(_WEIGHTS)  # [W1, b1, ...], the trained parameters
BUFFERS = _decode(_RUNNING)  # batch norm's running statistics, if any


def outputs(X):
    """The network's outputs for the rows of X, shape (n, N_OUTPUT): the
    probabilities of a sigmoid or softmax head, the logits of bce_with_logits,
    the values of a regression. X: (n, *INPUT_SHAPE) or rows flattened in C
    order, (n, N_INPUT)."""
    X = _as_inputs("X", X)
    return _outputs(_run_forward(PARAMS, X, BUFFERS)).copy()


def predict_proba(X):
    """Class probabilities (n, len(CLASSES)), rows summing to 1 (several binary
    outputs: (n, N_OUTPUT), each the probability of a 1). Classifiers only."""
    if TASK == "regression":
        raise ValueError("predict_proba is for classifiers; this model is a regression")
    out = outputs(X).astype(np.float64)
    if TASK == "multiclass":
        return out
    if THRESHOLD == 0.0:  # logits
        out = np.exp(-np.logaddexp(0.0, -out))
    return out if N_OUTPUT > 1 else np.hstack([1.0 - out, out])


def predict(X):
    """Predictions: class labels from CLASSES, shape (n,) (several binary
    outputs: a 0/1 matrix (n, N_OUTPUT)); a regression's values, (n,) for one
    output, else (n, N_OUTPUT)."""
    out = outputs(X)
    if TASK == "regression":
        return out[:, 0] if N_OUTPUT == 1 else out
    if TASK == "binary":
        positive = out > THRESHOLD
        if N_OUTPUT > 1:
            return positive.astype(np.int64)
        return CLASSES[positive[:, 0].astype(np.int64)]
    return CLASSES[np.argmax(out, axis=1)]
