"""Outlining: a layer's code that other layers repeat becomes one jitted function.

The lowering prints each kernel's body as one block per layer, after a marker
line (``SEGMENT`` + ``"<layer> <part>"``, or ``" - inline"`` for code that must
stay where it is: views, the output pass). A deep network of equal layers
repeats the same block with other tensors; Numba types, lowers and optimizes
each copy again in each of the four kernels, and its passes grow faster than
the code. ``outline`` finds blocks whose code is the same up to the names of the
kernel's arrays and scalars it reads, and prints them once as a function of
those names, called by every layer that has them. Blocks no other layer shares
stay inline, so a network without repeated layers is printed as before.
"""

from __future__ import annotations

import builtins
import re
import symtable
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: marks the start of a layer's block in the lowering's lines
SEGMENT = "#@segment "

_NAME = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
#: modules and helpers a block may read besides the kernel's locals
_GLOBAL_OK = {"np", "math", "numba", *dir(builtins)}


@dataclass(frozen=True)
class View:
    """An array _train makes from one of its flat vectors (theta, grad, work,
    iwork): ``_view(flat, offset, shape)``, transposed for a row-major XT. The
    functions _train calls take the flat vector and the offset instead, and
    make the view themselves, so _train holds no array per outlined layer."""

    flat: str
    offset: str  # printed, in elements (may read cols)
    shape: str  # printed tuple (may read cols)
    transposed: bool = False

    def expression(self, offset: str | None = None) -> str:
        """The printed view, at ``offset`` (a parameter's name) if given."""
        text = f"_view({self.flat}, {offset or self.offset}, {self.shape})"
        return text + ".T" if self.transposed else text

    def reads_cols(self) -> bool:
        return _reads_cols(self.shape)


def _reads_cols(text: str) -> bool:
    """Whether printed code reads the kernels' batch width, cols."""
    return "cols" in _NAME.findall(text)


@dataclass(frozen=True)
class _Block:
    layer: int | None  # None: stays inline
    part: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Outlined:
    """Kernel bodies with repeated blocks replaced by calls, and the functions."""

    bodies: dict[str, str]  # by the names given to ``outline``
    functions: tuple[str, ...]  # jitted with ``options``, in order of first use
    fast_functions: tuple[str, ...]  # jitted with ``fast_options`` (when they differ)


def _blocks(lines: Sequence[str]) -> list[_Block]:
    blocks: list[_Block] = []
    layer: int | None = None
    part = ""
    current: list[str] = []
    for line in lines:
        if line.startswith(SEGMENT):
            if current:
                blocks.append(_Block(layer, part, tuple(current)))
            head = line[len(SEGMENT) :].split()
            layer = None if head[0] == "-" else int(head[0])
            part, current = head[1], []
        else:
            current.append(line)
    if current:
        blocks.append(_Block(layer, part, tuple(current)))
    return blocks


def _code(lines: Sequence[str]) -> str:
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def _arguments(block: _Block, kernel_locals: Sequence[str]) -> tuple[str, ...] | None:
    """The kernel locals ``block`` reads (in the order of ``kernel_locals``), or None
    when it cannot be a function: it rebinds a kernel local (a view) or reads a
    name that is neither a kernel local nor a module-level helper."""
    code = _code(block.lines)
    if not code.strip():
        return None
    source = "def _block():\n" + "\n".join("    " + ln for ln in code.splitlines())
    function = symtable.symtable(source, "<block>", "exec").get_children()[0]
    reads = set()
    for symbol in function.get_symbols():
        name = symbol.get_name()
        if symbol.is_assigned():
            if name in kernel_locals:
                return None
            continue
        if name in kernel_locals:
            reads.add(name)
        elif not (name.startswith("_") or name in _GLOBAL_OK):
            return None
    # in the kernels' order: parameters, gradients, buffers, then the scalars
    return tuple(name for name in kernel_locals if name in reads)


def _flats(arguments: Sequence[str], views: Mapping[str, View]) -> list[str]:
    """The flat vectors the views among ``arguments`` come from, in order."""
    flats: list[str] = []
    for name in arguments:
        view = views.get(name)
        if view is not None and view.flat not in flats and view.flat not in arguments:
            flats.append(view.flat)
    return flats


def _needs_cols(arguments: Sequence[str], views: Mapping[str, View]) -> bool:
    return "cols" not in arguments and any(
        views[name].reads_cols() for name in arguments if name in views
    )


def _run_time(offset: str) -> str:
    """An offset as a run-time integer: Numba types a constant argument as a
    literal and compiles the callee once per value (once per layer)."""
    return offset if _reads_cols(offset) else f"np.intp({offset})"


def _view_parameters(
    arguments: Sequence[str], views: Mapping[str, View]
) -> tuple[list[str], list[str]]:
    """A function's parameters (flat vectors first; ``<name>_at``, the offset,
    for a view) and the lines that make its views."""
    parameters = _flats(arguments, views)
    prologue = []
    for name in arguments:
        if name in views:
            parameters.append(f"{name}_at")
            prologue.append(f"{name} = {views[name].expression(f'{name}_at')}")
        else:
            parameters.append(name)
    if _needs_cols(arguments, views):
        parameters.append("cols")
    return parameters, prologue


def _view_arguments(arguments: Sequence[str], views: Mapping[str, View]) -> list[str]:
    """What a call passes for ``_view_parameters(arguments)``: the flat vectors,
    each view's offset, the other arguments as they are."""
    passed = _flats(arguments, views)
    passed += [
        _run_time(views[name].offset) if name in views else name for name in arguments
    ]
    if _needs_cols(arguments, views):
        passed.append("cols")
    return passed


def _canonical(block: _Block, arguments: Sequence[str]) -> str:
    position = {name: f"__arg{k}" for k, name in enumerate(arguments)}
    return _NAME.sub(lambda m: position.get(m.group(), m.group()), _code(block.lines))


def outline(
    bodies: Mapping[str, Sequence[str]],
    kernel_locals: Sequence[str],
    options: str,
    fast_options: str,
    fast_bodies: frozenset[str] = frozenset(),
    min_layers: int = 2,
    views: Mapping[str, View] | None = None,
) -> Outlined:
    """Outline the blocks of ``bodies`` (kernel body name -> marked lines) that two
    or more layers share; ``kernel_locals`` names the kernels' arguments and
    scalars in the order functions take them. Functions called from
    ``fast_bodies`` are compiled with ``fast_options`` (float32 training loops
    use fast-math, the other kernels not), so when those differ from ``options``
    such a block gets a second copy.
    A block is outlined when at least ``min_layers`` layers share it.
    ``views`` names the arrays of ``fast_bodies`` (_train) that are views of
    flat vectors: the functions those bodies call get their own copies, which
    take the flat vectors and offsets (see View)."""
    views = views or {}
    parsed = {name: _blocks(lines) for name, lines in bodies.items()}
    Key = tuple[str, bool, str, tuple[tuple[str, str, bool] | None, ...]]
    uses: dict[Key, list[tuple[str, int, tuple[str, ...]]]] = {}
    for name, blocks in parsed.items():
        train = name in fast_bodies
        jit = fast_options if train else options
        for index, block in enumerate(blocks):
            if block.layer is None:
                continue
            arguments = _arguments(block, kernel_locals)
            if arguments is None:
                continue
            # _train's copies are the same code on views of the same shapes
            shapes = tuple(
                (views[a].flat, views[a].shape, views[a].transposed)
                if train and a in views
                else None
                for a in arguments
            )
            key = (jit, train, _canonical(block, arguments), shapes)
            uses.setdefault(key, []).append((name, index, arguments))
    calls: dict[tuple[str, int], list[str]] = {}
    functions: dict[bool, list[str]] = {False: [], True: []}  # by train
    taken: set[str] = set()
    for (jit, train, _, _), found in uses.items():
        layers = sorted({parsed[name][index].layer for name, index, _ in found})
        if len(layers) < max(min_layers, 2):
            continue
        first_name, first_index, first_args = min(
            found, key=lambda use: (parsed[use[0]][use[1]].layer, use[0])
        )
        first = parsed[first_name][first_index]
        suffix = ("_fast" if jit != options else "_train") if train else ""
        function = f"_layer{first.layer}_{first.part}{suffix}"
        while function in taken:  # another block of that layer and part
            function += "_"
        taken.add(function)
        shown = ", ".join(str(layer) for layer in layers)
        parameters, prologue = _view_parameters(first_args, views if train else {})
        given = " (given as offsets into _train's flat vectors)" if prologue else ""
        functions[train].append(
            f"@numba.njit({jit})\n"
            f"def {function}({', '.join(parameters)}):\n"
            f'    """Layer {first.layer}\'s {first.part.replace("_", " ")} code, run '
            f'for layers {shown}, each on its own tensors{given}."""\n'
            + "".join(f"    {line}\n" for line in prologue)
            + "\n".join("    " + line if line else "" for line in first.lines)
        )
        for name, index, arguments in found:
            layer = parsed[name][index].layer
            note = "" if layer == first.layer else f": layer {first.layer}'s code"
            passed = _view_arguments(arguments, views if train else {})
            calls[(name, index)] = [
                f"# layer {layer}{note}",
                f"{function}({', '.join(passed)})",
            ]
    out: dict[str, str] = {}
    for name, blocks in parsed.items():
        lines: list[str] = []
        for index, block in enumerate(blocks):
            lines.extend(calls.get((name, index), block.lines))
        out[name] = "\n".join(lines)
    return Outlined(out, tuple(functions[False]), tuple(functions[True]))
