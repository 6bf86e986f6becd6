"""The numpy fast path for binary tables agrees with astropy, on real and generated tables."""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

from daskcal.io.afwtable import Field, FlagField, encode_table, make_table_hdu
from daskcal.io.bintable import read_columns
from daskcal.io.catalog import read_catalog, write_catalog

HSC_SRC = "lsst/faro/tests/data/src_HSC_i_HSC-I_903986_0_31_HSC_runs_ci_hsc_20210407T021858Z.fits"


def astropy_value(values):
    """What read_columns gives, from astropy's column (VLA strings: bytes per row)."""
    if values.dtype == object:
        return [
            "".join(np.asarray(v).astype(str)).encode() if np.asarray(v).dtype.kind in "SU" else v
            for v in values
        ]
    return np.asarray(values)


def same(a, b) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(
            x == y if isinstance(x, bytes) else np.array_equal(x, y, equal_nan=True)
            for x, y in zip(a, b, strict=True)
        )
    if a.dtype.kind in "SU":
        return np.array_equal(np.char.rstrip(a.astype(str)), b)
    return a.dtype.newbyteorder("=") == b.dtype and np.array_equal(a, b, equal_nan=True)


def test_every_real_table_reads_as_astropy_reads_it(real_dir):
    tables = 0
    for path in sorted(real_dir.rglob("*.fits")):
        with fits.open(path) as hdul:
            for hdu in hdul:
                if not isinstance(hdu, fits.BinTableHDU) or isinstance(hdu, fits.CompImageHDU):
                    continue
                fast = read_columns(hdu)
                assert fast is not None, f"{path.name}[{hdu.name}] fell back to astropy"
                assert list(fast) == hdu.columns.names
                for name in hdu.columns.names:
                    if "(" in hdu.columns[name].format and "A" in hdu.columns[name].format:
                        # astropy gives arrays of characters; we give bytes per row
                        assert (
                            b"".join(fast[name])
                            == "".join(
                                "".join(np.asarray(v).astype(str)) for v in hdu.data[name]
                            ).encode()
                        )
                        continue
                    assert same(astropy_value(hdu.data[name]), fast[name]), (path.name, name)
                tables += 1
    assert tables > 50


def test_unsigned_and_logical_columns():
    cols = [
        fits.Column(name="u16", format="I", bzero=32768, array=np.array([0, 65535], "u2")),
        fits.Column(name="u32", format="J", bzero=2**31, array=np.array([1, 2**32 - 1], "u4")),
        fits.Column(name="i8", format="B", bzero=-128, array=np.array([-128, 127], "i1")),
        fits.Column(name="ok", format="L", array=np.array([True, False])),
        fits.Column(name="bits", format="11X", array=np.eye(2, 11, dtype=bool)),
    ]
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(buffer)
    buffer.seek(0)
    with fits.open(buffer) as hdul:
        fast = read_columns(hdul[1])
    assert fast["u16"].dtype == np.uint16 and fast["u16"].tolist() == [0, 65535]
    assert fast["u32"].tolist() == [1, 2**32 - 1]
    assert fast["i8"].dtype == np.int8 and fast["i8"].tolist() == [-128, 127]
    assert fast["ok"].tolist() == [True, False]
    assert np.array_equal(fast["bits"], np.eye(2, 11, dtype=bool))


def test_scaled_columns_fall_back_to_astropy():
    col = fits.Column(name="s", format="J", array=np.array([1, 2], dtype="i4"))
    raw = fits.BinTableHDU.from_columns([col]).header.tostring()
    raw = raw.replace("END" + " " * 77, fits.Card("TSCAL1", 0.5).image + "END" + " " * 77, 1)
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU()]).writeto(buffer)
    buffer.write(raw.encode()[: len(raw)] + np.array([1, 2], ">i4").tobytes().ljust(2880, b"\0"))
    buffer.seek(0)
    with fits.open(buffer) as hdul:
        assert read_columns(hdul[1]) is None


def test_calsrc_of_an_unchanged_src_keeps_its_bytes(real_dir, tmp_path):
    """Primary HDU, table rows and archive of the src are carried byte for byte."""
    src = real_dir / HSC_SRC
    out = write_catalog(tmp_path / "CALSRC.fits", read_catalog(src), template=src)
    with fits.open(src) as a, fits.open(out) as b:
        assert len(a) == len(b)
        spans = [(a.fileinfo(i), b.fileinfo(i)) for i in range(len(a))]
        cards = [sorted((c.keyword, str(c.value)) for c in h[1].header.cards) for h in (a, b)]
        assert cards[0] == cards[1]  # afw's comments and card order are its own
    raw_a, raw_b = src.read_bytes(), out.read_bytes()
    (ta, tb), (aa, ab) = spans[1], spans[2]
    assert raw_a[: ta["hdrLoc"]] == raw_b[: tb["hdrLoc"]]  # primary HDU
    rows = [raw[t["datLoc"] : t["datLoc"] + t["datSpan"]] for raw, t in ((raw_a, ta), (raw_b, tb))]
    assert rows[0] == rows[1]
    assert raw_a[aa["hdrLoc"] :] == raw_b[ab["hdrLoc"] :]  # archive


FORMATS = {"1D": "f8", "1E": "f4", "1J": "i4", "1K": "i8", "1I": "i2", "3D": "f8", "8A": "U8"}


@st.composite
def schemas(draw):
    formats = draw(st.lists(st.sampled_from(sorted(FORMATS)), min_size=1, max_size=8))
    nflags = draw(st.integers(0, 20))
    nrows = draw(st.integers(0, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    fields, columns = [], {}
    for i, fmt in enumerate(formats):
        name = f"c{i}"
        fields.append(Field(name, fmt, doc=f"column {i}", unit="pixel" if i % 2 else ""))
        if fmt == "8A":
            columns[name] = np.array(
                ["".join(rng.choice(list("ab c"), 5)).strip() for _ in range(nrows)], dtype="U8"
            )
        elif fmt == "3D":
            columns[name] = rng.normal(size=(nrows, 3))
        else:
            columns[name] = (rng.normal(size=nrows) * 1000).astype(FORMATS[fmt])
    flags = [FlagField(f"flag{k}", f"doc {k}") for k in range(nflags)]
    flag_values = {f.name: rng.random(nrows) < 0.5 for f in flags}
    return fields, columns, flags, flag_values, nrows


@settings(max_examples=40)
@given(schemas())
def test_encode_table_is_make_table_hdu(schema):
    fields, columns, flags, flag_values, nrows = schema
    cards = [fits.Card("ALIAS", "slot_X:c0"), fits.Card("HIERARCH AFW_TABLE_VERSION", 3)]
    slow = make_table_hdu(fields, columns, flags, flag_values, nrows=nrows)
    for card in cards:
        slow.header.append(card, end=True)
    raw = encode_table(fields, columns, flags, flag_values, nrows, cards)
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU()]).writeto(buffer)
    buffer.write(raw)
    buffer.seek(0)
    with fits.open(buffer) as hdul:
        fast = hdul[1]
        assert [tuple(c) for c in fast.header.cards] == [tuple(c) for c in slow.header.cards]
        for name in slow.columns.names:
            a, b = np.asarray(slow.data[name]), np.asarray(fast.data[name])
            assert a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
        decoded = read_columns(fast)
    for name, values in columns.items():
        assert same(np.asarray(values), decoded[name])
    for k, flag in enumerate(flags):
        assert np.array_equal(decoded["flags"][:, k], flag_values[flag.name])


def test_variable_length_schemas_are_left_to_astropy():
    fields = [Field("blob", "QB")]
    assert encode_table(fields, {"blob": np.array([], dtype=object)}, [], {}, 0) is None
