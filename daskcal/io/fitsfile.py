"""Opening FITS files so that a bad file gives one clear error and leaks nothing (only
regular files are opened: a FIFO or a device is refused, never waited on), and reading the
bytes behind an HDU of an open file."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from typing import BinaryIO

from astropy.io import fits

__all__ = ["FitsFileError", "open_fits", "open_regular", "read_span"]


class FitsFileError(OSError):
    """A missing, truncated or malformed FITS file; the message names it."""


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """A binary handle on a regular file (symlinks followed), opened without blocking.

    The file is opened with ``O_NONBLOCK`` and checked with ``fstat`` on the open
    descriptor, so a FIFO (whose plain ``open`` would wait for a writer), a device or a
    folder is refused at once, and a file swapped between a check and the open cannot
    slip through.

    Raises
    ------
    FitsFileError
        The file cannot be opened or is not a regular file; the message names it.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise FitsFileError(f"{path}: {err.strerror or err}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FitsFileError(f"{path}: not a regular file")
        # regular files never block; clear the flag so reads behave as usual
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def open_fits(path: str | os.PathLike, **kwargs) -> Iterator[fits.HDUList]:
    """``astropy.io.fits.open`` on a file handle we own and always close.

    astropy leaves its own handle open when it fails to parse a file; opening the file
    here first closes it in every case. Parse errors become :class:`FitsFileError`
    naming the file.

    Raises
    ------
    FitsFileError
        Missing or unreadable; not a regular file (a FIFO, a device or a folder is
        refused at once, never waited on; a symlink to a regular file is read); not FITS.
    """
    handle = open_regular(path)
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
