"""engine="daskcal": xarray opens calexps and CALEXPs lazily, as daskcal.read_exposure does."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import xarray as xr
from conftest import real_path

import daskcal
import daskcal.io.exposure as exposure_module
from daskcal.lazy.xarray_backend import DaskcalBackendEntrypoint, ExposurePlaneArray, LazyProduct

CALEXP = "lsst/obs_base/tests/data/calexp.fits"
SRC = "lsst/faro/tests/data/src_HSC_i_HSC-I_903986_0_31_HSC_runs_ci_hsc_20210407T021858Z.fits"
PLANES = ("image", "mask", "variance")


@pytest.fixture(scope="module")
def calexps(demo, ids):
    """The demo's two calexps (CCDs 0 and 50)."""
    return [demo.find("calexp", d) for d in ids]


@pytest.fixture(scope="module")
def calibrated(demo, ids):
    """A CALEXP (tile-compressed, daskcal's layout) of demo CCD 50, in a rerun of its own."""
    from daskcal.cli import main

    argv = ["exposure", str(demo.root), "--rerun", "demo:xarray", "--id", "visit=1228"]
    argv += ["tract=0", "ccd=50", "--batch-type", "none", "--no-versions"]
    assert main(argv) == 0
    return next((demo.root / "rerun" / "xarray" / "calibrated").rglob("CALEXP-*.fits"))


@pytest.fixture
def reads(monkeypatch):
    """The (path, hdu, y0, y1) of every block read from now on."""
    calls = []
    real = exposure_module.read_rows

    def counted(path, hdu, y0, y1, dtype):
        calls.append((path, hdu, y0, y1))
        return real(path, hdu, y0, y1, dtype)

    monkeypatch.setattr(exposure_module, "read_rows", counted)
    return calls


def assert_same_planes(ds: xr.Dataset, ref: xr.Dataset) -> None:
    for plane in PLANES:
        assert ds[plane].dtype == ref[plane].dtype
        np.testing.assert_array_equal(ds[plane].values, ref[plane].values, strict=True)
    np.testing.assert_array_equal(ds["x"].values, ref["x"].values)
    np.testing.assert_array_equal(ds["y"].values, ref["y"].values)
    assert ds.attrs["mask_planes"] == ref.attrs["mask_planes"]
    assert ds.attrs["xy0"] == ref.attrs["xy0"] and ds.attrs["path"] == ref.attrs["path"]


def test_the_engine_is_registered_and_describes_itself():
    engine = xr.backends.list_engines()["daskcal"]
    assert isinstance(engine, DaskcalBackendEntrypoint)
    assert "afw exposures" in engine.description and engine.url
    assert engine.open_dataset_parameters == ("filename_or_obj", "drop_variables", "sky_coords")


def test_guess_can_open_exposures_only(calexps, calibrated, demo, ids, tmp_path):
    engine = DaskcalBackendEntrypoint()
    assert all(engine.guess_can_open(p) for p in [*calexps, calibrated, str(calibrated)])
    assert engine.guess_can_open(real_path(CALEXP))
    text = tmp_path / "notes.fits"
    text.write_text("not FITS at all")
    others = [demo.find("src", ids[0]), real_path(SRC), text, tmp_path / "absent.fits"]
    others += [calexps[0].with_suffix(".nc"), io.BytesIO(calexps[0].read_bytes()), 42]
    assert not any(engine.guess_can_open(p) for p in others)
    with open(calexps[0].with_name("copy.nc"), "wb") as f:  # a calexp by another name
        f.write(calexps[0].read_bytes())
    assert not engine.guess_can_open(f.name)


@pytest.mark.parametrize("which", ["calexp", "CALEXP"])
def test_open_dataset_equals_read_exposure(which, calexps, calibrated):
    path = calexps[1] if which == "calexp" else calibrated
    ds = xr.open_dataset(path, engine="daskcal")
    assert_same_planes(ds, daskcal.read_exposure(path))
    assert "ra" not in ds.coords  # off by default (see sky_coords)
    pc, expected = ds.attrs["photocalib"].load(), daskcal.read_photocalib(path)
    assert (pc.mean, pc.err, pc.is_constant) == (expected.mean, expected.err, expected.is_constant)
    assert ds.attrs["skywcs"].load() == daskcal.read_skywcs(path)
    # without engine=, xarray finds the backend through guess_can_open
    assert_same_planes(xr.open_dataset(path), ds)


def test_open_dataset_on_the_real_calexp_with_sky_coords():
    path = real_path(CALEXP)
    ref = daskcal.read_exposure(path)
    ds = xr.open_dataset(path, engine="daskcal", sky_coords=True)
    assert_same_planes(ds, ref)
    for name in ("ra", "dec"):
        np.testing.assert_array_equal(ds[name].values, ref[name].values)
    assert len(ds.attrs["mask_planes"]) == 15
    pc = ds.attrs["photocalib"]
    assert not pc.loaded and pc.mean == daskcal.read_photocalib(path).mean and pc.loaded


def test_nothing_is_read_before_values_are_asked_for(calexps, reads):
    path = str(calexps[1].resolve())
    ds = xr.open_dataset(path, engine="daskcal")
    chunked = xr.open_dataset(path, engine="daskcal", chunks={"y": 100})
    assert reads == []
    assert not ds.attrs["photocalib"].loaded and not ds.attrs["skywcs"].loaded
    rows = ds["image"].isel(y=slice(10, 20)).values
    assert rows.shape == (10, 256) and reads == [(path, 1, 10, 20)]  # the rows asked for, no more
    reads.clear()
    chunked["variance"].sum().compute()
    assert sorted(reads) == [(path, 3, y, min(y + 100, 512)) for y in range(0, 512, 100)]


def test_chunks_are_honoured(calexps, calibrated):
    ref = daskcal.read_exposure(calexps[0])
    ds = xr.open_dataset(calexps[0], engine="daskcal", chunks={"y": 100})
    assert ds["image"].chunks == ((100,) * 5 + (12,), (256,))
    assert ds["mask"].chunks == ds["variance"].chunks == ds["image"].chunks
    assert_same_planes(ds.compute(), ref)
    # preferred chunks are whole rows: {} and "auto" give one block here
    for chunks in ({}, "auto"):
        one = xr.open_dataset(calibrated, engine="daskcal", chunks=chunks)
        assert one["image"].chunks == ((512,), (256,))
    with pytest.warns(UserWarning, match="separate the stored chunks"):
        split = xr.open_dataset(calexps[0], engine="daskcal", chunks={"y": 64, "x": 100})
    assert split["image"].chunks == ((64,) * 8, (100, 100, 56))
    np.testing.assert_array_equal(split["mask"].values, ref["mask"].values)


def test_any_selection_gives_read_exposure_values(calibrated):
    ref = daskcal.read_exposure(calibrated)
    ds = xr.open_dataset(calibrated, engine="daskcal")
    selections = [
        {"y": 7},
        {"y": -1, "x": slice(3, 9)},
        {"y": slice(None, None, -3)},
        {"y": slice(500, 2, -7), "x": slice(None, None, 5)},
        {"y": slice(20, 20)},
        {"y": [5, 0, 3], "x": [7, 1]},
    ]
    for sel in selections:
        got = ds["image"].isel(sel).values
        np.testing.assert_array_equal(got, ref["image"].isel(sel).values, strict=True)


def test_open_mfdataset_over_two_ccds(calexps, reads):
    combined = xr.open_mfdataset(
        calexps, engine="daskcal", combine="nested", concat_dim="exposure", chunks={"y": 256}
    )
    assert reads == []
    assert combined["image"].dims == ("exposure", "y", "x")
    assert combined.sizes == {"exposure": 2, "y": 512, "x": 256}
    assert combined["image"].chunks == ((1, 1), (256, 256), (256,))
    for k, path in enumerate(calexps):
        ref = daskcal.read_exposure(path)
        for plane in PLANES:
            values = combined[plane].isel(exposure=k).values
            np.testing.assert_array_equal(values, ref[plane].values, strict=True)
    assert reads
    shared = xr.open_mfdataset(
        calexps,
        engine="daskcal",
        combine="nested",
        concat_dim="exposure",
        combine_attrs="drop_conflicts",
    )
    assert "path" not in shared.attrs and shared.attrs["mask_planes"]


def test_open_mfdataset_refuses_differing_sky_coords(calexps):
    with pytest.raises(ValueError, match="sky coordinates"):
        xr.open_mfdataset(
            calexps,
            engine="daskcal",
            combine="nested",
            concat_dim="exposure",
            sky_coords=True,
            join="outer",
        )


def test_drop_variables(calexps):
    ds = xr.open_dataset(calexps[0], engine="daskcal", drop_variables="mask")
    assert set(ds.data_vars) == {"image", "variance"}
    ds = xr.open_dataset(
        calexps[0], engine="daskcal", sky_coords=True, drop_variables=["dec", "variance"]
    )
    assert set(ds.data_vars) == {"image", "mask"} and "ra" not in ds.coords
    ds = xr.open_dataset(calexps[0], engine="daskcal", sky_coords=True)
    assert {"ra", "dec"} <= set(ds.coords)


def test_file_objects_are_refused(calexps):
    with pytest.raises(TypeError, match="by name"):
        DaskcalBackendEntrypoint().open_dataset(io.BytesIO(calexps[0].read_bytes()))


def test_arrays_and_products_pickle_as_names(calexps):
    ds = xr.open_dataset(calexps[0], engine="daskcal", chunks={"y": 128})
    image = pickle.loads(pickle.dumps(ds["image"].data))
    np.testing.assert_array_equal(image.compute(), ds["image"].values)
    lazy = LazyProduct(calexps[0], "skywcs")
    copy = pickle.loads(pickle.dumps(lazy))
    assert copy == lazy and not copy.loaded and len(pickle.dumps(lazy)) < 300
    assert copy.pixel_to_sky(10.0, 20.0) == lazy.load().pixel_to_sky(10.0, 20.0)
    array = ExposurePlaneArray(str(calexps[0]), 1, (512, 256), np.dtype("float32"))
    assert "hdu=1" in repr(array) and "not read yet" in repr(LazyProduct(calexps[0], "skywcs"))
    with pytest.raises(ValueError, match="kind"):
        LazyProduct(calexps[0], "psf")
