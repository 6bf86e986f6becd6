"""Synthetic jointcal-like SkyWcs for demo repositories: distorted, afw-shaped.

Built with AST the way jointcal writes a CCD's WCS (``PIXELS -> FOCAL -> IWC -> SKY``), so
that the library reads, evaluates and approximates them exactly as it does real ones.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from astropy.io import fits

from ..calib.ast import AST_LOCK, ast
from ..calib.sip import skywcs_from_fits_header
from ..calib.skywcs import SkyWcs

__all__ = ["HSC_RADIAL_DISTORTION", "make_skywcs"]

#: HSC's radial distortion coefficients (per mm^2 and mm^4 of focal-plane radius).
HSC_RADIAL_DISTORTION = (-4.7e-7, -4.4e-13)


def make_skywcs(
    crval: tuple[float, float],
    ccd_offset_mm: tuple[float, float] = (0.0, 0.0),
    ccd_rotation_deg: float = 0.0,
    plate_scale_arcsec: float = 0.168,
    pixel_size_mm: float = 0.015,
    position_angle_deg: float = 0.0,
    flip_x: bool = False,
    radial_distortion: tuple[float, ...] = HSC_RADIAL_DISTORTION,
) -> SkyWcs:
    """A jointcal-like SkyWcs of one CCD: ``PIXELS -> FOCAL -> IWC -> SKY``.

    - PIXELS -> FOCAL (mm): ``f = ccd_offset_mm + pixel_size_mm * R(ccd_rotation) @ (x, y)``,
      a degree-1 ``PolyMap`` (as jointcal writes it); ``ccd_offset_mm`` is the focal-plane
      position of pixel (0, 0).
    - FOCAL -> IWC (deg): ``k * M @ f * (1 + c1 r^2 + c2 r^4 + ...)`` with ``r = |f|`` in mm,
      ``(c1, c2, ...) = radial_distortion`` (per mm^2, mm^4, ...), ``k`` the plate scale in
      degrees per mm at the centre and ``M`` afw's ``makeCdMatrix`` orientation (position
      angle; x flipped when ``flip_x`` is False, i.e. east to the left). A ``PolyMap``
      with AST's iterative inverse (``IterInverse=1``, exact; jointcal stores a fitted
      inverse polynomial instead, which AST's ``polytran`` cannot fit to 1e-5 px here).
    - IWC -> SKY: a gnomonic (TAN) projection about ``crval`` (ra, dec in degrees, the
      boresight), ICRS, built by AST from FITS-WCS cards as afw does.

    The defaults describe HSC: 0.168"/px at the centre, 15 um pixels, its radial distortion
    (:data:`HSC_RADIAL_DISTORTION`). A CCD with pixel (0, 0) at (-15.3, -60.2) mm:
    ``make_skywcs((150.0, 2.0), (-15.3, -60.2))``; one rotated by 180 degrees:
    ``make_skywcs((150.0, 2.0), (15.3, 60.2), ccd_rotation_deg=180.0)``.
    """
    with AST_LOCK:  # AST builds objects non-thread-safely
        Ast = ast()
        theta, phi = np.radians(ccd_rotation_deg), np.radians(position_angle_deg)
        deg_per_mm = plate_scale_arcsec / 3600.0 / pixel_size_mm
        to_focal = _affine_polymap(np.asarray(ccd_offset_mm, float), pixel_size_mm, theta)
        m = 1.0 if flip_x else -1.0
        orient = deg_per_mm * np.array(
            [[m * np.cos(phi), np.sin(phi)], [-m * np.sin(phi), np.cos(phi)]]
        )
        to_iwc = Ast.PolyMap(_radial_coeffs(orient, radial_distortion), None, "IterInverse=1")
        frameset = Ast.FrameSet(Ast.Frame(2, "Domain=PIXELS"))
        frameset.addframe(Ast.CURRENT, to_focal, Ast.Frame(2, "Domain=FOCAL"))
        frameset.addframe(Ast.CURRENT, to_iwc, Ast.Frame(2, "Domain=IWC"))
        iwc_to_sky, sky = _tan_iwc_to_sky(crval)
        frameset.addframe(Ast.CURRENT, iwc_to_sky, sky)
        return SkyWcs.from_frameset(frameset)


def _affine_polymap(offset: np.ndarray, scale: float, theta: float) -> Any:
    """Degree-1 PolyMap (with its exact inverse) of ``offset + scale * R(theta) @ p``."""
    rot = scale * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    inv = np.linalg.inv(rot)
    return ast().PolyMap(_linear_coeffs(rot, offset), _linear_coeffs(inv, -inv @ offset))


def _linear_coeffs(matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    rows = [[offset[o], o + 1, 0, 0] for o in range(2)]
    rows += [[matrix[o, 0], o + 1, 1, 0] for o in range(2)]
    rows += [[matrix[o, 1], o + 1, 0, 1] for o in range(2)]
    return np.array(rows, dtype=float)


def _radial_coeffs(orient: np.ndarray, radial: tuple[float, ...]) -> np.ndarray:
    """PolyMap coefficient rows of ``orient @ f * (1 + sum_i c_i |f|^(2 i))``."""
    terms: dict[tuple[int, int, int], float] = {}
    for i, c in enumerate((1.0, *radial)):  # f_x * r^(2i) = sum_j C(i, j) fx^(2j+1) fy^(2i-2j)
        for j in range(i + 1):
            weight = c * math.comb(i, j)
            for axis, powers in ((0, (2 * j + 1, 2 * (i - j))), (1, (2 * (i - j), 2 * j + 1))):
                for out in range(2):
                    key = (out + 1, *powers)
                    terms[key] = terms.get(key, 0.0) + weight * orient[out, axis]
    return np.array([[v, *k] for k, v in terms.items() if v != 0.0], dtype=float)


def _tan_iwc_to_sky(crval: tuple[float, float]) -> tuple[Any, Any]:
    """IWC (degrees) -> ICRS mapping of a TAN projection about ``crval``, and its SkyFrame."""
    cards = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "RADESYS": "ICRS"}
    cards |= {"CRVAL1": float(crval[0]), "CRVAL2": float(crval[1]), "CRPIX1": 0.0, "CRPIX2": 0.0}
    cards |= {"CD1_1": 1.0, "CD2_2": 1.0}
    frameset = skywcs_from_fits_header(fits.Header(list(cards.items()))).frameset
    return frameset.getmapping(2, 3), frameset.getframe(3)
