"""The lazy calibrated exposures: block-wise graphs, the formula, PARENT coordinates."""

from __future__ import annotations

import json

import dask
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.polynomial import chebyshev

from daskcal import calibrated_exposures
from daskcal.calib.background import BackgroundEntry
from daskcal.calib.background_file import read_background, write_background
from daskcal.calib.boundedfield import BBox, ChebyshevBoundedField
from daskcal.calib.photocalib import read_photocalib
from daskcal.calib.skywcs import read_skywcs
from daskcal.cli import main
from daskcal.config import CalibrateConfig
from daskcal.errors import CalibrationMissing
from daskcal.io.exposure import read_exposure, write_exposure
from daskcal.lazy.calibrated import calibrated_exposure, calibration_table
from daskcal.repo import Repository
from daskcal.tasks.exposure import ExposurePlan, calibrate_rows, exposure_plan

MASK_PLANES = {"BAD": 0, "SAT": 1, "NO_DATA": 8}


@pytest.fixture(scope="module")
def whole(demo, ids):
    """Each CCD computed as one block (the small demo CCDs are 512 rows)."""
    return [ds.compute() for ds in calibrated_exposures(demo, ids, chunk_rows=512)]


@pytest.mark.parametrize("chunk_rows", [37, 300])
def test_row_blocks_give_the_whole_ccd_bit_for_bit(demo, ids, whole, chunk_rows):
    lazy = calibrated_exposures(demo, ids, chunk_rows=chunk_rows)
    assert lazy[0]["image"].data.numblocks[0] == -(-512 // chunk_rows)
    for got, ref in zip(dask.compute(*lazy), whole, strict=True):
        for plane in ("image", "mask", "variance"):
            np.testing.assert_array_equal(got[plane].values, ref[plane].values)


@pytest.fixture(scope="module")
def ccd50(demo, ids):
    """The planes of CCD 50 and its plan (a spatially varying FGCM calibration, skyCorr)."""
    config = CalibrateConfig()
    row = calibration_table(demo, ids[1:], config).to_dict("records")[0]
    ds = read_exposure(demo.find("calexp", ids[1])).compute()
    plan = exposure_plan(row, config)
    assert plan.field and plan.skycorr
    image, variance = ds["image"].values, ds["variance"].values
    return image, variance, plan, calibrate_rows(image, variance, plan, (0, 0), 0)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=511), max_size=12))
def test_any_split_into_blocks_gives_the_whole_ccd_bit_for_bit(ccd50, cuts):
    image, variance, plan, (whole_image, whole_variance) = ccd50
    edges = [0, *sorted(set(cuts)), 512]
    blocks = [
        calibrate_rows(image[a:b], variance[a:b], plan, (0, 0), a)
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]  # one-row blocks included: BLAS rounds those differently unless handled
    np.testing.assert_array_equal(np.concatenate([i for i, _ in blocks]), whole_image)
    np.testing.assert_array_equal(np.concatenate([v for _, v in blocks]), whole_variance)


def test_one_row_blocks_evaluate_c_exactly_as_the_whole_ccd():
    """numpy's BLAS sums a one-row matrix product in another order (checked: 5e-15 off)."""
    from daskcal.calib.photocalib import PhotoCalib
    from daskcal.tasks.exposure import _calibration

    field = ChebyshevBoundedField(
        BBox(0, 0, 2047, 4175), np.random.default_rng(1).normal(size=(7, 7))
    )
    pc = PhotoCalib(1.0, 0.0, False, field)
    whole = _calibration(pc, 0, 2048, 0, 64)
    rows = np.concatenate([_calibration(pc, 0, 2048, y, y + 1) for y in range(64)])
    np.testing.assert_array_equal(rows, whole)


def test_lazy_pixels_are_the_calexp_written_by_the_command(demo, ids, whole):
    argv = ["exposure", str(demo.root), "--rerun", "demo:cal", "--id", "visit=1228", "tract=0"]
    assert main([*argv, "--no-versions"]) == 0
    out = Repository(demo.root, rerun="demo:cal")
    for dataid, ref in zip(ids, whole, strict=True):
        written = read_exposure(out.output_path("calibrated_exp", dataid)).compute()
        for plane in ("image", "mask", "variance"):
            np.testing.assert_array_equal(written[plane].values, ref[plane].values)


def test_attrs_carry_the_new_photocalib_and_the_skywcs(demo, ids):
    for dataid, ds in zip(ids, calibrated_exposures(demo, ids), strict=True):
        truth = read_photocalib(demo.find("fgcm_tract_photoCalib", dataid))
        assert ds.attrs["photocalib"].is_constant
        assert (ds.attrs["cbar"], ds.attrs["sigma_c"]) == (truth.mean, truth.err)
        assert ds.attrs["skywcs"] == read_skywcs(demo.find("jointcal_wcs", dataid)).ast_text
        assert ds.attrs["dataid"] == dataid and ds.attrs["uncalibrated"] == ""
        calexp = read_exposure(demo.find("calexp", dataid))
        assert ds["mask"].data.name == calexp["mask"].data.name  # the mask is not touched


def test_stacked_exposures(demo, ids, whole):
    stacked = calibrated_exposures(demo, ids, stack=True, chunk_rows=100)
    assert dict(stacked.sizes) == {"exposure": 2, "y": 512, "x": 256}
    assert list(stacked["ccd"].values) == [0, 50]
    np.testing.assert_array_equal(stacked["cbar"].values, [ds.attrs["cbar"] for ds in whole])
    values = stacked["variance"].sel(visit=1228, ccd=50).values
    np.testing.assert_array_equal(values, whole[1]["variance"].values)


def test_the_graph_runs_on_a_distributed_cluster(demo, ids, whole):
    from distributed import Client, LocalCluster

    lazy = calibrated_exposures(demo, ids[1:], chunk_rows=128)
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        image = client.compute(lazy[0]["image"].data).result()
    np.testing.assert_array_equal(image, whole[1]["image"].values)


def test_missing_inputs_raise_or_are_flagged(demo, ids, tmp_path):
    skycorr = demo.find("skyCorr", ids[0])
    moved = tmp_path / skycorr.name
    skycorr.rename(moved)
    try:
        with pytest.raises(CalibrationMissing, match="no skyCorr .*skyCorr-0001228-000.fits"):
            calibrated_exposures(demo, ids)
        config = CalibrateConfig(doApplySkyCorr=False, externalPhotoCalibName="fgcm")
        lazy = calibrated_exposures(demo, ids, config)
        assert lazy[0].attrs["photocalib"] is not None
    finally:
        moved.rename(skycorr)
    wcs = demo.find("jointcal_wcs", ids[1])
    wcs.rename(tmp_path / wcs.name)
    try:
        with pytest.raises(CalibrationMissing, match="ccd=50.*no jointcal_wcs"):
            calibrated_exposures(demo, ids)
        flagged = calibrated_exposures(demo, ids, CalibrateConfig(onMissingCalibration="flag"))
        assert "jointcal_wcs" in flagged[1].attrs["uncalibrated"]
        raw = read_exposure(demo.find("calexp", ids[1]))
        np.testing.assert_array_equal(flagged[1]["image"].values, raw["image"].values)
    finally:
        (tmp_path / wcs.name).rename(wcs)


# --- the formula on a synthetic exposure away from the origin ---------------------------

XY0, SHAPE = (100, 200), (30, 40)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """An exposure at xy0 = (100, 200) with exact zeros, a Chebyshev c(x, y), a skyCorr."""
    folder = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(4)
    image = rng.normal(10.0, 5.0, SHAPE).astype(np.float32)
    image[3, :7] = 0.0
    variance = rng.uniform(20.0, 30.0, SHAPE).astype(np.float32)
    mask = rng.integers(0, 512, SHAPE).astype(np.int32)
    path = folder / "calexp.fits"
    write_exposure(path, image, mask, variance, primary_header=None,
                   mask_planes=MASK_PLANES, xy0=XY0)  # fmt: skip
    bbox = BBox(XY0[0], XY0[1], XY0[0] + SHAPE[1] - 1, XY0[1] + SHAPE[0] - 1)
    coefficients = np.array([[2.0, 0.3, -0.1], [0.2, 0.05, 0.0], [-0.1, 0.0, 0.02]])
    field = ChebyshevBoundedField(bbox, coefficients)
    skycorr = folder / "skyCorr.fits"
    entry = BackgroundEntry(rng.normal(1.0, 0.5, (5, 6)), (*XY0, SHAPE[1], SHAPE[0]))
    write_background(skycorr, [entry])
    return path, field, str(skycorr), (image, mask, variance)


def independent_c(coefficients: np.ndarray) -> np.ndarray:
    """c at every pixel by docs/calibration.md, 'Bounded fields', with numpy's own Chebyshev
    evaluation."""
    (x0, y0), (ny, nx) = XY0, SHAPE
    x, y = np.arange(x0, x0 + nx), np.arange(y0, y0 + ny)
    xr = 2.0 * (x - (2 * x0 + nx - 1) / 2) / nx
    yr = 2.0 * (y - (2 * y0 + ny - 1) / 2) / ny
    return chebyshev.chebgrid2d(xr, yr, coefficients.T).T


@pytest.mark.parametrize("calib_var", [False, True])
@pytest.mark.parametrize("fix_zero", [False, True])
def test_every_pixel_follows_the_formula_in_parent_coordinates(synthetic, calib_var, fix_zero):
    path, field, skycorr, (p, mask, v) = synthetic
    cbar, sigma_c = 2.1, 0.07
    plan = ExposurePlan(
        photo=True, cbar=cbar, sigma_c=sigma_c, field=json.dumps(field.to_dict()),
        include_calib_var=calib_var, fix_zero_variance=fix_zero, skycorr=skycorr,
    )  # fmt: skip
    ds = calibrated_exposure(read_exposure(path, chunk_rows=7), plan).compute()
    c = independent_c(field.coefficients)
    sky = read_background(skycorr).image()
    np.testing.assert_allclose(ds["image"].values, p * c / cbar - sky, rtol=1e-6, atol=1e-5)
    expected = (c**2 * v + (p.astype(float) ** 2 * sigma_c**2 if calib_var else 0)) / cbar**2
    if not fix_zero:
        expected[p == 0] = np.nan  # afw's ratio of calibrated to uncalibrated pixel
    np.testing.assert_allclose(ds["variance"].values, expected, rtol=1e-6)
    np.testing.assert_array_equal(ds["mask"].values, mask)
    assert list(ds["x"].values[[0, -1]]) == [100, 139] and ds["y"].values[0] == 200


def test_blocks_split_across_columns_are_merged_first(synthetic):
    path, field, skycorr, _ = synthetic
    plan = ExposurePlan(photo=True, cbar=2.0, field=json.dumps(field.to_dict()), skycorr=skycorr)
    rows = calibrated_exposure(read_exposure(path, chunk_rows=7), plan).compute()
    tiles = calibrated_exposure(read_exposure(path, chunk_rows=7).chunk({"x": 9}), plan)
    np.testing.assert_array_equal(tiles["image"].values, rows["image"].values)


def test_sky_only_leaves_the_variance_alone(synthetic):
    path, _, skycorr, (p, _, v) = synthetic
    ds = calibrated_exposure(read_exposure(path), ExposurePlan(skycorr=skycorr)).compute()
    sky = read_background(skycorr).image()
    np.testing.assert_array_equal(ds["image"].values, (p - sky).astype(np.float32))
    np.testing.assert_array_equal(ds["variance"].values, v)  # no NaN where p == 0
    assert np.isnan(ds.attrs["cbar"]) and ds.attrs["photocalib"] is None


def test_a_skycorr_of_another_size_is_refused(synthetic, tmp_path):
    path, _, _, _ = synthetic
    other = tmp_path / "skyCorr.fits"
    write_background(other, [BackgroundEntry(np.ones((3, 3)), (*XY0, 41, 30))])
    with pytest.raises(ValueError, match="skyCorr image is 41x30 pixels, the calexp 40x30"):
        calibrated_exposure(read_exposure(path), ExposurePlan(skycorr=str(other)))
