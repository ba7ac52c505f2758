"""One notation for the formulas of layers, in text and LaTeX.

Every consumer (the generated module's ``FORMULAS`` and loop comments, ``derive
explain``, the worked example) prints statements and rules through these
functions, so a line of code and a line of the explanation read alike:

* index form, as in code: ``z1[j] = b1[j] + sum_k W1[j, k]*a0[k]``;
* textbook form (``subscripts=True``): ``z_j = b_j + sum_k W_jk a_k``, used when
  every index is a single letter;
* LaTeX: ``z_{j} = b_{j} + \\sum_{k} W_{j k} a_{k}``.

Names: the input of layer 1 is ``a0``; layer l computes ``z{l}`` then
``a{l} = f(z{l})`` (a kind without activation computes ``a{l}`` directly), with
parameters ``W{l}``, ``b{l}`` and integer work tensors such as ``argmax{l}``.
The adjoint of ``z{l}`` (or of a kind's output without activation) is
``delta{l}``, that of ``a{l}`` before f' is applied ``da{l}``, and the gradient
of a parameter ``grad_W{l}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter

from ..layers.ir import LayerKind, Statement
from .adjoint import AdjointRule, GatherRule, value_reads

if TYPE_CHECKING:
    from .derivation import Derivation, LayerInfo


def tensor_names(kind: LayerKind, index: int, previous: str) -> dict[str, str]:
    """Each local tensor of ``kind`` -> its name in layer ``index`` of a network
    (``previous``: the name of the layer's input, e.g. ``a0``)."""
    names = {}
    for tensor in kind.tensors:
        if tensor.role == "input":
            names[tensor.name] = previous
        elif tensor.role == "output":
            names[tensor.name] = f"z{index}" if kind.activation else f"a{index}"
        else:
            names[tensor.name] = f"{tensor.name}{index}"
    return names


def adjoint_names(kind: LayerKind, index: int, previous_adjoint: str) -> dict[str, str]:
    """Each local tensor -> the name of its adjoint (see the module docstring)."""
    names = {}
    for tensor in kind.tensors:
        if tensor.role == "input":
            names[tensor.name] = previous_adjoint
        elif tensor.role == "output":
            names[tensor.name] = f"delta{index}"
        elif tensor.role == "param":
            names[tensor.name] = f"grad_{tensor.name}{index}"
        elif tensor.role in ("work", "stat"):
            names[tensor.name] = f"d{tensor.name}{index}"
    return names


def rename(expr: sp.Expr, names: Mapping[str, str]) -> sp.Expr:
    """``expr`` with every read's tensor renamed by ``names`` (and adjoint reads
    ``d<local>`` by ``names["d" + local]``); other names are kept."""

    def rewrite(node: sp.Basic) -> sp.Basic:
        if isinstance(node, sp.Indexed):
            label = str(node.base.label)
            base = sp.IndexedBase(names.get(label, label))
            return base[tuple(rewrite(i) for i in node.indices)]
        if not node.args or isinstance(node, sp.Symbol):
            return node
        return node.func(*(rewrite(a) for a in node.args))

    return rewrite(sp.sympify(expr))


# ------------------------------------------------------------------- printers


class _IntegerText:
    """Integer arithmetic of indices: ``(a) // k`` and ``(a) % k``."""

    def _print_Mod(self, expr: sp.Expr) -> str:
        a, b = expr.args
        return f"({self._print(a)}) % {self._print(b)}"  # type: ignore[attr-defined]

    def _print_floor(self, expr: sp.Expr) -> str:
        numerator, denominator = sp.fraction(sp.together(expr.args[0]))
        show = self._print  # type: ignore[attr-defined]
        if denominator != 1:
            return f"({show(numerator)}) // {show(denominator)}"
        return f"floor({show(expr.args[0])})"  # pragma: no cover


class _IndexText(_IntegerText, StrPrinter):
    """Plain text: reads as ``W1[j, k]``, Piecewise as Python-style conditionals,
    the stable helpers by name; products keep SymPy's ``*``."""

    # class dispatch (_print_Indexed below), not SymPy's own Indexed._sympystr
    printmethod = "_derive_text"

    def __init__(self) -> None:
        super().__init__({"order": "none"})

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:
        *branches, (last, cond) = expr.args
        out = (
            self._print(last)
            if cond is sp.true
            else f"({self._print(last)} if {self._print(cond)} else nan)"
        )
        for e, c in reversed(branches):
            out = f"({self._print(e)} if {self._print(c)} else {out})"
        return out

    def _print_Softplus(self, expr: sp.Expr) -> str:
        return f"softplus({self._print(expr.args[0])})"

    def _print_Sigmoid(self, expr: sp.Expr) -> str:
        return f"sigmoid({self._print(expr.args[0])})"

    def _print_Indexed(self, expr: sp.Indexed) -> str:
        return f"{expr.base.label}[{', '.join(_index_text(i) for i in expr.indices)}]"

    def _print_Mul(self, expr: sp.Mul) -> str:
        if all(isinstance(f, sp.Indexed) for f in expr.args):
            return "*".join(self._print(f) for f in _reading_order(expr.args))
        return super()._print_Mul(expr)


class _IndexArithmetic(_IntegerText, StrPrinter):
    """Index expressions in SymPy's usual order (``i + m - 1``)."""

    printmethod = "_derive_text"

    def _print_Indexed(self, expr: sp.Indexed) -> str:
        return f"{expr.base.label}[{', '.join(self._print(i) for i in expr.indices)}]"


_INDEX_TEXT = _IndexArithmetic()


def _index_text(index: sp.Expr) -> str:
    return _INDEX_TEXT.doprint(index)


def _reading_order(reads: Sequence[sp.Indexed]) -> list[sp.Indexed]:
    """Factors as a textbook writes them: weights (capitals) first, then
    adjoints (delta..., d...), then the rest: W_jk a_k, delta_j a_k, W_jk delta_j."""

    def rank(read: sp.Indexed) -> tuple[int, str]:
        name = str(read.base.label)
        if name[:1].isupper():
            return 0, name
        if name.startswith(("delta", "d")):
            return 1, name
        return 2, name

    return sorted(reads, key=rank)


class _Subscripts(_IndexText):
    """Textbook reads: ``W_jk`` when every index is one letter."""

    def _print_Indexed(self, expr: sp.Indexed) -> str:
        indices = [_index_text(i) for i in expr.indices]
        if all(len(i) == 1 and i.isalpha() for i in indices):
            return f"{expr.base.label}_{''.join(indices)}"
        return super()._print_Indexed(expr)

    def _print_Mul(self, expr: sp.Mul) -> str:
        # a product of reads is written side by side, as in a textbook (W_jk a_k)
        if all(isinstance(f, sp.Indexed) for f in expr.args):
            return " ".join(self._print(f) for f in _reading_order(expr.args))
        return super()._print_Mul(expr)

    def _print_KroneckerDelta(self, expr: sp.Expr) -> str:
        i, j = (self._print(a) for a in expr.args)
        return f"delta_{i}{j}" if len(i) == len(j) == 1 else f"[{i} == {j}]"

    def _print_Sum(self, expr: sp.Sum) -> str:
        indices = ", ".join(self._print(limit[0]) for limit in expr.limits)
        sub = indices if len(expr.limits) == 1 else f"{{{indices}}}"
        body = self._print(expr.function)
        if not isinstance(expr.function, (sp.Indexed, sp.Symbol, sp.Function)):
            body = f"({body})"  # the sum's extent, unambiguous inside a product
        return f"sum_{sub} {body}"


_TEXT = _IndexText()
_TEXTBOOK = _Subscripts()


class _Latex(LatexPrinter):
    def _print_Indexed(self, expr: sp.Indexed) -> str:
        indices = " ".join(self._print(i) for i in expr.indices)
        if any(len(self._print(i)) > 1 for i in expr.indices):
            indices = ", ".join(self._print(i) for i in expr.indices)
        return f"{_latex_tensor(str(expr.base.label))}_{{{indices}}}"

    def _print_Mul(self, expr: sp.Mul) -> str:
        if all(isinstance(f, sp.Indexed) for f in expr.args):
            return " ".join(self._print(f) for f in _reading_order(expr.args))
        return super()._print_Mul(expr)

    def _print_Sum(self, expr: sp.Sum) -> str:
        indices = ", ".join(self._print(limit[0]) for limit in expr.limits)
        body = self._print(expr.function)
        if not isinstance(expr.function, (sp.Indexed, sp.Symbol, sp.Function)):
            body = rf"\left({body}\right)"
        return rf"\sum_{{{indices}}} {body}"


def _latex_tensor(name: str) -> str:
    """A tensor's name as one LaTeX group, its layer as a superscript:
    ``delta2`` -> ``{\\delta^{(2)}}``, so that its index subscript is the only one."""
    stem = name.rstrip("0123456789")
    layer = name[len(stem) :]
    base = LatexPrinter()._print(sp.Symbol(stem)) if stem else name
    return f"{{{base}^{{({layer})}}}}" if layer else f"{{{base}}}"


_LATEX = _Latex()


def text(expr: sp.Expr, subscripts: bool = False) -> str:
    """An expression in index (``x[i]``) or textbook (``x_i``) notation."""
    return (_TEXTBOOK if subscripts else _TEXT).doprint(sp.sympify(expr))


def latex(expr: sp.Expr) -> str:
    return _LATEX.doprint(sp.sympify(expr))


def _read(name: str, index: Sequence[sp.Expr]) -> sp.Expr:
    return sp.IndexedBase(name)[tuple(index)] if index else sp.Symbol(name)


def _sum_text(variables: Sequence[sp.Symbol], subscripts: bool) -> str:
    if not variables:
        return ""
    names = ", ".join(str(v) for v in variables)
    return f"sum_{names if len(variables) == 1 else '{' + names + '}'} "


def _sum_latex(variables: Sequence[sp.Symbol]) -> str:
    if not variables:
        return ""
    return rf"\sum_{{{', '.join(latex(v) for v in variables)}}} "


def statement_text(
    st: Statement, names: Mapping[str, str], subscripts: bool = False
) -> str:
    """``target[I] = init + sum_R body`` (or ``first argmax_R``) with ``names``."""
    target = text(_read(names.get(st.target, st.target), st.index), subscripts)
    body = text(rename(st.body, names), subscripts)
    reduced = [s for s, _ in st.reduce]
    if st.op == "argmax":
        return f"{target} = first argmax_{{{', '.join(map(str, reduced))}}} {body}"
    parts = []
    if st.init != 0:
        parts.append(text(rename(st.init, names), subscripts))
    parts.append(f"{_sum_text(reduced, subscripts)}{body}")
    return f"{target} = {' + '.join(parts)}"


def statement_latex(st: Statement, names: Mapping[str, str]) -> str:
    target = latex(_read(names.get(st.target, st.target), st.index))
    body = latex(rename(st.body, names))
    reduced = [s for s, _ in st.reduce]
    if st.op == "argmax":
        return rf"{target} = \operatorname{{first\,argmax}}_{{{', '.join(map(latex, reduced))}}} {body}"
    parts = [latex(rename(st.init, names))] if st.init != 0 else []
    parts.append(f"{_sum_latex(reduced)}{body}")
    return f"{target} = {' + '.join(parts)}"


def _conditions(conditions: Sequence[sp.Boolean]) -> list[tuple[str, str]]:
    """Conditions as (text, LaTeX), a Ge/Lt pair on one expression chained."""
    lows = {
        c.lhs: c for c in conditions if isinstance(c, sp.GreaterThan) and c.rhs == 0
    }
    out, used = [], set()
    for c in conditions:
        if c in used:
            continue
        if isinstance(c, sp.StrictLessThan) and c.lhs in lows:
            used.add(lows[c.lhs])
            e, n = c.lhs, c.rhs
            out.append(
                (f"0 <= {text(e)} < {text(n)}", rf"0 \le {latex(e)} < {latex(n)}")
            )
        elif (
            isinstance(c, sp.GreaterThan)
            and c.rhs == 0
            and c.lhs in {d.lhs for d in conditions if isinstance(d, sp.StrictLessThan)}
        ):
            continue
        elif isinstance(c, sp.Eq) and isinstance(c.lhs, sp.Mod):
            a, b = c.lhs.args
            out.append(
                (f"({text(a)}) % {text(b)} == 0", rf"{latex(b)} \mid {latex(a)}")
            )
        elif isinstance(c, sp.Eq):
            out.append((f"{text(c.lhs)} == {text(c.rhs)}", latex(c)))
        else:
            out.append((text(c), latex(c)))
    return out


def gather_text(
    form: GatherRule,
    names: Mapping[str, str],
    subscripts: bool = False,
    assign: str = "=",
) -> str:
    """``dx[c, u] = sum_{f, k} [guards] W[f, c, k]*dz[f, (u + p - d*k)/s]``
    (``assign="+="`` where the target already holds another term)."""
    target = text(
        _read(names.get(f"d{form.target}", f"d{form.target}"), form.target_index),
        subscripts,
    )
    value = text(rename(form.value, names), subscripts)
    conditions = [rename(c, names) for c in form.conditions]
    guards = "".join(f"[{t}] " for t, _ in _conditions(conditions))
    return (
        f"{target} {assign} {_sum_text([s for s, _ in form.sums], subscripts)}"
        f"{guards}{value}"
    )


def gather_latex(form: GatherRule, names: Mapping[str, str]) -> str:
    target = latex(
        _read(names.get(f"d{form.target}", f"d{form.target}"), form.target_index)
    )
    value = latex(rename(form.value, names))
    conditions = [rename(c, names) for c in form.conditions]
    guards = "".join(rf"\left[{t}\right] " for _, t in _conditions(conditions))
    return f"{target} = {_sum_latex([s for s, _ in form.sums])}{guards}{value}"


def rule_text(rule: AdjointRule, names: Mapping[str, str]) -> str:
    """The scatter form: ``dx[c, s*i + d*k - p] += W[f, c, k]*dz[f, i]``."""
    target = text(
        _read(names.get(f"d{rule.target}", f"d{rule.target}"), rule.target_index)
    )
    return f"{target} += {text(rename(rule.value, names))}"


# ------------------------------------------------------ names of a network layer


def layer_names(layer: LayerInfo, kind: LayerKind | None = None) -> dict[str, str]:
    """Local tensor and adjoint names of ``layer`` -> the network's names
    (``d<local>`` keys for adjoints); ``kind``: another form of the layer's kind
    (its im2col rewrite), by default its own."""
    kind = kind or layer.kind.kind
    previous = f"a{layer.index - 1}"
    names = tensor_names(kind, layer.index, previous)
    adjoints = adjoint_names(kind, layer.index, f"da{layer.index - 1}")
    names.update({f"d{k}": v for k, v in adjoints.items()})
    if layer.residual is not None:
        names["r"] = f"a{layer.residual}"
        names["dr"] = f"da{layer.residual}"
    return names


def bound(expr: sp.Expr, layer: LayerInfo) -> sp.Expr:
    """``expr`` with the layer's attribute and size symbols as numbers."""
    return sp.sympify(expr).xreplace(dict(layer.binding))


def bound_statement(st: Statement, layer: LayerInfo) -> Statement:
    """The statement with the layer's attribute and size symbols as numbers."""
    return Statement(
        st.target,
        st.index,
        bound(st.body, layer),
        bound(st.init, layer),
        tuple((s, bound(e, layer)) for s, e in st.reduce),
        st.op,
        st.outside,
    )


def bound_gather(form: GatherRule, layer: LayerInfo) -> GatherRule:
    """``form`` with the layer's sizes and attributes bound (see display_gather)."""
    return display_gather(form, dict(layer.binding))


def display_gather(form: GatherRule, binding: Mapping[sp.Symbol, Any]) -> GatherRule:
    """``form`` with ``binding`` substituted, for display: a sum over an axis of
    one is that point (``sum_o dvar[o]`` over ``o < 1`` reads ``dvar[0]``), and
    a target axis bracketed to a constant (``[0 == u]``) is indexed by it."""
    binding = dict(binding)
    # an axis of one by definition (layer norm's statistics), not one that a
    # binding makes one (a single unit): that sum stays as the kind writes it
    at_zero = {s: sp.S.Zero for s, e in form.sums if sp.sympify(e) == 1}
    sums = tuple(
        (s, sp.sympify(e).xreplace(binding)) for s, e in form.sums if s not in at_zero
    )
    index: list[sp.Expr] = list(form.target_index)
    conditions = []
    for c in form.conditions:
        c = c.xreplace(binding).xreplace(at_zero)
        if c is sp.true:
            continue
        if isinstance(c, sp.Eq) and c.rhs in index and c.lhs.is_number:
            index[index.index(c.rhs)] = c.lhs
            continue
        conditions.append(c)
    return GatherRule(
        form.target,
        tuple(index),  # type: ignore[arg-type]  # a constant where bracketed
        sums,
        tuple(conditions),
        form.value.xreplace(binding).xreplace(at_zero),
        form.padded,
    )


def layer_formulas(d: Derivation, layer: LayerInfo) -> dict[str, str]:
    """The layer's entries of a module's ``FORMULAS`` (index form, bound)."""
    out: dict[str, str] = {}
    kind = layer.kind.kind
    i = layer.index
    names = layer_names(layer)
    if kind.view:
        shape = "x".join(map(str, layer.input_shape))
        out[f"a{i}"] = (
            f"a{i} = a{i - 1} flattened in C order ({shape} -> {layer.n_out})"
        )
        return out
    for st in kind.forward:
        key = names[st.target]
        out[key] = statement_text(bound_statement(st, layer), names)
    act = layer.activation
    if act is not None:
        out[f"a{i}"] = f"a{i} = {act.label}(z{i}) = {act.forward.text}"
        chosen = act.derivative
        if not layer.is_output and chosen is not None:
            out[f"delta{i}"] = (
                f"delta{i} = da{i} * f'(z{i}), f' = {chosen.text} "
                f"[{act.derivative_form}-form]"
            )
    for rule, form in zip(layer.kind.rules, layer.kind.gathers, strict=True):
        role = kind.tensor(rule.target).role
        if role == "input" and i == 1:
            continue
        key = names[f"d{rule.target}"]
        line = gather_text(bound_gather(form, layer), names)
        if role == "param" and kind.tensor(rule.target) is not None:
            line += "   (summed over the batch's samples)"
        out[key] = line
    return out


def used_reads(expr: sp.Expr) -> set[str]:
    return {str(r.base.label) for r in value_reads(expr)}
