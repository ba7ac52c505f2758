from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from derive.generate import _opt_level_suffix

ROOT = Path(__file__).resolve().parent.parent

# Built modules (and Numba's cache beside them) live in one place per checkout
# and Numba optimization level (make test's tiers; Numba's cache index does not
# record the level, and tests also import modules they write there themselves),
# so a second pytest run does not compile again (except at NUMBA_OPT=0, where
# Numba caches no kernel that calls another: see pytest_configure).
os.environ.setdefault(
    "DERIVE_CACHE_DIR",
    str(ROOT / ".pytest_cache" / f"derive_modules{_opt_level_suffix()}"),
)

# The keys under which a comparison stores its worst error in its report's
# user_properties, and the heading the terminal summary prints it under.
TORCH_ERROR = "torch_worst_relative_gradient_error"
ONNX_DIFFERENCE = "onnx_worst_relative_difference"
_SUMMARIES = {
    TORCH_ERROR: "worst relative gradient error against torch",
    ONNX_DIFFERENCE: "largest relative difference of onnxruntime (float32) from derive",
}


def pytest_report_header() -> str:
    """Which Numba optimization level the run compiles at (make test's tiers)."""
    level = os.environ.get("NUMBA_OPT", "")
    return f"NUMBA_OPT: {level or 'unset (Numba default, 3)'}"


def pytest_configure(config: pytest.Config) -> None:
    """At NUMBA_OPT=0 (make test's first tier) Numba declines, with a warning, to
    cache any kernel that calls another jitted function: expected at that level, so
    not reported. The tests of the cache run their processes at a level that caches
    (numba_env.caching_env)."""
    if _opt_level_suffix() == "-O0":
        config.addinivalue_line(
            "filterwarnings",
            "ignore:Cannot cache compiled function:numba.core.errors.NumbaWarning",
        )


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


def _recorder(request: pytest.FixtureRequest, key: str) -> Callable[[float], None]:
    def record(error: float) -> None:
        request.node.user_properties.append((key, float(error)))

    return record


@pytest.fixture
def record_torch_error(request: pytest.FixtureRequest) -> Callable[[float], None]:
    """Records a comparison's worst relative gradient error against torch in the
    test's report (user_properties), which pytest-xdist workers send to the
    controller: ``pytest_terminal_summary`` prints the worst one per file."""
    return _recorder(request, TORCH_ERROR)


@pytest.fixture
def record_onnx_difference(request: pytest.FixtureRequest) -> Callable[[float], None]:
    """Records an onnxruntime comparison's largest relative difference from derive,
    as ``record_torch_error`` does."""
    return _recorder(request, ONNX_DIFFERENCE)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Per recorded kind (_SUMMARIES), the worst error per test file, over every
    recorded comparison of the run (passed or failed, on any worker)."""
    worst: dict[str, dict[str, tuple[float, str]]] = {key: {} for key in _SUMMARIES}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            for key, error in getattr(report, "user_properties", ()):
                if key not in worst:
                    continue
                path, _, test = report.nodeid.partition("::")
                if path not in worst[key] or error > worst[key][path][0]:
                    worst[key][path] = (error, test)
    for key, per_file in worst.items():
        if not per_file:
            continue
        terminalreporter.write_sep("-", _SUMMARIES[key])
        for path, (error, test) in sorted(per_file.items()):
            terminalreporter.write_line(f"{path}: {error:.3g} ({test})")
