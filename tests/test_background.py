"""Tests of the BackgroundList (skyCorr) reader, writer and afw-exact evaluation."""

from __future__ import annotations

import tempfile
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from astropy.io import fits
from conftest import real_path
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.polynomial import chebyshev
from scipy.interpolate import Akima1DInterpolator

from daskcal.calib.background import BackgroundEntry, BackgroundList
from daskcal.calib.background_file import (
    BackgroundFileError,
    background_block,
    load_background,
    read_background,
    write_background,
)
from daskcal.calib.interpolation import (
    ApproxStyle,
    InterpStyle,
    UndersampleStyle,
    bin_centers,
    bin_edges,
)
from daskcal.calib.interpolation import akima as gsl_akima

REAL_BKGD = (
    "lsst/jointcal/tests/data/cfht_minimal/repo/calexp/06AL01/D3/2006-05-20/r/bkgd-849375-12.fits"
)
S = InterpStyle
SPLINES = [S.LINEAR, S.NATURAL_SPLINE, S.CUBIC_SPLINE, S.AKIMA_SPLINE]


def entry(stats, bin_x, bin_y, style=S.AKIMA_SPLINE, **kw) -> BackgroundEntry:
    """An entry whose bins are all bin_x x bin_y pixels."""
    stats = np.asarray(stats, dtype=np.float32)
    width, height = stats.shape[1] * bin_x, stats.shape[0] * bin_y
    return BackgroundEntry(stats, (0, 0, width, height), interp_style=style, **kw)


def linear_stats(nx, ny, bin_x, bin_y):
    """100 + 3 x - 2 y at the bin centres: exact in float32, and the expected image."""
    xc, yc = bin_centers(nx, nx * bin_x), bin_centers(ny, ny * bin_y)
    x, y = np.arange(nx * bin_x), np.arange(ny * bin_y)
    return 100 + 3 * xc - 2 * yc[:, None], 100 + 3 * x - 2 * y[:, None]


# --- bin geometry -------------------------------------------------------------------


def test_bin_geometry_by_hand():
    starts, sizes = bin_edges(3, 10)  # ends at (10+1)//3 = 3, (20+1)//3 = 7, 10
    assert starts.tolist() == [0, 3, 7] and sizes.tolist() == [3, 4, 3]
    assert bin_centers(3, 10).tolist() == [1.0, 4.5, 8.0]
    for n, length in ((17, 2048), (37, 4612), (32, 2048), (66, 4176)):
        starts, sizes = bin_edges(n, length)
        assert sizes.sum() == length and np.ptp(sizes) <= 1 and starts[0] == 0


# --- the real file ------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_bkgd() -> BackgroundList:
    return read_background(real_path(REAL_BKGD))


def test_real_file_layout(real_bkgd):
    assert len(real_bkgd.entries) == 4
    assert real_bkgd.bbox == (0, 0, 2048, 4612) and real_bkgd.shape == (4612, 2048)
    for e in real_bkgd.entries:
        assert e.image.shape == e.variance.shape == e.mask.shape == (37, 17)
        assert e.image.dtype == np.float32 and e.mask.dtype == np.uint16
        assert (e.interp_style, e.undersample_style) == (S.NATURAL_SPLINE, 1)
        assert e.approx_style == ApproxStyle.CHEBYSHEV and e.approx_order_x == 6
        assert e.approx_weighting and e.mask_planes["DETECTED"] == 5
    assert 1210 < real_bkgd.entries[0].image.min() < real_bkgd.entries[0].image.max() < 1264


def test_real_image_is_full_size_and_smooth(real_bkgd):
    image = real_bkgd.image()
    assert image.shape == (4612, 2048) and image.dtype == np.float32
    assert np.isfinite(image).all()
    smooth = real_bkgd.image(np.float64)
    span = np.ptp(smooth)
    assert 20 < span < 60
    assert np.abs(np.diff(smooth, 2, axis=1)).max() < 1e-4 * span
    assert np.abs(np.diff(smooth, 2, axis=0)).max() < 1e-4 * span
    assert np.abs(image - smooth).max() < 5e-4  # float32 rounding of four ~1230 terms


def independent_chebyshev(e: BackgroundEntry, xs, ys):
    """Weighted total-order-6 fit by lstsq on sqrt(1/var)-scaled rows, evaluated on a grid."""
    (ny, nx), (width, height) = e.image.shape, e.bbox[2:]
    u = (bin_centers(nx, width) - (width - 1) / 2) / (width / 2)
    v = (bin_centers(ny, height) - (height - 1) / 2) / (height / 2)
    terms = [(i, j) for i in range(7) for j in range(7) if i + j <= 6]
    vx, vy = chebyshev.chebvander(u, 6), chebyshev.chebvander(v, 6)
    design = np.stack([vy[:, j, None] * vx[None, :, i] for i, j in terms], -1).reshape(nx * ny, -1)
    w = np.sqrt(1 / e.variance.astype(float)).ravel()
    coef = np.linalg.lstsq(design * w[:, None], e.image.ravel() * w, rcond=None)[0]
    grid = np.zeros((7, 7))
    grid[tuple(np.array(terms).T)] = coef
    px, py = (xs - (width - 1) / 2) / (width / 2), (ys - (height - 1) / 2) / (height / 2)
    return chebyshev.chebgrid2d(px, py, grid).T, (design @ coef).reshape(ny, nx)


def test_real_chebyshev_matches_independent_fit(real_bkgd):
    xs, ys = np.arange(2048), np.array([0, 1, 7, 1000, 2305, 4611])
    for e in real_bkgd.entries:
        expected, at_centres = independent_chebyshev(e, xs, ys)
        mine = np.concatenate([e.evaluate(0, 2048, y, y + 1) for y in ys])
        assert np.abs(mine - expected).max() < 1e-5
        # at the bins whose centres are whole pixels, the image is the fitted value there
        xc, yc = bin_centers(17, 2048), bin_centers(37, 4612)
        ix, iy = np.flatnonzero(xc % 1 == 0), np.flatnonzero(yc % 1 == 0)
        rows = np.concatenate([e.evaluate(0, 2048, int(y), int(y) + 1) for y in yc[iy]])
        model = rows[:, xc[ix].astype(int)]
        assert np.abs(model - at_centres[np.ix_(iy, ix)]).max() < 1e-5
        residual = model - e.image[np.ix_(iy, ix)]
        assert 0 < np.std(residual) < 5 * np.std(at_centres - e.image)


def test_real_roundtrip_keeps_cards(real_bkgd, tmp_path):
    out = tmp_path / "bkgd.fits"
    write_background(out, real_bkgd)
    assert read_background(out) == real_bkgd
    structural = {"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND",
                  "PCOUNT", "GCOUNT", "BZERO", "BSCALE", "COMMENT"}  # fmt: skip
    with fits.open(real_path(REAL_BKGD)) as ours, fits.open(out) as theirs:
        assert len(ours) == len(theirs) == 12
        for a, b in zip(ours, theirs, strict=True):
            cards_a = [(k, v) for k, v in a.header.items() if k not in structural]
            assert cards_a == [(k, v) for k, v in b.header.items() if k not in structural]
            assert a.header["BITPIX"] == b.header["BITPIX"]


# --- interpolation, by hand and against known surfaces ------------------------------


@pytest.mark.parametrize("style", SPLINES)
def test_interpolants_pass_through_stats_at_bin_centres(style):
    stats = np.random.default_rng(3).normal(50, 10, (6, 7)).astype(np.float32)
    image = entry(stats, 5, 7, style).evaluate(0, 35, 0, 42).astype(np.float32)
    xc, yc = bin_centers(7, 35).astype(int), bin_centers(6, 42).astype(int)  # odd bins
    np.testing.assert_array_equal(image[np.ix_(yc, xc)], stats)


@pytest.mark.parametrize("style", SPLINES)
def test_linear_surface_reproduced_with_extrapolation(style):
    stats, expected = linear_stats(9, 7, 8, 6)
    image = BackgroundList([entry(stats, 8, 6, style)]).image()
    np.testing.assert_allclose(image, expected, rtol=0, atol=1e-4)


def test_chebyshev_reproduces_a_polynomial_surface():
    def surface(x, y):
        return 5 + 0.01 * x - 0.002 * y + 1e-5 * x * y + 3e-6 * y * y

    xc, yc = bin_centers(8, 80), bin_centers(10, 120)
    variance = np.random.default_rng(1).uniform(0.5, 2, (10, 8))
    e = entry(surface(xc, yc[:, None]), 10, 12, approx_style=0, approx_order_x=2,
              approx_order_y=2, variance=variance)  # fmt: skip
    x, y = np.arange(80), np.arange(120)
    np.testing.assert_allclose(e.evaluate(0, 80, 0, 120), surface(x, y[:, None]), rtol=1e-6)


def test_constant_is_afws_step_function():
    # knots 1, 4, 7 -> recentred -0.5, 2.5, 5.5, 8.5 carrying 10, 15, 30, 40
    image = entry([[10, 20, 40]], 3, 2, S.CONSTANT).evaluate(0, 9, 0, 2)
    np.testing.assert_array_equal(image, [[10, 10, 10, 15, 15, 15, 30, 30, 30]] * 2)
    # along y: knots 1, 4 -> recentred -0.5, 2.5, 5.5 carrying 10, 15, 20
    column = entry([[10], [20]], 1, 3, S.CONSTANT).evaluate(0, 1, 0, 6)
    np.testing.assert_array_equal(column.ravel(), [10, 10, 10, 15, 15, 15])
    np.testing.assert_array_equal(entry([[7]], 4, 4, S.CONSTANT).evaluate(0, 4, 0, 4), 7)


def test_akima_is_gsls():
    rng = np.random.default_rng(5)
    x = np.sort(rng.uniform(0, 100, 12))
    y = rng.normal(size=(12, 4))
    at = np.linspace(x[0], x[-1], 301)
    np.testing.assert_allclose(gsl_akima(x, y)(at), Akima1DInterpolator(x, y)(at), atol=1e-12)
    # GSL makes an interval straight when m[i+1] == m[i] and m[i-1] == m[i-2]
    knots = np.arange(6.0)
    pp = gsl_akima(knots, np.array([[0.0, 0, 0, 1, 2, 3]]).T)
    inside = np.linspace(2, 3, 11)
    np.testing.assert_allclose(pp(inside).ravel(), inside - 2, atol=1e-15)


# --- undersampling and NaN ------------------------------------------------------------


def test_too_few_bins_reduce_the_order():
    stats = np.random.default_rng(2).normal(size=(8, 3))
    akima = entry(stats, 7, 5, S.AKIMA_SPLINE).evaluate(0, 21, 0, 40)
    np.testing.assert_array_equal(akima, entry(stats, 7, 5, S.CUBIC_SPLINE).evaluate(0, 21, 0, 40))
    two = np.random.default_rng(2).normal(size=(8, 2))
    reduced = entry(two, 7, 5, S.NATURAL_SPLINE).evaluate(0, 14, 0, 40)
    np.testing.assert_array_equal(reduced, entry(two, 7, 5, S.LINEAR).evaluate(0, 14, 0, 40))
    assert np.abs(np.diff(reduced, 2, axis=1)).max() < 1e-12  # straight along x, extrapolated
    throw = entry(stats, 7, 5, S.AKIMA_SPLINE, undersample_style=0)
    with pytest.raises(ValueError, match="too few"):
        throw.evaluate(0, 21, 0, 40)
    with pytest.raises(NotImplementedError, match="INCREASE_NXNYSAMPLE"):
        entry(stats, 7, 5, S.AKIMA_SPLINE, undersample_style=2).evaluate(0, 21, 0, 40)
    with pytest.raises(NotImplementedError, match="PERIODIC"):
        entry(np.ones((6, 6)), 7, 5, S.AKIMA_SPLINE_PERIODIC).evaluate(0, 42, 0, 30)


@pytest.mark.parametrize("style", [S.LINEAR, S.NATURAL_SPLINE, S.AKIMA_SPLINE])
def test_nan_bins_are_dropped(style):
    stats, expected = linear_stats(9, 8, 8, 6)
    stats[[0, 3, 4], 2] = np.nan  # 5 left: Akima stays Akima
    stats[:5, 6] = np.nan  # 3 left: Akima falls back to a spline
    stats[1:7, 7] = np.nan  # 2 left: linear
    stats[:, 4] = np.nan  # empty column: dropped along x
    image = entry(stats, 8, 6, style).evaluate(0, 72, 0, 48)
    np.testing.assert_allclose(image, expected, rtol=0, atol=1e-9)


def test_single_value_column_and_all_nan():
    stats = np.random.default_rng(4).normal(size=(7, 6)).astype(np.float32)
    stats[:, 3] = np.nan
    stats[2, 3] = 42.0  # one point: a constant column
    image = entry(stats, 5, 5, S.AKIMA_SPLINE).evaluate(0, 30, 0, 35)
    np.testing.assert_allclose(image[:, int(bin_centers(6, 30)[3])], 42.0, rtol=1e-12)
    assert np.isnan(entry(np.full((4, 5), np.nan), 3, 3).evaluate(0, 15, 0, 12)).all()
    with pytest.raises(ValueError, match="too few"):
        entry(stats, 5, 5, S.AKIMA_SPLINE, undersample_style=0).evaluate(0, 30, 0, 35)


# --- blocks, dask, files ------------------------------------------------------------


def mixed_list(width=150, height=230) -> BackgroundList:
    rng = np.random.default_rng(8)
    bbox = (10, 20, width, height)
    akima = rng.normal(0, 3, (9, 5)).astype(np.float32)
    akima[2, 1] = akima[5, 3] = np.nan
    cheb = (100 + rng.normal(size=(6, 4))).astype(np.float32)
    styles = [S.NATURAL_SPLINE, S.LINEAR, S.CONSTANT]
    return BackgroundList(
        [BackgroundEntry(cheb, bbox, approx_style=0, approx_order_x=3, approx_order_y=3),
         BackgroundEntry(akima, bbox)]
        + [BackgroundEntry(rng.normal(size=(4, 3)), bbox, interp_style=s) for s in styles]
    )  # fmt: skip


def test_blocks_equal_the_whole_image():
    background = mixed_list()
    whole = background.image()
    rows = [0, 1, 2, 37, 38, 129, 230]
    parts = [background.image_rows(a, b) for a, b in zip(rows[:-1], rows[1:], strict=True)]
    assert np.array_equal(np.concatenate(parts), whole)
    cols = [0, 3, 4, 77, 150]
    parts = [
        background.evaluate_block(a, b, 50, 61) for a, b in zip(cols[:-1], cols[1:], strict=True)
    ]
    assert np.array_equal(np.concatenate(parts, axis=1), whole[50:61])
    with pytest.raises(ValueError, match="outside"):
        background.evaluate_block(0, 151, 0, 1)


def test_dask_map_blocks_over_a_file(tmp_path):
    path = tmp_path / "skyCorr.fits"
    background = mixed_list()
    write_background(path, background)

    def block(dummy, block_info=None):
        (y0, y1), (x0, x1) = block_info[0]["array-location"]
        return background_block(str(path), y0, y1, x0, x1)

    chunks = ((13, 100, 1, 116), (70, 80))
    lazy = da.map_blocks(block, da.zeros((230, 150), chunks=chunks), dtype=np.float32)
    assert np.array_equal(lazy.compute(scheduler="threads"), background.image())


def test_load_background_caches_by_mtime(tmp_path):
    path = tmp_path / "bkgd.fits"
    background = mixed_list()
    write_background(path, background)
    first = load_background(path)
    assert first == background and load_background(path) is first
    write_background(path, BackgroundList(background.entries[:2]), overwrite=True)
    assert len(load_background(path).entries) == 2


@st.composite
def backgrounds(draw) -> BackgroundList:
    """Random entries (NaN bins, any style, either mask type) sharing one bbox."""
    ints = st.integers
    bbox = draw(st.tuples(ints(-99, 99), ints(-99, 99), ints(5, 99), ints(5, 99)))
    items = []
    for _ in range(draw(ints(1, 3))):
        rng = np.random.default_rng(draw(ints(0, 2**16)))
        shape = (draw(ints(1, 5)), draw(ints(1, 5)))
        stats = np.where(rng.random(shape) < 0.2, np.nan, rng.normal(size=shape) * 1e3)
        mask = rng.integers(0, 2**15, shape).astype(draw(st.sampled_from([np.uint16, np.int32])))
        planes = st.dictionaries(st.sampled_from(["BAD", "SAT", "CROSSTALK", "NOT_DEBLENDED"]),
                                 ints(0, 31))  # fmt: skip
        items.append(BackgroundEntry(
            stats, bbox, variance=rng.random(shape), mask=mask,
            interp_style=draw(st.sampled_from(list(S))),
            undersample_style=draw(st.sampled_from(list(UndersampleStyle))),
            approx_style=draw(st.sampled_from([-1, 0])), approx_order_x=draw(ints(0, 8)),
            approx_weighting=draw(st.booleans()), mask_planes=draw(planes),
        ))  # fmt: skip
    return BackgroundList(items)


@settings(max_examples=25, deadline=None)
@given(backgrounds())
def test_write_read_roundtrip(background):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bkgd.fits"
        write_background(path, background)
        assert read_background(path) == background


def test_bad_files_name_the_file(tmp_path, real_bkgd):
    missing = tmp_path / "nothere.fits"
    with pytest.raises(FileNotFoundError, match="nothere.fits"):
        read_background(missing)
    good = tmp_path / "good.fits"
    write_background(good, real_bkgd)
    with pytest.raises(FileExistsError):
        write_background(good, real_bkgd)
    raw = good.read_bytes()
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(BackgroundFileError, match="truncated.fits"):
        read_background(truncated)
    two = tmp_path / "two.fits"
    fits.HDUList([fits.PrimaryHDU(np.zeros((2, 2))), fits.ImageHDU(np.zeros((2, 2)))]).writeto(two)
    with pytest.raises(BackgroundFileError, match="two.fits.*multiple of 3"):
        read_background(two)
    cardless = tmp_path / "cardless.fits"
    fits.HDUList([fits.PrimaryHDU(np.zeros((2, 2)))] + [fits.ImageHDU(np.zeros((2, 2)))] * 2
                 ).writeto(cardless)  # fmt: skip
    with pytest.raises(BackgroundFileError, match="cardless.fits.*BKGD_X0"):
        read_background(cardless)


def test_entry_validation():
    with pytest.raises(ValueError, match="APPROXORDERX == APPROXORDERY"):
        BackgroundEntry(np.zeros((2, 2)), (0, 0, 4, 4), approx_order_x=2, approx_order_y=3)
    with pytest.raises(ValueError, match="one bbox"):
        BackgroundList([BackgroundEntry(np.zeros((2, 2)), (0, 0, 4, 4)),
                        BackgroundEntry(np.zeros((2, 2)), (0, 0, 4, 5))])  # fmt: skip
    with pytest.raises(ValueError):
        BackgroundEntry(np.zeros((2, 2)), (0, 0, 4, 4), interp_style=9)


def test_a_full_hsc_ccd_model_is_evaluated_whole():
    """A full HSC CCD: a 64-pixel-bin Akima model (32 x 66 bins) plus a Chebyshev entry
    (its speed is measured in benchmarks/bench_background.py)."""
    rng = np.random.default_rng(0)
    bbox = (0, 0, 2048, 4176)
    background = BackgroundList(
        [BackgroundEntry(1000 + rng.normal(size=(33, 16)), bbox, approx_style=0,
                         approx_order_x=6, approx_order_y=6),
         BackgroundEntry(rng.normal(size=(66, 32)), bbox)]
    )  # fmt: skip
    image = background.image()
    assert image.shape == (4176, 2048) and np.isfinite(image).all()
    np.testing.assert_array_equal(image[100:110], background.image_rows(100, 110))
