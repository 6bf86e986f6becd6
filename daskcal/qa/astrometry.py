"""How far a new WCS moves a CCD's pixels on the sky, and the recorded TAN-SIP error.

The shift of a pixel is the position the new WCS gives it minus the position the old one
gave, on the gnomonic tangent plane at the CCD centre: (East, North) in milliarcseconds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..calib.sip import gnomonic_iwc
from ..calib.skywcs import SkyWcs

__all__ = ["MAS_PER_DEG", "SIP_ERROR_CARD", "sip_error", "wcs_shift"]

MAS_PER_DEG = 3.6e6
SIP_ERROR_CARD = "DASKCAL_SIPERR"


def wcs_shift(
    old: SkyWcs, new: SkyWcs, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The sky shift from ``old`` to ``new`` at PARENT pixels ``(x, y)``.

    Parameters
    ----------
    old, new : SkyWcs
        The calexp's WCS and the one applied (jointcal).
    x, y : ndarray
        0-based PARENT pixel positions (one shape).

    Returns
    -------
    ra, dec : ndarray
        Where ``new`` puts the pixels (degrees).
    east, north : ndarray
        ``new - old`` on the tangent plane at the points' mean position (mas).
    """
    ra0, dec0 = old.pixel_to_sky(x, y)
    ra1, dec1 = new.pixel_to_sky(x, y)
    centre = (float(np.mean(ra1)), float(np.mean(dec1)))
    before, after = gnomonic_iwc(ra0, dec0, centre), gnomonic_iwc(ra1, dec1, centre)
    east, north = (after - before) * MAS_PER_DEG
    return np.asarray(ra1), np.asarray(dec1), east, north


def sip_error(header: Any) -> float:
    """The TAN-SIP error recorded in a CALEXP.

    Parameters
    ----------
    header : astropy.io.fits.Header or mapping, or None
        The CALEXP's primary header.

    Returns
    -------
    float
        ``DASKCAL_SIPERR`` (mas); NaN when absent or not a number.
    """
    value = header.get(SIP_ERROR_CARD) if header is not None else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
