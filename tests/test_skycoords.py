"""Lazy ra/dec coordinates: PARENT pixels through the SkyWcs, evaluated only where asked."""

from __future__ import annotations

import pickle
import warnings

import cloudpickle
import dask
import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from astropy.wcs import WCS
from conftest import real_path
from dask.base import tokenize

import daskcal.lazy.coords as skycoords
from daskcal import calibrated_exposures, open_exposures
from daskcal.calib.skywcs import SkyWcs, read_skywcs
from daskcal.config import CalibrateConfig
from daskcal.io.archive import ArchiveWriter
from daskcal.io.exposure import exposure_archive, write_exposure, write_exposure_dataset
from daskcal.lazy.coords import SkyCoordIndex, sky_coord_arrays, sky_transform, with_sky_coords
from daskcal.lazy.inputs import read_exposure

CALEXP = "lsst/obs_base/tests/data/calexp.fits"
EXPOSURE_V2 = "lsst/afw/tests/data/exposure-version-2.fits"  # a plain TAN SkyWcs
JOINTCAL = "lsst/jointcal/tests/data/output/HSC-R/9615/jointcal_wcs-0023900-049.fits"


def _grid(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """PARENT (x, y) of every pixel, from the x/y coords."""
    return np.meshgrid(ds["x"].values, ds["y"].values)


def _at_offset(source, out, xy0) -> None:
    """``source`` rewritten with its pixels at ``xy0`` (same archive, same SkyWcs)."""
    ds = read_exposure(source)
    planes = [ds[p].values for p in ("image", "mask", "variance")]
    with exposure_archive(source) as archive:
        write_exposure(out, *planes, primary_header=ds.attrs["header"],
                       mask_planes=ds.attrs["mask_planes"], xy0=xy0,
                       archive_hdus=ArchiveWriter(base=archive).hdus())  # fmt: skip


@pytest.fixture
def evaluated(monkeypatch) -> list[int]:
    """Number of points of every SkyWcs.pixel_to_sky call, in order."""
    calls: list[int] = []
    original = SkyWcs.pixel_to_sky

    def counting(self, x, y):
        calls.append(int(np.size(np.broadcast_arrays(x, y)[0])))
        return original(self, x, y)

    monkeypatch.setattr(SkyWcs, "pixel_to_sky", counting)
    return calls


@pytest.fixture(scope="module")
def offset_calexp(tmp_path_factory):
    """The real HSC calexp (64x32, xy0 = 0) rewritten at xy0 = (1000, 2000)."""
    out = tmp_path_factory.mktemp("offset") / "calexp.fits"
    _at_offset(real_path(CALEXP), out, (1000, 2000))
    return out


def test_real_calexp_at_an_offset_gives_pixel_to_sky_at_parent_pixels(offset_calexp):
    ds = read_exposure(offset_calexp)
    assert ds.attrs["xy0"] == (1000, 2000) and isinstance(ds.xindexes["ra"], SkyCoordIndex)
    wcs = read_skywcs(real_path(CALEXP))
    x, y = np.meshgrid(np.arange(64) + 1000, np.arange(32) + 2000)
    ra, dec = wcs.pixel_to_sky(x, y)
    np.testing.assert_array_equal(ds["ra"].values, ra)
    np.testing.assert_array_equal(ds["dec"].values, dec)
    assert ds["ra"].attrs["units"] == "deg" and ds["ra"].dims == ("y", "x")
    at_origin = read_exposure(real_path(CALEXP))  # the same SkyWcs at LOCAL = PARENT
    assert np.abs(at_origin["dec"].values - dec).min() > 0.01  # 2000 rows off: not the same
    np.testing.assert_array_equal(at_origin["ra"].values, wcs.pixel_to_sky(*_grid(at_origin))[0])


def test_slices_stay_lazy_and_match_the_whole_grid(offset_calexp):
    ds = read_exposure(offset_calexp)
    whole = ds["ra"].values, ds["dec"].values
    for rows, columns in [(slice(5, 20, 3), slice(60, 10, -7)), (slice(None), slice(3, 4))]:
        part = ds.isel(y=rows, x=columns)
        transform = sky_transform(part)
        assert transform is not None and transform.dim_size == {"y": part.sizes["y"],
                                                                "x": part.sizes["x"]}  # fmt: skip
        np.testing.assert_array_equal(part["ra"].values, whole[0][rows, columns])
        np.testing.assert_array_equal(part["dec"].values, whole[1][rows, columns])
    by_label = ds.sel(x=slice(1010, 1019), y=slice(2030, None))
    assert sky_transform(by_label).xy0 == (1010, 2030)
    np.testing.assert_array_equal(by_label["ra"].values, whole[0][30:, 10:20])
    points = ds.isel(y=xr.Variable("p", [0, 31]), x=xr.Variable("p", [63, 0]))  # evaluated
    assert sky_transform(points) is None
    np.testing.assert_array_equal(points["dec"].values, [whole[1][0, 63], whole[1][31, 0]])


def test_nearest_pixel_of_sky_positions(offset_calexp):
    ds = read_exposure(offset_calexp)
    rows, columns = np.array([3, 17, 31]), np.array([60, 0, 22])
    ra, dec = ds["ra"].values[rows, columns], ds["dec"].values[rows, columns]
    found = ds.sel(ra=xr.Variable("p", ra), dec=xr.Variable("p", dec), method="nearest")
    assert found["x"].values.tolist() == (columns + 1000).tolist()
    assert found["y"].values.tolist() == (rows + 2000).tolist()


def test_tan_skywcs_agrees_with_astropy(tmp_path):
    """An independent evaluation: astropy on the FITS TAN cards of the same exposure."""
    source = real_path(EXPOSURE_V2)
    with fits.open(source) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy's notes on afw's extra cards
        wcs = WCS(hdul[1].header)
    assert list(wcs.wcs.ctype) == ["RA---TAN", "DEC--TAN"] and not wcs.sip
    out = tmp_path / "offset.fits"
    _at_offset(source, out, (37, -5))
    ds = read_exposure(out)
    x, y = _grid(ds)
    assert (x[0, 0], y[0, 0]) == (37, -5)
    ra, dec = wcs.all_pix2world(x, y, 0)  # LOCAL = PARENT in the source file
    east = (ds["ra"].values - ra + 180.0) % 360.0 - 180.0
    assert np.abs(east).max() < 1e-9 and np.abs(ds["dec"].values - dec).max() < 1e-9


def test_nothing_is_read_or_evaluated_until_asked(offset_calexp, evaluated, monkeypatch):
    reads = []
    monkeypatch.setattr(skycoords, "read_skywcs", lambda p: reads.append(p) or read_skywcs(p))
    skycoords._file_skywcs.cache_clear()
    ds = read_exposure(offset_calexp)
    part = ds.isel(y=slice(0, 10), x=slice(0, 10))
    _ = ds["image"].isel(y=slice(0, 4)).values
    computed = ds.compute()  # pixels only: ra/dec stay lazy, like index coords
    tokens = tokenize(ds), tokenize(computed), tokenize(part)
    assert reads == [] and evaluated == [] and len(set(tokens)) == 3
    assert sky_transform(computed) is sky_transform(ds)
    ra = part["ra"].values
    assert reads == [str(offset_calexp)] and evaluated == [100] and ra.shape == (10, 10)
    _ = part["dec"].values  # evaluated together with ra
    assert evaluated == [100]
    _ = part["ra"].values  # asked for again: evaluated again (nothing is held for long)
    assert evaluated == [100, 100]
    _ = ds["dec"][7, 3].values  # one pixel (its ra and dec coords too)
    assert evaluated[:2] == [100, 100] and set(evaluated[2:]) == {1}
    _ = read_exposure(offset_calexp)["ra"][0, 0].values
    assert len(reads) == 1  # the SkyWcs of a file is read once per process


def test_datasets_with_sky_coords_pickle(offset_calexp):
    ds = read_exposure(offset_calexp)
    expected = ds["ra"].values  # the SkyWcs (and its pyast FrameSet) exist now
    transform = sky_transform(ds)
    assert len(pickle.dumps(transform)) < 1000  # the file name, not the AST text
    jointcal = with_sky_coords(ds, read_skywcs(real_path(JOINTCAL)))
    jointcal_ra = jointcal["ra"].values
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)):
        back = loads(dumps(ds))
        np.testing.assert_array_equal(back["ra"].values, expected)
        assert back.xindexes["ra"].equals(ds.xindexes["ra"])
        back = loads(dumps(jointcal))
        np.testing.assert_array_equal(back["ra"].values, jointcal_ra)


def test_exposures_without_a_skywcs_have_no_sky_coords(tmp_path):
    path = tmp_path / "plain.fits"
    ones = np.ones((4, 6), np.float32)
    write_exposure(path, ones, ones.astype(np.int32), ones, primary_header=None,
                   mask_planes={"BAD": 0})  # fmt: skip
    ds = read_exposure(path)
    assert "ra" not in ds.coords and sky_transform(ds) is None and sky_coord_arrays(ds) is None


def test_uneven_pixel_coords_are_refused(offset_calexp):
    ds = read_exposure(offset_calexp).isel(x=[0, 1, 5])
    with pytest.raises(ValueError, match="'x' coordinate is not evenly spaced"):
        with_sky_coords(ds, read_skywcs(offset_calexp))


# --- the demo repository: calexps, calibrated exposures, stacks -------------------------


def test_demo_calexps_and_calibrated_exposures(demo, ids):
    raw = open_exposures(demo, ids)
    calibrated = calibrated_exposures(demo, ids, chunk_rows=100)
    unchanged = calibrated_exposures(demo, ids, CalibrateConfig(doApplyExternalSkyWcs=False))
    for dataid, exp, cal, same in zip(ids, raw, calibrated, unchanged, strict=True):
        grid = _grid(exp)
        calexp_sky = read_skywcs(demo.find("calexp", dataid)).pixel_to_sky(*grid)
        jointcal_sky = read_skywcs(demo.find("jointcal_wcs", dataid)).pixel_to_sky(*grid)
        assert SkyWcs(cal.attrs["skywcs"]) == read_skywcs(demo.find("jointcal_wcs", dataid))
        for k, name in enumerate(("ra", "dec")):
            np.testing.assert_array_equal(exp[name].values, calexp_sky[k])
            np.testing.assert_array_equal(cal[name].values, jointcal_sky[k])
            np.testing.assert_array_equal(same[name].values, calexp_sky[k])
        assert np.abs(cal["dec"].values - exp["dec"].values).max() > 1e-7  # another WCS
        assert same.xindexes["ra"].equals(exp.xindexes["ra"])
    with pytest.raises(ValueError, match="drop them from one first"):
        _ = calibrated[0]["image"] / raw[0]["image"]
    ratio = calibrated[0]["image"] / raw[0]["image"].drop_vars(["ra", "dec"])
    assert sky_transform(ratio.to_dataset(name="r")).equals(sky_transform(calibrated[0]))
    _ = unchanged[0]["image"] - raw[0]["image"]  # the same calexp SkyWcs: aligned


def test_writing_ignores_the_sky_coords(demo, ids, tmp_path, evaluated):
    ds = calibrated_exposures(demo, ids[:1], chunk_rows=128)[0]
    evaluated.clear()  # the calibration table evaluates corners of the jointcal SkyWcs
    out = tmp_path / "CALEXP.fits"
    write_exposure_dataset(out, ds)
    assert evaluated == []
    back = read_exposure(out)
    np.testing.assert_array_equal(back["image"].values, ds["image"].values)
    assert "ra" not in back.coords  # no archive was written, so no SkyWcs


@pytest.mark.parametrize("calibrate", [False, True])
def test_stacks_carry_sky_coords_as_dask_arrays(demo, ids, evaluated, calibrate):
    if calibrate:
        stacked = calibrated_exposures(demo, ids, stack=True, chunk_rows=100)
        single = calibrated_exposures(demo, ids, chunk_rows=100)
    else:
        stacked = open_exposures(demo, ids, stack=True, chunk_rows=100)
        single = open_exposures(demo, ids, chunk_rows=100)
    evaluated.clear()  # the calibration table evaluates corners of the jointcal SkyWcs
    assert stacked["ra"].dims == ("exposure", "y", "x")
    assert isinstance(stacked["ra"].data, dask.array.Array) and evaluated == []
    assert stacked["dec"].data.chunks == ((1, 1), (100,) * 5 + (12,), (256,))
    rows = stacked["ra"].sel(visit=1228, ccd=50).isel(y=slice(0, 100)).values
    assert evaluated == [100 * 256]  # one block of one exposure
    np.testing.assert_array_equal(rows, single[1]["ra"].values[:100])
    ra, dec = dask.compute(stacked["ra"], stacked["dec"], scheduler="processes", num_workers=1)
    for k, ds in enumerate(single):
        np.testing.assert_array_equal(ra.values[k], ds["ra"].values)
        np.testing.assert_array_equal(dec.values[k], ds["dec"].values)
