"""Opening FITS files so that a bad file gives one clear error and leaks nothing, and
reading the bytes behind an HDU of an open file."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import BinaryIO

from astropy.io import fits

__all__ = ["FitsFileError", "open_fits", "read_span"]


class FitsFileError(OSError):
    """A missing, truncated or malformed FITS file; the message names it."""


@contextlib.contextmanager
def open_fits(path: str | os.PathLike, **kwargs) -> Iterator[fits.HDUList]:
    """``astropy.io.fits.open`` on a file handle we own and always close.

    astropy leaves its own handle open when it fails to parse a file; opening the file
    here first closes it in every case. Parse errors become :class:`FitsFileError`
    naming the file.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, whatever happens
    except OSError as err:
        raise FitsFileError(f"{path}: {err.strerror or err}") from None
    with handle:
        try:
            hdul = fits.open(handle, **kwargs)
        except (OSError, ValueError, TypeError, IndexError, KeyError) as err:
            raise FitsFileError(f"{path}: not a readable FITS file ({err})") from None
        with hdul:
            yield hdul


def read_span(source: BinaryIO, start: int, size: int) -> bytes:
    """``size`` bytes at offset ``start`` of an open file, leaving its position as it was.

    With an HDU's ``fileinfo()`` (``file``, ``hdrLoc``, ``datLoc``, ``datSpan``) this reads
    a header, a data unit or several HDUs exactly as they are on disk, while astropy keeps
    using the file.
    """
    position = source.tell()
    try:
        source.seek(start)
        return source.read(size)
    finally:
        source.seek(position)
