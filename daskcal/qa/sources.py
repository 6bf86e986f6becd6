"""What a CALSRC says about a CCD: source counts, PSF - aperture magnitudes, its stars.

Stars are the point sources (``base_ClassificationExtendedness_value == 0``) that were
never blended (``parent == 0`` and ``deblend_nChild == 0``), are no sky sources, have no
failed PSF or aperture measurement and no saturated or edge pixel at their centre, and
whose PSF flux has the signal-to-noise asked for. The aperture is the ``slot_CalibFlux``
one (HSC: 12 pixels), whose difference from the PSF magnitude is what the aperture
correction removes: its median over bright stars should be near 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..io.catalog import resolve_alias
from .options import QAOptions

__all__ = ["source_metrics", "star_mask", "star_table"]

_BAD_CENTRE = (
    "base_PixelFlags_flag_saturatedCenter",
    "base_PixelFlags_flag_edge",
    "base_PixelFlags_flag_offimage",
)


def _measurement(catalog: pd.DataFrame, slot: str, default: str) -> str:
    aliases = catalog.attrs.get("aliases") or {}
    return resolve_alias(slot, dict(aliases)) if slot in aliases else default


def _values(catalog: pd.DataFrame, name: str, fill: Any = np.nan) -> np.ndarray:
    if name in catalog:
        return catalog[name].to_numpy()
    return np.full(len(catalog), fill)


def star_mask(catalog: pd.DataFrame, min_snr: float) -> np.ndarray:
    """The rows that are unblended, unflagged stars (see the module docstring).

    Parameters
    ----------
    catalog : pandas.DataFrame
        A CALSRC (or src) read with :func:`daskcal.io.catalog.read_catalog`.
    min_snr : float
        Lowest PSF signal-to-noise.

    Returns
    -------
    ndarray of bool
    """
    psf = _measurement(catalog, "slot_PsfFlux", "base_PsfFlux")
    aperture = _measurement(catalog, "slot_CalibFlux", "base_CircularApertureFlux_12_0")
    flux = _values(catalog, f"{psf}_instFlux").astype(float)
    error = _values(catalog, f"{psf}_instFluxErr").astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        bright = flux / error > min_snr
    point = _values(catalog, "base_ClassificationExtendedness_value").astype(float) == 0.0
    alone = (_values(catalog, "parent", 0) == 0) & (_values(catalog, "deblend_nChild", 0) == 0)
    flags = ("sky_source", f"{psf}_flag", f"{aperture}_flag", *_BAD_CENTRE)
    flagged = np.logical_or.reduce([_values(catalog, f, False).astype(bool) for f in flags])
    return bright & point & alone & ~flagged


def source_metrics(catalog: pd.DataFrame, options: QAOptions) -> dict[str, float]:
    """Source counts and the median PSF - aperture magnitude (mmag) of bright stars.

    Parameters
    ----------
    catalog : pandas.DataFrame
        A CALSRC.
    options : QAOptions
        ``bright_snr`` and ``match_snr``.

    Returns
    -------
    dict
        ``n_sources`` (rows that are no sky source), ``n_stars`` (stars above
        ``match_snr``), ``psf_ap_mmag`` and ``psf_ap_n`` (stars above ``bright_snr``).
    """
    psf = _measurement(catalog, "slot_PsfFlux", "base_PsfFlux")
    aperture = _measurement(catalog, "slot_CalibFlux", "base_CircularApertureFlux_12_0")
    sky = _values(catalog, "sky_source", False).astype(bool)
    bright = star_mask(catalog, options.bright_snr)
    diff = _values(catalog, f"{psf}_mag")[bright] - _values(catalog, f"{aperture}_mag")[bright]
    diff = diff[np.isfinite(diff)]
    return {
        "n_sources": int((~sky).sum()),
        "n_stars": int(star_mask(catalog, options.match_snr).sum()),
        "psf_ap_mmag": float(np.median(diff)) * 1e3 if diff.size else math.nan,
        "psf_ap_n": int(diff.size),
    }


def star_table(catalog: pd.DataFrame, options: QAOptions) -> dict[str, np.ndarray]:
    """The stars to match with other visits.

    Parameters
    ----------
    catalog : pandas.DataFrame
        A CALSRC (positions from the jointcal WCS, calibrated magnitudes).
    options : QAOptions
        ``match_snr`` and ``max_stars``.

    Returns
    -------
    dict of str to ndarray
        ``ra``, ``dec`` (degrees), ``mag`` and ``mag_err`` (PSF) of the brightest
        ``max_stars`` stars above ``match_snr``.
    """
    psf = _measurement(catalog, "slot_PsfFlux", "base_PsfFlux")
    keep = star_mask(catalog, options.match_snr)
    mag = _values(catalog, f"{psf}_mag").astype(float)
    keep &= np.isfinite(mag)
    order = np.argsort(mag[keep], kind="stable")[: options.max_stars]
    rows = np.flatnonzero(keep)[order]
    return {
        "ra": np.degrees(_values(catalog, "coord_ra").astype(float)[rows]),
        "dec": np.degrees(_values(catalog, "coord_dec").astype(float)[rows]),
        "mag": mag[rows],
        "mag_err": _values(catalog, f"{psf}_magErr").astype(float)[rows],
    }
