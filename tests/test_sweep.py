"""derive.sweep on real Dask: grid paths and values, stratified folds,
bit-identical rows on the synchronous scheduler, one worker and two, a worker
killed mid-trial (the trial is retried, its row unchanged), rows written as
they arrive and kept on Ctrl-C, and the CLI's exit codes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from corpus import ROOT
from numba_env import caching_env

import derive
from derive.cli import main
from derive.datasets import make_circles
from derive.errors import DeriveError
from derive.sweeps import cv_folds, expand_grid, grid_paths, parse_values

distributed = pytest.importorskip("distributed")

SPEC_FILE = ROOT / "examples" / "two_circles.toml"
#: two architectures (4 and 8 hidden units) x 2 learning rates x 2 seeds
GRID = {"units.1": [4, 8], "optimizer.lr": [0.1, 0.01], "training.seed": "0..1"}
CV = 2
#: what must agree bit for bit between runs (not wall time, worker, attempts)
SAME = ("trial", "point", "fold", "layers.1.units", "optimizer.lr",
        "training.seed", "status", "train_loss", "val_loss", "train_accuracy",
        "val_accuracy", "epochs", "architecture", "params_digest")  # fmt: skip


def _spec(epochs: int = 4) -> derive.Spec:
    data = derive.load_spec(SPEC_FILE).to_dict()
    data["training"]["epochs"] = epochs
    return derive.spec_from_dict(data)


def _data() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_circles(120, factor=0.3, noise=0.1, seed=3)
    X.flags.writeable = False  # as memory maps and received buffers are
    return X, y


def _same(rows):
    return sorted(tuple(row[k] for k in SAME) for row in rows)


@pytest.fixture(scope="module")
def client():
    """A 2-worker LocalCluster. Its workers (and those the nanny restarts) run at
    a Numba level that caches, as the sweep's one compile per architecture needs:
    at NUMBA_OPT=0 (make test's first tier) the second worker would compile its
    warm-up instead of loading it, and might get no trial."""
    import dask

    level = caching_env().get("NUMBA_OPT")  # the nanny's env wins over os.environ
    with dask.config.set({"distributed.scheduler.allowed-failures": 3}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True,
            dashboard_address=":0", silence_logs=logging.ERROR,
            env={"NUMBA_OPT": level} if level is not None else None,
        )  # fmt: skip
    with distributed.Client(cluster) as dask_client:
        yield dask_client
    cluster.close()


@pytest.fixture(scope="module")
def two_workers(client):
    """The reference sweep: the shared 2-worker cluster, no failure."""
    X, y = _data()
    return derive.sweep(_spec(), X, y, GRID, cv=CV, client=client, progress=False)


# ------------------------------------------------------------------ the grid


def test_grid_paths_values_and_errors():
    spec = _spec()
    paths = grid_paths(spec)
    for path in ("layers.1.units", "layers.2.activation", "optimizer.name",
                 "optimizer.lr", "training.batch_size", "training.seed"):  # fmt: skip
        assert path in paths
    assert parse_values("0..4") == [0, 1, 2, 3, 4]
    assert parse_values("4,8,16") == [4, 8, 16]
    assert parse_values("0.1,1e-3,relu,true") == [0.1, 0.001, "relu", True]
    points = expand_grid(spec, GRID)
    assert len(points) == 8
    assert points[5].values == (
        ("layers.1.units", 8), ("optimizer.lr", 0.1), ("training.seed", 1)
    )  # fmt: skip
    assert points[5].spec.layers[0].units == 8 and points[5].spec.training.seed == 1
    # the learning rate and seed are run-time values: 2 architectures for 8 points
    assert len({p.spec.architecture_hash for p in points}) == 2
    # switching optimizer keeps the learning rate, drops Adam's betas
    [sgd] = expand_grid(spec, {"optimizer.name": "sgd"})
    assert sgd.spec.optimizer.name == "sgd" and sgd.spec.optimizer.lr == 0.02

    with pytest.raises(DeriveError) as bad_path:
        expand_grid(spec, {"layers.3.units": [4]})
    message = str(bad_path.value)
    assert "'layers.3.units' is not a field" in message
    assert "layers.1.units" in message and "training.seed" in message
    with pytest.raises(DeriveError, match=r"optimizer\.lr=0: .*must be > 0"):
        expand_grid(spec, {"optimizer.lr": [0.1, 0]})
    with pytest.raises(DeriveError, match="rellu"):
        expand_grid(spec, {"layers.1.activation": ["tanh", "rellu"]})
    with pytest.raises(DeriveError, match="twice"):
        expand_grid(spec, {"optimizer.lr": [0.1, 0.1]})
    with pytest.raises(DeriveError, match="use cv"):
        expand_grid(spec, {"training.validation_split": [0.1]})
    with pytest.raises(DeriveError, match="empty"):
        parse_values("4..2")


def test_bad_grid_fails_before_anything_starts(tmp_path, monkeypatch):
    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started for a bad grid")

    monkeypatch.setattr(distributed, "LocalCluster", no_cluster)
    X, y = _data()
    out = tmp_path / "rows.csv"
    for grid in ({"layer.1.units": [4]}, {"optimizer.lr": [-1]}):
        with pytest.raises(DeriveError, match="Valid paths|must be > 0"):
            derive.sweep(_spec(), X, y, grid, out=out, progress=False)
    assert not out.exists() and not (tmp_path / "rows.csv.partial").exists()


# --------------------------------------------------------------------- folds


def test_folds_are_stratified_seeded_and_cover_every_row():
    labels = np.array([0] * 31 + [1] * 9 + [2] * 20)[
        np.random.default_rng(1).permutation(60)
    ]
    folds = cv_folds(60, 4, labels=labels, seed=7)
    assert folds.shape == (60,) and set(folds.tolist()) == {0, 1, 2, 3}
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1
    for c in (0, 1, 2):
        per_fold = np.bincount(folds[labels == c], minlength=4)
        assert per_fold.max() - per_fold.min() <= 1, (c, per_fold)
    assert np.array_equal(folds, cv_folds(60, 4, labels=labels, seed=7))
    assert not np.array_equal(folds, cv_folds(60, 4, labels=labels, seed=8))
    plain = cv_folds(10, 3)  # regression: shuffled k-fold
    assert sorted(np.bincount(plain).tolist()) == [3, 3, 4]
    with pytest.raises(derive.DataError, match="fewer than the 5 folds"):
        cv_folds(12, 5, labels=np.array([0] * 9 + [1] * 3))


# ----------------------------------------------------------------- on Dask


def test_rows_bit_identical_on_sync_one_and_two_workers(two_workers):
    X, y = _data()
    sync = derive.sweep(
        _spec(), X, y, GRID, cv=CV, client="synchronous", progress=False
    )
    one = derive.sweep(_spec(), X, y, GRID, cv=CV, workers=1, progress=False)
    assert len(two_workers.rows) == 16 and all(
        r["status"] == "ok" for r in two_workers.rows
    )
    assert _same(sync.rows) == _same(one.rows) == _same(two_workers.rows)
    assert len({r["worker"] for r in two_workers.rows}) == 2  # both took trials
    # the other worker of each architecture loaded it from Numba's cache
    assert two_workers.compiles["cache_loads"] >= 2, two_workers.warmups
    assert one.workers == 1 and two_workers.workers == 2
    assert sync.best()["point"] == two_workers.best()["point"]
    # each architecture warmed once per worker, nothing compiled inside a trial
    # (read-only X included)
    for result, n_workers in ((one, 1), (two_workers, 2)):
        warmed = [(w["worker"], w["architecture"]) for w in result.warmups]
        assert len(warmed) == len(set(warmed)) == 2 * n_workers
        assert result.compiles["architectures"] == 2
        assert result.compiles["trial_compiles"] == 0
        assert {w["blas_threads"] for w in result.warmups} == {1}
        assert all(r["compiled"] == 0 for r in result.rows)
    assert two_workers.retried == []


def test_killed_worker_loses_only_its_trial(client, two_workers, tmp_path):
    marker = tmp_path / "killed-once"

    def kill_once(trial, epoch, logs):
        # trial 5 (grid point 2, fold 1) takes its worker process down once
        if trial["trial"] == 5 and epoch == 1 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)

    X, y = _data()
    out = tmp_path / "rows.csv"
    result = derive.sweep(
        _spec(), X, y, GRID, cv=CV, client=client, callback=kill_once,
        out=out, progress=False,
    )  # fmt: skip
    assert marker.exists()  # a worker did die
    killed = int(marker.read_text())
    # trial 5 ran twice; any other retried trial had finished on the killed
    # worker a moment before, its result not yet sent (Dask computes it again)
    assert 5 in result.retried
    attempts = {r["trial"]: r["attempts"] for r in result.rows}
    assert attempts[5] == 2
    for trial in result.retried:
        first, second = result.starts[trial][:2]
        assert first["pid"] == killed and second["pid"] != killed
    assert sum(attempts.values()) == 16 + len(result.retried)
    assert _same(result.rows) == _same(two_workers.rows)
    assert "trial 5" in result.summary().split("retried (a worker died): ")[1]
    assert out.read_text().count("\n") == 17  # header + every row


def test_rows_written_as_they_arrive(tmp_path):
    X, y = _data()
    out = tmp_path / "rows.csv"
    partial = tmp_path / "rows.csv.partial"
    seen = {}

    def look(trial, epoch, logs):  # runs in this process (synchronous scheduler)
        if trial["trial"] == 3 and epoch == 0:
            seen["partial"] = partial.read_text()
            seen["final exists"] = out.exists()

    result = derive.sweep(
        _spec(), X, y, {"optimizer.lr": [0.1, 0.01]}, cv=CV, client="synchronous",
        callback=look, out=out, progress=False,
    )  # fmt: skip
    lines = seen["partial"].splitlines()
    assert len(lines) == 4 and lines[0].startswith("trial,point,fold,optimizer.lr")
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2"]
    assert seen["final exists"] is False
    assert not partial.exists()  # replaced by the final file
    final = out.read_text().splitlines()
    assert final[:4] == lines and len(final) == 5
    assert final == result.to_csv(tmp_path / "again.csv").read_text().splitlines()
    with pytest.raises(
        DeriveError, match="exists; choose another path or pass --force"
    ):
        derive.sweep(_spec(), X, y, {}, cv=CV, client="synchronous", out=out)


def _circles_csv(path):
    """120 two-circles points as a CSV (x1, x2, label) at ``path``."""
    X, y = make_circles(120, factor=0.3, noise=0.1, seed=3)
    path.write_text(
        "x1,x2,label\n"
        + "".join(f"{a!r},{b!r},{c}\n" for (a, b), c in zip(X.tolist(), y, strict=True))
    )
    return path


@pytest.mark.parametrize("where", ["synchronous", "local cluster"])
def test_ctrl_c_stops_and_keeps_finished_rows(tmp_path, where):
    data = _circles_csv(tmp_path / "points.csv")
    out = tmp_path / "rows.csv"
    partial = tmp_path / "rows.csv.partial"
    command = [sys.executable, "-m", "derive", "sweep", str(SPEC_FILE), "--data",
               str(data), "--grid", "training.seed=0..300", "--cv", "2",
               "--out", str(out), "--quiet"]  # fmt: skip
    command += ["--scheduler", "synchronous"] if where == "synchronous" else [
        "--workers", "2"
    ]  # fmt: skip
    # its own process group: a terminal's Ctrl-C reaches the workers too
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if partial.exists() and partial.read_text().count("\n") >= 4:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "sweep interrupted" in err and "Traceback" not in err, err
    assert not out.exists()
    rows = partial.read_text().splitlines()
    assert 4 <= len(rows) < 603
    trials = [int(r.split(",")[0]) for r in rows[1:]]
    assert len(set(trials)) == len(trials) and set(trials) <= set(range(602))
    assert all(",ok," in r for r in rows[1:])


# ----------------------------------------------------------------------- CLI


def _cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_sweep_and_its_exit_codes(tmp_path, capsys):
    data = _circles_csv(tmp_path / "points.csv")
    spec = tmp_path / "net.toml"
    spec.write_text(_spec().to_toml())
    out, plot = tmp_path / "rows.csv", tmp_path / "rows.png"
    base = ["sweep", str(spec), "--data", str(data), "--cv", "2", "--quiet"]
    code, stdout, err = _cli(capsys, *base, "--grid", "units.1=4,8", "--grid",
                             "optimizer.lr=0.1,0.01", "--scheduler", "synchronous",
                             "--out", str(out), "--plot", str(plot))  # fmt: skip
    assert code == 0, err
    assert "8 of 8 trials (4 grid points x 2 folds)" in stdout and "best: " in stdout
    assert out.read_text().count("\n") == 9 and plot.read_bytes()[:4] == b"\x89PNG"

    bad = {
        "bad path": (["--grid", "layers.9.units=4"], "Valid paths"),
        "no values": (["--grid", "optimizer.lr"], "give PATH=VALUES"),
        "bad value": (["--grid", "optimizer.lr=-1"], "must be > 0"),
        "bad range": (["--grid", "training.seed=0..x"], "two integers"),
        "both": (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "--workers"),
        "one fold": (["--cv", "1"], "2 or more folds"),
        "exists": (["--out", str(out)], "exists; choose another path"),
    }
    for name, (extra, message) in bad.items():
        code, _, err = _cli(capsys, *base, *extra)
        assert code == 2 and message in err and "Traceback" not in err, name
    code, _, err = _cli(capsys, "sweep", str(spec), "--data", str(tmp_path / "no.csv"))
    assert code == 2 and "data file not found" in err


def test_derive_imports_without_dask():
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('dask', 'distributed'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import numpy as np, derive\n"
        "from derive.datasets import make_circles\n"
        "X, y = make_circles(40)\n"
        "try:\n"
        "    derive.sweep('examples/xor.toml', X, y, cv=2, client='synchronous')\n"
        "except derive.DeriveError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "pip install 'derive[dask]'" in done.stdout
