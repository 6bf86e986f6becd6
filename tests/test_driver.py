"""The streaming run driver: bounded window, lazy cluster, grouped tasks, incremental
report, dry runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import copy_repository

from daskcal.cli import main
from daskcal.io.catalog import read_catalog
from daskcal.report import Outcome, read_report
from daskcal.runs.driver import Call, drive

VISITS = 2
CCDS = (0, 1, 50)
ID = ["--id", "tract=0", "--no-versions"]


@pytest.fixture(scope="module")
def pristine(demo_repository):
    return demo_repository(visits=VISITS, ccds=CCDS, seed=11)


@pytest.fixture
def root(pristine, tmp_path):
    return copy_repository(pristine, tmp_path / "repo")


def catalog(root, *extra, rerun="demo:cal"):
    return main(["catalog", str(root), "--rerun", rerun, *ID, *extra])


def calibrated(root, rerun="cal") -> Path:
    return root / "rerun" / rerun / "calibrated"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def ids_with(report: dict, *statuses: str) -> set[tuple[int, int]]:
    return {
        (o["dataid"]["visit"], o["dataid"]["ccd"])
        for o in report["outcomes"]
        if o["kind"] == "ccd" and (not statuses or o["status"] in statuses)
    }


def _echo(i: int) -> Outcome:
    return Outcome({"visit": 1, "ccd": i}, "done")


@pytest.mark.parametrize("window", [1, 3])
@pytest.mark.parametrize("distributed", [False, True])
def test_the_driver_never_holds_more_than_its_window(window, distributed):
    pulled = finished = 0
    most = 0

    def calls():
        nonlocal pulled, most
        for i in range(12):
            pulled += 1
            most = max(most, pulled - finished)
            yield Call(f"echo-{i}", _echo, (i,), {"visit": 1, "ccd": i})

    def on_outcome(call, outcome):
        nonlocal finished
        finished += 1
        return []

    if distributed:
        from distributed import Client

        with Client(
            processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
        ) as c:
            assert drive(calls(), on_outcome, connect=lambda: c, window=window, label="")
    else:
        assert drive(calls(), on_outcome, window=window, label="")
    assert finished == 12 and most <= window


def test_no_calls_start_no_cluster():
    def connect():
        raise AssertionError("a cluster was asked for")

    assert drive(iter(()), lambda c, o: [], connect=connect) is False


def test_runs_on_the_callers_client(root):
    from distributed import Client

    from daskcal.config import CalibrateConfig
    from daskcal.repo import Repository
    from daskcal.runs.calibrate import RunOptions, run_catalog

    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as c:
        report = run_catalog(Repository(root, "demo:cal"), [{"tract": 0}], CalibrateConfig(),
                             options=RunOptions(no_versions=True), client=c)  # fmt: skip
        assert report.count("done") == VISITS * len(CCDS)
        assert c.status == "running"  # the caller's cluster is left open


def test_a_rerun_with_nothing_to_do_starts_no_cluster(root, monkeypatch, capsys):
    assert catalog(root) == 0
    import daskcal.runs.cluster as cluster

    def refuse(*args, **kwargs):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(cluster, "local_cluster", refuse)
    capsys.readouterr()
    assert catalog(root, "--batch-type", "smp", "--cores", "1") == 0
    assert f"{VISITS * len(CCDS)} data ids: 0 done, {VISITS * len(CCDS)} skipped" in (
        capsys.readouterr().out
    )


def test_grouped_catalog_tasks_give_the_same_outputs(root):
    from daskcal.config import CalibrateConfig
    from daskcal.repo import Repository
    from daskcal.runs.calibrate import RunOptions, run_catalog

    ids = [{"tract": 0}]
    one = run_catalog(Repository(root, "demo:one"), ids, CalibrateConfig(),
                      options=RunOptions(no_versions=True, group=1))  # fmt: skip
    three = run_catalog(Repository(root, "demo:three"), ids, CalibrateConfig(),
                        options=RunOptions(no_versions=True, group=3))  # fmt: skip
    assert one.exit_code == three.exit_code == 0
    assert one.count("done") == three.count("done") == VISITS * len(CCDS)
    for a in sorted(calibrated(root, "one").glob("0000/*/*/CALSRC-*.fits")):
        b = calibrated(root, "three") / a.relative_to(calibrated(root, "one"))
        pd.testing.assert_frame_equal(read_catalog(a), read_catalog(b))
    for a in sorted(calibrated(root, "one").glob("parquet/**/*.parquet")):
        b = calibrated(root, "three") / a.relative_to(calibrated(root, "one"))
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))


def test_a_dry_run_changes_nothing_and_counts_what_a_run_would_do(root, capsys):
    before = snapshot(root)
    assert catalog(root, "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"{VISITS * len(CCDS)} outputs to make, 0 up to date" in out
    assert snapshot(root) == before
    assert catalog(root) == 0
    before = snapshot(root)
    capsys.readouterr()
    assert catalog(root, "--dry-run") == 0
    assert f"0 outputs to make, {VISITS * len(CCDS)} up to date" in capsys.readouterr().out
    assert snapshot(root) == before


def test_a_killed_driver_leaves_a_partial_report_and_the_rerun_finishes_the_rest(
    pristine, tmp_path
):
    root = copy_repository(pristine, tmp_path / "repo")
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(
        "import time\nimport daskcal.tasks.catalog as job\n"
        "original = job.read_catalog\n"
        "def read_catalog(*args, **kwargs):\n"
        "    time.sleep(1)\n"
        "    return original(*args, **kwargs)\n"
        "job.read_catalog = read_catalog\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(slow), *sys.path]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "daskcal.cli", "catalog", str(root), "--rerun", "demo:cal", *ID],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    done = calibrated(root) / "0000"
    while len(list(done.glob("*/*/CALSRC-*.fits"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    (report_path,) = calibrated(root).glob("reports/*.jsonl")
    partial = read_report(report_path)
    assert not partial["complete"] and partial["task"] == "calibrateCatalog"
    finished = ids_with(partial)
    assert 1 <= len(finished) < VISITS * len(CCDS)
    (
        calibrated(root).parent / ".daskcal.lock"
    ).unlink()  # as a dead holder's: see test_reliability
    assert catalog(root) == 0
    reports = sorted(calibrated(root).glob("reports/*.jsonl"), key=os.path.getmtime)
    again = read_report(reports[-1])
    made = ids_with(again, "done")
    assert again["complete"] and again["summary"].endswith(
        "0 failed; visit Parquet files: 2 written"
    )
    assert not made & finished and len(made) >= VISITS * len(CCDS) - len(finished) - 1
