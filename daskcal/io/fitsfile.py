"""Opening FITS files so that a bad file gives one clear error and leaks nothing."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from astropy.io import fits

__all__ = ["FitsFileError", "open_fits"]


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
