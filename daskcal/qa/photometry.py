"""Zero points of a PhotoCalib over a CCD, and how much a new calibration changes them.

The zero point is the AB magnitude of one count, ``ZP = 31.4 - 2.5 log10(c)`` with c the
calibration in nJy per count (the ``zeropoint`` column of the calibration tables). A
calibration scaled by 1.1 lowers it by 103.5 mmag: its sources come out brighter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..calib.photocalib import PhotoCalib

__all__ = ["AB_ZEROPOINT", "mean_zeropoint", "zeropoint", "zeropoint_grid"]

AB_ZEROPOINT = 31.4
"""AB magnitude of 1 nJy."""


def zeropoint(c: Any) -> np.ndarray:
    """AB magnitude of one count for calibrations ``c`` (nJy per count); NaN where c <= 0.

    Parameters
    ----------
    c : array_like
        Calibration values.

    Returns
    -------
    ndarray or float

    >>> round(float(zeropoint(1.0) - zeropoint(1.1)), 4)
    0.1035
    """
    c = np.asarray(c, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(c > 0, AB_ZEROPOINT - 2.5 * np.log10(c), np.nan)[()]


def zeropoint_grid(photocalib: PhotoCalib, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The zero point of a calibration at PARENT pixels.

    Parameters
    ----------
    photocalib : PhotoCalib
        Constant or spatially varying.
    x, y : ndarray
        Pixel positions (one shape).

    Returns
    -------
    ndarray
        Zero points (mag), shaped as ``x``.
    """
    return zeropoint(np.broadcast_to(photocalib.evaluate(x, y), np.shape(x)))


def mean_zeropoint(photocalib: PhotoCalib, x: np.ndarray, y: np.ndarray) -> float:
    """The zero point of the calibration's mean over some pixels.

    Parameters
    ----------
    photocalib : PhotoCalib
        Constant or spatially varying.
    x, y : ndarray
        Pixel positions (one shape), e.g. a grid over the CCD.

    Returns
    -------
    float
        Zero point (mag) of the mean calibration.
    """
    return float(zeropoint(np.mean(photocalib.evaluate(x, y))))
