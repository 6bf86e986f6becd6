"""Calibration values that cannot be right fail loudly: PhotoCalib, SkyWcs, TAN-SIP bound."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
from astropy.io import fits
from conftest import real_path

from daskcal.calexp import SIP_ERROR_CARD
from daskcal.calib.ast import ast
from daskcal.calib.boundedfield import (
    BBox,
    ChebyshevBoundedField,
    InvalidBoundedField,
    ProductBoundedField,
    validate_bounded_field,
)
from daskcal.calib.photocalib import (
    CalibrationError,
    InvalidPhotoCalib,
    PhotoCalib,
    read_photocalib,
    validate_photocalib,
    write_photocalib,
)
from daskcal.calib.sip import SipFitError, fit_tan_sip_checked, skywcs_from_fits_header
from daskcal.calib.skywcs import (
    InvalidSkyWcs,
    SkyWcs,
    SkyWcsError,
    read_skywcs,
    validate_skywcs,
)
from daskcal.calib.table import calibration_row, read_calibration_table, table_path
from daskcal.cli import main
from daskcal.config import CalibrateConfig, ConfigError, parse_overrides
from daskcal.demo.wcs import make_skywcs
from daskcal.demo.writers import write_skywcs_file
from daskcal.errors import CalibrationMissing
from daskcal.repo import Repository
from daskcal.tasks.catalog import calibrated_frame
from daskcal.tasks.exposure import exposure_plan

HSC_CCD = (0, 0, 2047, 4175)
BOX = BBox(0, 0, 255, 511)
JOINTCAL_DIR = "lsst/jointcal/tests/data/output/HSC-R/9615/"
REAL_WCS = [
    f"{JOINTCAL_DIR}jointcal_wcs-{visit:07d}-{ccd:03d}.fits"
    for visit in (23900, 23924, 28976)
    for ccd in (37, 49, 90, 103)
] + [f"lsst/meas_mosaic/tests/data/8766/jointcal_wcs-0011506-{ccd:03d}.fits" for ccd in (49, 50)]
REAL_PHOTOCALIBS = [
    "lsst/afw/tests/data/photoCalib-version1.fits",
    "lsst/meas_mosaic/tests/data/8766/fcr-0011506-049.fits",
    "lsst/meas_mosaic/tests/data/8766/fcr-0011506-050.fits",
]
CALEXP = "lsst/obs_base/tests/data/calexp.fits"
DATAID = {"visit": 23900, "ccd": 37, "tract": 9615, "filter": "HSC-R", "pointing": 1000}


# --- PhotoCalib --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mean", "text"), [(0.0, "0"), (-1.5, "-1.5"), (math.nan, "nan"), (math.inf, "inf")]
)
def test_a_mean_that_is_not_positive_and_finite_is_invalid(mean, text):
    with pytest.raises(InvalidPhotoCalib) as info:
        validate_photocalib(PhotoCalib(mean, 0.1))
    assert str(info.value) == f"PhotoCalib mean is {text} (must be > 0 and finite)"
    assert isinstance(info.value, ValueError) and isinstance(info.value, CalibrationError)


@pytest.mark.parametrize("err", [-0.1, math.nan, math.inf])
def test_a_negative_or_non_finite_error_is_invalid(err):
    with pytest.raises(InvalidPhotoCalib, match=r"^PhotoCalib error is .* \(must be >= 0"):
        validate_photocalib(PhotoCalib(1.0, err))


def test_nan_chebyshev_coefficients_are_invalid():
    field = ChebyshevBoundedField(BOX, [[1.0, 0.01], [math.nan, 0.0]])
    with pytest.raises(InvalidPhotoCalib) as info:
        validate_photocalib(PhotoCalib(1.0, 0.01, False, field))
    message = str(info.value)
    assert message == (
        "PhotoCalib field ChebyshevBoundedField: 1 of its 4 Chebyshev coefficients are not finite"
    )
    product = ProductBoundedField((ChebyshevBoundedField(BOX, [[2.0]]), field))
    with pytest.raises(InvalidPhotoCalib, match=r"factor 1 \(ChebyshevBoundedField\): 1 of"):
        validate_photocalib(PhotoCalib(1.0, 0.01, False, product))


def test_a_field_that_evaluates_to_non_finite_values_is_invalid():
    # finite parameters, but their product overflows: inf at every pixel
    huge = ProductBoundedField(
        (ChebyshevBoundedField(BOX, [[1e200]]), ChebyshevBoundedField(BOX, [[1e200]]))
    )
    with pytest.raises(InvalidPhotoCalib) as info:
        validate_photocalib(PhotoCalib(1.0, 0.0, False, huge))
    assert str(info.value) == (
        "PhotoCalib field ProductBoundedField is inf at pixel (0.0, 0.0) (must be > 0 and finite)"
    )
    assert "\n" not in str(info.value)


def test_the_field_is_checked_over_the_ccd_box_when_given():
    # 1.5 .. 0.5 over its own box, but it reaches 1 - 0.5 * 7 < 0 on a CCD 4 times as wide
    field = ChebyshevBoundedField(BBox(0, 0, 99, 99), [[1.0, -0.5]])
    pc = PhotoCalib(1.0, 0.0, False, field)
    validate_photocalib(pc)
    with pytest.raises(InvalidPhotoCalib, match=r"is -0\.00125 at pixel \(149\.6, 0\.0\)"):
        validate_photocalib(pc, (0, 0, 399, 99))
    validate_bounded_field(ChebyshevBoundedField(BOX, [[-1.0]]), positive=False)
    with pytest.raises(InvalidBoundedField, match="1 of its 1 Chebyshev coefficients"):
        validate_bounded_field(ChebyshevBoundedField(BOX, [[math.inf]]), positive=False)


def test_a_constant_photocalib_is_judged_by_its_mean_only():
    # the field of a constant PhotoCalib is never evaluated (afw's is the constant mean)
    validate_photocalib(PhotoCalib(2.0, 0.1, True, ChebyshevBoundedField.constant(math.nan)))


def test_good_photocalibs_pass(tmp_path):
    bbox = BBox(*HSC_CCD)
    product = ProductBoundedField(
        (
            ChebyshevBoundedField(bbox, np.array([[1.0, 0.02], [0.01, 0.0]])),
            ChebyshevBoundedField(bbox, np.array([[0.25, 0.0, 0.003]])),
        )
    )
    validate_photocalib(PhotoCalib(0.25, 0.002, False, product), HSC_CCD)
    path = tmp_path / "photoCalib.fits"
    write_photocalib(path, PhotoCalib(0.0, 0.0))
    bad = read_photocalib(path)  # reading does not validate
    assert bad.mean == 0.0
    with pytest.raises(InvalidPhotoCalib):
        validate_photocalib(bad)


@pytest.mark.parametrize("relative", REAL_PHOTOCALIBS, ids=os.path.basename)
def test_real_photocalibs_pass(relative):
    validate_photocalib(read_photocalib(real_path(relative)), HSC_CCD)


# --- SkyWcs ------------------------------------------------------------------------------


def _sin_wcs() -> SkyWcs:
    """An ordinary 0.168"/px SIN WCS: undefined beyond 57.3 deg of its reference point."""
    cards = {"CTYPE1": "RA---SIN", "CTYPE2": "DEC--SIN", "CRPIX1": 1.0, "CRPIX2": 1.0}
    cards |= {"CRVAL1": 150.0, "CRVAL2": 2.0, "CD1_1": -0.168 / 3600, "CD2_2": 0.168 / 3600}
    return skywcs_from_fits_header(fits.Header(list(cards.items())))


def test_a_wcs_giving_nan_is_invalid():
    wcs = _sin_wcs()
    validate_skywcs(wcs, HSC_CCD)
    far = (0, 0, 2_000_000, 4175)  # 93 deg: off the projection
    assert np.isnan(wcs.pixel_to_sky(2_000_000.0, 0.0)[0])
    with pytest.raises(InvalidSkyWcs) as info:
        validate_skywcs(wcs, far)
    assert str(info.value) == "SkyWcs gives no finite sky position at pixel (2000000.5, -0.5)"
    assert isinstance(info.value, SkyWcsError)


@pytest.mark.parametrize(("scale", "shown"), [(100.0, "92.8"), (0.001, "0.001")])
def test_an_absurd_pixel_scale_is_invalid(scale, shown):
    wcs = make_skywcs((150.0, 2.0), plate_scale_arcsec=scale)  # 0.7% distortion at 1024 px
    with pytest.raises(InvalidSkyWcs) as info:
        validate_skywcs(wcs, HSC_CCD)
    assert str(info.value) == (
        f"SkyWcs pixel scale is {shown} arcsec/pixel between pixels (-0.5, -0.5) and "
        "(1023.5, -0.5) (must be 0.01 to 10)"
    )


def test_an_inverse_that_does_not_return_the_pixels_is_invalid():
    Ast = ast()
    good = make_skywcs((150.0, 2.0)).frameset
    identity = [[1.0, 1, 1, 0], [1.0, 2, 0, 1]]
    shifted = [[0.5, 1, 0, 0], *identity]  # its inverse puts every pixel 0.5 px to the right
    frameset = Ast.FrameSet(Ast.Frame(2, "Domain=PIXELS"))
    frameset.addframe(Ast.CURRENT, Ast.PolyMap(identity, shifted), Ast.Frame(2, "Domain=P2"))
    frameset.addframe(
        Ast.CURRENT, good.getmapping(Ast.BASE, Ast.CURRENT), good.getframe(Ast.CURRENT)
    )
    wcs = SkyWcs.from_frameset(frameset)
    with pytest.raises(InvalidSkyWcs, match=r"inverse maps .*, 0\.5 px away \(tolerance 0\.1\)"):
        validate_skywcs(wcs, HSC_CCD)
    validate_skywcs(wcs, HSC_CCD, inverse_tolerance=0.6)


@pytest.mark.parametrize("relative", [*REAL_WCS, CALEXP], ids=os.path.basename)
def test_real_wcss_pass_on_a_full_ccd_and_a_small_box(relative):
    wcs = read_skywcs(real_path(relative))
    validate_skywcs(wcs, HSC_CCD)
    validate_skywcs(wcs, (1000, 2000, 1063, 2031))


# --- TAN-SIP error bound ----------------------------------------------------------------


def test_config_sip_max_error_is_a_float():
    assert CalibrateConfig().sipMaxError == 0.1
    one = parse_overrides(["sipMaxError=1"])
    assert one.sipMaxError == 1.0 and type(one.sipMaxError) is float
    assert parse_overrides(["sipMaxError=0.5"]).sipMaxError == 0.5
    for bad, match in (("True", "expected float"), ("abc", "expected float"), ("0", "> 0")):
        with pytest.raises(ConfigError, match=match):
            parse_overrides([f"sipMaxError={bad}"])


def test_a_huge_sip_spacing_is_caught_between_the_grid_points():
    wcs = make_skywcs((150.0, 2.0), (-15.3, -60.2))
    approx, error = fit_tan_sip_checked(wcs, HSC_CCD)
    assert 0.0 < error < 1e-4  # mas; ~3e-7 at order 9, spacing 20
    with pytest.raises(SipFitError) as info:
        fit_tan_sip_checked(wcs, HSC_CCD, spacing=100000, max_error_mas=0.1)
    message = str(info.value)
    reached = float(message.split("off by up to ")[1].split()[0])
    assert reached > 1e4  # tens of arcseconds
    assert message.endswith("more than sipMaxError = 0.1 mas")
    assert "spacing 100000 px" in message


def test_table_row_records_the_sip_error_of_a_valid_real_wcs(real_dir):
    wcs_path = real_dir / JOINTCAL_DIR / "jointcal_wcs-0023900-037.fits"
    paths = {"calexp": real_dir / CALEXP, "jointcal_wcs": wcs_path}
    config = CalibrateConfig(
        externalPhotoCalibName="jointcal", doApplyExternalPhotoCalib=False, sipSpacing=2
    )
    row = calibration_row(DATAID, paths, config, with_sip=True)
    assert row["errors"] == "" and row["sip_header"]
    assert 0.0 < row["sip_max_error_mas"] < 1e-4
    assert math.isnan(calibration_row(DATAID, paths, config)["sip_max_error_mas"])  # no fit
    # the default spacing leaves order 9 underdetermined on this 64 x 32 box: ~1 arcsec off
    coarse = calibration_row(DATAID, paths, config.replace(sipSpacing=20), with_sip=True)
    assert coarse["sip_header"] == "" and math.isnan(coarse["sip_max_error_mas"])
    assert coarse["errors"].startswith(f"jointcal_wcs: {wcs_path}: TAN-SIP approximation")
    assert "sipMaxError = 0.1 mas" in coarse["errors"]


# --- table rows: invalid products are errors, missing ones stay missing --------------------


def test_invalid_products_are_row_errors_naming_the_file(tmp_path):
    photo = tmp_path / "jointcal_photoCalib-0023900-037.fits"
    write_photocalib(photo, PhotoCalib(0.0, 0.0))
    wcs = tmp_path / "jointcal_wcs-0023900-037.fits"
    write_skywcs_file(wcs, make_skywcs((150.0, 2.0), plate_scale_arcsec=100.0))
    config = CalibrateConfig(externalPhotoCalibName="jointcal", doApplySkyCorr=False)
    pc = PhotoCalib(1.0, 0.0, False, ChebyshevBoundedField(BBox(*HSC_CCD), [[1.0, 0.1]]))
    write_photocalib(tmp_path / "field.fits", pc)  # gives the row its box
    row = calibration_row(DATAID, {"jointcal_photoCalib": photo, "jointcal_wcs": wcs}, config)
    assert row["missing"] == "" and math.isnan(row["cbar"])
    # no box (no calexp, a constant PhotoCalib): the WCS cannot be checked anywhere
    assert row["errors"] == (
        f"jointcal_photoCalib: {photo}: PhotoCalib mean is 0 (must be > 0 and finite)"
    )
    paths = {"jointcal_photoCalib": tmp_path / "field.fits", "jointcal_wcs": wcs}
    row = calibration_row(DATAID, paths, config)
    assert row["errors"].startswith(f"jointcal_wcs: {wcs}: SkyWcs pixel scale is 92.8")
    assert row["wcs_ast"] == "" and math.isnan(row["ra"]) and row["cbar"] == 1.0
    row = calibration_row(DATAID, {"jointcal_photoCalib": None, "jointcal_wcs": None}, config)
    assert row["errors"] == "" and "no jointcal_photoCalib" in row["missing"]


def test_row_errors_fail_even_in_flag_mode_missing_is_flagged():
    import pandas as pd

    flag = CalibrateConfig(onMissingCalibration="flag", doApplySkyCorr=False)
    bad = {"missing": "", "errors": "jointcal_wcs: /x/jointcal_wcs-1.fits: SkyWcs gives no"}
    with pytest.raises(CalibrationMissing, match="calibration unavailable: .*jointcal_wcs-1.fits"):
        calibrated_frame(pd.DataFrame(), bad, flag)
    with pytest.raises(CalibrationMissing, match="jointcal_wcs-1.fits"):
        exposure_plan(bad, flag)
    missing = {"missing": "no jointcal_wcs (/x/jointcal_wcs-1.fits)", "errors": ""}
    assert exposure_plan(missing, flag).uncalibrated == missing["missing"]
    with pytest.raises(CalibrationMissing, match="no jointcal_wcs"):
        exposure_plan(missing, CalibrateConfig(doApplySkyCorr=False))


# --- end to end on the demo repository ------------------------------------------------------


@pytest.fixture
def copy(demo, tmp_path):
    """A private copy of the session demo repository's inputs, to break them in."""

    def inputs_only(folder, names):
        return [n for n in names if os.path.basename(folder) == "rerun" and n != "demo"]

    root = shutil.copytree(demo.root, tmp_path / "repo", ignore=inputs_only)
    return Repository(root, rerun="demo")


def run(repo, task, *args):
    argv = [task, str(repo.root), "--rerun", "demo:out", "--id", "visit=1228", "tract=0"]
    return main([*argv, "--no-versions", *args])


def test_a_corrupt_wcs_fails_in_flag_mode_a_missing_one_is_flagged(copy, capsys):
    good, bad = copy.expand([{"visit": 1228, "tract": 0}])
    corrupt = copy.find("jointcal_wcs", bad)
    write_skywcs_file(corrupt, make_skywcs((150.0, 2.0), plate_scale_arcsec=100.0))
    flag = ("-c", "onMissingCalibration=flag")
    out_repo = Repository(copy.root, rerun="demo:out")
    for task, dataset in (("exposure", "calibrated_exp"), ("catalog", "calibrated_src")):
        assert run(copy, task, *flag) == 1, task
        out = capsys.readouterr().out
        assert str(corrupt) in out and "pixel scale is" in out
        assert out_repo.output_path(dataset, good).exists()
        assert not out_repo.output_path(dataset, bad).exists()
    corrupt.unlink()  # now missing: flagged, not failed
    assert run(copy, "exposure", *flag) == 0
    with fits.open(out_repo.output_path("calibrated_exp", bad)) as hdul:
        assert hdul[0].header["DASKCAL_UNCALIBRATED"] is True
        assert "jointcal_wcs" in hdul[0].header["DASKCAL_MISSING"]


def test_a_truncated_wcs_fails_in_flag_mode(copy, capsys):
    _, bad = copy.expand([{"visit": 1228, "tract": 0}])
    path = copy.find("jointcal_wcs", bad)
    path.write_bytes(path.read_bytes()[:2880])
    assert run(copy, "catalog", "-c", "onMissingCalibration=flag") == 1
    assert str(path) in capsys.readouterr().out
    assert not Repository(copy.root, rerun="demo:out").output_path("calibrated_src", bad).exists()


def test_a_huge_sip_spacing_fails_the_ccd_naming_file_error_and_bound(copy, capsys):
    assert run(copy, "exposure", "-c", "sipSpacing=100000") == 1
    out = capsys.readouterr().out
    out_repo = Repository(copy.root, rerun="demo:out")
    for dataid in copy.expand([{"visit": 1228, "tract": 0}]):
        assert str(copy.find("jointcal_wcs", dataid)) in out
        assert not out_repo.output_path("calibrated_exp", dataid).exists()
    assert "TAN-SIP approximation (order 9, spacing 100000 px) is off by up to" in out
    assert "more than sipMaxError = 0.1 mas" in out


def test_the_sip_error_reached_is_recorded_in_the_table_and_the_calexp(copy):
    assert run(copy, "exposure") == 0
    out = Repository(copy.root, rerun="demo:out")
    ids = out.expand([{"visit": 1228, "tract": 0}])
    table = read_calibration_table(table_path(out.output_dir, 0, ids[0]["filter"]))
    errors = dict(zip(table["ccd"], table["sip_max_error_mas"], strict=True))
    for dataid in ids:
        with fits.open(out.output_path("calibrated_exp", dataid)) as hdul:
            header = hdul[0].header
            card = next(c for c in header.cards if c.keyword == SIP_ERROR_CARD)
            assert len(card.image) <= 80 and "mas" in card.comment
            assert header[SIP_ERROR_CARD] == pytest.approx(errors[dataid["ccd"]], rel=1e-12)
        assert 0.0 < errors[dataid["ccd"]] < 1e-4
