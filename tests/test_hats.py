"""HATS catalogs from the calibrated Parquet dataset: valid for hats, readable by LSDB."""

from __future__ import annotations

import warnings

import astropy.units as u
import cdshealpix
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import Latitude, Longitude, SkyCoord
from conftest import copy_repository
from hats.catalog import PartitionInfo, TableProperties
from hats.io.validation import is_valid_catalog

import daskcal.io.hats as dh
from daskcal.cli import main
from daskcal.io.hats import choose_order, open_parquet_dataset, write_hats

# lsdb 0.11 / nested-pandas call pandas options and keywords that pandas 3.1 deprecates.
LSDB_WARNINGS = (
    "The 'mode.chained_assignment' option is deprecated",
    "The inplace keyword in NestedFrame.drop is deprecated",
)
pytestmark = [pytest.mark.filterwarnings(f"ignore:{m}") for m in LSDB_WARNINGS]
KEYS = ["visit", "ccd", "id"]


@pytest.fixture(scope="module")
def lsdb():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=LSDB_WARNINGS[0])
        import lsdb
    return lsdb


@pytest.fixture(scope="module")
def demo(demo_repository, tmp_path_factory):
    """A small demo repository calibrated into rerun ``calib`` (with its Parquet dataset)."""
    root = copy_repository(demo_repository(visits=2, ccds=(0, 50), seed=5),
                           tmp_path_factory.mktemp("hats") / "repo")  # fmt: skip
    args = ["catalog", str(root), "--rerun", "demo:calib", "--id", "tract=0", "--no-versions"]
    assert main(args) == 0
    return root


@pytest.fixture(scope="module")
def parquet_dir(demo):
    return demo / "rerun/calib/calibrated/parquet/src"


@pytest.fixture(scope="module")
def rows(parquet_dir):
    """Every Parquet row, read independently of the writer."""
    return ds.dataset(parquet_dir, format="parquet", partitioning="hive").to_table().to_pandas()


@pytest.fixture(scope="module")
def catalogs(parquet_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("hatsout")
    return write_hats(parquet_dir, out), write_hats(parquet_dir, out, "fine", order=12)


def keyset(df):
    return set(map(tuple, df[KEYS].to_numpy().tolist()))


def finite(df):
    return df[np.isfinite(df["ra"]) & np.isfinite(df["dec"])]


def pixel_files(path):
    return sorted((path / "dataset").glob("Norder=*/Dir=*/Npix=*.parquet"))


def test_catalog_is_valid_and_lsdb_reads_every_row(catalogs, rows, lsdb):
    for summary in catalogs:
        assert is_valid_catalog(summary.path, strict=True)
        assert summary.n_rows + summary.dropped == len(rows)
        assert (
            summary.n_rows == len(finite(rows)) and summary.dropped == len(rows) - summary.n_rows
        )
        df = lsdb.open_catalog(summary.path).compute()
        assert len(df) == summary.n_rows
        assert keyset(df) == keyset(finite(rows))
        assert set(df["filter"]) == {"HSC-G", "HSC-I"} and set(df["tract"]) == {0}
        props = TableProperties.read_from_dir(summary.path)
        assert props.total_rows == summary.n_rows and props.ra_column == "ra"
        assert props.healpix_column == "_healpix_29" and props.healpix_order == 29
    assert catalogs[0].order == 0 and catalogs[0].n_pixels == 1  # a few hundred rows
    assert catalogs[1].order == 12 and catalogs[1].n_pixels > 1


def test_every_file_has_the_common_schema(catalogs):
    path = catalogs[1].path
    common = pq.read_schema(path / "dataset" / "_common_metadata")
    assert common.field("_healpix_29").type == pa.int64()
    assert common.field("tract").type == pa.int32() and common.field("filter").type == pa.string()
    assert common.field("ra").metadata[b"unit"] == b"deg"
    files = pixel_files(path)
    assert len(files) == catalogs[1].n_pixels
    for f in files:
        assert pq.read_schema(f).equals(common, check_metadata=True)
        h = pq.read_table(f, columns=["_healpix_29"])["_healpix_29"].to_numpy()
        assert np.all(np.diff(h) >= 0)


def test_cone_search_matches_separations_from_the_parquet_rows(catalogs, rows, lsdb):
    good = finite(rows)
    ra0, dec0 = float(good["ra"].median()), float(good["dec"].median())
    sep = (
        SkyCoord(good["ra"].to_numpy() * u.deg, good["dec"].to_numpy() * u.deg)
        .separation(SkyCoord(ra0 * u.deg, dec0 * u.deg))
        .arcsec
    )
    k = len(sep) // 3
    s = np.sort(sep)
    radius = 0.5 * (s[k] + s[k + 1])  # halfway between two sources: no row on the edge
    assert s[k + 1] - s[k] > 1e-6
    expected = keyset(good[sep < radius])
    assert 0 < len(expected) < len(good)
    for summary in catalogs:
        found = lsdb.open_catalog(summary.path).cone_search(ra0, dec0, radius).compute()
        assert keyset(found) == expected


def test_cli_writes_the_rerun_catalog_and_refuses_to_overwrite(demo, rows, capsys):
    base = ["hats", str(demo), "--rerun", "calib"]
    assert main(base) == 0
    out = capsys.readouterr().out
    path = demo / "rerun/calib/calibrated/hats/calsrc"
    assert is_valid_catalog(path) and f"{path}: {len(finite(rows))} rows" in out
    before = (path / "hats.properties").read_text()
    assert main(base) == 2
    err = capsys.readouterr().err
    assert err.startswith("daskcal: error: ") and "exists" in err and err.count("\n") == 1
    assert (path / "hats.properties").read_text() == before
    assert main([*base, "--overwrite", "--order", "10"]) == 0
    assert "1 rows without valid ra/dec left out" in capsys.readouterr().err
    assert PartitionInfo.read_from_dir(path).get_highest_order() == 10
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    assert main(["hats", str(demo), "--rerun", "demo"]) == 2
    err = capsys.readouterr().err
    assert "no Parquet dataset" in err and "calibrateCatalog.py" in err and err.count("\n") == 1


def write_visit(root, tract, filt, visit, columns):
    folder = root / f"tract={tract}" / f"filter={filt}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), folder / f"visit-{visit:07d}.parquet")


@pytest.fixture
def sky(tmp_path):
    """A synthetic dataset: 3000 rows over a few degrees, two visits with differing schemas."""
    rng = np.random.default_rng(11)
    n = 1500
    root = tmp_path / "src"
    for visit, (tract, filt) in enumerate([(0, "HSC-G"), (1, "HSC-I")]):
        columns = {
            "ra": rng.uniform(148.0, 152.0, n),
            "dec": rng.uniform(0.0, 3.0, n),
            "id": np.arange(n, dtype=np.int64) + visit * n,
            "flux": pa.array(rng.normal(size=n), pa.float32() if visit else pa.float64()),
        }
        if visit:
            columns["extra"] = np.ones(n, dtype=bool)
        write_visit(root, tract, filt, visit, columns)
    return root


def test_forced_order_gives_several_pixels_each_holding_its_own_rows(sky, tmp_path):
    summary = write_hats(sky, tmp_path / "out", "sky", order=6)
    assert summary.n_rows == 3000 and summary.dropped == 0
    pixels = PartitionInfo.read_from_dir(summary.path).get_healpix_pixels()
    assert len(pixels) > 1 and len(pixels) == summary.n_pixels
    assert {p.order for p in pixels} == {6}
    total = 0
    for f in pixel_files(summary.path):
        npix = int(f.name.removeprefix("Npix=").removesuffix(".parquet"))
        table = pq.read_table(f)
        lon = Longitude(table["ra"].to_numpy(), unit="deg")
        lat = Latitude(table["dec"].to_numpy(), unit="deg")
        assert np.all(cdshealpix.nested.lonlat_to_healpix(lon, lat, 6) == npix)
        assert np.all(table["_healpix_29"].to_numpy() >> (2 * (29 - 6)) == npix)
        assert table.schema.field("flux").type == pa.float64()  # promoted from float32
        total += table.num_rows
    assert total == 3000
    # the spill path (every group to scratch files) writes the very same files
    spilled = write_hats(sky, tmp_path / "out", "spilled", order=6, buffer_bytes=1)
    for a, b in zip(pixel_files(summary.path), pixel_files(spilled.path), strict=True):
        assert a.name == b.name and pq.read_table(a).equals(pq.read_table(b))
    assert not (spilled.path / ".spill").exists()


def test_order_from_rows_per_pixel(sky):
    dataset = open_parquet_dataset(sky)
    assert choose_order(dataset, 3000) == 0
    order = choose_order(dataset, 100)
    table = dataset.to_table(columns=["ra", "dec"])
    lon, lat = (
        Longitude(table["ra"].to_numpy(), unit="deg"),
        Latitude(table["dec"].to_numpy(), unit="deg"),
    )
    for k, ok in ((order, True), (order - 1, False)):
        counts = np.unique(cdshealpix.nested.lonlat_to_healpix(lon, lat, k), return_counts=True)[1]
        assert (counts.max() <= 100) == ok


def test_invalid_coordinates_are_dropped_and_counted(sky, tmp_path, lsdb):
    bad = {
        "ra": pa.array([np.nan, 150.0, np.inf, None, 150.5, 151.0], pa.float64()),
        "dec": pa.array([1.0, -np.inf, 1.0, 1.0, 91.0, 1.5], pa.float64()),
        "id": np.arange(6, dtype=np.int64) + 10_000,
        "flux": np.zeros(6),
    }
    write_visit(sky, 0, "HSC-G", 99, bad)
    summary = write_hats(sky, tmp_path, "sky")
    assert summary.dropped == 5 and summary.n_rows == 3001
    df = lsdb.open_catalog(summary.path).compute()
    assert len(df) == 3001 and 10_005 in set(df["id"]) and not ({10_000, 10_004} & set(df["id"]))
    assert df["extra"].isna().sum() == 1501  # rows of the visits without that column


def test_refusals_and_a_failed_run_leave_the_old_catalog(sky, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = write_hats(sky, out, "sky", order=3)
    with pytest.raises(FileExistsError, match="exists"):
        write_hats(sky, out, "sky")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(dh, "write_parquet_metadata", broken)
    with pytest.raises(OSError, match="disk full"):
        write_hats(sky, out, "sky", order=5, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        write_hats(sky, out, "other")
    assert sorted(p.name for p in out.iterdir()) == ["sky"]  # no temporary folder left
    assert PartitionInfo.read_from_dir(first.path).get_highest_order() == 3
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError):
        write_hats(tmp_path / "nowhere", out, "x")
    with pytest.raises(ValueError, match="no column"):
        write_hats(sky, out, "x", ra_column="coord_ra")
    with pytest.raises(ValueError, match="order"):
        write_hats(sky, out, "x", order=30)
