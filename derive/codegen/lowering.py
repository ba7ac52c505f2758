"""Lowering: Derivation -> CodeModel, the plain strings the templates print.

Everything the templates need is decided here: buffer names and shapes, each
layer's statements and derived backward rules as loop nests (:mod:`.loops`) or
BLAS gemm calls, the elementwise passes (activation, f', the fused loss and
output delta) with their formula comments, parameter initialisation, the
optimizer's variant. SymPy becomes code here and nowhere else, through the
printer of the module's dtype. The CodeModel holds only strings, ints, bools and
tuples of them; templates loop over it and print.

Buffers are feature-major: every buffer but a parameter has the batch as its
last axis (``z1[j, i]`` is unit j of sample i), so loops over the batch run
along contiguous memory and vectorize, and a dense layer's product is a plain
``W @ A`` gemm without transposed copies.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sympy as sp

from .._version import __version__
from ..engine.adjoint import AdjointRule, statement_guards, value_reads
from ..engine.derivation import Derivation, KindDerivation, LayerInfo, Z
from ..engine.notation import (
    bound_gather,
    gather_text,
    layer_names,
    rename,
    statement_text,
)
from ..engine.notation import text as notation_text
from ..layers.ir import B, LayerKind, Statement
from ..optimizers import OPTIMIZER_DEFS
from .head import summary
from .loops import Guard, Nest, print_nest
from .outline import SEGMENT, View, outline
from .printer import ScalarCode, code, helpers_called, print_scalar_code
from .sources import blas_source, helper_source, parts_source, views_source

#: Dense layers with fewer weights than BLAS_MIN_WEIGHTS and at most
#: LOOPS_MAX_INPUTS inputs use explicit loops (vectorized along the batch, the
#: reduction over the inputs unrolled); the others call BLAS gemm (``_gemm``).
#: Measured with bench/blas_threshold.py (w-w-w-1 tanh net, float32, 2 cores, ms
#: per 1024-row epoch, loops/BLAS at batch 32 and 128): 8x8 0.24/0.29 and
#: 0.18/0.22, 16x16 0.44/0.52 and 0.32/0.32, 24x24 0.78/0.45 and 0.33/0.52, 32x32
#: 1.16/0.87 and 0.79/0.70, 64x64 11.6/2.3 and 13.1/2.6.
BLAS_MIN_WEIGHTS = 512
LOOPS_MAX_INPUTS = 32


#: A module whose training forward runs at least PARTS_MIN_LOOP_WORK loop
#: iterations per sample outside BLAS (im2col copies, pooling windows, direct
#: convolutions, activations; _sample_work) trains each batch in TRAIN_PARTS
#: parts at once, if its rows are independent (no batch statistics or dropout
#: masks): two threads each run the gather, forward and backward of half the
#: batch's columns with one BLAS thread each (runtime/parts.py). One _train runs
#: those loops on one core, and a batch's small im2col GEMMs do not scale over
#: BLAS's two threads; the threaded loop costs about 60 us of Python per batch.
#: Measured (bench-like data, float32, 2 cores, samples/s of one jitted _train
#: with 2 BLAS threads -> two parts, two runs; loop work per sample): conv 3x3
#: pad 1 + relu + dense 10, batch 32: 8 ch 16x16 (18k) 11.3k-18.0k -> 26.4k-34.9k,
#: 64 ch 8x8 (37k) 4.0k-4.6k -> 8.7k-9.0k, 32 ch 16x16 (74k) 3.8k -> 5.3k, 16 ch
#: 32x32 (147k) 1.7k -> 2.4k; W6 (41k, batch 64) 12.3k-13.9k -> 16.1k-17.0k; W5
#: (1.2k) 794k-818k -> 252k-306k; dense nets (no loop work): W4 784-256-256-10
#: batch 256 113k -> 103k, 784-512-10 batch 256 90k-95k -> 72k-87k, 256-256-256-10
#: batch 64 151k -> 112k, 784-128-10 batch 32 166k -> 110k (but W4 at batch 64
#: 33k -> 67k: BLAS's threads thrash on its products there).
PARTS_MIN_LOOP_WORK = 10_000
TRAIN_PARTS = 2


def uses_blas(n_in: int, n_out: int) -> bool:
    """Whether a dense layer of n_in -> n_out units calls BLAS (else loops)."""
    return n_in * n_out >= BLAS_MIN_WEIGHTS or n_in > LOOPS_MAX_INPUTS


@dataclass(frozen=True)
class ParamCode:
    """One parameter: name, shape, initialisation (runtime ``_PARAMS``)."""

    name: str
    shape: tuple[int, ...]
    init: str  # "uniform" | "normal" | "zeros" | "ones"
    scale: str  # Python literal
    comment: str


@dataclass(frozen=True)
class BufferCode:
    """A work buffer: name, per-sample shape (the batch axis comes last), kind:
    "float", "int", or "stat" (float, one value per channel: no batch axis)."""

    name: str
    shape: tuple[int, ...]
    kind: str


@dataclass(frozen=True)
class StateCode:
    """Module state that training updates and evaluation reads (running
    statistics): name, shape, initial value (runtime ``_STATE``)."""

    name: str
    shape: tuple[int, ...]
    init: str  # "zeros" | "ones"


@dataclass(frozen=True)
class MaskCode:
    """A dropout mask: name, per-sample shape, keep probability (Python literal)."""

    name: str
    shape: tuple[int, ...]
    keep: str


@dataclass(frozen=True)
class CodeModel:
    """Everything a template needs, as already-printed strings."""

    generator_version: str
    architecture_hash: str
    dtype: str  # "float32" | "float64"
    summary: str
    input_shape: tuple[int, ...]
    sizes: tuple[int, ...]
    shapes: tuple[tuple[int, ...], ...]
    n_input: int
    n_output: int
    params: tuple[ParamCode, ...]
    state: tuple[StateCode, ...]
    masks: tuple[MaskCode, ...]
    forward_buffers: tuple[BufferCode, ...]  # of the evaluation forward
    training_buffers: tuple[BufferCode, ...]  # what only the training forward uses
    delta_buffers: tuple[BufferCode, ...]
    output_buffer: int
    min_training_rows: int  # batch norm over single values needs two rows
    input_arg: str  # "X" (rows; the kernels take X.T) or "XT" (feature-major copy)
    forward_signature: str  # the kernels' arguments
    evaluate_signature: str
    gradients_signature: str
    train_signature: str
    train_views: str  # _train: its parameters, gradients and buffers as views
    views: str  # the view intrinsic those lines call (runtime/views.py)
    train_work: tuple[int, int, int, int]  # work/iwork sizes: per column, fixed
    train_parts: int  # 1: one jitted _train; TRAIN_PARTS: threaded, runtime/parts.py
    part_backward_code: str  # _train_part's backward (the mean over batch_rows)
    parts: str  # the threaded _train (runtime/parts.py), with train_parts > 1
    forward_code: str  # the evaluation forward pass over `cols` samples
    training_forward_code: str  # the training forward (batch statistics, masks)
    update_code: str  # _train: the state updates after each training forward
    mask_code: str  # _train: a batch's dropout masks from the seeded generator
    loss_code: str  # the loss sum over the first rows samples
    backward_code: str  # loss, output delta and every gradient
    train_forward_code: str  # _train's training forward (fast-math copies, float32)
    train_backward_code: str  # _train's backward
    layer_functions: tuple[str, ...]  # blocks that several layers share, outlined
    train_layer_functions: tuple[str, ...]  # their fast-math copies for _train
    gather_code: str  # _train: a batch's rows into XT and YT
    helpers: tuple[str, ...]  # helper function sources
    blas: str  # the gemm declaration, if some product calls BLAS
    targets: str  # "any" | "probability" | "distribution"
    task: str  # "binary" | "multiclass" | "regression"
    threshold: str  # decision threshold of a binary output, as a Python literal
    target_tolerance: str
    train_jit_options: str  # keyword arguments of the training loop's numba.njit
    optimizer_template: str
    optimizer_keys: tuple[str, ...]  # the hyper-parameters the jitted update reads
    optimizer_slots: int
    optimizer_decoupled: bool  # AdamW's decoupled weight decay
    formulas: tuple[tuple[str, str], ...]


#: A layer's block of kernel code that at least this many layers share (the
#: same kind, sizes and activation) becomes one jitted function they all call:
#: Numba then compiles it once instead of once per layer and kernel, which keeps
#: the compile time per added layer constant (bench/depth_scaling.py: 16 equal
#: tanh layers compiled in 14.4 s inline, 7.0 s outlined). Networks without
#: repeated layers (every shipped example) are printed as before.
OUTLINE_MIN_LAYERS = 2


#: LLVM fast-math flags of float32 training loops: fused multiply-add, reciprocal
#: division, no signed zeros and reassociation (which lets LLVM vectorize the
#: small-layer reductions). No "nnan"/"ninf": infinities and NaN keep their IEEE
#: meaning, so the max-shifted softmax, stable losses and max pooling's NaN rule
#: behave as without it. float64 modules compile without fast-math, so they
#: match the reference rules to the last bits the tests check.
FAST_MATH_FLAGS = ("arcp", "contract", "nsz", "reassoc")


#: numba.njit options of every kernel (the training loop adds fast-math in float32)
JIT_OPTIONS = 'cache=True, error_model="numpy"'


def _train_jit_options(dtype: str) -> str:
    options = JIT_OPTIONS
    if dtype == "float32":
        flags = ", ".join(f'"{flag}"' for flag in FAST_MATH_FLAGS)
        options += f", fastmath={{{flags}}}"
    return options


# ------------------------------------------------------------------- buffers


#: Convolutions with at least IM2COL_MIN_TAPS weights per filter (C * k_h * k_w)
#: run as im2col + gemm; smaller ones as direct loops (batch innermost, one
#: thread). Measured with bench/conv_threshold.py (conv2d relu -> dense 10,
#: float32, 2 cores, ms per 1024-image epoch, direct/im2col at batch 32 and 64):
#: 1x1 kernel 1->4 on 8x8 0.82/0.58 and 0.52/0.50; 2x2 2->4 on 8x8 0.86/0.62 and
#: 0.89/0.79; 3x3 1->8 on 8x8 2.31/1.80 and 2.29/1.69; 3x3 1->16 on 28x28
#: 66.3/50.2 and 53.7/55.5; 3x3 16->32 on 13x13 266/70 and 175/57. im2col wins
#: from the smallest layer, so every convolution uses it; the direct form stays
#: (tests force it) for layers a future measurement may send back to it.
IM2COL_MIN_TAPS = 1


def uses_im2col(info: LayerInfo) -> bool:
    """Whether a convolution layer lowers to im2col + gemm (else direct loops)."""
    if info.im2col is None:
        return False
    kind = info.kind.kind
    (weight,) = kind.param_tensors[:1]
    binding = dict(info.binding)
    taps = math.prod(int(sp.sympify(e).xreplace(binding)) for e in weight.shape[1:])
    return taps >= IM2COL_MIN_TAPS


@dataclass(frozen=True)
class _Layer:
    """A layer's decisions: the form of its kind it runs (``kd``: the kind's own
    statements, or their im2col rewrite), its buffer names, and whether its
    products call BLAS."""

    info: LayerInfo
    kd: KindDerivation
    input: str  # the buffer the layer reads: "XT" or "a{l-1}"
    output: str  # the buffer of the kind's output tensor: "z{l}" or "a{l}"
    names: dict  # local tensor (and "d" + local adjoint) -> buffer name
    blas: bool
    input_adjoint: str | None  # where d<input> accumulates (None: the input's)
    below: int | None  # the nearest layer below that is not a view
    #: buffers this layer's statements index in the kind's own view of the
    #: shape ((C, R) for batch norm), whatever the buffer's shape elsewhere
    local_layouts: dict = field(default_factory=dict)

    @property
    def kind(self) -> LayerKind:
        return self.kd.kind


#: Locals of the generated kernels; a layer kind's index names must differ.
KERNEL_LOCALS = frozenset(
    {"rows", "cols", "n_rows", "total", "acc", "lr", "epoch", "start", "row", "order",
     "inv_rows", "bias_grad", "back", "delta", "z", "a", "y", "lse", "best", "best_at",
     "value", "factor", "top", "total_exp", "exp_shifted", "theta", "grad", "step",
     "status", "check", "saved_theta", "saved_slots"}
)  # fmt: skip


def _plan(d: Derivation) -> list[_Layer]:
    plans: list[_Layer] = []
    for info in d.layers:
        i = info.index
        im2col = uses_im2col(info)
        kd = info.im2col if im2col and info.im2col is not None else info.kind
        kind = kd.kind
        for st in (*kind.forward, *(kind.evaluate or ()), *kind.update):
            clash = {
                str(s) for s in st.index + tuple(v for v, _ in st.reduce)
            } & KERNEL_LOCALS
            if clash:
                raise ValueError(
                    f"layer kind {info.name}: index names {sorted(clash)} are locals "
                    "of the generated kernels; rename them in the kind's definition"
                )
        names = layer_names(info, kind)
        below = next((p.info.index for p in reversed(plans) if not p.kind.view), None)
        source = "XT" if i == 1 else f"a{i - 1}"
        adjoint = None if below is None else f"delta{i - 1}"
        adjoints = {f"da{i - 1}": adjoint}
        if info.residual is not None and info.residual != i - 1:
            # another layer's output: its adjoint buffer (the network input has none)
            src = info.residual
            feeds = any(not p.kind.view for p in plans[:src])
            adjoints[f"da{src}"] = f"delta{src}" if feeds else None
        renamed = {}
        for key, value in names.items():
            if value == "a0":
                value = "XT"
            if key.startswith("d") and value in adjoints:
                value = adjoints[value] or ""
            renamed[key] = value
        blas = im2col or (kind.name == "dense" and uses_blas(info.n_in, info.n_out))
        output = f"z{i}" if kind.activation else f"a{i}"
        local: dict[str, tuple[int, ...]] = {}
        if kind.shape_of is not None:
            # the statements see the input (and so the output) as (C, R) or (N,)
            binding = dict(info.binding)
            view = tuple(int(sp.sympify(e).xreplace(binding)) for e in kind.input)
            for name in (source, output, adjoint, f"delta{i}"):
                if name:
                    local[name] = view
        plans.append(
            _Layer(info, kd, source, output, renamed, blas, adjoint, below, local)
        )
    return plans


@dataclass(frozen=True)
class _Buffers:
    """The kernels' work buffers by group (see CodeModel)."""

    forward: tuple[BufferCode, ...]
    training: tuple[BufferCode, ...]
    deltas: tuple[BufferCode, ...]
    state: tuple[StateCode, ...]
    masks: tuple[MaskCode, ...]
    output: int  # the network output's position among the forward buffers


def _evaluation_statements(kind: LayerKind) -> tuple[Statement, ...]:
    return kind.evaluate if kind.evaluate is not None else kind.forward


def _buffers(plans: Sequence[_Layer], softmax: bool) -> _Buffers:
    """Every buffer the kernels use: the evaluation forward's (work tensors such
    as argmax or im2col's windows, z, a, lse_rows), the training forward's extra
    ones (batch statistics, normalized values, masks), adjoints, running state."""
    forward: list[BufferCode] = []
    training: list[BufferCode] = []
    deltas: list[BufferCode] = []
    state: list[StateCode] = []
    masks: list[MaskCode] = []
    output = 0
    for plan in plans:
        info, kind = plan.info, plan.kind
        if kind.view:
            continue
        binding = dict(info.binding)
        evaluation = {
            str(r.base.label)
            for st in _evaluation_statements(kind)
            for r in (*value_reads(st.body), *value_reads(st.init))
        }
        evaluation |= {st.target for st in _evaluation_statements(kind)}  # fmt: skip
        for tensor in kind.tensors:
            shape = tuple(int(sp.sympify(e).xreplace(binding)) for e in tensor.shape)
            name = plan.names[tensor.name]
            if tensor.role == "state":
                state.append(StateCode(name, shape, tensor.init or "zeros"))
                continue
            if tensor.role not in ("index", "work", "stat", "mask"):
                continue
            group = forward if tensor.name in evaluation else training
            kind_text = {"index": "int", "stat": "stat"}.get(tensor.role, "float")
            group.append(BufferCode(name, shape, kind_text))
            if tensor.role == "mask":
                keep = sp.sympify(tensor.keep).xreplace(binding)
                masks.append(MaskCode(name, shape, repr(float(keep))))
            elif tensor.role in ("work", "stat") and plan.input_adjoint is not None:
                delta_kind = "stat" if tensor.role == "stat" else "float"
                deltas.append(
                    BufferCode(plan.names[f"d{tensor.name}"], shape, delta_kind)
                )
        if kind.activation:
            forward.append(BufferCode(f"z{info.index}", info.output_shape, "float"))
        output = len(forward)
        forward.append(BufferCode(f"a{info.index}", info.output_shape, "float"))
        deltas.append(BufferCode(f"delta{info.index}", info.output_shape, "float"))
    if softmax:
        forward.append(BufferCode("lse_rows", (), "float"))
    return _Buffers(tuple(forward), tuple(training), tuple(deltas), tuple(state),
                    tuple(masks), output)  # fmt: skip


#: Tensors the kernels store flat: name -> logical per-sample shape.
Layouts = dict[str, tuple[int, ...]]


def _layouts(
    buffers: _Buffers, params: Sequence[ParamCode], plans: Sequence[_Layer]
) -> Layouts:
    """Buffers with several axes per sample are stored (values, batch) and
    parameters with more than two axes (first axis, the rest): the shapes the
    flat index is computed from."""
    out: Layouts = {}
    for buffer in (*buffers.forward, *buffers.training, *buffers.deltas):
        if len(buffer.shape) > 1:
            out[buffer.name] = buffer.shape
    for plan in plans:
        shape = plan.info.input_shape
        if plan.info.index == 1 and len(shape) > 1:
            out["XT"] = shape
    for param in params:
        if len(param.shape) > 2:
            out[param.name] = param.shape
            out[f"grad_{param.name}"] = param.shape
    return out


# ---------------------------------------------------------------------- gemm


def _gemm(
    out: str,
    left: tuple[str, bool, int | str],
    right: tuple[str, bool, int | str],
    rows: int | str,
    cols: int | str,
    inner: int | str,
    accumulate: bool = False,
) -> str:
    """``out = op(left) @ op(right)`` (``+=`` with accumulate) as one call of BLAS
    gemm (``_xxgemm``).

    Each operand is (row-major buffer, transposed?, the buffer's row length);
    ``out`` is a row-major (rows, cols) buffer. Column-major BLAS sees every
    row-major buffer transposed, so it is asked for
    out.T = op(right).T @ op(left).T: the operands swap places.
    """
    (lname, lt, lld), (rname, rt, rld) = left, right
    flag = {True: "_TRANS", False: "_NO_TRANS"}
    return (
        f"_gemm({flag[rt]}, {flag[lt]}, {cols}, {rows}, {inner}, {rname}, {rld}, "
        f"{lname}, {lld}, {out}, {cols}, {accumulate})  # fmt: skip"
    )


def _direct_gemm(lines: Sequence[str]) -> list[str]:
    """``lines`` with each ``_gemm`` call (``_gemm`` prints them) as a direct call
    of BLAS in the module's own precision: ``_xxgemm(_GEMM_KIND, ...)`` with the
    scalars 1 and 0 of DTYPE.

    ``_gemm`` picks sgemm or dgemm by its arrays' dtype, so that the self-test
    can run a float32 module's ``_evaluate`` and ``_gradients`` in float64; a
    kernel that only ever sees DTYPE arrays calls BLAS directly, which compiles
    faster: Numba inlines ``_gemm`` at every call site, a quarter of the W3 first
    fit's compile time (bench/cold_build.py)."""
    out = []
    for line in lines:
        start = line.find("_gemm(")
        if start < 0:
            out.append(line)
            continue
        end = line.index(")  # fmt: skip", start)
        ta, tb, m, n, k, a, lda, b, ldb, c, ldc, accumulate = line[
            start + len("_gemm(") : end
        ].split(", ")
        beta = "_ONE" if accumulate == "True" else "_ZERO"
        out.append(
            f"{line[:start]}_xxgemm(_GEMM_KIND, {ta}, {tb}, {m}, {n}, {k}, "
            f"_ONE.ctypes, {a}.ctypes, {lda}, {b}.ctypes, {ldb}, {beta}.ctypes, "
            f"{c}.ctypes, {ldc}{line[end:]}"
        )
    return out


def _product(extents: Sequence[int | str]) -> int | str:
    """The product of extents, the batch extent ("cols") kept as a name."""
    number = math.prod(e for e in extents if isinstance(e, int))
    names = [e for e in extents if isinstance(e, str)]
    if not names:
        return number
    return " * ".join(([str(number)] if number != 1 else []) + names)


def _contraction(
    nest: Nest, batch_extent: str, transposed: frozenset[str]
) -> str | None:
    """The nest as one gemm call, when it is a matrix product: the value is two
    reads, every index a plain loop index (or the batch), no guards, and the
    indices fall into three groups, each in storage order, adjacent and in the
    same order wherever it appears: M (target and left read), N (target and
    right read) and K (both reads, summed over). Buffers store their axes in C
    order (a sample's values, then the batch), so each group is one matrix axis:
    dense ``W @ A`` (M = j, K = k, N = batch), im2col's ``W (F, c m n) @ cols
    (c m n, i j batch)``. ``transposed`` names buffers stored with their axes
    reversed (XT of a BLAS first layer)."""
    factors = sp.Mul.make_args(sp.sympify(nest.value))
    reads = [f for f in factors if isinstance(f, sp.Indexed)]
    if len(reads) != 2 or len(factors) != 2 or nest.guards or nest.init != 0:
        return None
    batch = sp.Symbol("batch")
    extents: dict[sp.Symbol, int | str] = dict(nest.loops)
    extents[batch] = batch_extent

    def axes(name: str, index: Sequence[sp.Expr]) -> list[sp.Symbol] | None:
        full = [*index, *([batch] if name in nest.batched else [])]
        if not all(isinstance(i, sp.Symbol) and i in extents for i in full):
            return None
        if len(set(full)) != len(full):
            return None
        return list(reversed(full)) if name in transposed else list(full)

    target = axes(nest.target, nest.target_index)
    a = axes(str(reads[0].base.label), reads[0].indices)
    b = axes(str(reads[1].base.label), reads[1].indices)
    if target is None or a is None or b is None or nest.target in transposed:
        return None
    inner = [v for v in a if v in b and v not in target]
    if set(target) != (set(a) | set(b)) - set(inner):
        return None
    if target[0] in b:  # order the operands as the target's axes: left has the rows
        reads, a, b = [reads[1], reads[0]], b, a
    rows = [v for v in target if v in a]
    columns = [v for v in target if v in b]
    if target != rows + columns or not rows or not columns or not inner:
        return None

    def operand(
        name: str,
        storage: list[sp.Symbol],
        first: list[sp.Symbol],
        second: list[sp.Symbol],
    ) -> tuple[str, bool, int | str] | None:
        if storage == first + second:
            return name, False, _product([extents[v] for v in second])
        if storage == second + first:
            return name, True, _product([extents[v] for v in first])
        return None  # fmt: skip

    left = operand(str(reads[0].base.label), a, rows, inner)
    right = operand(str(reads[1].base.label), b, inner, columns)
    if left is None or right is None:
        return None
    return _gemm(
        nest.target, left, right,
        _product([extents[v] for v in rows]), _product([extents[v] for v in columns]),
        _product([extents[v] for v in inner]), accumulate=nest.mode == "add",
    )  # fmt: skip


# -------------------------------------------------------------- elementwise


def _loop_header(
    axes: Sequence[tuple[str, int]], batch: str, batch_extent: str
) -> tuple[list[str], str]:
    lines, indent = [], ""
    for name, extent in axes:
        lines.append(f"{indent}for {name} in range({extent}):")
        indent += "    "
    lines.append(f"{indent}for {batch} in range({batch_extent}):")
    return lines, indent + "    "


def _axes(plan: _Layer) -> tuple[list[tuple[str, int]], str]:
    """Loops over the layer output as the kernels store it: its first axis (named
    as in the kind's statement: dense j, conv f) and, for several axes, the
    flat position q within it; then the batch variable (i, as in dense code,
    else s)."""
    kind = plan.kind
    statement = next(s for s in kind.forward if s.target == kind.output)
    names = [str(s) for s in statement.index]
    batch = next(n for n in ("i", "s", "r", "t") if n not in names)
    shape = plan.info.output_shape
    axes = [(names[0], shape[0])]
    if len(shape) > 1:
        axes.append(("q", math.prod(shape[1:])))
    return axes, batch


def _element(buffer: str, axes: Sequence[tuple[str, int]], batch: str) -> str:
    """An element of a batched buffer in the kernels' (values, batch) layout."""
    if len(axes) == 1:
        return f"{buffer}[{axes[0][0]}, {batch}]"
    (first, _), (inner, size) = axes
    return f"{buffer}[{first} * {size} + {inner}, {batch}]"


def _temps(scalar: ScalarCode, indent: str) -> list[str]:
    return [f"{indent}{name} = {expr}" for name, expr in scalar.temps]


def _activation_pass(plan: _Layer, dtype: str, pending_bias: str | None) -> list[str]:
    info = plan.info
    act = info.activation
    assert act is not None and act.forward_stable is not None
    i = info.index
    axes, batch = _axes(plan)
    scalar = print_scalar_code(act.forward_stable, dtype=dtype)
    lines = [f"# a{i} = {act.label}(z{i}) = {act.forward.text}"]
    header, indent = _loop_header(axes, batch, "cols")
    lines += header
    z = _element(f"z{i}", axes, batch)
    if pending_bias is not None:
        lines += [f"{indent}z = {z} + {pending_bias}", f"{indent}{z} = z"]
    else:
        lines.append(f"{indent}z = {z}")
    lines += _temps(scalar, indent)
    lines.append(f"{indent}{_element(f'a{i}', axes, batch)} = {scalar.result}")
    return lines


def _softmax_pass(plan: _Layer, pending_bias: str | None) -> list[str]:
    info = plan.info
    i, n = info.index, info.n_out
    act = info.activation
    assert act is not None
    lines = []
    if pending_bias is not None:
        lines += [
            f"for j in range({n}):",
            "    for i in range(cols):",
            f"        z{i}[j, i] += {pending_bias}",
        ]
    lines += [
        f"# a{i} = {act.label}(z{i}), a_j = {_softmax_text(act.forward.expr)}, "
        "evaluated max-shifted per sample;",
        "# lse_rows = log(sum(exp(z))) is kept for the loss",
        "for i in range(cols):",
        f"    top = z{i}[0, i]",
        f"    for j in range(1, {n}):",
        f"        value = z{i}[j, i]",
        "        top = value if value > top else top",
        "    total_exp = 0.0",
        f"    for j in range({n}):",
        f"        exp_shifted = math.exp(z{i}[j, i] - top)",
        f"        a{i}[j, i] = exp_shifted",
        "        total_exp += exp_shifted",
        f"    for j in range({n}):",
        f"        a{i}[j, i] = a{i}[j, i] / total_exp",
        "    lse_rows[i] = top + math.log(total_exp)",
    ]
    return lines


def _softmax_text(expr: sp.Expr) -> str:
    return notation_text(expr, subscripts=True)


def _derivative_pass(plan: _Layer, dtype: str, bias: str | None) -> list[str]:
    """delta = da * f'(z) in place, with the layer's bias gradient (the sum of
    delta over everything but its first axis) in the same pass."""
    info = plan.info
    act = info.activation
    chosen = act.derivative if act is not None else None
    assert act is not None and chosen is not None
    i = info.index
    axes, batch = _axes(plan)
    scalar = print_scalar_code(chosen.expr, dtype=dtype)
    lines = [f"# delta{i} = da{i} * f'(z{i}), f' = {chosen.text}"]
    if bias is not None:
        lines.append(
            f"# {bias}[{axes[0][0]}] = sum of delta{i} over the rest, in the same pass"
        )
    lines.append(f"for {axes[0][0]} in range({axes[0][1]}):")
    indent = "    "
    if bias is not None:
        lines.append(f"{indent}bias_grad = np.{dtype}(0.0)")
    header, inner = _loop_header(axes[1:], batch, "cols")
    lines += [indent + line for line in header]
    inner = indent + inner
    element = _element(f"delta{i}", axes, batch)
    lines.append(f"{inner}back = {element}")
    if "z" in scalar.inputs:
        lines.append(f"{inner}z = {_element(f'z{i}', axes, batch)}")
    if "a" in scalar.inputs:
        lines.append(f"{inner}a = {_element(f'a{i}', axes, batch)}")
    lines += _temps(scalar, inner)
    lines += [f"{inner}delta = back * ({scalar.result})", f"{inner}{element} = delta"]
    if bias is not None:
        lines += [
            f"{inner}bias_grad += delta",
            f"{indent}{bias}[{axes[0][0]}] = bias_grad",
        ]
    return lines


def _loads(n: int, *codes: ScalarCode) -> list[tuple[str, str]]:
    """The output-layer scalars the codes read, each with the element it loads."""
    reads = {name for c in codes for name in c.inputs}
    loads = (("z", f"z{n}[j, i]"), ("a", f"a{n}[j, i]"), ("lse", "lse_rows[i]"))
    return [(name, element) for name, element in loads if name in reads]


def _loss_comment(d: Derivation) -> str:
    loss = d.loss
    return f"l = {loss.value.text}   ({d.spec.loss.label}, per output element)"


def _loss_lines(d: Derivation, dtype: str) -> list[str]:
    out = d.layers[-1]
    value = print_scalar_code(d.loss.value.expr, prefix="v", dtype=dtype)
    lines = [
        f"# {_loss_comment(d)}",
        f"for j in range({out.n_out}):",
        "    for i in range(rows):",
    ]
    lines += [
        f"        {name} = {element}" for name, element in _loads(out.index, value)
    ]
    lines.append("        y = YT[j, i]")
    lines += _temps(value, "        ")
    lines.append(f"        total += {value.result}")
    return lines


#: _train's output pass takes the batch mean over its rows; _train_part's over
#: the whole batch's (batch_rows), of which it has a share
_MEAN_OVER_ROWS = "inv_rows = np.{dtype}(1.0 / rows)"


def _output_pass(d: Derivation, dtype: str, bias: str | None) -> list[str]:
    out = d.layers[-1]
    n = out.index
    value = print_scalar_code(d.loss.value.expr, prefix="v", dtype=dtype)
    delta = print_scalar_code(d.loss.output_delta.expr, dtype=dtype)
    lines = [
        _MEAN_OVER_ROWS.format(dtype=dtype),
        f"# one pass over the outputs: the loss, the output delta and its sum ({bias})"
        if bias
        else "# one pass over the outputs: the loss and the output delta",
        f"# {_loss_comment(d)}",
        f"# delta{n} = dL/dz{n} = ({d.loss.output_delta.text}) / batch_size",
        f"for j in range({out.n_out}):",
    ]
    if bias:
        lines.append(f"    bias_grad = np.{dtype}(0.0)")
    lines.append("    for i in range(rows):")
    lines += [
        f"        {name} = {element}" for name, element in _loads(n, value, delta)
    ]
    lines.append("        y = YT[j, i]")
    lines += _temps(value, "        ")
    lines.append(f"        total += {value.result}")
    lines += _temps(delta, "        ")
    lines += [
        f"        delta = ({delta.result}) * inv_rows",
        f"        delta{n}[j, i] = delta",
    ]
    if bias:
        lines += ["        bias_grad += delta", f"    {bias}[j] = bias_grad"]
    lines += [
        "    # columns past the batch's rows (a padded last batch) add nothing to the gradients",
        "    for i in range(rows, cols):",
        f"        delta{n}[j, i] = 0.0",
    ]
    return lines


# ------------------------------------------------------------------ nests


#: The batch size B of statements over a batch is the batch's valid rows.
ROWS = sp.Symbol("rows", integer=True, positive=True)


def _binding(plan: _Layer) -> dict[sp.Symbol, Any]:
    return {**dict(plan.info.binding), B: ROWS}


def _bind(expr: sp.Expr, plan: _Layer) -> sp.Expr:
    return rename(sp.sympify(expr).xreplace(_binding(plan)), plan.names)


def _batch_extent(plan: _Layer, tensor: str) -> str:
    """A batch statistic (and its adjoint) sums over the valid rows only: the
    padded columns of a last batch must not enter the mean."""
    return "rows" if plan.kind.tensor(tensor).role == "stat" else "cols"


def _bound_extent(extent: sp.Expr, plan: _Layer) -> int:
    return int(sp.sympify(extent).xreplace(dict(plan.info.binding)))


def _ranges(plan: _Layer) -> dict[str, int]:
    """The value range [0, n) of each integer buffer of the layer (an argmax
    counts over its window)."""
    out = {}
    for st in plan.kind.forward:
        if st.op == "argmax":
            size = math.prod(_bound_extent(e, plan) for _, e in st.reduce)
            out[plan.names[st.target]] = size
    return out


def _statement_nest(
    st: Statement, plan: _Layer, batched: frozenset[str], layouts: Layouts
) -> Nest:
    kind = plan.kind
    target_shape = kind.tensor(st.target).shape
    loops = tuple(zip(st.index, target_shape, strict=True)) + tuple(st.reduce)
    guards = statement_guards(st, st.body, kind, loops)
    return Nest(
        target=plan.names[st.target],
        target_index=st.index,
        value=_bind(st.body, plan),
        loops=tuple((s, _bound_extent(e, plan)) for s, e in loops),
        guards=tuple(
            Guard(_bind(g.expr, plan), _bound_extent(g.extent, plan)) for g in guards
        ),
        init=_bind(st.init, plan),
        op=st.op,
        batched=batched,
        ranges=_ranges(plan),
        layouts={**layouts, **plan.local_layouts},
    )


def _rule_nest(
    rule: AdjointRule,
    plan: _Layer,
    target: str,
    mode: str,
    batched: frozenset[str],
    layouts: Layouts,
) -> Nest:
    names = {**plan.names, f"d{rule.seed}": plan.names[f"d{rule.seed}"]}
    value = rename(sp.sympify(rule.value).xreplace(_binding(plan)), names)
    return Nest(
        target=target,
        target_index=tuple(_bind(i, plan) for i in rule.target_index),
        value=value,
        loops=tuple((s, _bound_extent(e, plan)) for s, e in rule.loops),
        guards=tuple(
            Guard(_bind(g.expr, plan), _bound_extent(g.extent, plan))
            for g in rule.guards
        ),
        mode=mode,  # type: ignore[arg-type]
        batched=batched,
        ranges=_ranges(plan),
        layouts={**layouts, **plan.local_layouts},
    )


def _fusable_bias(rule: AdjointRule, kind: LayerKind) -> bool:
    """An init rule ``db[f] += dz[f, ...]``: a sum of the seed over all its axes
    but a leading one, which the pass producing the seed can accumulate."""
    return (
        rule.term == "init"
        and kind.tensor(rule.target).role == "param"
        and rule.partial == 1
        and len(rule.target_index) == 1
        and rule.target_index[0] == rule.seed_index[0]
        and not rule.reduce_loops
    )


def _zero_pass(buffer: str, shape: tuple[int, ...]) -> list[str]:
    lines, indent = _loop_header([("q", math.prod(shape))], "i", "cols")
    return [f"# {buffer} = 0 (the scatter below adds into it)", *lines,
            f"{indent}{buffer}[q, i] = 0.0"]  # fmt: skip


def _comment(text: str, plan: _Layer) -> list[str]:
    units = plan.info.n_out
    return (
        [text]
        if plan.kind.name != "dense"
        else [f"{text}   ({units} unit{'s' if units != 1 else ''})"]
    )


# ------------------------------------------------------------------ passes


def _statement_comment(st: Statement, plan: _Layer) -> str:
    """The statement in index form with the layer's buffers and numbers."""
    bound = Statement(
        st.target, st.index, _bind(st.body, plan), _bind(st.init, plan),
        tuple((s, _bound_extent(e, plan)) for s, e in st.reduce), st.op, st.outside,
    )  # fmt: skip
    return statement_text(bound, {st.target: plan.names[st.target]})


def _forward_lines(
    plans: Sequence[_Layer],
    dtype: str,
    batched: frozenset[str],
    transposed: frozenset[str],
    layouts: Layouts,
    training: bool,
) -> list[str]:
    """The forward pass of evaluation or of training (batch statistics, masks)."""
    lines: list[str] = []
    part = "training_forward" if training else "forward"
    for plan in plans:
        info, kind = plan.info, plan.kind
        if kind.view:
            lines.append(f"{SEGMENT} - inline")
            lines.append(
                f"# a{info.index} = {plan.input} flattened in C order: the same buffer "
                "(every buffer holds a sample's values in C order)"
            )
            lines.append(f"a{info.index} = {plan.input}")
            continue
        lines.append(f"{SEGMENT}{info.index} {part}")
        statements = kind.forward if training else _evaluation_statements(kind)
        pending_bias = None
        skip = set()
        for position, st in enumerate(statements):
            if position in skip:
                continue
            nest = _statement_nest(st, plan, batched, layouts)
            comment = _comment(_statement_comment(st, plan), plan)
            following = statements[position + 1 : position + 2]
            if st.op == "argmax" and following and _reads_the_maximum(following[0], st):
                # the read through the argmax is the window's largest value,
                # which the argmax loop has in hand: it stores it too
                read = following[0]
                nest = Nest(**{**nest.__dict__, "also": plan.names[read.target]})
                comment.append(
                    f"{_statement_comment(read, plan)}   (the largest value: stored "
                    "by the same loop)"
                )
                skip.add(position + 1)
            gemm = None
            if plan.blas and st.op == "sum":
                gemm = _contraction(Nest(**{**nest.__dict__, "init": sp.S.Zero}), "cols",
                                    transposed)  # fmt: skip
            extent = _batch_extent(plan, st.target)
            if gemm is None:
                lines += print_nest(nest, dtype, extent, comment=comment)
                continue
            lines += [f"# {text}" for text in comment]
            lines.append(gemm)
            if nest.init == 0:
                continue
            if value_reads(nest.init) and all(
                kind.tensor(str(r.base.label)).role == "param"
                for r in value_reads(st.init)
            ):
                pending_bias = code(nest.init, dtype)  # added in the activation pass
            else:  # e.g. a residual read: its own pass, after the product
                added = Nest(
                    **{
                        **nest.__dict__,
                        "value": nest.init,
                        "init": sp.S.Zero,
                        "mode": "add",
                        "loops": nest.loops[: len(st.index)],
                    }
                )
                lines += print_nest(
                    added,
                    dtype,
                    "cols",
                    comment=[f"{nest.target} += {notation_text(nest.init)}"],
                )
        if kind.activation:
            act = info.activation
            assert act is not None
            if act.kind == "softmax":
                lines += _softmax_pass(plan, pending_bias)
            else:
                lines += _activation_pass(plan, dtype, pending_bias)
    return lines


def _update_lines(
    plans: Sequence[_Layer], dtype: str, batched: frozenset[str], layouts: Layouts
) -> list[str]:
    """_train: each layer's state updates (running statistics) after the training
    forward, from the batch statistics it computed."""
    lines: list[str] = []
    for plan in plans:
        for st in plan.kind.update:
            nest = _statement_nest(st, plan, batched, layouts)
            lines += print_nest(nest, dtype, "rows",
                                comment=[_statement_comment(st, plan)])  # fmt: skip
    return lines


def _mask_lines(buffers: _Buffers) -> list[str]:
    """_train: a batch's dropout masks, 1 with the keep probability, drawn from
    the epoch's seeded generator (the padded columns' do not matter: their
    output delta is 0)."""
    lines: list[str] = []
    for mask in buffers.masks:
        size = math.prod(mask.shape)
        lines += [
            f"# {mask.name} = 1 with probability {mask.keep} (kept), else 0",
            f"for q in range({size}):",
            "    for i in range(cols):",
            f"        {mask.name}[q, i] = 1.0 if np.random.random() < {mask.keep} else 0.0",
        ]
    return lines


def _reads_the_maximum(read: Statement, argmax: Statement) -> bool:
    """Whether ``read`` is ``argmax``'s body at the argmax's position: the
    window's loop indices recovered from the flat position (row by row), so its
    value is the largest one the argmax loop has already found."""
    if read.reduce or read.init != 0 or read.index != argmax.index:
        return False
    position = sp.IndexedBase(argmax.target, integer=True)[argmax.index]
    extents = [e for _, e in argmax.reduce]
    recovered = {}
    stride: sp.Expr = sp.S.One
    for n in range(len(extents) - 1, -1, -1):
        var = argmax.reduce[n][0]
        scaled = position if stride == 1 else sp.floor(position / stride)
        recovered[var] = scaled if n == 0 else sp.Mod(scaled, extents[n])
        stride = stride * extents[n]
    return sp.expand(read.body - argmax.body.xreplace(recovered)) == 0


def _backward_lines(
    d: Derivation,
    plans: Sequence[_Layer],
    dtype: str,
    batched: frozenset[str],
    transposed: frozenset[str],
    layouts: Layouts,
    shapes: dict[str, tuple[int, ...]],
) -> list[str]:
    out_plan = plans[-1]
    out_bias = next(
        (r for r in out_plan.kd.rules if _fusable_bias(r, out_plan.kind)), None
    )
    fused = {id(out_bias)} if out_bias is not None else set()
    bias_name = out_plan.names[f"d{out_bias.target}"] if out_bias else None
    lines = [f"{SEGMENT} - inline", *_output_pass(d, dtype, bias_name)]
    # views of adjoints (flatten): declared before any rule writes into them
    for plan in plans:
        if plan.kind.view and plan.input_adjoint is not None:
            below = plans[plan.below - 1] if plan.below else None
            if below is not None:
                lines.append(f"delta{plan.info.index} = delta{below.info.index}")
    written: set[str] = set()
    for plan in reversed(plans):
        kind = plan.kind
        if kind.view:
            continue
        lines.append(f"{SEGMENT}{plan.info.index} backward")
        for rule in plan.kd.rules:
            if id(rule) in fused:
                continue
            role = kind.tensor(rule.target).role
            if role in ("input", "work", "stat") and plan.input_adjoint is None:
                continue  # the network input needs no gradient (nor what feeds it)
            target = plan.names[f"d{rule.target}"]
            if role == "input":
                target = plan.input_adjoint
            if not target:
                continue  # a residual from the network input: no gradient
            mode = "add" if target in written else "assign"
            nest = _rule_nest(rule, plan, target, mode, batched, layouts)
            comment = _rule_comment(rule, plan, target, mode)
            gemm = _contraction(nest, "cols", transposed) if plan.blas else None
            if gemm is not None:
                lines += [f"# {comment}", gemm]
            else:
                plain = all(isinstance(i, sp.Symbol) for i in nest.target_index)
                if not plain and mode == "assign":
                    lines += _zero_pass(target, shapes[target])
                    nest = Nest(**{**nest.__dict__, "mode": "add"})
                lines += print_nest(nest, dtype, _batch_extent(plan, rule.target),
                                    comment=[comment])  # fmt: skip
            written.add(target)
        if plan.input_adjoint and any(t.role == "stat" for t in kind.tensors):
            # a batch statistic's adjoint reaches every column of the batch: the
            # padded ones of a last batch must stay 0 for the layers below
            lines += [
                f"# the padded columns of {plan.input_adjoint} add nothing below",
                f"for q in range({math.prod(plan.info.input_shape)}):",
                "    for i in range(rows, cols):",
                f"        {plan.input_adjoint}[q, i] = 0.0",
            ]
        if plan.below is None:
            continue
        below = plans[plan.below - 1]
        if below.info.activation is None:
            continue
        bias_rule = next(
            (r for r in below.kd.rules if _fusable_bias(r, below.kind)), None
        )
        bias = None
        if bias_rule is not None:
            fused.add(id(bias_rule))
            bias = below.names[f"d{bias_rule.target}"]
        lines += _derivative_pass(below, dtype, bias)
    return lines


def _rule_comment(rule: AdjointRule, plan: _Layer, target: str, mode: str) -> str:
    """The rule as its loops compute it: the gather form (a sum per target
    element, ``+=`` where the target holds another term already: mode "add")
    when the target index is plain, else the scatter form (the derived
    accumulation, over the forward's loops)."""
    names = {**plan.names, f"d{rule.target}": target}
    param = plan.kind.tensor(rule.target).role == "param"
    if all(isinstance(i, sp.Symbol) for i in rule.target_index):
        form = plan.kd.gathers[plan.kd.rules.index(rule)]
        assign = "+=" if mode == "add" else "="
        text = gather_text(bound_gather(form, plan.info), names, assign=assign)
        return text + ("   (summed over the batch)" if param else "")
    index = [_bind(i, plan) for i in rule.target_index]
    value = rename(sp.sympify(rule.value).xreplace(_binding(plan)), names)
    loops = ", ".join(str(s) for s, _ in rule.loops)
    head = notation_text(sp.IndexedBase(target)[tuple(index)])
    return f"{head} += {notation_text(value)}   (scattered over {loops})"


def _gather_lines(d: Derivation) -> list[str]:
    """_train: a batch's rows of X_all and Y_all into columns of XT and YT."""
    n_in, n_out = d.spec.n_inputs, d.layers[-1].n_out
    target = "XT"
    lines = [
        "# gather the batch's rows with loops (slice assignment compiles slowly);",
        "# sample r becomes column r of XT and YT",
        "for r in range(rows):",
        "    row = order[start + r]",
        f"    for c in range({n_in}):",
        f"        {target}[c, r] = X_all[row, c]",
        f"    for c in range({n_out}):",
        "        YT[c, r] = Y_all[row, c]",
        "# the columns past the rows get zero inputs (YT's are never read)",
        "for r in range(rows, cols):",
        f"    for c in range({n_in}):",
        f"        {target}[c, r] = 0.0",
    ]
    return lines


# -------------------------------------------------------------------- params


def _params(d: Derivation) -> tuple[ParamCode, ...]:
    params = []
    for info in d.layers:
        kind = info.kind.kind
        binding = dict(info.binding)
        act = info.activation
        for tensor in kind.param_tensors:
            name = f"{tensor.name}{info.index}"
            shape = tuple(int(sp.sympify(e).xreplace(binding)) for e in tensor.shape)
            if tensor.init == "weight":
                fan_in = int(sp.sympify(kind.fan_in).xreplace(binding))
                fan_out = int(sp.sympify(kind.fan_out).xreplace(binding))
                if act is not None and act.init == "he":
                    std = math.sqrt(2.0 / fan_in)
                    params.append(ParamCode(name, shape, "normal", repr(std),
                                            f"He normal: std = sqrt(2 / fan_in) = {std:.6g}"))  # fmt: skip
                else:
                    limit = math.sqrt(6.0 / (fan_in + fan_out))
                    params.append(ParamCode(name, shape, "uniform", repr(limit),
                                            "Glorot uniform: limit = sqrt(6 / (fan_in + fan_out))"
                                            f" = {limit:.6g}"))  # fmt: skip
            elif tensor.init == "ones":  # a norm's scale gamma (torch's weight)
                params.append(ParamCode(name, shape, "ones", "1.0", "ones"))
            else:
                params.append(ParamCode(name, shape, "zeros", "0.0", "zeros"))
    return tuple(params)


def _task(d: Derivation) -> tuple[str, str]:
    """What kind of predictor the network is, and a binary output's threshold.

    Distribution targets (softmax + cross-entropy) make a multiclass classifier;
    probability targets (BCE on probabilities or logits) a binary one per output,
    whose class boundary is the output op at z = 0 (0.5 for a sigmoid, 0.0 for
    logits); every other loss is a regression.
    """
    targets = d.loss.targets
    if targets == "distribution":
        return "multiclass", "0.5"
    if targets == "probability":
        act = d.layers[-1].activation
        assert act is not None
        at_zero = float(act.forward.expr.subs(Z, 0).evalf())
        return "binary", repr(at_zero)
    return "regression", "0.5"


# ------------------------------------------------------------------- entry


def _offset(per_col: int, fixed: int) -> str:
    """The printed offset per_col * cols + fixed into a work vector."""
    if not per_col:
        return str(fixed)
    text = f"{per_col} * cols" if per_col != 1 else "cols"
    return f"{text} + {fixed}" if fixed else text


def _dims(shape: Sequence[int | str]) -> str:
    """A shape printed as a tuple: (8,) or (128, cols)."""
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _train_views(
    params: Sequence[ParamCode],
    buffers: Sequence[BufferCode],
    input_rows: bool,
    n_input: int,
    n_output: int,
) -> tuple[dict[str, View], tuple[int, int, int, int]]:
    """_train's parameters, gradients and work buffers as views of four flat
    vectors: theta, grad, work (floats) and iwork (ints, e.g. a pool's argmax).

    Numba's wrapper unboxes each array argument with error paths that release
    every argument before it, so its compile time grows with the square of the
    argument count (measured: 44 arrays 0.35 s, 88 1.0 s, 140 3.4 s, a no-op
    kernel); views made inside the kernel cost a few statements each. Returns
    the views by name and the sizes (per column, fixed) of work and iwork: XT
    and YT, then ``buffers`` in order; a buffer has one column per sample of a
    batch (cols of them), a "stat" buffer none."""
    views: dict[str, View] = {}
    offset = 0
    for p in params:
        size = math.prod(p.shape)
        shape = p.shape if len(p.shape) <= 2 else (p.shape[0], size // p.shape[0])
        views[p.name] = View("theta", str(offset), _dims(shape))
        views[f"grad_{p.name}"] = View("grad", str(offset), _dims(shape))
        offset += size
    at = {"work": [0, 0], "iwork": [0, 0]}

    def view(
        name: str,
        flat: str,
        per_col: int,
        fixed: int,
        shape: str,
        transposed: bool = False,
    ) -> None:
        views[name] = View(flat, _offset(*at[flat]), shape, transposed)
        at[flat][0] += per_col
        at[flat][1] += fixed

    if input_rows:  # XT is the transpose of a row-major (cols, inputs) batch
        view("XT", "work", n_input, 0, f"(cols, {n_input})", transposed=True)
    else:
        view("XT", "work", n_input, 0, f"({n_input}, cols)")
    view("YT", "work", n_output, 0, f"({n_output}, cols)")
    for b in buffers:
        flat = "iwork" if b.kind == "int" else "work"
        size = math.prod(b.shape)
        if b.kind == "stat":
            view(b.name, flat, 0, size, _dims(b.shape))
        elif b.shape:
            view(b.name, flat, size, 0, f"({size}, cols)")
        else:
            view(b.name, flat, 1, 0, "(cols,)")
    sizes = (at["work"][0], at["work"][1], at["iwork"][0], at["iwork"][1])
    return views, sizes


def _print_views(views: Mapping[str, View], used: set[str]) -> str:
    """The lines of _train that make the views its own code reads (the outlined
    layer functions make theirs from the offsets they are called with)."""
    groups = {
        "# the parameters and gradients as the kernels index them": ("theta", "grad"),
        "# the work buffers, one column per sample (floats, ints)": ("work", "iwork"),
    }
    lines = []
    for header, flats in groups.items():
        made = [
            f"{name} = {view.expression()}"
            for name, view in views.items()
            if name in used and view.flat in flats
        ]
        lines += [header, *made] if made else []
    return "\n".join(lines)


def _signature(*groups: Sequence[str]) -> str:
    return ", ".join(name for group in groups for name in group)


def _min_training_rows(plans: Sequence[_Layer]) -> int:
    """2 when a batch statistic would be over single values with one row (torch
    refuses a training batch of one row for batch norm of a feature vector)."""
    for plan in plans:
        for tensor in plan.kind.tensors:
            if tensor.role == "stat":
                binding = dict(plan.info.binding)
                view = [int(sp.sympify(e).xreplace(binding)) for e in plan.kind.input]
                if math.prod(view[1:]) == 1:
                    return 2
    return 1


def _sample_work(
    plans: Sequence[_Layer],
    batched: frozenset[str],
    transposed: frozenset[str],
    layouts: Layouts,
) -> tuple[int, int]:
    """Iterations per sample of the training forward's statements (multiply-adds
    of a product, elements of an activation or an im2col copy): (those that run
    as loops, those that call BLAS)."""
    loops = products = 0
    for plan in plans:
        if plan.kind.view:
            continue
        for st in plan.kind.forward:
            nest = _statement_nest(st, plan, batched, layouts)
            work = math.prod(extent for _, extent in nest.loops)
            product = Nest(**{**nest.__dict__, "init": sp.S.Zero})  # bias aside
            if plan.blas and _contraction(product, "cols", transposed) is not None:
                products += work
            else:
                loops += work
    return loops, products


def _train_parts(
    buffers: _Buffers,
    train_work: tuple[int, int, int, int],
    update: Sequence[str],
    sample_work: tuple[int, int],
) -> int:
    """TRAIN_PARTS when a batch's rows are independent (no batch statistics,
    running statistics or dropout masks) and the per-sample loop work (the
    first of _sample_work's pair) reaches PARTS_MIN_LOOP_WORK; else 1."""
    # train_work's fixed floats are the batch statistics ("stat" buffers)
    coupled = buffers.state or buffers.masks or update or train_work[1]
    return TRAIN_PARTS if not coupled and sample_work[0] >= PARTS_MIN_LOOP_WORK else 1


def _part_backward(backward: str, dtype: str) -> str:
    """_train_part's backward: _train's, with the output delta's mean taken over
    the whole batch (batch_rows) instead of the part's rows."""
    line = _MEAN_OVER_ROWS.format(dtype=dtype)
    assert backward.count(line) == 1, "the output pass prints inv_rows once"
    return backward.replace(line, line.replace("/ rows)", "/ batch_rows)"))


def lower(derivation: Derivation) -> CodeModel:
    """Decide everything the templates print for ``derivation``."""
    d = derivation
    spec = d.spec
    dtype = spec.dtype
    plans = _plan(d)
    out_act = d.layers[-1].activation
    assert out_act is not None
    softmax = out_act.kind == "softmax"
    buffers = _buffers(plans, softmax)
    params = _params(d)
    batched = frozenset(
        [
            "XT",
            "YT",
            *(b.name for b in (*buffers.forward, *buffers.training, *buffers.deltas)
              if b.kind != "stat"),
        ]
        + [f"a{p.info.index}" for p in plans if p.kind.view]
        + [f"delta{p.info.index}" for p in plans if p.kind.view]
    )  # fmt: skip
    input_rows = plans[0].blas
    transposed = frozenset(["XT"]) if input_rows else frozenset()
    layouts = _layouts(buffers, params, plans)
    forward = _forward_lines(plans, dtype, batched, transposed, layouts, training=False)
    training_forward = _forward_lines(
        plans, dtype, batched, transposed, layouts, training=True
    )
    shapes = {b.name: b.shape for b in buffers.deltas}
    backward = _backward_lines(d, plans, dtype, batched, transposed, layouts, shapes)
    update = _update_lines(plans, dtype, batched, layouts)
    loss = _loss_lines(d, dtype)
    kernel_locals = tuple(
        dict.fromkeys(
            [*(p.name for p in params), *(f"grad_{p.name}" for p in params)]
            + ["X", "XT", "YT", "theta", "grad"]
            + [b.name for b in (*buffers.forward, *buffers.training, *buffers.deltas)]
            + [b.name for b in (*buffers.state, *buffers.masks)]
            + ["cols", "rows", "inv_rows", "total", "lr"]
        )
    )
    views, train_work = _train_views(
        params,
        (*buffers.forward, *buffers.training, *buffers.deltas),
        input_rows,
        spec.n_inputs,
        d.layers[-1].n_out,
    )
    # _train and _forward only see DTYPE arrays; a float32 module's _evaluate and
    # _gradients also run in float64 (the self-test), through the generic _gemm
    generic = _direct_gemm if dtype == "float64" else list
    outlined = outline(
        {
            "forward": generic(forward),
            "training_forward": generic(training_forward),
            "backward": generic(backward),
            "train_forward": _direct_gemm(training_forward),
            "train_backward": _direct_gemm(backward),
        },
        kernel_locals,
        JIT_OPTIONS,
        _train_jit_options(dtype),
        frozenset(["train_forward", "train_backward"]),
        OUTLINE_MIN_LAYERS,
        views,
    )
    bodies = outlined.bodies
    # the names _train's own code reads, comments aside (it makes their views)
    train_text = "\n".join(
        [bodies["train_forward"], bodies["train_backward"], *update, *loss]
        + [*_mask_lines(buffers), *_gather_lines(d)]
    )
    used_in_train = {
        name
        for line in train_text.splitlines()
        for name in re.findall(r"\b\w+\b", line.partition("#")[0])
    }
    text = "\n".join(
        [*bodies.values(), *outlined.functions, *outlined.fast_functions]
        + [*update, *loss]
    )
    helpers = helpers_called(text)
    uses_gemm = "_gemm(" in text or "_xxgemm(" in text
    opt = OPTIMIZER_DEFS[spec.optimizer.name]
    task, threshold = _task(d)
    param_names = [p.name for p in params]
    grad_names = [f"grad_{p.name}" for p in params]
    state_names = [b.name for b in buffers.state]
    forward_names = [b.name for b in buffers.forward]
    training_names = [b.name for b in buffers.training]
    delta_names = [b.name for b in buffers.deltas]
    input_arg = "X" if len(spec.input_shape) == 1 else "XT"
    sample_work = _sample_work(plans, batched, transposed, layouts)
    parts = _train_parts(buffers, train_work, update, sample_work)
    return CodeModel(
        generator_version=__version__,
        architecture_hash=spec.architecture_hash,
        dtype=dtype,
        summary=summary(spec),
        input_shape=spec.input_shape,
        sizes=spec.sizes,
        shapes=spec.shapes,
        n_input=spec.n_inputs,
        n_output=d.layers[-1].n_out,
        params=params,
        state=buffers.state,
        masks=buffers.masks,
        forward_buffers=buffers.forward,
        training_buffers=buffers.training,
        delta_buffers=buffers.deltas,
        output_buffer=buffers.output,
        min_training_rows=_min_training_rows(plans),
        input_arg=input_arg,
        forward_signature=_signature(
            param_names, [input_arg], state_names, forward_names
        ),
        evaluate_signature=_signature(
            param_names, [input_arg, "Y"], state_names, forward_names
        ),
        gradients_signature=_signature(
            param_names,
            [input_arg, "Y"],
            forward_names,
            training_names,
            delta_names,
            grad_names,
        ),  # fmt: skip
        train_signature=_signature(
            [
                "theta",
                "grad",
                "slots",
                "X_all",
                "Y_all",
                "order",
                "shuffle",
                "seed",
                "first_epoch",
                "lrs",
                "batch_size",
                "clip_norm",
                "hyper",
                "step",
                "totals",
                "status",
                "saved_theta",
                "saved_slots",
                "work",
                "iwork",
            ],
            state_names,
            [f"saved_{name}" for name in state_names],
        ),  # fmt: skip
        train_views=_print_views(views, used_in_train),
        train_work=train_work,
        train_parts=parts,
        part_backward_code=(
            _part_backward(bodies["train_backward"], dtype) if parts > 1 else ""
        ),
        parts=parts_source() if parts > 1 else "",
        forward_code=bodies["forward"],
        training_forward_code=bodies["training_forward"],
        train_forward_code=bodies["train_forward"],
        train_backward_code=bodies["train_backward"],
        layer_functions=outlined.functions,
        train_layer_functions=outlined.fast_functions,
        update_code="\n".join(update),
        mask_code="\n".join(_mask_lines(buffers)),
        loss_code="\n".join(loss),
        backward_code=bodies["backward"],
        gather_code="\n".join(_gather_lines(d)),
        helpers=tuple(helper_source(h) for h in helpers),
        blas=blas_source() if uses_gemm else "",
        views=views_source(),
        targets=d.loss.targets,
        task=task,
        threshold=threshold,
        target_tolerance="1e-4" if dtype == "float32" else "1e-8",
        train_jit_options=_train_jit_options(dtype),
        optimizer_template=f"optimizers/{opt.template}",
        optimizer_keys=opt.run_time,
        optimizer_slots=opt.slots,
        optimizer_decoupled=bool(opt.variant.get("decoupled", False)),
        formulas=tuple((k, json.dumps(v)) for k, v in d.formulas().items()),
    )
