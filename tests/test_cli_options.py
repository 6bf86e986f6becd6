"""Options of the calibrate commands: ``--qa`` (the run, then its QA report), ``--codec``."""

from __future__ import annotations

import pytest
from astropy.io import fits
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


@pytest.mark.parametrize("codec, tile_rows", [("daskcal", 32), ("afw", 1)])
def test_the_codec_option_chooses_the_calexp_tiles(demo_repository, tmp_path, codec, tile_rows):
    root = copy_repository(demo_repository(visits=1, ccds=(0, 50), seed=9), tmp_path / "repo")
    args = ["--rerun", "demo:cal", "--id", "tract=0", "ccd=0", "--no-versions"]
    assert main(["exposure", str(root), *args, "--codec", codec]) == 0
    (calexp,) = (root / "rerun/cal/calibrated").glob("0000/*/*/CALEXP-*.fits")
    with fits.open(calexp, disable_image_compression=True) as hdul:
        assert [hdul[i].header["ZTILE2"] for i in (1, 3)] == [tile_rows, tile_rows]
