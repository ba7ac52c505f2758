from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Built modules (and Numba's cache beside them) live in one place per checkout
# and Numba optimization level (make test's tiers; Numba's cache index does not
# record the level, and tests also import modules they write there themselves),
# so a second pytest run does not compile again.
_LEVEL_SUFFIX = f"-O{os.environ['NUMBA_OPT']}" if os.environ.get("NUMBA_OPT") else ""
os.environ.setdefault(
    "DERIVE_CACHE_DIR", str(ROOT / ".pytest_cache" / f"derive_modules{_LEVEL_SUFFIX}")
)

# The key under which a torch comparison stores its worst relative gradient
# error in its report's user_properties.
TORCH_ERROR = "torch_worst_relative_gradient_error"


def pytest_report_header() -> str:
    """Which Numba optimization level the run compiles at (make test's tiers)."""
    level = os.environ.get("NUMBA_OPT", "")
    return f"NUMBA_OPT: {level or 'unset (Numba default, 3)'}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The property-based tests first (each builds a dozen random architectures,
    25-45 s): started near the end, one of them can keep a pytest-xdist worker
    busy after the other has run out of tests. The rest keep their order."""
    items.sort(key=lambda item: not _hypothesis(item))


def _hypothesis(item: pytest.Item) -> bool:
    return bool(getattr(getattr(item, "obj", None), "is_hypothesis_test", False))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update",
        action="store_true",
        default=False,
        help="rewrite generated/ from the example specs instead of failing on a diff",
    )


@pytest.fixture
def record_torch_error(request: pytest.FixtureRequest) -> Callable[[float], None]:
    """Records a comparison's worst relative gradient error against torch in the
    test's report (user_properties), which pytest-xdist workers send to the
    controller: ``pytest_terminal_summary`` prints the worst one per file."""

    def record(error: float) -> None:
        request.node.user_properties.append((TORCH_ERROR, float(error)))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The worst relative gradient error against torch per test file, over every
    recorded comparison of the run (passed or failed, on any worker)."""
    worst: dict[str, tuple[float, str]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            for key, error in getattr(report, "user_properties", ()):
                if key != TORCH_ERROR:
                    continue
                path, _, test = report.nodeid.partition("::")
                if path not in worst or error > worst[path][0]:
                    worst[path] = (error, test)
    if not worst:
        return
    terminalreporter.write_sep("-", "worst relative gradient error against torch")
    for path, (error, test) in sorted(worst.items()):
        terminalreporter.write_line(f"{path}: {error:.3g} ({test})")
