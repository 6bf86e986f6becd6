"""afw source tables: reading real src files of every table version, writing them back."""

from __future__ import annotations

import copy
import os
import pickle

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from conftest import real_path
from hypothesis import given, settings
from hypothesis import strategies as st

from daskcal.io.catalog import (
    instflux_columns,
    read_catalog,
    resolve_alias,
    slot_centroid_columns,
    write_catalog,
)

FARO = "lsst/faro/tests/data/src_HSC_i_HSC-I_903986_0_31_HSC_runs_ci_hsc_20210407T021858Z.fits"
V2 = "lsst/afw/tests/data/sourceTable-v2.fits"
CFHT = "lsst/jointcal/tests/data/cfht_minimal/repo/src/06AL01/D3/2006-05-20/r/SRC-849375-12.fits"
OBS_BASE = "lsst/obs_base/tests/data/source_catalog.fits"
CALEXP_IMAGE = "lsst/obs_base/tests/data/calexp.fits"
ALL = [(FARO, 3, (771, 247)), (V2, 2, (3, 20)), (CFHT, 1, (2, 141)), (OBS_BASE, 1, (3, 20))]


def _without_path(attrs: dict) -> dict:
    return {k: v for k, v in attrs.items() if k != "path"}


def _raw_hdus(path) -> list[bytes]:
    with fits.open(path) as hdul:
        out = []
        for hdu in hdul:
            info = hdu.fileinfo()
            info["file"].seek(info["hdrLoc"])
            out.append(info["file"].read(info["datLoc"] - info["hdrLoc"] + info["datSpan"]))
        return out


@pytest.mark.parametrize(("relative", "version", "shape"), ALL)
def test_real_catalogs_read(relative, version, shape):
    path = real_path(relative)
    df = read_catalog(path)
    assert df.shape == shape
    assert df.attrs["table_version"] == version and df.attrs["afw_type"] == "SOURCE"
    with fits.open(path) as hdul:
        header = hdul[1].header
        nflags = int(header["TFORM1"][:-1])
        fields = [n for n in hdul[1].columns.names if n != "flags"]
    assert list(df.columns) == [*df.attrs["flag_names"][:nflags], *fields]  # flags first
    assert sum(pd.api.types.is_bool_dtype(t) for t in df.dtypes) == nflags
    assert df.attrs["units"]["coord_ra"] == "rad"
    assert df.attrs["docs"]["footprint"] == "archive ID for Footprint" or version < 3


@pytest.mark.parametrize(("relative", "version", "shape"), ALL)
def test_roundtrip_is_exact(tmp_path, relative, version, shape):
    path = real_path(relative)
    df = read_catalog(path)
    for template in (None, path):
        out = write_catalog(tmp_path / "sub" / "CALSRC.fits", df, template=template)
        back = read_catalog(out)
        pd.testing.assert_frame_equal(back, df)
        assert _without_path(back.attrs) == _without_path(df.attrs)
        if template is not None:
            assert _raw_hdus(out)[2:] == _raw_hdus(path)[2:]  # archive byte for byte


@pytest.mark.parametrize(
    "relative",
    [
        "lsst/drp_tasks/tests/data/visitSummary_1176.fits",
        "lsst/jointcal/tests/data/cfht_minimal/repo/calexp/06AL01/D3/2006-05-20/r/"
        "visitSummary-849375.fits",
    ],
)
def test_exposure_catalogs_roundtrip(tmp_path, relative):
    path = real_path(relative)
    df = read_catalog(path)
    assert df.attrs["afw_type"] == "EXPOSURE" and df.shape[1] == 40
    corners = np.stack(df["raCorners"].to_numpy())
    assert corners.shape == (len(df), 4) and corners.dtype == np.float64
    with fits.open(path) as hdul:
        assert np.array_equal(corners, hdul[1].data["raCorners"])
    back = read_catalog(write_catalog(tmp_path / "visitSummary.fits", df, template=path))
    assert _without_path(back.attrs) == _without_path(df.attrs)
    assert np.array_equal(np.stack(back["raCorners"].to_numpy()), corners)
    pd.testing.assert_frame_equal(back.drop(columns=["raCorners", "decCorners"]),
                                  df.drop(columns=["raCorners", "decCorners"]))  # fmt: skip
    assert _raw_hdus(tmp_path / "visitSummary.fits")[2:] == _raw_hdus(path)[2:]
    with pytest.raises(ValueError, match="not an afw table"):
        read_catalog(real_path(CALEXP_IMAGE))


def test_faro_src_content(golden):
    path = real_path(FARO)
    df = read_catalog(path)
    assert len(df) == 771 and len(df.attrs["flag_names"]) == 122
    assert int(df["sky_source"].sum()) == 100
    assert df.attrs["units"]["coord_dec"] == "rad"
    assert df.attrs["aliases"]["slot_Centroid"] == "base_SdssCentroid"
    assert slot_centroid_columns(df) == ("base_SdssCentroid_x", "base_SdssCentroid_y")
    nan_flux = df["base_PsfFlux_instFlux"].isna()
    assert df.loc[nan_flux, "base_PsfFlux_flag"].all()  # holds vacuously: this file has no NaN
    assert int(df["base_PsfFlux_flag"].sum()) == 159
    assert np.nanmedian(df["base_LocalPhotoCalib"]) == pytest.approx(0.76362255, rel=1e-6)
    radii = [v for k, v, _ in df.attrs["metadata"] if k == "BASE_CIRCULARAPERTUREFLUX_RADII"]
    assert radii == [3.0, 4.5, 6.0, 9.0, 12.0, 17.0, 25.0, 35.0, 50.0, 70.0]
    assert df["coord_ra"].dtype == np.float64 and df["id"].dtype == np.int64


def test_flags_match_raw_bits():
    """Unpack the packed bits from the raw row bytes, independently of astropy's X reader."""
    path = real_path(FARO)
    df = read_catalog(path)
    with fits.open(path) as hdul:
        rows = np.asarray(hdul[1].data).view(np.uint8).reshape(771, hdul[1].header["NAXIS1"])
    bits = np.unpackbits(rows[:, :16], axis=1)[:, :122].astype(bool)
    flags = df[list(df.attrs["flag_names"])].to_numpy()
    assert np.array_equal(flags, bits)


def test_template_with_new_columns(tmp_path):
    path = real_path(FARO)
    df = read_catalog(path)
    new = {
        "base_PsfFlux_flux": ("nJy", "instFlux calibrated to nJy"),
        "base_PsfFlux_fluxErr": ("nJy", "error on flux"),
        "base_PsfFlux_mag": ("mag(AB)", "calibrated AB magnitude"),
        "base_PsfFlux_magErr": ("mag(AB)", "error on mag"),
    }
    out_df = df.copy()
    for i, name in enumerate(new):
        out_df[name] = df["base_PsfFlux_instFlux"] * (i + 1.5)
    out_df["calib_new_flag"] = df["base_PsfFlux_instFlux"].isna()
    out_df.attrs["units"] = {**df.attrs["units"], **{k: u for k, (u, _) in new.items()}}
    out_df.attrs["docs"] = {**df.attrs["docs"], **{k: d for k, (_, d) in new.items()}}
    out = write_catalog(tmp_path / "CALSRC.fits", out_df, template=path)
    back = read_catalog(out)
    flags = list(df.attrs["flag_names"])
    fields = [c for c in df.columns if c not in flags and c != "footprint"]
    assert list(back.columns) == [*flags, "calib_new_flag", *fields, *new, "footprint"]
    pd.testing.assert_frame_equal(back[df.columns], df)
    pd.testing.assert_frame_equal(back[list(new)], out_df[list(new)])
    assert back.attrs["flag_names"] == (*df.attrs["flag_names"], "calib_new_flag")
    assert np.array_equal(back["calib_new_flag"], df["base_PsfFlux_instFlux"].isna())
    for name, (unit, doc) in new.items():
        assert (back.attrs["units"][name], back.attrs["docs"][name]) == (unit, doc)
        assert back.attrs["formats"][name] == "1D"
    assert back.attrs["aliases"] == df.attrs["aliases"]
    assert _raw_hdus(out)[2:] == _raw_hdus(path)[2:]
    with fits.open(out) as hdul:
        assert hdul[1].header["TFORM1"] == "123X" and hdul[1].header["AR_HDU"] == 3


def test_template_fills_missing_attrs_and_footprints(tmp_path):
    path = real_path(FARO)
    df = read_catalog(path)
    bare = df.drop(columns="footprint")
    bare.attrs = {}
    back = read_catalog(write_catalog(tmp_path / "bare.fits", bare, template=path))
    pd.testing.assert_frame_equal(back, df)
    assert _without_path(back.attrs) == _without_path(df.attrs)
    with pytest.raises(ValueError, match="footprints for 5 rows"):
        write_catalog(tmp_path / "short.fits", bare.iloc[:5], template=path)
    assert not (tmp_path / "short.fits").exists()


def test_empty_catalog_roundtrip(tmp_path):
    df = read_catalog(real_path(FARO)).iloc[:0]
    back = read_catalog(write_catalog(tmp_path / "empty.fits", df))
    assert back.shape == (0, 247)
    assert list(back.columns) == list(df.columns)
    assert back.attrs["flag_names"] == df.attrs["flag_names"]


def test_synthetic_types_roundtrip(tmp_path):
    df = pd.DataFrame(
        {
            "good": [True, False, True],
            "id": np.array([1, 2, 3], np.int64),
            "n": np.array([-1, 0, 7], np.int16),
            "x": np.array([1.5, np.nan, -2.0], np.float32),
            "label": ["a", "bb", ""],
            "coeffs": [np.arange(3.0), np.ones(3), np.zeros(3)],
            "ragged": [np.arange(2.0), np.arange(5.0), np.arange(0.0)],
        }
    )
    df.attrs["units"] = {"x": "pixel"}
    back = read_catalog(write_catalog(tmp_path / "types.fits", df))
    assert list(back.columns) == ["good", "id", "n", "x", "label", "coeffs", "ragged", "footprint"]
    assert back["footprint"].tolist() == [0, 0, 0]
    pd.testing.assert_frame_equal(back[["good", "id", "n", "x"]], df[["good", "id", "n", "x"]])
    assert back["label"].tolist() == ["a", "bb", ""]
    for col in ("coeffs", "ragged"):
        assert all(np.array_equal(a, b) for a, b in zip(back[col], df[col], strict=True))
    assert {k: back.attrs["formats"][k] for k in ("n", "x", "label", "coeffs")} == {
        "n": "1I", "x": "1E", "label": "2A", "coeffs": "3D"
    }  # fmt: skip
    assert back.attrs["formats"]["ragged"].startswith("QD")
    assert back.attrs["units"]["x"] == "pixel" and back.attrs["table_version"] == 3
    again = read_catalog(write_catalog(tmp_path / "again.fits", back))
    assert all(np.array_equal(a, b) for a, b in zip(again["ragged"], df["ragged"], strict=True))
    with pytest.raises(TypeError, match="'when'"):
        write_catalog(tmp_path / "bad.fits", df.assign(when=pd.Timestamp("2020-01-01")))
    assert sorted(os.listdir(tmp_path)) == ["again.fits", "types.fits"]


def test_instflux_columns_every_version():
    faro = read_catalog(real_path(FARO))
    fluxes = instflux_columns(faro)
    assert fluxes["base_PsfFlux"] == ("base_PsfFlux_instFlux", "base_PsfFlux_instFluxErr")
    assert fluxes["deblend_psf"] == ("deblend_psf_instFlux", None)
    assert len(fluxes) == sum(c.endswith("_instFlux") for c in faro.columns)
    prefixes = list(fluxes)
    assert prefixes == sorted(prefixes)
    assert prefixes.index("base_CircularApertureFlux_12_0") < prefixes.index(
        "base_CircularApertureFlux_3_0"
    )
    cfht = instflux_columns(read_catalog(real_path(CFHT)))  # v1: _flux / _fluxSigma
    assert cfht["base_PsfFlux"] == ("base_PsfFlux_flux", "base_PsfFlux_fluxSigma")
    assert cfht["base_CircularApertureFlux_3_0"] == (
        "base_CircularApertureFlux_3_0_flux",
        "base_CircularApertureFlux_3_0_fluxSigma",
    )
    assert len(cfht) == 13  # 10 apertures, Gaussian, Psf, SdssShape (deblend_psfFlux: no unit)
    v2 = instflux_columns(read_catalog(real_path(V2)))  # v2: _flux / _fluxErr
    assert v2 == {"a": ("a_flux", "a_fluxErr")}
    v1 = instflux_columns(read_catalog(real_path(OBS_BASE)))
    assert v1 == {"a": ("a_flux", "a_fluxSigma")}


def test_alias_resolution():
    aliases = {"slot_Centroid": "my_Centroid", "my_Centroid": "base_SdssCentroid"}
    df = pd.DataFrame({"base_SdssCentroid_x": [1.0], "base_SdssCentroid_y": [2.0]})
    df.attrs["aliases"] = aliases
    assert slot_centroid_columns(df) == ("base_SdssCentroid_x", "base_SdssCentroid_y")
    assert resolve_alias("slot_Centroid_flag", aliases) == "base_SdssCentroid_flag"
    assert resolve_alias("unrelated", aliases) == "unrelated"
    with pytest.raises(ValueError, match="cycle"):
        resolve_alias("a_x", {"a": "b", "b": "a"})
    v2 = read_catalog(real_path(V2))  # no ALIAS cards at all
    with pytest.raises(KeyError, match="slot_Centroid"):
        slot_centroid_columns(v2)
    assert slot_centroid_columns(read_catalog(real_path(OBS_BASE))) == ("b_x", "b_y")


def test_attrs_are_cheap_to_copy_and_immutable():
    df = read_catalog(real_path(FARO))
    copied = copy.deepcopy(df.attrs)
    assert copied["docs"] is df.attrs["docs"] and copied == df.attrs
    with pytest.raises(TypeError):
        df.attrs["units"]["coord_ra"] = "deg"
    column = df["coord_ra"]  # pandas deep-copies attrs here
    assert column.attrs["units"] is df.attrs["units"]
    restored = pickle.loads(pickle.dumps(df))
    assert restored.attrs == df.attrs and restored.attrs["metadata"] == df.attrs["metadata"]


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 6).flatmap(
        lambda n: st.tuples(
            st.lists(st.lists(st.booleans(), min_size=n, max_size=n), max_size=20),
            st.lists(st.floats(width=32), min_size=n, max_size=n),
            st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n),
        )
    )
)
def test_write_read_property(tmp_path_factory, case):
    flag_columns, floats, ints = case
    df = pd.DataFrame({f"flag_{k}": np.array(v, bool) for k, v in enumerate(flag_columns)})
    df["value"] = np.array(floats, np.float32)
    df["id"] = np.array(ints, np.int64)
    df.attrs["units"] = {"value": "count"}
    path = tmp_path_factory.mktemp("prop") / "t.fits"
    back = read_catalog(write_catalog(path, df))
    pd.testing.assert_frame_equal(back.drop(columns="footprint"), df)
    assert back.attrs["flag_names"] == tuple(df.columns[:-2])
    assert dict(back.attrs["units"]) == {"value": "count"}
