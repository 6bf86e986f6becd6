"""Bounded fields: Chebyshev / Product / Transform evaluation, persistence, real files."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
import starlink.Ast as Ast
from astropy.io import fits
from conftest import real_path
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.polynomial import chebyshev as npcheb

from daskcal.calib.boundedfield import (
    BBox,
    ChebyshevBoundedField,
    ProductBoundedField,
    TransformBoundedField,
    UnsupportedCalibration,
    bounded_field_from_dict,
    read_bounded_field,
)
from daskcal.io.archive import ArchiveWriter, read_archive

CALEXP = "lsst/obs_base/tests/data/calexp.fits"
FLUXFIT = "lsst/meas_mosaic/tests/data/8766/jointcal_photoCalib-0011506-049.fits"


def direct_sum(bbox, coeffs, x, y):
    """f(x, y) at one point by an explicit double sum of 1-d chebval terms."""
    min_x, min_y, max_x, max_y = bbox
    xr = (x - (min_x + max_x) / 2) * 2 / (max_x - min_x + 1)
    yr = (y - (min_y + max_y) / 2) * 2 / (max_y - min_y + 1)
    total = 0.0
    for j, row in enumerate(np.asarray(coeffs, float)):
        t_j = npcheb.chebval(yr, [0.0] * j + [1.0])
        total += t_j * npcheb.chebval(xr, row)
    return total


def roundtrip(writer: ArchiveWriter):
    """Write the archive to memory and open it again, as a reader of a file would."""
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), *writer.hdus()]).writeto(buf)
    buf.seek(0)
    return fits.open(buf)


def poly_field(bbox=None):
    """f = 1.5 - 0.5 x + 1.0 y (+ 1e-3 x y) as an AST PolyMap."""
    bbox = bbox if bbox is not None else BBox(0, 0, 99, 49)
    coeff = np.array([[1.5, 1, 0, 0], [-0.5, 1, 1, 0], [1.0, 1, 0, 1], [1e-3, 1, 1, 1]])
    return TransformBoundedField.from_mapping(bbox, Ast.PolyMap(coeff, None, "IterInverse=0"))


def test_linear_x_golden(golden):
    case = golden["photocalib"]["linearX"]
    field = ChebyshevBoundedField(BBox(*case["bbox"]), case["coefficients_yx"])
    x, y = case["point"]
    assert field.evaluate(x, y) == pytest.approx(case["calibration"], rel=1e-14)
    assert field.evaluate_grid(x, x + 1, y, y + 1)[0, 0] == pytest.approx(
        case["calibration"], rel=1e-14
    )


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 5),
    st.integers(1, 5),
    st.integers(-50, 50),
    st.integers(-50, 50),
    st.integers(0, 300),
    st.integers(0, 300),
    st.integers(0, 2**32 - 1),
)
def test_chebyshev_grid_equals_points(ny, nx, min_x, min_y, w, h, seed):
    rng = np.random.default_rng(seed)
    bbox = BBox(min_x, min_y, min_x + w, min_y + h)
    field = ChebyshevBoundedField(bbox, rng.normal(size=(ny, nx)))
    x0, y0 = min_x - 3, min_y + h // 2
    grid = field.evaluate_grid(x0, x0 + 7, y0, y0 + 5)
    xx, yy = np.meshgrid(np.arange(x0, x0 + 7), np.arange(y0, y0 + 5))
    assert grid.shape == (5, 7)
    np.testing.assert_allclose(grid, field.evaluate(xx, yy), rtol=1e-12, atol=1e-12)
    # independent code path: explicit sum of 1-d chebval terms at scalars
    for px, py in [(x0, y0), (min_x + w / 3, min_y + h), (min_x - 1.25, min_y + 0.5)]:
        expected = direct_sum(bbox, field.coefficients, px, py)
        assert field.evaluate(px, py) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_chebyshev_mean_matches_integral_and_pixel_average():
    rng = np.random.default_rng(3)
    coeffs = rng.normal(size=(4, 3))
    field = ChebyshevBoundedField(BBox(0, 0, 2047, 4175), coeffs)
    # independent: integrate each T_n over [-1, 1] with chebint
    ints = [
        np.diff(npcheb.chebval([-1, 1], npcheb.chebint([0] * n + [1])))[0] / 2 for n in range(4)
    ]
    expected = sum(coeffs[j, i] * ints[j] * ints[i] for j in range(4) for i in range(3))
    assert field.mean() == pytest.approx(expected, rel=1e-13)
    # the pixel-centre average over the (half-pixel widened) box converges to it
    assert field.evaluate_grid(0, 2048, 0, 4176).mean() == pytest.approx(expected, rel=1e-6)


def test_empty_bbox_is_constant():
    field = ChebyshevBoundedField.constant(1.25)
    assert field.bbox.is_empty
    assert field.evaluate(np.array([0.0, 1e4]), 3.0).tolist() == [1.25, 1.25]
    assert field.evaluate_grid(5, 8, 0, 2).tolist() == [[1.25] * 3] * 2
    assert field.mean() == 1.25
    with pytest.raises(ValueError, match="must be constant"):
        ChebyshevBoundedField(BBox(0, 0, -1, -1), [[1.0, 2.0]])


def test_real_calexp_apcorr_fields():
    path = real_path(CALEXP)
    with fits.open(path) as hdul:
        archive = read_archive(hdul, str(path))
        apcorr = archive[archive.find("ApCorrMap")[0]].catalogs[0]
        fields = {
            str(n): read_bounded_field(archive, int(i))
            for n, i in zip(apcorr["name"], apcorr["field"], strict=True)
        }
        names = [str(n) for n in apcorr["name"]]
        psf_id = int(apcorr["field"][names.index("base_PsfFlux_instFlux")])
        raw = np.array(archive[psf_id].catalogs[0]["coefficients"][0])
        gauss = read_bounded_field(archive, 251)  # first ApCorrMap entry, read by id
    assert len(fields) == 46
    assert gauss.coefficients[0, 0] == pytest.approx(1.15400707, rel=1e-8)
    psf = fields["base_PsfFlux_instFlux"]
    assert psf.bbox == BBox(0, 0, 2047, 4175)
    assert psf.coefficients.shape == (3, 3)
    np.testing.assert_array_equal(psf.coefficients.ravel(), raw)  # y-major, as stored
    xx, yy = np.meshgrid(np.arange(1000, 1040), np.arange(3000, 3020))
    corners = (np.array([0.0, 2047, 0, 2047, 1023.5]), np.array([0.0, 0, 4175, 4175, 2087.5]))
    for field in fields.values():
        np.testing.assert_allclose(
            field.evaluate_grid(1000, 1040, 3000, 3020), field.evaluate(xx, yy), rtol=1e-12
        )
        for px, py in zip(*corners, strict=True):
            assert field.evaluate(px, py) == pytest.approx(
                direct_sum(field.bbox, field.coefficients, px, py), rel=1e-12
            )
    # aperture corrections of the PSF flux are close to unity over the CCD
    values = psf.evaluate(*corners)
    assert np.all((values > 0.9) & (values < 1.1))


def test_product_field():
    bbox = BBox(0, 0, 63, 31)
    a = ChebyshevBoundedField(bbox, [[2.0, 0.5], [0.1, 0.0]])
    b = ChebyshevBoundedField(bbox, [[1.0, 0.0, 0.25]])
    prod = ProductBoundedField([a, b, poly_field(bbox)])
    x, y = np.array([0.0, 10.5, 63.0]), np.array([0.0, 7.0, 31.0])
    expected = a.evaluate(x, y) * b.evaluate(x, y) * poly_field(bbox).evaluate(x, y)
    np.testing.assert_allclose(prod.evaluate(x, y), expected, rtol=1e-14)
    xx, yy = np.meshgrid(np.arange(64.0), np.arange(32.0))
    np.testing.assert_allclose(prod.evaluate_grid(0, 64, 0, 32), prod.evaluate(xx, yy), rtol=1e-12)
    assert prod.bbox == bbox
    with pytest.raises(NotImplementedError):
        prod.mean()
    with pytest.raises(ValueError, match="different boxes"):
        ProductBoundedField([a, ChebyshevBoundedField(BBox(0, 0, 9, 9), [[1.0]])])


def test_transform_field_evaluates_ast_mapping():
    field = poly_field()
    x, y = np.array([0.0, 10.5, 99.0, 3.0]), np.array([0.0, 3.0, 49.0, 40.0])
    np.testing.assert_allclose(field.evaluate(x, y), 1.5 - 0.5 * x + y + 1e-3 * x * y, rtol=1e-14)
    assert field.evaluate(2.0, 4.0) == pytest.approx(1.5 - 1.0 + 4.0 + 8e-3, rel=1e-14)
    xx, yy = np.meshgrid(np.arange(-2.0, 101.0), np.arange(10.0, 20.0))
    np.testing.assert_allclose(field.evaluate_grid(-2, 101, 10, 20), field.evaluate(xx, yy))
    clone = pickle.loads(pickle.dumps(field))  # the pyast object is rebuilt, not pickled
    np.testing.assert_array_equal(clone.evaluate(x, y), field.evaluate(x, y))
    frameset = Ast.FrameSet(Ast.Frame(2, "Domain=PIXELS"))
    frameset.addframe(1, field.mapping, Ast.Frame(1, "Domain=CALIB"))
    via_frameset = TransformBoundedField.from_mapping(field.bbox, frameset)
    np.testing.assert_array_equal(via_frameset.evaluate(x, y), field.evaluate(x, y))
    zoom = TransformBoundedField.from_mapping(BBox(0, 0, 9, 9), Ast.ZoomMap(2, 3.0))
    assert zoom.evaluate(2.0, 5.0) == 6.0  # output axis 1 of a 2 -> 2 mapping


def test_to_dict_is_json_and_inverts():
    bbox = BBox(0, 0, 99, 49)
    prod = ProductBoundedField([ChebyshevBoundedField(bbox, [[1.0, 2.0]]), poly_field(bbox)])
    again = ProductBoundedField.from_dict(json.loads(json.dumps(prod.to_dict())))
    assert isinstance(again, ProductBoundedField)
    assert again.to_dict() == prod.to_dict()
    np.testing.assert_array_equal(again.evaluate_grid(0, 9, 0, 4), prod.evaluate_grid(0, 9, 0, 4))
    with pytest.raises(ValueError, match="unknown"):
        bounded_field_from_dict({"kind": "spline"})


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=4),
    st.integers(0, 2**32 - 1),
)
def test_chebyshev_archive_roundtrip(shapes, seed):
    rng = np.random.default_rng(seed)
    bbox = BBox(int(rng.integers(-5, 5)), 0, 120, int(rng.integers(1, 90)))
    originals = [ChebyshevBoundedField(bbox, rng.normal(size=s)) for s in shapes]
    writer = ArchiveWriter()
    ids = [f.add_to_archive(writer) for f in originals]
    with roundtrip(writer) as hdul:
        archive = read_archive(hdul)
        for obj_id, field in zip(ids, originals, strict=True):
            back = read_bounded_field(archive, obj_id)
            assert back.bbox == bbox
            np.testing.assert_array_equal(back.coefficients, field.coefficients)


def test_product_and_transform_archive_roundtrip():
    bbox = BBox(0, 0, 99, 49)
    prod = ProductBoundedField(
        [ChebyshevBoundedField(bbox, [[1.0, 0.2], [0.3, 0.0]]), poly_field(bbox)]
    )
    writer = ArchiveWriter()
    prod_id = prod.add_to_archive(writer)
    const_id = ChebyshevBoundedField.constant(7.0).add_to_archive(writer)
    with roundtrip(writer) as hdul:
        archive = read_archive(hdul)
        assert archive.class_name(prod_id) == "ProductBoundedField"
        factor_ids = archive[prod_id].catalogs[0]["id"].tolist()
        assert factor_ids == [prod_id + 1, prod_id + 2]  # afw numbers the product first
        cat = archive[prod_id + 2].catalogs[0]
        assert cat.bytes("frameSet").startswith(b"1 TransformPoint2ToGeneric Begin PolyMap")
        assert [cat[k][0] for k in ("bbox_min_x", "bbox_min_y", "bbox_max_x", "bbox_max_y")] == [
            0,
            0,
            99,
            49,
        ]
        back = read_bounded_field(archive, prod_id)
        const = read_bounded_field(archive, const_id)
    assert back.to_dict() == prod.to_dict()
    np.testing.assert_array_equal(
        back.evaluate_grid(0, 100, 0, 50), prod.evaluate_grid(0, 100, 0, 50)
    )
    assert const.bbox == BBox(0, 0, -1, -1) and const.evaluate(5, 5) == 7.0


def test_transform_bad_header():
    with pytest.raises(ValueError, match="unexpected TransformBoundedField header"):
        TransformBoundedField.from_bytes(BBox(0, 0, 1, 1), b"1 SkyWcs 0 Begin FrameSet", "f.fits")


def test_fluxfit_field_is_refused_naming_file_and_class():
    path = real_path(FLUXFIT)
    with fits.open(path) as hdul:
        archive = read_archive(hdul, str(path))
        (field_id,) = archive.find("FluxFitBoundedField")
        with pytest.raises(UnsupportedCalibration) as err:
            read_bounded_field(archive, field_id)
        assert str(path) in str(err.value) and "FluxFitBoundedField" in str(err.value)
        with pytest.raises(UnsupportedCalibration, match="SkyWcs"):
            read_bounded_field(archive, archive.find("SkyWcs")[0])
    assert issubclass(UnsupportedCalibration, ValueError)
