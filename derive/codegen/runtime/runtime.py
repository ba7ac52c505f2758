"""The runtime half of every generated module: its public API in plain NumPy.

Everything below the marker line is copied verbatim to the end of each generated
module, after the constants and jitted kernels that ``module_names`` stands in
for here. It decides at run time, from those constants, what only changes checks
and reporting (the targets a loss accepts, how accuracy is counted); what changes
the math was decided when the module was generated.
"""

# ruff: noqa: I001
from .module_names import (
    DTYPE,
    FORMULAS,
    INPUT_SHAPE,
    N_INPUT,
    N_OUTPUT,
    OPTIMIZER,
    TARGET_TOLERANCE,
    TARGETS,
    TASK,
    THRESHOLD,
    TRAINING,
    _DELTA_BUFFERS,
    _FORWARD_BUFFERS,
    _HYPER_KEYS,
    _TRAIN_PARTS,
    _TRAIN_WORK,
    _MASKS,
    _MIN_TRAINING_ROWS,
    _OUTPUT_BUFFER,
    _PARAMS,
    _STATE,
    _STATE_SLOTS,
    _TRAINING_BUFFERS,
    _epoch_order,
    _evaluate,
    _forward,
    _gradients,
    _train,
)
import math
import time
import warnings

import numpy as np

# ---- generated modules include everything below this line ----


def init_params(seed=0):
    """Fresh parameters in the order of _PARAMS ([W1, b1, ...]), seeded: weights
    Glorot uniform or He normal (by the layer's activation), biases zero, a
    norm's gamma one and beta zero (as torch's)."""
    rng = np.random.default_rng(seed)
    params = []
    for _, shape, init, scale in _PARAMS:
        if init == "uniform":
            values = rng.uniform(-scale, scale, size=shape)
        elif init == "normal":
            values = rng.normal(0.0, scale, size=shape)
        elif init == "ones":
            values = np.ones(shape)
        else:
            values = np.zeros(shape)
        params.append(np.ascontiguousarray(values, dtype=DTYPE))
    return params


def init_buffers():
    """Fresh module state in the order of _STATE: the running statistics of
    batch norm layers (means 0, variances 1, as torch's). fit updates them in
    place; predict, loss and accuracy read them. Empty without batch norm."""
    return [
        (np.ones if init == "ones" else np.zeros)(shape, dtype=DTYPE)
        for _, shape, init in _STATE
    ]


_NAMES = [name for name, _, _, _ in _PARAMS]
_SHAPES = [shape for _, shape, _, _ in _PARAMS]
_N_PARAMS = sum(math.prod(shape) for shape in _SHAPES)


def _check_params(params):
    if not isinstance(params, list | tuple) or len(params) != len(_SHAPES):
        listing = ", ".join(_NAMES[:4]) + (", ..." if len(_NAMES) > 4 else "")
        raise ValueError(
            f"params must be a list of {len(_SHAPES)} arrays [{listing}] as "
            "returned by init_params()"
        )
    for name, p, shape in zip(_NAMES, params, _SHAPES, strict=True):
        if not isinstance(p, np.ndarray):
            raise ValueError(f"{name} must be a numpy array, got {type(p).__name__}")
        if p.shape != shape:
            raise ValueError(f"{name} has shape {p.shape}, expected {shape}")
        if p.dtype != DTYPE:
            raise ValueError(
                f"{name} has dtype {p.dtype}, expected {np.dtype(DTYPE)}; "
                f"convert with p.astype(np.{np.dtype(DTYPE)})"
            )
        if not p.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous; use np.ascontiguousarray")
        if not np.all(np.isfinite(p)):
            raise ValueError(f"{name} contains NaN or infinity")


def _numeric(name, values):
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr


def _finite_rows(name, arr):
    if arr.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    arr = np.ascontiguousarray(arr, dtype=DTYPE)
    if not arr.flags.writeable:
        # Numba types read-only arrays apart: a memmap or a shared buffer would
        # compile every kernel a second time
        arr = arr.copy()
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(arr), axis=1))[0])
        raise ValueError(f"{name} contains NaN or infinity (row {bad})")
    return arr


def _as_inputs(name, values):
    """Inputs as a C-contiguous (n, N_INPUT) array of DTYPE: rows of
    INPUT_SHAPE, or the same rows flattened in C order (what a CSV holds)."""
    arr = _numeric(name, values)
    if arr.ndim == 1 and N_INPUT == 1:
        arr = arr.reshape(-1, 1)
    shaped = arr.ndim == 1 + len(INPUT_SHAPE) and arr.shape[1:] == INPUT_SHAPE
    if shaped:
        arr = arr.reshape(arr.shape[0], N_INPUT)
    elif arr.ndim != 2 or arr.shape[1] != N_INPUT:
        shape = ", ".join(str(s) for s in INPUT_SHAPE)
        expected = f"(n, {N_INPUT})"
        if len(INPUT_SHAPE) > 1:
            expected = f"(n, {shape}) or {expected} (rows flattened in C order)"
        raise ValueError(f"{name} must have shape {expected}, got {arr.shape}")
    return _finite_rows(name, arr)


def _as_targets(name, values):
    arr = _numeric(name, values)
    if arr.ndim == 1 and N_OUTPUT == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[1] != N_OUTPUT:
        raise ValueError(f"{name} must have shape (n, {N_OUTPUT}), got {arr.shape}")
    return _finite_rows(name, arr)


def _check_targets(Y, n_rows):
    if Y.shape[0] != n_rows:
        raise ValueError(f"X has {n_rows} rows but Y has {Y.shape[0]}")
    if TARGETS in ("probability", "distribution") and (np.any(Y < 0) or np.any(Y > 1)):
        raise ValueError("targets of this loss must lie in [0, 1]")
    if TARGETS == "distribution":
        sums = Y.sum(axis=1)
        off = np.abs(sums - 1) > TARGET_TOLERANCE
        if np.any(off):
            row = int(np.flatnonzero(off)[0])
            raise ValueError(
                f"cross_entropy targets must be one-hot or class probabilities "
                f"summing to 1 per row; row {row} sums to {sums[row]:g}"
            )


def _kernel_input(X):
    """Inputs X (n, N_INPUT) as the kernels take them: feature vectors as they
    are (the kernel reads X.T, a view Numba types the same for any n); images
    and signals as a C-contiguous feature-major copy XT (N_INPUT, n), whose
    kernels read one contiguous row per input value."""
    if len(INPUT_SHAPE) == 1:
        return X
    return np.ascontiguousarray(X.T)


def _stored(shape, rows, kind="float"):
    """A buffer's shape in the kernels: a sample's values in C order, then the
    batch (a per-sample scalar such as lse_rows: just the batch; a batch
    statistic: one value per channel, no batch)."""
    if kind == "stat":
        return shape
    return (math.prod(shape), rows) if shape else (rows,)


def _allocate(groups, rows, fill=np.empty, dtype=DTYPE):
    return [
        fill(_stored(shape, rows, kind), dtype=np.int64 if kind == "int" else dtype)
        for group in groups
        for _, shape, kind in group
    ]


def _kernel_view(p):
    """A parameter (or gradient) as the kernels index it: tensors of more than
    two axes as (first axis, the rest in C order), a view of the same memory."""
    return p.reshape(p.shape[0], -1) if p.ndim > 2 else p


def _buffers(rows):
    """The evaluation forward's work buffers for `rows` samples (_FORWARD_BUFFERS)."""
    return _allocate([_FORWARD_BUFFERS], rows)


def _deltas(rows):
    return _allocate([_DELTA_BUFFERS], rows)


def _train_work(cols):
    """_train's work vectors for batches of up to cols rows, zeroed (the padding):
    floats (XT, YT and the float buffers) and ints, whose views _train makes. A
    module that trains a batch in parts (_TRAIN_PARTS > 1, runtime/parts.py)
    gets a multiple of _TRAIN_PARTS columns, the parts' equal shares, and after
    them one more gradient vector per part beyond the first."""
    per_col, fixed, int_per_col, int_fixed = _TRAIN_WORK
    cols = -(-cols // _TRAIN_PARTS) * _TRAIN_PARTS
    extra = (_TRAIN_PARTS - 1) * _N_PARAMS
    work = np.zeros(per_col * cols + fixed + extra, dtype=DTYPE)
    iwork = np.zeros(int_per_col * cols + int_fixed, dtype=np.int64)
    return work, iwork


def _check_buffers(buffers):
    """The module state (running statistics) a network with batch norm needs."""
    if not _STATE:
        return []
    if buffers is None:
        raise ValueError(
            "this network has batch norm: pass buffers= (its running statistics: "
            "init_buffers() to start; fit updates them, predict and loss read them)"
        )
    if not isinstance(buffers, list | tuple) or len(buffers) != len(_STATE):
        raise ValueError(
            f"buffers must be a list of {len(_STATE)} arrays as returned by "
            "init_buffers()"
        )
    for (name, shape, _), b in zip(_STATE, buffers, strict=True):
        if not isinstance(b, np.ndarray) or b.shape != shape or b.dtype != DTYPE:
            raise ValueError(
                f"{name} must be an array of shape {shape} and dtype "
                f"{np.dtype(DTYPE)}, as init_buffers() returns"
            )
        if not b.flags.c_contiguous or not b.flags.writeable:
            raise ValueError(f"{name} must be a writeable C-contiguous array")
    return list(buffers)


def _run_forward(params, X, state):
    buffers = _buffers(X.shape[0])
    _forward(*map(_kernel_view, params), _kernel_input(X), *state, *buffers)
    return buffers


def _outputs(buffers):
    """The network's outputs (n, N_OUTPUT) from the forward buffers."""
    return buffers[_OUTPUT_BUFFER].T


def _flat_views(flat):
    """Views of a flat vector shaped like [W1, b1, ...] (they share its memory)."""
    views, offset = [], 0
    for shape in _SHAPES:
        size = math.prod(shape)
        views.append(flat[offset : offset + size].reshape(shape))
        offset += size
    return views


def predict(params, X, buffers=None):
    """Network outputs for the rows of X, shape (n, N_OUTPUT), in evaluation mode
    (batch norm with its running statistics ``buffers``; no dropout)."""
    _check_params(params)
    state = _check_buffers(buffers)
    X = _as_inputs("X", X)
    return _outputs(_run_forward(params, X, state)).copy()


def loss(params, X, Y, buffers=None):
    """Batch-mean loss of the rows of X against targets Y (n, N_OUTPUT), in
    evaluation mode."""
    _check_params(params)
    state = _check_buffers(buffers)
    X = _as_inputs("X", X)
    Y = _as_targets("Y", Y)
    _check_targets(Y, X.shape[0])
    total = _evaluate(
        *map(_kernel_view, params), _kernel_input(X), Y, *state, *_buffers(X.shape[0])
    )
    return float(total / X.shape[0])


def _check_training_rows(rows):
    if rows < _MIN_TRAINING_ROWS:
        raise ValueError(
            "a training batch of one row: batch norm needs two values per channel "
            "(torch refuses it too); give more rows, or a batch_size whose last "
            "batch has two or more rows"
        )


def _masks(masks, rows):
    """Dropout masks for loss_and_grad: the given ones (one (rows, *shape) array
    of 0s and 1s per dropout layer, in layer order), else no dropout: every
    mask holds the keep probability, so that mask / keep is 1 (to a rounding)."""
    if masks is None:
        return [
            np.full(_stored(shape, rows), keep, dtype=DTYPE)
            for _, shape, keep in _MASKS
        ]
    if not isinstance(masks, list | tuple) or len(masks) != len(_MASKS):
        raise ValueError(
            f"masks must be a list of {len(_MASKS)} arrays, one per dropout layer"
        )
    out = []
    for (name, shape, _), mask in zip(_MASKS, masks, strict=True):
        mask = np.asarray(mask, dtype=DTYPE)
        if mask.shape not in ((rows, *shape), (rows, math.prod(shape))):
            raise ValueError(
                f"{name} must have shape {(rows, *shape)} (one row per sample), "
                f"got {mask.shape}"
            )
        if not np.all((mask == 0) | (mask == 1)):
            raise ValueError(f"{name} must hold 0s and 1s")
        out.append(np.ascontiguousarray(mask.reshape(rows, -1).T))
    return out


def loss_and_grad(params, X, Y, masks=None):
    """Batch-mean loss and its gradients, in the order of params, of the
    training-mode network: batch norm with the batch's statistics, dropout with
    the given ``masks`` (none: no dropout). Running statistics are not updated."""
    _check_params(params)
    X = _as_inputs("X", X)
    Y = _as_targets("Y", Y)
    _check_targets(Y, X.shape[0])
    rows = X.shape[0]
    _check_training_rows(rows)
    grads = [np.empty(shape, dtype=DTYPE) for shape in _SHAPES]
    training = _allocate([_TRAINING_BUFFERS], rows)
    names = [name for name, _, _ in _TRAINING_BUFFERS]
    for (name, _, _), mask in zip(_MASKS, _masks(masks, rows), strict=True):
        training[names.index(name)] = mask
    total = _gradients(
        *map(_kernel_view, params), _kernel_input(X), Y, *_buffers(rows), *training,
        *_deltas(rows), *map(_kernel_view, grads),
    )  # fmt: skip
    return float(total / rows), grads


def accuracy(params, X, Y, buffers=None):
    """Fraction of rows whose predicted class matches Y's (classifiers)."""
    _check_params(params)
    state = _check_buffers(buffers)
    X = _as_inputs("X", X)
    Y = _as_targets("Y", Y)
    _check_targets(Y, X.shape[0])
    return _accuracy_of(_outputs(_run_forward(params, X, state)), Y)


def _accuracy_of(outputs, Y):
    if TASK == "multiclass":
        # the predicted class is the most probable one; the target's its largest entry
        return float(np.mean(np.argmax(outputs, axis=1) == np.argmax(Y, axis=1)))
    if TASK == "binary":
        # class 1 where the output is above the threshold (0.5 for probabilities,
        # 0 for logits); a target is class 1 from 0.5 up
        return float(np.mean((outputs > THRESHOLD) == (Y >= 0.5)))
    raise ValueError(
        "accuracy needs a classifier (softmax + cross_entropy, or a binary "
        "cross-entropy loss); this network is a regression: use loss()"
    )


def init_state(params):
    """Optimizer state for ``fit``: pass the same object to later calls to resume.

    ``buffers`` holds the optimizer's slots (e.g. Adam's two moment estimates),
    each a flat vector over all parameters in the order of params; ``step``
    counts the updates done and ``epoch`` the epochs done (it drives shuffling and
    learning-rate schedules).
    """
    _check_params(params)
    return {
        "buffers": [np.zeros(_N_PARAMS, dtype=DTYPE) for _ in range(_STATE_SLOTS)],
        "step": np.zeros(1, dtype=np.int64),
        "epoch": np.zeros(1, dtype=np.int64),
    }


def _check_state(state, params):
    if not isinstance(state, dict) or set(state) != {"buffers", "step", "epoch"}:
        raise ValueError("state must be the dict returned by init_state(params)")
    buffers = state["buffers"]
    if len(buffers) != _STATE_SLOTS or any(
        not isinstance(b, np.ndarray) or b.shape != (_N_PARAMS,) or b.dtype != DTYPE
        for b in buffers
    ):
        raise ValueError(
            "state does not belong to this network; create it with init_state(params)"
        )


def _hyper_array():
    """The optimizer's hyper-parameters for the jitted loop (lr comes per epoch)."""
    values = []
    for key in _HYPER_KEYS:
        value = OPTIMIZER[key]
        values.extend(value if isinstance(value, tuple) else [value])
    return np.array(values, dtype=np.float64)


def epoch_order(seed, epoch, n):
    """The row order of shuffled epoch ``epoch`` (0-based, counted across calls)."""
    order = np.empty(int(n), dtype=np.int64)
    _epoch_order(int(seed), int(epoch), order)
    return order


def schedule_lrs(lr, schedule, first, stop, step_size, gamma, min_lr):
    """Learning rate of epochs first..stop-1 (counted across calls), shape (stop - first,).

    step: lr * gamma ** (epoch // step_size) (torch StepLR); cosine: from lr at
    epoch 0 down to min_lr at epoch ``stop`` (torch CosineAnnealingLR, T_max = stop).
    """
    epochs = np.arange(first, stop, dtype=np.float64)
    if schedule == "constant":
        return np.full(epochs.shape, float(lr))
    if schedule == "step":
        return lr * gamma ** np.floor(epochs / step_size)
    if schedule == "cosine":
        return min_lr + (lr - min_lr) * (1.0 + np.cos(np.pi * epochs / stop)) / 2.0
    raise ValueError(
        f"schedule must be 'constant', 'step' or 'cosine', got {schedule!r}"
    )


def _positive_int(name, value, zero_ok=False):
    bad = isinstance(value, bool) or not isinstance(value, int | np.integer)
    if bad or value < (0 if zero_ok else 1):
        kind = "non-negative" if zero_ok else "positive"
        raise ValueError(f"{name} must be a {kind} integer, got {value!r}")
    return int(value)


def _non_negative(name, value, positive=False):
    ok = isinstance(value, int | float | np.floating | np.integer) and not isinstance(
        value, bool
    )
    if not ok or not math.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{name} must be a finite {kind} number, got {value!r}")
    return float(value)


def fit(
    params,
    X,
    Y,
    *,
    epochs=TRAINING["epochs"],
    batch_size=TRAINING["batch_size"],
    lr=OPTIMIZER["lr"],
    shuffle=TRAINING["shuffle"],
    seed=TRAINING["seed"],
    state=None,
    schedule=TRAINING["schedule"],
    step_size=TRAINING["step_size"],
    gamma=TRAINING["gamma"],
    min_lr=TRAINING["min_lr"],
    clip_norm=TRAINING["clip_norm"],
    X_val=None,
    Y_val=None,
    patience=TRAINING["patience"],
    min_delta=TRAINING["min_delta"],
    callback=None,
    buffers=None,
):
    """Train ``params`` in place with the module's optimizer; returns the history.

    history["loss"][e] is the mean over rows of the loss each mini-batch had before
    its update (as Keras reports it); "lr" the learning rate of each epoch;
    "val_loss" / "val_accuracy" (with X_val, Y_val) are measured after each epoch.
    patience > 0 stops after that many epochs without improvement of the
    monitored loss (val_loss, else loss) by more than min_delta and restores the
    best epoch's params; "best_epoch" is its index in this call's history.
    callback(epoch, logs) runs after every epoch (epoch counted across calls, as
    in state["epoch"]) and stops training by returning True. Without
    validation data, patience and callback, all epochs run in one jitted call.
    Training runs the training-mode network (batch statistics, dropout masks
    from the generator seeded by seed and the epoch); ``buffers`` (batch norm's
    running statistics, init_buffers()) are updated in place after each batch,
    and restored with the params by early stopping; validation is evaluation mode.
    """
    _check_params(params)
    state_buffers = _check_buffers(buffers)
    X = _as_inputs("X", X)
    Y = _as_targets("Y", Y)
    _check_targets(Y, X.shape[0])
    epochs = _positive_int("epochs", epochs)
    batch_size = _positive_int("batch_size", batch_size)
    step_size = _positive_int("step_size", step_size)
    patience = _positive_int("patience", patience, zero_ok=True)
    seed = _positive_int("seed", seed, zero_ok=True)
    lr = _non_negative("lr", lr, positive=True)
    min_lr = _non_negative("min_lr", min_lr)
    clip_norm = _non_negative("clip_norm", clip_norm)
    min_delta = _non_negative("min_delta", min_delta)
    gamma = _non_negative("gamma", gamma, positive=True)
    if (X_val is None) != (Y_val is None):
        raise ValueError("give both X_val and Y_val, or neither")
    if X_val is not None:
        X_val = _as_inputs("X_val", X_val)
        Y_val = _as_targets("Y_val", Y_val)
        _check_targets(Y_val, X_val.shape[0])
    if callback is not None and not callable(callback):
        raise ValueError("callback must be a function callback(epoch, logs)")
    if state is None:
        state = init_state(params)
    _check_state(state, params)

    n = X.shape[0]
    _check_training_rows(min(n, batch_size))
    if n % batch_size:
        _check_training_rows(n % batch_size)
    first = int(state["epoch"][0])
    lrs = schedule_lrs(lr, schedule, first, first + epochs, step_size, gamma, min_lr)
    hyper = _hyper_array()
    grad = np.empty(_N_PARAMS, dtype=DTYPE)  # the flat gradient, for every step
    work, iwork = _train_work(min(batch_size, n))
    if X_val is not None:
        X_val_kernel = _kernel_input(X_val)
        val_work = _buffers(X_val.shape[0])
    # train a flat copy of the parameters (one optimizer loop over all of them);
    # params receive it after every call
    theta = np.concatenate([p.reshape(-1) for p in params])
    views = _flat_views(theta)
    order = np.arange(n, dtype=np.int64)
    # what the loop reports when training diverges, and the state at the start
    # of each epoch, restored if that epoch diverges
    status = np.zeros(5, dtype=np.int64)
    saved_theta = np.empty_like(theta)
    saved_slots = tuple(np.empty_like(b) for b in state["buffers"])
    saved_state = [np.empty_like(b) for b in state_buffers]
    diverged = None
    # one epoch per call when something must happen between epochs, else all
    per_call = 1 if (X_val is not None or patience or callback) else epochs
    history = {"loss": [], "lr": []}
    if X_val is not None:
        history["val_loss"] = []
        if TASK != "regression":
            history["val_accuracy"] = []
    best, best_epoch, best_params, waited, stopped = math.inf, None, None, 0, False
    done = 0
    while done < epochs and not stopped:
        count = min(per_call, epochs - done)
        totals = np.empty(count)
        started = time.perf_counter()
        _train(
            theta, grad, tuple(state["buffers"]), X, Y, order, bool(shuffle), seed,
            first + done, lrs[done : done + count], batch_size, clip_norm, hyper,
            state["step"], totals, status, saved_theta, saved_slots, work, iwork,
            *state_buffers, *saved_state,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        if status[0]:
            # epoch first + done + status[1] diverged: say what went non-finite
            # (at the state it diverged in), then restore the state at its start
            count = int(status[1])
            epoch = first + done + count
            diverged = _divergence(
                status, epoch, views, X, Y, order, float(lrs[done + count]), clip_norm
            )
            theta[...] = saved_theta
            for slot, saved in zip(state["buffers"], saved_slots, strict=True):
                slot[...] = saved
            for b, saved in zip(state_buffers, saved_state, strict=True):
                b[...] = saved
            state["step"][0] = status[4]
            totals = totals[:count]
        for p, trained in zip(params, views, strict=True):
            p[...] = trained
        state["epoch"][0] += count
        history["loss"].append(totals / n)  # chunks, joined at the end
        history["lr"].append(lrs[done : done + count])
        done += count
        if diverged is not None:
            warnings.warn(diverged["message"], RuntimeWarning, stacklevel=2)
            break
        if per_call > 1:
            continue
        epoch = first + done - 1  # counted across calls, like the row orders and lrs
        logs = {
            "epoch": epoch,
            "loss": float(history["loss"][-1][-1]),
            "lr": float(history["lr"][-1][-1]),
            "samples_per_s": n / max(elapsed, 1e-9),
        }
        if X_val is not None:
            value = _evaluate(
                *map(_kernel_view, params), X_val_kernel, Y_val, *state_buffers,
                *val_work,
            )  # fmt: skip
            logs["val_loss"] = float(value / X_val.shape[0])
            history["val_loss"].append(logs["val_loss"])
            if TASK != "regression":
                logs["val_accuracy"] = _accuracy_of(_outputs(val_work), Y_val)
                history["val_accuracy"].append(logs["val_accuracy"])
        if patience:
            monitored = logs.get("val_loss", logs["loss"])
            if monitored < best - min_delta:
                best, best_epoch, waited = monitored, done - 1, 0
                best_params = theta.copy()
                best_buffers = [b.copy() for b in state_buffers]
            else:
                waited += 1
                stopped = waited >= patience
        if callback is not None and callback(epoch, logs):
            break
    if best_params is not None and best_epoch != done - 1:
        for p, kept in zip(params, _flat_views(best_params), strict=True):
            p[...] = kept
        for b, kept in zip(state_buffers, best_buffers, strict=True):
            b[...] = kept
    result = {
        key: np.concatenate(values) if key in ("loss", "lr") else np.asarray(values)
        for key, values in history.items()
    }
    result["best_epoch"] = best_epoch
    result["stopped_early"] = stopped
    result["diverged"] = diverged
    return result


def _divergence(status, epoch, params, X, Y, order, lr, clip_norm):
    """What went non-finite first when training diverged, and the likely fixes:
    {"epoch", "rows" (the batch's rows, or None), "quantity", "message"}."""
    code, start, rows = int(status[0]), int(status[2]), int(status[3])
    bad = [name for name, p in zip(_NAMES, params, strict=True)
           if not np.all(np.isfinite(p))]  # fmt: skip
    batch = f"the batch of rows {start}..{start + rows - 1} of the epoch's order"
    if bad:
        quantity = bad[0]
        what = (
            f"{', '.join(bad)} became NaN or infinite in an update of the epoch "
            "(its gradient, or the step, was too large)"
        )
        if code == 1:
            what += f", and then the loss of {batch}"
        fixes = [f"a smaller learning rate (lr, now {lr:g})"]
        if not clip_norm:
            fixes.append("gradient clipping (clip_norm, e.g. 1.0)")
        fixes.append(_input_scale(X))
    else:
        rows_idx = order[start : start + rows]
        updated = int(status[4]) > 0 or start > 0  # any update before this batch?
        quantity, what, fixes = _first_non_finite(
            params, X[rows_idx], Y[rows_idx], lr if updated else None, clip_norm
        )
        what += f" on {batch}"
    kept = (
        f"The history of the epochs before it is kept, and the parameters are "
        f"those at the start of epoch {epoch} (the last finite ones)."
    )
    message = (
        f"training diverged in epoch {epoch}: {what}. Likely fixes: "
        f"{'; '.join(fixes)}. {kept}"
    )
    return {
        "epoch": epoch,
        "rows": None if code == 2 else (start, rows),
        "quantity": quantity,
        "message": message,
    }


def _input_scale(X):
    largest = float(np.max(np.abs(X)))
    note = f"X's largest magnitude is {largest:.3g}"
    if largest > 10:
        return f"standardized inputs ({note})"
    return f"inputs of moderate scale ({note})"


def _first_non_finite(params, X, Y, lr, clip_norm):
    """The batch's training forward at the parameters it diverged at: the first
    value (in layer order) that is NaN or infinite, and what likely fixes it
    (lr: the learning rate, or None before any update)."""
    n = X.shape[0]
    grads = [np.empty(shape, dtype=DTYPE) for shape in _SHAPES]
    forward = _buffers(n)
    training = _allocate([_TRAINING_BUFFERS], n)
    names = [name for name, _, _ in _TRAINING_BUFFERS]
    for (name, _, _), mask in zip(_MASKS, _masks(None, n), strict=True):
        training[names.index(name)] = mask
    with np.errstate(all="ignore"):
        total = _gradients(
            *map(_kernel_view, params), _kernel_input(X), Y, *forward, *training,
            *_deltas(n), *map(_kernel_view, grads),
        )  # fmt: skip
    named = [(b[0], a) for b, a in zip(_FORWARD_BUFFERS, forward, strict=True)]
    named += [(b[0], a) for b, a in zip(_TRAINING_BUFFERS, training, strict=True)]
    named.sort(key=lambda item: _layer_of(item[0]))
    values = dict(named)
    smaller = []
    if lr is not None:
        smaller.append(f"a smaller learning rate (lr, now {lr:g})")
        if not clip_norm:
            smaller.append("gradient clipping (clip_norm, e.g. 1.0)")
    for name, array in named:
        finite = np.isfinite(array)
        if np.all(finite):
            continue
        count = int(array.size - np.count_nonzero(finite))
        nan = int(np.count_nonzero(np.isnan(array)))
        kind = "NaN" if nan == count else "infinite" if not nan else "NaN or infinite"
        formula = FORMULAS.get(name, name)
        what = f"{name} is {kind} in {count} of {array.size} values ({formula})"
        source = "z" + name[1:] if name.startswith("a") else None
        if source in values and np.all(np.isfinite(values[source])):
            z = values[source]
            what += f", where {source} lies in [{z.min():.3g}, {z.max():.3g}]"
            fixes = [
                "an activation defined and finite for every real input (this one "
                f"is not for some {source} in that range; the spec validator names "
                "its domain)",
                *smaller,
            ]
        else:
            if nan < count:
                what += ": values grew past the floating-point range"
            fixes = [*smaller, _input_scale(X)]
        return name, what, fixes
    largest = float(np.max(np.abs(_outputs(forward))))
    if math.isinf(total):
        what = (
            f"the loss overflowed at outputs as large as {largest:.3g} "
            f"({FORMULAS['loss']})"
        )
        return "loss", what, [*smaller, _input_scale(X)]
    what = (
        f"the loss is NaN at finite outputs ({FORMULAS['loss']}): the targets or "
        "outputs are outside the loss's domain"
    )
    return "loss", what, ["targets the loss accepts", *smaller]


def _layer_of(name):
    """A buffer's layer (z2, xhat3, ...: the trailing number); lse_rows last."""
    digits = name[len(name.rstrip("0123456789")) :]
    return int(digits) if digits else 10**9
