"""calibrateCatalog end to end on a repository built from the real LSST files."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pandas as pd
import pytest
from realrepo import FILTER, TRACT, VISIT, make_real_repository

from daskcal.apply import calibrated_flux_columns
from daskcal.calib.skywcs import read_skywcs
from daskcal.cli import main
from daskcal.config import CalibrateConfig
from daskcal.io.catalog import read_catalog
from daskcal.lazy.calibrated import calibrated_catalogs
from daskcal.repo import Repository
from daskcal.report import read_report
from daskcal.runs.cluster import ExecutionOptions, make_jobqueue_cluster

ID = ["--id", f"visit={VISIT}", f"tract={TRACT}"]
JOINTCAL = ["-c", "externalPhotoCalibName=jointcal"]
MEAN, ERR = 123.0, 45.0  # afw's photoCalib-version1.fits


@pytest.fixture
def repo_root(real_dir, tmp_path):
    return make_real_repository(real_dir, tmp_path / "repo", wcs_for=(37, 90))


def calsrc(root, ccd):
    return (
        root
        / "rerun"
        / "cal"
        / "calibrated"
        / f"{TRACT:04d}"
        / "01000"
        / FILTER
        / f"CALSRC-{VISIT:07d}-{ccd:03d}.fits"
    )


def run(root, *extra, rerun="sf:cal"):
    return main(["catalog", str(root), "--rerun", rerun, *ID, *JOINTCAL, *extra])


def test_calibrates_every_ccd_it_can_and_reports_the_rest(repo_root, real_dir, capsys):
    assert run(repo_root) == 1  # ccd 49 has no jointcal_wcs
    out = capsys.readouterr().out
    assert "49" in out and "no jointcal_wcs" in out and "jointcal_wcs-0023900-049.fits" in out
    assert "3 data ids: 2 done, 0 skipped, 1 failed" in out
    assert not calsrc(repo_root, 49).exists()
    src = read_catalog(repo_root / "rerun/sf/01000/HSC-R/output/SRC-0023900-037.fits")
    cal = read_catalog(calsrc(repo_root, 37))
    # every input column is kept, the new ones are appended in afw's order
    new = [name for name, _, _ in calibrated_flux_columns(src)]
    assert list(cal.columns) == [c for c in src.columns if c != "footprint"] + new + ["footprint"]
    for col in src.columns:
        if col not in ("coord_ra", "coord_dec"):
            pd.testing.assert_series_equal(cal[col], src[col], check_names=False)
    assert cal.attrs["aliases"] == src.attrs["aliases"]
    assert cal.attrs["units"]["base_PsfFlux_flux"] == "nJy"
    assert cal.attrs["units"]["base_PsfFlux_magErr"] == "mag(AB)"
    # coordinates: the jointcal SkyWcs at slot_Centroid (base_SdssCentroid)
    wcs = read_skywcs(
        real_dir / "lsst/jointcal/tests/data/output/HSC-R/9615/jointcal_wcs-0023900-037.fits"
    )
    ra, dec = wcs.pixel_to_sky_rad(src["base_SdssCentroid_x"], src["base_SdssCentroid_y"])
    np.testing.assert_array_equal(cal["coord_ra"], ra)
    np.testing.assert_array_equal(cal["coord_dec"], dec)
    assert np.isnan(cal["coord_ra"][src["base_SdssCentroid_x"].isna()]).all()
    # fluxes: instFlux * c, errors with sigma_c/c in quadrature (hscPipe 8)
    inst, inst_err = src["base_PsfFlux_instFlux"], src["base_PsfFlux_instFluxErr"]
    np.testing.assert_allclose(cal["base_PsfFlux_flux"], inst * MEAN, rtol=1e-15)
    rel = np.hypot(inst_err / inst, ERR / MEAN)
    np.testing.assert_allclose(cal["base_PsfFlux_fluxErr"], np.abs(inst * MEAN) * rel, rtol=1e-14)
    with np.errstate(invalid="ignore", divide="ignore"):
        mag = 31.4 - 2.5 * np.log10(inst * MEAN)
    np.testing.assert_allclose(cal["base_PsfFlux_mag"], mag, rtol=1e-12)
    np.testing.assert_allclose(cal["base_PsfFlux_magErr"], 2.5 / np.log(10) * rel, rtol=1e-14)


def test_parquet_answers_duckdb_and_pandas_with_calsrc_numbers(repo_root):
    run(repo_root)
    dataset = repo_root / "rerun/cal/calibrated/parquet/src"
    rows = duckdb.sql(
        f"SELECT tract, filter, visit, ccd, pointing, id, ra, dec, coord_ra, base_PsfFlux_flux, "
        f"sky_source FROM read_parquet('{dataset}/**/*.parquet', hive_partitioning=true) "
        "WHERE ccd = 37 ORDER BY id"
    ).df()
    cal = read_catalog(calsrc(repo_root, 37)).sort_values("id")
    assert len(rows) == len(cal) == 771
    assert set(rows["tract"]) == {TRACT} and set(rows["filter"]) == {FILTER}
    np.testing.assert_array_equal(rows["base_PsfFlux_flux"], cal["base_PsfFlux_flux"])
    np.testing.assert_allclose(rows["ra"], np.degrees(cal["coord_ra"]))
    assert rows["sky_source"].sum() == 100
    frame = pd.read_parquet(dataset, filters=[("ccd", "=", 90), ("sky_source", "=", True)])
    assert len(frame) == 100 and set(frame["visit"]) == {VISIT}
    meta = __import__("pyarrow.parquet").parquet.read_schema(next(dataset.rglob("*.parquet")))
    assert meta.field("base_PsfFlux_mag").metadata[b"unit"] == b"mag(AB)"
    assert meta.field("dec").metadata[b"unit"] == b"deg"


def test_rerun_skips_finished_outputs_and_completes_the_rest(repo_root, real_dir, capsys):
    run(repo_root)
    before = calsrc(repo_root, 37).stat().st_mtime_ns
    wcs = real_dir / "lsst/jointcal/tests/data/output/HSC-R/9615/jointcal_wcs-0023900-049.fits"
    target = repo_root / "rerun/sf/jointcal-results/HSC-R/9615" / wcs.name
    target.write_bytes(wcs.read_bytes())
    capsys.readouterr()
    assert run(repo_root) == 0
    assert "3 data ids: 1 done, 2 skipped, 0 failed" in capsys.readouterr().out
    assert calsrc(repo_root, 37).stat().st_mtime_ns == before
    visit = (
        repo_root
        / "rerun/cal/calibrated/parquet/src/tract=9615/filter=HSC-R/visit-0023900.parquet"
    )
    assert len(pd.read_parquet(visit)) == 3 * 771  # rebuilt with all three CCDs
    table = pd.read_parquet(repo_root / f"rerun/cal/calibrated/{TRACT:04d}/calib-{FILTER}.parquet")
    assert table["ccd"].tolist() == sorted(table["ccd"]) and len(table) == 3  # rows kept
    assert table.set_index("ccd").loc[49, "wcs_ast"]  # the re-done CCD's new row
    assert run(repo_root, "--redo") == 0
    assert calsrc(repo_root, 37).stat().st_mtime_ns > before


def test_truncated_and_missing_inputs_fail_alone(repo_root, capsys):
    src90 = repo_root / "rerun/sf/01000/HSC-R/output/SRC-0023900-090.fits"
    src90.write_bytes(src90.read_bytes()[:100_000])
    (repo_root / "rerun/sf/01000/HSC-R/output/SRC-0023900-049.fits").unlink()
    assert run(repo_root) == 1
    out = capsys.readouterr().out
    assert "1 done, 0 skipped, 2 failed" in out
    lines = {line.split()[1]: line for line in out.splitlines()[1:3]}
    assert "SRC-0023900-090.fits" in lines["90"]
    assert "no src" in lines["49"] and "SRC-0023900-049.fits" in lines["49"]
    assert calsrc(repo_root, 37).exists() and not calsrc(repo_root, 90).exists()
    report = read_report(next((repo_root / "rerun/cal/calibrated/reports").glob("*.jsonl")))
    assert {o["dataid"]["ccd"]: o["status"] for o in report["outcomes"] if o["kind"] == "ccd"} == {
        37: "done",
        49: "failed",
        90: "failed",
    }


def test_doraise_stops_with_the_error(repo_root):
    with pytest.raises(Exception, match="calibration unavailable"):
        run(repo_root, "--doraise")


def test_flag_mode_writes_uncalibrated_with_a_flag(repo_root):
    assert run(repo_root, "-c", "onMissingCalibration=flag") == 0
    cal = read_catalog(calsrc(repo_root, 49))
    assert cal["daskcal_uncalibrated"].all()
    assert np.isnan(cal["base_PsfFlux_flux"]).all()
    assert not read_catalog(calsrc(repo_root, 37))["daskcal_uncalibrated"].any()


def test_command_line_errors_are_one_line(repo_root, capsys):
    assert run(repo_root, "-c", "doApplySkyCor=False") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("daskcal: error: unknown config key 'doApplySkyCor'")
    assert "\n" not in err
    assert main(["catalog", str(repo_root), "--rerun", "sf:cal", "--id", "visit=1..x"]) == 2
    assert "'1..x'" in capsys.readouterr().err
    assert main(["catalog", str(repo_root), "--rerun", "sf:cal", "--id", "visit=23900"]) == 2
    assert "tract is required" in capsys.readouterr().err
    assert main(["catalog", str(repo_root), "--rerun", "../x", *ID]) == 2
    capsys.readouterr()


def test_config_clobber_rules(repo_root, capsys):
    run(repo_root)
    capsys.readouterr()
    assert run(repo_root, "-c", "fluxErrorRule=afw29") == 2
    assert "--clobber-config" in capsys.readouterr().err
    assert run(repo_root, "-c", "fluxErrorRule=afw29", "--clobber-config") == 1
    cfg = json.loads((repo_root / "rerun/cal/config/calibrateCatalog.json").read_text())
    assert cfg["fluxErrorRule"] == "afw29"


def test_config_file_as_hscpipe_writes_it(repo_root, tmp_path):
    cfg = tmp_path / "cal.py"
    cfg.write_text("config.externalPhotoCalibName = 'jointcal'\nconfig.doApplySkyCorr = False\n")
    code = main(["catalog", str(repo_root), "--rerun", "sf:cal", *ID, "-C", str(cfg)])
    assert code == 1 and calsrc(repo_root, 37).exists()


def test_smp_cluster_gives_the_same_outputs(repo_root, tmp_path):
    run(repo_root)
    assert run(repo_root, "--batch-type=smp", "--cores=2", rerun="sf:smp") == 1
    a = read_catalog(calsrc(repo_root, 37))
    b = read_catalog(str(calsrc(repo_root, 37)).replace("/cal/", "/smp/"))
    pd.testing.assert_frame_equal(a, b, check_like=False)


def test_lazy_calibrated_catalogs_match_calsrc(repo_root):
    run(repo_root)
    repo = Repository(repo_root, rerun="sf")
    ddf = calibrated_catalogs(
        repo,
        [{"visit": VISIT, "ccd": 37, "tract": TRACT}],
        CalibrateConfig(externalPhotoCalibName="jointcal"),
    )
    assert ddf.npartitions == 1
    lazy = ddf.compute()
    cal = read_catalog(calsrc(repo_root, 37))
    np.testing.assert_array_equal(lazy["base_PsfFlux_mag"], cal["base_PsfFlux_mag"])
    assert set(lazy["ccd"]) == {37} and set(lazy["tract"]) == {TRACT}


@pytest.mark.parametrize("batch", ["slurm", "pbs"])
def test_batch_job_script(batch):
    pytest.importorskip("dask_jobqueue")
    cluster = make_jobqueue_cluster(
        ExecutionOptions(batch_type=batch, cores=4, nodes=2, time=60, job="calsrc"), n_ids=400
    )
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    directive = "#SBATCH" if batch == "slurm" else "#PBS"
    assert directive in script and "calsrc" in script
    assert "--nworkers 4" in script or "--nprocs 4" in script
    assert __import__("sys").executable in script
    assert "01:15:00" in script  # 1.5 x 60 s x ceil(400 / 8)


def test_a_killed_run_leaves_no_partial_output(real_dir, tmp_path):
    """SIGKILL in the middle of a run: every final CALSRC is complete; a re-run finishes."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    root = make_real_repository(real_dir, tmp_path / "repo")
    out = root / "rerun/sf/01000/HSC-R/output"
    jc = root / "rerun/sf/jointcal-results/HSC-R/9615"
    import sqlite3

    with sqlite3.connect(root / "registry.sqlite3") as db:  # 40 more CCDs of visit 23902
        for ccd in range(40):
            db.execute(
                "INSERT INTO raw (field, visit, ccd, pointing, filter) VALUES (?, ?, ?, ?, ?)",
                ("SSP_UDEEP", 23902, ccd, 1000, FILTER),
            )
            name = f"0023902-{ccd:03d}.fits"
            shutil.copy(out / "SRC-0023900-037.fits", out / f"SRC-{name}")
            shutil.copy(jc / "jointcal_wcs-0023900-037.fits", jc / f"jointcal_wcs-{name}")
            shutil.copy(
                jc / "jointcal_photoCalib-0023900-037.fits", jc / f"jointcal_photoCalib-{name}"
            )
    cmd = [
        sys.executable,
        "-m",
        "daskcal.cli",
        "catalog",
        str(root),
        "--rerun",
        "sf:cal",
        "--id",
        "visit=23902",
        f"tract={TRACT}",
        *JOINTCAL,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    calibrated = root / "rerun/cal/calibrated"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(calibrated.rglob("CALSRC-*.fits"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finals = list(calibrated.rglob("CALSRC-*.fits"))
    assert 3 <= len(finals) < 40, "the kill should land in the middle of the run"
    for path in finals:  # every file under a final name is complete
        assert len(read_catalog(path)) == 771
    assert main(cmd[3:]) == 0
    assert len(list(calibrated.rglob("CALSRC-*.fits"))) == 40


def test_lazy_calibrated_catalogs_take_masks_and_selections(repo_root):
    """Boolean masks keep each CCD's rows with its own CCD (partitions stay aligned)."""
    run(repo_root)
    repo = Repository(repo_root, rerun="sf")
    ids = [{"visit": VISIT, "ccd": ccd, "tract": TRACT} for ccd in (37, 90)]
    ddf = calibrated_catalogs(repo, ids, CalibrateConfig(externalPhotoCalibName="jointcal"))
    assert ddf.npartitions == 2
    whole = ddf.compute()
    kept = ddf[~ddf.sky_source][["ccd", "id", "base_PsfFlux_mag"]].compute()
    expected = whole[~whole.sky_source][["ccd", "id", "base_PsfFlux_mag"]]
    pd.testing.assert_frame_equal(kept, expected)
    sizes = ddf[ddf.base_PsfFlux_mag < 22].groupby("ccd").size().compute().sort_index()
    bright = whole[whole.base_PsfFlux_mag < 22].groupby("ccd").size().sort_index()
    pd.testing.assert_series_equal(sizes, bright, check_names=False)
