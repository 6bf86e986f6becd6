"""Lazy collections: nothing is read until compute; partitions line up with data ids."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from conftest import real_path

import daskcal
import daskcal.io.exposure as exposure_module
import daskcal.lazy.inputs as collections_module

CALEXP = "lsst/obs_base/tests/data/calexp.fits"
SRC = "lsst/faro/tests/data/src_HSC_i_HSC-I_903986_0_31_HSC_runs_ci_hsc_20210407T021858Z.fits"


@pytest.fixture(scope="module")
def big_repo(tmp_path_factory):
    """100 CCD entries (symlinks to one real calexp and one real src), no registry."""
    calexp, src = real_path(CALEXP), real_path(SRC)
    root = tmp_path_factory.mktemp("repo")
    (root / "_mapper").write_text("lsst.obs.hsc.HscMapper\n")
    for visit in (1228, 1230):
        for ccd in range(50):
            name = f"{visit:07d}-{ccd:03d}.fits"
            corr = root / "00816" / "HSC-I" / "corr"
            out = root / "00816" / "HSC-I" / "output"
            corr.mkdir(parents=True, exist_ok=True)
            out.mkdir(parents=True, exist_ok=True)
            os.symlink(calexp, corr / f"CORR-{name}")
            os.symlink(src, out / f"SRC-{name}")
    return daskcal.Repository(root)


def test_open_catalogs_reads_no_table_until_compute(big_repo, monkeypatch):
    calls = []
    real = collections_module.read_catalog
    monkeypatch.setattr(
        collections_module, "read_catalog", lambda p, **kw: calls.append(p) or real(p, **kw)
    )
    ddf = daskcal.open_catalogs(big_repo, [{"visit": 1228}, {"visit": 1230}])
    assert ddf.npartitions == 100 and calls == []
    assert list(ddf.columns[-5:]) == ["visit", "ccd", "tract", "filter", "pointing"]
    part = ddf.partitions[57].compute()
    assert len(calls) == 1 and len(part) == 771
    assert set(part["visit"]) == {1230} and set(part["ccd"]) == {7}
    assert part["sky_source"].sum() == 100
    assert (part.dtypes == ddf._meta.dtypes).all()


def test_open_exposures_reads_no_pixels_until_compute(big_repo, monkeypatch):
    calls = []
    real = exposure_module.read_rows
    monkeypatch.setattr(exposure_module, "read_rows", lambda *a: calls.append(a) or real(*a))
    datasets = daskcal.open_exposures(big_repo, [{"visit": 1228}, {"visit": 1230}])
    assert len(datasets) == 100 and calls == []
    stacked = daskcal.open_exposures(
        big_repo, [{"visit": 1228, "ccd": 3}, {"visit": 1230}], stack=True
    )
    assert calls == []
    assert stacked["image"].dims == ("exposure", "y", "x") and stacked.sizes["exposure"] == 51
    one = stacked["image"].sel(visit=1230, ccd=4).values
    assert calls and one.shape == (32, 64)
    np.testing.assert_array_equal(one, datasets[54]["image"].values)
    assert len(stacked.attrs["mask_planes"]) == 15


def test_catalog_graph_runs_on_a_distributed_cluster(big_repo):
    distributed = pytest.importorskip("distributed")
    ddf = daskcal.open_catalogs(big_repo, [{"visit": 1228, "ccd": c} for c in range(4)])
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster),
    ):
        counts = ddf.groupby("ccd")["id"].count().compute()
    assert counts.to_dict() == {0: 771, 1: 771, 2: 771, 3: 771}


def test_missing_files_are_named(big_repo):
    with pytest.raises(daskcal.DataIdError, match="no data for visit=999"):
        daskcal.open_catalogs(big_repo, [{"visit": 999}])


COLUMNS = ["base_PsfFlux_instFlux", "sky_source", "coord_ra", "id", "base_PsfFlux_flag"]


def test_open_catalogs_reads_only_the_columns_asked_for(big_repo, monkeypatch):
    import daskcal.io.catalog as catalog_module

    decoded = []
    real = catalog_module.decode_columns

    def counted(hdu, rows=None, columns=None):
        out = real(hdu, rows, columns)
        decoded.append(set(out))
        return out

    monkeypatch.setattr(catalog_module, "decode_columns", counted)
    ids = [{"visit": 1228, "ccd": c} for c in range(3)]
    ddf = daskcal.open_catalogs(big_repo, ids, columns=[*COLUMNS, "ccd", "id"])
    wanted = [*COLUMNS, "visit", "ccd", "tract", "filter", "pointing"]
    assert list(ddf.columns) == wanted
    decoded.clear()
    frame = ddf.compute()
    assert decoded == [set(COLUMNS)] * 3  # nothing else decoded
    assert list(frame.columns) == wanted and len(frame) == 3 * 771
    full = daskcal.open_catalogs(big_repo, ids).compute()
    pd.testing.assert_frame_equal(frame, full[wanted])
    part = ddf.partitions[1].compute()
    assert (part.dtypes == ddf._meta.dtypes).all()
    with pytest.raises(KeyError, match="no column 'nope'"):
        daskcal.open_catalogs(big_repo, ids, columns=["id", "nope"])
    # a selection made afterwards is pushed into the reads as well (Dask's projection)
    projected = daskcal.open_catalogs(big_repo, ids)[["coord_dec", "ccd"]]
    decoded.clear()
    selected = projected.compute()
    assert decoded == [{"coord_dec"}] * 3
    pd.testing.assert_frame_equal(selected, full[["coord_dec", "ccd"]])


def test_read_catalog_columns_every_table_version():
    for relative in (SRC, "lsst/obs_base/tests/data/source_catalog.fits",
                     "lsst/afw/tests/data/sourceTable-v2.fits"):  # fmt: skip
        path = real_path(relative)
        full = daskcal.read_catalog(path)
        columns = [*full.columns[::-9], full.columns[0]]
        part = daskcal.read_catalog(path, columns=columns)
        pd.testing.assert_frame_equal(part, full[columns])
        assert part.attrs["aliases"] == full.attrs["aliases"]
        meta = collections_module.catalog_meta(path, columns=columns)
        assert list(meta.columns) == columns and (meta.dtypes == part.dtypes).all()


def test_calibrated_catalogs_read_only_what_the_columns_need(demo, ids, monkeypatch):
    import daskcal.lazy.calibrated as calibrated_module

    reads = []
    real = calibrated_module.read_catalog
    monkeypatch.setattr(
        calibrated_module,
        "read_catalog",
        lambda p, columns=None: reads.append(columns) or real(p, columns=columns),
    )
    config = daskcal.CalibrateConfig()
    table = daskcal.calibration_table(demo, ids, config)
    asked = ["base_PsfFlux_magErr", "coord_ra", "id", "base_PsfFlux_flux", "sky_source"]
    ddf = daskcal.calibrated_catalogs(demo, ids, config, table=table, columns=asked)
    wanted = [*asked, *collections_module.ID_COLUMNS]
    assert list(ddf.columns) == wanted and reads == []
    frame = ddf.compute()
    centroid = ["base_SdssCentroid_x", "base_SdssCentroid_y"]
    needed = ["base_PsfFlux_instFlux", "base_PsfFlux_instFluxErr", "coord_ra", "id"]
    assert reads == [[*needed, "sky_source", *centroid]] * 2
    full = daskcal.calibrated_catalogs(demo, ids, config, table=table).compute()
    pd.testing.assert_frame_equal(frame, full[wanted])
    assert list(ddf._meta.columns) == wanted
    assert (ddf.partitions[0].compute().dtypes == ddf._meta.dtypes).all()
    with pytest.raises(KeyError, match="no column 'base_PsfFlux_fluxx'"):
        daskcal.calibrated_catalogs(demo, ids, config, table=table, columns=["base_PsfFlux_fluxx"])
    uncalibrated = daskcal.CalibrateConfig(doApplyExternalPhotoCalib=False)
    with pytest.raises(KeyError, match="base_PsfFlux_flux"):
        daskcal.calibrated_catalogs(
            demo, ids, uncalibrated, table=table, columns=["base_PsfFlux_flux"]
        )
