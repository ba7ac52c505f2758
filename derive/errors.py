"""Errors that carry a user-facing message: what is wrong and how to fix it."""

from __future__ import annotations


class DeriveError(Exception):
    """Base class for errors the CLI reports as one clear message (exit code 2)."""


class SpecError(DeriveError):
    """A spec is invalid. ``problems`` lists every problem found, each with its fix."""

    def __init__(self, problems: list[str], source: str = "spec") -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{source}: {len(self.problems)} {noun}:\n{lines}")


class ExpressionError(DeriveError):
    """A user expression is refused by the safe parser."""


class DerivationError(DeriveError):
    """The engine could not derive something it needs (e.g. a non-differentiable op)."""


class DivergenceError(DeriveError):
    """Training diverged: a loss or a parameter became NaN or infinite. The
    message says in which epoch, what went non-finite first and the likely
    fixes; ``diverged`` is the module's report (epoch, rows, quantity, message)."""

    def __init__(self, diverged: dict) -> None:
        self.diverged = dict(diverged)
        super().__init__(self.diverged["message"])


class SpecWarning(UserWarning):
    """A valid spec with a likely problem, such as a user expression defined on
    only part of the reals (``log(x)``): the spec validator warns, the CLI prints
    it as ``derive: warning: ...``."""
