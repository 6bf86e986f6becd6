"""``daskcal info`` on a Gen2 repository built in tmp_path from real LSST-written files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import real_path
from test_repo import make_root, write_registry

from daskcal.cli import COMMANDS, main

SRC = "lsst/faro/tests/data/src_HSC_i_HSC-I_903986_0_31_HSC_runs_ci_hsc_20210407T021858Z.fits"
CALEXP = "lsst/obs_base/tests/data/calexp.fits"
JOINTCAL = "lsst/jointcal/tests/data/output/HSC-R/9615"
MOSAIC = "lsst/meas_mosaic/tests/data/8766"
R_VISITS, R_CCDS = (23900, 23924, 28976), (37, 49, 90, 103)


def _row(field, visit, ccd, pointing, filt):
    return (field, visit, ccd, pointing, filt, "2015-01-20", "2015-01-20T10:00:00", 150.0)


@pytest.fixture
def real_repo(tmp_path, real_dir) -> Path:
    """ROOT (registry) + rerun ``test`` holding real files under their Gen2 names.

    HSC-R: the 12 real jointcal_wcs of tract 9615, plus ccd 50 of visit 23900 without one.
    HSC-I: the real src as SRC-0903986-031, the real obs_base calexp as CORR-0904010-042,
    and the meas_mosaic jointcal_photoCalib of visit 11506 (ccds 49, 50) as tract 8766.
    """
    root = make_root(tmp_path / "HSC")
    rows = [_row("SSP_WIDE", v, c, 1000, "HSC-R") for v in R_VISITS for c in R_CCDS]
    rows += [_row("SSP_WIDE", 23900, 50, 1000, "HSC-R")]
    rows += [_row("COSMOS", v, c, 1116, "HSC-I") for v, c in ((903986, 31), (904010, 42))]
    rows += [_row("COSMOS", 11506, c, 1117, "HSC-I") for c in (49, 50)]
    write_registry(root / "registry.sqlite3", rows)
    rerun = root / "rerun" / "test"
    links = {
        "01116/HSC-I/output/SRC-0903986-031.fits": real_dir / SRC,
        "01116/HSC-I/corr/CORR-0904010-042.fits": real_dir / CALEXP,
    }
    for real in sorted((real_dir / JOINTCAL).glob("jointcal_wcs-*.fits")):
        links[f"jointcal-results/HSC-R/9615/{real.name}"] = real
    for ccd in ("049", "050"):
        name = f"jointcal_photoCalib-0011506-{ccd}.fits"
        links[f"jointcal-results/HSC-I/8766/{name}"] = real_path(f"{MOSAIC}/{name}")
    for relative, real in links.items():
        (rerun / relative).parent.mkdir(parents=True, exist_ok=True)
        (rerun / relative).symlink_to(real)
    return root


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def table(out: str) -> dict[tuple[str, str], tuple[int, int, str]]:
    """(dataset, tract) -> (found, missing, missing list) from the printed table."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("dataset"))
    rows = {}
    for line in lines[start + 1 :]:
        cells = [c.strip() for c in line.split("  ") if c.strip()]
        dataset, tract, found, missing, *rest = cells
        rows[dataset, tract] = (int(found), int(missing), rest[0] if rest else "")
    return rows


def test_info_counts_real_jointcal_wcs_in_the_given_tract(capsys, real_repo):
    code, out, err = run(capsys, "info", real_repo, "--rerun", "test", "--id", "filter=HSC-R",
                         "tract=9615")  # fmt: skip
    assert code == 0 and err == ""
    assert "data ids    13 (3 visits, 5 ccds; filters HSC-R)" in out
    rows = table(out)
    assert rows["jointcal_wcs", "9615"] == (12, 1, "23900/50")
    first5 = "23900/37 23900/49 23900/50 23900/90 23900/103 ..."
    assert rows["jointcal_photoCalib", "9615"] == (0, 13, first5)
    for key in [("calexp", "-"), ("fgcm_tract_photoCalib", "9615"), ("calibrated_exp", "9615")]:
        assert rows[key][:2] == (0, 13)


def test_info_everything_infers_tracts_from_disk(capsys, real_repo):
    code, out, _ = run(capsys, "info", real_repo, "--rerun", "test", "--show-missing", "2")
    assert code == 0
    assert "data ids    17 (6 visits, 7 ccds; filters HSC-I HSC-R)" in out
    assert f"registry    {real_repo / 'registry.sqlite3'}" in out
    rows = table(out)
    assert rows["src", "-"] == (1, 16, "11506/49 11506/50 ...")
    assert rows["calexp", "-"] == (1, 16, "11506/49 11506/50 ...")
    assert rows["jointcal_wcs", "on disk: 9615"] == (12, 1, "23900/50")
    assert rows["jointcal_wcs", "on disk: 8766"] == (0, 4, "11506/49 11506/50 ...")
    assert rows["jointcal_photoCalib", "on disk: 8766"] == (2, 2, "903986/31 904010/42")
    assert rows["fgcm_photoCalib", "-"][:2] == (0, 17)


def test_info_without_tracts_on_disk_says_give_tract(capsys, tmp_path, real_dir):
    root = make_root(tmp_path / "HSC")  # no registry: ids come from the files
    calexp = root / "01116/HSC-I/corr/CORR-0904010-042.fits"
    calexp.parent.mkdir(parents=True)
    calexp.symlink_to(real_dir / CALEXP)
    code, out, _ = run(capsys, "info", root)
    assert code == 0 and "registry    none" in out
    rows = table(out)
    assert rows["calexp", "-"] == (1, 0, "")
    assert rows["jointcal_wcs", "n/a (give tract=)"] == (0, 1, "904010/42")


def test_info_reports_ids_without_data(capsys, real_repo):
    code, out, _ = run(capsys, "info", real_repo, "--rerun", "test", "--id", "visit=23900",
                       "ccd=37^38", "--id", "visit=1")  # fmt: skip
    assert code == 0
    assert "no data     2 data ids: visit=23900 ccd=38; visit=1" in out
    assert table(out)["calexp", "-"] == (0, 1, "23900/37")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--id", "visit=5..2"], "'visit=5..2': empty range"),
        (["--id", "visit=1", "colour=red"], "unknown key 'colour'"),
        (["--id", "visit=1"], "no data in"),
        (["--rerun", "../elsewhere"], "rerun '../elsewhere'"),
        (["--rerun", "nope:out"], "input rerun 'nope' does not exist"),
    ],
)
def test_errors_are_one_line_and_exit_2(capsys, real_repo, argv, message):
    code, out, err = run(capsys, "info", real_repo, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("daskcal: error: ") and message in err


def test_missing_repository_and_usage_errors(capsys, tmp_path):
    code, _, err = run(capsys, "info", tmp_path / "nowhere")
    assert (
        code == 2 and err == f"daskcal: error: repository {tmp_path / 'nowhere'} does not exist\n"
    )
    code, _, err = run(capsys, "info", tmp_path)
    assert code == 2 and "no _mapper" in err and err.count("\n") == 1
    code, _, err = run(capsys, "info")
    assert code == 2 and err.startswith("daskcal: error: ") and err.count("\n") == 1
    assert run(capsys, "frobnicate")[0] == 2
    assert run(capsys, "info", "--help")[0] == 0


def test_commands_are_registered_once():
    assert [c.name for c in COMMANDS].count("info") == 1


def test_console_entry_point(real_repo):
    done = subprocess.run(
        [sys.executable, "-m", "daskcal.cli", "info", str(real_repo), "--rerun", "test",
         "--id", "visit=903986", "tract=9615"],
        capture_output=True, text=True, check=False, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert table(done.stdout)["src", "-"] == (1, 0, "")
    bad = subprocess.run(
        [sys.executable, "-m", "daskcal.cli", "info", str(real_repo), "--id", "visit"],
        capture_output=True, text=True, check=False, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == "daskcal: error: --id 'visit': expected key=value"


def test_show_missing_must_be_a_count(capsys, real_repo):
    code, _, err = run(capsys, "info", real_repo, "--show-missing", "-1")
    assert code == 2 and "--show-missing" in err and err.count("\n") == 1
    code, out, _ = run(capsys, "info", real_repo, "--rerun", "test", "--show-missing", "0")
    assert code == 0 and table(out)["skyCorr", "-"] == (0, 17, "...")
