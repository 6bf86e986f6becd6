"""``--qa`` on the calibrate commands: the run, then its QA report."""

from __future__ import annotations

from conftest import copy_repository

from daskcal.cli import main


def test_qa_after_a_calibrate_run(demo_repository, tmp_path, capsys):
    root = copy_repository(demo_repository(visits=1, ccds=(0, 50), seed=9), tmp_path / "repo")
    args = ["--rerun", "demo:cal", "--id", "tract=0", "--no-versions", "--qa"]
    assert main(["catalog", str(root), *args]) == 0
    out = capsys.readouterr().out
    index = root / "rerun/cal/calibrated/qa/index.html"
    assert f"QA report: {index}" in out and index.is_file()
    assert main(["catalog", str(root), *args, "--dry-run"]) == 0  # a dry run writes no QA
    assert "QA report" not in capsys.readouterr().out
