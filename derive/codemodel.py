"""Lowering: Derivation -> CodeModel, the plain strings the templates print.

Everything the templates need is decided here: buffer names and shapes, which
kernel (explicit loops or a BLAS gemm call) each layer uses, the formula comment
of every math line, the initialisation scale. The CodeModel holds only
strings, ints and bools; templates loop over it and print.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from ._version import __version__
from .codeprint import ScalarCode, helpers_called
from .derivation import ActivationDerivation, Derivation, Z

#: Layers with fewer weights than BLAS_MIN_WEIGHTS and at most LOOPS_MAX_INPUTS
#: inputs use explicit loops (vectorized along the batch, the reduction over the
#: inputs unrolled); the others call BLAS gemm (``_xxgemm``). Measured with
#: bench/blas_threshold.py (w-w-w-1 tanh net, float32, 2 cores, ms per 1024-row
#: epoch, loops/BLAS at batch 32 and 128): 8x8 0.24/0.29 and 0.18/0.22, 16x16
#: 0.44/0.52 and 0.32/0.32, 24x24 0.78/0.45 and 0.33/0.52, 32x32 1.16/0.87 and
#: 0.79/0.70, 64x64 11.6/2.3 and 13.1/2.6.
BLAS_MIN_WEIGHTS = 512
LOOPS_MAX_INPUTS = 32


def uses_blas(n_in: int, n_out: int) -> bool:
    """Whether a dense layer of n_in -> n_out units calls BLAS (else loops)."""
    return n_in * n_out >= BLAS_MIN_WEIGHTS or n_in > LOOPS_MAX_INPUTS


HELPER_SOURCES = {
    "_softplus": '''
@numba.njit(cache=True, error_model="numpy", inline="always")
def _softplus(u):
    """log(1 + exp(u)) without overflow: max(u, 0) + log1p(exp(-|u|))."""
    # a conditional expression rather than max: a call Numba compiles separately
    # (this is scalar code; the vectorized tanh clamps keep min/max)
    return (u if u > 0.0 else 0.0) + math.log1p(math.exp(-abs(u)))
''',
    "_tanh_fast": '''
@numba.njit(cache=True, error_model="numpy", inline="always")
def _tanh_fast(u):
    """tanh for float32 modules: Eigen's rational approximation (odd degree-13
    numerator over even degree-6 denominator) evaluated in float64, clamped at
    |u| = 9 (float32 tanh is within 1 ulp of +-1 from there). Numba has no vector
    libm here and math.tanh is a scalar call; this one inlines and vectorizes.
    Max error 3 float32 ulp (tests/test_fast_paths.py)."""
    # min/max, not conditional expressions: LLVM vectorizes these clamps
    x = min(max(u, -9.0), 9.0)
    x2 = x * x
    p = x2 * -2.76076847742355e-16 + 2.00018790482477e-13
    p = x2 * p + -8.60467152213735e-11
    p = x2 * p + 5.12229709037114e-08
    p = x2 * p + 1.48572235717979e-05
    p = x2 * p + 6.37261928875436e-04
    p = x2 * p + 4.89352455891786e-03
    q = x2 * 1.19825839466702e-06 + 1.18534705686654e-04
    q = x2 * q + 2.26843463243900e-03
    q = x2 * q + 4.89352518554385e-03
    return min(max(x * p / q, -1.0), 1.0)
''',
    "_sigmoid": '''
@numba.njit(cache=True, error_model="numpy", inline="always")
def _sigmoid(u):
    """1 / (1 + exp(-u)), never exponentiating a large positive number."""
    if u >= 0.0:
        return 1.0 / (1.0 + math.exp(-u))
    e = math.exp(u)
    return e / (1.0 + e)
''',
}


@dataclass(frozen=True)
class Elementwise:
    """One elementwise formula: CSE temporaries, the result, which scalars it reads."""

    temps: tuple[tuple[str, str], ...]
    result: str
    reads_z: bool
    reads_a: bool
    reads_y: bool
    reads_lse: bool


@dataclass(frozen=True)
class LayerCode:
    """What the templates print for one dense layer (1-based ``index``)."""

    index: int
    n_in: int
    n_out: int
    prev: str  # name of the layer's input buffer: "XT" or "a{index-1}"
    use_blas: bool
    gemm_forward: str  # BLAS calls (empty with loops): z = W @ prev
    gemm_grad_weight: str  # grad_W = delta @ prev.T
    gemm_backward: str  # delta_below = W.T @ delta (empty for layer 1)
    activation: Elementwise | None  # None for a row-wise (softmax) output
    derivative: Elementwise | None  # f' used by the delta recursion (hidden layers)
    forward_comment: str
    activation_comment: str
    derivative_comment: str
    init_comment: str
    init_call: str  # e.g. "rng.normal(0.0, 0.8165, size=(3, 2))"


@dataclass(frozen=True)
class CodeModel:
    """Everything a template needs, as already-printed strings."""

    name: str
    generator_version: str
    spec_hash: str
    spec_toml: str
    dtype: str  # "float32" | "float64"
    sizes: tuple[int, ...]
    layers: tuple[LayerCode, ...]
    helpers: tuple[str, ...]  # helper function sources
    uses_blas: bool  # some layer calls BLAS (the module declares _xxgemm)
    gemm_kind: str  # BLAS precision letter: "s" (float32) or "d" (float64)
    rowwise_softmax: bool
    loss_value: Elementwise
    loss_comment: str
    loss_loads: tuple[tuple[str, str], ...]  # (scalar, buffer element) the loss reads
    output_delta: Elementwise
    output_delta_comment: str
    output_loads: tuple[tuple[str, str], ...]  # what the fused loss + delta loop reads
    targets: str  # "any" | "probability" | "distribution"
    task: str  # "binary" | "multiclass" | "regression"
    threshold: str  # decision threshold of a binary output, as a Python literal
    target_tolerance: str
    train_jit_options: str  # keyword arguments of the training loop's numba.njit
    optimizer_name: str
    optimizer_template: str
    optimizer_hyper: tuple[tuple[str, str], ...]  # (name, Python literal)
    training: tuple[tuple[str, str], ...]
    formulas: tuple[tuple[str, str], ...]
    summary: str


#: float32 modules call these instead of the exact function (bench/ measures the
#: gain; tests/test_fast_paths.py bounds the error in float32 ulp). float64
#: modules always use the exact functions.
FAST_FLOAT32 = {"math.tanh": "_tanh_fast"}


def _fast_float32(code: ScalarCode) -> ScalarCode:
    """The same code with FAST_FLOAT32's approximations swapped in."""

    def swap(text: str) -> str:
        for exact, fast in FAST_FLOAT32.items():
            text = re.sub(rf"(?<![\w.]){re.escape(exact)}\(", f"{fast}(", text)
        return text

    temps = tuple((name, swap(expr)) for name, expr in code.temps)
    result = swap(code.result)
    text = " ".join([result, *(t for _, t in temps)])
    return ScalarCode(temps, result, code.inputs, helpers_called(text))


def _elementwise(code: ScalarCode) -> Elementwise:
    return Elementwise(
        temps=code.temps,
        result=code.result,
        reads_z="z" in code.inputs,
        reads_a="a" in code.inputs,
        reads_y="y" in code.inputs,
        reads_lse="lse" in code.inputs,
    )


def _gemm(
    out: str,
    left: tuple[str, bool, int | str],
    right: tuple[str, bool, int | str],
    rows: int | str,
    cols: int | str,
    inner: int | str,
) -> str:
    """``out = op(left) @ op(right)`` as one call of BLAS gemm (``_xxgemm``).

    Each operand is (row-major buffer, transposed?, the buffer's row length);
    ``out`` is a row-major (rows, cols) buffer. Column-major BLAS sees every
    row-major buffer transposed, so it is asked for
    out.T = op(right).T @ op(left).T: the operands swap places.
    """
    (lname, lt, lld), (rname, rt, rld) = left, right
    flag = {True: "_TRANS", False: "_NO_TRANS"}
    return (
        f"_xxgemm(_GEMM_KIND, {flag[rt]}, {flag[lt]}, {cols}, {rows}, {inner}, "
        f"_ONE.ctypes, {rname}.ctypes, {rld}, {lname}.ctypes, {lld}, "
        f"_ZERO.ctypes, {out}.ctypes, {cols})"
    )


def _gemm_calls(i: int, n_in: int, n_out: int, prev: str) -> tuple[str, str, str]:
    """Layer i's three products as BLAS calls: forward, weight gradient, delta.

    The layer input ``prev`` is an (n_in, cols) buffer, except XT for a BLAS first
    layer: the transpose of the row-major (cols, n_in) array the batch is gathered
    into, which BLAS reads with the transpose flag instead.
    """
    if prev == "XT":
        as_is, transposed = ("XT", True, n_in), ("XT", False, n_in)
    else:
        as_is, transposed = (prev, False, "cols"), (prev, True, "cols")
    weight, delta = (f"W{i}", False, n_in), (f"delta{i}", False, "cols")
    forward = _gemm(f"z{i}", weight, as_is, n_out, "cols", n_in)
    grad_weight = _gemm(f"grad_W{i}", delta, transposed, n_out, n_in, "cols")
    backward = ""
    if i > 1:
        weight_t = (f"W{i}", True, n_in)
        backward = _gemm(f"delta{i - 1}", weight_t, delta, n_in, "cols", n_out)
    return forward, grad_weight, backward


def _loads(n: int, *codes: Elementwise) -> tuple[tuple[str, str], ...]:
    """The output-layer scalars the codes read, each with the element it loads."""
    loads = (
        ("z", f"z{n}[j, i]", any(c.reads_z for c in codes)),
        ("a", f"a{n}[j, i]", any(c.reads_a for c in codes)),
        ("lse", "lse_rows[i]", any(c.reads_lse for c in codes)),
    )
    return tuple((name, element) for name, element, read in loads if read)


def _init(act: ActivationDerivation, n_in: int, n_out: int) -> tuple[str, str]:
    if act.init == "he":
        std = math.sqrt(2.0 / n_in)
        return (
            f"He normal: std = sqrt(2 / n_in) = {std:.6g}",
            f"rng.normal(0.0, {std!r}, size=({n_out}, {n_in}))",
        )
    limit = math.sqrt(6.0 / (n_in + n_out))
    return (
        f"Glorot uniform: limit = sqrt(6 / (n_in + n_out)) = {limit:.6g}",
        f"rng.uniform(-{limit!r}, {limit!r}, size=({n_out}, {n_in}))",
    )


def _task(derivation: Derivation) -> tuple[str, str]:
    """What kind of predictor the network is, and a binary output's threshold.

    Distribution targets (softmax + cross-entropy) make a multiclass classifier;
    probability targets (BCE on probabilities or logits) a binary one per output,
    whose class boundary is the output op at z = 0 (0.5 for a sigmoid, 0.0 for
    logits); every other loss is a regression.
    """
    targets = derivation.loss.targets
    if targets == "distribution":
        return "multiclass", "0.5"
    if targets == "probability":
        out = derivation.layers[-1].activation.forward.expr
        at_zero = float(out.subs(Z, 0).evalf())
        return "binary", repr(at_zero)
    return "regression", "0.5"


#: LLVM fast-math flags of float32 training loops: fused multiply-add, reciprocal
#: division, no signed zeros and reassociation (which lets LLVM vectorize the
#: small-layer reductions). No "nnan"/"ninf": infinities and NaN keep their IEEE
#: meaning, so the max-shifted softmax and stable losses behave as without it.
#: float64 modules compile without fast-math, so they match the reference rules
#: to the last bits the tests check.
FAST_MATH_FLAGS = ("arcp", "contract", "nsz", "reassoc")


def _train_jit_options(dtype: str) -> str:
    options = 'cache=True, error_model="numpy"'
    if dtype == "float32":
        flags = ", ".join(f'"{flag}"' for flag in FAST_MATH_FLAGS)
        options += f", fastmath={{{flags}}}"
    return options


def _py(value: object) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_py(v) for v in value) + ")"
    return repr(value)


def lower(derivation: Derivation) -> CodeModel:
    """Decide everything the templates print for ``derivation``."""
    spec = derivation.spec
    layers = []
    helpers: set[str] = set()
    n_layers = len(derivation.layers)
    for info in derivation.layers:
        act = info.activation
        i = info.index
        prev = "XT" if i == 1 else f"a{i - 1}"
        derivative = None
        derivative_comment = ""
        fast = _fast_float32 if spec.dtype == "float32" else (lambda code: code)
        if not info.is_output:
            assert act.derivative_code is not None
            derivative_code = fast(act.derivative_code)
            derivative = _elementwise(derivative_code)
            helpers.update(derivative_code.helpers)
            chosen = (
                act.derivative_a if act.derivative_form == "a" else act.derivative_z
            )
            assert chosen is not None
            derivative_comment = (
                f"delta{i} = (W{i + 1}.T @ delta{i + 1}) * f'(z{i}), f' = {chosen.text}"
            )
        activation = None
        if act.forward_code is not None:
            forward_code = fast(act.forward_code)
            activation = _elementwise(forward_code)
            helpers.update(forward_code.helpers)
        init_comment, init_call = _init(act, info.n_in, info.n_out)
        use_blas = uses_blas(info.n_in, info.n_out)
        gemms = (
            _gemm_calls(i, info.n_in, info.n_out, prev) if use_blas else ("", "", "")
        )
        layers.append(
            LayerCode(
                index=i,
                n_in=info.n_in,
                n_out=info.n_out,
                prev=prev,
                use_blas=use_blas,
                gemm_forward=gemms[0],
                gemm_grad_weight=gemms[1],
                gemm_backward=gemms[2],
                activation=activation,
                derivative=derivative,
                forward_comment=(
                    f"z{i} = W{i} @ {prev} + b{i}   "
                    f"({info.n_out} unit{'s' if info.n_out != 1 else ''})"
                ),
                activation_comment=f"a{i} = {act.label}(z{i}) = {act.forward.text}",
                derivative_comment=derivative_comment,
                init_comment=init_comment,
                init_call=init_call,
            )
        )
    loss = derivation.loss
    helpers.update(loss.value_code.helpers)
    helpers.update(loss.output_delta_code.helpers)
    hyper = tuple((k, _py(v)) for k, v in spec.optimizer.hyper)
    optimizer_template = {
        "sgd": "optim_sgd.py.jinja",
        "momentum": "optim_sgd.py.jinja",
        "nesterov": "optim_sgd.py.jinja",
        "adam": "optim_adam.py.jinja",
        "adamw": "optim_adam.py.jinja",
        "rmsprop": "optim_rmsprop.py.jinja",
    }[spec.optimizer.name]
    if spec.optimizer.name == "adamw":
        hyper = (*hyper, ("decoupled", "True"))
    elif spec.optimizer.name in ("adam",):
        hyper = (*hyper, ("decoupled", "False"))
    task, threshold = _task(derivation)
    loss_value = _elementwise(loss.value_code)
    output_delta = _elementwise(loss.output_delta_code)
    arch = "-".join(str(s) for s in spec.sizes)
    acts = ", ".join(layer.activation.label for layer in spec.layers)
    return CodeModel(
        name=spec.name,
        generator_version=__version__,
        spec_hash=spec.hash,
        spec_toml=spec.to_toml(),
        dtype=spec.dtype,
        sizes=spec.sizes,
        layers=tuple(layers),
        helpers=tuple(HELPER_SOURCES[h].strip() for h in sorted(helpers)),
        uses_blas=any(layer.use_blas for layer in layers),
        gemm_kind="s" if spec.dtype == "float32" else "d",
        rowwise_softmax=derivation.layers[-1].activation.kind == "softmax",
        loss_value=loss_value,
        loss_comment=f"l = {loss.value.text}   ({spec.loss.label}, per output element)",
        loss_loads=_loads(n_layers, loss_value),
        output_delta=output_delta,
        output_delta_comment=(
            f"delta{n_layers} = dL/dz{n_layers} = ({loss.output_delta.text}) / batch_size"
        ),
        output_loads=_loads(n_layers, loss_value, output_delta),
        targets=loss.targets,
        task=task,
        threshold=threshold,
        target_tolerance="1e-4" if spec.dtype == "float32" else "1e-8",
        train_jit_options=_train_jit_options(spec.dtype),
        optimizer_name=spec.optimizer.name,
        optimizer_template=optimizer_template,
        optimizer_hyper=hyper,
        training=tuple((k, _py(v)) for k, v in vars(spec.training).items()),
        formulas=tuple((k, json.dumps(v)) for k, v in derivation.formulas().items()),
        summary=f"{arch} network ({acts}; loss {spec.loss.label}; {spec.dtype})",
    )
