"""The gradient self-test every generated module carries: ``check_gradients``
and ``python module.py --self-test``.

Everything below the marker line is copied verbatim to the end of each
generated module, after the runtime (``runtime.py``), whose names it uses.

The check compares the module's own derived gradients (``_gradients``, the
kernel ``loss_and_grad`` and, line for line, ``fit`` run) with central finite
differences of its own training-mode batch loss, both in float64. The kernels
are generic in their arrays' dtype, so a float32 module is checked through a
float64 evaluation of the same formulas (the same kernels, compiled once more
for float64 arrays): a float32 finite difference could not tell a 1% error from
rounding. Each parameter gets its own step, from the scale of its values; every
entry of a small parameter is checked, a seeded random subset of a large one.
A non-smooth point (relu's kink, a max-pooling switch) inside a difference's
step is detected, retried with a step a hundred times smaller, and skipped only
if the loss is still not smooth there; skipped entries are counted.
"""

# ruff: noqa: I001
from .module_names import (
    DTYPE,
    GENERATED_WITH,
    GENERATOR_VERSION,
    N_INPUT,
    N_OUTPUT,
    SPEC_NAME,
    TARGETS,
    _DELTA_BUFFERS,
    _FORWARD_BUFFERS,
    _MASKS,
    _MIN_TRAINING_ROWS,
    _PARAMS,
    _STATE,
    _TRAINING_BUFFERS,
    _evaluate,
    _gradients,
)
from .runtime import (
    _N_PARAMS,
    _NAMES,
    _allocate,
    _as_inputs,
    _as_targets,
    _check_params,
    _check_targets,
    _flat_views,
    _kernel_input,
    _kernel_view,
    _masks,
    init_params,
    loss_and_grad,
)
import math
import time

import numba
import numpy as np

# ---- generated modules include everything below this line ----


# ---------------------------------------------------------------- self-test
# check_gradients: central finite differences of this module's training-mode
# loss against its derived gradients, in float64 (derive/codegen/runtime/check.py).

#: relative error an entry may have: float64 arithmetic, or a float32 module's
#: formulas in float64 (its float32 constants and fast tanh differ from the
#: exact functions by about 1e-7, which a 1% error dwarfs either way)
_CHECK_TOLERANCE = 1e-5 if DTYPE == np.float64 else 1e-3
#: an entry smaller than this fraction of its scale (the summed size of its
#: per-sample terms, or its parameter's largest gradient) has its error measured
#: against that fraction instead: rounding is relative to the terms, not the sum
_CHECK_FLOOR = 1e-7 if DTYPE == np.float64 else 1e-3
_CHECK_STEP = 1e-5  # the step of a parameter, relative to the scale of its values
_CHECK_RETRY = 100.0  # a failed entry is tried again with a step this much smaller


class ParameterCheck:
    """The finite-difference check of one parameter: how many entries were
    checked (and skipped at non-smooth points) and its worst entry."""

    __slots__ = ("name", "shape", "size", "checked", "skipped", "step", "worst")

    def __init__(self, name, shape, size, checked, skipped, step, worst):
        self.name = name
        self.shape = shape
        self.size = size
        self.checked = checked
        self.skipped = skipped
        self.step = step
        #: (index, analytic, numeric, relative error) of the worst entry, or None
        self.worst = worst

    @property
    def relative_error(self):
        return 0.0 if self.worst is None else self.worst[3]

    def __repr__(self):
        return (
            f"ParameterCheck({self.name}, checked={self.checked}/{self.size}, "
            f"skipped={self.skipped}, relative_error={self.relative_error:.3g})"
        )


class GradientCheck:
    """The result of check_gradients(): ``ok``, ``worst_relative_error`` (over
    every checked entry), ``tolerance``, ``parameters`` (a ParameterCheck each:
    its worst entry, how many entries were checked and skipped), ``problems``
    (what failed, in words); ``str()`` is a readable report naming where it
    failed."""

    def __init__(
        self,
        parameters,
        problems,
        *,
        tolerance,
        rows,
        seed,
        loss,
        float32_error,
        evaluations,
        seconds,
    ):
        self.parameters = tuple(parameters)
        self.problems = tuple(problems)
        self.tolerance = tolerance
        self.rows = rows
        self.seed = seed
        self.loss = loss
        #: float32 modules: the largest norm-wise relative difference of a
        #: gradient of the float32 code (loss_and_grad) from its float64 evaluation
        self.float32_error = float32_error
        self.evaluations = evaluations
        self.seconds = seconds
        errors = [p.relative_error for p in self.parameters]
        self.worst_relative_error = max(errors, default=0.0)
        self.ok = not self.problems and self.worst_relative_error <= tolerance

    @property
    def checked(self):
        return sum(p.checked for p in self.parameters)

    @property
    def skipped(self):
        return sum(p.skipped for p in self.parameters)

    def __repr__(self):
        return (
            f"<GradientCheck of '{SPEC_NAME}': {'ok' if self.ok else 'FAILED'}, "
            f"worst relative error {self.worst_relative_error:.3g} "
            f"(tolerance {self.tolerance:g})>"
        )

    def __str__(self):
        precision = "float64" if DTYPE == np.float64 else "float32 formulas in float64"
        total = sum(p.size for p in self.parameters)
        recorded = GENERATED_WITH["numba"]
        running = (
            ""
            if numba.__version__ == recorded
            else f"; running Numba {numba.__version__}"
        )
        lines = [
            f"gradient check of '{SPEC_NAME}': {'OK' if self.ok else 'FAILED'}",
            f"  generated with derive {GENERATOR_VERSION}, SymPy "
            f"{GENERATED_WITH['sympy']}, Numba {recorded}{running}",
            f"  central differences of the training-mode batch loss ({precision}; "
            f"{self.rows} rows, seed {self.seed}) against loss_and_grad's gradients",
            f"  worst relative error {self.worst_relative_error:.2e} (tolerance "
            f"{self.tolerance:.0e}); {self.checked} of {total} entries checked"
            + (f", {self.skipped} skipped at non-smooth points" if self.skipped else "")
            + f"; {self.evaluations} loss evaluations in {self.seconds:.2f} s",
        ]
        if self.float32_error is not None:
            lines.append(
                "  float32 arithmetic: loss_and_grad's gradients are within "
                f"{self.float32_error:.1e} (norm-wise) of the float64 evaluation"
            )
        lines += [f"  FAILED: {problem}" for problem in self.problems]
        rows = [
            (
                "param",
                "shape",
                "checked",
                "worst entry",
                "derived",
                "numeric",
                "rel. error",
            )
        ]
        for p in self.parameters:
            shape = "x".join(str(n) for n in p.shape)
            checked = f"{p.checked}/{p.size}" + (
                f" ({p.skipped} skipped)" * bool(p.skipped)
            )
            if p.worst is None:
                rows.append((p.name, shape, checked, "-", "-", "-", "-"))
                continue
            index, analytic, numeric, error = p.worst
            mark = "  <- FAILED" if error > self.tolerance else ""
            rows.append(
                (
                    p.name,
                    shape,
                    checked,
                    f"{p.name}[{', '.join(map(str, index))}]",
                    f"{analytic:.6g}",
                    f"{numeric:.6g}",
                    f"{error:.2e}{mark}",
                )
            )
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        for row in rows:
            lines.append(
                "  "
                + "  ".join(
                    v.ljust(w) for v, w in zip(row, widths, strict=True)
                ).rstrip()
            )
        return "\n".join(lines)


def _check_inputs(params, X, Y, rows, rng):
    """float64 copies of the point of the check: the given params, X, Y, or
    seeded random ones (init_params, zero-initialised entries made random;
    X standard normal; targets the loss accepts)."""
    if params is None:
        params = init_params(int(rng.integers(2**31)))
        for (_, shape, init, _), p in zip(_PARAMS, params, strict=True):
            if init == "zeros":  # biases, shifts: an entry of 0 hides mistakes
                p[...] = rng.normal(0.0, 0.5, shape)
    else:
        _check_params(params)
    if (X is None) != (Y is None):
        raise ValueError(
            "give both X and Y, or neither (random data of the right shape)"
        )
    if X is None:
        X = rng.normal(0.0, 1.0, (rows, N_INPUT))
        if TARGETS == "distribution":
            logits = rng.normal(0.0, 1.0, (rows, N_OUTPUT))
            Y = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        elif TARGETS == "probability":
            Y = rng.uniform(0.0, 1.0, (rows, N_OUTPUT))
        else:
            Y = rng.normal(0.0, 1.0, (rows, N_OUTPUT))
    else:
        X = _as_inputs("X", X)
        Y = _as_targets("Y", Y)
        _check_targets(Y, X.shape[0])
    params = [np.ascontiguousarray(p, dtype=np.float64) for p in params]
    X = np.ascontiguousarray(X, dtype=np.float64)
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    return params, X, Y


def _check_masks(masks, rows, rng):
    """The dropout masks of the check, in the kernels' layout: the given ones, or
    fixed seeded ones (each value kept with the layer's keep probability)."""
    if masks is not None:
        return [np.ascontiguousarray(m, dtype=np.float64) for m in _masks(masks, rows)]
    return [
        (rng.random((math.prod(shape), rows)) < keep).astype(np.float64)
        for _, shape, keep in _MASKS
    ]


def check_gradients(
    params=None,
    X=None,
    Y=None,
    *,
    samples=100,
    seed=0,
    rows=8,
    masks=None,
    tolerance=None,
):
    """Check loss_and_grad's derived gradients against central finite
    differences of the training-mode batch loss, in float64; returns a
    GradientCheck (``ok``, ``worst_relative_error``, the worst entry per
    parameter; ``str()`` reports it).

    params, X, Y: the point to check at; by default seeded random ones (init_params
    with random biases, ``rows`` rows of standard normal inputs, targets the loss
    accepts). samples: the most entries checked per parameter (a seeded random
    subset of larger ones; every entry of smaller ones). masks: dropout masks as
    for loss_and_grad; by default fixed random ones drawn from seed. tolerance:
    the largest relative error accepted (default 1e-5, float32 modules 1e-3).
    """
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    samples = int(samples)
    if samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples}")
    tolerance = _CHECK_TOLERANCE if tolerance is None else float(tolerance)
    params, X, Y = _check_inputs(params, X, Y, int(rows), rng)
    n = X.shape[0]
    if n < _MIN_TRAINING_ROWS:
        raise ValueError(
            f"the check needs {_MIN_TRAINING_ROWS} or more rows (batch norm of "
            "single values needs two per batch)"
        )
    mask_values = _check_masks(masks, n, rng)
    # the kernels' arguments, in float64: the parameters as views of one flat
    # vector (each entry is perturbed in place), work buffers for n rows
    theta = np.concatenate([p.reshape(-1) for p in params])
    gradients, batch_loss = _check_kernels(theta, X, Y, mask_values)
    problems = []
    value, analytic = gradients()
    base = batch_loss()
    evaluations = 2
    finite = math.isfinite(value) and bool(np.all(np.isfinite(analytic)))
    if not finite:
        problems.append(
            "the loss or a gradient is NaN or infinite at this point, so nothing "
            "can be compared: the network is not defined there (a user expression "
            "outside its domain?) or overflows; pass params, X, Y where it is finite"
        )
    elif not abs(value - base) <= 1e-9 * max(1.0, abs(base)):
        problems.append(
            f"loss_and_grad's loss {value!r} differs from the loss {base!r} "
            "of the same network at the same point"
        )
    # what finite differences cannot resolve, per entry: the loss's rounding
    # over the step, and a small fraction of the size of what the entry sums
    # (the per-sample terms; a cancelled sum is only known to their precision)
    # or of the parameter's largest gradient
    magnitudes = _sample_magnitudes(theta, X, Y, mask_values) if finite else None
    results = []
    offset = 0
    for name, shape in zip(_NAMES, [p.shape for p in params], strict=True):
        size = math.prod(shape)
        block = slice(offset, offset + size)
        offset += size
        if not finite or not size:
            results.append(ParameterCheck(name, shape, size, 0, 0, 0.0, None))
            continue
        values, derived = theta[block], analytic[block]
        spread = float(np.sqrt(np.mean(values * values)))
        step = _CHECK_STEP * max(spread, 0.1)
        scale = np.full(size, float(np.max(np.abs(derived))))
        if magnitudes is not None:
            scale = np.maximum(scale, magnitudes[block])
        picked = (
            np.arange(size)
            if size <= samples
            else np.sort(rng.choice(size, samples, replace=False))
        )
        noise = 8.0 * np.finfo(np.float64).eps * max(abs(base), 1e-300) / step
        worst, checked, skipped = None, 0, 0
        for k in picked:
            numeric, error, count = _difference(
                theta, block.start + int(k), step, derived[k], batch_loss, base,
                noise, scale[k], tolerance,
            )  # fmt: skip
            evaluations += count
            if numeric is None:
                skipped += 1
                continue
            checked += 1
            if worst is None or error > worst[3]:
                index = tuple(int(i) for i in np.unravel_index(int(k), shape))
                worst = (index, float(derived[k]), float(numeric), float(error))
        results.append(ParameterCheck(name, shape, size, checked, skipped, step, worst))
        if worst is not None and worst[3] > tolerance:
            index, a, numeric, error = worst
            problems.append(
                f"grad_{name}[{', '.join(map(str, index))}] is {a:.6g} but finite "
                f"differences give {numeric:.6g} (relative error {error:.2e} > "
                f"{tolerance:.0e})"
            )
    float32_error = None
    if DTYPE != np.float64 and not problems:
        float32_error = _float32_agreement(params, X, Y, mask_values, analytic)
    return GradientCheck(
        results,
        problems,
        tolerance=tolerance,
        rows=n,
        seed=seed,
        loss=base,
        float32_error=float32_error,
        evaluations=evaluations,
        seconds=time.perf_counter() - started,
    )


def _check_kernels(theta, X, Y, mask_values):
    """(gradients, batch_loss) at the parameters in theta (float64), for the
    rows of X, Y with the given dropout masks: gradients() -> (mean loss, flat
    gradient) from _gradients, batch_loss() -> the training-mode mean loss."""
    n = X.shape[0]
    views = [_kernel_view(v) for v in _flat_views(theta)]
    grad = np.empty(_N_PARAMS)
    grad_views = [_kernel_view(g) for g in _flat_views(grad)]
    inputs = _kernel_input(X)
    forward = _allocate([_FORWARD_BUFFERS], n, dtype=np.float64)
    training = _allocate([_TRAINING_BUFFERS], n, dtype=np.float64)
    names = [name for name, _, _ in _TRAINING_BUFFERS]
    for (name, _, _), mask in zip(_MASKS, mask_values, strict=True):
        training[names.index(name)] = mask
    deltas = _allocate([_DELTA_BUFFERS], n, dtype=np.float64)

    def training_loss():
        return (
            _gradients(*views, inputs, Y, *forward, *training, *deltas, *grad_views) / n
        )

    def gradients():
        return training_loss(), grad.copy()

    if _TRAINING_BUFFERS or _STATE:
        # batch statistics or dropout: the training forward is _gradients' own
        batch_loss = training_loss
    else:  # the same network in both modes: the evaluation forward and loss

        def batch_loss():
            return _evaluate(*views, inputs, Y, *forward) / n

    return gradients, batch_loss


def _sample_magnitudes(theta, X, Y, mask_values):
    """Per entry of theta, the sum over the rows of the size of each row's term
    of the gradient (|d loss_i / d theta| / n); None with batch norm, where the
    rows do not have separate terms."""
    if _STATE:
        return None
    total = np.zeros(theta.size)
    n = X.shape[0]
    for i in range(n):
        masks = [np.ascontiguousarray(m[:, i : i + 1]) for m in mask_values]
        gradients, _ = _check_kernels(theta, X[i : i + 1], Y[i : i + 1], masks)
        total += np.abs(gradients()[1])
    return total / n


def _difference(
    theta, position, step, derived, batch_loss, base, noise, scale, tolerance
):
    """(numeric derivative, relative error, loss evaluations) of one entry of
    theta; numeric is None for an entry at a non-smooth point of the loss
    (skipped)."""
    old = theta[position]
    theta[position] = old + step
    plus = batch_loss()
    theta[position] = old - step
    minus = batch_loss()
    theta[position] = old
    numeric = (plus - minus) / (2.0 * step)
    floor = max(10.0 * noise / tolerance, _CHECK_FLOOR * scale, 1e-300)
    error = abs(derived - numeric) / max(abs(derived), abs(numeric), floor)
    if error <= tolerance:
        return numeric, error, 2
    # a kink inside the step makes the central difference wrong: try again with
    # a step that no kink further away straddles, and skip the entry if the loss
    # is not smooth there either (its one-sided slopes differ)
    small = step / _CHECK_RETRY
    theta[position] = old + small
    plus = batch_loss()
    theta[position] = old - small
    minus = batch_loss()
    theta[position] = old
    forward, backward = (plus - base) / small, (base - minus) / small
    floor = max(10.0 * noise * _CHECK_RETRY / tolerance, _CHECK_FLOOR * scale, 1e-300)
    if abs(forward - backward) > tolerance * max(abs(forward), abs(backward), floor):
        return None, 0.0, 4
    numeric = (plus - minus) / (2.0 * small)
    error = abs(derived - numeric) / max(abs(derived), abs(numeric), floor)
    return numeric, error, 4


def _float32_agreement(params, X, Y, mask_values, analytic):
    """How far the float32 code's gradients (loss_and_grad, in float32) are from
    their float64 evaluation: the largest norm-wise relative difference."""
    masks = (
        [
            m.T.reshape(X.shape[0], *shape)
            for m, (_, shape, _) in zip(mask_values, _MASKS, strict=True)
        ]
        if _MASKS
        else None
    )
    _, grads = loss_and_grad([p.astype(DTYPE) for p in params], X, Y, masks=masks)
    worst, offset = 0.0, 0
    for g in grads:
        exact = analytic[offset : offset + g.size]
        offset += g.size
        norm = float(np.linalg.norm(exact))
        if norm > 0:
            difference = float(np.linalg.norm(g.reshape(-1).astype(np.float64) - exact))
            worst = max(worst, difference / norm)
    return worst


def _self_test(argv=None):
    """``python module.py --self-test``: check_gradients on random data of the
    right shape; prints the report, exits 0 if it passed, else 1."""
    import argparse

    parser = argparse.ArgumentParser(
        description=f"The generated module of spec '{SPEC_NAME}' (derive "
        f"{GENERATOR_VERSION}). Import it to use it; run it with --self-test to "
        "check its derived gradients against finite differences."
    )
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="check the gradients on random data; exit 0 if they pass, else 1",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random point")
    parser.add_argument(
        "--samples",
        type=int,
        default=100,
        help="most entries checked per parameter (default 100)",
    )
    args = parser.parse_args(argv)
    if not args.self_test:
        parser.print_help()
        return 2
    if args.samples < 1:
        parser.error(f"--samples must be a positive integer, got {args.samples}")
    result = check_gradients(seed=args.seed, samples=args.samples)
    print(result)
    return 0 if result.ok else 1


def _main():
    """Run the self-test in this file imported as a module, as ``import NAME``
    would: Numba's on-disk cache belongs to the module name that compiled it,
    and one compiled under __main__ would not load under the real name (nor the
    other way round)."""
    import importlib
    import os
    import sys

    here = os.path.abspath(__file__)
    name = os.path.splitext(os.path.basename(here))[0]
    if name.isidentifier() and name not in sys.modules:
        sys.path.insert(0, os.path.dirname(here))
        module = importlib.import_module(name)
        if os.path.abspath(getattr(module, "__file__", "")) == here:
            return module._self_test()
    return _self_test()


if __name__ == "__main__":
    raise SystemExit(_main())
