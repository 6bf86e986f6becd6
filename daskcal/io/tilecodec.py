"""A fast, lossless FITS tile-compression codec (GZIP_2, GZIP_1, RICE_1, NOCOMPRESS).

The convention (FITS standard 4.0, section 10, "tiled image compression")
--------------------------------------------------------------------------
A compressed image is not stored as an IMAGE extension but as a BINTABLE extension that
says so with ``ZIMAGE = T``. The image is cut into rectangular tiles (``ZTILE1`` pixels
along the first FITS axis, the one that varies fastest, by ``ZTILE2`` along the second;
by default one image row per tile); tiles at the right and bottom edges may be smaller.
Each tile is compressed on its own and becomes one row of the table, tiles numbered with
the first axis fastest. Cards describe the image the table stands for: ``ZBITPIX`` (its
BITPIX), ``ZNAXIS`` and ``ZNAXISn`` (its axes), ``ZTILEn``, ``ZCMPTYPE`` (the algorithm),
algorithm parameters as pairs ``ZNAMEi`` / ``ZVALi`` (RICE_1: ``BLOCKSIZE`` and
``BYTEPIX``), and for floating-point images ``ZQUANTIZ``: whether the floats were
quantized to scaled integers first (lossy, with per-tile ``ZSCALE``/``ZZERO`` columns) or
``'NONE'``, compressed bit for bit. ``ZTENSION``, ``ZPCOUNT``, ``ZGCOUNT`` keep the image's
own structural cards; every other card (EXTNAME, WCS, ``BZERO``/``BSCALE``...) belongs to
the image and is copied as it is, so a reader shows the image's header unchanged.

The compressed bytes of each tile live in the table's *heap*, the area that follows the
fixed-width rows (at byte ``THEAP``, by default right after them; ``PCOUNT`` is its size).
The row holds only a descriptor of the variable-length column ``COMPRESSED_DATA``: ``1PB``
is a pair of big-endian 32-bit integers (byte count, offset into the heap), ``1QB`` the
same with 64-bit integers, for heaps past 2 GiB. ``1PB(n)`` may record the longest tile.

What a tile's bytes are depends on ``ZCMPTYPE``. The pixel values are first written in
FITS byte order (big-endian) with ``|ZBITPIX| / 8`` bytes each. ``GZIP_1`` deflates those
bytes; ``GZIP_2`` first *shuffles* them: all the most significant bytes of the tile, then
all the next bytes, and so on, which groups the slowly varying sign/exponent bytes of
floats and makes them compress much better. Each tile is a complete gzip stream (RFC 1952
framing: a 10-byte header, deflate data, then the CRC-32 and length of the original
bytes); cfitsio, astropy and funpack all refuse zlib-framed tiles. ``RICE_1`` codes
integers with Rice codes in blocks of ``BLOCKSIZE`` pixels. ``NOCOMPRESS`` (astropy only;
cfitsio cannot read it) stores the big-endian bytes as they are.

What this module does
---------------------
:func:`encode_image` writes 2-D integer or float images losslessly (floats never
quantized, so every bit, NaN payloads included, comes back), with tiles of several rows by
default: byte shuffling and byte order are done by numpy a batch of tiles at a time, and
deflate by ISA-L (python-isal), each tile a gzip member. :func:`write_fits` writes encoded
images between HDUs that astropy serialises (primary header, tables). On the way back,
:func:`read_image_rows` reads the rows of any image HDU: the lossless kinds
(GZIP_1, GZIP_2, RICE_1 through astropy's compiled Rice codec, NOCOMPRESS; integers with
the unsigned-integer ``BZERO`` convention) are decoded here, reading only the tiles the rows
need, and everything else (quantized or dithered floats, HCOMPRESS, PLIO, scaled data,
null-value columns, plain image HDUs) is read by astropy as before. A tile whose bytes are
truncated, fail gzip's CRC-32 or lie outside the heap raises :class:`TileDecodeError`
naming the file and the HDU: no garbage pixels are returned. (RICE_1 and NOCOMPRESS tiles
carry no checksum: damage shows only when they no longer decode to their size.)

Why one module of more than ~300 lines: the encoder and the decoder share the tile layout,
the heap descriptors and the byte shuffling of one convention; their tests check each
against the other and against astropy, fitsio and funpack.
"""

from __future__ import annotations

import io
import math
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
from astropy.io import fits
from isal import igzip_lib, isal_zlib

from .fitsfile import FitsFileError, open_fits, open_regular, read_span

__all__ = [
    "CODECS",
    "COMPRESSION_TYPES",
    "DEFAULT_LEVEL",
    "TILE_ROWS",
    "CompressedHDU",
    "PlaneCodec",
    "TileDecodeError",
    "TiledImage",
    "UnsupportedCompression",
    "encode_image",
    "read_image_rows",
    "write_fits",
]

#: Rows per tile written by default (measured in benchmarks/README.md: 32-row tiles give
#: smaller files than one-row tiles and a tenth of the per-tile overhead).
TILE_ROWS = 32
#: ISA-L deflate level (0-3); level 2 is as fast as 1 and gives smaller files here.
DEFAULT_LEVEL = 2
# ISA-L's small level buffer: smaller files that also inflate ~1.7x faster (deflate blocks
# whose Huffman tables follow the data) than the default buffer, at the same speed.
_MEM_LEVEL = igzip_lib.MEM_LEVEL_SMALL
# tiles are shuffled and unshuffled this many bytes at a time (stays in the CPU cache)
_BATCH_BYTES = 1 << 18
_LITTLE = sys.byteorder == "little"

COMPRESSION_TYPES = ("GZIP_2", "GZIP_1", "RICE_1", "NOCOMPRESS")
_BITPIX = {
    np.dtype(t): b
    for t, b in (
        (np.uint8, 8),
        (np.int16, 16),
        (np.int32, 32),
        (np.int64, 64),
        (np.float32, -32),
        (np.float64, -64),
    )
}
# unsigned (and signed-byte) images are stored with their top bit flipped and a BZERO
_OFFSET_STORAGE = {
    np.dtype(t): np.dtype(s)
    for t, s in (
        (np.int8, np.uint8),
        (np.uint16, np.int16),
        (np.uint32, np.int32),
        (np.uint64, np.int64),
    )
}
_RICE_BLOCKSIZE = 32

# cards of the image header that the compressed table's own structure replaces
_RESERVED = re.compile(
    r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|PCOUNT|GCOUNT|EXTEND|BSCALE|BZERO|CHECKSUM|DATASUM|"
    r"TFIELDS|THEAP|T(TYPE|FORM|UNIT|NULL|SCAL|ZERO|DISP|DIM)\d+|"
    r"ZIMAGE|ZCMPTYPE|ZBITPIX|ZNAXIS\d*|ZTILE\d+|ZNAME\d+|ZVAL\d+|ZMASKCMP|ZSIMPLE|ZTENSION|"
    r"ZEXTEND|ZBLOCKED|ZPCOUNT|ZGCOUNT|ZHECKSUM|ZDATASUM|ZQUANTIZ|ZDITHER0|ZBLANK|ZSCALE|ZZERO)$"
)
_TFORM = re.compile(r"^1?([PQ])B(\(\d+\))?$")


class TileDecodeError(FitsFileError):
    """A compressed tile that cannot be decoded (truncated, corrupt); names file and HDU."""


class UnsupportedCompression(ValueError):
    """A tile-compressed HDU of a kind this module leaves to astropy (the reason says why)."""


@dataclass(frozen=True)
class PlaneCodec:
    """How an image plane is compressed: algorithm, rows per tile, ISA-L level (0-3)."""

    compression: str = "GZIP_2"
    tile_rows: int = TILE_ROWS
    level: int = DEFAULT_LEVEL


#: Named layouts: ``daskcal`` (the default of :func:`daskcal.io.exposure.write_exposure`)
#: and ``afw``, the layout of hscPipe's calexps (GZIP_2, one row per tile, fast deflate).
CODECS: dict[str, PlaneCodec] = {
    "daskcal": PlaneCodec("GZIP_2", TILE_ROWS, DEFAULT_LEVEL),
    "afw": PlaneCodec("GZIP_2", 1, 1),
}


def _rice():
    """astropy's compiled RICE_1 codec class (it ships cfitsio's Rice coder), or None."""
    try:
        from astropy.io.fits.hdu.compressed._codecs import Rice1
    except ImportError:  # pragma: no cover - a future astropy without it
        return None
    return Rice1


# ---------------------------------------------------------------------------------------
# byte order and shuffling (vectorised, a batch of whole tiles at a time)


def _byte_position(k: int, bytepix: int) -> int:
    """Where the k-th most significant byte of a value sits in native memory."""
    return bytepix - 1 - k if _LITTLE else k


def _shuffle(values: np.ndarray, out: np.ndarray) -> None:
    """GZIP_2 order: ``values`` (n tiles, pixels) native -> ``out`` (n, bytepix, pixels)."""
    bytepix = values.dtype.itemsize
    src = values.view(np.uint8).reshape(values.shape[0], -1, bytepix)
    for k in range(bytepix):
        out[:, k, :] = src[:, :, _byte_position(k, bytepix)]


def _unshuffle(src: np.ndarray, values: np.ndarray) -> None:
    """Inverse of :func:`_shuffle`: ``src`` (n, bytepix, pixels) -> native ``values``."""
    bytepix = values.dtype.itemsize
    dst = values.view(np.uint8).reshape(values.shape[0], -1, bytepix)
    for k in range(bytepix):
        dst[:, :, _byte_position(k, bytepix)] = src[:, k, :]


# ---------------------------------------------------------------------------------------
# encoding


@dataclass
class CompressedHDU:
    """An encoded tile-compressed image HDU: its BINTABLE header and data, ready to write.

    Attributes
    ----------
    header : astropy.io.fits.Header
        The BINTABLE header (``ZIMAGE = T`` and the image's own cards).
    descriptors : bytes
        The table rows (one heap descriptor per tile).
    tiles : list of bytes
        The compressed tiles, in heap order.
    """

    header: fits.Header
    descriptors: bytes
    tiles: list[bytes] = field(repr=False)

    @property
    def heap_size(self) -> int:
        """Bytes of compressed tiles (the table's ``PCOUNT``)."""
        return sum(len(t) for t in self.tiles)

    @property
    def nbytes(self) -> int:
        """Size of the HDU on disk: header and data, each padded to 2880-byte blocks."""
        data = len(self.descriptors) + self.heap_size
        return len(self._header_bytes()) + -(-data // 2880) * 2880

    def _header_bytes(self) -> bytes:
        return self.header.tostring().encode("ascii")

    def write_to(self, handle: BinaryIO) -> None:
        """Write the HDU (header, rows, heap, zero padding) to an open binary file."""
        handle.write(self._header_bytes())
        handle.write(self.descriptors)
        handle.writelines(self.tiles)
        data = len(self.descriptors) + self.heap_size
        handle.write(b"\0" * (-data % 2880))

    def tobytes(self) -> bytes:
        """The whole HDU as bytes."""
        buffer = io.BytesIO()
        self.write_to(buffer)
        return buffer.getvalue()


def _storage(data: np.ndarray) -> tuple[np.ndarray, int | None]:
    """(values as stored on disk, native; BZERO or None) for an image of any integer/float."""
    dtype = data.dtype.newbyteorder("=")
    if dtype in _OFFSET_STORAGE:
        stored = _OFFSET_STORAGE[dtype]
        bits = 8 * dtype.itemsize
        flipped = np.asarray(data, dtype).view(f"u{dtype.itemsize}") ^ np.array(
            1 << (bits - 1), f"u{dtype.itemsize}"
        )
        return flipped.view(stored), (-128 if bits == 8 else 1 << (bits - 1))
    if dtype not in _BITPIX:
        raise TypeError(f"cannot tile-compress an image of dtype {data.dtype}")
    return np.ascontiguousarray(data, dtype), None


def _image_cards(header: fits.Header | None) -> tuple[list[fits.Card], list[fits.Card]]:
    """(EXTNAME card if any, the other non-structural cards) of an image header."""
    extname: list[fits.Card] = []
    rest: list[fits.Card] = []
    for card in (header or fits.Header()).cards:
        if card.keyword == "EXTNAME":
            extname = [card]
        elif not _RESERVED.match(card.keyword):
            rest.append(card)
    return extname, rest


def _compress_tiles(
    stored: np.ndarray, compression: str, tile: tuple[int, int], level: int
) -> list[bytes]:
    """Compress the tiles of a 2-D array of stored (native) values, in FITS tile order."""
    ny, nx = stored.shape
    ty, tx = tile
    bytepix = stored.dtype.itemsize
    tiles: list[bytes] = []
    rice = None
    if compression == "RICE_1":
        rice = _rice()
        if rice is None:  # pragma: no cover
            raise UnsupportedCompression("RICE_1 needs astropy's Rice codec")
    for y0 in range(0, ny, ty):
        band = stored[y0 : y0 + ty]
        if tx >= nx:  # whole-width tiles: a run of tiles is contiguous
            parts = [band]
        else:
            parts = [np.ascontiguousarray(band[:, x0 : x0 + tx]) for x0 in range(0, nx, tx)]
        for part in parts:
            tiles.append(_compress_one(part, compression, level, bytepix, rice))
    return tiles


def _compress_one(part: np.ndarray, compression: str, level: int, bytepix: int, rice) -> bytes:
    values = part.reshape(1, -1)
    if compression == "GZIP_2":
        shuffled = np.empty((1, bytepix, values.shape[1]), np.uint8)
        _shuffle(values, shuffled)
        return igzip_lib.compress(shuffled, level, igzip_lib.COMP_GZIP, _MEM_LEVEL)
    if compression == "RICE_1":
        codec = rice(blocksize=_RICE_BLOCKSIZE, bytepix=bytepix, tilesize=values.size)
        return bytes(codec.encode(np.ascontiguousarray(values.ravel())))
    big = values.astype(values.dtype.newbyteorder(">"))
    if compression == "GZIP_1":
        return igzip_lib.compress(big, level, igzip_lib.COMP_GZIP, _MEM_LEVEL)
    return big.tobytes()  # NOCOMPRESS


def _compress_full_width_gzip2(stored: np.ndarray, ty: int, level: int) -> list[bytes]:
    """GZIP_2 tiles of whole rows, shuffled a cache-sized batch of tiles at a time."""
    ny, nx = stored.shape
    bytepix = stored.dtype.itemsize
    tiles: list[bytes] = []
    npix = ty * nx
    per_batch = max(1, _BATCH_BYTES // max(npix * bytepix, 1))
    full = ny // ty
    buffer = np.empty((min(per_batch, max(full, 1)), bytepix, npix), np.uint8)
    for t0 in range(0, full, per_batch):
        n = min(per_batch, full - t0)
        values = stored[t0 * ty : (t0 + n) * ty].reshape(n, npix)
        _shuffle(values, buffer[:n])
        tiles.extend(
            igzip_lib.compress(buffer[i], level, igzip_lib.COMP_GZIP, _MEM_LEVEL) for i in range(n)
        )
    if full * ty < ny:
        tiles.append(_compress_one(stored[full * ty :], "GZIP_2", level, bytepix, None))
    return tiles


def encode_image(
    data: np.ndarray,
    header: fits.Header | None = None,
    *,
    compression: str = "GZIP_2",
    tile_shape: tuple[int, int] | None = None,
    level: int = DEFAULT_LEVEL,
) -> CompressedHDU:
    """Tile-compress a 2-D image losslessly into a :class:`CompressedHDU`.

    Parameters
    ----------
    data : numpy.ndarray
        The image: float32/float64 (stored bit for bit, ``ZQUANTIZ = 'NONE'``), uint8,
        int16, int32, int64, or int8/uint16/uint32/uint64 (stored with astropy's and
        cfitsio's offset convention, ``BZERO = -128`` or ``2**(bits - 1)``).
    header : astropy.io.fits.Header, optional
        The image's cards (EXTNAME, WCS, ...); structural and compression cards in it are
        ignored (the encoder writes its own).
    compression : {"GZIP_2", "GZIP_1", "RICE_1", "NOCOMPRESS"}
        The algorithm. RICE_1 takes 8-, 16- and 32-bit integers only; NOCOMPRESS is read
        by astropy, not by cfitsio.
    tile_shape : (int, int), optional
        Tile (rows, columns); default :data:`TILE_ROWS` whole rows.
    level : int
        ISA-L deflate level, 0 (fastest) to 3, for the GZIP types.

    Returns
    -------
    CompressedHDU
        Header, descriptors and tiles; write it with :func:`write_fits`.

    Examples
    --------
    >>> hdu = encode_image(np.arange(12, dtype=np.float32).reshape(3, 4), tile_shape=(2, 4))
    >>> hdu.header["ZCMPTYPE"], hdu.header["ZTILE2"], hdu.header["NAXIS2"]
    ('GZIP_2', 2, 2)
    """
    data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"encode_image takes a 2-D image, got shape {data.shape}")
    if compression not in COMPRESSION_TYPES:
        raise ValueError(f"compression must be one of {COMPRESSION_TYPES}, not {compression!r}")
    ny, nx = data.shape
    if ny == 0 or nx == 0:
        raise ValueError(f"cannot tile-compress an empty image of shape {data.shape}")
    ty, tx = tile_shape or (TILE_ROWS, nx)
    ty, tx = max(1, min(int(ty), ny)), max(1, min(int(tx), nx))
    stored, bzero = _storage(data)
    bitpix = _BITPIX[stored.dtype]
    if compression == "RICE_1" and bitpix not in (8, 16, 32):
        raise ValueError(f"RICE_1 takes 8-, 16- or 32-bit integers, not {data.dtype}")
    if compression == "GZIP_2" and tx == nx:
        tiles = _compress_full_width_gzip2(stored, ty, level)
    else:
        tiles = _compress_tiles(stored, compression, (ty, tx), level)
    lengths = np.fromiter((len(t) for t in tiles), np.int64, len(tiles))
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    wide = int(lengths.sum()) >= 2**31
    desc = np.empty((len(tiles), 2), ">i8" if wide else ">i4")
    desc[:, 0], desc[:, 1] = lengths, offsets
    out = fits.Header()
    out["XTENSION"] = ("BINTABLE", "binary table extension")
    out["BITPIX"] = (8, "8-bit bytes")
    out["NAXIS"] = (2, "2-dimensional binary table")
    out["NAXIS1"] = (desc.itemsize * 2, "width of table in bytes")
    out["NAXIS2"] = (len(tiles), "number of rows in table (one per tile)")
    out["PCOUNT"] = (int(lengths.sum()), "size of the heap: the compressed tiles")
    out["GCOUNT"] = (1, "one data group")
    out["TFIELDS"] = (1, "number of fields in each row")
    out["TTYPE1"] = ("COMPRESSED_DATA", "label for field 1")
    tform = f"1{'Q' if wide else 'P'}B({int(lengths.max())})"
    out["TFORM1"] = (tform, "data format of field: variable length array")
    out["ZIMAGE"] = (True, "extension contains compressed image")
    out["ZTENSION"] = ("IMAGE", "Image extension")
    out["ZBITPIX"] = (bitpix, "data type of original image")
    out["ZNAXIS"] = (2, "dimension of original image")
    out["ZNAXIS1"] = (nx, "length of original image axis")
    out["ZNAXIS2"] = (ny, "length of original image axis")
    out["ZPCOUNT"] = (0, "number of parameters")
    out["ZGCOUNT"] = (1, "number of groups")
    out["ZTILE1"] = (tx, "size of tiles to be compressed")
    out["ZTILE2"] = (ty, "size of tiles to be compressed")
    out["ZCMPTYPE"] = (compression, "compression algorithm")
    if compression == "RICE_1":
        out["ZNAME1"] = ("BLOCKSIZE", "compression block size")
        out["ZVAL1"] = (_RICE_BLOCKSIZE, "pixels per block")
        out["ZNAME2"] = ("BYTEPIX", "bytes per pixel (1, 2, 4, or 8)")
        out["ZVAL2"] = (stored.dtype.itemsize, "bytes per pixel (1, 2, 4, or 8)")
    if bitpix < 0:
        out["ZQUANTIZ"] = ("NONE", "floats compressed losslessly, not quantized")
    extname, cards = _image_cards(header)
    for card in extname:
        out.append(card, useblanks=False, end=True)
    if bzero is not None:
        out["BSCALE"] = 1
        out["BZERO"] = bzero
    for card in cards:
        out.append(card, useblanks=False, end=True)
    return CompressedHDU(out, desc.tobytes(), tiles)


# ---------------------------------------------------------------------------------------
# writing a file that mixes astropy HDUs and encoded images


_STRUCTURE = re.compile(rb"^(BITPIX|NAXIS\d*|PCOUNT|GCOUNT) *$")
_MAX_HEADER_BLOCKS = 10_000


def _header_at(read, start: int) -> tuple[bytes, int]:
    """(header bytes, padded data size) of the HDU whose header starts at ``start``;
    ``read(offset, size)`` gives the file's bytes. ValueError when it is not plain FITS."""
    blocks, values = [], {}
    for _ in range(_MAX_HEADER_BLOCKS):
        block = read(start + 2880 * len(blocks), 2880)
        if len(block) < 2880:
            raise ValueError("the file ends inside a header")
        blocks.append(block)
        cards = [block[i : i + 80] for i in range(0, 2880, 80)]
        for card in cards:
            if card[8:10] == b"= " and _STRUCTURE.match(card[:8]):
                values[card[:8].rstrip().decode("ascii")] = int(card[10:].split(b"/")[0])
        if any(card[:8] == b"END     " for card in cards):
            break
    else:
        raise ValueError("no END card")
    count = 0
    if values.get("NAXIS", 0):
        count = math.prod(values[f"NAXIS{i}"] for i in range(1, values["NAXIS"] + 1))
    size = abs(values["BITPIX"]) // 8 * values.get("GCOUNT", 1) * (values.get("PCOUNT", 0) + count)
    return b"".join(blocks), -(-size // 2880) * 2880


def _hdu_spans(raw: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of each HDU in FITS bytes written by astropy."""
    start = 0
    while start < len(raw):
        header, data = _header_at(lambda offset, size: raw[offset : offset + size], start)
        yield start, start + len(header) + data
        start += len(header) + data


def _find_hdu(handle: BinaryIO, index: int) -> tuple[fits.Header, int] | None:
    """(header, byte offset of the data) of HDU ``index`` of an open file, by walking the
    headers before it (only they are read); None when the file is not plain enough for
    that (astropy then reads it, and says what is wrong)."""
    if index < 0:
        return None
    start = 0
    try:
        for _ in range(index):
            header, data = _header_at(lambda offset, size: read_span(handle, offset, size), start)
            start += len(header) + data
        header, _ = _header_at(lambda offset, size: read_span(handle, offset, size), start)
        return fits.Header.fromstring(header.decode("ascii")), start + len(header)
    except (ValueError, KeyError, UnicodeDecodeError):
        return None


def write_fits(path: str | os.PathLike, hdus: Sequence) -> None:
    """Write a FITS file whose HDUs are astropy HDUs and :class:`CompressedHDU` images.

    The astropy HDUs (the first must be the primary) are serialised by astropy together,
    exactly as ``HDUList(...).writeto`` would write them in the same file; the encoded
    images are written in their places.

    Parameters
    ----------
    path : str or os.PathLike
        The file to create (use :func:`daskcal.io.atomic.atomic_write` around it).
    hdus : sequence
        ``PrimaryHDU`` first, then any ``ImageHDU``, ``BinTableHDU`` or
        :class:`CompressedHDU`, in file order.
    """
    plain = [h for h in hdus if not isinstance(h, CompressedHDU)]
    if len(plain) == len(hdus):
        fits.HDUList(list(hdus)).writeto(path)
        return
    if not plain or not isinstance(plain[0], fits.PrimaryHDU) or hdus[0] is not plain[0]:
        raise ValueError("write_fits needs an astropy PrimaryHDU first")
    # a lone primary HDU would be written without EXTEND = T: give it company
    placeholder = [fits.ImageHDU()] if len(plain) == 1 else []
    buffer = io.BytesIO()
    fits.HDUList(plain + placeholder).writeto(buffer)
    raw = buffer.getvalue()
    spans = iter(_hdu_spans(raw))
    with open(path, "wb") as handle:
        for hdu in hdus:
            if isinstance(hdu, CompressedHDU):
                hdu.write_to(handle)
            else:
                start, end = next(spans)
                handle.write(memoryview(raw)[start:end])


# ---------------------------------------------------------------------------------------
# decoding


def _inflate(chunk: memoryview, expected: int) -> bytes:
    return isal_zlib.decompress(chunk, 31, expected)


@dataclass(frozen=True)
class TiledImage:
    """A tile-compressed image HDU this module decodes, described by its table header.

    Build it with :meth:`from_header` (which raises :class:`UnsupportedCompression` for
    the kinds left to astropy), then read rows with :meth:`read_rows`.
    """

    shape: tuple[int, int]  # (rows, columns); a 1-D image is one row
    tile: tuple[int, int]
    compression: str
    bitpix: int
    descriptor: str  # ">i4" (P) or ">i8" (Q)
    row_bytes: int
    nrows: int
    heap_start: int
    heap_size: int
    offset_bits: int  # > 0: unsigned / signed-byte offset convention (flip the top bit)
    rice_blocksize: int = _RICE_BLOCKSIZE
    ndim: int = 2

    @classmethod
    def from_header(cls, header: fits.Header) -> TiledImage:
        """Describe a compressed HDU from its BINTABLE header.

        Raises
        ------
        UnsupportedCompression
            Anything but lossless GZIP_1/GZIP_2/RICE_1/NOCOMPRESS tiles of a 1-D or 2-D
            image with one ``COMPRESSED_DATA`` byte column, no null values and at most the
            unsigned-integer ``BZERO`` convention.
        """
        if not header.get("ZIMAGE", False):
            raise UnsupportedCompression("not a tile-compressed image (no ZIMAGE = T)")
        compression = str(header.get("ZCMPTYPE", "")).strip().upper()
        compression = "RICE_1" if compression == "RICE_ONE" else compression
        if compression not in COMPRESSION_TYPES:
            raise UnsupportedCompression(f"ZCMPTYPE = {compression!r}")
        if compression == "RICE_1" and _rice() is None:  # pragma: no cover
            raise UnsupportedCompression("no RICE_1 decoder")
        form = _TFORM.match(str(header.get("TFORM1", "")).strip())
        if (
            header.get("TFIELDS") != 1
            or str(header.get("TTYPE1", "")).strip() != "COMPRESSED_DATA"
            or form is None
        ):
            raise UnsupportedCompression("columns other than one COMPRESSED_DATA byte array")
        bitpix = int(header["ZBITPIX"])
        if bitpix not in (8, 16, 32, 64, -32, -64):
            raise UnsupportedCompression(f"ZBITPIX = {bitpix}")
        for key in ("ZSCALE", "ZZERO", "ZBLANK", "ZMASKCMP"):
            if key in header:
                raise UnsupportedCompression(f"{key} card (quantized or null-valued data)")
        if bitpix < 0 and "BLANK" in header:
            raise UnsupportedCompression("BLANK card on a floating-point image")
        naxis = int(header.get("ZNAXIS", 0))
        if naxis not in (1, 2):
            raise UnsupportedCompression(f"ZNAXIS = {naxis}")
        axes = [int(header[f"ZNAXIS{i}"]) for i in range(1, naxis + 1)]
        tiles = [int(header.get("ZTILE1", axes[0]))]
        if naxis == 2:
            tiles.append(int(header.get("ZTILE2", 1)))
        if min(axes) <= 0 or min(tiles) <= 0:
            raise UnsupportedCompression(f"empty image or tiles ({axes}, tiles {tiles})")
        if compression == "RICE_1":
            params = {
                str(header[f"ZNAME{i}"]).strip().upper(): header.get(f"ZVAL{i}")
                for i in range(1, 10)
                if f"ZNAME{i}" in header
            }
            if int(params.get("BYTEPIX", 4)) != abs(bitpix) // 8 or bitpix not in (8, 16, 32):
                raise UnsupportedCompression("RICE_1 with BYTEPIX other than the image's")
            blocksize = int(params.get("BLOCKSIZE", _RICE_BLOCKSIZE))
        else:
            blocksize = _RICE_BLOCKSIZE
        bscale, bzero = header.get("BSCALE", 1), header.get("BZERO", 0)
        offset_bits = 0
        if bscale != 1 or bzero != 0:
            bits = abs(bitpix)
            # signed bytes (BZERO = -128) too are left to astropy: versions differ on them
            if bitpix < 0 or bscale != 1 or bits == 8 or bzero != 1 << (bits - 1):
                raise UnsupportedCompression(f"scaled data (BSCALE = {bscale}, BZERO = {bzero})")
            if "BLANK" in header:
                raise UnsupportedCompression("BLANK card on offset unsigned integers")
            offset_bits = bits
        width = 8 if form.group(1) == "P" else 16
        naxis1 = int(header.get("NAXIS1", 0))
        if naxis1 != width:
            raise UnsupportedCompression(f"NAXIS1 = {naxis1} for one {form.group(1)} descriptor")
        nrows = int(header.get("NAXIS2", 0))
        return cls(
            shape=(axes[1], axes[0]) if naxis == 2 else (1, axes[0]),
            tile=(tiles[1], tiles[0]) if naxis == 2 else (1, tiles[0]),
            compression=compression,
            bitpix=bitpix,
            descriptor=">i4" if width == 8 else ">i8",
            row_bytes=naxis1,
            nrows=nrows,
            heap_start=int(header.get("THEAP", naxis1 * nrows)),
            heap_size=int(header.get("PCOUNT", 0)),
            offset_bits=offset_bits,
            rice_blocksize=blocksize,
            ndim=naxis,
        )

    @property
    def stored_dtype(self) -> np.dtype:
        """The native dtype of the values as stored (before the BZERO convention)."""
        return np.dtype({8: np.uint8, 16: np.int16, 32: np.int32, 64: np.int64,
                         -32: np.float32, -64: np.float64}[self.bitpix])  # fmt: skip

    @property
    def dtype(self) -> np.dtype:
        """The dtype astropy gives the pixels (uint16 / uint32 / uint64 with BZERO)."""
        if not self.offset_bits:
            return self.stored_dtype
        return np.dtype(f"u{self.offset_bits // 8}")

    def _grid(self) -> tuple[int, int]:
        (ny, nx), (ty, tx) = self.shape, self.tile
        return -(-ny // ty), -(-nx // tx)

    def read_rows(
        self, source: BinaryIO, data_start: int, y0: int, y1: int, where: str
    ) -> np.ndarray:
        """Rows ``y0:y1`` (clipped to the image) of the image, decoding only their tiles.

        Parameters
        ----------
        source : file-like
            The open file (``seek``/``read``/``tell``); its position is restored.
        data_start : int
            Byte offset of the HDU's data (the table rows) in the file.
        y0, y1 : int
            Row range (array rows). A 1-D image has the single row 0.
        where : str
            "<file>: HDU <n> (<EXTNAME>)", for error messages.

        Returns
        -------
        numpy.ndarray
            Native byte order, astropy's dtype (see :attr:`dtype`); 1-D for a 1-D image.

        Raises
        ------
        TileDecodeError
            Table or heap truncated, a descriptor outside the heap, a tile that does not
            inflate (CRC-32, length) to the size of its pixels.
        """
        ny, nx = self.shape
        ty, tx = self.tile
        y0, y1 = max(0, y0), min(ny, y1)
        if y1 <= y0:
            return np.empty((0, nx), self.dtype)
        nty, ntx = self._grid()
        if self.nrows < nty * ntx:
            raise TileDecodeError(f"{where}: {self.nrows} table rows for {nty * ntx} tiles")
        band0, band1 = y0 // ty, (y1 - 1) // ty + 1
        first, last = band0 * ntx, band1 * ntx
        rows = read_span(
            source, data_start + first * self.row_bytes, (last - first) * self.row_bytes
        )
        if len(rows) != (last - first) * self.row_bytes:
            raise TileDecodeError(f"{where}: file truncated inside the tile table")
        desc = np.frombuffer(rows, self.descriptor).reshape(-1, 2)
        counts, offsets = desc[:, 0].astype(np.int64), desc[:, 1].astype(np.int64)
        ends = offsets + counts
        bad = (counts <= 0) | (offsets < 0) | (ends > self.heap_size)
        if bad.any():
            i = int(np.argmax(bad))
            raise TileDecodeError(
                f"{where}: tile {first + i} has {counts[i]} bytes at heap offset "
                f"{offsets[i]}, outside the heap of {self.heap_size} bytes"
            )
        low, high = int(offsets.min()), int(ends.max())
        heap = read_span(source, data_start + self.heap_start + low, high - low)
        if len(heap) != high - low:
            raise TileDecodeError(f"{where}: file truncated inside the compressed tiles")
        view = memoryview(heap)
        row0 = band0 * ty
        out = np.empty((min(band1 * ty, ny) - row0, nx), self.stored_dtype)
        self._decode_into(out, view, counts, offsets - low, first, row0, where)
        if self.offset_bits:
            unsigned = out.view(f"u{out.dtype.itemsize}")
            unsigned ^= np.array(1 << (self.offset_bits - 1), unsigned.dtype)
            out = out.view(self.dtype)
        if (row0, row0 + len(out)) != (y0, y1):
            out = out[y0 - row0 : y1 - row0].copy()
        return out[0] if self.ndim == 1 else out

    def _decode_into(
        self,
        out: np.ndarray,
        heap: memoryview,
        counts: np.ndarray,
        offsets: np.ndarray,
        first: int,
        row0: int,
        where: str,
    ) -> None:
        """Decode tiles ``first ..`` (their heap spans given) into ``out`` (rows from row0)."""
        ny, nx = self.shape
        ty, tx = self.tile
        ntx = self._grid()[1]
        bytepix = out.dtype.itemsize
        whole_rows = tx >= nx
        if whole_rows and self.compression in ("GZIP_2", "GZIP_1"):
            self._inflate_rows(out, heap, counts, offsets, first, row0, where)
            return
        batch: list[bytes] = []
        batch_rows = (0, 0)  # out rows covered by the pending batch
        batch_npix = 0

        def flush() -> None:
            if batch:
                self._place(batch, out[batch_rows[0] : batch_rows[1]], batch_npix)
                batch.clear()

        for i in range(len(counts)):
            index = first + i
            band, column = divmod(index, ntx)
            r0, r1 = band * ty - row0, min((band + 1) * ty, ny) - row0
            c0, c1 = column * tx, min((column + 1) * tx, nx)
            npix = (r1 - r0) * (c1 - c0)
            try:
                raw = self._tile_bytes(heap[offsets[i] : offsets[i] + counts[i]], npix, bytepix)
            except _TileError as err:
                raise TileDecodeError(f"{where}: tile {index} is corrupt ({err})") from None
            if len(raw) != npix * bytepix:
                raise TileDecodeError(
                    f"{where}: tile {index} decodes to {len(raw)} bytes, expected "
                    f"{npix * bytepix} ({npix} pixels of {bytepix} bytes)"
                )
            if whole_rows:
                if batch and (npix != batch_npix or len(batch) * npix * bytepix >= _BATCH_BYTES):
                    flush()
                if not batch:
                    batch_rows, batch_npix = (r0, r0), npix
                batch.append(raw)
                batch_rows = (batch_rows[0], r1)
            else:
                self._place([raw], out[r0:r1, c0:c1], npix)
        flush()

    def _inflate_rows(
        self,
        out: np.ndarray,
        heap: memoryview,
        counts: np.ndarray,
        offsets: np.ndarray,
        first: int,
        row0: int,
        where: str,
    ) -> None:
        """:meth:`_decode_into` for gzip tiles of whole rows (every CALEXP, every calexp):
        the per-tile loop reduced to one inflate call, tiles placed a batch at a time."""
        ny, nx = self.shape
        ty = self.tile[0]
        bytepix = out.dtype.itemsize
        full = ty * nx * bytepix
        per_batch = max(1, _BATCH_BYTES // full)
        starts, ends = offsets.tolist(), (offsets + counts).tolist()
        inflate = isal_zlib.decompress
        n = len(starts)
        for b0 in range(0, n, per_batch):
            b1 = min(b0 + per_batch, n)
            raws = []
            for i in range(b0, b1):
                try:
                    raws.append(inflate(heap[starts[i] : ends[i]], 31, full))
                except isal_zlib.error as err:
                    message = f"{where}: tile {first + i} is corrupt ({err})"
                    raise TileDecodeError(message) from None
            r0 = (first + b0) * ty - row0
            r1 = min((first + b1) * ty, ny) - row0
            sizes = [len(raw) for raw in raws]
            expected = [full] * len(raws)
            expected[-1] = (min((first + b1) * ty, ny) - (first + b1 - 1) * ty) * nx * bytepix
            if sizes != expected:
                i = next(k for k in range(len(sizes)) if sizes[k] != expected[k])
                raise TileDecodeError(
                    f"{where}: tile {first + b0 + i} decodes to {sizes[i]} bytes, expected "
                    f"{expected[i]} ({expected[i] // bytepix} pixels of {bytepix} bytes)"
                )
            if expected[-1] != full:  # the image's short last tile, placed on its own
                rows_last = expected[-1] // (nx * bytepix)
                if len(raws) > 1:
                    self._place(raws[:-1], out[r0 : r1 - rows_last], ty * nx)
                self._place(raws[-1:], out[r1 - rows_last : r1], rows_last * nx)
            else:
                self._place(raws, out[r0:r1], ty * nx)

    def _tile_bytes(self, chunk: memoryview, npix: int, bytepix: int):
        """The decoded bytes of one tile (GZIP_2 still shuffled), or raises TileDecodeError."""
        try:
            if self.compression in ("GZIP_2", "GZIP_1"):
                return _inflate(chunk, npix * bytepix)
            if self.compression == "RICE_1":
                codec = _rice()(blocksize=self.rice_blocksize, bytepix=bytepix, tilesize=npix)
                values = np.asarray(codec.decode(np.frombuffer(chunk, np.uint8)))
                return values.astype(self.stored_dtype, copy=False)[:npix].tobytes()
            return bytes(chunk)  # NOCOMPRESS
        except (isal_zlib.error, ValueError, RuntimeError, OverflowError) as err:
            raise _TileError(str(err)) from None

    def _place(self, raws: list[bytes], region: np.ndarray, npix: int) -> None:
        """Write decoded tiles into ``region`` (the rows/columns they cover), natively."""
        n = len(raws)
        joined = raws[0] if n == 1 else b"".join(raws)
        if self.compression == "GZIP_2":
            bytepix = region.dtype.itemsize
            src = np.frombuffer(joined, np.uint8).reshape(n, bytepix, npix)
            target = region if region.flags.c_contiguous else np.empty_like(region)
            _unshuffle(src, target.reshape(n, npix))
            if target is not region:
                region[...] = target
        elif self.compression == "RICE_1":
            region[...] = np.frombuffer(joined, region.dtype).reshape(region.shape)
        else:  # big-endian values
            big = np.frombuffer(joined, region.dtype.newbyteorder(">"))
            region[...] = big.reshape(region.shape)


class _TileError(Exception):
    """A tile's codec failed (internal: becomes TileDecodeError with the tile's index)."""


def _where(path: str, index: int, header: fits.Header) -> str:
    name = str(header.get("EXTNAME", "")).strip()
    return f"{path}: HDU {index}" + (f" ({name})" if name else "")


def read_image_rows(
    path: str | os.PathLike, hdu: int, y0: int | None = None, y1: int | None = None
) -> np.ndarray:
    """Rows ``y0:y1`` of image HDU ``hdu`` of a FITS file, as astropy would give them.

    Tile-compressed HDUs of the lossless kinds (:meth:`TiledImage.from_header`) are
    decoded here, reading only the tiles that hold the rows; every other image HDU
    (plain, quantized, HCOMPRESS, PLIO, scaled) is read through astropy's ``section``.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    hdu : int
        0-based HDU index.
    y0, y1 : int, optional
        Row range (array rows, first axis of the numpy array); default all rows.

    Returns
    -------
    numpy.ndarray
        A native-endian array independent of the (closed) file, with astropy's dtype
        (e.g. uint16 for int16 + ``BZERO = 32768``).

    Raises
    ------
    TileDecodeError
        A truncated or corrupt compressed tile (the message names the file and HDU).
    """
    path = str(path)
    with open_regular(path) as handle:
        found = _find_hdu(handle, hdu)
        image = None
        if found is not None and found[0].get("ZIMAGE") is True:
            try:
                image = TiledImage.from_header(found[0])
            except (UnsupportedCompression, KeyError, ValueError, TypeError):
                pass
        if image is not None:
            header, data_start = found
            where = _where(path, hdu, header)
            if image.ndim == 1:  # astropy's section slices the pixels of a 1-D image
                return image.read_rows(handle, data_start, 0, 1, where)[y0:y1]
            start = 0 if y0 is None else y0
            stop = image.shape[0] if y1 is None else y1
            return image.read_rows(handle, data_start, start, stop, where)
    with open_fits(path) as hdul:  # plain images and the kinds astropy decodes itself
        return np.array(hdul[hdu].section[slice(y0, y1)], copy=True)
