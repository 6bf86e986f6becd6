"""The demo repository: real formats read back, registry, and the truth it must reproduce."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from daskcal.calib.background_file import read_background
from daskcal.calib.boundedfield import BBox, ChebyshevBoundedField
from daskcal.calib.fgcm import fgcm_photocalibs, read_fgcm_zeropoints
from daskcal.calib.photocalib import read_photocalib
from daskcal.calib.skywcs import read_skywcs
from daskcal.demo import (
    MASK_PLANES,
    TEMPLATES,
    dataset_path,
    make_demo_repository,
    read_truth,
    truth_image,
)
from daskcal.demo.cli import main, parse_ccds
from daskcal.demo.focalplane import camera, science_ccds
from daskcal.demo.measure import flux_fractions
from daskcal.demo.photometry import FGCM_VISIT_SCALE, cheb2d_product
from daskcal.demo.repository import field_of
from daskcal.demo.sky import render_sources
from daskcal.io.catalog import instflux_columns, read_catalog, slot_centroid_columns
from daskcal.io.exposure import exposure_archive, read_exposure

CCDS = (0, 9, 50)  # 0: vignetted corner CCD (NO_DATA pixels); 9: broken; 50: central
MEASUREMENTS = ("base_PsfFlux", "base_GaussianFlux", "base_CircularApertureFlux_3_0",
                "base_CircularApertureFlux_6_0", "base_CircularApertureFlux_12_0")  # fmt: skip
UNUSABLE = (1 << MASK_PLANES["BAD"]) | (1 << MASK_PLANES["SAT"]) | (1 << MASK_PLANES["NO_DATA"])


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "repo"
    summary = make_demo_repository(out, visits=2, ccds=CCDS, seed=3, scheduler="threads")
    sources, ccds = read_truth(out)
    return summary, sources, ccds


def _paths(summary, row) -> dict:
    data_id = {k: int(row[k]) for k in ("visit", "ccd", "pointing", "tract")}
    data_id["filter"] = row["filter"]
    return {name: dataset_path(summary.rerun_dir, name, **data_id) for name in TEMPLATES}


def test_summary_and_registry_match_files(repo):
    summary, sources, ccds = repo
    assert summary.skipped == (9,) and summary.ccds == (0, 50)
    assert summary.n_ccds == 4 == len(ccds)
    assert summary.n_sources == len(sources) and summary.n_sky_sources == sources.is_sky.sum()
    assert (summary.root / "_mapper").read_text() == "lsst.obs.hsc.HscMapper\n"
    with sqlite3.connect(summary.root / "registry.sqlite3") as conn:
        raw = pd.read_sql("SELECT * FROM raw", conn)
        visits = pd.read_sql("SELECT * FROM raw_visit", conn)
    conn.close()
    pairs = sorted(zip(raw.visit, raw.ccd, strict=True))
    assert pairs == [(1228, 0), (1228, 50), (1230, 0), (1230, 50)]
    assert set(raw.field) == {"NGC604"}
    assert dict(zip(visits.visit, visits["filter"], strict=True)) == {1228: "HSC-G", 1230: "HSC-I"}
    merged = raw.merge(ccds, on=["visit", "ccd"], suffixes=("", "_truth"))
    assert (merged.pointing == merged.pointing_truth).all()
    for _, row in ccds.iterrows():
        assert all(p.is_file() for p in _paths(summary, row).values())
    files = {p.name for p in summary.rerun_dir.rglob("*.fits")}
    assert not any("-009." in name for name in files)  # the broken CCD has no data
    assert (summary.rerun_dir / "fgcm-results" / "fgcmZeropoints.fits").is_file()


def test_calexp_reads_back(repo):
    summary, _, ccds = repo
    row = ccds.iloc[0]
    path = _paths(summary, row)["calexp"]
    ds = read_exposure(path)
    assert ds.image.shape == (512, 256) and ds.mask.dtype == np.int32
    assert ds.attrs["mask_planes"] == MASK_PLANES and len(MASK_PLANES) == 15
    header = ds.attrs["header"]
    assert [header[k] for k in ("VISIT", "CCD", "FILTER")] == [row.visit, row.ccd, row["filter"]]
    calib = read_photocalib(path)
    assert calib.is_constant and calib.mean == pytest.approx(row.calexp_calib_mean, rel=1e-12)
    wcs = read_skywcs(path)
    assert wcs.domains == ("PIXELS", "IWC", "SKY")
    with fits.open(path) as hdul:  # plain astropy: tile-compressed planes, TAN cards
        assert [type(h).__name__ for h in hdul[1:4]] == ["CompImageHDU"] * 3
        assert [h.header["EXTTYPE"] for h in hdul[1:4]] == ["IMAGE", "MASK", "VARIANCE"]
        astropy_wcs = WCS(hdul[1].header)
        pixels = np.array([[0.0, 0.0], [255.0, 511.0], [100.3, 200.7]])
        expected = astropy_wcs.all_pix2world(pixels, 0)
        psf_id = int(hdul[0].header["PSF_ID"])
    with exposure_archive(path) as archive:  # components resolve through the index
        psf = archive[psf_id]
        assert psf.name == "GaussianPsf"
        assert psf.catalogs[0]["sigma"][0] == pytest.approx(row.psf_sigma, rel=1e-12)
    ra, dec = wcs.pixel_to_sky(pixels[:, 0], pixels[:, 1])
    np.testing.assert_allclose(np.c_[ra, dec], expected, atol=1e-10)


def test_no_data_pixels_are_exact_zeros(repo):
    summary, _, ccds = repo
    row = ccds[ccds.ccd == 0].iloc[0]
    ds = read_exposure(_paths(summary, row)["calexp"])
    no_data = (ds.mask.values & (1 << MASK_PLANES["NO_DATA"])) != 0
    assert 0 < no_data.sum() < no_data.size
    assert (ds.image.values[no_data] == 0).all() and np.isnan(ds.variance.values[no_data]).all()
    assert np.isfinite(ds.variance.values[~no_data]).all()


def test_src_schema_flags_and_coords(repo):
    summary, sources, ccds = repo
    row = ccds[ccds.ccd == 50].iloc[0]
    path = _paths(summary, row)["src"]
    df = read_catalog(path)
    truth = sources[(sources.visit == row.visit) & (sources.ccd == row.ccd)]
    truth = truth.reset_index(drop=True)
    assert df.attrs["afw_type"] == "SOURCE" and df.attrs["table_version"] == 3
    assert slot_centroid_columns(df) == ("base_SdssCentroid_x", "base_SdssCentroid_y")
    aliases = df.attrs["aliases"]
    assert aliases["slot_CalibFlux"] == "base_CircularApertureFlux_12_0"
    assert aliases["slot_PsfFlux"] == "base_PsfFlux"
    prefixes = list(instflux_columns(df))
    assert prefixes.index("base_CircularApertureFlux_12_0") < prefixes.index(
        "base_CircularApertureFlux_3_0"
    )
    assert df.attrs["units"]["coord_ra"] == "rad" and df.attrs["ccls"]["coord_ra"] == "Angle"
    np.testing.assert_array_equal(df["id"], truth["id"])
    np.testing.assert_array_equal(df["sky_source"], truth["is_sky"])
    assert (df.loc[df.base_PsfFlux_instFlux.isna(), "base_PsfFlux_flag"]).all()
    with fits.open(path) as hdul:  # packed bits, as plain astropy sees them
        names = [hdul[1].header[f"TFLAG{k + 1}"] for k in range(len(df.attrs["flag_names"]))]
        bits = np.asarray(hdul[1].data["flags"], dtype=bool)
    for k in (names.index("sky_source"), names.index("base_PsfFlux_flag")):
        np.testing.assert_array_equal(bits[:, k], df[names[k]])
    calexp_wcs = read_skywcs(_paths(summary, row)["calexp"])
    ra, dec = calexp_wcs.pixel_to_sky_rad(df.base_SdssCentroid_x, df.base_SdssCentroid_y)
    np.testing.assert_allclose(df.coord_ra, ra, rtol=0, atol=1e-13)
    assert np.isnan(df.coord_ra[df.base_SdssCentroid_x.isna()]).all()


def test_ids_are_unique_and_sky_sources_present(repo):
    _, sources, _ = repo
    assert sources["id"].is_unique
    assert (sources.groupby(["visit", "ccd"]).is_sky.sum() > 0).all()
    assert (sources.loc[sources.is_sky, "flux"] == 0).all()


def test_true_wcs_maps_truth_to_pixels(repo):
    summary, sources, ccds = repo
    for _, row in ccds.iterrows():
        truth = sources[(sources.visit == row.visit) & (sources.ccd == row.ccd) & ~sources.is_sky]
        wcs = read_skywcs(_paths(summary, row)["jointcal_wcs"])
        assert wcs.domains == ("PIXELS", "FOCAL", "IWC", "SKY")
        assert wcs.to_text() == row.wcs
        ra, dec = wcs.pixel_to_sky(truth.x.to_numpy(), truth.y.to_numpy())
        sep = np.hypot((ra - truth.ra) * np.cos(np.radians(truth.dec)), dec - truth.dec)
        assert (sep * 3600 / 0.168).max() < 1e-6
        # the calexp's own WCS is TAN-only and shifted: visibly (~0.3") wrong
        cra, cdec = read_skywcs(_paths(summary, row)["calexp"]).pixel_to_sky(127.5, 255.5)
        tra, tdec = wcs.pixel_to_sky(127.5, 255.5)
        off = np.hypot((cra - tra) * np.cos(np.radians(tdec)), cdec - tdec) * 3600
        assert 0.1 < off < 0.6


def test_instflux_times_c_recovers_true_flux(repo):
    summary, sources, ccds = repo
    pulls, sky_pulls = [], []
    for _, row in ccds.iterrows():
        calib = read_photocalib(_paths(summary, row)["fgcm_tract_photoCalib"])
        df = read_catalog(_paths(summary, row)["src"])
        truth = sources[(sources.visit == row.visit) & (sources.ccd == row.ccd)]
        truth = truth.reset_index(drop=True)
        c = calib.evaluate(truth.x.to_numpy(), truth.y.to_numpy())
        np.testing.assert_allclose(c, truth.c_true, rtol=1e-12)
        for p in MEASUREMENTS:
            flux, err = df[f"{p}_instFlux"] * c, df[f"{p}_instFluxErr"] * c
            pull = (flux - truth[f"frac_{p}"] * truth.flux) / err
            good = ~df[f"{p}_flag"] & ~truth.is_sky
            pulls.append(pull[good].to_numpy())
            sky_pulls.append(pull[truth.is_sky & ~df[f"{p}_flag"]].to_numpy())
    pulls = np.concatenate(pulls)
    assert len(pulls) > 500
    assert abs(pulls.mean()) < 0.1 and 0.9 < pulls.std() < 1.1
    assert np.isfinite(np.concatenate(sky_pulls)).all()


def test_calibrated_image_recovers_truth_image(repo):
    summary, _, ccds = repo
    for _, row in ccds.iterrows():
        paths = _paths(summary, row)
        ds = read_exposure(paths["calexp"])
        calib = read_photocalib(paths["fgcm_tract_photoCalib"])
        c = calib.evaluate_grid(0, 256, 0, 512)
        s = read_background(paths["skyCorr"]).image()
        truth = truth_image(summary.root, int(row.visit), int(row.ccd))
        image, var = ds.image.values, ds.variance.values
        good = (ds.mask.values & UNUSABLE) == 0
        resid = (image * c / calib.mean - s - truth) / (np.sqrt(var) * c / calib.mean)
        assert abs(resid[good].mean()) < 0.02 and abs(resid[good].std() - 1) < 0.02
        assert truth.max() > 50 * np.sqrt(np.nanmedian(var))  # sources are there
        assert 0.5 < np.abs(s).max() < 30  # the sky correction is a few counts


def test_photometric_products_are_consistent(repo):
    summary, _, ccds = repo
    table = fgcm_photocalibs(read_fgcm_zeropoints(summary.paths["fgcm_zeropoints"]))
    assert sorted(table) == sorted(zip(ccds.visit, ccds.ccd, strict=True))
    x, y = np.array([0.0, 255.0, 17.5, 127.5]), np.array([0.0, 511.0, 400.0, 255.5])
    for _, row in ccds.iterrows():
        paths = _paths(summary, row)
        truth = read_photocalib(paths["fgcm_tract_photoCalib"])
        visit_calib = read_photocalib(paths["fgcm_photoCalib"])
        joint = read_photocalib(paths["jointcal_photoCalib"])
        assert truth.mean == pytest.approx(float(truth.evaluate(127.5, 255.5)), rel=1e-12)
        assert truth.mean == pytest.approx(row.cbar, rel=1e-12)
        np.testing.assert_allclose(field_of(row).evaluate(x, y), truth.evaluate(x, y), rtol=1e-14)
        values = truth.evaluate(x, y)
        assert 0.005 < np.ptp(values) / truth.mean < 0.2  # varies by a few percent
        np.testing.assert_allclose(visit_calib.evaluate(x, y), values * FGCM_VISIT_SCALE)
        from_table = table[(int(row.visit), int(row.ccd))]
        expected = visit_calib.evaluate(x, y)
        np.testing.assert_allclose(from_table.evaluate(x, y), expected, rtol=1e-12)
        assert from_table.err == pytest.approx(visit_calib.err, rel=1e-6)
        assert joint.is_constant and joint.mean == pytest.approx(truth.mean, rel=0.02)
        assert joint.mean != truth.mean


def test_same_seed_same_data(repo, tmp_path):
    """CCDs are independent and seeded: CCD 50 alone, made serially, equals the threaded one.

    Every file is byte-identical except the calexp, whose tile-compressed planes carry the
    write time in their gzip headers (astropy); its decompressed data are compared instead.
    """
    summary, sources, ccds = repo
    again = make_demo_repository(tmp_path / "again", visits=2, ccds=[50], seed=3,
                                 scheduler="sync")  # fmt: skip
    again_sources, again_ccds = read_truth(again.root)
    for _, row in ccds[ccds.ccd == 50].iterrows():
        first, second = _paths(summary, row), _paths(again, row)
        for name in TEMPLATES:
            if name != "calexp":
                assert first[name].read_bytes() == second[name].read_bytes(), name
        with fits.open(first["calexp"]) as ha, fits.open(second["calexp"]) as hb:
            for x, y in zip(ha, hb, strict=True):
                assert x.header == y.header
                if x.data is not None:
                    assert x.data.tobytes() == y.data.tobytes(), x.name
    expected = sources[sources.ccd == 50].reset_index(drop=True)
    pd.testing.assert_frame_equal(again_sources, expected, check_exact=True)
    other = make_demo_repository(tmp_path / "other", visits=1, ccds=[50], seed=4,
                                 scheduler="sync")  # fmt: skip
    row = again_ccds.iloc[0]
    images = [read_exposure(_paths(s, row)["calexp"]).image.values for s in (again, other)]
    assert not np.array_equal(*images)


def test_cli_make(tmp_path, capsys):
    assert main(["demo", "make", str(tmp_path / "cli"), "--visits", "1", "--ccds", "49^50",
                 "--seed", "5", "--rerun", "mine", "--scheduler", "sync"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "2 written" in out and str(tmp_path / "cli" / "rerun" / "mine") in out
    assert (tmp_path / "cli" / "rerun" / "mine" / "00816" / "HSC-G" / "corr").is_dir()
    assert main(["demo", "make", str(tmp_path / "bad"), "--ccds", "9"]) == 2  # only broken


def test_ccd_list_syntax_and_layout():
    assert parse_ccds("0..8^10..103") == science_ccds()
    assert len(science_ccds()) == 103
    full, small = camera("full"), camera("small")
    assert len(full) == 104 and (full[0].width, full[0].height) == (2048, 4176)
    assert (small[0].width, small[0].height) == (256, 512)
    np.testing.assert_allclose(np.array([c.center_mm for c in full]) / 8,
                               np.array([c.center_mm for c in small]))  # fmt: skip


def test_flux_fractions_of_a_star_and_render_conserves_flux():
    fractions = flux_fractions(2.0, np.array([2.0, 3.0]))
    np.testing.assert_allclose(fractions["base_PsfFlux"][0], [1.0, 8.0 / 13.0])
    assert fractions["base_CircularApertureFlux_12_0"][0][0] == pytest.approx(1.0, abs=1e-7)
    x, y = np.array([20.3, 40.0, -30.0]), np.array([30.7, 35.2, 5.0])
    img = render_sources((64, 64), x, y, np.array([100.0, 50.0, 1e6]), np.array([1.5, 2.5, 2.0]))
    # stamps are cut at 5 sigma; the third source is off the image
    assert img.sum() == pytest.approx(150.0, rel=2e-6)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 3)),
           elements=st.floats(-2, 2)),
    arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 3)),
           elements=st.floats(-2, 2)),
)  # fmt: skip
def test_chebyshev_product_is_exact(a, b):
    box = BBox(0, 0, 99, 49)
    x, y = np.array([0.0, 13.0, 99.0, 50.5]), np.array([0.0, 49.0, 7.0, 25.0])
    product = ChebyshevBoundedField(box, cheb2d_product(a, b)).evaluate(x, y)
    fa, fb = ChebyshevBoundedField(box, a), ChebyshevBoundedField(box, b)
    expected = fa.evaluate(x, y) * fb.evaluate(x, y)
    np.testing.assert_allclose(product, expected, atol=1e-12)


def test_runs_on_a_distributed_client(tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ) as client:
        summary = make_demo_repository(tmp_path / "dist", visits=1, ccds=[50, 51], client=client)
    assert summary.n_ccds == 2 and summary.paths["sources"].is_file()
