from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Built modules (and Numba's cache beside them) live in one place per checkout,
# so a second pytest run does not compile again.
os.environ.setdefault(
    "DERIVE_CACHE_DIR", str(ROOT / ".pytest_cache" / "derive_modules")
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update",
        action="store_true",
        default=False,
        help="rewrite generated/ from the example specs instead of failing on a diff",
    )
