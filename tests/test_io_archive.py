"""afw archives: reading real LSST-written files, writing (new and carried objects), flags."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits
from conftest import real_path
from hypothesis import given, settings
from hypothesis import strategies as st

from daskcal.io.afwtable import Field, FlagField, decode_columns, make_table_hdu
from daskcal.io.archive import ArchiveError, ArchiveWriter, NewCatalog, read_archive

CALEXP = "lsst/obs_base/tests/data/calexp.fits"
CFHT_CALEXP = (
    "lsst/jointcal/tests/data/cfht_minimal/repo/calexp/06AL01/D3/2006-05-20/r/"
    "calexp-849375-12.fits.fz"
)
FARO_SRC = "lsst/faro/tests/data/src_HSC_i_HSC-I_903986_0_31_HSC_runs_ci_hsc_20210407T021858Z.fits"


def _raw_hdu(hdu) -> bytes:
    """The bytes of one HDU (header + data + heap) as stored in its file."""
    info = hdu.fileinfo()
    f = info["file"]
    f.seek(info["hdrLoc"])
    return f.read(info["datLoc"] - info["hdrLoc"] + info["datSpan"])


def _same_values(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype == object or b.dtype == object:
        return len(a) == len(b) and all(
            _same_values(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=True)
        )
    return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def _same_object(x, y) -> bool:
    if (x.name, x.module, len(x.catalogs)) != (y.name, y.module, len(y.catalogs)):
        return False
    for c1, c2 in zip(x.catalogs, y.catalogs, strict=True):
        if list(c1.columns) != list(c2.columns):
            return False
        if not all(_same_values(c1[k], c2[k]) for k in c1.columns):
            return False
    return True


def test_calexp_archive_components_match_primary_ids():
    path = real_path(CALEXP)
    with fits.open(path) as hdul:
        archive = read_archive(hdul, str(path))
        header = hdul[0].header
        expected = {
            "ARCHIVE_ID_SKYWCS": "SkyWcs",
            "ARCHIVE_ID_PHOTOCALIB": "PhotoCalib",
            "ARCHIVE_ID_AP_CORR_MAP": "ApCorrMap",
            "ARCHIVE_ID_PSF": "GaussianPsf",
            "ARCHIVE_ID_DETECTOR": "Detector",
            "ARCHIVE_ID_FILTER": "FilterLabel",
            "ARCHIVE_ID_VALID_POLYGON": "Polygon",
        }
        for card, name in expected.items():
            assert archive.class_name(header[card]) == name
        assert archive.n_catalogs == 18  # index + 17 data tables (HDUs 5..21)
        assert len(archive.find("ChebyshevBoundedField")) == 47


def test_calexp_photocalib_values(golden):
    path = real_path(CALEXP)
    with fits.open(path) as hdul:
        archive = read_archive(hdul, str(path))
        (pc_id,) = archive.find("PhotoCalib")
        cat = archive[pc_id].catalogs[0]
        assert cat["calibrationMean"][0] == pytest.approx(1.99408751, abs=5e-9)
        assert cat["calibrationErr"][0] == pytest.approx(0.00034857, abs=5e-9)
        assert bool(cat["isConstant"][0])
        assert archive.class_name(int(cat["field"][0])) == "ChebyshevBoundedField"
        wcs = archive[archive.find("SkyWcs")[0]].catalogs[0].bytes("wcs")
        assert wcs.startswith(b"1 SkyWcs ")
        assert b"Begin FrameSet" in wcs
    cfht = real_path(CFHT_CALEXP)
    ref = golden["lsst_computed"]["cfht_849375_ccd12"]
    with fits.open(cfht) as hdul:
        archive = read_archive(hdul, str(cfht))
        cat = archive[archive.find("PhotoCalib")[0]].catalogs[0]
        assert cat["calibrationMean"][0] == pytest.approx(ref["calibrationMean"], abs=5e-9)
        assert cat["calibrationErr"][0] == pytest.approx(ref["calibrationErr"], abs=5e-9)


def test_apcorrmap_entries_resolve_to_bounded_fields():
    path = real_path(CALEXP)
    with fits.open(path) as hdul:
        archive = read_archive(hdul, str(path))
        cat = archive[hdul[0].header["ARCHIVE_ID_AP_CORR_MAP"]].catalogs[0]
        names = [str(n) for n in cat["name"]]
        assert "base_PsfFlux_instFlux" in names
        assert len(names) == len(cat) == 46
        assert {archive.class_name(int(i)) for i in cat["field"]} == {"ChebyshevBoundedField"}


def test_variable_length_strings_read_as_bytes():
    path = real_path(CALEXP)
    with fits.open(path) as hdul:
        archive = read_archive(hdul, str(path))
        detector = archive[hdul[0].header["ARCHIVE_ID_DETECTOR"]].catalogs[0]
        assert detector.bytes("name").decode() == hdul[0].header["DETNAME"]


def test_src_footprint_ids_resolve():
    path = real_path(FARO_SRC)
    with fits.open(path) as hdul:
        archive = read_archive(hdul, str(path))
        ids = np.asarray(hdul[1].data["footprint"])
        assert archive.index_hdu == hdul[1].header["AR_HDU"] - 1
        assert {archive.class_name(int(i)) for i in ids} <= {"Footprint", "HeavyFootprintF"}
        assert len(set(ids.tolist())) == len(ids) == 771


def test_missing_object_and_missing_archive_name_the_file():
    path = real_path(CALEXP)
    with fits.open(path) as hdul:
        archive = read_archive(hdul, "calexp.fits")
        with pytest.raises(ArchiveError, match="calexp.fits.*99999"):
            archive[99999]
    with pytest.raises(ArchiveError, match="nothing.fits"):
        read_archive(fits.HDUList([fits.PrimaryHDU()]), "nothing.fits")


def _cat_archive_file() -> bytes:
    """A synthetic archive whose index spells ``cat_archive`` / ``cat_persistable``."""
    index_fields = [
        Field(n, "1J") for n in ("id", "cat_archive", "cat_persistable", "row0", "nrows")
    ] + [Field("name", "64A", ccls="String"), Field("module", "64A", ccls="String")]
    rows = [  # id, catalog, persistable catalog, row0, nrows, class
        (1, 1, 0, 0, 2, "Foo"),
        (2, 1, 0, 2, 1, "Foo"),
        (3, 1, 0, 3, 1, "Bar"),
        (3, 2, 1, 0, 3, "Bar"),
    ]
    cols = {
        f.name: np.array([r[i] for r in rows], np.int32) for i, f in enumerate(index_fields[:5])
    }
    cols["name"] = np.array([r[5] for r in rows])
    cols["module"] = np.array(["test.module"] * len(rows))
    index = make_table_hdu(index_fields, cols)
    data1 = make_table_hdu([Field("v", "1D")], {"v": np.array([10.0, 11.0, 12.0, 13.0])})
    data2 = make_table_hdu([Field("w", "1K")], {"w": np.array([7, 8, 9])})
    primary = fits.PrimaryHDU()
    primary.header["AR_HDU"] = 2
    buf = io.BytesIO()
    fits.HDUList([primary, index, data1, data2]).writeto(buf)
    return buf.getvalue()


def test_cat_archive_spelling_resolves():
    with fits.open(io.BytesIO(_cat_archive_file())) as hdul:
        archive = read_archive(hdul)
        assert archive.ids == [1, 2, 3]
        assert archive.find("Foo") == [1, 2]
        assert archive[1].catalogs[0]["v"].tolist() == [10.0, 11.0]
        assert archive[2].catalogs[0]["v"].tolist() == [12.0]
        bar = archive[3]
        assert bar.catalogs[0]["v"].tolist() == [13.0]
        assert bar.catalogs[1]["w"].tolist() == [7, 8, 9]
        assert bar.module == "test.module"


def _cheb(coeffs: np.ndarray) -> NewCatalog:
    fields = [Field("order_x", "1J"), Field("coefficients", f"{coeffs.size}D", ccls="Array")]
    return NewCatalog(fields, {"order_x": np.array([1], np.int32), "coefficients": coeffs[None]})


def _photocalib(mean: float, err: float, field_id: int) -> NewCatalog:
    fields = [Field("calibrationMean", "1D"), Field("calibrationErr", "1D"), Field("field", "1J")]
    columns = {
        "calibrationMean": np.array([mean]),
        "calibrationErr": np.array([err]),
        "field": np.array([field_id], np.int32),
    }
    return NewCatalog(fields, columns, [FlagField("isConstant")], {"isConstant": np.array([True])})


def test_writer_new_objects_share_tables_by_schema():
    writer = ArchiveWriter()
    a = writer.add("ChebyshevBoundedField", "lsst.afw.math", [_cheb(np.arange(6.0))])
    b = writer.add("ChebyshevBoundedField", "lsst.afw.math", [_cheb(np.arange(6.0) + 10)])
    c = writer.add("ChebyshevBoundedField", "lsst.afw.math", [_cheb(np.arange(9.0))])
    p = writer.add("PhotoCalib", "lsst.afw.image", [_photocalib(2.5, 0.01, a)])
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), *writer.hdus()]).writeto(buf)
    with fits.open(io.BytesIO(buf.getvalue())) as hdul:
        archive = read_archive(hdul)
        assert (a, b, c, p) == (1, 2, 3, 4)
        assert archive.n_catalogs == 4 == len(hdul) - 1  # a+b share one table, c, p
        assert archive[b].catalogs[0]["coefficients"][0].tolist() == list(np.arange(6.0) + 10)
        assert archive[c].catalogs[0]["coefficients"].shape == (1, 9)
        pc = archive[p].catalogs[0]
        assert pc["calibrationMean"][0] == 2.5 and bool(pc["isConstant"][0])
        assert archive.class_name(int(pc["field"][0])) == "ChebyshevBoundedField"


@pytest.mark.parametrize("touch_first", [False, True])
def test_writer_carries_base_archive(tmp_path, touch_first):
    path = real_path(CALEXP)
    out = tmp_path / "carried.fits"
    with fits.open(path) as hdul:
        base = read_archive(hdul, str(path))
        if touch_first:  # read every object first: converted columns must not leak out
            for obj_id in base.ids:
                base[obj_id]
        writer = ArchiveWriter(base=base)
        new_id = writer.add("PhotoCalib", "lsst.afw.image", [_photocalib(3.0, 0.1, 247)])
        fits.HDUList([fits.PrimaryHDU(), *writer.hdus()]).writeto(out)
    with fits.open(path) as h1, fits.open(out) as h2:
        old, new = read_archive(h1, str(path)), read_archive(h2, str(out))
        assert new_id == max(old.ids) + 1
        assert new.ids == [*old.ids, new_id]
        assert all(_same_object(old[i], new[i]) for i in old.ids)
        for n in range(1, old.n_catalogs):  # carried data tables are byte-identical
            assert _raw_hdu(h1[old.index_hdu + n]) == _raw_hdu(h2[new.index_hdu + n])
        assert new[new_id].catalogs[0]["calibrationMean"][0] == 3.0
        assert new.find("PhotoCalib") == [*old.find("PhotoCalib"), new_id]


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 12).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=1, max_size=70),
        )
    )
)
def test_flags_pack_unpack_roundtrip(case):
    nrows, flag_columns = case
    flags = [FlagField(f"f{k}", f"doc {k}") for k in range(len(flag_columns))]
    values = {f.name: np.array(v, dtype=bool) for f, v in zip(flags, flag_columns, strict=True)}
    ids = np.arange(nrows, dtype=np.int64)
    hdu = make_table_hdu([Field("id", "1K")], {"id": ids}, flags, values, nrows=nrows)
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    with fits.open(io.BytesIO(buf.getvalue())) as hdul:
        out = decode_columns(hdul[1])
        assert list(out) == [*values, "id"]
        for name, expected in values.items():
            assert out[name].dtype == bool
            assert np.array_equal(out[name], expected)
        assert np.array_equal(out["id"], ids)
        assert hdul[1].header[f"TFDOC{len(flags)}"] == f"doc {len(flags) - 1}"
