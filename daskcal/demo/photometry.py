"""The true photometric calibration of each CCD and the products derived from it.

The truth c(x, y) (nJy per count) is FGCM-like: a ``ProductBoundedField`` of three
``ChebyshevBoundedField`` factors on the CCD box (0, 0)..(W-1, H-1):

1. the relative pixel area implied by the radial distortion (order 2, 1 on the axis);
2. a "super-star flat" (order 2, percent-level structure);
3. a zero point with a small gradient (order 1), scaled so that c at the CCD centre is
   the CCD's cbar.

Its stored mean is the value at the CCD centre, as FGCM writes it. ``fgcm_tract_photoCalib``
is the truth; ``fgcm_photoCalib`` is the same field scaled by (1 + 2e-4), so that the two
can be told apart; ``jointcal_photoCalib`` is constant, within a few 0.1% of cbar; the
calexp's own PhotoCalib is constant and about 1% off. The ``fgcmZeropoints`` rows hold the
``fgcm_photoCalib`` field as one 6 x 6 Chebyshev (the exact product of the factors), by the
rule of :mod:`daskcal.calib.fgcm`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.polynomial import chebyshev as cheb

from ..calib.boundedfield import BBox, ChebyshevBoundedField, ProductBoundedField
from ..calib.photocalib import F_AB_NJY, PhotoCalib
from .focalplane import SIZES, Ccd

__all__ = [
    "FGCM_VISIT_SCALE",
    "CcdPhotometry",
    "cheb2d_product",
    "fgcm_zeropoint_row",
    "make_photometry",
]

FGCM_VISIT_SCALE = 1.0 + 2e-4
"""fgcm_photoCalib = this factor x fgcm_tract_photoCalib (the truth)."""
_LN10_OVER_2P5 = np.log(10.0) / 2.5


@dataclass(frozen=True, eq=False)
class CcdPhotometry:
    """The photometric products of one CCD.

    Attributes
    ----------
    truth : PhotoCalib
        c(x, y), the ``fgcm_tract_photoCalib`` (mean = cbar = c at the CCD centre).
    fgcm : PhotoCalib
        ``fgcm_photoCalib`` (the truth x ``FGCM_VISIT_SCALE``).
    jointcal : PhotoCalib
        ``jointcal_photoCalib``, constant.
    calexp : PhotoCalib
        The calexp's own (single-frame) constant calibration.
    """

    truth: PhotoCalib
    fgcm: PhotoCalib
    jointcal: PhotoCalib
    calexp: PhotoCalib

    @property
    def cbar(self) -> float:
        """The true calibration at the CCD centre (nJy per count)."""
        return self.truth.mean


def cheb2d_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Coefficients (y-major) of the product of two 2-D Chebyshev series, exactly.

    >>> cheb2d_product(np.array([[0.0, 1.0]]), np.array([[0.0, 1.0]])).tolist()  # x * x
    [[0.5, 0.0, 0.5]]
    """
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    my = _product_table(a.shape[0], b.shape[0])
    mx = _product_table(a.shape[1], b.shape[1])
    return np.einsum("ab,cd,acy,bdx->yx", a, b, my, mx)


def _product_table(n: int, m: int) -> np.ndarray:
    """table[i, k] = Chebyshev coefficients of T_i * T_k (length n + m - 1)."""
    out = np.zeros((n, m, n + m - 1))
    i, k = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
    np.add.at(out, (i, k, i + k), 0.5)
    np.add.at(out, (i, k, np.abs(i - k)), 0.5)
    return out


def _fit_cheb(bbox: BBox, func, order: int) -> np.ndarray:
    """Least-squares Chebyshev coefficients (order x order in y, x) of ``func(x, y)``."""
    xs = np.linspace(bbox.min_x, bbox.max_x, 4 * (order + 1))
    ys = np.linspace(bbox.min_y, bbox.max_y, 4 * (order + 1))
    xx, yy = np.meshgrid(xs, ys)
    cx, cy = bbox.center
    xr, yr = 2.0 * (xx - cx) / bbox.width, 2.0 * (yy - cy) / bbox.height
    design = cheb.chebvander2d(yr.ravel(), xr.ravel(), [order, order])
    coeffs = np.linalg.lstsq(design, func(xx, yy).ravel(), rcond=None)[0]
    return coeffs.reshape(order + 1, order + 1)


def _pixel_area(ccd: Ccd, size: str):
    """Relative pixel area (1 on the optical axis) implied by the radial distortion."""
    c1, c2 = SIZES[size].radial_distortion

    def area(x, y):
        fx, fy = ccd.to_focal(x, y)
        r2 = fx * fx + fy * fy
        return (1 + c1 * r2 + c2 * r2 * r2) * (1 + 3 * c1 * r2 + 5 * c2 * r2 * r2)

    return area


def make_photometry(rng: np.random.Generator, ccd: Ccd, size: str, cbar: float) -> CcdPhotometry:
    """The true field and the derived PhotoCalibs of one CCD whose centre value is ``cbar``.

    Draws, in order: the super-star coefficients, the zero-point gradient, the calibration
    error, the jointcal and calexp offsets.
    """
    bbox = BBox(0, 0, ccd.width - 1, ccd.height - 1)
    area = _fit_cheb(bbox, _pixel_area(ccd, size), 2)
    star = np.vstack([[1.0, *rng.normal(0.0, 0.004, 2)], rng.normal(0.0, 0.004, (2, 3))])
    zero = np.array([[1.0, rng.normal(0.0, 0.004)], [rng.normal(0.0, 0.004), 0.0]])
    sigma_c = cbar * rng.uniform(0.001, 0.003)
    joint = cbar * (1.0 + rng.normal(0.0, 0.003))
    single = cbar * (1.0 + rng.normal(0.0, 0.01))
    factors = [ChebyshevBoundedField(bbox, area), ChebyshevBoundedField(bbox, star)]
    xc, yc = bbox.center
    at_centre = float(
        ProductBoundedField((*factors, ChebyshevBoundedField(bbox, zero))).evaluate(xc, yc)
    )
    truth = _product_calib(factors, bbox, zero * cbar / at_centre, sigma_c)
    fgcm = _product_calib(factors, bbox, zero * cbar * FGCM_VISIT_SCALE / at_centre, sigma_c)
    return CcdPhotometry(
        truth=truth,
        fgcm=fgcm,
        jointcal=PhotoCalib(joint, 1.5 * sigma_c, True, ChebyshevBoundedField.constant(joint)),
        calexp=PhotoCalib(single, 0.2 * sigma_c, True, ChebyshevBoundedField.constant(single)),
    )


def _product_calib(factors: list, bbox: BBox, zero: np.ndarray, sigma_c: float) -> PhotoCalib:
    field = ProductBoundedField((*factors, ChebyshevBoundedField(bbox, zero)))
    mean = float(field.evaluate(*bbox.center))
    return PhotoCalib(mean, sigma_c, False, field)


def fgcm_zeropoint_row(
    visit: int, ccd: int, filt: str, calib: PhotoCalib, exptime: float
) -> dict[str, object]:
    """The ``fgcmZeropoints`` row whose calibration (by :mod:`daskcal.calib.fgcm`'s rule)
    has the field of ``calib`` (a product of Chebyshev factors) and its ``sigma_c``.

    ``fgcmZpt`` is the AB magnitude of one count at the CCD centre; ``fgcmZptErr`` is
    chosen so that ln(10) / 2.5 * (field mean) * fgcmZptErr = sigma_c.
    """
    field = calib.field
    coeffs = np.ones((1, 1))
    for factor in field.factors:
        coeffs = cheb2d_product(coeffs, factor.coefficients)
    single = ChebyshevBoundedField(field.bbox, coeffs)
    centre = float(single.evaluate(*field.bbox.center))
    return {
        "visit": visit,
        "ccd": ccd,
        "fgcmFlag": 0,
        "fgcmZpt": -2.5 * np.log10(centre / F_AB_NJY),
        "fgcmZptErr": calib.err / (_LN10_OVER_2P5 * single.mean()),
        "fgcmfZptCheb": (coeffs / F_AB_NJY).ravel(),
        "fgcmfZptChebXyMax": np.array([field.bbox.max_x, field.bbox.max_y], dtype=float),
        "fgcmZptVar": 0.0,
        "fgcmI0": 1.0,
        "fgcmI10": 0.0,
        "fgcmFlat": 1.0,
        "fgcmAperCorr": 0.0,
        "exptime": exptime,
        "filtername": filt[-1].lower(),
    }
