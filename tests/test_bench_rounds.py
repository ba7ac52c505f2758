"""bench/run.py's rounds: how a later round's worker result is folded into the
first's (the figures the table reports), on hand-made worker results."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from unittest import mock

import pytest
from corpus import ROOT


@pytest.fixture(scope="module")
def run_module():
    """bench/run.py imported with the environment restored afterwards (its
    harness import pins thread counts with os.environ.setdefault) and its
    reference directory removed."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        with mock.patch.dict(os.environ):
            module = importlib.import_module("run")
        yield module
        shutil.rmtree(module.REF_DIR, ignore_errors=True)
    finally:
        sys.path.remove(str(ROOT / "bench"))


def _worker(rates: dict[str, list[float]], *, check=None, gemm=None) -> dict:
    """A worker result: per workload the repeats' rates and their median."""
    workloads = {}
    for key, repeats in rates.items():
        ordered = sorted(repeats)
        workloads[key] = {
            "rate": ordered[len(ordered) // 2],
            "rates": list(repeats),
            "epochs": len(repeats),
            "seconds": 1.0 / ordered[len(ordered) // 2],
        }
        if check is not None:
            workloads[key]["check"] = dict(check)
    result = {"impl": "x", "version": "1", "workloads": workloads}
    if gemm is not None:
        result["gemm"] = {"bound": gemm}
    return result


def test_the_best_round_is_reported_and_every_repeat_kept(run_module):
    slow = _worker({"W4": [60.0, 62.0, 61.0]}, gemm=100.0)
    fast = _worker({"W4": [120.0, 126.0, 125.0, 127.0, 124.0]}, gemm=150.0)
    merged = run_module.merge_round(slow, fast)
    w4 = merged["workloads"]["W4"]
    assert w4["rate"] == 125.0  # the median of the faster round
    assert w4["round_rates"] == [61.0, 125.0]
    assert sorted(w4["rates"]) == sorted([60.0, 62.0, 61.0, 120, 126, 125, 127, 124])
    assert w4["epochs"] == 5 and w4["seconds"] == pytest.approx(1 / 125.0)
    assert merged["gemm"]["bound"] == 150.0
    # a slower later round leaves the figure, and the faster probe, alone
    again = run_module.merge_round(merged, _worker({"W4": [90.0]}, gemm=120.0))
    assert again["workloads"]["W4"]["rate"] == 125.0
    assert again["workloads"]["W4"]["round_rates"] == [61.0, 125.0, 90.0]
    assert again["gemm"]["bound"] == 150.0


def test_the_worse_agreement_check_is_kept(run_module):
    good = {"max_rel_diff": 1e-7, "steps": 6, "ok": True}
    bad = {"max_rel_diff": 5e-3, "steps": 6, "ok": False}
    merged = run_module.merge_round(
        _worker({"W3": [1.0]}, check=good), _worker({"W3": [2.0]}, check=bad)
    )
    assert merged["workloads"]["W3"]["check"] == bad
    merged = run_module.merge_round(
        _worker({"W3": [1.0]}, check=bad), _worker({"W3": [2.0]}, check=good)
    )
    assert merged["workloads"]["W3"]["check"] == bad


def test_failed_rounds_and_workloads(run_module):
    ok = _worker({"W1": [10.0], "W2": [20.0]})
    failed = {"impl": "x", "version": None, "error": "boom", "workloads": {}}
    assert run_module.merge_round(ok, failed) is ok
    assert run_module.merge_round(failed, ok) is ok
    # a workload that failed in the first round takes the later round's figure
    first = _worker({"W1": [10.0]})
    first["workloads"]["W2"] = {"error": "ValueError: x"}
    merged = run_module.merge_round(first, _worker({"W1": [5.0], "W2": [20.0]}))
    assert merged["workloads"]["W2"]["rate"] == 20.0
    assert merged["workloads"]["W2"]["round_rates"] == [20.0]
    assert merged["workloads"]["W1"]["rate"] == 10.0
