"""The lossless tile codec (daskcal.io.tilecodec) and the CALEXP files written with it.

Every CALEXP layout daskcal writes must be read back bit for bit (NaN payloads included)
by astropy, by cfitsio through fitsio and by cfitsio's funpack; every tile-compressed
real file must decode to what astropy decodes; a damaged tile must fail, naming the file
and the HDU.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import real_path
from hypothesis import given, settings
from hypothesis import strategies as st

from daskcal.io.archive import ArchiveWriter
from daskcal.io.exposure import (
    PLANES,
    exposure_archive,
    read_exposure,
    read_rows,
    write_exposure,
    write_exposure_dataset,
)
from daskcal.io.tilecodec import (
    COMPRESSION_TYPES,
    TileDecodeError,
    TiledImage,
    UnsupportedCompression,
    encode_image,
    read_image_rows,
    write_fits,
)

CALEXP = "lsst/obs_base/tests/data/calexp.fits"
FUNPACK = shutil.which("funpack")
needs_funpack = pytest.mark.skipif(
    FUNPACK is None,
    reason="cfitsio's funpack is absent (Debian package libcfitsio-bin; .ci/run installs it)",
)


def fitsio_module():
    return pytest.importorskip("fitsio", reason="fitsio (cfitsio for Python) is not installed")


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype (byte order aside), shape and every bit (NaN payloads, -0.0)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.newbyteorder("=") != b.dtype.newbyteorder("=") or a.shape != b.shape:
        return False
    native = a.dtype.newbyteorder("=")
    a, b = a.astype(native, copy=False), b.astype(native, copy=False)
    return a.tobytes() == b.tobytes()


def funpack(path: Path, out: Path) -> Path:
    subprocess.run([FUNPACK, "-O", str(out), str(path)], check=True, capture_output=True)
    return out


def bit_planes(shape=(61, 45), seed=11):
    """Image of random float bits (NaN payloads, infinities, denormals, -0.0), a variance
    with the special values, an int32 mask over its whole range."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 2**32, size=shape, dtype=np.uint32).view(np.float32)
    variance = np.abs(rng.normal(size=shape)).astype(np.float32)
    variance.flat[:6] = [np.nan, np.inf, -np.inf, 1e-45, -0.0, np.finfo(np.float32).max]
    mask = rng.integers(-(2**31), 2**31, size=shape, dtype=np.int64).astype(np.int32)
    return image, mask, variance


# ---------------------------------------------------------------------------------------
# CALEXP files as daskcal writes them


@pytest.fixture(scope="module")
def calexps(tmp_path_factory):
    """The real calexp written as a CALEXP by each codec (its headers and archive), plus
    a CALEXP of random bits written by each codec."""
    src = real_path(CALEXP)
    folder = tmp_path_factory.mktemp("calexps")
    ds = read_exposure(src)
    out = {}
    for codec in ("daskcal", "afw", "astropy"):
        with exposure_archive(src) as archive:
            path = folder / f"real-{codec}.fits"
            write_exposure_dataset(
                path, ds, archive_hdus=ArchiveWriter(base=archive).hdus(), codec=codec
            )
        out["real", codec] = path
        bits = folder / f"bits-{codec}.fits"
        write_exposure(
            bits, *bit_planes(), primary_header=None, mask_planes={"BAD": 0}, codec=codec
        )
        out["bits", codec] = bits
    return out


def expected_planes(path: Path) -> list[np.ndarray]:
    """What the CALEXP must hold: the source calexp's planes or the random bits."""
    if path.name.startswith("bits"):
        image, mask, variance = bit_planes()
        return [image, mask, variance]
    ds = read_exposure(real_path(CALEXP))
    with fits.open(real_path(CALEXP)) as hdul:
        return [np.array(hdul[ds.attrs["hdus"][p]].data) for p in PLANES]


@pytest.mark.parametrize("kind", ["real", "bits"])
@pytest.mark.parametrize("codec", ["daskcal", "afw"])
def test_calexp_read_bit_exact_by_astropy_and_daskcal(calexps, kind, codec):
    path = calexps[kind, codec]
    expected = expected_planes(path)
    with fits.open(path) as hdul:
        for i, plane in enumerate(expected, start=1):
            assert isinstance(hdul[i], fits.CompImageHDU)
            assert same_bits(hdul[i].data, plane)
            assert same_bits(read_image_rows(path, i), plane)
            assert same_bits(read_image_rows(path, i, 5, 40), plane[5:40])
    with fits.open(path, disable_image_compression=True) as hdul:
        for i in (1, 2, 3):
            header = hdul[i].header
            assert header["ZCMPTYPE"] == "GZIP_2" and "ZSCALE" not in hdul[i].columns.names
            assert header["ZTILE2"] == (32 if codec == "daskcal" else 1)
            assert header["TFORM1"].startswith("1PB(")


@pytest.mark.parametrize("kind", ["real", "bits"])
@pytest.mark.parametrize("codec", ["daskcal", "afw"])
def test_calexp_read_bit_exact_by_fitsio(calexps, kind, codec):
    fitsio = fitsio_module()
    path = calexps[kind, codec]
    for i, plane in enumerate(expected_planes(path), start=1):
        assert same_bits(fitsio.read(str(path), ext=i), plane)


@needs_funpack
@pytest.mark.parametrize("kind", ["real", "bits"])
@pytest.mark.parametrize("codec", ["daskcal", "afw"])
def test_calexp_read_bit_exact_by_funpack(calexps, kind, codec, tmp_path):
    path = calexps[kind, codec]
    plain = funpack(path, tmp_path / "plain.fits")
    with fits.open(plain) as unpacked, fits.open(path) as packed:
        assert len(unpacked) == len(packed)
        for i, plane in enumerate(expected_planes(path), start=1):
            assert same_bits(unpacked[i].data, plane)
            kept = {k: v for k, v in packed[i].header.items() if k not in ("COMMENT", "")}
            assert {k: unpacked[i].header[k] for k in kept} == kept
        for i in range(4, len(packed)):  # the archive tables, row for row
            assert unpacked[i].data.tobytes() == packed[i].data.tobytes()


def _raw_hdus(path: Path) -> list[bytes]:
    with fits.open(path) as hdul:
        out = []
        for hdu in hdul:
            info = hdu.fileinfo()
            info["file"].seek(info["hdrLoc"])
            out.append(info["file"].read(info["datLoc"] - info["hdrLoc"] + info["datSpan"]))
        return out


@pytest.mark.parametrize("codec", ["daskcal", "afw"])
def test_headers_and_archive_as_astropy_writes_them(calexps, codec):
    """Primary header and archive byte for byte, plane headers card for card (keyword
    and value, in order) as in the file astropy writes."""
    ours, theirs = calexps["real", codec], calexps["real", "astropy"]
    raw_ours, raw_theirs = _raw_hdus(ours), _raw_hdus(theirs)
    assert raw_ours[0] == raw_theirs[0] and raw_ours[4:] == raw_theirs[4:]
    with fits.open(ours) as a, fits.open(theirs) as b:
        for i in (1, 2, 3):
            cards_a = [(c.keyword, c.value) for c in a[i].header.cards]
            cards_b = [(c.keyword, c.value) for c in b[i].header.cards]
            assert cards_a == cards_b
    back, source = read_exposure(ours), read_exposure(real_path(CALEXP))
    assert back.attrs["mask_planes"] == source.attrs["mask_planes"]
    assert [(c.keyword, c.value) for c in back.attrs["header"].cards] == [
        (c.keyword, c.value) for c in source.attrs["header"].cards
    ]


def test_files_no_larger_than_one_row_tiles(tmp_path):
    rng = np.random.default_rng(5)
    image = rng.normal(1000, 30, size=(256, 512)).astype(np.float32)
    mask = np.where(rng.random((256, 512)) < 0.03, 1 << rng.integers(0, 12), 0).astype(np.int32)
    variance = (image / 4).astype(np.float32)
    sizes = {}
    for codec in ("daskcal", "afw", "astropy"):
        path = tmp_path / f"{codec}.fits"
        write_exposure(
            path, image, mask, variance, primary_header=None, mask_planes={}, codec=codec
        )
        sizes[codec] = path.stat().st_size
    assert sizes["daskcal"] <= sizes["astropy"] and sizes["daskcal"] <= sizes["afw"]


def test_codec_names_checked(tmp_path):
    plane = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="codec"):
        write_exposure(tmp_path / "x.fits", plane, plane.astype(np.int32), plane,
                       primary_header=None, mask_planes={}, codec="zstd")  # fmt: skip
    assert not (tmp_path / "x.fits").exists()


# ---------------------------------------------------------------------------------------
# real files: decode exactly as astropy


def compressed_real_hdus(real_dir: Path) -> list[tuple[Path, int]]:
    found = []
    for path in sorted(real_dir.rglob("*.fits*")):
        with fits.open(path, disable_image_compression=True) as hdul:
            found += [(path, i) for i, hdu in enumerate(hdul) if hdu.header.get("ZIMAGE")]
    return found


def test_every_compressed_real_file_decodes_as_astropy(real_dir):
    hdus = compressed_real_hdus(real_dir)
    if not hdus:
        pytest.skip(f"no tile-compressed FITS file under {real_dir}")
    for path, i in hdus:
        with fits.open(path) as hdul:
            expected = np.array(hdul[i].data)
        assert same_bits(read_image_rows(path, i), expected), (path, i)
        rows = slice(len(expected) // 3, len(expected) // 3 + 7)
        assert same_bits(read_image_rows(path, i, rows.start, rows.stop), expected[rows])
        with fits.open(path, disable_image_compression=True) as hdul:
            TiledImage.from_header(hdul[i].header)  # decoded here, not by astropy


# ---------------------------------------------------------------------------------------
# property tests: any shape, tile, dtype and values


KINDS = ["f4", "f8", "i2", "u2", "i4", "u4", "u1", "i1"]
SPECIAL = {
    "f4": [np.nan, -np.nan, np.inf, -np.inf, 1e-45, -1e-45, -0.0, 0.0, 3.4e38],
    "f8": [np.nan, np.inf, -np.inf, 5e-324, -0.0, 1.7e308],
}


@st.composite
def images(draw, kinds=KINDS):
    kind = draw(st.sampled_from(kinds))
    dtype = np.dtype(kind)
    shape = (draw(st.integers(1, 23)), draw(st.integers(1, 23)))
    fill = draw(st.sampled_from(["random", "zero", "constant", "special"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    bits = rng.integers(0, 256, size=shape + (dtype.itemsize,), dtype=np.uint8)
    data = bits.view(dtype).reshape(shape).copy()
    if fill == "zero":
        data[...] = 0
    elif fill == "constant":
        data[...] = data.flat[0]
    elif fill == "special":
        if dtype.kind == "f":
            values = np.array(SPECIAL[kind], dtype)
            data = values[rng.integers(0, len(values), size=shape)]
        else:
            info = np.iinfo(dtype)
            data = rng.choice(np.array([info.min, info.max, 0, 1], dtype), size=shape)
    return data


@st.composite
def encodings(draw, kinds=KINDS):
    data = draw(images(kinds))
    allowed = [c for c in COMPRESSION_TYPES if c != "RICE_1" or data.dtype.kind != "f"]
    compression = draw(st.sampled_from(allowed))
    ny, nx = data.shape
    tile = (draw(st.integers(1, ny + 2)), draw(st.integers(1, nx + 2)))
    return data, compression, tile


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiles")


@settings(max_examples=120)
@given(case=encodings())
def test_encoded_images_read_back_by_astropy_fitsio_and_daskcal(scratch, case):
    data, compression, tile = case
    header = fits.Header([("EXTNAME", "MASK"), ("MP_BAD", 0), ("LTV1", -3)])
    encoded = encode_image(data, header, compression=compression, tile_shape=tile)
    with tempfile.NamedTemporaryFile(dir=scratch, suffix=".fits") as handle:
        path = Path(handle.name)
        write_fits(path, [fits.PrimaryHDU(), encoded])
        assert path.stat().st_size == 2880 + encoded.nbytes == 2880 + len(encoded.tobytes())
        with fits.open(path) as hdul:
            assert same_bits(hdul[1].data, data)
            assert hdul[1].header["EXTNAME"] == "MASK" and hdul[1].header["LTV1"] == -3
        assert same_bits(read_image_rows(path, 1), data)
        y0 = len(data) // 2
        assert same_bits(read_image_rows(path, 1, y0, y0 + 3), data[y0 : y0 + 3])
        if compression != "NOCOMPRESS":  # an astropy-only algorithm
            fitsio = fitsio_module()
            assert same_bits(fitsio.read(str(path), ext=1), data)


@settings(max_examples=80)
@given(case=encodings(), quantize=st.booleans())
def test_astropy_written_images_decode_as_astropy(scratch, case, quantize):
    """Lossless kinds are decoded by daskcal, the others (quantized floats) fall back."""
    data, compression, tile = case
    if compression == "RICE_1" and data.dtype.itemsize > 4:
        compression = "GZIP_1"
    options = {"quantize_level": 16 if quantize else 0} if data.dtype.kind == "f" else {}
    hdu = fits.CompImageHDU(data, compression_type=compression, tile_shape=tile, **options)
    with tempfile.NamedTemporaryFile(dir=scratch, suffix=".fits") as handle:
        path = Path(handle.name)
        with warnings.catch_warnings():  # astropy's quantizer on NaN/inf-only tiles
            warnings.simplefilter("ignore", RuntimeWarning)
            fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)
        with fits.open(path) as hdul:
            expected = np.array(hdul[1].data)
        assert same_bits(read_image_rows(path, 1), expected)
        assert same_bits(read_image_rows(path, 1, 1, 4), expected[1:4])


def test_decoded_here_or_left_to_astropy(tmp_path):
    """Which kinds the fast decoder takes; the others still read (astropy)."""
    rng = np.random.default_rng(2)
    floats = rng.normal(size=(40, 30)).astype(np.float32)
    ints = rng.integers(0, 1000, size=(40, 30)).astype(np.int32)
    cases = {
        "quantized": fits.CompImageHDU(floats, compression_type="RICE_1", quantize_level=8),
        "dithered": fits.CompImageHDU(
            floats, compression_type="GZIP_2", quantize_method=2, quantize_level=4
        ),
        "hcompress": fits.CompImageHDU(ints, compression_type="HCOMPRESS_1", tile_shape=(8, 30)),
        "plio": fits.CompImageHDU(ints, compression_type="PLIO_1"),
        "lossless": fits.CompImageHDU(floats, compression_type="GZIP_2", quantize_level=0),
        "rice": fits.CompImageHDU(ints, compression_type="RICE_1"),
        "plain": fits.ImageHDU(floats),
    }
    scaled = fits.ImageHDU(ints.astype(np.int16))
    scaled.header["BSCALE"], scaled.header["BZERO"] = 2.0, 10.0
    path = tmp_path / "kinds.fits"
    fits.HDUList([fits.PrimaryHDU(), *cases.values()]).writeto(path)
    decoded_here = set()
    with fits.open(path, disable_image_compression=True) as raw, fits.open(path) as hdul:
        for i, name in enumerate(cases, start=1):
            assert same_bits(read_image_rows(path, i), np.array(hdul[i].data)), name
            if raw[i].header.get("ZIMAGE"):
                try:
                    TiledImage.from_header(raw[i].header)
                    decoded_here.add(name)
                except UnsupportedCompression:
                    pass
    assert decoded_here == {"lossless", "rice"}
    header = fits.Header([("ZIMAGE", True), ("ZCMPTYPE", "GZIP_2"), ("ZBITPIX", 16)])
    header.update({"TFIELDS": 1, "TTYPE1": "COMPRESSED_DATA", "TFORM1": "1PB", "NAXIS1": 8})
    header.update({"ZNAXIS": 2, "ZNAXIS1": 3, "ZNAXIS2": 3, "BSCALE": 2.0, "BZERO": 10.0})
    with pytest.raises(UnsupportedCompression, match="scaled"):
        TiledImage.from_header(header)


# ---------------------------------------------------------------------------------------
# damaged files: an error naming the file and the HDU, never garbage pixels


def _damaged(tmp_path: Path, codec: str, change) -> tuple[Path, int]:
    path = tmp_path / "CALEXP-damaged.fits"
    write_exposure(path, *bit_planes(), primary_header=None, mask_planes={}, codec=codec)
    with fits.open(path, disable_image_compression=True) as hdul:
        info = hdul[3].fileinfo()  # the variance plane
        heap = info["datLoc"] + hdul[3].header["NAXIS1"] * hdul[3].header["NAXIS2"]
    raw = bytearray(path.read_bytes())
    path.write_bytes(bytes(change(raw, info, heap)))
    return path, 3


def _flip_in_heap(raw, info, heap):
    raw[heap + (info["datLoc"] + info["datSpan"] - heap) // 3] ^= 0x5A
    return raw


def _truncate_in_heap(raw, info, heap):
    return raw[: heap + 100]


def _descriptor_past_heap(raw, info, heap):
    raw[info["datLoc"] + 4 : info["datLoc"] + 8] = (10**9).to_bytes(4, "big")
    return raw


@pytest.mark.parametrize("codec", ["daskcal", "afw"])
@pytest.mark.parametrize(
    "change, message",
    [
        (_flip_in_heap, "corrupt|decodes to"),
        (_truncate_in_heap, "truncated"),
        (_descriptor_past_heap, "outside the heap"),
    ],
)
def test_damaged_tile_names_file_and_hdu(tmp_path, codec, change, message):
    path, hdu = _damaged(tmp_path, codec, change)
    with pytest.raises(TileDecodeError, match=message) as info:
        read_rows(str(path), hdu, 0, 61, "float32")
    assert str(path) in str(info.value) and "HDU 3" in str(info.value)
    if change is not _truncate_in_heap:  # (astropy itself refuses to open a cut file)
        assert same_bits(read_rows(str(path), 1, 0, 61, "float32"), bit_planes()[0])
        with pytest.raises(OSError, match="CALEXP-damaged"):  # through the lazy reader
            read_exposure(path).variance.compute()
