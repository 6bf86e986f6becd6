"""The true sky: a seeded catalogue of stars and galaxies, and rendering it onto a CCD.

Sources are circular Gaussians: stars have the PSF's width, galaxies the PSF convolved with
an intrinsic Gaussian of ``size`` (sigma, arcsec). Fluxes are in nJy per filter. Rendering
integrates each Gaussian over the pixel (erf differences, separable in x and y) on a stamp
of +-5 sigma and scatters all stamps of a CCD at once with ``numpy.bincount``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import erf

from .focalplane import PIXEL_MM, PLATE_SCALE_ARCSEC, SIZES, Ccd

__all__ = [
    "FIELDS",
    "FILTERS",
    "SkyCatalog",
    "make_sky_catalog",
    "render_sources",
    "sources_near",
]

FILTERS = ("HSC-G", "HSC-I")
FIELDS = {"NGC604": (23.6371, 30.7833)}
"""Field name -> (ra, dec) of its centre in degrees."""
_DENSITY_PER_DEG2 = {"full": 1.0e5, "small": 6.0e5}
_STAR_FRACTION = 0.2
_MAG_RANGE = {"star": (15.0, 25.5), "galaxy": (18.0, 26.0)}
_COUNT_SLOPE = {"star": 0.1, "galaxy": 0.35}  # d log10 N / d mag
_STAMP_SIGMAS = 5.0


@dataclass(frozen=True, eq=False)
class SkyCatalog:
    """True sources: positions (deg), class, intrinsic size (arcsec) and nJy per filter."""

    ra: np.ndarray
    dec: np.ndarray
    is_star: np.ndarray
    size_arcsec: np.ndarray
    fluxes: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.ra)

    def flux(self, filt: str) -> np.ndarray:
        """True flux (nJy) in filter ``filt``."""
        return self.fluxes[filt]


def _magnitudes(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """Magnitudes with log10 N(m) rising with the class's slope (inverse-CDF sampling)."""
    lo, hi = _MAG_RANGE[kind]
    k = _COUNT_SLOPE[kind] * np.log(10.0)
    u = rng.random(n)
    return np.log(np.exp(k * lo) + u * (np.exp(k * hi) - np.exp(k * lo))) / k


@lru_cache(maxsize=4)
def make_sky_catalog(
    seed: int, size: str, center: tuple[float, float], radius_deg: float
) -> SkyCatalog:
    """The true sky within ``radius_deg`` of ``center``, a pure function of its arguments.

    Positions are uniform on the tangent plane; 20% of sources are stars (i from 15 to
    25.5, a few saturate), the rest galaxies (i from 18 to 26, sizes shrinking with
    magnitude). Colours: g - i uniform in [0.2, 2.8] for stars, about 1.0 +- 0.35 for
    galaxies. The arrays are read-only (the catalogue is cached and shared by tasks).
    """
    rng = np.random.default_rng([seed, 7_001])
    n = rng.poisson(_DENSITY_PER_DEG2[size] * np.pi * radius_deg**2)
    r = radius_deg * np.sqrt(rng.random(n))
    theta = 2.0 * np.pi * rng.random(n)
    ra, dec = _inverse_gnomonic(r * np.cos(theta), r * np.sin(theta), *center)
    is_star = rng.random(n) < _STAR_FRACTION
    mag_i = np.where(is_star, _magnitudes(rng, n, "star"), _magnitudes(rng, n, "galaxy"))
    colour = np.where(is_star, rng.uniform(0.2, 2.8, n), rng.normal(1.0, 0.35, n))
    size_arcsec = 0.3 * np.exp(rng.normal(0.0, 0.4, n)) * 10 ** (-0.08 * (mag_i - 22.0))
    size_arcsec = np.where(is_star, 0.0, np.clip(size_arcsec, 0.05, 1.5))
    flux_i = 10 ** (-0.4 * (mag_i - 31.4))
    fluxes = {"HSC-I": flux_i, "HSC-G": flux_i * 10 ** (-0.4 * colour)}
    for arr in (ra, dec, is_star, size_arcsec, *fluxes.values()):
        arr.flags.writeable = False
    return SkyCatalog(ra, dec, is_star, size_arcsec, fluxes)


def _inverse_gnomonic(xi, eta, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees of standard coordinates (xi, eta) in degrees about (ra0, dec0)."""
    x, y = np.radians(xi), np.radians(eta)
    d0 = np.radians(dec0)
    rho = np.hypot(x, y)
    c = np.arctan(rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        sin_dec = np.cos(c) * np.sin(d0) + np.where(rho > 0, y * np.sin(c) * np.cos(d0) / rho, 0)
        dra = np.arctan2(x * np.sin(c), rho * np.cos(d0) * np.cos(c) - y * np.sin(d0) * np.sin(c))
    return np.degrees(np.radians(ra0) + dra) % 360.0, np.degrees(np.arcsin(sin_dec))


def sources_near(sky: SkyCatalog, ra: float, dec: float, radius_deg: float) -> np.ndarray:
    """Indices of the sources within ``radius_deg`` of (ra, dec) (degrees)."""
    r1, d1 = np.radians(sky.ra), np.radians(sky.dec)
    r0, d0 = np.radians(ra), np.radians(dec)
    cos_sep = np.sin(d0) * np.sin(d1) + np.cos(d0) * np.cos(d1) * np.cos(r1 - r0)
    return np.flatnonzero(cos_sep >= np.cos(np.radians(radius_deg)))


def ccd_radius_deg(ccd: Ccd, margin_px: float = 0.0) -> float:
    """Angular radius (deg) of a circle around the CCD centre containing the CCD + margin."""
    half_diag = np.hypot(ccd.width + 2 * margin_px, ccd.height + 2 * margin_px) / 2.0
    return 1.05 * half_diag * PLATE_SCALE_ARCSEC / 3600.0  # 5% for the plate-scale change


def total_sigma_px(psf_sigma: float, size_arcsec: np.ndarray) -> np.ndarray:
    """Gaussian sigma (pixels) of each source on the image: PSF (+) intrinsic size."""
    return np.hypot(psf_sigma, np.asarray(size_arcsec) / PLATE_SCALE_ARCSEC)


def render_sources(
    shape: tuple[int, int], x: np.ndarray, y: np.ndarray, flux: np.ndarray, sigma: np.ndarray
) -> np.ndarray:
    """Sum of pixel-integrated circular Gaussians, float64 image of ``shape`` (ny, nx).

    Parameters
    ----------
    shape : (int, int)
        Image shape (rows, columns); pixel (i, j) covers [i - 0.5, i + 0.5] in x.
    x, y : array
        Centres, 0-based pixels; sources off the image contribute their wings.
    flux : array
        Total flux of each source (image units).
    sigma : array
        Gaussian sigma of each source, pixels.

    Examples
    --------
    >>> img = render_sources((21, 21), np.array([10.0]), np.array([10.0]),
    ...                      np.array([100.0]), np.array([1.5]))
    >>> round(float(img.sum()), 4), int(img.argmax()) == 10 * 21 + 10
    (100.0, True)
    """
    ny, nx = shape
    x, y, flux, sigma = (np.asarray(a, dtype=float) for a in (x, y, flux, sigma))
    total = np.zeros(ny * nx)
    half = np.ceil(_STAMP_SIGMAS * sigma + 0.5).astype(int)  # >= 5 sigma on both sides
    for h in np.unique(half):  # a few stamp sizes, each rendered for all its sources at once
        sel = half == h
        offsets = np.arange(-h, h + 1)
        ix = np.rint(x[sel])[:, None].astype(int) + offsets
        iy = np.rint(y[sel])[:, None].astype(int) + offsets
        ex = _pixel_integrals(ix, x[sel], sigma[sel])
        ey = _pixel_integrals(iy, y[sel], sigma[sel])
        stamps = flux[sel, None, None] * ey[:, :, None] * ex[:, None, :]
        inside = ((ix >= 0) & (ix < nx))[:, None, :] & ((iy >= 0) & (iy < ny))[:, :, None]
        index = iy[:, :, None] * nx + ix[:, None, :]
        total += np.bincount(index[inside], weights=stamps[inside], minlength=ny * nx)
    return total.reshape(ny, nx)


def _pixel_integrals(pix: np.ndarray, centre: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Fraction of a 1-D Gaussian falling in each pixel ``pix`` (rows: sources)."""
    scale = 1.0 / (np.sqrt(2.0) * sigma[:, None])
    d = pix - centre[:, None]
    return 0.5 * (erf((d + 0.5) * scale) - erf((d - 0.5) * scale))


def catalog_radius_deg(size: str, dither_deg: float) -> float:
    """Radius of the true catalogue: the vignetted field plus the dithers plus a margin."""
    dims = SIZES[size]
    field = dims.vignetting_mm / PIXEL_MM * PLATE_SCALE_ARCSEC / 3600.0
    return 1.05 * field + dither_deg + 0.01 / dims.shrink
