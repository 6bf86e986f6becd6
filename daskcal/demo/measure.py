"""Synthetic single-frame measurements: the ``src`` table of one CCD and its truth rows.

Measurement model (a source of true flux F nJy, Gaussian sigma s on the image, at the true
pixel (x, y), where the true calibration is c(x, y)): the expected instFlux of measurement
P is ``frac_P * F / c(x, y)`` with

- PsfFlux: frac = 2 p^2 / (p^2 + s^2) (a PSF of sigma p fitted to a Gaussian; 1 for stars),
  noise area 4 pi p^2;
- GaussianFlux: frac = 1, noise area 4 pi s^2;
- CircularApertureFlux_r: frac = 1 - exp(-r^2 / 2 s^2), noise area pi r^2;

and instFluxErr = sqrt(frac F / c / gain + area * sky variance); instFlux = expected +
Gaussian noise of that sigma. Sky sources have F = 0. Centroids are the true position plus
noise of 0.01-0.05 pixel. ``coord_ra/dec`` come from the calexp's own WCS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .schema import APERTURES, COLUMNS, FLAGS, MEASUREMENTS, src_attrs

__all__ = ["Detections", "Exposure", "flux_fractions", "measure_sources"]


@dataclass(frozen=True, eq=False)
class Detections:
    """What the measurement needs about the rows of one src (true values, per row)."""

    x: np.ndarray
    y: np.ndarray
    counts: np.ndarray  # true flux / c(x, y), counts
    sigma: np.ndarray  # Gaussian sigma on the image, pixels
    is_star: np.ndarray
    is_sky: np.ndarray
    saturated_center: np.ndarray
    saturated: np.ndarray
    bad: np.ndarray


def flux_fractions(
    psf_sigma: float, sigma: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Measurement prefix -> (fraction of the total flux measured, noise area in pixels).

    >>> frac, area = flux_fractions(2.0, np.array([2.0]))["base_PsfFlux"]
    >>> float(frac[0]), round(float(area[0]), 3)
    (1.0, 50.265)
    """
    s2 = np.asarray(sigma, dtype=float) ** 2
    p2 = psf_sigma**2
    out = {
        f"base_CircularApertureFlux_{r:.0f}_0": (
            1.0 - np.exp(-(r**2) / (2 * s2)),
            np.full_like(s2, np.pi * r * r),
        )
        for r in APERTURES
    }
    out["base_GaussianFlux"] = (np.ones_like(s2), 4 * np.pi * s2)
    out["base_PsfFlux"] = (2 * p2 / (p2 + s2), np.full_like(s2, 4 * np.pi * p2))
    return out


@dataclass(frozen=True, eq=False)
class Exposure:
    """What the measurement needs about the calexp the sources are measured on."""

    shape: tuple[int, int]
    psf_sigma: float
    pixel_variance: float  # counts^2 of a sky pixel
    gain: float
    wcs: object  # the calexp's own SkyWcs (coord_ra/dec)
    local_calib: tuple[float, float]  # the calexp's PhotoCalib (mean, err)
    exposure_id: int
    edge: int  # width of the EDGE mask


def measure_sources(
    rng: np.random.Generator, det: Detections, exp: Exposure
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The src DataFrame (afw attrs set, ready for ``write_catalog``) and per-row truth.

    Returns
    -------
    (src, extra)
        ``extra`` has, per row, the measured fractions ``frac_<prefix>`` and ``nan_centroid``.
    """
    n = len(det.x)
    fractions = flux_fractions(exp.psf_sigma, det.sigma)
    flags = {name: np.zeros(n, bool) for name, _ in FLAGS}
    cols = _fluxes(rng, det, fractions, exp)
    snr = fractions["base_PsfFlux"][0] * det.counts / cols["base_PsfFlux_instFluxErr"]
    x, y, pos_err, nan_centroid = _centroids(rng, det, snr, exp.psf_sigma)
    failed = nan_centroid | (det.is_sky & (rng.random(n) < 0.85))
    for prefix in MEASUREMENTS:
        cols[f"{prefix}_instFlux"][nan_centroid] = np.nan
        cols[f"{prefix}_instFluxErr"][nan_centroid] = np.nan
        flags[f"{prefix}_flag"] |= failed
    for name in ("base_SdssCentroid_flag", "base_SdssShape_flag",
                 "base_ClassificationExtendedness_flag"):  # fmt: skip
        flags[name] |= failed
    ny, nx = exp.shape
    dist = np.minimum.reduce([det.x + 0.5, nx - 0.5 - det.x, det.y + 0.5, ny - 0.5 - det.y])
    _edge_flags(flags, cols, dist, exp.edge, exp.psf_sigma)
    _pixel_and_calib_flags(rng, flags, det, snr, failed)
    ra, dec = exp.wcs.pixel_to_sky_rad(x, y)
    ids = (np.int64(exp.exposure_id) << 32) + np.arange(1, n + 1, dtype=np.int64)
    cols.update(id=ids, coord_ra=ra, coord_dec=dec, base_SdssCentroid_x=x,
                base_SdssCentroid_y=y, base_SdssCentroid_xErr=pos_err.astype(np.float32),
                base_SdssCentroid_yErr=pos_err.astype(np.float32))  # fmt: skip
    cols.update(_other_columns(det, exp, failed, cols["base_PsfFlux_instFlux"]))
    src = pd.DataFrame({**flags, **{name: cols[name] for name, *_ in COLUMNS}})
    src.attrs.update(src_attrs(exp.exposure_id))
    extra = pd.DataFrame({f"frac_{p}": fractions[p][0] for p in MEASUREMENTS})
    extra["nan_centroid"] = nan_centroid
    return src, extra


def _fluxes(rng, det: Detections, fractions: dict, exp: Exposure) -> dict[str, np.ndarray]:
    """instFlux and instFluxErr of every measurement (see the module docstring)."""
    cols = {}
    for prefix, (frac, area) in fractions.items():
        expected = frac * det.counts
        err = np.sqrt(np.maximum(expected, 0.0) / exp.gain + area * exp.pixel_variance)
        cols[f"{prefix}_instFlux"] = expected + err * rng.standard_normal(len(det.x))
        cols[f"{prefix}_instFluxErr"] = err
    return cols


def _centroids(rng, det: Detections, snr: np.ndarray, psf_sigma: float):
    """Measured (x, y), their error, and the 0.5% of sources whose centroid failed (NaN).

    Sky sources sit at pixel centres with no error estimate (NaN), as afw leaves them.
    """
    n = len(det.x)
    err = np.clip(np.sqrt(2) * psf_sigma / np.maximum(snr, 1e-9), 0.01, 0.05)
    err = np.where(det.is_sky, np.nan, err)
    x = det.x + np.nan_to_num(err) * rng.standard_normal(n)
    y = det.y + np.nan_to_num(err) * rng.standard_normal(n)
    failed = ~det.is_sky & (rng.random(n) < 0.005)
    x[failed] = y[failed] = err[failed] = np.nan
    return x, y, err, failed


def _other_columns(det: Detections, exp: Exposure, failed, psf_flux) -> dict[str, np.ndarray]:
    """Shape, deblend, local-calibration, classification and footprint columns."""
    n, s2 = len(det.x), det.sigma**2
    return {
        "parent": np.zeros(n, np.int64),
        "deblend_nChild": np.zeros(n, np.int32),
        "deblend_psf_instFlux": np.where(det.is_star, psf_flux, np.nan),
        "base_SdssShape_xx": np.where(failed, np.nan, s2),
        "base_SdssShape_yy": np.where(failed, np.nan, s2),
        "base_SdssShape_xy": np.where(failed, np.nan, 0.0),
        "base_LocalPhotoCalib": np.full(n, exp.local_calib[0]),
        "base_LocalPhotoCalibErr": np.full(n, exp.local_calib[1]),
        "base_PsfFlux_area": np.full(n, 4 * np.pi * exp.psf_sigma**2, np.float32),
        "base_ClassificationExtendedness_value": np.where(
            failed, np.nan, (det.sigma > 1.1 * exp.psf_sigma).astype(float)
        ),
        "base_FootprintArea_value": np.rint(np.pi * 9 * s2).astype(np.int32),
        "footprint": np.zeros(n, np.int32),
    }


def _edge_flags(flags: dict, cols: dict, dist: np.ndarray, edge: int, psf_sigma: float) -> None:
    """Edge and truncated-aperture flags; PsfFlux fails (NaN) within 2 pixels of the border."""
    flags["base_PixelFlags_flag_edge"] |= dist < edge + 3 * psf_sigma
    at_edge = dist < 2.0
    flags["base_PsfFlux_flag"] |= at_edge
    flags["base_PsfFlux_flag_edge"] |= at_edge
    flags["base_SdssCentroid_flag_edge"] |= at_edge
    cols["base_PsfFlux_instFlux"][at_edge] = np.nan
    cols["base_PsfFlux_instFluxErr"][at_edge] = np.nan
    for r in APERTURES:
        prefix = f"base_CircularApertureFlux_{r:.0f}_0"
        truncated = dist < r
        flags[f"{prefix}_flag_apertureTruncated"] |= truncated
        flags[f"{prefix}_flag"] |= truncated


def _pixel_and_calib_flags(rng, flags: dict, det: Detections, snr: np.ndarray, failed) -> None:
    """Pixel flags from the mask, and the calibration-selection flags of bright stars."""
    flags["sky_source"] |= det.is_sky
    flags["base_PixelFlags_flag_saturatedCenter"] |= det.saturated_center
    flags["base_PixelFlags_flag_saturated"] |= det.saturated
    flags["base_PixelFlags_flag_bad"] |= det.bad
    flags["detect_isPrimary"] |= ~det.is_sky
    flags["detect_isDeblendedSource"][:] = True
    flags["detect_isIsolated"][:] = True
    good_star = det.is_star & ~det.saturated & ~failed
    u = rng.random(len(snr))
    flags["calib_detected"] |= ~det.is_sky & (snr > 50)
    flags["deblend_deblendedAsPsf"] |= det.is_star & (snr > 10)
    candidate = good_star & (snr > 50)
    flags["calib_psf_candidate"] |= candidate
    flags["calib_psf_used"] |= candidate & (u < 0.8)
    flags["calib_psf_reserved"] |= candidate & (u >= 0.8)
    photometric = good_star & (snr > 20)
    flags["calib_photometry_used"] |= photometric & (u < 0.9)
    flags["calib_photometry_reserved"] |= photometric & (u >= 0.9)
    flags["calib_astrometry_used"] |= ~det.is_sky & ~det.saturated & ~failed & (snr > 20)
