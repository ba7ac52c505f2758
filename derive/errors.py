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
