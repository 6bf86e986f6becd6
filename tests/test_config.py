"""Configuration parsing, provenance records and the run report."""

from __future__ import annotations

import json

import pytest

from daskcal.config import CalibrateConfig, ConfigError, parse_overrides, read_config_file
from daskcal.report import Outcome, RunReport, read_report
from daskcal.runs.cluster import ExecutionOptions, walltime
from daskcal.runs.provenance import ProvenanceError, check_and_record, package_versions


def test_defaults_are_hscpipe8():
    cfg = CalibrateConfig()
    assert cfg.doApplyExternalPhotoCalib and cfg.doApplyExternalSkyWcs and cfg.doApplySkyCorr
    assert not cfg.includePhotoCalibVar
    assert cfg.externalPhotoCalibName == "fgcm_tract"
    assert (cfg.sipOrder, cfg.sipSpacing) == (9, 20)


def test_overrides_as_the_tutorial_writes_them():
    cfg = parse_overrides(["externalPhotoCalibName=jointcal", "doApplySkyCorr=False"])
    assert cfg.externalPhotoCalibName == "jointcal"
    assert cfg.doApplySkyCorr is False
    assert parse_overrides(["sipOrder=5"]).sipOrder == 5


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("doApplySkyCor=False", "unknown config key 'doApplySkyCor'"),
        ("externalPhotoCalibName=meas_mosaic", "must be one of"),
        ("sipOrder=nine", "sipOrder='nine': expected int"),
        ("doApplySkyCorr=1", "expected bool"),
        ("novalue", "expected key=value"),
    ],
)
def test_bad_overrides_name_the_key(item, match):
    with pytest.raises(ConfigError, match=match):
        parse_overrides([item])


def test_config_file_is_parsed_not_executed(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text(
        "# hscPipe style\nconfig.doApplySkyCorr = False  # no sky\n"
        "config.externalPhotoCalibName = 'jointcal'\n"
    )
    cfg = read_config_file(path)
    assert (cfg.doApplySkyCorr, cfg.externalPhotoCalibName) == (False, "jointcal")
    evil = tmp_path / "evil.py"
    evil.write_text("import os\nconfig.sipOrder = __import__('os').getpid()\n")
    with pytest.raises(ConfigError, match=r"evil.py:1"):
        read_config_file(evil)
    evil.write_text("config.sipOrder = __import__('os').getpid()\n")
    with pytest.raises(ConfigError, match="cannot parse value"):
        read_config_file(evil)
    with pytest.raises(ConfigError, match="missing.py"):
        read_config_file(tmp_path / "missing.py")


def test_provenance_refuses_a_different_config(tmp_path):
    base = CalibrateConfig().to_dict()
    check_and_record(tmp_path, "calibrateCatalog", base)
    check_and_record(tmp_path, "calibrateCatalog", base)  # same: fine
    changed = CalibrateConfig(doApplySkyCorr=False).to_dict()
    with pytest.raises(ProvenanceError, match=r"--clobber-config.*doApplySkyCorr: True -> False"):
        check_and_record(tmp_path, "calibrateCatalog", changed)
    check_and_record(tmp_path, "calibrateExposure", changed)  # another task: its own record
    check_and_record(tmp_path, "calibrateCatalog", changed, clobber_config=True)
    saved = json.loads((tmp_path / "config" / "calibrateCatalog.json").read_text())
    assert saved["doApplySkyCorr"] is False


def test_provenance_refuses_other_versions(tmp_path):
    check_and_record(tmp_path, "calibrateCatalog", {})
    path = tmp_path / "config" / "packages.json"
    old = json.loads(path.read_text())
    assert old == package_versions()
    old["numpy"] = "0.0.1"
    path.write_text(json.dumps(old))
    with pytest.raises(ProvenanceError, match=r"--clobber-versions.*numpy: .0.0.1. -> "):
        check_and_record(tmp_path, "calibrateCatalog", {})
    check_and_record(tmp_path, "calibrateCatalog", {}, no_versions=True)
    check_and_record(tmp_path, "calibrateCatalog", {}, clobber_versions=True)
    assert json.loads(path.read_text()) == package_versions()


def test_report_table_and_exit_code(tmp_path):
    report = RunReport("calibrateCatalog")
    report.add(Outcome({"visit": 1, "ccd": 2}, "done", output="a.fits"))
    assert report.exit_code == 0
    report.add(Outcome({"visit": 1, "ccd": 3}, "failed", reason="missing jointcal_wcs"))
    assert report.exit_code == 1
    lines = report.table().splitlines()
    assert lines[1].split()[:3] == ["1", "3", "failed"]
    assert "missing jointcal_wcs" in lines[1]
    assert report.summary().endswith("1 done, 0 skipped, 1 failed")
    report.save(tmp_path / "r.jsonl")
    saved = read_report(tmp_path / "r.jsonl")
    assert saved["outcomes"][1]["status"] == "failed" and saved["complete"]
    with pytest.raises(ValueError):
        Outcome({}, "maybe")


def test_execution_options():
    assert walltime(60, 10, 10) == "00:10:00"
    assert walltime(3600, 4, 2) == "03:00:00"
    with pytest.raises(ValueError, match="--batch-type 'lsf'"):
        ExecutionOptions(batch_type="lsf")
