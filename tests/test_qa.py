"""The QA report (``daskcal qa``): a demo run with one deliberately broken CCD, seen in a browser.

The broken CCD (visit 1232, CCD 43) has its FGCM field scaled by 1.1 (zero point -103.5
mmag) and its jointcal WCS moved by 1 arcsec (0.6" East, 0.8" North); the skyCorr of
visit 1236 CCD 60 is removed, so that its exposure fails and the run summary has a reason
to show. Only the HSC-G visits (1228, 1232, 1236) are calibrated.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from conftest import copy_repository

from daskcal.calib.ast import AST_LOCK, ast
from daskcal.calib.boundedfield import ChebyshevBoundedField, ProductBoundedField
from daskcal.calib.photocalib import PhotoCalib, read_photocalib, write_photocalib
from daskcal.calib.skywcs import SkyWcs, read_skywcs
from daskcal.cli import main
from daskcal.io.archive import ArchiveWriter
from daskcal.qa.ccd import cell_grid, exposure_info
from daskcal.qa.maps import FIGURE_COLOUR
from daskcal.qa.options import QAOptions
from daskcal.qa.outliers import find_outliers
from daskcal.qa.photometry import mean_zeropoint
from daskcal.qa.repeat import repeatability
from daskcal.qa.summary import run_summary
from daskcal.repo import Repository
from daskcal.report import Outcome, RunReport

BROKEN = {"visit": 1232, "ccd": 43, "tract": 0, "filter": "HSC-G", "pointing": 816}
FAILED = {"visit": 1236, "ccd": 60, "tract": 0, "filter": "HSC-G", "pointing": 816}
SCALE = 1.1
SHIFT_MAS = (600.0, 800.0)  # East, North: 1 arcsec
INJECTED_MMAG = -2500.0 * math.log10(SCALE)  # the zero point of one count drops by 103.5 mmag
IDS = ["--id", "field=NGC604", "tract=0", "filter=HSC-G"]


def scaled_photocalib(pc: PhotoCalib, factor: float) -> PhotoCalib:
    """``pc`` with its mean and its field (the last Chebyshev factor) times ``factor``."""
    *first, last = pc.field.factors
    field = ProductBoundedField(
        (*first, ChebyshevBoundedField(last.bbox, last.coefficients * factor))
    )
    return PhotoCalib(pc.mean * factor, pc.err, False, field)


def shifted_skywcs(wcs: SkyWcs, east_mas: float, north_mas: float) -> SkyWcs:
    """``wcs`` with every pixel moved on the sky by (East, North) milliarcseconds."""
    _, dec = wcs.pixel_to_sky(0.0, 0.0)
    rad = math.radians(1.0 / 3.6e6)
    with AST_LOCK:
        Ast = ast()
        frameset = wcs.frameset.copy()
        move = Ast.ShiftMap([east_mas * rad / math.cos(math.radians(dec)), north_mas * rad])
        frameset.remapframe(Ast.CURRENT, move)
        return SkyWcs.from_frameset(frameset)


def write_skywcs(path: Path, wcs: SkyWcs) -> None:
    """A jointcal_wcs file: an empty primary HDU, then the archive holding the SkyWcs."""
    writer = ArchiveWriter()
    wcs.add_to_archive(writer)
    fits.HDUList([fits.PrimaryHDU(), *writer.hdus()]).writeto(path, overwrite=True)


@pytest.fixture(scope="module")
def run(demo_repository, tmp_path_factory):
    """Demo repository broken as the module docstring says, calibrated, then QA'd."""
    pristine = demo_repository(visits=5, ccds=(42, 43, 44, 58, 59, 60), seed=5)
    root = copy_repository(pristine, tmp_path_factory.mktemp("qa") / "repo")
    inputs = Repository(root, rerun="demo")
    photo, wcs = (inputs.find(d, BROKEN) for d in ("fgcm_tract_photoCalib", "jointcal_wcs"))
    original = {"photocalib": read_photocalib(photo), "wcs": read_skywcs(wcs)}
    write_photocalib(photo, scaled_photocalib(original["photocalib"], SCALE), overwrite=True)
    write_skywcs(wcs, shifted_skywcs(original["wcs"], *SHIFT_MAS))
    inputs.find("skyCorr", FAILED).unlink()
    common = ["--rerun", "demo:cal", *IDS, "--no-versions"]
    assert main(["exposure", str(root), *common]) == 1  # the CCD without skyCorr
    assert main(["catalog", str(root), *common]) == 0
    assert main(["qa", str(root), "--rerun", "cal"]) == 0
    repo = Repository(root, rerun="cal")
    qa = repo.output_dir / "calibrated" / "qa"
    return {"root": root, "repo": repo, "qa": qa, "original": original}


def ccd_rows(run) -> pd.DataFrame:
    return pd.read_parquet(run["qa"] / "ccds.parquet").set_index(["visit", "ccd"])


def test_the_broken_ccd_is_the_only_outlier_of_both_maps_with_its_size(run):
    outliers = pd.read_csv(run["qa"] / "outliers.csv")
    assert set(outliers["level"]) == {"ccd"}  # 3 visits: too few to flag a visit
    for category in ("photometric", "astrometric"):
        mine = outliers[outliers["category"] == category]
        assert set(zip(mine["visit"], mine["ccd"], strict=True)) == {(1232, 43)}, mine
    found = outliers.set_index("metric")
    for metric in ("phot_field", "phot_calexp", "phot_repeat"):
        assert found.loc[metric, "deviation"] == pytest.approx(INJECTED_MMAG, rel=0.1)
    assert found.loc["astro_repeat", "deviation"] == pytest.approx(1000.0, rel=0.1)
    broken = ccd_rows(run).loc[(1232, 43)]
    assert broken["astro_east_mas"] == pytest.approx(SHIFT_MAS[0], rel=0.1)
    assert broken["astro_north_mas"] == pytest.approx(SHIFT_MAS[1], rel=0.1)
    # the page lists it, linked to its visit page
    index = (run["qa"] / "index.html").read_text()
    rows = re.findall(
        r'class="outlier" data-metric="(\w+)" data-visit="(\d+)" data-ccd="(-?\d+)"', index
    )
    assert {(v, c) for _, v, c in rows} == {("1232", "43")}
    assert {m for m, _, _ in rows} == set(outliers["metric"])
    assert 'href="visit-0001232-tract-0000.html#ccd-043"' in index


def test_the_maps_show_what_the_calibration_changed(run):
    """The map values carry the injected changes, computed independently of the run."""
    repo, rows = run["repo"], ccd_rows(run)
    broken = rows.loc[(1232, 43)]
    calexp = repo.find("calexp", BROKEN)
    x, y = cell_grid(exposure_info(calexp)["bbox"], QAOptions().grid_cells)
    own = read_photocalib(calexp)
    before = (
        mean_zeropoint(run["original"]["photocalib"], x, y) - mean_zeropoint(own, x, y)
    ) * 1e3
    assert broken["phot_calexp_mmag"] - before == pytest.approx(INJECTED_MMAG, abs=0.01)
    old, new = read_skywcs(calexp), run["original"]["wcs"]
    ra0, dec0 = old.pixel_to_sky(x, y)
    ra1, dec1 = new.pixel_to_sky(x, y)
    east = np.mean((ra1 - ra0) * np.cos(np.radians(dec1))) * 3.6e6
    north = np.mean(dec1 - dec0) * 3.6e6
    assert broken["shift_east_mas"] - east == pytest.approx(SHIFT_MAS[0], abs=1.0)
    assert broken["shift_north_mas"] - north == pytest.approx(SHIFT_MAS[1], abs=1.0)
    calibrated = rows.drop(index=[(1236, 60)])
    np.testing.assert_allclose(calibrated["sip_error_mas"], calibrated["sip_max_error_mas"])
    assert (calibrated["sip_error_mas"] < 0.1).all()
    assert (calibrated["sky_range"] > 0).all() and (calibrated["n_sources"] > 20).all()
    assert (rows["psf_ap_mmag"].abs() < 30).all()  # the aperture correction holds
    # the CCD whose exposure failed: measured from its inputs and CALSRC, without sky
    failed = rows.loc[(1236, 60)]
    assert math.isnan(failed["sky_mean"]) and failed["n_sources"] > 0
    assert math.isfinite(failed["phot_calexp_mmag"]) and math.isfinite(failed["shift_mas"])


def test_the_run_summary_lists_failures_config_and_time(run):
    index = (run["qa"] / "index.html").read_text()
    assert "visit=1236 ccd=60" in index and "skyCorr" in index  # the failure and its reason
    assert "externalPhotoCalibName" in index and "fgcm_tract" in index
    assert "Not recorded (the runs used <code>--no-versions</code>)" in index
    summary = run_summary(run["repo"].output_dir)
    assert summary.counts["calibrateExposure"] == {"done": 17, "skipped": 0, "failed": 1,
                                                  "flagged": 0}  # fmt: skip
    assert summary.timing["calibrateExposure"]["n"] == 17
    pages = sorted(p.name for p in run["qa"].glob("visit-*.html"))
    assert pages == [f"visit-{v:07d}-tract-0000.html" for v in (1228, 1232, 1236)]
    page = (run["qa"] / pages[1]).read_text()
    assert page.count("<img ") == 10 and page.count('<area shape="poly"') == 60
    assert 'title="CCD 43: ' in page


def test_run_summary_counts_the_latest_outcome_of_each_ccd(tmp_path):
    first, second = RunReport("calibrateExposure"), RunReport("calibrateExposure")
    dataid = {"visit": 1, "ccd": 2, "tract": 0, "filter": "HSC-G"}
    first.add(Outcome(dataid, "failed", reason="CORR-0000001-002.fits: truncated"))
    second.add(Outcome(dataid, "done", extra={"seconds": 2.5}))
    second.add(Outcome({**dataid, "ccd": 3}, "done", extra={"uncalibrated": "no jointcal_wcs"}))
    reports = tmp_path / "calibrated" / "reports"
    reports.mkdir(parents=True)
    for name, report in (("a", first), ("b", second)):
        report.open(reports / f"{name}.jsonl")
        report.close()
    summary = run_summary(tmp_path)
    assert summary.counts["calibrateExposure"] == {"done": 2, "skipped": 0, "failed": 0,
                                                  "flagged": 1}  # fmt: skip
    assert not summary.failed and summary.flagged[0]["reason"] == "uncalibrated: no jointcal_wcs"
    assert summary.seconds == {"calibrateExposure": [2.5]}
    assert len(run_summary(tmp_path, [dataid]).flagged) == 0  # --id keeps CCD 2 only


def test_repeatability_recovers_an_offset_ccd_among_noisy_visits():
    rng = np.random.default_rng(3)
    n_star, visits = 150, (10, 12, 14, 16)
    ra, dec = 150 + rng.uniform(0, 0.03, n_star), 2 + rng.uniform(0, 0.03, n_star)
    mag = rng.uniform(17, 21, n_star)
    rows = []
    for k, visit in enumerate(visits):
        ccd = (ra > 150.015).astype(int)  # two CCDs per visit
        err = 0.002 * 10 ** (0.2 * (mag - 17))
        moved = (visit == 12) & (ccd == 1)
        d_ra = np.where(moved, 0.3 / 3600 / np.cos(np.radians(dec)), 0) + k * 1e-8
        rows.append(pd.DataFrame({
            "visit": visit, "ccd": ccd, "filter": "HSC-I", "ra": ra + d_ra,
            "dec": dec + rng.normal(0, 2e-6, n_star), "mag_err": err,
            "mag": mag + np.where(moved, -0.05, 0) + rng.normal(0, err),
        }))  # fmt: skip
    # a second filter seen in two visits only: positions, but no magnitude offsets
    rows += [frame.assign(filter="HSC-G", visit=frame["visit"] + 100)
             for frame in rows[:2]]  # fmt: skip
    offsets = repeatability(pd.concat(rows, ignore_index=True), QAOptions())
    assert offsets.loc[[(110, 0), (112, 1)], "phot_repeat_mmag"].isna().all()
    assert offsets.loc[(112, 1), "astro_east_mas"] == pytest.approx(300, abs=5)
    offsets = offsets.drop(index=[110, 112], level="visit")
    three = repeatability(pd.concat([rows[0], rows[1], rows[4]]), QAOptions())  # 2 per filter
    assert three["phot_repeat_mmag"].isna().all() and three["astro_east_mas"].notna().all()
    assert offsets.loc[(12, 1), "phot_repeat_mmag"] == pytest.approx(-50, abs=2)
    assert offsets.loc[(12, 1), "astro_east_mas"] == pytest.approx(300, abs=5)
    others = offsets.drop(index=[(12, 1)])
    assert others["phot_repeat_mmag"].abs().max() < 5 and others["astro_repeat_mas"].max() < 5


def test_outliers_use_the_mad_of_their_group_its_floor_and_min_count():
    n = 8
    ccds = pd.DataFrame({
        "tract": 0, "filter": ["g"] * n + ["i"] * n, "visit": 1, "ccd": np.arange(2 * n),
        "phot_field_mmag": [0, 1, -1, 2, -2, 1, 0, 40, *([100] * n)],
        "shift_east_mas": [0, 3, -3, 0, 0, 2, -2, 0, *([0] * n)],
        "shift_north_mas": [0, 0, 0, 3, -3, 2, -2, 150, *([0] * n)],
    })  # fmt: skip
    visits = pd.DataFrame({"tract": 0, "filter": "g", "visit": [1, 2, 3],
                           "zp_per_second_mmag": [0.0, 0.0, 900.0]})  # fmt: skip
    found = find_outliers(ccds, visits, QAOptions())
    # MAD 1 mmag floored at 5: 40 mmag is 7.9 MAD; filter i is its own group (no outlier);
    # the shift (0, 150): MAD 0 floored at 10 mas, 15 MAD; 3 visits are fewer than min_count
    assert sorted(zip(found["metric"], found["ccd"], strict=True)) == [
        ("astro_shift", 7), ("phot_field", 7)]  # fmt: skip
    assert found.set_index("metric").loc["phot_field", "deviation"] == pytest.approx(40 - 0.5)
    assert find_outliers(ccds, visits, QAOptions(n_mad=10.0))["metric"].tolist() == ["astro_shift"]


def test_qa_command_refuses_what_it_cannot_report(run, capsys):
    root = str(run["root"])
    assert main(["qa", root, "--rerun", "cal", "--id", "visit=999", "tract=0"]) == 2
    assert "no CALEXP or CALSRC" in capsys.readouterr().err
    assert main(["qa", root, "--rerun", "cal", "--n-mad", "0"]) == 2
    assert main(["qa", root, "--rerun", "nothing"]) == 2


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no headless Chromium (Debian: apt-get install chromium; .ci/run installs it)")


def screenshot(page: Path, out: Path, size: tuple[int, int]) -> str:
    """Render ``page`` headless; returns Chromium's log (stderr), failing on console output."""
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--force-device-scale-factor=1", "--enable-logging=stderr", "--v=0",
        f"--window-size={size[0]},{size[1]}", f"--screenshot={out}", page.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and out.is_file(), done.stderr[-2000:]
    console = [
        line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line
    ]
    assert not console, console  # the pages have no script: any console message is an error
    return done.stderr


def panels(image: np.ndarray, width: int, height: int) -> list[tuple[int, int]]:
    """Top-left corners (row, column) of the whole figures on a screenshot, in reading
    order: connected regions of the figures' background colour of the figures' size."""
    from scipy import ndimage

    colour = np.array([int(FIGURE_COLOUR[i : i + 2], 16) for i in (1, 3, 5)])
    labels, _ = ndimage.label((image[..., :3] == colour).all(axis=2))
    boxes = [(s[0].start, s[1].start) for s in ndimage.find_objects(labels)
             if (s[0].stop - s[0].start, s[1].stop - s[1].start) == (height, width)]  # fmt: skip
    return sorted(boxes)


def test_the_report_opens_in_a_browser_with_its_maps_drawn(run, tmp_path):
    from matplotlib.image import imread
    from matplotlib.path import Path as Polygon

    screenshot(run["qa"] / "index.html", tmp_path / "index.png", (1400, 1800))
    page = run["qa"] / "visit-0001232-tract-0000.html"
    shot = tmp_path / "visit.png"
    screenshot(page, shot, (1600, 1900))
    image = np.rint(imread(shot) * 255).astype(int)
    html = page.read_text()
    found = re.findall(
        r'<img src="data:image/png;base64,[^"]+" width="(\d+)" height="(\d+)"', html
    )
    sizes = {(int(w), int(h)) for w, h in found}
    assert len(sizes) == 1
    ((width, height),) = sizes
    maps = re.findall(r'<map name="m-([\w-]+)">(.*?)</map>', html, re.S)
    corners = panels(image, width, height)
    assert len(corners) >= 6  # the photometric and astrometric maps at least
    rows, cols = np.mgrid[0:height, 0:width]
    pixels = np.column_stack([cols.ravel() + 0.5, rows.ravel() + 0.5])
    for (top, left), (key, areas) in zip(corners, maps, strict=False):
        panel = image[top : top + height, left : left + width, :3].reshape(-1, 3)
        ccds = re.findall(r'coords="([\d,]+)" href="#ccd-(\d+)"', areas)
        assert len(ccds) == 6, key
        for coords, ccd in ccds:
            polygon = Polygon(np.array(coords.split(","), float).reshape(-1, 2))
            inside = polygon.contains_points(pixels)
            white = (panel[inside] >= 250).all(axis=1)
            assert inside.sum() > 1000 and white.mean() < 0.2, (key, ccd, white.mean())
