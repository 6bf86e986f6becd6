"""afw Exposure I/O: lazy reading (local and distributed), lossless writing, atomic writes."""

from __future__ import annotations

import os
import pickle

import dask
import numpy as np
import pytest
from astropy.io import fits
from conftest import real_path

from daskcal.io import exposure as exposure_module
from daskcal.io.archive import ArchiveWriter, read_archive
from daskcal.io.atomic import atomic_write
from daskcal.io.exposure import (
    ExposureFormatError,
    exposure_archive,
    read_exposure,
    write_exposure,
    write_exposure_dataset,
)

CALEXP = "lsst/obs_base/tests/data/calexp.fits"
EXPOSURE_V2 = "lsst/afw/tests/data/exposure-version-2.fits"
CFHT_CALEXP = (
    "lsst/jointcal/tests/data/cfht_minimal/repo/calexp/06AL01/D3/2006-05-20/r/"
    "calexp-849375-12.fits.fz"
)
PLANES = ("image", "mask", "variance")


@pytest.mark.parametrize(
    ("relative", "shape", "n_mask_planes"),
    [(CALEXP, (32, 64), 15), (EXPOSURE_V2, (10, 10), 9), (CFHT_CALEXP, (4612, 2048), 10)],
)
def test_real_exposures_read(relative, shape, n_mask_planes):
    path = real_path(relative)
    ds = read_exposure(path)
    assert dict(ds.sizes) == {"y": shape[0], "x": shape[1]}
    assert [ds[p].dtype for p in PLANES] == [np.float32, np.int32, np.float32]
    assert ds.attrs["hdus"] == {"image": 1, "mask": 2, "variance": 3}
    assert len(ds.attrs["mask_planes"]) == n_mask_planes
    assert ds.attrs["mask_planes"]["BAD"] == 0 and ds.attrs["mask_planes"]["DETECTED"] == 5
    assert ds.attrs["xy0"] == (0, 0) and ds.x.values[0] == 0 and ds.y.values[-1] == shape[0] - 1
    assert ds.attrs["header"]["AR_HDU"] == 5
    restored = pickle.loads(pickle.dumps(ds.attrs))
    assert restored["archive"].path == ds.attrs["path"] == str(path)
    with exposure_archive(path) as archive:
        assert archive.find("PhotoCalib")


@pytest.mark.parametrize("relative", [CALEXP, EXPOSURE_V2])
def test_pixels_match_astropy(relative):
    path = real_path(relative)
    ds = read_exposure(path, chunk_rows=7)
    assert ds.image.data.numblocks == (-(-ds.sizes["y"] // 7), 1)
    with fits.open(path) as hdul:
        for i, plane in enumerate(PLANES, start=1):
            expected = hdul[i].data
            assert np.array_equal(ds[plane].values, expected, equal_nan=plane != "mask")


def test_compressed_rows_decompress_only_what_is_asked():
    path = real_path(CFHT_CALEXP)
    ds = read_exposure(path, chunk_rows=256)
    with fits.open(path) as hdul:
        assert isinstance(hdul[1], fits.CompImageHDU)
        expected = hdul[2].section[1000:1010]
    block = ds.mask.isel(y=slice(1000, 1010)).values  # one block of 18 is computed
    assert np.array_equal(block, expected)


def test_graph_tasks_carry_plain_values_only():
    ds = read_exposure(real_path(CALEXP), chunk_rows=10)
    graph = dict(ds.variance.data.__dask_graph__())
    assert len(graph) == 4
    for task in graph.values():  # the file name and numbers: no open file, no pixels
        payload = pickle.dumps(task)
        assert len(payload) < 1000 and b"_read_block" in payload
        assert b"HDUList" not in payload and b"BinTable" not in payload


def test_building_datasets_reads_no_pixels(monkeypatch):
    calls = []
    original = exposure_module.read_rows

    def counting(*args):
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(exposure_module, "read_rows", counting)
    paths = [real_path(p) for p in (CALEXP, EXPOSURE_V2, CFHT_CALEXP)] * 10
    datasets = [read_exposure(p, chunk_rows=8) for p in paths]
    assert calls == []
    total = dask.compute(datasets[0].image.sum(), scheduler="sync")[0]
    assert len(calls) == 4  # 32 rows / 8
    with fits.open(paths[0]) as hdul:
        assert total == pytest.approx(float(np.nansum(hdul[1].data, dtype=np.float64)), rel=1e-5)


def _photocalib_mean(handle) -> float:
    """Run on a worker: open the archive from the pickled handle."""
    with handle.open() as archive:
        return float(archive[archive.find("PhotoCalib")[0]].catalogs[0]["calibrationMean"][0])


def test_distributed_processes_compute(tmp_path):
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(3)
    image = rng.normal(size=(40, 30)).astype(np.float32)
    mask = rng.integers(0, 1 << 10, size=(40, 30), dtype=np.int32)
    variance = rng.random((40, 30), dtype=np.float32)
    path = tmp_path / "compressed.fits"
    write_exposure(path, image, mask, variance, primary_header=None, mask_planes={"BAD": 0})
    ds = read_exposure(path, chunk_rows=9)
    calexp = read_exposure(real_path(CALEXP), chunk_rows=10)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        img, msk, var, total = client.compute(
            [ds.image.data, ds.mask.data, ds.variance.data, calexp.variance.sum()], sync=True
        )
        mean = client.submit(_photocalib_mean, calexp.attrs["archive"]).result()
    assert np.array_equal(img, image) and np.array_equal(msk, mask)
    assert np.array_equal(var, variance)
    with fits.open(real_path(CALEXP)) as hdul:
        assert float(total) == pytest.approx(float(hdul[3].data.sum(dtype=np.float64)), rel=1e-5)
    assert mean == pytest.approx(1.99408751, abs=5e-9)


def _raw_hdus(path) -> list[bytes]:
    with fits.open(path) as hdul:
        out = []
        for hdu in hdul:
            info = hdu.fileinfo()
            info["file"].seek(info["hdrLoc"])
            out.append(info["file"].read(info["datLoc"] - info["hdrLoc"] + info["datSpan"]))
        return out


def test_real_calexp_roundtrip(tmp_path):
    path = real_path(CALEXP)
    out = tmp_path / "calibrated" / "CALEXP-0904010-042.fits"
    ds = read_exposure(path)
    with exposure_archive(path) as archive:
        write_exposure_dataset(out, ds, archive_hdus=ArchiveWriter(base=archive).hdus())
    back = read_exposure(out)
    for plane in PLANES:  # bit-identical
        assert np.array_equal(ds[plane].values.view(np.int32), back[plane].values.view(np.int32))
    assert back.attrs["mask_planes"] == ds.attrs["mask_planes"]
    old, new = ds.attrs["header"], back.attrs["header"]
    assert [(c.keyword, c.value) for c in old.cards] == [(c.keyword, c.value) for c in new.cards]
    for plane in PLANES:
        h0, h1 = ds.attrs["plane_headers"][plane], back.attrs["plane_headers"][plane]
        assert {k: h0[k] for k in h0 if k != "COMMENT"} == {k: h1[k] for k in h1 if k != "COMMENT"}
    with fits.open(path) as h0, fits.open(out) as h1:
        assert [type(h) for h in h1[1:4]] == [fits.CompImageHDU] * 3
        a0, a1 = read_archive(h0), read_archive(h1)
        assert a1.ids == a0.ids
        wcs_id = old["ARCHIVE_ID_SKYWCS"]
        assert a1[wcs_id].catalogs[0].bytes("wcs") == a0[wcs_id].catalogs[0].bytes("wcs")
    assert _raw_hdus(path)[5:] == _raw_hdus(out)[5:]  # carried archive data, byte for byte


@pytest.mark.parametrize(
    "codec, kinds",
    [
        ("daskcal", ["GZIP_2"] * 3),
        ("afw", ["GZIP_2"] * 3),
        ("astropy", ["GZIP_2", "RICE_1", "GZIP_2"]),
    ],
)
def test_compression_is_lossless_for_any_float_bits(tmp_path, codec, kinds):
    rng = np.random.default_rng(11)
    bits = rng.integers(0, 2**32, size=(37, 53), dtype=np.uint32)
    image = bits.view(np.float32)  # includes NaN payloads, infinities, denormals, -0.0
    variance = np.full((37, 53), -0.0, np.float32)
    variance[0, :4] = [np.inf, -np.inf, np.nan, 1e-45]
    mask = rng.integers(np.iinfo(np.int32).min, np.iinfo(np.int32).max, (37, 53), np.int32)
    path = tmp_path / "bits.fits"
    write_exposure(
        path, image, mask, variance, primary_header=None, mask_planes={"X": 31}, codec=codec
    )
    ds = read_exposure(path)
    assert np.array_equal(ds.image.values.view(np.uint32), bits)
    assert np.array_equal(ds.variance.values.view(np.uint32), variance.view(np.uint32))
    assert np.array_equal(ds.mask.values, mask)
    with fits.open(path, disable_image_compression=True) as hdul:
        assert [hdul[i].header["ZCMPTYPE"] for i in (1, 2, 3)] == kinds
        assert "ZSCALE" not in hdul[1].columns.names  # floats are not quantized
    fitsio = pytest.importorskip("fitsio")
    for ext, expected in ((1, image), (2, mask), (3, variance)):
        data = fitsio.read(str(path), ext=ext)
        assert np.array_equal(data.view(np.uint32), expected.view(np.uint32))


def test_xy0_cards_and_coords(tmp_path):
    path = tmp_path / "offset.fits"
    ones = np.ones((4, 6), np.float32)
    header = fits.Header([("HIERARCH PHOTOCALIB_ID", 3), ("EXPTIME", 30.0)])
    write_exposure(
        path, ones, ones.astype(np.int32), ones, primary_header=header,
        mask_planes={"NO_DATA": 8, "BAD": 0}, xy0=(100, 200), compress=False,
    )  # fmt: skip
    ds = read_exposure(path)
    assert ds.attrs["xy0"] == (100, 200)
    assert ds.x.values.tolist() == list(range(100, 106))
    assert ds.y.values.tolist() == list(range(200, 204))
    assert ds.attrs["mask_planes"] == {"BAD": 0, "NO_DATA": 8}
    assert ds.attrs["archive"] is None and "AR_HDU" not in ds.attrs["header"]
    assert ds.attrs["header"]["PHOTOCALIB_ID"] == 3
    with fits.open(path) as hdul:
        assert [type(h) for h in hdul[1:]] == [fits.ImageHDU] * 3
        for hdu, name in zip(hdul[1:], ("IMAGE", "MASK", "VARIANCE"), strict=True):
            h = hdu.header
            assert (h["EXTTYPE"], h["EXTNAME"], h["LTV1"], h["LTV2"]) == (name, name, -100, -200)
            a_wcs = (h["CRVAL1A"], h["CRVAL2A"], h["CRPIX1A"], h["CTYPE1A"])
            assert a_wcs == (100, 200, 1, "LINEAR")


def test_old_int16_mask_and_plane_fallbacks(tmp_path):
    mask16 = np.array([[0, 1, 2], [256, 4096, 32768]], dtype=np.uint16)  # BZERO=32768 on disk
    plane = np.arange(6, dtype=np.float32).reshape(2, 3)
    by_name = tmp_path / "by_extname.fits"
    hdus = [fits.ImageHDU(plane, name="VARIANCE"), fits.ImageHDU(mask16, name="MASK")]
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(plane * 2, name="IMAGE"), *hdus]).writeto(
        by_name
    )
    ds = read_exposure(by_name)
    assert ds.attrs["hdus"] == {"image": 1, "variance": 2, "mask": 3}
    assert ds.mask.dtype == np.int32 and ds.mask.values.tolist() == mask16.tolist()
    assert np.array_equal(ds.variance.values, plane)
    in_order = tmp_path / "in_order.fits"
    hdus = [fits.ImageHDU(plane * 2), fits.ImageHDU(mask16), fits.ImageHDU(plane)]
    fits.HDUList([fits.PrimaryHDU(), *hdus]).writeto(in_order)
    ds = read_exposure(in_order)
    assert ds.attrs["hdus"] == {"image": 1, "mask": 2, "variance": 3}
    assert np.array_equal(ds.image.values, plane * 2)
    bad = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([])]).writeto(bad)
    with pytest.raises(ExposureFormatError, match="table.fits"):
        read_exposure(bad)


def test_atomic_write_cleans_up_and_keeps_old_file(tmp_path):
    final = tmp_path / "deep" / "CALEXP-1.fits"
    with atomic_write(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".CALEXP-1.fits.tmp-")
        tmp.write_bytes(b"first")
    assert final.read_bytes() == b"first"
    with pytest.raises(RuntimeError, match="killed"), atomic_write(final) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed")
    assert final.read_bytes() == b"first"
    assert os.listdir(final.parent) == ["CALEXP-1.fits"]
    fresh = tmp_path / "never.fits"
    with pytest.raises(ValueError, match="2-D shape"):
        write_exposure(fresh, np.zeros((2, 2)), np.zeros((2, 3)), np.zeros((2, 2)),
                       primary_header=None, mask_planes={})  # fmt: skip
    with pytest.raises(TypeError), atomic_write(fresh) as tmp:
        fits.HDUList([fits.PrimaryHDU(), "not an HDU"]).writeto(tmp)
    assert not fresh.exists() and os.listdir(tmp_path) == ["deep"]
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_write(fresh):
        pass
