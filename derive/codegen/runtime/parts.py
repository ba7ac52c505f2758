"""The training loop of modules that train each mini-batch in two parts at once.

A module with much loop work per sample (lowering's PARTS_MIN_LOOP_WORK) whose
batch rows are independent (no batch statistics, running statistics or dropout
masks) splits every mini-batch into two halves of columns: two threads run the
jitted ``_train_part`` (gather, forward, loss and backward of its half; it
releases the GIL) into two gradient vectors at once, then ``_train_step`` adds
them and takes the optimizer step. On two cores this beats one _train whose
BLAS calls use both threads: a batch's im2col products are too small for
BLAS's threads to scale, and the loops around them (im2col copies, pooling)
run on one core there (W6, 2 cores, one process: 12.3k samples/s in one
_train, 16.1k-17.4k in two parts; lowering.PARTS_MIN_LOOP_WORK has more). The
loop costs about 60 us of Python per batch (the queue hand-over and three
kernel calls, each of whose array arguments Numba wraps in a meminfo).

Everything below the marker line is copied verbatim into such a module, where
_train_part, _train_step, _epoch_order, _TRAIN_WORK and _TRAIN_PARTS exist.
``_train`` has the signature and the effects of the jitted _train of other
modules (runtime.py's fit calls either). threadpoolctl (a dependency of derive,
not of the module) limits BLAS to its share of the threads; without it, or with
BLAS limited to one thread (e.g. by a sweep, or threadpoolctl's
threadpool_limits(1) around fit), a batch runs in one part, serially.
"""

# ruff: noqa: I001
from .module_names import _TRAIN_PARTS, _TRAIN_WORK, _epoch_order, _train_part
from .module_names import _train_step
import math
import queue
import threading

import numpy as np

# ---- generated modules include everything below this line ----


def _part_threads():
    """How many parts a batch runs in (1 or _TRAIN_PARTS) and the BLAS threads
    each may use: BLAS's current thread count is the budget (threadpoolctl
    reports it; OPENBLAS_NUM_THREADS or threadpool_limits lower it)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # without it BLAS cannot be limited: one part
        return 1, None
    counts = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    budget = min(counts) if counts else 1
    if budget < _TRAIN_PARTS:
        return 1, None
    return _TRAIN_PARTS, budget // _TRAIN_PARTS


def _part_worker(jobs, results):
    """Runs _train_part on the argument tuples from jobs until None arrives; puts
    each loss sum (or the exception) on results."""
    while True:
        args = jobs.get()
        if args is None:
            return
        try:
            results.put(_train_part(*args))
        except BaseException as error:  # handed to the training thread
            results.put(error)


def _train(
    theta,
    grad,
    slots,
    X_all,
    Y_all,
    order,
    shuffle,
    seed,
    first_epoch,
    lrs,
    batch_size,
    clip_norm,
    hyper,
    step,
    totals,
    status,
    saved_theta,
    saved_slots,
    work,
    iwork,
):
    """Mini-batch training for len(lrs) epochs in one call, each batch in parts.

    The same contract as the jitted _train of modules that train in one part
    (see its docstring): theta, grad and slots are updated in place, totals[e]
    is epoch e's loss sum, status and saved_* report a diverged epoch. work and
    iwork (_train_work(cols)) hold cols columns, a multiple of _TRAIN_PARTS, and
    after them the second part's gradient; each part gets cols / _TRAIN_PARTS
    columns of them (in one part, all of them). A part whose columns are all
    past the batch's rows is not run (its gradient would be zero).
    """
    per_col, _, int_per_col, _ = _TRAIN_WORK
    n_rows = X_all.shape[0]
    cols = (work.size - grad.size * (_TRAIN_PARTS - 1)) // per_col
    parts, blas_threads = _part_threads()
    part_cols = cols // parts  # in one part, all the columns (the second unused)
    part_grad = work[per_col * cols : per_col * cols + grad.size]
    size, int_size = per_col * part_cols, int_per_col * part_cols
    part_work = [work[:size], work[size : 2 * size]]
    part_iwork = [iwork[:int_size], iwork[int_size : 2 * int_size]]
    limits = None
    if parts > 1:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(limits=blas_threads, user_api="blas")
        jobs, results = queue.SimpleQueue(), queue.SimpleQueue()
        worker = threading.Thread(target=_part_worker, args=(jobs, results))
        worker.start()
    try:
        for epoch in range(lrs.shape[0]):
            epoch_index = first_epoch + epoch
            # the state at the epoch's start, which fit restores if the epoch diverges
            saved_theta[...] = theta
            for slot, saved in zip(slots, saved_slots, strict=True):
                saved[...] = slot
            status[4] = step[0]
            if shuffle:
                _epoch_order(seed, epoch_index, order)
            lr = float(lrs[epoch])
            total = 0.0
            for start in range(0, n_rows, batch_size):
                rows = batch_size if start + batch_size <= n_rows else n_rows - start
                second = rows - part_cols  # the second part's rows, if positive
                if second > 0:
                    jobs.put(
                        (theta, part_grad, part_work[1], part_iwork[1], X_all, Y_all,
                         order, start + part_cols, second, rows)
                    )  # fmt: skip
                total += _train_part(
                    theta, grad, part_work[0], part_iwork[0], X_all, Y_all, order,
                    start, min(rows, part_cols), rows,
                )  # fmt: skip
                if second > 0:
                    result = results.get()
                    if isinstance(result, BaseException):
                        raise result
                    total += result
                if not math.isfinite(total):
                    # this batch's loss is NaN or infinite: stop before its update
                    status[:4] = (1, epoch, start, rows)
                    return
                _train_step(
                    theta, grad, part_grad, second > 0, slots, lr, clip_norm, hyper,
                    step,
                )  # fmt: skip
            totals[epoch] = total
            if not np.isfinite(theta).all():
                status[:2] = (2, epoch)
                return
    finally:
        if limits is not None:
            jobs.put(None)
            worker.join()
            limits.restore_original_limits()
