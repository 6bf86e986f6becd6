"""PhotoCalib conversions, real PhotoCalib files, legacy FLUXMAG0, FGCM zeropoint tables."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import starlink.Ast as Ast
from astropy.io import fits
from conftest import real_path
from hypothesis import given, settings
from hypothesis import strategies as st

from daskcal.calib.boundedfield import (
    BBox,
    ChebyshevBoundedField,
    ProductBoundedField,
    TransformBoundedField,
    UnsupportedCalibration,
)
from daskcal.calib.fgcm import (
    fgcm_photocalib,
    fgcm_photocalibs,
    read_fgcm_zeropoints,
    write_fgcm_zeropoints,
)
from daskcal.calib.photocalib import (
    F_AB_NJY,
    CalibrationError,
    PhotoCalib,
    photocalib_from_archive,
    photocalib_from_fluxmag0,
    read_photocalib,
    write_photocalib,
)
from daskcal.io.archive import ArchiveWriter, read_archive

AFW_V1 = "lsst/afw/tests/data/photoCalib-version1.fits"
CALEXP = "lsst/obs_base/tests/data/calexp.fits"
CFHT = "lsst/jointcal/tests/data/cfht_minimal/repo/calexp/06AL01/D3/2006-05-20/r/"
MOSAIC = "lsst/meas_mosaic/tests/data/8766/"


def test_ab_reference_flux(golden):
    assert golden["referenceFlux_nJy"] == F_AB_NJY
    assert 2.5 * math.log10(F_AB_NJY) == pytest.approx(31.4, abs=1e-13)


@pytest.mark.parametrize("vectorised", [False, True])
def test_golden_conversions_both_error_rules(golden, vectorised):
    ref = golden["photocalib"]
    pc = PhotoCalib(ref["calibration"], ref["calibrationErr"])
    cases = ref["cases"]
    flux = [c["instFlux"] for c in cases]
    err = [c["instFluxErr"] for c in cases]
    if not vectorised:
        results = [_convert(pc, f, e) for f, e in zip(flux, err, strict=True)]
    else:
        out = _convert(pc, np.array(flux), np.array(err))
        results = [tuple(v[i] for v in out) for i in range(len(cases))]
    for case, (njy, njy8, njy29, mag, mag8, mag29) in zip(cases, results, strict=True):
        assert njy == pytest.approx(case["nJy"], rel=1e-14)
        assert njy8 == pytest.approx(case["nJyErr_pre_v29"], rel=1e-13)
        assert njy29 == pytest.approx(case["nJyErr"], rel=1e-13)
        assert mag == pytest.approx(case["mag"], abs=1e-12)
        assert mag8 == pytest.approx(case["magErr_pre_v29"], abs=1e-11)
        assert mag29 == pytest.approx(case["magErr"], abs=1e-11)


def _convert(pc, flux, err):
    njy, njy_err8 = pc.instflux_to_nanojansky(flux, err)
    _, njy_err29 = pc.instflux_to_nanojansky(flux, err, error_rule="afw29")
    mag, mag_err8 = pc.instflux_to_magnitude(flux, err, error_rule="hscpipe8")
    _, mag_err29 = pc.instflux_to_magnitude(flux, err, error_rule="afw29")
    return njy, njy_err8, njy_err29, mag, mag_err8, mag_err29


def test_linear_x_photocalib(golden):
    case = golden["photocalib"]["linearX"]
    field = ChebyshevBoundedField(BBox(*case["bbox"]), case["coefficients_yx"])
    pc = PhotoCalib(1000.0, 10.0, is_constant=False, field=field)
    x, y = case["point"]
    assert pc.evaluate(x, y) == pytest.approx(case["calibration"], rel=1e-14)
    mag, _ = pc.instflux_to_magnitude(1.0, None, x, y)
    assert mag == pytest.approx(case["mag_instFlux1"], abs=1e-11)
    # sigma_c / c uses the local c, not the mean
    _, njy_err = pc.instflux_to_nanojansky(2.0, 0.1, x, y)
    c = case["calibration"]
    assert njy_err == pytest.approx(2 * c * math.hypot(0.05, 10.0 / c), rel=1e-13)
    with pytest.raises(ValueError, match="positions"):
        pc.evaluate()


def test_magnitude_edge_cases_without_warnings():
    pc = PhotoCalib(2.0, 0.1)
    mag, mag_err = pc.instflux_to_magnitude(np.array([-5.0, 0.0, np.nan, 10.0]), np.ones(4))
    assert np.isnan(mag[0]) and mag[1] == np.inf and np.isnan(mag[2])
    assert mag[3] == pytest.approx(31.4 - 2.5 * math.log10(20.0), abs=1e-12)
    assert mag_err[1] == np.inf
    njy, njy_err = pc.instflux_to_nanojansky(-5.0, 1.0)
    assert njy == -10.0 and njy_err == pytest.approx(10.0 * math.hypot(0.2, 0.05), rel=1e-14)
    assert pc.instflux_to_nanojansky(3.0)[1] is None
    with pytest.raises(ValueError, match="error_rule"):
        pc.instflux_to_magnitude(1.0, 0.1, error_rule="afw30")
    with pytest.raises(ValueError, match="bounded field"):
        PhotoCalib(1.0, 0.0, is_constant=False)


@settings(max_examples=50, deadline=None)
@given(
    st.floats(1e-3, 1e9),
    st.floats(0, 1e6),
    st.floats(1e-3, 1e3),
    st.floats(0, 10),
    st.sampled_from(["hscpipe8", "afw29"]),
)
def test_magnitude_and_flux_errors_agree(flux, err, c, sigma, rule):
    pc = PhotoCalib(c, sigma)
    njy, njy_err = pc.instflux_to_nanojansky(flux, err, error_rule=rule)
    mag, mag_err = pc.instflux_to_magnitude(flux, err, error_rule=rule)
    assert mag == pytest.approx(31.4 - 2.5 * math.log10(flux * c), abs=1e-9)
    assert mag_err == pytest.approx(2.5 / math.log(10) * njy_err / njy, rel=1e-12, abs=1e-300)


def test_real_afw_photocalib_version1():
    pc = read_photocalib(real_path(AFW_V1))
    assert (pc.mean, pc.err, pc.is_constant) == (123.0, 45.0, True)
    assert pc.evaluate(np.array([0.0, 100.0]), np.array([5.0, 7.0])).tolist() == [123.0, 123.0]


def test_real_calexp_photocalib():
    pc = read_photocalib(real_path(CALEXP))  # picked by PHOTOCALIB_ID
    assert pc.is_constant
    assert pc.mean == pytest.approx(1.99408751, rel=1e-8)
    assert pc.err == pytest.approx(0.00034857, abs=5e-9)
    assert pc.evaluate_grid(0, 64, 0, 32).shape == (32, 64)


def test_real_cfht_calexp_photocalib(golden):
    ref = golden["lsst_computed"]["cfht_849375_ccd12"]
    pc = read_photocalib(real_path(CFHT + "calexp-849375-12.fits.fz"))
    assert pc.mean == pytest.approx(ref["calibrationMean"], rel=1e-8)
    assert pc.err == pytest.approx(ref["calibrationErr"], abs=5e-9)  # golden has 8 decimals
    # zero point: the magnitude of one count
    zero_point = float(pc.instflux_to_magnitude(1.0)[0])
    assert zero_point == pytest.approx(31.4 - 2.5 * math.log10(pc.mean), abs=1e-12)
    assert zero_point == pytest.approx(ref["derived_ZP"], abs=1e-7)
    assert zero_point == pytest.approx(ref["visitSummary_zeroPoint_float32"], abs=1e-5)
    summary = read_photocalib(real_path(CFHT + "visitSummary-849375.fits"))
    assert summary.mean == pc.mean and summary.err == pc.err


def test_meas_mosaic_fcr_fluxmag0(golden):
    ref = golden["lsst_computed"]["meas_mosaic_fcr_11506_049"]
    pc = read_photocalib(real_path(MOSAIC + "fcr-0011506-049.fits"))
    assert pc.is_constant
    assert pc.mean == pytest.approx(ref["PhotoCalib_calibrationMean"], rel=1e-7)
    assert pc.err == pytest.approx(ref["PhotoCalib_calibrationErr"], rel=1e-6)
    direct = photocalib_from_fluxmag0(ref["FLUXMAG0"], ref["FLUXMAG0ERR"])
    assert direct.mean == F_AB_NJY / ref["FLUXMAG0"]
    with pytest.raises(ValueError, match="FLUXMAG0"):
        photocalib_from_fluxmag0(0.0)


def test_meas_mosaic_fluxfit_photocalib_refused():
    path = real_path(MOSAIC + "jointcal_photoCalib-0011506-049.fits")
    with pytest.raises(UnsupportedCalibration) as err:
        read_photocalib(path)
    assert str(path) in str(err.value) and "FluxFitBoundedField" in str(err.value)


def test_legacy_exposure_with_fluxmag0_header(tmp_path):
    path = tmp_path / "old-calexp.fits"
    primary = fits.PrimaryHDU()
    primary.header["FLUXMAG0"] = 1.0e12
    primary.header["HIERARCH FLUXMAG0ERR"] = 1.0e10
    fits.HDUList([primary, fits.ImageHDU(np.zeros((4, 4), np.float32))]).writeto(path)
    pc = read_photocalib(path)
    assert pc.mean == pytest.approx(3.6307805477010024, rel=1e-15)
    assert pc.err == pytest.approx(F_AB_NJY * 1e10 / 1e24, rel=1e-15)


def test_file_without_photocalib_names_file(tmp_path):
    path = tmp_path / "nothing.fits"
    fits.PrimaryHDU().writeto(path)
    with pytest.raises(CalibrationError, match="nothing.fits"):
        read_photocalib(path)


def _photocalibs() -> dict[str, PhotoCalib]:
    bbox = BBox(0, 0, 2047, 4175)
    cheb = ChebyshevBoundedField(bbox, [[0.5, 0.01, 0.002], [-0.03, 0.004, 0.0]])
    poly = Ast.PolyMap(np.array([[0.4, 1, 0, 0], [1e-5, 1, 1, 0], [-2e-6, 1, 0, 1]]), None, "")
    trans = TransformBoundedField.from_mapping(bbox, poly)
    return {
        "constant": PhotoCalib(0.47, 0.0012),
        "chebyshev": PhotoCalib(cheb.mean(), 0.003, False, cheb),
        "product": PhotoCalib(0.2, 0.001, False, ProductBoundedField([cheb, trans])),
        "transform": PhotoCalib(0.41, 0.002, False, trans),
    }


@pytest.mark.parametrize("kind", ["constant", "chebyshev", "product", "transform"])
def test_write_read_roundtrip(tmp_path, kind):
    pc = _photocalibs()[kind]
    path = tmp_path / f"{kind}.fits"
    write_photocalib(path, pc)
    back = read_photocalib(path)
    assert (back.mean, back.err, back.is_constant) == (pc.mean, pc.err, pc.is_constant)
    x, y = np.array([0.0, 1023.5, 2047.0]), np.array([0.0, 2087.5, 4175.0])
    np.testing.assert_array_equal(back.evaluate(x, y), pc.evaluate(x, y))
    np.testing.assert_array_equal(
        back.evaluate_grid(100, 140, 200, 210), pc.evaluate_grid(100, 140, 200, 210)
    )
    if not pc.is_constant:
        assert back.field.to_dict() == pc.field.to_dict()
    with pytest.raises(FileExistsError):
        write_photocalib(path, pc)


def test_written_schema_mirrors_afw_file(tmp_path):
    path = tmp_path / "pc.fits"
    write_photocalib(path, PhotoCalib(123.0, 45.0))
    with fits.open(path) as mine, fits.open(real_path(AFW_V1)) as theirs:
        assert len(mine) == len(theirs) == 4
        for i in (1, 2, 3):
            a, b = mine[i], theirs[i]
            assert a.columns.names == b.columns.names
            assert a.columns.formats == b.columns.formats
            assert a.columns.units == b.columns.units
            for key in ("EXTTYPE", "AR_NAME", "TFLAG1", "TFDOC1", "TDOC2", "TDOC4", "TDOC5"):
                assert a.header.get(key) == b.header.get(key), (i, key)
            assert a.data.tolist() == b.data.tolist() or i == 1
        index = [tuple(r)[1:] for r in mine[1].data]
        assert index == [tuple(r)[1:] for r in sorted(theirs[1].data, key=lambda r: r[0])]


def test_to_constant():
    pc = _photocalibs()["chebyshev"]
    const = pc.to_constant()
    assert const.is_constant and (const.mean, const.err) == (pc.mean, pc.err)
    assert const.evaluate_grid(0, 3, 0, 2).tolist() == [[pc.mean] * 3] * 2
    assert const.field.bbox.is_empty


# ---------------------------------------------------------------- FGCM zeropoints


def _fgcm_rows():
    xymax = [2047.0, 4175.0]
    # a flux-space zero-point field: 10**(-0.4 zpt) at the centre with a small gradient
    cheb = np.array([[10 ** (-0.4 * 27.0), 1e-13, 5e-14], [2e-13, 0.0, 0.0], [-3e-14, 0.0, 0.0]])
    common = {"fgcmfZptChebXyMax": xymax, "filtername": "HSC-R"}
    return [
        {"visit": 1228, "ccd": 49, "fgcmFlag": 1, "fgcmZpt": 27.0, "fgcmZptErr": 0.01,
         "fgcmfZptCheb": cheb.ravel(), **common},
        {"visit": 1228, "ccd": 50, "fgcmFlag": 16, "fgcmZpt": 0.0, "fgcmZptErr": 0.0,
         "fgcmfZptCheb": np.zeros(9), **common},
        {"visit": 1230, "ccd": 49, "fgcmFlag": 4, "fgcmZpt": 27.5, "fgcmZptErr": 0.02,
         "fgcmfZptCheb": (cheb * 10 ** (-0.2)).ravel(), **common},
    ]  # fmt: skip


def test_fgcm_zeropoints_roundtrip_and_rule(tmp_path):
    path = tmp_path / "fgcmZeropoints.fits"
    write_fgcm_zeropoints(path, _fgcm_rows())
    table = read_fgcm_zeropoints(path)
    assert table["visit"].tolist() == [1228, 1228, 1230]
    assert table["filtername"].tolist() == ["HSC-R"] * 3
    np.testing.assert_array_equal(table["fgcmfZptCheb"][0], _fgcm_rows()[0]["fgcmfZptCheb"])
    assert table["fgcmZpt"].dtype.itemsize == 4 and np.isnan(table["fgcmGry"]).all()
    calibs = fgcm_photocalibs(table, offsets={"HSC-R": 0.1}, scalings={(1230, 49): 1.05})
    assert sorted(calibs) == [(1228, 49), (1230, 49)]  # flag 16: no zero point
    pc = calibs[(1228, 49)]
    assert not pc.is_constant and pc.field.bbox == BBox(0, 0, 2047, 4175)
    factor = F_AB_NJY * 10 ** (-0.04)  # AB flux units -> nJy, reference offset 0.1 mag
    coeffs = np.asarray(_fgcm_rows()[0]["fgcmfZptCheb"]).reshape(3, 3) * factor
    centre = pc.evaluate(1023.5, 2087.5)  # the centre of the box: x' = y' = 0, T_2 = -1
    assert centre == pytest.approx(coeffs[0, 0] - coeffs[0, 2] - coeffs[2, 0], rel=1e-12)
    zp = 27.1 - 2.5 * math.log10(1 - (5e-14 - 3e-14) / 10 ** (-10.8))
    assert pc.instflux_to_magnitude(1.0, None, 1023.5, 2087.5)[0] == pytest.approx(zp, abs=1e-9)
    # cbar: the analytic mean over the box (mean of T_2 on [-1, 1] is -1/3)
    assert pc.mean == pytest.approx(coeffs[0, 0] - coeffs[0, 2] / 3 - coeffs[2, 0] / 3, rel=1e-12)
    assert pc.err == pytest.approx(math.log(10) / 2.5 * pc.mean * 0.01, rel=1e-6)
    assert pc.evaluate(2047.0, 2087.5) > pc.evaluate(0.0, 2087.5)  # positive x gradient
    scaled = calibs[(1230, 49)]
    assert scaled.evaluate(1023.5, 2087.5) == pytest.approx(
        1.05 * 10 ** (-0.2) * centre, rel=1e-12
    )


def test_fgcm_constant_rows_and_refusals(tmp_path):
    rows = [{k: v for k, v in r.items() if not k.startswith("fgcmfZpt")} for r in _fgcm_rows()]
    path = tmp_path / "constant.fits"
    write_fgcm_zeropoints(path, {k: [r[k] for r in rows] for k in rows[0]})  # column form
    calibs = fgcm_photocalibs(read_fgcm_zeropoints(path))
    pc = calibs[(1230, 49)]
    assert pc.is_constant
    assert pc.mean == pytest.approx(F_AB_NJY * 10 ** (-0.4 * 27.5), rel=1e-12)
    assert pc.instflux_to_magnitude(1.0)[0] == pytest.approx(27.5, abs=1e-9)
    with pytest.raises(UnsupportedCalibration, match="fgcmfZptSstarCheb"):
        fgcm_photocalib({**_fgcm_rows()[0], "fgcmfZptSstarCheb": np.ones(9)})
    with pytest.raises(ValueError, match="missing required"):
        write_fgcm_zeropoints(tmp_path / "bad.fits", [{"visit": 1, "ccd": 2}])


def test_add_to_real_exposure_archive():
    path = real_path(CALEXP)
    with fits.open(path) as hdul:
        archive = read_archive(hdul, str(path))
        original = photocalib_from_archive(archive, 246)
        writer = ArchiveWriter(base=archive)
        new_id = PhotoCalib(3.5, 0.01).add_to_archive(writer)
        buf = io.BytesIO()
        fits.HDUList([fits.PrimaryHDU(), *writer.hdus()]).writeto(buf)
    assert new_id == max(archive.ids) + 1
    buf.seek(0)
    with fits.open(buf) as hdul:
        again = read_archive(hdul)
        new = photocalib_from_archive(again, new_id)
        old = photocalib_from_archive(again, 246)
        assert again.class_name(new_id + 1) == "ChebyshevBoundedField"
    assert (new.mean, new.err, new.is_constant) == (3.5, 0.01, True)
    assert (old.mean, old.err) == (original.mean, original.err)
