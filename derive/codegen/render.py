"""Rendering: CodeModel -> Python source, through one strict Jinja environment,
then formatted with ruff (pinned, so the same spec always gives the same bytes)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jinja2

    from .head import HeadModel
    from .lowering import CodeModel


def templates_dir() -> Path:
    """The templates: shipped inside the wheel, or the repository's ``templates/``."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "templates", package.parent / "templates"):
        if (candidate / "module.py.jinja").is_file():
            return candidate
    raise FileNotFoundError(
        f"derive's templates are missing (looked in {package / 'templates'} and "
        f"{package.parent / 'templates'}); reinstall derive"
    )


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The one Jinja environment: strict undefined, trimmed blocks, no autoescape
    (Jinja is imported here: a build whose module is cached renders nothing)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def format_python(source: str) -> str:
    """Format Python source with ruff (the pinned version)."""
    from ruff.__main__ import find_ruff_bin

    result = subprocess.run(
        [
            find_ruff_bin(),
            "format",
            "--no-cache",
            "--isolated",
            "--line-length",
            "88",
            "-",
        ],
        input=source,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"ruff could not format the generated module:\n{result.stderr}"
        )
    return result.stdout


def render_module(head: HeadModel, model: CodeModel | None = None) -> str:
    """A spec's module: standalone with its architecture ``model`` printed inline,
    or (``model=None``) a head importing ``head.architecture_module``."""
    context = {"h": head} if model is None else {"h": head, "m": model}
    raw = environment().get_template("module.py.jinja").render(**context)
    return format_python(raw)


def render_kernels(model: CodeModel) -> str:
    """The shared kernel module of ``model``'s architecture (derive.build's cache)."""
    raw = environment().get_template("kernels.py.jinja").render(m=model)
    return format_python(raw)
