"""SkyWcs: reading afw's persisted AST FrameSets, evaluation, persistence, synthetic WCSs."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from conftest import real_path
from hypothesis import given, settings
from hypothesis import strategies as st

from daskcal.calib.skywcs import (
    SkyWcs,
    SkyWcsError,
    angular_separation_mas,
    read_skywcs,
    skywcs_from_archive,
)
from daskcal.demo.wcs import make_skywcs
from daskcal.io.archive import ArchiveWriter, read_archive

JOINTCAL = "lsst/jointcal/tests/data/output/HSC-R/9615/jointcal_wcs-0023900-049.fits"
MOSAIC = "lsst/meas_mosaic/tests/data/8766/jointcal_wcs-0011506-050.fits"
CALEXP = "lsst/obs_base/tests/data/calexp.fits"
CFHT = "lsst/jointcal/tests/data/cfht_minimal/repo/calexp/06AL01/D3/2006-05-20/r/"
VISIT_SUMMARIES = [
    CFHT + "visitSummary-849375.fits",
    "lsst/drp_tasks/tests/data/visitSummary_1176.fits",
    "lsst/drp_tasks/tests/data/visitSummary_17900.fits",
]


def _stored_bytes(path) -> bytes:
    with fits.open(path) as hdul:
        archive = read_archive(hdul, str(path))
        return archive[archive.find("SkyWcs")[0]].catalogs[0].bytes("wcs")


def test_golden_pixel_to_sky(golden):
    cases = golden["skywcs_pixel_to_sky"]
    assert len(cases) == 14
    for relative, case in cases.items():
        wcs = read_skywcs(real_path(relative))
        ra, dec = wcs.pixel_to_sky(np.array(case["x"]), np.array(case["y"]))
        np.testing.assert_allclose(ra, case["ra_deg"], rtol=0, atol=1e-9, err_msg=relative)
        np.testing.assert_allclose(dec, case["dec_deg"], rtol=0, atol=1e-9, err_msg=relative)
        ra_rad, dec_rad = wcs.pixel_to_sky_rad(np.array(case["x"]), np.array(case["y"]))
        np.testing.assert_allclose(np.degrees(ra_rad), case["ra_deg"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(np.degrees(dec_rad), case["dec_deg"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("relative", VISIT_SUMMARIES)
def test_visit_summary_corners_every_detector(relative):
    """LSST's raCorners/decCorners (box corners at +-0.5) and ra/decl (box centre)."""
    path = real_path(relative)
    with fits.open(path) as hdul:
        archive = read_archive(hdul, str(path))
        rows = hdul[1].data
        assert len(rows) in (1, 103)
        for row in rows:
            wcs = skywcs_from_archive(archive, int(row["wcs"]))
            x0, y0 = row["bbox_min_x"] - 0.5, row["bbox_min_y"] - 0.5
            x1, y1 = row["bbox_max_x"] + 0.5, row["bbox_max_y"] + 0.5
            ra, dec = wcs.pixel_to_sky(np.array([x0, x1, x1, x0]), np.array([y0, y0, y1, y1]))
            np.testing.assert_allclose(ra, row["raCorners"], rtol=0, atol=1e-10)
            np.testing.assert_allclose(dec, row["decCorners"], rtol=0, atol=1e-10)
            ra_c, dec_c = wcs.pixel_to_sky((x0 + x1) / 2, (y0 + y1) / 2)
            assert abs(ra_c - row["ra"]) < 1e-10 and abs(dec_c - row["decl"]) < 1e-10


@pytest.mark.parametrize("relative", [JOINTCAL, MOSAIC, CALEXP])
def test_sky_to_pixel_inverts_pixel_to_sky(relative):
    wcs = read_skywcs(real_path(relative))
    x, y = np.meshgrid(np.linspace(-100, 2150, 23), np.linspace(-100, 4280, 31))
    ra, dec = wcs.pixel_to_sky(x, y)
    x2, y2 = wcs.sky_to_pixel(ra, dec)
    assert x2.shape == x.shape
    assert np.max(np.hypot(x2 - x, y2 - y)) < 1e-6
    # the FrameSet's own (afw's) inverse alone is cruder: a fitted polynomial
    x3, y3 = wcs.sky_to_pixel(ra, dec, refine=False)
    assert np.max(np.hypot(x3 - x, y3 - y)) < 0.05


def test_nan_in_nan_out_and_scalars():
    wcs = read_skywcs(real_path(JOINTCAL))
    ra, dec = wcs.pixel_to_sky(np.array([np.nan, 10.0, 5.0]), np.array([1.0, np.nan, 5.0]))
    assert np.isnan(ra[:2]).all() and np.isnan(dec[:2]).all() and np.isfinite(ra[2])
    ra_s, dec_s = wcs.pixel_to_sky(5.0, 5.0)
    assert np.ndim(ra_s) == 0 and ra_s == ra[2] and dec_s == dec[2]
    x, y = wcs.sky_to_pixel(np.array([np.nan, ra[2]]), dec[2])
    assert np.isnan(x[0]) and np.isnan(y[0]) and abs(x[1] - 5.0) < 1e-6
    r, d = wcs.pixel_to_sky_rad(np.inf, 3.0)
    assert np.isnan(r) and np.isnan(d)


def test_ra_is_normalised():
    wcs = make_skywcs((359.99, 0.0), (0.0, 0.0), ccd_rotation_deg=0.0)
    ra, _ = wcs.pixel_to_sky(np.array([-3000.0, 3000.0]), np.array([0.0, 0.0]))
    assert np.all((ra >= 0) & (ra < 360)) and ra.min() < 1 and ra.max() > 359
    ra_rad, _ = wcs.pixel_to_sky_rad(np.array([-3000.0, 3000.0]), np.zeros(2))
    assert np.all((ra_rad >= 0) & (ra_rad < 2 * np.pi))


def test_pickle_is_the_text_and_lazy():
    wcs = read_skywcs(real_path(JOINTCAL))
    wcs.pixel_to_sky(0.0, 0.0)  # builds the FrameSet
    data = pickle.dumps(wcs)
    assert len(data) < len(wcs.ast_text) + 500
    clone = pickle.loads(data)
    assert clone._frameset is None and clone == wcs
    np.testing.assert_array_equal(clone.pixel_to_sky(3.5, 7.25), wcs.pixel_to_sky(3.5, 7.25))


@pytest.mark.parametrize("relative", [JOINTCAL, MOSAIC, CALEXP])
def test_text_round_trip_is_byte_identical(relative):
    path = real_path(relative)
    stored = _stored_bytes(path)
    wcs = read_skywcs(path)
    assert wcs.to_bytes() == stored
    rebuilt = SkyWcs.from_frameset(wcs.frameset)  # re-dumped by AST as afw does
    if relative != MOSAIC:  # its older AST also wrote the default "Invert = 0" lines
        assert rebuilt.to_bytes() == stored
    again = SkyWcs.from_bytes(rebuilt.to_text())
    x, y = np.array([0.0, 2047.0, 1000.5]), np.array([0.0, 4175.0, 2000.25])
    np.testing.assert_array_equal(again.pixel_to_sky(x, y), wcs.pixel_to_sky(x, y))


def test_archive_round_trip(tmp_path):
    wcs = read_skywcs(real_path(JOINTCAL))
    writer = ArchiveWriter()
    obj_id = wcs.add_to_archive(writer)
    path = tmp_path / "jointcal_wcs.fits"
    fits.HDUList([fits.PrimaryHDU(), *writer.hdus()]).writeto(path)
    assert _stored_bytes(path) == wcs.to_bytes()
    back = read_skywcs(path)
    assert back == wcs
    with fits.open(path) as hdul:
        archive = read_archive(hdul, str(path))
        assert archive.class_name(obj_id) == "SkyWcs"
        assert archive[obj_id].module == "lsst.afw.geom"
        assert "QB" in hdul[2].header["TFORM1"] and hdul[2].header["TTYPE1"] == "wcs"


def test_read_errors_name_the_file(tmp_path):
    many = real_path(VISIT_SUMMARIES[1])
    with pytest.raises(SkyWcsError, match="visitSummary_1176.fits: 103 SkyWcs"):
        read_skywcs(many)
    with pytest.raises(SkyWcsError, match="photoCalib-version1.fits"):
        read_skywcs(real_path("lsst/afw/tests/data/photoCalib-version1.fits"))
    text = read_skywcs(real_path(JOINTCAL)).to_text()
    with pytest.raises(SkyWcsError, match="here.fits: unsupported SkyWcs header"):
        SkyWcs.from_bytes(text.replace("1 SkyWcs", "2 SkyWcs", 1).encode(), "here.fits")
    with pytest.raises(SkyWcsError, match="no '1 SkyWcs <flag>' header"):
        SkyWcs.from_bytes(b"garbage", "x")
    with pytest.raises(SkyWcsError, match="bad AST FrameSet"):
        SkyWcs.from_bytes(b"1 SkyWcs 0  Begin Frame\n End Frame\n", "x")
    with fits.open(many) as hdul:
        archive = read_archive(hdul, str(many))
        with pytest.raises(SkyWcsError, match="is a PhotoCalib, not a SkyWcs"):
            skywcs_from_archive(archive, archive.find("PhotoCalib")[0])


def test_flag_one_header_is_accepted():
    text = read_skywcs(real_path(JOINTCAL)).to_text()
    wcs = SkyWcs.from_bytes(text.replace("1 SkyWcs 0", "1 SkyWcs 1", 1))
    assert wcs.to_text() == text  # no FITS approximation is carried, so it writes 0


def test_compressed_calexp_is_read():
    wcs = read_skywcs(real_path(CFHT + "calexp-849375-12.fits.fz"))
    assert wcs.domains == ("PIXELS", "IWC", "SKY")
    with fits.open(real_path(VISIT_SUMMARIES[0])) as hdul:
        row = hdul[1].data[0]
    ra, dec = wcs.pixel_to_sky(-0.5, -0.5)  # same WCS as the visit summary's detector 12
    assert abs(ra - row["raCorners"][0]) < 1e-6 and abs(dec - row["decCorners"][0]) < 1e-6


def test_calexp_skywcs_agrees_with_its_tan_sip_header():
    """afw wrote a TAN-SIP approximation of the calexp's SkyWcs into the IMAGE HDU."""
    path = real_path(CALEXP)
    wcs = read_skywcs(path)
    with fits.open(path) as hdul:
        header = hdul["IMAGE"].header
    fits_wcs = WCS(header)
    x, y = np.meshgrid(np.linspace(-0.5, 2047.5, 33), np.linspace(-0.5, 4175.5, 33))
    ra, dec = wcs.pixel_to_sky(x, y)
    ra2, dec2 = fits_wcs.all_pix2world(x, y, 0)
    assert np.max(angular_separation_mas(ra, dec, ra2, dec2)) < 1.0  # measured 0.19 mas
    crpix = np.array([header["CRPIX1"], header["CRPIX2"]]) - 1.0  # an approximation's CRPIX
    np.testing.assert_allclose(wcs.pixel_origin(), crpix, rtol=0, atol=2e-3)
    np.testing.assert_allclose(wcs.sky_origin(), [header["CRVAL1"], header["CRVAL2"]], atol=1e-12)
    cd = [[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]]
    np.testing.assert_allclose(wcs.cd_matrix(), cd, rtol=1e-9)


def _scales(wcs: SkyWcs, x: float, y: float, h: float = 0.5) -> np.ndarray:
    """Arcsec per pixel along x and along y at (x, y)."""
    ra, dec = wcs.pixel_to_sky(np.array([x - h, x + h, x, x]), np.array([y, y, y - h, y + h]))
    sep = angular_separation_mas(ra[[0, 2]], dec[[0, 2]], ra[[1, 3]], dec[[1, 3]])
    return sep / 1000.0 / (2 * h)


def test_make_skywcs_structure_and_plate_scale():
    wcs = make_skywcs((150.0, 2.0), (0.0, 0.0), radial_distortion=())
    assert wcs.domains == ("PIXELS", "FOCAL", "IWC", "SKY")
    np.testing.assert_allclose(wcs.pixel_to_sky(0.0, 0.0), (150.0, 2.0), atol=1e-12)
    np.testing.assert_allclose(_scales(wcs, 0.0, 0.0), 0.168, rtol=1e-8)
    np.testing.assert_allclose(wcs.sky_origin(), (150.0, 2.0), atol=1e-12)
    np.testing.assert_allclose(wcs.cd_matrix(0.0, 0.0), [[-0.168 / 3600, 0], [0, 0.168 / 3600]])
    ra, _ = wcs.pixel_to_sky(np.array([0.0, 100.0]), np.zeros(2))
    assert ra[1] < ra[0]  # flip_x=False: east to the left, as afw's makeCdMatrix
    assert SkyWcs.from_bytes(wcs.to_bytes()) == wcs


def test_make_skywcs_radial_distortion_matches_its_formula():
    c1, c2 = -4.7e-7, -4.4e-13
    offset = (150.0, 0.0)  # pixel (0, 0) 150 mm from the boresight along focal x
    wcs = make_skywcs((30.0, -20.0), offset, radial_distortion=(c1, c2))
    radial, tangential = _scales(wcs, 0.0, 0.0)
    r = 150.0
    plane = np.radians(0.168 / 3600 / 0.015 * r * (1 + c1 * r**2 + c2 * r**4))  # tan(theta)
    # gnomonic: d(theta)/dR = 1 / (1 + R^2) radially, sin(theta) / R = cos(theta) tangentially
    expected_radial = 0.168 * (1 + 3 * c1 * r**2 + 5 * c2 * r**4) / (1 + plane**2)
    expected_tangential = 0.168 * (1 + c1 * r**2 + c2 * r**4) * np.cos(np.arctan(plane))
    assert radial == pytest.approx(expected_radial, rel=1e-7)
    assert tangential == pytest.approx(expected_tangential, rel=1e-7)
    np.testing.assert_allclose(wcs.pixel_origin(), (-r / 0.015, 0.0), atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    ra0=st.floats(0.0, 359.0),
    dec0=st.floats(-80.0, 80.0),
    offset=st.tuples(st.floats(-250.0, 250.0), st.floats(-250.0, 250.0)),
    rotation=st.sampled_from([0.0, 90.0, 180.0, 270.0, 33.0]),
    angle=st.floats(-180.0, 180.0),
    flip=st.booleans(),
)
def test_make_skywcs_round_trips(ra0, dec0, offset, rotation, angle, flip):
    wcs = make_skywcs((ra0, dec0), offset, rotation, position_angle_deg=angle, flip_x=flip)
    again = SkyWcs.from_bytes(wcs.to_bytes())
    assert again.to_text() == wcs.to_text()
    x, y = np.array([0.0, 2047.0, 1023.5, 0.0]), np.array([0.0, 4175.0, 2087.5, 4175.0])
    ra, dec = again.pixel_to_sky(x, y)
    np.testing.assert_array_equal((ra, dec), wcs.pixel_to_sky(x, y))
    x2, y2 = wcs.sky_to_pixel(ra, dec)
    assert np.max(np.hypot(x2 - x, y2 - y)) < 1e-6
    buffer = io.BytesIO()
    pickle.dump(wcs, buffer)
    assert pickle.loads(buffer.getvalue()) == wcs
