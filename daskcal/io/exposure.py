"""afw Exposure files (calexp, CALEXP): a lazy xarray reader and an atomic writer.

Layout (docs/formats.md, 'Exposures'): HDU 0 holds the metadata (``AR_HDU``, archive ids of the
components), then IMAGE (float32), MASK (int32, ``MP_<PLANE>`` bit cards; old files int16
+ BZERO) and VARIANCE (float32), plain or tile-compressed, then the archive.

Reading opens headers only. Each pixel block is one task that receives plain values
(path, HDU index, rows) and opens the file by name on whichever worker runs it; a
compressed HDU is decoded by :mod:`daskcal.io.tilecodec` (only the tiles the rows need;
astropy for the kinds it does not decode). Planes are written by that codec too (GZIP_2,
32-row tiles, ISA-L deflate) unless ``codec="astropy"`` asks for astropy's own output. The archive
travels as an :class:`ArchiveHandle`, which pickles as the file name. Sky coordinates
are not this module's business: :func:`daskcal.read_exposure` (:mod:`daskcal.lazy.inputs`)
adds lazy ``ra``/``dec`` to what it reads.

Why one module of more than ~300 lines: the lazy reader and the writer share the HDU
layout, the mask-plane cards and the choice of codec.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
from astropy.io import fits
from dask.base import tokenize

from .afwtable import card_key
from .archive import SKYWCS_ID_KEYS, Archive, read_archive
from .atomic import atomic_write
from .fitsfile import open_fits
from .tilecodec import CODECS, encode_image, read_image_rows, write_fits

__all__ = [
    "CODEC_NAMES",
    "PLANES",
    "ArchiveHandle",
    "ExposureFormatError",
    "exposure_archive",
    "is_exposure_file",
    "read_exposure",
    "read_rows",
    "write_exposure",
    "write_exposure_dataset",
]

PLANES = ("image", "mask", "variance")
#: ``write_exposure(codec=...)``: daskcal's fast codec (default), hscPipe's layout, astropy's
CODEC_NAMES = ("daskcal", "afw", "astropy")
_DTYPES = {"image": np.float32, "mask": np.int32, "variance": np.float32}
# cards that describe an HDU's own structure, scaling or compression: never carried over
_STRUCTURAL = re.compile(
    r"^(SIMPLE|EXTEND|XTENSION|BITPIX|NAXIS\d*|PCOUNT|GCOUNT|BZERO|BSCALE|BLANK|"
    r"CHECKSUM|DATASUM|Z[A-Z]+\d*|TFIELDS|TTYPE\d+|TFORM\d+)$"
)


class ExposureFormatError(ValueError):
    """A file that is not an afw Exposure; the message names the file."""


@dataclass(frozen=True)
class ArchiveHandle:
    """The archive of an Exposure file, opened on demand; pickles as the file name.

    Examples
    --------
    >>> import pickle
    >>> pickle.loads(pickle.dumps(ArchiveHandle("/data/calexp.fits"))).path
    '/data/calexp.fits'
    """

    path: str

    @contextlib.contextmanager
    def open(self) -> Iterator[Archive]:
        """Open the file and yield its :class:`~daskcal.io.archive.Archive`."""
        with open_fits(self.path) as hdul:
            yield read_archive(hdul, self.path)


def exposure_archive(path: str | os.PathLike) -> contextlib.AbstractContextManager[Archive]:
    """Context manager yielding the archive of the Exposure at ``path``."""
    return ArchiveHandle(str(path)).open()


def read_rows(path: str, hdu: int, y0: int, y1: int, dtype: str) -> np.ndarray:
    """Rows ``y0:y1`` of image HDU ``hdu`` of ``path`` (the task run for one block).

    Parameters
    ----------
    path : str
        File name; opened here, so that the task carries no open file.
    hdu : int
        0-based HDU index.
    y0, y1 : int
        Row range (array rows, not PARENT y).
    dtype : str
        Output dtype, e.g. ``"float32"``; int16 + BZERO masks are widened to int32.

    Returns
    -------
    numpy.ndarray
        A native-endian copy, independent of the (closed) file.

    Raises
    ------
    daskcal.io.tilecodec.TileDecodeError
        A truncated or corrupt compressed tile (naming the file and the HDU).
    """
    return np.asarray(read_image_rows(path, hdu, y0, y1), dtype=dtype)


def _plane_hdus(hdul: fits.HDUList, path: str) -> dict[str, int]:
    """0-based HDU of each plane, by EXTTYPE, then EXTNAME, then HDU order 1/2/3."""
    found: dict[str, int] = {}
    images: list[int] = []
    for i in range(1, 4):
        try:
            hdu = hdul[i]
        except IndexError:
            break
        if not isinstance(hdu, fits.ImageHDU | fits.CompImageHDU):
            break
        images.append(i)
        for key in ("EXTTYPE", "EXTNAME"):
            plane = str(hdu.header.get(key, "")).strip().lower()
            if plane in PLANES and plane not in found:
                found[plane] = i
                break
    if len(images) < 3:
        raise ExposureFormatError(f"{path}: expected IMAGE, MASK, VARIANCE image HDUs 1..3")
    for plane, i in zip(PLANES, images, strict=True):
        found.setdefault(plane, i)
    return found


def is_exposure_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an afw Exposure: HDUs 1-3 are images named IMAGE, MASK, VARIANCE.

    The names are read from ``EXTTYPE`` or ``EXTNAME``; only headers are read. Anything
    that cannot be read as such (missing, not FITS, a table in HDU 1...) gives False.
    """
    try:
        with open_fits(path) as hdul:
            names: set[str] = set()
            for i in (1, 2, 3):
                hdu = hdul[i]
                if not isinstance(hdu, fits.ImageHDU | fits.CompImageHDU):
                    return False
                names |= {
                    str(hdu.header.get(k, "")).strip().lower() for k in ("EXTTYPE", "EXTNAME")
                }
            return set(PLANES) <= names
    except Exception:  # a guess: whatever astropy raises on a foreign file means "no"
        return False


def _mask_planes(header: fits.Header) -> dict[str, int]:
    """Mask plane name -> bit, from the ``MP_<NAME>`` cards, sorted by bit."""
    planes = {k[3:]: int(v) for k, v in header.items() if k.startswith("MP_")}
    return dict(sorted(planes.items(), key=lambda kv: kv[1]))


def _plane_array(path: str, hdu: int, shape: tuple[int, int], plane: str, chunk_rows: int):
    """A dask array with one ``read_rows`` task per block of ``chunk_rows`` rows."""
    ny, nx = shape
    dtype = np.dtype(_DTYPES[plane])
    stat = os.stat(path)
    name = f"{plane}-" + tokenize(path, stat.st_mtime_ns, stat.st_size, hdu, chunk_rows)
    starts = list(range(0, ny, chunk_rows)) or [0]
    chunks = (tuple(min(y0 + chunk_rows, ny) - y0 for y0 in starts), (nx,))
    return da.map_blocks(
        _read_block, path, hdu, dtype.name, chunks=chunks, dtype=dtype,
        meta=np.empty((0, 0), dtype), name=name,
    )  # fmt: skip


def _read_block(path: str, hdu: int, dtype: str, block_info: dict | None = None) -> np.ndarray:
    """One block task: the rows of the block, read by file name on whichever worker."""
    (y0, y1), _ = block_info[None]["array-location"]
    return read_rows(path, hdu, y0, y1, dtype)


def read_exposure(path: str | os.PathLike, chunk_rows: int = 512) -> xr.Dataset:
    """Lazily read an afw Exposure; only headers are read here.

    Parameters
    ----------
    path : str or os.PathLike
        Exposure file, plain or tile-compressed.
    chunk_rows : int
        Rows per dask block (one task each).

    Returns
    -------
    xarray.Dataset
        Data variables ``image`` (float32), ``mask`` (int32), ``variance`` (float32) on
        dims (``y``, ``x``) with integer PARENT-pixel coords (``x0 + i``). Attributes:
        ``path``, ``xy0`` (x0, y0), ``mask_planes`` (name -> bit), ``header`` (primary
        astropy Header), ``plane_headers`` (plane -> Header), ``hdus`` (plane -> 0-based
        HDU index), ``archive`` (an :class:`ArchiveHandle`, or None without archive) and
        ``has_skywcs`` (the primary header names a SkyWcs in the archive).
    """
    path = str(Path(path).resolve())
    with open_fits(path) as hdul:
        hdus = _plane_hdus(hdul, path)
        primary = hdul[0].header.copy()
        headers = {plane: hdul[i].header.copy() for plane, i in hdus.items()}
        has_archive = "AR_HDU" in primary
    image_header = headers["image"]
    shape = (int(image_header.get("NAXIS2", 0)), int(image_header.get("NAXIS1", 0)))
    x0 = -int(round(image_header.get("LTV1", 0)))
    y0 = -int(round(image_header.get("LTV2", 0)))
    data = {
        plane: (("y", "x"), _plane_array(path, hdus[plane], shape, plane, chunk_rows))
        for plane in PLANES
    }
    coords = {"y": np.arange(y0, y0 + shape[0]), "x": np.arange(x0, x0 + shape[1])}
    attrs = {
        "path": path,
        "xy0": (x0, y0),
        "mask_planes": _mask_planes(headers["mask"]),
        "header": primary,
        "plane_headers": headers,
        "hdus": hdus,
        "archive": ArchiveHandle(path) if has_archive else None,
    }
    attrs["has_skywcs"] = has_archive and any(key in primary for key in SKYWCS_ID_KEYS)
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _primary_hdu(header: fits.Header | None, ar_hdu: int | None) -> fits.PrimaryHDU:
    out = fits.Header()
    for card in (header or fits.Header()).cards:
        if not _STRUCTURAL.match(card.keyword) and card.keyword != "AR_HDU":
            out.append(card, end=True)
        elif card.keyword == "AR_HDU" and ar_hdu is not None:  # keep its place
            out.append(("AR_HDU", ar_hdu, card.comment), end=True)
    if ar_hdu is not None and "AR_HDU" not in out:
        out["AR_HDU"] = (ar_hdu, "HDU (1-indexed) containing the archive")
    return fits.PrimaryHDU(header=out)


def _plane_header(
    plane: str, base: fits.Header | None, xy0: Sequence[int], mask_planes: dict[str, int]
) -> fits.Header:
    """Header of one plane: the given cards, then afw's EXTTYPE/LTV/"A"-WCS cards."""
    out = fits.Header()
    for card in (base or fits.Header()).cards:
        key = card.keyword
        if _STRUCTURAL.match(key) or key.startswith("MP_") or key in ("EXTNAME", "EXTTYPE"):
            continue
        out.append(card, end=True)
    x0, y0 = (int(v) for v in xy0)
    out["LTV1"] = -x0
    out["LTV2"] = -y0
    out["INHERIT"] = True
    out["EXTTYPE"] = plane.upper()
    out["EXTNAME"] = plane.upper()
    if plane == "mask":
        for name, bit in sorted(mask_planes.items()):  # afw writes them by name
            out[card_key(f"MP_{name}")] = int(bit)
    for axis, origin in ((1, x0), (2, y0)):
        out[f"CTYPE{axis}A"] = ("LINEAR", "Type of projection")
        out[f"CRPIX{axis}A"] = (1.0, "Pixel Coordinate of Reference")
        out[f"CRVAL{axis}A"] = (float(origin), "Parent pixel of Reference Pixel")
        out[f"CUNIT{axis}A"] = ("PIXEL", "unit")
    return out


def _image_hdu(data: np.ndarray, header: fits.Header, compress: bool, codec: str = "astropy"):
    if not compress:
        return fits.ImageHDU(data, header=header)
    if codec in CODECS and data.size:
        plane = CODECS[codec]
        return encode_image(
            data,
            header,
            compression=plane.compression,
            tile_shape=(plane.tile_rows, data.shape[1]),
            level=plane.level,
        )
    if data.dtype.kind == "f":
        # quantize_level=0: lossless (floats are gzipped bit for bit, no ZSCALE/ZZERO)
        return fits.CompImageHDU(data, header=header, compression_type="GZIP_2", quantize_level=0)
    # integers (the mask): RICE_1 is lossless and ~20x faster to write than GZIP_2 here
    return fits.CompImageHDU(data, header=header, compression_type="RICE_1")


def write_exposure(
    path: str | os.PathLike,
    image: np.ndarray,
    mask: np.ndarray,
    variance: np.ndarray,
    *,
    primary_header: fits.Header | None,
    mask_planes: dict[str, int],
    archive_hdus: Sequence[fits.BinTableHDU] = (),
    xy0: Sequence[int] = (0, 0),
    compress: bool = True,
    plane_headers: dict[str, fits.Header] | None = None,
    codec: str = "daskcal",
) -> Path:
    """Write an afw Exposure atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; written through :func:`~daskcal.io.atomic.atomic_write`.
    image, mask, variance : array-like
        The planes (any array convertible with ``numpy.asarray``), same 2-D shape;
        stored as float32, int32, float32.
    primary_header : astropy.io.fits.Header or None
        Metadata for HDU 0 (component id cards are kept as given); ``AR_HDU`` is set to
        the archive index (HDU 5, 1-based) when ``archive_hdus`` is not empty.
    mask_planes : dict of str to int
        Mask plane name -> bit, written as ``MP_<NAME>`` cards.
    archive_hdus : sequence of BinTableHDU
        Archive HDUs, index first (e.g. ``ArchiveWriter(...).hdus()``). Carried HDUs
        read from another file need that file to stay open during the call.
    xy0 : (int, int)
        PARENT position of pixel (0, 0): ``LTV1/2 = -xy0`` and afw's "A" WCS cards.
    compress : bool
        Lossless tile compression (GZIP_2; floats unquantized, bit-exact).
    plane_headers : dict of str to Header, optional
        Extra cards per plane (e.g. the TAN-SIP WCS of the source exposure).
    codec : {"daskcal", "afw", "astropy"}
        With ``compress``: ``daskcal`` writes every plane GZIP_2 in 32-row tiles through
        :mod:`daskcal.io.tilecodec` (ISA-L deflate); ``afw`` the same codec in hscPipe's
        layout (one row per tile); ``astropy`` exactly what astropy writes (GZIP_2 one-row
        tiles for the floats, RICE_1 for the mask), as daskcal did before.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    if codec not in CODEC_NAMES:
        raise ValueError(f"{path}: codec must be one of {CODEC_NAMES}, not {codec!r}")
    plane_headers = plane_headers or {}
    arrays = {"image": image, "mask": mask, "variance": variance}
    shapes = {np.shape(a) for a in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"{path}: planes must share one 2-D shape, got {sorted(shapes)}")
    hdus: list = [_primary_hdu(primary_header, 5 if archive_hdus else None)]
    for plane in PLANES:
        data = np.ascontiguousarray(arrays[plane], dtype=_DTYPES[plane])
        header = _plane_header(plane, plane_headers.get(plane), xy0, mask_planes)
        hdus.append(_image_hdu(data, header, compress, codec))
    hdus.extend(archive_hdus)
    with atomic_write(path) as tmp:
        write_fits(tmp, hdus)
    return Path(path)


def write_exposure_dataset(
    path: str | os.PathLike,
    ds: xr.Dataset,
    *,
    archive_hdus: Sequence[fits.BinTableHDU] = (),
    primary_header: fits.Header | None = None,
    compress: bool = True,
    codec: str = "daskcal",
) -> Path:
    """Write a dataset shaped like :func:`read_exposure`'s output.

    The three planes are computed together (one dask pass); xy0 comes from the ``x``
    and ``y`` coords, header, mask planes and plane headers from ``ds.attrs``; other
    coords (``ra``/``dec``) are ignored (the archive and headers carry the WCS).
    """
    image, mask, variance = dask.compute(*(ds[p].data for p in PLANES))
    xy0 = (int(ds["x"].values[0]), int(ds["y"].values[0]))
    return write_exposure(
        path,
        image,
        mask,
        variance,
        primary_header=primary_header if primary_header is not None else ds.attrs.get("header"),
        mask_planes=ds.attrs.get("mask_planes", {}),
        archive_hdus=archive_hdus,
        xy0=xy0,
        compress=compress,
        plane_headers=ds.attrs.get("plane_headers"),
        codec=codec,
    )
