"""calibrateExposure end to end: a generated repository with truth, and the real calexp."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import struct

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from conftest import copy_repository

from daskcal.calexp import config_digest
from daskcal.calib.background import BackgroundEntry
from daskcal.calib.background_file import read_background, write_background
from daskcal.calib.photocalib import read_photocalib
from daskcal.calib.sip import sip_max_error
from daskcal.calib.skywcs import read_skywcs
from daskcal.cli import calibrate_exposure_main, main
from daskcal.config import CalibrateConfig
from daskcal.demo import truth_image
from daskcal.io.archive import read_archive
from daskcal.io.exposure import exposure_archive, read_exposure, write_exposure
from daskcal.repo import Repository
from daskcal.report import read_report

TUTORIAL_ID = ["--id", "field=NGC604", "tract=0", "ccd=0..8^10..103"]
UNUSABLE = ("BAD", "SAT", "NO_DATA")
ID_CARDS = {"PHOTOCALIB_ID", "ARCHIVE_ID_PHOTOCALIB", "SKYWCS_ID", "ARCHIVE_ID_SKYWCS"}
WCS_KEY = re.compile(r"^(WCSAXES|CTYPE\d|CRPIX\d|CRVAL\d|CUNIT\d|CD\d_\d|RADESYS|(A|B|AP|BP)_)")


@pytest.fixture(scope="module")
def demo(demo_repository, tmp_path_factory):
    """A copy of the shared demo repository: the tutorial run writes reruns into it."""
    return copy_repository(demo_repository(visits=2, ccds=(0, 50), seed=5),
                           tmp_path_factory.mktemp("exposure") / "repo")  # fmt: skip


@pytest.fixture(scope="module")
def tutorial(demo):
    """The first command of docs/hscpipe.md, 'Commands', as written (in process, not 8 cores)."""
    argv = [str(demo), "--calib", str(demo / "CALIB"), "--rerun", "demo:cal", *TUTORIAL_ID]
    assert calibrate_exposure_main([*argv, "--clobber-config", "--clobber-versions"]) == 0
    return Repository(demo, rerun="demo:cal")


@pytest.fixture
def copy(demo, tmp_path):
    """A private copy of the demo repository, to break inputs in."""
    return copy_repository(demo, tmp_path / "repo")


def ids_of(repo):
    return repo.expand([{"field": "NGC604", "tract": 0}])


def planes(path):
    with fits.open(path) as hdul:
        return tuple(np.asarray(hdul[i].data) for i in (1, 2, 3)) + (hdul[0].header.copy(),)


def header_wcs(header):
    return WCS(fits.Header([c for c in header.cards if WCS_KEY.match(c.keyword)]))


def same_column(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype == object or b.dtype == object:  # variable-length arrays, cell by cell
        return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    return np.array_equal(a, b)


def unusable(mask, header):
    bits = sum(1 << int(header[f"MP_{p}"]) for p in UNUSABLE)
    return (mask & bits) != 0


def exposure(root, *args, rerun="demo:out"):
    return main(["exposure", str(root), "--rerun", rerun, *TUTORIAL_ID, "--no-versions", *args])


def test_calibrated_images_recover_the_truth_within_the_noise(tutorial):
    for dataid in ids_of(tutorial):
        image, mask, var, _ = planes(tutorial.output_path("calibrated_exp", dataid))
        with fits.open(tutorial.find("calexp", dataid)) as calexp:
            good = np.isfinite(var) & ~unusable(mask, calexp[2].header)
        truth = truth_image(tutorial.root, dataid["visit"], dataid["ccd"])
        z = ((image - truth) / np.sqrt(var))[good]
        assert good.mean() > 0.6
        assert abs(z.mean()) < 0.05 and 0.95 < z.std() < 1.05, (dataid, z.mean(), z.std())


def test_variance_scales_as_c2_over_cbar2_and_the_mask_is_unchanged(tutorial):
    zeros = 0
    for dataid in ids_of(tutorial):
        p, mask0, v, _ = planes(tutorial.find("calexp", dataid))
        _, mask, var, _ = planes(tutorial.output_path("calibrated_exp", dataid))
        assert mask.dtype == mask0.dtype and np.array_equal(mask, mask0)
        pc = read_photocalib(tutorial.find("fgcm_tract_photoCalib", dataid))
        c = pc.evaluate_grid(0, p.shape[1], 0, p.shape[0])
        np.testing.assert_array_equal(np.isnan(var), p == 0)  # hscPipe 8's quirk
        ok = p != 0
        np.testing.assert_allclose(var[ok], (v * c**2 / pc.mean**2)[ok], rtol=2e-7)
        zeros += int((p == 0).sum())
    assert zeros > 1000  # the vignetted CCD 0 has NO_DATA pixels that are exactly 0


def test_archive_keeps_every_object_and_points_at_the_new_calibrations(tutorial):
    for dataid in ids_of(tutorial):
        calexp, out = (
            tutorial.find("calexp", dataid),
            tutorial.output_path("calibrated_exp", dataid),
        )
        with fits.open(calexp) as old_hdul, fits.open(out) as new_hdul:
            old, new = read_archive(old_hdul), read_archive(new_hdul)
            assert set(old.ids) < set(new.ids)
            for obj_id in old.ids:
                a, b = old[obj_id], new[obj_id]
                assert a.name == b.name and len(a.catalogs) == len(b.catalogs)
                for ca, cb in zip(a.catalogs, b.catalogs, strict=True):
                    assert ca.columns.keys() == cb.columns.keys()
                    assert all(same_column(ca[n], cb[n]) for n in ca.columns)
            header = new_hdul[0].header
            assert new.class_name(header["PHOTOCALIB_ID"]) == "PhotoCalib"
            assert header["PHOTOCALIB_ID"] == header["ARCHIVE_ID_PHOTOCALIB"] not in old.ids
            assert header["SKYWCS_ID"] == header["ARCHIVE_ID_SKYWCS"] not in old.ids
        truth = read_photocalib(tutorial.find("fgcm_tract_photoCalib", dataid))
        new_pc = read_photocalib(out)
        assert new_pc.is_constant and (new_pc.mean, new_pc.err) == (truth.mean, truth.err)
        assert read_skywcs(out) == read_skywcs(tutorial.find("jointcal_wcs", dataid))
        assert read_photocalib(calexp).mean != truth.mean  # the calexp's own is still there


def test_headers_keep_every_card_and_carry_a_tan_sip_within_a_mas(tutorial):
    for dataid in ids_of(tutorial):
        calexp, out = (
            tutorial.find("calexp", dataid),
            tutorial.output_path("calibrated_exp", dataid),
        )
        with fits.open(calexp) as old, fits.open(out) as new:
            for key, value in old[0].header.items():
                if key not in ID_CARDS and key != "AR_HDU" and not WCS_KEY.match(key):
                    assert new[0].header[key] == value, key
            for i in (1, 2, 3):
                for key in ("EXTTYPE", "LTV1", "LTV2", "CRVAL1A", "INHERIT"):
                    assert new[i].header[key] == old[i].header[key]
            primary, image = new[0].header, new[1].header
        assert primary["DASKCAL_CONFIG"] == config_digest(CalibrateConfig())
        assert primary["DASKCAL_CALEXP"] == calexp.name
        assert primary["DASKCAL_SKYCORR"] == tutorial.find("skyCorr", dataid).name
        assert primary["DASKCAL_PHOTOCALIB"].startswith("fgcm_photoCalib-")
        assert primary["A_ORDER"] == primary["AP_ORDER"] == 9
        wcs = read_skywcs(tutorial.find("jointcal_wcs", dataid))
        bbox = (0, 0, image["NAXIS1"] - 1, image["NAXIS2"] - 1)
        assert sip_max_error(wcs, header_wcs(primary), bbox) < 1.0
        assert sip_max_error(wcs, header_wcs(image), bbox) < 1.0


def test_second_tutorial_command_on_a_cluster_with_quicklook(demo, tutorial):
    code = exposure(
        demo, "--config", "externalPhotoCalibName=jointcal", "doApplySkyCorr=False",
        "--batch-type=smp", "--cores=2", "--quicklook",
    )  # fmt: skip
    assert code == 0
    out = Repository(demo, rerun="demo:out")
    for dataid in ids_of(out):
        p, _, v, _ = planes(out.find("calexp", dataid))
        image, _, var, header = planes(out.output_path("calibrated_exp", dataid))
        pc = read_photocalib(out.find("jointcal_photoCalib", dataid))
        scale = pc.evaluate_grid(0, p.shape[1], 0, p.shape[0]) / pc.mean
        np.testing.assert_allclose(image, p * scale, rtol=1e-7, atol=1e-30)  # no sky
        assert "DASKCAL_SKYCORR" not in header
        assert read_photocalib(out.output_path("calibrated_exp", dataid)).mean == pc.mean
    for visit in (1228, 1230):
        png = demo / f"rerun/out/calibrated/0000/quicklook/visit-{visit:07d}.png"
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert 400 <= width <= 2000 and 400 <= height <= 2000 and len(data) > 20_000


def test_rerun_skips_finished_ccds_and_redo_recomputes(copy, capsys):
    assert exposure(copy) == 0
    repo = Repository(copy, rerun="demo:out")
    out = repo.output_path("calibrated_exp", ids_of(repo)[0])
    before = out.stat().st_mtime_ns
    capsys.readouterr()
    assert exposure(copy) == 0
    assert "4 data ids: 0 done, 4 skipped, 0 failed" in capsys.readouterr().out
    assert out.stat().st_mtime_ns == before
    assert exposure(copy, "--redo") == 0
    assert "4 data ids: 4 done" in capsys.readouterr().out
    assert out.stat().st_mtime_ns > before
    assert not list(out.parent.glob(".*tmp*"))


def test_missing_skycorr_and_truncated_calexp_fail_alone(copy, capsys):
    repo = Repository(copy, rerun="demo:out")
    first, *_, last = ids_of(repo)
    repo.find("skyCorr", first).unlink()
    calexp = repo.find("calexp", last)
    calexp.write_bytes(calexp.read_bytes()[: calexp.stat().st_size // 2])
    assert exposure(copy) == 1
    out = capsys.readouterr().out
    assert "4 data ids: 2 done, 0 skipped, 2 failed" in out
    lines = {tuple(line.split()[:2]): line for line in out.splitlines()[1:3]}
    skycorr = lines[(str(first["visit"]), str(first["ccd"]))]
    assert "no skyCorr" in skycorr and f"skyCorr-{first['visit']:07d}-000.fits" in skycorr
    assert "truncated" in lines[(str(last["visit"]), str(last["ccd"]))]
    assert str(calexp) in lines[(str(last["visit"]), str(last["ccd"]))]
    report = next((copy / "rerun/out/calibrated/reports").glob("calibrateExposure-*.jsonl"))
    statuses = [o["status"] for o in read_report(report)["outcomes"]]
    assert sorted(statuses) == ["done", "done", "failed", "failed"]
    assert not repo.output_path("calibrated_exp", first).exists()


def test_missing_wcs_fails_or_is_flagged_uncalibrated(copy, capsys):
    repo = Repository(copy, rerun="demo:out")
    dataid = ids_of(repo)[1]
    repo.find("jointcal_wcs", dataid).unlink()
    assert exposure(copy) == 1
    assert "no jointcal_wcs" in capsys.readouterr().out
    assert exposure(copy, "-c", "onMissingCalibration=flag", "--clobber-config") == 0
    p, mask0, v, old = planes(repo.find("calexp", dataid))
    image, mask, var, header = planes(repo.output_path("calibrated_exp", dataid))
    assert header["DASKCAL_UNCALIBRATED"] is True and "jointcal_wcs" in header["DASKCAL_MISSING"]
    assert np.array_equal(image, p) and np.array_equal(var, v) and np.array_equal(mask, mask0)
    assert header["PHOTOCALIB_ID"] == old["PHOTOCALIB_ID"]


def test_include_calib_var_and_fixed_zero_variance(copy):
    args = ("-c", "includePhotoCalibVar=True", "fixZeroPixelVariance=True")
    assert exposure(copy, *args) == 0
    repo = Repository(copy, rerun="demo:out")
    dataid = ids_of(repo)[0]
    p, _, v, _ = planes(repo.find("calexp", dataid))
    _, _, var, _ = planes(repo.output_path("calibrated_exp", dataid))
    pc = read_photocalib(repo.find("fgcm_tract_photoCalib", dataid))
    c = pc.evaluate_grid(0, p.shape[1], 0, p.shape[0])
    expected = (c**2 * v + p.astype(float) ** 2 * pc.err**2) / pc.mean**2
    assert (p == 0).any() and np.array_equal(np.isfinite(var), np.isfinite(v))
    np.testing.assert_allclose(var, expected, rtol=2e-7)


def test_a_killed_run_leaves_no_partial_calexp(demo, tmp_path):
    """SIGKILL in the middle of a run: every CALEXP under its final name is complete."""
    import signal
    import subprocess
    import sys
    import time

    root = copy_repository(demo, tmp_path / "repo")
    repo = Repository(root, rerun="demo")
    source = ids_of(repo)[1]
    with sqlite3.connect(root / "registry.sqlite3") as db:
        columns = [r[1] for r in db.execute("PRAGMA table_info(raw)") if r[1] != "id"]
        row = dict(
            zip(
                columns,
                db.execute(f"SELECT {', '.join(columns)} FROM raw").fetchone(),
                strict=True,
            )
        )
        for ccd in range(60, 68):
            new = {**row, "visit": 1300, "ccd": ccd}
            db.execute(
                f"INSERT INTO raw ({', '.join(new)}) VALUES ({', '.join('?' * len(new))})",
                list(new.values()),
            )
            for dataset in ("calexp", "skyCorr", "fgcm_tract_photoCalib", "jointcal_wcs"):
                target = repo.output_path(dataset, {**source, "visit": 1300, "ccd": ccd})
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(repo.find(dataset, source))
    db.close()
    cmd = [sys.executable, "-m", "daskcal.cli", "exposure", str(root), "--rerun", "demo:cal",
           "--id", "visit=1300", "tract=0", "--no-versions"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    calibrated = root / "rerun/cal/calibrated"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(calibrated.rglob("CALEXP-*.fits"))) < 2:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finals = list(calibrated.rglob("CALEXP-*.fits"))
    assert 2 <= len(finals) < 8, "the kill should land in the middle of the run"
    for path in finals:
        with fits.open(path) as hdul:
            assert hdul[3].data.shape == (512, 256) and "AR_HDU" in hdul[0].header
    assert main(cmd[3:]) == 0
    assert len(list(calibrated.rglob("CALEXP-*.fits"))) == 8


# --- the real calexp (obs_base's HSC calexp cut to 64 x 32) ------------------------------

CALEXP = "lsst/obs_base/tests/data/calexp.fits"
WCS_FILE = "lsst/jointcal/tests/data/output/HSC-R/9615/jointcal_wcs-0023900-037.fits"
PHOTOCALIB = "lsst/afw/tests/data/photoCalib-version1.fits"  # constant 123 +- 45
VISIT, CCD, TRACT, FILTER, POINTING = 23900, 37, 9615, "HSC-R", 1000


def skycorr_entries(x0: int, y0: int, width: int = 64, height: int = 32) -> list:
    rng = np.random.default_rng(11)
    akima = BackgroundEntry(rng.normal(5.0, 2.0, (5, 6)), (x0, y0, width, height))
    cheb = BackgroundEntry(
        rng.normal(-3.0, 1.0, (4, 8)), (x0, y0, width, height),
        interp_style=5, approx_style=0, approx_order_x=2,
    )  # fmt: skip
    return [akima, cheb]


def real_repository(real_dir, root, xy0=(0, 0)):
    """ROOT/rerun/sf with the real calexp (rewritten at ``xy0`` if given), a skyCorr, the
    real jointcal SkyWcs of HSC ccd 37 and afw's real PhotoCalib as jointcal's."""
    (root / "_mapper").parent.mkdir(parents=True)
    (root / "_mapper").write_text("lsst.obs.hsc.HscMapper\n")
    repo = Repository(root, rerun="sf")
    dataid = {"visit": VISIT, "ccd": CCD, "tract": TRACT, "filter": FILTER, "pointing": POINTING}
    paths = {d: repo.output_path(d, dataid) for d in ("calexp", "skyCorr", "jointcal_wcs")}
    paths["photo"] = repo.output_path("jointcal_photoCalib", dataid)
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    if tuple(xy0) == (0, 0):
        shutil.copy(real_dir / CALEXP, paths["calexp"])
    else:
        ds = read_exposure(real_dir / CALEXP)
        planes_ = [ds[p].values for p in ("image", "mask", "variance")]
        with exposure_archive(real_dir / CALEXP) as archive:
            from daskcal.io.archive import ArchiveWriter

            write_exposure(paths["calexp"], *planes_, primary_header=ds.attrs["header"],
                           mask_planes=ds.attrs["mask_planes"], xy0=xy0,
                           archive_hdus=ArchiveWriter(base=archive).hdus(),
                           plane_headers=ds.attrs["plane_headers"])  # fmt: skip
    write_background(paths["skyCorr"], skycorr_entries(*xy0))
    shutil.copy(real_dir / WCS_FILE, paths["jointcal_wcs"])
    shutil.copy(real_dir / PHOTOCALIB, paths["photo"])
    return paths


def run_real(root, *config, rerun="sf:cal"):
    args = ["--id", f"visit={VISIT}", f"ccd={CCD}", f"tract={TRACT}", "--no-versions"]
    # on 64 x 32 pixels the default 20 px spacing leaves order 9 underdetermined (the fit is
    # ~0.9" off between its points, over sipMaxError): 2 px gives ~3e-7 mas
    code = main(["exposure", str(root), "--rerun", rerun, *args, "-c",
                 "externalPhotoCalibName=jointcal", "sipSpacing=2", *config])  # fmt: skip
    assert code == 0
    return next((root / "rerun" / rerun.split(":")[1] / "calibrated").rglob("CALEXP-*.fits"))


def test_real_calexp_every_pixel_follows_the_formula(real_dir, tmp_path):
    paths = real_repository(real_dir, tmp_path / "repo")
    out = run_real(tmp_path / "repo")
    p, mask0, v, _ = planes(paths["calexp"])
    image, mask, var, header = planes(out)
    sky = read_background(paths["skyCorr"]).image()
    # c = cbar = 123: the photometric factor is exactly 1, the sky subtracted in float32
    np.testing.assert_array_equal(image, (p.astype(np.float32) - sky).astype(np.float32))
    np.testing.assert_array_equal(var, v.astype(np.float32))
    assert np.array_equal(mask, mask0)
    out2 = run_real(tmp_path / "repo", "includePhotoCalibVar=True", rerun="sf:var")
    _, _, var2, _ = planes(out2)
    np.testing.assert_allclose(var2, v + (p.astype(float) * 45.0 / 123.0) ** 2, rtol=2e-7)


def test_real_calexp_headers_and_archive_are_preserved(real_dir, tmp_path):
    paths = real_repository(real_dir, tmp_path / "repo")
    out = run_real(tmp_path / "repo")
    with fits.open(paths["calexp"]) as old, fits.open(out) as new:
        kept = [k for k in old[0].header if k not in ID_CARDS | {"AR_HDU", "COMMENT"}]
        for key in kept:
            if not WCS_KEY.match(key):
                assert new[0].header[key] == old[0].header[key], key
        assert new[0].header["A_ORDER"] == 9  # afw's stale A_ORDER = 3 is replaced
        for i in (1, 2, 3):
            for key, value in old[i].header.items():
                if not WCS_KEY.match(key) and key not in ("BITPIX", "NAXIS", "PCOUNT", "GCOUNT"):
                    assert new[i].header[key] == value, (i, key)
        old_archive, new_archive = read_archive(old), read_archive(new)
        assert len(old_archive.ids) == 296 and set(old_archive.ids) < set(new_archive.ids)
        for obj_id in old_archive.ids:
            assert new_archive.class_name(obj_id) == old_archive.class_name(obj_id)
        for obj_id in (3, 246, 249, 250):  # Detector, old PhotoCalib, PSF, ApCorrMap
            a, b = old_archive[obj_id].catalogs[0], new_archive[obj_id].catalogs[0]
            assert all(same_column(a[n], b[n]) for n in a.columns), obj_id
    pc = read_photocalib(out)
    assert (pc.mean, pc.err, pc.is_constant) == (123.0, 45.0, True)
    assert read_skywcs(out) == read_skywcs(real_dir / WCS_FILE)


def test_real_calexp_at_an_offset_xy0_writes_consistent_sip_headers(real_dir, tmp_path):
    x0, y0 = 1000, 2000
    real_repository(real_dir, tmp_path / "repo", xy0=(x0, y0))
    out = run_real(tmp_path / "repo", "sipSpacing=4")  # enough points for order 9 on 64 x 32
    wcs = read_skywcs(real_dir / WCS_FILE)
    with fits.open(out) as hdul:
        primary, image = hdul[0].header, hdul[1].header
        assert (image["LTV1"], image["LTV2"]) == (-x0, -y0)
        assert image["CRPIX1"] == primary["CRPIX1"] - x0
    i, j = np.meshgrid(np.arange(0.0, 64.0, 7.0), np.arange(0.0, 32.0, 5.0))
    ra, dec = wcs.pixel_to_sky(i + x0, j + y0)
    ra_p, dec_p = header_wcs(primary).all_pix2world(i + x0, j + y0, 0)
    ra_i, dec_i = header_wcs(image).all_pix2world(i, j, 0)
    for r, d in ((ra_p, dec_p), (ra_i, dec_i)):
        sep = np.hypot((r - ra) * np.cos(np.radians(dec)), d - dec) * 3.6e6
        assert sep.max() < 1.0
