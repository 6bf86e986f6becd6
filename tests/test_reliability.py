"""Runs whose "done" can be trusted: stale and corrupt outputs, derived products repaired,
one writer per rerun, signals, dead workers, failed writes, unique reports."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import copy_repository

from daskcal.cli import main
from daskcal.io.atomic import temporary_name
from daskcal.io.integrity import fits_problem, parquet_problem
from daskcal.records import NHDU_CARD, RECORD_CARD, ccd_action, read_record
from daskcal.report import read_report
from daskcal.runs.lock import LOCK_NAME, RerunLock, RerunLockError

VISIT = 1228
CCDS = (0, 1, 50)
ID = ["--id", "tract=0", f"visit={VISIT}", "--no-versions"]


@pytest.fixture(scope="module")
def pristine(demo_repository):
    return demo_repository(visits=1, ccds=CCDS, seed=11)


@pytest.fixture
def root(pristine, tmp_path):
    return copy_repository(pristine, tmp_path / "repo")


def catalog(root, *extra):
    return main(["catalog", str(root), "--rerun", "demo:cal", *ID, *extra])


def exposure(root, *extra):
    return main(["exposure", str(root), "--rerun", "demo:cal", *ID, *extra])


def calibrated(root) -> Path:
    return root / "rerun/cal/calibrated"


def outputs(root, kind="CALSRC") -> dict[int, Path]:
    return {int(p.stem[-3:]): p for p in calibrated(root).glob(f"0000/*/*/{kind}-*.fits")}


def visit_parquet(root) -> Path:
    return next(calibrated(root).glob("parquet/src/tract=0/filter=*/visit-0001228.parquet"))


def last_report(root) -> dict:
    reports = sorted(calibrated(root).glob("reports/*.jsonl"), key=os.path.getmtime)
    return read_report(reports[-1])


def statuses(report) -> dict[int, str]:
    return {o["dataid"]["ccd"]: o["status"] for o in report["outcomes"] if o["kind"] == "ccd"}


# -- the plan: records, integrity ------------------------------------------------------


def test_ccd_action_is_plain_data():
    assert not ccd_action("current", redo=False).run
    assert ccd_action("current", redo=True).why == "redo"
    for state in ("missing", "stale", "corrupt"):
        assert ccd_action(state, redo=False).run
    with pytest.raises(ValueError):
        ccd_action("unknown", redo=False)


def test_outputs_carry_their_record_and_hdu_count(root):
    assert catalog(root) == 0 and exposure(root, "-c", "doApplySkyCorr=False") == 0
    for kind in ("CALSRC", "CALEXP"):
        for path in outputs(root, kind).values():
            record, nhdu = read_record(path)
            assert len(record) == 16 and nhdu is not None
            assert fits_problem(path, nhdu) is None
    assert parquet_problem(visit_parquet(root)) is None


def test_another_config_makes_outputs_stale_and_they_are_redone(root, capsys):
    assert catalog(root) == 0
    before = {c: read_record(p)[0] for c, p in outputs(root).items()}
    capsys.readouterr()
    assert catalog(root, "-c", "fluxErrorRule=afw29", "--clobber-config") == 0
    assert "3 data ids: 3 done, 0 skipped" in capsys.readouterr().out
    after = {c: read_record(p)[0] for c, p in outputs(root).items()}
    assert all(before[c] != after[c] for c in CCDS)
    # the visit Parquet file follows its CCDs
    cal = pd.read_parquet(visit_parquet(root))
    from daskcal.io.catalog import read_catalog

    mags = read_catalog(outputs(root)[50])["base_PsfFlux_magErr"].to_numpy()
    np.testing.assert_array_equal(cal[cal.ccd == 50]["base_PsfFlux_magErr"].to_numpy(), mags)
    capsys.readouterr()
    assert catalog(root, "-c", "fluxErrorRule=afw29") == 0
    assert "3 data ids: 0 done, 3 skipped" in capsys.readouterr().out


def test_a_changed_input_makes_its_output_stale(root, capsys):
    assert catalog(root) == 0
    src = next((root / "rerun/demo").glob("*/*/output/SRC-0001228-001.fits"))
    os.utime(src, ns=(time.time_ns(), time.time_ns()))
    capsys.readouterr()
    assert catalog(root) == 0
    report = last_report(root)
    assert statuses(report) == {0: "skipped", 1: "done", 50: "skipped"}
    assert "stale" in next(o["extra"]["why"] for o in report["outcomes"] if o["status"] == "done")


@pytest.mark.parametrize("cut", [100, 2880 * 2, -2880])
def test_truncated_outputs_are_corrupt_shown_by_info_and_redone(root, capsys, cut):
    assert catalog(root) == 0
    path = outputs(root)[1]
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut > 0 else data[:cut])
    assert fits_problem(path, read_record(path)[1]) is not None
    capsys.readouterr()
    assert main(["info", str(root), "--rerun", "demo:cal", "--id", "tract=0"]) == 0
    assert "calibrateCatalog outputs corrupt: 1" in capsys.readouterr().out
    assert catalog(root) == 0
    assert statuses(last_report(root)) == {0: "skipped", 1: "done", 50: "skipped"}
    assert path.read_bytes() == data[: len(path.read_bytes())] or fits_problem(path) is None
    assert fits_problem(path, read_record(path)[1]) is None


def test_info_shows_stale_outputs(root, capsys):
    assert catalog(root) == 0
    src = next((root / "rerun/demo").glob("*/*/output/SRC-0001228-050.fits"))
    os.utime(src, ns=(1, 1))
    capsys.readouterr()
    assert main(["info", str(root), "--rerun", "demo:cal", "--id", "tract=0"]) == 0
    assert "calibrateCatalog outputs stale: 1 (1228/50)" in capsys.readouterr().out


# -- derived products rebuilt from what exists ---------------------------------------


def test_a_visit_parquet_file_that_failed_to_update_is_repaired(root, capsys):
    args = ["catalog", str(root), "--rerun", "demo:cal", "--no-versions", "--id", "tract=0"]
    assert main([*args, "ccd=0"]) == 0
    parquet = visit_parquet(root)
    old = parquet.read_bytes()  # the file as it was after the first run: ccd 0 only
    assert catalog(root) == 0
    assert set(pd.read_parquet(parquet).ccd) == {0, 1, 50}
    parquet.write_bytes(old)  # as if the second run had failed to replace it
    capsys.readouterr()
    assert catalog(root) == 0
    out = capsys.readouterr().out
    assert "3 data ids: 0 done, 3 skipped" in out and "visit Parquet files: 1 written" in out
    assert set(pd.read_parquet(parquet).ccd) == {0, 1, 50}
    capsys.readouterr()
    assert catalog(root) == 0
    assert "visit Parquet files: 0 written" in capsys.readouterr().out
    parquet.write_bytes(old[: len(old) // 2])  # truncated
    assert catalog(root) == 0
    assert set(pd.read_parquet(parquet).ccd) == {0, 1, 50}


def test_a_ccd_whose_columns_differ_never_blocks_its_visit(root, caplog):
    from daskcal.io.catalog import read_catalog, write_catalog

    src = next((root / "rerun/demo").glob("*/*/output/SRC-0001228-050.fits"))
    df = read_catalog(src)
    dropped = next(c for c in df.columns if c.endswith("_instFlux") and c + "Err" in df)
    write_catalog(src, df.drop(columns=[dropped, dropped + "Err"]), template=src)
    assert catalog(root) == 0
    frame = pd.read_parquet(visit_parquet(root))
    flux = dropped.removesuffix("_instFlux") + "_flux"
    assert frame[frame.ccd == 50][flux].isna().all()
    assert frame[frame.ccd == 0][flux].notna().any()
    assert any(flux in r.getMessage() and "nulls" in r.getMessage() for r in caplog.records)


def test_calibration_table_keeps_tan_sip_cards_when_a_catalog_run_follows(root):
    assert exposure(root, "-c", "doApplySkyCorr=False") == 0
    path = calibrated(root) / "0000" / "calib-HSC-G.parquet"
    if not path.exists():
        path = next(calibrated(root).glob("0000/calib-*.parquet"))
    before = pd.read_parquet(path).set_index("ccd")
    assert (before.sip_header != "").all()
    assert catalog(root, "-c", "doApplySkyCorr=False", "--clobber-config") == 0
    after = pd.read_parquet(path).set_index("ccd")
    assert (after.sip_header == before.sip_header).all()
    # and a table that failed to save is completed by the next run
    path.unlink()
    assert catalog(root, "-c", "doApplySkyCorr=False") == 0
    assert sorted(pd.read_parquet(path).ccd) == list(CCDS)


# -- one writer per rerun, unique reports --------------------------------------------


def test_a_second_run_on_a_held_rerun_refuses_naming_the_holder(root, capsys):
    assert catalog(root) == 0
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = calibrated(root).parent / LOCK_NAME
        lock.write_text(
            json.dumps({"host": os.uname().nodename, "pid": holder.pid, "task": "calibrateX",
                        "started": __import__("psutil").Process(holder.pid).create_time()})
        )  # fmt: skip
        capsys.readouterr()
        assert catalog(root, "--redo") == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "calibrateX" in err and len(err.splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale and taken over
    assert catalog(root) == 0
    assert not (calibrated(root).parent / LOCK_NAME).exists()


def test_lock_of_another_host_is_stale_only_without_heartbeat(tmp_path):
    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "task": "t", "started": 0}))
    with pytest.raises(RerunLockError, match="elsewhere"):
        RerunLock(tmp_path, "t", stale_after=60).acquire()
    old = time.time() - 120
    os.utime(lock, (old, old))
    with RerunLock(tmp_path, "t", stale_after=60):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_concurrent_runs_on_one_rerun_lose_nothing(root):
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daskcal.cli",
                "catalog",
                str(root),
                "--rerun",
                "demo:cal",
                "--id",
                "tract=0",
                f"visit={VISIT}",
                f"ccd={ccd}",
                "--no-versions",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for ccd in CCDS
    ]
    codes = [p.wait(timeout=300) for p in runs]
    errors = [p.stderr.read() for p in runs]
    for p in runs:
        p.stdout.close()
        p.stderr.close()
    assert set(codes) <= {0, 2}
    for code, err in zip(codes, errors, strict=True):
        assert code == 0 or "in use by" in err
    done = [c for c, code in zip(CCDS, codes, strict=True) if code == 0]
    assert set(outputs(root)) == set(done)
    assert set(pd.read_parquet(visit_parquet(root)).ccd) == set(done)
    table = pd.read_parquet(next(calibrated(root).glob("0000/calib-*.parquet")))
    assert set(table.ccd) == set(done)
    # every run that ran saved its own report
    assert len(list(calibrated(root).glob("reports/*.jsonl"))) == len(done)


# -- interruptions, dead workers, leftovers ------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_gives_128_plus_signal_and_a_partial_report(pristine, tmp_path, signum):
    root = copy_repository(pristine, tmp_path / "repo")
    slow = tmp_path / "slow"  # each CCD takes 2 s more: time to be interrupted mid-run
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(
        "import time\nimport daskcal.tasks.exposure as job\n"
        "original = job.read_exposure\n"
        "def read_exposure(*args, **kwargs):\n"
        "    time.sleep(2)\n"
        "    return original(*args, **kwargs)\n"
        "job.read_exposure = read_exposure\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(slow), *sys.path]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "daskcal.cli", "exposure", str(root), "--rerun", "demo:cal",
         *ID, "-c", "doApplySkyCorr=False"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not outputs(root, "CALEXP") and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    report = last_report(root)
    assert report["interrupted"] == signal.Signals(signum).name, (out, err)
    states = statuses(report)
    assert sorted(states) == list(CCDS), (out, err)
    assert "done" in states.values() and "failed" in states.values(), (states, out, err)
    assert all(
        fits_problem(p, read_record(p)[1]) is None for p in outputs(root, "CALEXP").values()
    )
    assert not list(calibrated(root).rglob(".*.tmp-*"))
    assert not (calibrated(root).parent / LOCK_NAME).exists()
    # a re-run completes only the rest
    assert exposure(root, "-c", "doApplySkyCorr=False") == 0
    again = statuses(last_report(root))
    assert {c for c, s in again.items() if s == "done"} == {
        c for c, s in states.items() if s == "failed"
    }


def test_a_ccd_that_kills_its_worker_fails_and_the_run_goes_on(root, tmp_path, capsys):
    plugin = tmp_path / "poison.py"
    plugin.write_text(
        "import os\nimport daskcal.tasks.catalog as job\n"
        "original = getattr(job, 'unpoisoned', job.read_catalog)\n"
        "job.unpoisoned = original\n"
        "def read_catalog(path):\n"
        "    if '-050.fits' in str(path):\n"
        "        os._exit(1)\n"
        "    return original(path)\n"
        "job.read_catalog = read_catalog\n"
    )
    import dask

    with dask.config.set({"distributed.worker.preload": [str(plugin)],
                          "distributed.scheduler.allowed-failures": 1}):  # fmt: skip
        code = catalog(root, "--batch-type", "smp", "--cores", "1")
    out = capsys.readouterr().out
    assert code == 1
    assert statuses(last_report(root)) == {0: "done", 1: "done", 50: "failed"}
    assert "died" in out
    assert set(pd.read_parquet(visit_parquet(root)).ccd) == {0, 1}


def test_temporary_files_of_killed_runs_are_removed_at_the_next_start(root):
    assert catalog(root) == 0
    leftover = temporary_name(outputs(root)[0])
    leftover.write_bytes(b"half a file")
    other = calibrated(root) / "keep.tmp-1-abcdefgh"  # not a daskcal temporary name
    other.write_text("mine")
    assert catalog(root) == 0
    assert not leftover.exists() and other.exists()


# -- failed writes -------------------------------------------------------------------


def test_a_full_disk_names_the_output_and_damages_nothing(root, monkeypatch, capsys):
    assert catalog(root) == 0
    before = outputs(root)[1].read_bytes()
    import daskcal.io.catalog as io_catalog

    real = io_catalog.atomic_write

    def full(path):
        if "CALSRC-0001228-001" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path)

    monkeypatch.setattr(io_catalog, "atomic_write", full)
    capsys.readouterr()
    assert catalog(root, "--redo") == 1
    out = capsys.readouterr().out
    assert f"cannot write {outputs(root)[1]}: No space left on device" in out
    assert outputs(root)[1].read_bytes() == before


def test_a_read_only_output_rerun_is_one_line(root, capsys):
    if os.geteuid() == 0:
        # root ignores permissions: make the rerun's parent a file instead
        (root / "rerun" / "ro").write_text("not a folder")
        code = main(["catalog", str(root), "--rerun", "demo:ro/x", *ID])
    else:  # pragma: no cover - CI runs as root
        (root / "rerun" / "ro").mkdir(mode=0o555)
        code = main(["catalog", str(root), "--rerun", "demo:ro", *ID])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("daskcal: error:") and len(err.splitlines()) == 1


def test_a_report_that_cannot_be_saved_still_prints_the_summary(root, capsys):
    assert catalog(root) == 0
    reports = calibrated(root) / "reports"
    shutil.rmtree(reports)
    reports.write_text("not a folder")  # as unwritable as a read-only one, even for root
    assert catalog(root, "--redo") == 1
    captured = capsys.readouterr()
    assert "3 data ids: 3 done" in captured.out
    assert "cannot save the report" in captured.out


def test_report_names_are_unique_per_run(root):
    for _ in range(3):
        assert catalog(root) == 0
    assert len(list(calibrated(root).glob("reports/calibrateCatalog-*.jsonl"))) == 3


def test_records_are_in_the_primary_header(root):
    assert catalog(root) == 0
    from astropy.io import fits

    header = fits.getheader(outputs(root)[0])
    assert RECORD_CARD in header and NHDU_CARD in header


def test_a_truncated_calexp_output_is_redone(root):
    assert exposure(root, "-c", "doApplySkyCorr=False") == 0
    path = outputs(root, "CALEXP")[50]
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 2880])
    assert exposure(root, "-c", "doApplySkyCorr=False") == 0
    assert statuses(last_report(root)) == {0: "skipped", 1: "skipped", 50: "done"}
    assert fits_problem(path, read_record(path)[1]) is None


def test_a_full_disk_at_the_start_is_one_line(root, monkeypatch, capsys):
    import daskcal.runs.provenance as provenance

    def full(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(provenance, "atomic_write", full)
    assert catalog(root) == 2
    err = capsys.readouterr().err
    assert err.startswith("daskcal: error: cannot record the configuration in")
    assert "No space left on device" in err and len(err.splitlines()) == 1
    assert not (calibrated(root).parent / LOCK_NAME).exists()


def test_flagged_ccds_are_in_the_summary_and_the_report(root, capsys):
    wcs = next((root / "rerun/demo").glob("jointcal-results/*/*/jointcal_wcs-0001228-001.fits"))
    wcs.unlink()
    assert catalog(root, "-c", "onMissingCalibration=flag") == 0
    out = capsys.readouterr().out
    assert "(1 flagged uncalibrated)" in out and "flagged uncalibrated (no jointcal_wcs" in out
    flagged = [o for o in last_report(root)["outcomes"] if o["extra"].get("uncalibrated")]
    assert [o["dataid"]["ccd"] for o in flagged] == [1]


def test_the_lazy_api_refuses_a_table_in_another_order(pristine):
    from daskcal.config import CalibrateConfig
    from daskcal.lazy.calibrated import (
        calibrated_catalogs,
        calibrated_exposures,
        calibration_table,
    )
    from daskcal.repo import Repository

    repo = Repository(pristine, rerun="demo")
    ids = repo.expand([{"tract": 0}])
    table = calibration_table(repo, ids, CalibrateConfig())
    shuffled = table.iloc[::-1].reset_index(drop=True)
    with pytest.raises(ValueError, match="row 0 is ccd=50, but data id 0 is visit=1228 ccd=0"):
        calibrated_catalogs(repo, ids, table=shuffled)
    with pytest.raises(ValueError, match="2 rows for 3 data ids"):
        calibrated_exposures(repo, ids, table=table.iloc[:2])
    assert calibrated_catalogs(repo, ids, table=table).npartitions == len(ids)
