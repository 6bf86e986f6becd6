"""TAN-SIP approximations of SkyWcs (CALEXP headers) and FITS-WCS header reading."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from conftest import REAL, real_path

from daskcal.calib.sip import (
    angular_separation_mas,
    fit_tan_sip,
    gnomonic_iwc,
    sip_header,
    sip_max_error,
    skywcs_from_fits_header,
)
from daskcal.calib.skywcs import SkyWcsError, read_skywcs
from daskcal.demo.wcs import make_skywcs

HSC_CCD = (0, 0, 2047, 4175)
JOINTCAL_DIR = "lsst/jointcal/tests/data/output/HSC-R/9615/"
JOINTCAL_FILES = [
    f"{JOINTCAL_DIR}jointcal_wcs-{visit:07d}-{ccd:03d}.fits"
    for visit in (23900, 23924, 28976)
    for ccd in (37, 49, 90, 103)
] + [f"lsst/meas_mosaic/tests/data/8766/jointcal_wcs-0011506-{ccd:03d}.fits" for ccd in (49, 50)]
ASTROPY = "astropy/astropy/astropy/wcs/tests/data/"


def _strict_wcs(header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return WCS(header)


@pytest.mark.parametrize("relative", JOINTCAL_FILES, ids=lambda p: p.split("wcs-")[1][:-5])
def test_order9_sip_is_within_1_mas_on_a_full_hsc_ccd(relative):
    skywcs = read_skywcs(real_path(relative))
    wcs = fit_tan_sip(skywcs, HSC_CCD, order=9, spacing=20)
    # every ~8 px over the pixel edges, corners included; measured ~3e-7 mas
    assert sip_max_error(skywcs, wcs, HSC_CCD, step=8.0) < 1.0
    # the header as written (cards rounded by astropy), read back by astropy and by AST
    header = sip_header(wcs)
    assert sip_max_error(skywcs, _strict_wcs(header), HSC_CCD, step=32.0) < 1.0
    x, y = np.meshgrid(np.linspace(-0.5, 2047.5, 20), np.linspace(-0.5, 4175.5, 40))
    ra, dec = skywcs.pixel_to_sky(x, y)
    ra2, dec2 = skywcs_from_fits_header(header).pixel_to_sky(x, y)
    assert np.max(angular_separation_mas(ra, dec, ra2, dec2)) < 1.0


def test_fit_is_anchored_at_the_box_centre():
    skywcs = read_skywcs(real_path(JOINTCAL_FILES[1]))
    wcs = fit_tan_sip(skywcs, HSC_CCD)
    np.testing.assert_array_equal(wcs.wcs.crpix, [1024.5, 2088.5])  # FITS = LSST + 1
    np.testing.assert_allclose(wcs.wcs.crval, skywcs.pixel_to_sky(1023.5, 2087.5), atol=1e-12)
    assert wcs.wcs.ctype[0] == "RA---TAN-SIP" and wcs.sip.a.shape == (10, 10)
    a = wcs.sip.a
    assert a[0, 0] == a[1, 0] == a[0, 1] == 0.0  # linear part lives in CD
    assert np.all(a[np.add.outer(np.arange(10), np.arange(10)) > 9] == 0.0)


def test_sip_inverse_coefficients_invert_the_exact_wcs():
    skywcs = read_skywcs(real_path(JOINTCAL_FILES[0]))
    wcs = fit_tan_sip(skywcs, HSC_CCD)
    x, y = np.meshgrid(np.linspace(-0.5, 2047.5, 30), np.linspace(-0.5, 4175.5, 60))
    ra, dec = skywcs.pixel_to_sky(x.ravel(), y.ravel())
    # intermediate pixel offsets U = CD^-1 IWC; astropy's foc2pix applies AP/BP to them
    offsets = np.linalg.inv(wcs.wcs.cd) @ gnomonic_iwc(ra, dec, tuple(wcs.wcs.crval))
    pixels = wcs.sip_foc2pix(offsets.T, 1) - 1.0
    assert np.max(np.hypot(pixels[:, 0] - x.ravel(), pixels[:, 1] - y.ravel())) < 1e-3


def test_header_cards_follow_afw():
    wcs = fit_tan_sip(read_skywcs(real_path(JOINTCAL_FILES[-1])), HSC_CCD)
    header = sip_header(wcs)
    keys = list(header.keys())
    assert keys[:9] == ["RADESYS", "CTYPE1", "CTYPE2", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2"] + [
        "CUNIT1",
        "CUNIT2",
    ]
    assert header["CTYPE1"] == "RA---TAN-SIP" and header["RADESYS"] == "ICRS"
    assert header["A_ORDER"] == header["BP_ORDER"] == 9
    assert "A_1_0" not in header and "A_2_0" in header and "AP_0_0" in header
    assert keys.index("A_ORDER") < keys.index("B_ORDER") < keys.index("AP_ORDER")
    for card in header.cards:  # no HIERARCH, nothing astropy must fix
        assert len(card.keyword) <= 8 and len(card.image) == 80
    header["NAXIS"], header["NAXIS1"], header["NAXIS2"] = 2, 2048, 4176
    _strict_wcs(header)


def test_header_xy0_shifts_to_array_pixels():
    skywcs = make_skywcs((150.0, 2.0), (-15.3, -60.2))
    bbox = (100, 200, 163, 231)  # a 64 x 32 sub-image with xy0 = (100, 200)
    wcs = fit_tan_sip(skywcs, bbox, order=4, spacing=4)
    assert sip_max_error(skywcs, wcs, bbox, step=1.0) < 1e-3
    parent, local = sip_header(wcs), sip_header(wcs, xy0=(100, 200))
    assert local["CRPIX1"] == parent["CRPIX1"] - 100 and local["CRPIX2"] == parent["CRPIX2"] - 200
    local_wcs = _strict_wcs(local)
    ra, dec = skywcs.pixel_to_sky(100.0 + np.arange(64), np.full(64, 215.0))
    ra2, dec2 = local_wcs.all_pix2world(np.arange(64), np.full(64, 15.0), 0)  # array pixels
    assert np.max(angular_separation_mas(ra, dec, ra2, dec2)) < 1e-3
    back = skywcs_from_fits_header(local, xy0=(100, 200))  # PARENT pixels again
    ra3, dec3 = back.pixel_to_sky(100.0 + np.arange(64), np.full(64, 215.0))
    assert np.max(angular_separation_mas(ra, dec, ra3, dec3)) < 1e-3


def test_synthetic_hsc_wcs_far_off_axis():
    skywcs = make_skywcs((10.0, -45.0), (230.0, 120.0), ccd_rotation_deg=180.0)
    wcs = fit_tan_sip(skywcs, HSC_CCD)
    assert sip_max_error(skywcs, wcs, HSC_CCD) < 1.0
    low = fit_tan_sip(skywcs, HSC_CCD, order=2)
    assert sip_max_error(skywcs, low, HSC_CCD) > 1.0  # the test can fail: order matters


def test_undefined_wcs_in_the_box_is_an_error():
    cards = [("CTYPE1", "RA---SIN"), ("CTYPE2", "DEC--SIN"), ("CRPIX1", 1.0), ("CRPIX2", 1.0)]
    cards += [("CRVAL1", 150.0), ("CRVAL2", 0.0), ("CD1_1", 1.0), ("CD2_2", 1.0)]
    skywcs = skywcs_from_fits_header(fits.Header(cards))  # orthographic: |IWC| > 57 deg is off-sky
    with pytest.raises(SkyWcsError, match="NaN"):
        fit_tan_sip(skywcs, (0, 0, 99, 9), spacing=5)


def test_gnomonic_iwc_matches_ast_iwc():
    skywcs = read_skywcs(real_path("lsst/obs_base/tests/data/calexp.fits"))
    x, y = np.array([0.0, 100.0, 2000.0, -3000.0]), np.array([0.0, 50.0, 4000.0, -500.0])
    ra, dec = skywcs.pixel_to_sky(x, y)
    ast_iwc = skywcs.mapping_to("IWC").tran(np.vstack([x, y]))
    np.testing.assert_allclose(gnomonic_iwc(ra, dec, skywcs.sky_origin()), ast_iwc, atol=1e-12)


def test_angular_separation():
    assert angular_separation_mas(10.0, 0.0, 11.0, 0.0) == pytest.approx(3.6e6, rel=1e-12)
    assert angular_separation_mas(0.0, 89.0, 180.0, 89.0) == pytest.approx(7.2e6, rel=1e-9)
    tiny = angular_separation_mas(200.0, 30.0, 200.0, 30.0 + 1e-9)
    assert tiny == pytest.approx(3.6e-3, rel=1e-5)


def test_afw_cd_and_cdelt_header(golden):
    """afw's testCD_PC: a Suprime-Cam-like header with both CD and CDELT cards (CD wins)."""
    case = golden["lsst_computed"]["afw_testCD_PC"]
    cards = [("CTYPE1", "RA---TAN"), ("CTYPE2", "DEC--TAN"), ("RADESYS", "ICRS")]
    cards += [("EQUINOX", 2000.0), ("CRPIX1", 5353.0), ("CRPIX2", -35.0)]
    cards += [("CRVAL1", 4.5789875), ("CRVAL2", 16.30004444), ("CUNIT1", "deg")]
    cards += [("CUNIT2", "deg"), ("CD1_1", 0.0), ("CD1_2", -5.611e-05)]
    cards += [("CD2_1", -5.611e-05), ("CD2_2", -0.0), ("CDELT1", -5.611e-05)]
    cards += [("CDELT2", 5.611e-05)]
    header = fits.Header(cards)
    skywcs = skywcs_from_fits_header(header)
    ra, dec = skywcs.pixel_to_sky(*case["pixel"])
    assert abs(ra - case["ra_deg"]) < 1e-10 and abs(dec - case["dec_deg"]) < 1e-10
    np.testing.assert_allclose(skywcs.pixel_origin(), (5352.0, -36.0), atol=1e-8)
    ra2, dec2 = _strict_wcs(header).all_pix2world(*case["pixel"], 0)
    assert abs(ra2 - case["ra_deg"]) < 1e-10 and abs(dec2 - case["dec_deg"]) < 1e-10


@pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")
@pytest.mark.parametrize("name", ["siponly.hdr", "tpvonly.hdr", "sip.fits", "sip2.fits"])
def test_ast_and_astropy_agree_on_sip_and_tpv_headers(name):
    """Two implementations of SIP/TPV (AST, as afw reads headers; astropy/wcslib) agree."""
    path = real_path(ASTROPY + name)
    if name.endswith(".hdr"):
        header = fits.Header.fromfile(path)
    else:
        with fits.open(path) as hdul:
            header = hdul[0].header.copy()
    x, y = np.meshgrid(np.linspace(-0.5, 2047.5, 25), np.linspace(-0.5, 4095.5, 25))
    ra, dec = skywcs_from_fits_header(header).pixel_to_sky(x, y)
    ra2, dec2 = WCS(header).all_pix2world(x, y, 0)
    assert np.max(angular_separation_mas(ra, dec, ra2, dec2)) < 1e-3


def test_sip_and_tpv_forms_of_one_wcs_agree():
    if not (REAL / ASTROPY).is_dir():
        pytest.skip("astropy headers absent")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        sip = skywcs_from_fits_header(fits.Header.fromfile(real_path(ASTROPY + "siponly.hdr")))
        tpv = skywcs_from_fits_header(fits.Header.fromfile(real_path(ASTROPY + "tpvonly.hdr")))
    x, y = np.meshgrid(np.linspace(0, 2047, 15), np.linspace(0, 4095, 15))
    separation = angular_separation_mas(*sip.pixel_to_sky(x, y), *tpv.pixel_to_sky(x, y))
    assert np.max(separation) < 1e-3


def test_header_without_celestial_wcs_is_an_error():
    with pytest.raises(SkyWcsError, match="no celestial WCS"):
        skywcs_from_fits_header(fits.Header([("OBJECT", "x")]))
