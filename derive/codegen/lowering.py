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
from collections.abc import Sequence
from dataclasses import dataclass

import sympy as sp

from .._version import __version__
from ..engine.adjoint import AdjointRule, statement_guards
from ..engine.derivation import Derivation, LayerInfo, Z
from ..engine.notation import layer_names, rename, statement_text
from ..layers.ir import Statement
from ..optimizers import OPTIMIZER_DEFS
from .loops import Guard, Nest, print_nest
from .printer import ScalarCode, code, helpers_called, print_scalar_code
from .sources import blas_source, helper_source, runtime_source

#: Dense layers with fewer weights than BLAS_MIN_WEIGHTS and at most
#: LOOPS_MAX_INPUTS inputs use explicit loops (vectorized along the batch, the
#: reduction over the inputs unrolled); the others call BLAS gemm (``_xxgemm``).
#: Measured with bench/blas_threshold.py (w-w-w-1 tanh net, float32, 2 cores, ms
#: per 1024-row epoch, loops/BLAS at batch 32 and 128): 8x8 0.24/0.29 and
#: 0.18/0.22, 16x16 0.44/0.52 and 0.32/0.32, 24x24 0.78/0.45 and 0.33/0.52, 32x32
#: 1.16/0.87 and 0.79/0.70, 64x64 11.6/2.3 and 13.1/2.6.
BLAS_MIN_WEIGHTS = 512
LOOPS_MAX_INPUTS = 32


def uses_blas(n_in: int, n_out: int) -> bool:
    """Whether a dense layer of n_in -> n_out units calls BLAS (else loops)."""
    return n_in * n_out >= BLAS_MIN_WEIGHTS or n_in > LOOPS_MAX_INPUTS


@dataclass(frozen=True)
class ParamCode:
    """One parameter: name, shape, initialisation (runtime ``_PARAMS``)."""

    name: str
    shape: tuple[int, ...]
    init: str  # "uniform" | "normal" | "zeros"
    scale: str  # Python literal
    comment: str


@dataclass(frozen=True)
class BufferCode:
    """A work buffer: name, per-sample shape (the batch axis comes last), kind."""

    name: str
    shape: tuple[int, ...]
    kind: str  # "float" | "int"


@dataclass(frozen=True)
class CodeModel:
    """Everything a template needs, as already-printed strings."""

    name: str
    generator_version: str
    spec_hash: str
    spec_toml: str
    dtype: str  # "float32" | "float64"
    summary: str
    input_shape: tuple[int, ...]
    sizes: tuple[int, ...]
    shapes: tuple[tuple[int, ...], ...]
    n_input: int
    n_output: int
    params: tuple[ParamCode, ...]
    forward_buffers: tuple[BufferCode, ...]
    delta_buffers: tuple[BufferCode, ...]
    output_buffer: int
    input_rows: bool  # a BLAS first layer reads XT as a transposed row-major array
    param_names: tuple[str, ...]  # the kernels' arguments, by group
    forward_names: tuple[str, ...]
    delta_names: tuple[str, ...]
    grad_names: tuple[str, ...]
    forward_code: str  # the forward pass over `cols` samples
    loss_code: str  # the loss sum over the first m samples
    backward_code: str  # loss, output delta and every gradient
    gather_code: str  # _train: a batch's rows into XT and YT
    helpers: tuple[str, ...]  # helper function sources
    blas: str  # the gemm declaration, if some product calls BLAS
    runtime: str  # the public API, verbatim
    targets: str  # "any" | "probability" | "distribution"
    task: str  # "binary" | "multiclass" | "regression"
    threshold: str  # decision threshold of a binary output, as a Python literal
    target_tolerance: str
    train_jit_options: str  # keyword arguments of the training loop's numba.njit
    optimizer_name: str
    optimizer_template: str
    optimizer_hyper: tuple[tuple[str, str], ...]  # (name, Python literal)
    optimizer_keys: tuple[str, ...]  # the hyper-parameters the jitted update reads
    optimizer_slots: int
    optimizer_decoupled: bool  # AdamW's decoupled weight decay
    training: tuple[tuple[str, str], ...]
    formulas: tuple[tuple[str, str], ...]


#: LLVM fast-math flags of float32 training loops: fused multiply-add, reciprocal
#: division, no signed zeros and reassociation (which lets LLVM vectorize the
#: small-layer reductions). No "nnan"/"ninf": infinities and NaN keep their IEEE
#: meaning, so the max-shifted softmax, stable losses and max pooling's NaN rule
#: behave as without it. float64 modules compile without fast-math, so they
#: match the reference rules to the last bits the tests check.
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


# ------------------------------------------------------------------- buffers


@dataclass(frozen=True)
class _Layer:
    """A layer's decisions: its buffer names and whether its products call BLAS."""

    info: LayerInfo
    input: str  # the buffer the layer reads: "XT" or "a{l-1}"
    output: str  # the buffer of the kind's output tensor: "z{l}" or "a{l}"
    names: dict  # local tensor (and "d" + local adjoint) -> buffer name
    blas: bool
    input_adjoint: str | None  # where d<input> accumulates (None: the input's)
    below: int | None  # the nearest layer below that is not a view


def _plan(d: Derivation) -> list[_Layer]:
    plans: list[_Layer] = []
    first_real: int | None = None
    for info in d.layers:
        i = info.index
        kind = info.kind.kind
        names = layer_names(info)
        below = next((p.info.index for p in reversed(plans) if not p.info.kind.kind.view),
                     None)  # fmt: skip
        source = "XT" if i == 1 else f"a{i - 1}"
        names = {k: ("XT" if v == "a0" else v) for k, v in names.items()}
        adjoint = None if below is None else f"delta{i - 1}"
        for key in list(names):
            if key.startswith("d") and names[key] == f"da{i - 1}":
                names[key] = adjoint or "-"
        blas = kind.name == "dense" and uses_blas(info.n_in, info.n_out)
        output = f"z{i}" if kind.activation else f"a{i}"
        plans.append(_Layer(info, source, output, names, blas, adjoint, below))
        if not kind.view and first_real is None:
            first_real = i
    return plans


def _buffers(
    plans: Sequence[_Layer], softmax: bool
) -> tuple[tuple[BufferCode, ...], tuple[BufferCode, ...], int]:
    """Forward buffers (z, a, integer work tensors, lse_rows), delta buffers, and
    the position of the network's output among the forward buffers."""
    forward: list[BufferCode] = []
    deltas: list[BufferCode] = []
    output = 0
    for plan in plans:
        info, kind = plan.info, plan.info.kind.kind
        if kind.view:
            continue
        binding = dict(info.binding)
        for tensor in kind.tensors:
            if tensor.role == "index":
                shape = tuple(
                    int(sp.sympify(e).xreplace(binding)) for e in tensor.shape
                )
                forward.append(BufferCode(f"{tensor.name}{info.index}", shape, "int"))
        if kind.activation:
            forward.append(BufferCode(f"z{info.index}", info.output_shape, "float"))
        output = len(forward)
        forward.append(BufferCode(f"a{info.index}", info.output_shape, "float"))
        deltas.append(BufferCode(f"delta{info.index}", info.output_shape, "float"))
    if softmax:
        forward.append(BufferCode("lse_rows", (), "float"))
    return tuple(forward), tuple(deltas), output


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
    beta = "_ONE" if accumulate else "_ZERO"
    return (
        f"_xxgemm(_GEMM_KIND, {flag[rt]}, {flag[lt]}, {cols}, {rows}, {inner}, "
        f"_ONE.ctypes, {rname}.ctypes, {rld}, {lname}.ctypes, {lld}, "
        f"{beta}.ctypes, {out}.ctypes, {cols})  # fmt: skip"
    )


def _contraction(
    nest: Nest, batch_extent: str, transposed: frozenset[str]
) -> str | None:
    """The nest as one gemm call, when it is a plain matrix product: the value is
    two reads, every index a plain loop index (or the batch), no guards, and each
    index in exactly two of (target, left read, right read). ``transposed``
    names buffers stored with their axes reversed (XT of a BLAS first layer)."""
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
        return list(full)  # type: ignore[arg-type]

    target = axes(nest.target, nest.target_index)
    a = axes(str(reads[0].base.label), reads[0].indices)
    b = axes(str(reads[1].base.label), reads[1].indices)
    if target is None or a is None or b is None:
        return None
    if not (len(target) == len(a) == len(b) == 2):
        return None
    inner = (set(a) & set(b)) - set(target)
    if len(inner) != 1 or set(target) != (set(a) | set(b)) - inner:
        return None
    (k,) = inner
    first, second = target
    if first in b:  # order the operands as the target's axes: left has the rows
        reads, a, b = [reads[1], reads[0]], b, a

    def operand(read: sp.Indexed, logical: list[sp.Symbol], rows: sp.Symbol):
        name = str(read.base.label)
        storage = list(reversed(logical)) if name in transposed else logical
        trans = storage[0] != rows
        return (name, trans, extents[storage[1]])

    left = operand(reads[0], a, first)
    right = operand(reads[1], b, k)
    return _gemm(
        nest.target, left, right, extents[first], extents[second], extents[k],
        accumulate=nest.mode == "add",
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
    """Loop variables over the layer output's axes (the names of its statement's
    index) and the batch variable (i, as in dense code, else s, r, t)."""
    kind = plan.info.kind.kind
    statement = next(s for s in kind.forward if s.target == kind.output)
    names = [str(s) for s in statement.index]
    batch = next(n for n in ("i", "s", "r", "t") if n not in names)
    return list(zip(names, plan.info.output_shape, strict=True)), batch


def _element(buffer: str, axes: Sequence[tuple[str, int]], batch: str) -> str:
    return f"{buffer}[{', '.join([*(n for n, _ in axes), batch])}]"


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
    from ..engine.notation import text

    return text(expr, subscripts=True)


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
        "    for i in range(m):",
    ]
    lines += [
        f"        {name} = {element}" for name, element in _loads(out.index, value)
    ]
    lines.append("        y = YT[j, i]")
    lines += _temps(value, "        ")
    lines.append(f"        total += {value.result}")
    return lines


def _output_pass(d: Derivation, dtype: str, bias: str | None) -> list[str]:
    out = d.layers[-1]
    n = out.index
    value = print_scalar_code(d.loss.value.expr, prefix="v", dtype=dtype)
    delta = print_scalar_code(d.loss.output_delta.expr, dtype=dtype)
    lines = [
        f"inv_m = np.{dtype}(1.0 / m)",
        f"# one pass over the outputs: the loss, the output delta and its sum ({bias})"
        if bias
        else "# one pass over the outputs: the loss and the output delta",
        f"# {_loss_comment(d)}",
        f"# delta{n} = dL/dz{n} = ({d.loss.output_delta.text}) / batch_size",
        f"for j in range({out.n_out}):",
    ]
    if bias:
        lines.append(f"    bias_grad = np.{dtype}(0.0)")
    lines.append("    for i in range(m):")
    lines += [
        f"        {name} = {element}" for name, element in _loads(n, value, delta)
    ]
    lines.append("        y = YT[j, i]")
    lines += _temps(value, "        ")
    lines.append(f"        total += {value.result}")
    lines += _temps(delta, "        ")
    lines += [
        f"        delta = ({delta.result}) * inv_m",
        f"        delta{n}[j, i] = delta",
    ]
    if bias:
        lines += ["        bias_grad += delta", f"    {bias}[j] = bias_grad"]
    lines += [
        "    # columns past the m samples (a padded last batch) add nothing to the gradients",
        "    for i in range(m, cols):",
        f"        delta{n}[j, i] = 0.0",
    ]
    return lines


# ------------------------------------------------------------------ nests


def _bind(expr: sp.Expr, plan: _Layer) -> sp.Expr:
    return rename(sp.sympify(expr).xreplace(dict(plan.info.binding)), plan.names)


def _bound_extent(extent: sp.Expr, plan: _Layer) -> int:
    return int(sp.sympify(extent).xreplace(dict(plan.info.binding)))


def _ranges(plan: _Layer) -> dict[str, int]:
    """The value range [0, n) of each integer buffer of the layer (an argmax
    counts over its window)."""
    out = {}
    for st in plan.info.kind.kind.forward:
        if st.op == "argmax":
            size = math.prod(_bound_extent(e, plan) for _, e in st.reduce)
            out[plan.names[st.target]] = size
    return out


def _statement_nest(st: Statement, plan: _Layer, batched: frozenset[str]) -> Nest:
    kind = plan.info.kind.kind
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
    )


def _rule_nest(
    rule: AdjointRule, plan: _Layer, target: str, mode: str, batched: frozenset[str]
) -> Nest:
    names = {**plan.names, f"d{rule.seed}": plan.names[f"d{rule.seed}"]}
    value = rename(sp.sympify(rule.value).xreplace(dict(plan.info.binding)), names)
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
    )


def _fusable_bias(rule: AdjointRule) -> bool:
    """An init rule ``db[f] += dz[f, ...]``: a sum of the seed over all its axes
    but a leading one, which the pass producing the seed can accumulate."""
    return (
        rule.term == "init"
        and rule.partial == 1
        and len(rule.target_index) == 1
        and rule.target_index[0] == rule.seed_index[0]
        and not rule.reduce_loops
    )


def _zero_pass(buffer: str, shape: tuple[int, ...]) -> list[str]:
    names = [f"q{n}" for n in range(len(shape))]
    lines, indent = _loop_header(list(zip(names, shape, strict=True)), "i", "cols")
    return [f"# {buffer} = 0 (the scatter below adds into it)", *lines,
            f"{indent}{buffer}[{', '.join([*names, 'i'])}] = 0.0"]  # fmt: skip


def _comment(text: str, plan: _Layer) -> list[str]:
    units = plan.info.n_out
    return (
        [text]
        if plan.info.kind.kind.name != "dense"
        else [f"{text}   ({units} unit{'s' if units != 1 else ''})"]
    )


# ------------------------------------------------------------------ passes


def _forward_lines(
    plans: Sequence[_Layer],
    dtype: str,
    batched: frozenset[str],
    transposed: frozenset[str],
) -> list[str]:
    lines: list[str] = []
    for plan in plans:
        info, kind = plan.info, plan.info.kind.kind
        if kind.view:
            lines.append(
                f"# a{info.index} = {plan.input} flattened in C order (a view: no copy)"
            )
            lines.append(f"a{info.index} = {plan.input}.reshape(({info.n_out}, cols))")
            continue
        pending_bias = None
        for st in kind.forward:
            nest = _statement_nest(st, plan, batched)
            comment = statement_text(
                Statement(st.target, st.index, _bind(st.body, plan), _bind(st.init, plan),
                          tuple((s, _bound_extent(e, plan)) for s, e in st.reduce),
                          st.op, st.outside),
                {st.target: plan.names[st.target]},
            )  # fmt: skip
            gemm = None
            if plan.blas and st.op == "sum":
                plain = Nest(**{**nest.__dict__, "init": sp.S.Zero})
                gemm = _contraction(plain, "cols", transposed)
            if gemm is not None:
                lines += _comment(f"# {comment}", plan)
                lines.append(gemm)
                if nest.init != 0:
                    pending_bias = code(_with_batch_free(nest.init), dtype)
            else:
                lines += print_nest(
                    nest, dtype, "cols", comment=_comment(comment, plan)
                )
        if kind.activation:
            act = info.activation
            assert act is not None
            if act.kind == "softmax":
                lines += _softmax_pass(plan, pending_bias)
            else:
                lines += _activation_pass(plan, dtype, pending_bias)
    return lines


def _with_batch_free(expr: sp.Expr) -> sp.Expr:
    return expr


def _backward_lines(
    d: Derivation,
    plans: Sequence[_Layer],
    dtype: str,
    batched: frozenset[str],
    transposed: frozenset[str],
) -> list[str]:
    out_plan = plans[-1]
    out_bias = next((r for r in out_plan.info.kind.rules if _fusable_bias(r)), None)
    fused = {id(out_bias)} if out_bias is not None else set()
    bias_name = out_plan.names[f"d{out_bias.target}"] if out_bias else None
    lines = _output_pass(d, dtype, bias_name)
    # views of adjoints (flatten): declared before any rule writes into them
    for plan in plans:
        if plan.info.kind.kind.view and plan.input_adjoint is not None:
            below = plans[plan.below - 1] if plan.below else None
            if below is not None:
                shape = f"({plan.info.n_out}, cols)"
                lines.append(
                    f"delta{plan.info.index} = delta{below.info.index}.reshape({shape})"
                )
    written: set[str] = set()
    for plan in reversed(plans):
        info, kind = plan.info, plan.info.kind.kind
        if kind.view:
            continue
        for rule in info.kind.rules:
            if id(rule) in fused:
                continue
            role = kind.tensor(rule.target).role
            if role == "input":
                if plan.input_adjoint is None:
                    continue  # the network input needs no gradient
                target = plan.input_adjoint
            else:
                target = plan.names[f"d{rule.target}"]
            mode = "add" if target in written else "assign"
            nest = _rule_nest(rule, plan, target, mode, batched)
            comment = _rule_comment(rule, plan, target)
            gemm = _contraction(nest, "cols", transposed) if plan.blas else None
            if gemm is not None:
                lines += [f"# {comment}", gemm]
            else:
                plain = all(isinstance(i, sp.Symbol) for i in nest.target_index)
                if not plain and mode == "assign":
                    buffer = _delta_shape(plans, target)
                    lines += _zero_pass(target, buffer)
                    nest = Nest(**{**nest.__dict__, "mode": "add"})
                lines += print_nest(nest, dtype, "cols", comment=[comment])
            written.add(target)
        if plan.below is None:
            continue
        below = plans[plan.below - 1]
        if below.info.activation is None:
            continue
        bias_rule = next((r for r in below.info.kind.rules if _fusable_bias(r)), None)
        bias = None
        if bias_rule is not None:
            fused.add(id(bias_rule))
            bias = below.names[f"d{bias_rule.target}"]
        lines += _derivative_pass(below, dtype, bias)
    return lines


def _delta_shape(plans: Sequence[_Layer], name: str) -> tuple[int, ...]:
    for plan in plans:
        if f"delta{plan.info.index}" == name:
            return plan.info.output_shape
    raise KeyError(name)


def _rule_comment(rule: AdjointRule, plan: _Layer, target: str) -> str:
    from ..engine.notation import text

    index = [_bind(i, plan) for i in rule.target_index]
    value = rename(sp.sympify(rule.value).xreplace(dict(plan.info.binding)), plan.names)
    loops = ", ".join(str(s) for s, _ in rule.loops)
    head = text(sp.IndexedBase(target)[tuple(index)]) if index else target
    batch = "" if kind_has_batch(plan, rule) else ", summed over the batch"
    return f"{head} += {text(value)}   (over {loops}{batch})"


def kind_has_batch(plan: _Layer, rule: AdjointRule) -> bool:
    return plan.info.kind.kind.tensor(rule.target).role != "param"


def _gather_lines(d: Derivation, input_rows: bool) -> list[str]:
    n_in, n_out = d.spec.n_inputs, d.layers[-1].n_out
    flat = len(d.spec.input_shape) == 1
    target = "XT" if flat else "XT_rows"
    lines = [] if flat else [f"XT_rows = XT.reshape(({n_in}, cols))  # the rows' view"]
    lines += [
        "# gather the batch's rows with loops (slice assignment compiles slowly);",
        "# sample r becomes column r of XT and YT",
        "for r in range(m):",
        "    row = order[start + r]",
        f"    for c in range({n_in}):",
        f"        {target}[c, r] = X_all[row, c]",
        f"    for c in range({n_out}):",
        "        YT[c, r] = Y_all[row, c]",
        "# the columns past m get zero inputs (YT's are never read)",
        "for r in range(m, cols):",
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


def lower(derivation: Derivation) -> CodeModel:
    """Decide everything the templates print for ``derivation``."""
    d = derivation
    spec = d.spec
    dtype = spec.dtype
    plans = _plan(d)
    out_act = d.layers[-1].activation
    assert out_act is not None
    softmax = out_act.kind == "softmax"
    forward_buffers, delta_buffers, output = _buffers(plans, softmax)
    params = _params(d)
    batched = frozenset(
        [
            "XT",
            "YT",
            *(b.name for b in forward_buffers),
            *(b.name for b in delta_buffers),
        ]
        + [f"a{p.info.index}" for p in plans if p.info.kind.kind.view]
        + [f"delta{p.info.index}" for p in plans if p.info.kind.kind.view]
    )
    input_rows = plans[0].blas
    transposed = frozenset(["XT"]) if input_rows else frozenset()
    forward = _forward_lines(plans, dtype, batched, transposed)
    backward = _backward_lines(d, plans, dtype, batched, transposed)
    loss = _loss_lines(d, dtype)
    text = "\n".join([*forward, *backward, *loss])
    helpers = helpers_called(text)
    uses_gemm = "_xxgemm(" in text
    opt = OPTIMIZER_DEFS[spec.optimizer.name]
    task, threshold = _task(d)
    acts = ", ".join(
        layer.activation.label for layer in spec.layers if layer.activation is not None
    )
    return CodeModel(
        name=spec.name,
        generator_version=__version__,
        spec_hash=spec.hash,
        spec_toml=spec.to_toml(),
        dtype=dtype,
        summary=f"{spec.architecture} network ({acts}; loss {spec.loss.label}; {dtype})",
        input_shape=spec.input_shape,
        sizes=spec.sizes,
        shapes=spec.shapes,
        n_input=spec.n_inputs,
        n_output=d.layers[-1].n_out,
        params=params,
        forward_buffers=forward_buffers,
        delta_buffers=delta_buffers,
        output_buffer=output,
        input_rows=input_rows,
        param_names=tuple(p.name for p in params),
        forward_names=tuple(b.name for b in forward_buffers),
        delta_names=tuple(b.name for b in delta_buffers),
        grad_names=tuple(f"grad_{p.name}" for p in params),
        forward_code="\n".join(forward),
        loss_code="\n".join(loss),
        backward_code="\n".join(backward),
        gather_code="\n".join(_gather_lines(d, input_rows)),
        helpers=tuple(helper_source(h) for h in helpers),
        blas=blas_source() if uses_gemm else "",
        runtime=runtime_source(),
        targets=d.loss.targets,
        task=task,
        threshold=threshold,
        target_tolerance="1e-4" if dtype == "float32" else "1e-8",
        train_jit_options=_train_jit_options(dtype),
        optimizer_name=spec.optimizer.name,
        optimizer_template=f"optimizers/{opt.template}",
        optimizer_hyper=tuple((k, _py(v)) for k, v in spec.optimizer.hyper),
        optimizer_keys=opt.run_time,
        optimizer_slots=opt.slots,
        optimizer_decoupled=bool(opt.variant.get("decoupled", False)),
        training=tuple((k, _py(v)) for k, v in vars(spec.training).items()),
        formulas=tuple((k, json.dumps(v)) for k, v in d.formulas().items()),
    )
