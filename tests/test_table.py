"""Calibration lookup tables: built from the files, saved as Parquet, enough to calibrate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from realrepo import FILTER, TRACT, VISIT, WCS_DIR, make_real_repository

from daskcal.calib.boundedfield import BBox, ChebyshevBoundedField, ProductBoundedField
from daskcal.calib.fgcm import fgcm_photocalibs, read_fgcm_zeropoints, write_fgcm_zeropoints
from daskcal.calib.photocalib import PhotoCalib, write_photocalib
from daskcal.calib.skywcs import read_skywcs
from daskcal.calib.table import (
    calibration_row,
    calibrations_from_row,
    fgcm_table_rows,
    read_calibration_table,
    table_path,
    write_calibration_table,
)
from daskcal.config import CalibrateConfig
from daskcal.lazy.calibrated import calibration_table
from daskcal.repo import Repository

JOINTCAL = CalibrateConfig(externalPhotoCalibName="jointcal")


@pytest.fixture
def repo(real_dir, tmp_path):
    root = make_real_repository(real_dir, tmp_path / "repo", wcs_for=(37, 90))
    return Repository(root, rerun="sf")


def ids(*ccds):
    return [
        {"visit": VISIT, "ccd": c, "tract": TRACT, "filter": FILTER, "pointing": 1000}
        for c in ccds
    ]


def test_table_rows_say_what_was_found(repo, real_dir):
    table = calibration_table(repo, ids(37, 49), JOINTCAL)
    assert list(table["ccd"]) == [37, 49]
    row = table.iloc[0]
    assert (row["cbar"], row["sigma_c"]) == (123.0, 45.0)
    assert row["zeropoint"] == pytest.approx(31.4 - 2.5 * math.log10(123.0), abs=1e-12)
    assert row["photo_source"] == "jointcal" and row["missing"] == "" and row["errors"] == ""
    wcs = read_skywcs(real_dir / WCS_DIR / "jointcal_wcs-0023900-037.fits")
    assert row["wcs_ast"] == wcs.ast_text
    assert table.iloc[1]["missing"].startswith("no jointcal_wcs (")
    assert "jointcal_wcs-0023900-049.fits" in table.iloc[1]["missing"]


def test_parquet_round_trip_is_enough_to_calibrate(repo, tmp_path):
    table = calibration_table(repo, ids(37, 90), JOINTCAL)
    path = write_calibration_table(table, table_path(tmp_path, TRACT, FILTER))
    assert path.name == "calib-HSC-R.parquet" and path.parent.name == "9615"
    back = read_calibration_table(path)
    for i in range(2):
        pc, wcs = calibrations_from_row(back.iloc[i].to_dict())
        pc0, wcs0 = calibrations_from_row(table.iloc[i].to_dict())
        x, y = np.array([0.0, 1000.5, 2047.0]), np.array([0.0, 2000.0, 4175.0])
        np.testing.assert_array_equal(wcs.pixel_to_sky(x, y), wcs0.pixel_to_sky(x, y))
        assert pc.evaluate(x, y).tolist() == [123.0] * 3


def test_spatially_varying_field_survives_the_table(tmp_path):
    bbox = BBox(0, 0, 2047, 4175)
    field = ProductBoundedField(
        (
            ChebyshevBoundedField(bbox, np.array([[1.0, 0.02], [0.01, 0.0]])),
            ChebyshevBoundedField(bbox, np.array([[0.25, 0.0, 0.003]])),
        )
    )
    pc = PhotoCalib(0.25, 0.002, False, field)
    path = tmp_path / "fgcm_photoCalib-01228-049.fits"
    write_photocalib(path, pc)
    config = CalibrateConfig(externalPhotoCalibName="fgcm", doApplyExternalSkyWcs=False)
    row = calibration_row(ids(49)[0], {"fgcm_photoCalib": path}, config)
    assert row["missing"] == "" and not row["is_constant"]
    assert row["bbox"] == [0, 0, 2047, 4175]  # from the field, as no calexp was given
    back, wcs = calibrations_from_row(row)
    assert wcs is None
    x, y = np.random.default_rng(1).uniform([0, 0], [2047, 4175], (500, 2)).T
    np.testing.assert_array_equal(back.evaluate(x, y), field.evaluate(x, y))


def test_unreadable_products_are_errors_not_crashes(tmp_path):
    bad = tmp_path / "jointcal_wcs-0023900-037.fits"
    bad.write_bytes(b"SIMPLE  = T" + b" " * 100)
    row = calibration_row(ids(37)[0], {"jointcal_wcs": bad}, JOINTCAL)
    assert "jointcal_wcs:" in row["errors"] and str(bad) in row["errors"]
    assert "no jointcal_photoCalib" in row["missing"]


def test_with_sip_gives_a_header_that_agrees_with_the_skywcs(real_dir):
    calexp = real_dir / "lsst/obs_base/tests/data/calexp.fits"
    wcs_path = real_dir / WCS_DIR / "jointcal_wcs-0023900-037.fits"
    config = CalibrateConfig(
        externalPhotoCalibName="jointcal",
        sipOrder=2,
        sipSpacing=8,
        doApplyExternalPhotoCalib=False,
    )
    row = calibration_row(
        ids(37)[0], {"calexp": calexp, "jointcal_wcs": wcs_path}, config, with_sip=True
    )
    x0, y0, x1, y1 = row["bbox"]
    assert (x1 - x0 + 1, y1 - y0 + 1) == (64, 32)
    header = fits.Header.fromstring(row["sip_header"], sep="\n")
    approx = WCS(header)
    exact = read_skywcs(wcs_path)
    xc, yc = (x0 + x1) / 2, (y0 + y1) / 2
    ra, dec = approx.all_pix2world([[xc, yc]], 0)[0]
    ra0, dec0 = exact.pixel_to_sky(xc, yc)
    assert abs(ra - ra0) * 3.6e6 < 1 and abs(dec - dec0) * 3.6e6 < 1  # mas
    assert row["ra"] == pytest.approx(ra0, abs=1e-9)
    assert len(row["ra_corners"]) == 4


def test_fgcm_zeropoints_give_the_same_row_form(tmp_path):
    path = tmp_path / "fgcmZeropoints.fits"
    write_fgcm_zeropoints(
        path,
        [
            {"visit": VISIT, "ccd": 37, "fgcmFlag": 1, "fgcmZpt": 27.0, "fgcmZptErr": 0.01},
            {"visit": VISIT, "ccd": 49, "fgcmFlag": 16, "fgcmZpt": 27.0, "fgcmZptErr": 0.01},
        ],
    )
    rows = fgcm_table_rows(fgcm_photocalibs(read_fgcm_zeropoints(path)), ids(37, 49))
    assert rows.iloc[0]["photo_source"] == "fgcmZeropoints"
    assert rows.iloc[0]["zeropoint"] == pytest.approx(27.0, abs=1e-12)
    assert rows.iloc[1]["missing"] == "fgcmZeropoints"  # flag 16: FGCM could not calibrate
    pc, wcs = calibrations_from_row(rows.iloc[0].to_dict())
    assert wcs is None and pc.mean == pytest.approx(10 ** (-0.4 * (27.0 - 31.4)))


@pytest.mark.parametrize("compress", [True, False])
def test_bbox_comes_from_the_calexp_header_compressed_or_not(tmp_path, compress):
    from daskcal.calib.table import _exposure_bbox
    from daskcal.io.exposure import write_exposure

    ny, nx = 7, 12
    planes = np.zeros((ny, nx), np.float32), np.zeros((ny, nx), np.int32)
    path = write_exposure(
        tmp_path / "calexp.fits",
        planes[0],
        planes[1],
        planes[0],
        primary_header=None,
        mask_planes={"BAD": 0},
        xy0=(1000, 2000),
        compress=compress,
    )
    assert _exposure_bbox(path) == (1000, 2000, 1000 + nx - 1, 2000 + ny - 1)
