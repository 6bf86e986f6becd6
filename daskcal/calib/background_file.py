"""Background files (afw ``BackgroundList``: skyCorr, calexpBackground): read and write
them, and load each once per process for the per-CCD tasks."""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from daskcal.io.atomic import atomic_write

from ..io.fitsfile import open_fits
from .background import BackgroundEntry, BackgroundList

__all__ = [
    "BackgroundFileError",
    "background_block",
    "load_background",
    "read_background",
    "write_background",
]


class BackgroundFileError(OSError):
    """A BackgroundList file that cannot be read (truncated, or not in the afw layout)."""


_BBOX_KEYS = ("BKGD_X0", "BKGD_Y0", "BKGD_WIDTH", "BKGD_HEIGHT")


_WCS_A = [("CRVAL1A", 0, "Column pixel of Reference Pixel"),
          ("CRVAL2A", 0, "Row pixel of Reference Pixel"),
          ("CRPIX1A", 1, "Column Pixel Coordinate of Reference"),
          ("CRPIX2A", 1, "Row Pixel Coordinate of Reference"),
          ("CTYPE1A", "LINEAR", "Type of projection"), ("CTYPE2A", "LINEAR", "Type of projection"),
          ("CUNIT1A", "PIXEL", "Column unit"), ("CUNIT2A", "PIXEL", "Row unit")]  # fmt: skip


def _native(data: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("="))


def _read_entry(hdus: list, path: Path) -> BackgroundEntry:
    header = hdus[0].header
    missing = [k for k in (*_BBOX_KEYS, "INTERPSTYLE", "UNDERSAMPLESTYLE") if k not in header]
    if missing:
        raise BackgroundFileError(f"{path}: BackgroundList HDU lacks the cards {missing}")
    planes = {k[3:]: int(v) for k, v in hdus[1].header.items() if k.startswith("MP_")}
    return BackgroundEntry(
        image=_native(hdus[0].data), variance=_native(hdus[2].data), mask=_native(hdus[1].data),
        bbox=tuple(header[k] for k in _BBOX_KEYS),
        interp_style=header["INTERPSTYLE"], undersample_style=header["UNDERSAMPLESTYLE"],
        approx_style=header.get("APPROXSTYLE", -1), approx_order_x=header.get("APPROXORDERX", 1),
        approx_order_y=header.get("APPROXORDERY", -1),
        approx_weighting=header.get("APPROXWEIGHTING", True), mask_planes=planes,
    )  # fmt: skip


def read_background(path: str | os.PathLike) -> BackgroundList:
    """Read a BackgroundList (skyCorr, calexpBackground) FITS file.

    Missing APPROX* cards take afw's defaults (no approximation, order 1, weighted).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    BackgroundFileError
        If it is truncated or not in the afw layout (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BackgroundList file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # astropy's truncation warnings become errors
            with open_fits(path, memmap=False) as hdul:
                hdul.readall()
                if len(hdul) == 0 or len(hdul) % 3:
                    raise BackgroundFileError(f"{path}: {len(hdul)} HDUs, not a multiple of 3")
                return BackgroundList(
                    [_read_entry(hdul[k : k + 3], path) for k in range(0, len(hdul), 3)]
                )
    except BackgroundFileError:
        raise
    except (OSError, ValueError, KeyError, TypeError, Warning) as exc:
        raise BackgroundFileError(f"cannot read BackgroundList {path}: {exc}") from exc


def _cards(entry: BackgroundEntry, planes: bool) -> list[tuple]:
    """The header cards of one HDU of ``entry``, in afw's order."""
    values = {"INTERPSTYLE": int(entry.interp_style),
              "UNDERSAMPLESTYLE": int(entry.undersample_style),
              "APPROXSTYLE": int(entry.approx_style), "APPROXORDERX": entry.approx_order_x,
              "APPROXORDERY": entry.approx_order_y, "APPROXWEIGHTING": entry.approx_weighting,
              **dict(zip(_BBOX_KEYS, entry.bbox, strict=True))}  # fmt: skip
    if planes:
        values.update({"MP_" + name: bit for name, bit in sorted(entry.mask_planes.items())})
    return [(f"HIERARCH {k}" if len(k) > 8 else k, v) for k, v in values.items()] + _WCS_A


def write_background(
    path: str | os.PathLike, background: BackgroundList | list, *, overwrite: bool = False
) -> None:
    """Write entries in afw's BackgroundList layout (as hscPipe writes skyCorr files).

    Per entry: stats image (the first in the primary HDU), mask (with ``MP_*`` cards), then
    variance, each with the INTERPSTYLE ... BKGD_HEIGHT cards and afw's ``A`` pixel WCS, through
    :func:`daskcal.io.atomic.atomic_write`.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True)")
    entries = background.entries if isinstance(background, BackgroundList) else background
    hdus = []
    for k, entry in enumerate(entries):
        first = fits.PrimaryHDU if k == 0 else fits.ImageHDU
        for cls, data in ((first, entry.image), (fits.ImageHDU, entry.mask),
                          (fits.ImageHDU, entry.variance)):  # fmt: skip
            hdus.append(cls(data, header=fits.Header(_cards(entry, data is entry.mask))))
    with atomic_write(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)


@functools.lru_cache(maxsize=16)
def _load(path: str, mtime_ns: int, size: int) -> BackgroundList:
    return read_background(path)


def load_background(path: str | os.PathLike) -> BackgroundList:
    """``read_background`` cached per process by (path, mtime, size), with fitted models."""
    stat = os.stat(path)
    return _load(os.fspath(path), stat.st_mtime_ns, stat.st_size)


def background_block(
    path: str | os.PathLike, y0: int, y1: int, x0: int = 0, x1: int | None = None
) -> np.ndarray:
    """Float32 background of rows [y0, y1), columns [x0, x1) of the file (for dask tasks)."""
    background = load_background(path)
    return background.evaluate_block(x0, background.shape[1] if x1 is None else x1, y0, y1)
