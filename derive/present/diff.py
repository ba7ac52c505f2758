"""Which derivations differ between two specs: ``derive diff A.toml B.toml``.

``diff(a, b)`` derives both specs and compares, item by item, what derive
derived for each: every layer's kind, forward statements and backward rules,
each activation's derivative (in z, in a, and the form the code uses), the
loss, its gradient, its stable form, the fused output delta, and the optimizer's
update rule. Run-time values (the name, the learning rate and the other
hyper-parameters, the training settings) are no derivation: they are listed
apart and do not make two derivations differ. It also compares the two
generated modules function by function and names the functions whose code
changes. A :class:`SpecDiff` renders as side-by-side text or a Markdown table.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.derivation import Derivation, LayerInfo, derive
from ..engine.notation import (
    bound_gather,
    bound_statement,
    gather_text,
    layer_names,
    statement_text,
)
from ..optimizers import OPTIMIZER_DEFS
from ..spec import Spec, load_spec, spec_from_dict
from .document import Format
from .explain import layer_label

__all__ = ["DiffItem", "SpecDiff", "diff"]


@dataclass(frozen=True)
class DiffItem:
    """One derived item in both specs (None where a spec has no such item)."""

    name: str  # e.g. "layer 1 f'(z)", "fused output delta"
    a: str | None
    b: str | None

    @property
    def same(self) -> bool:
        return self.a == self.b


@dataclass(frozen=True)
class SpecDiff:
    """What differs between the derivations of two specs (``diff(a, b)``).

    ``items``: every derived item, in reading order (``differing``: those that
    differ); ``settings``: run-time values that differ (name, dtype, optimizer
    hyper-parameters, training), which change no derivation; ``functions``: the
    generated module's functions whose code differs (``unchanged`` the others).
    ``same`` is true when every derived item is the same (exit code 0 of
    ``derive diff``; 1 otherwise).
    """

    a_label: str
    b_label: str
    items: tuple[DiffItem, ...]
    settings: tuple[tuple[str, str, str], ...]  # (key, a, b)
    functions: tuple[str, ...]
    unchanged: tuple[str, ...]

    @property
    def differing(self) -> tuple[DiffItem, ...]:
        return tuple(item for item in self.items if not item.same)

    @property
    def same(self) -> bool:
        return not self.differing

    def render(self, fmt: Format = "text") -> str:
        if fmt == "markdown":
            return _markdown(self)
        if fmt == "text":
            return _text(self)
        raise ValueError(f"diff renders as 'text' or 'markdown', not {fmt!r}")

    def __str__(self) -> str:
        return self.render("text")

    def _repr_markdown_(self) -> str:
        return self.render("markdown")


def diff(
    a: Spec | str | Path | dict[str, Any],
    b: Spec | str | Path | dict[str, Any],
    *,
    labels: tuple[str, str] | None = None,
) -> SpecDiff:
    """Compare the derivations of two specs (Spec objects, spec files or dicts)."""
    spec_a, spec_b = _spec(a), _spec(b)
    if labels is None:
        labels = (_label(a, spec_a), _label(b, spec_b))
    if labels[0] == labels[1]:
        labels = (f"A: {labels[0]}", f"B: {labels[1]}")
    d_a, d_b = derive(spec_a), derive(spec_b)
    items_a, items_b = derived_items(d_a), derived_items(d_b)
    names = list(items_a) + [name for name in items_b if name not in items_a]
    items = tuple(DiffItem(n, items_a.get(n), items_b.get(n)) for n in names)
    functions, unchanged = _functions(spec_a, spec_b)
    return SpecDiff(
        labels[0], labels[1], items, _settings(spec_a, spec_b), functions, unchanged
    )


def _spec(value: Spec | str | Path | dict[str, Any]) -> Spec:
    if isinstance(value, Spec):
        return value
    if isinstance(value, dict):
        return spec_from_dict(value)
    return load_spec(value)


def _label(value: object, spec: Spec) -> str:
    if isinstance(value, str | Path):
        return Path(value).name
    return spec.name


# ------------------------------------------------------------------ the items


def derived_items(d: Derivation) -> dict[str, str]:
    """Every derived item of a derivation, by name, as text (reading order)."""
    out: dict[str, str] = {}
    for layer in d.layers:
        out.update(_layer_items(layer))
    loss = d.loss
    n = len(d.layers)
    out["loss"] = f"{loss.label}: {loss.per_element.line}"
    out["loss gradient"] = loss.gradient.line
    out["stable loss form"] = loss.value.line
    out["fused output delta"] = f"delta{n} = ({loss.output_delta.text}) / m"
    out["optimizer update"] = _optimizer_rule(d.spec)
    return out


def _layer_items(layer: LayerInfo) -> dict[str, str]:
    i = layer.index
    kind = layer.kind.kind
    names = layer_names(layer)
    out = {f"layer {i}": layer_label(layer)}
    if kind.view:
        return out
    out[f"layer {i} forward"] = "; ".join(
        statement_text(bound_statement(st, layer), names, subscripts=True)
        for st in kind.forward
    )
    act = layer.activation
    if act is not None:
        out[f"layer {i} activation"] = f"{act.label}: a = {act.forward.text}"
        if act.kind == "softmax":
            assert act.jacobian is not None
            out[f"layer {i} f' (Jacobian)"] = act.jacobian.line
        else:
            assert act.derivative_z is not None
            out[f"layer {i} f'(z)"] = act.derivative_z.text
            out[f"layer {i} f'(a)"] = (
                act.derivative_a.text if act.derivative_a is not None else "not found"
            )
            chosen = act.derivative
            if not layer.is_output and chosen is not None:
                out[f"layer {i} f' used"] = f"{chosen.text}  (in {act.derivative_form})"
    rules = []
    for rule, form in zip(layer.kind.rules, layer.kind.gathers, strict=True):
        if kind.tensor(rule.target).role == "input" and i == 1:
            continue  # the network input needs no gradient
        rules.append(gather_text(bound_gather(form, layer), names, subscripts=True))
    out[f"layer {i} backward"] = "; ".join(rules)
    return out


def _optimizer_rule(spec: Spec) -> str:
    """The update rule the module prints: the template and its variant (the
    hyper-parameters are run-time values)."""
    opt = OPTIMIZER_DEFS[spec.optimizer.name]
    rule = opt.template.removesuffix(".py.jinja")
    flags = [key for key, on in sorted(opt.variant.items()) if on]
    keys = ", ".join(opt.run_time)
    return f"{rule} rule{' (' + ', '.join(flags) + ')' if flags else ''}; {keys} at run time"


def _settings(a: Spec, b: Spec) -> tuple[tuple[str, str, str], ...]:
    """Run-time values and settings that differ: no derivation changes."""
    pairs = {
        "name": (a.name, b.name),
        "dtype": (a.dtype, b.dtype),
        "optimizer": (a.optimizer.name, b.optimizer.name),
    }
    hyper_a, hyper_b = dict(a.optimizer.hyper), dict(b.optimizer.hyper)
    for key in dict.fromkeys([*hyper_a, *hyper_b]):
        pairs[f"optimizer.{key}"] = (hyper_a.get(key, "-"), hyper_b.get(key, "-"))
    train_a, train_b = vars(a.training), vars(b.training)
    for key in train_a:
        pairs[f"training.{key}"] = (train_a[key], train_b[key])
    return tuple((key, str(va), str(vb)) for key, (va, vb) in pairs.items() if va != vb)


def _functions(a: Spec, b: Spec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The generated modules' functions whose code differs, and the others."""
    from ..generate import generate_source

    def bodies(spec: Spec) -> dict[str, str]:
        tree = ast.parse(generate_source(spec))
        return {
            node.name: ast.dump(node)
            for node in tree.body
            if isinstance(node, ast.FunctionDef)
        }

    fa, fb = bodies(a), bodies(b)
    names = list(fa) + [n for n in fb if n not in fa]
    changed = tuple(n for n in names if fa.get(n) != fb.get(n))
    return changed, tuple(n for n in names if n not in changed)


# ------------------------------------------------------------------ rendering


def _summary(d: SpecDiff) -> str:
    if d.same:
        return f"the derivations are the same ({len(d.items)} items)"
    return f"the derivations differ in {len(d.differing)} of {len(d.items)} items"


def _generated(d: SpecDiff) -> str:
    if not d.functions:
        return "generated functions that change: none (the modules differ only in constants)"
    return f"generated functions that change: {', '.join(d.functions)}"


def _text(d: SpecDiff, width: int = 38) -> str:
    lines = [f"derive diff {d.a_label} {d.b_label}: {_summary(d)}", ""]
    if d.differing:
        key_width = max(len(item.name) for item in d.differing)
        head = f"  {'':{key_width}}   {d.a_label[:width]:{width}}   {d.b_label[:width]}"
        lines += [head.rstrip(), "  " + "-" * (key_width + 2 * width + 6)]
        for item in d.differing:
            left = textwrap.wrap(item.a or "-", width) or [""]
            right = textwrap.wrap(item.b or "-", width) or [""]
            for row in range(max(len(left), len(right))):
                name = item.name if row == 0 else ""
                cell_a = left[row] if row < len(left) else ""
                cell_b = right[row] if row < len(right) else ""
                lines.append(
                    f"  {name:{key_width}}   {cell_a:{width}} | {cell_b}".rstrip()
                )
        lines.append("")
    same = [item.name for item in d.items if item.same]
    if same:
        lines += ["the same in both:", *textwrap.wrap(", ".join(same), 86,
                                                     initial_indent="  ",
                                                     subsequent_indent="  "), ""]  # fmt: skip
    if d.settings:
        lines.append(
            "run-time values and settings that differ (no derivation changes):"
        )
        lines += [f"  {key}: {va} -> {vb}" for key, va, vb in d.settings]
        lines.append("")
    lines.append(_generated(d))
    return "\n".join(lines) + "\n"


def _cell(value: str | None) -> str:
    if value is None:
        return "-"
    return "`" + value.replace("|", "\\|").replace("`", "'") + "`"


def _markdown(d: SpecDiff) -> str:
    lines = [f"## derive diff: {d.a_label} vs {d.b_label}", "", _summary(d) + ".", ""]
    if d.differing:
        lines += [f"| item | {d.a_label} | {d.b_label} |", "|---|---|---|"]
        lines += [
            f"| {item.name} | {_cell(item.a)} | {_cell(item.b)} |"
            for item in d.differing
        ]
        lines.append("")
    same = [item.name for item in d.items if item.same]
    if same:
        lines += [f"The same in both: {', '.join(same)}.", ""]
    if d.settings:
        lines += [
            "Run-time values and settings that differ (no derivation changes):",
            "",
        ]
        lines += [f"- `{key}`: {va} -> {vb}" for key, va, vb in d.settings]
        lines.append("")
    lines.append(_generated(d).capitalize() + ".")
    return "\n".join(lines) + "\n"
