"""An HSC-like focal plane: 104 science CCDs in eight rows, and the WCS of each CCD.

Layout (full size): 2048 x 4176-pixel CCDs of 15 um pixels (30.72 x 62.64 mm), long axis
along the focal-plane y axis, in eight rows of 8, 12, 16, 16, 16, 16, 12, 8 CCDs on a
31.72 x 63.84 mm pitch, centred on the optical axis: a disc of about 0.8 degree radius at
0.168 arcsec per pixel. CCDs are numbered 0..103 row by row from the bottom row, left to
right; the four bottom rows are rotated by 180 degrees (their pixel (0, 0) is at the top
right), as half of HSC's CCDs are. CCD 9 is broken (no data, as HSC's).

``size="small"`` keeps the pixel scale (0.168"/px) and shrinks everything else by 8: CCDs
of 256 x 512 pixels on a pitch of 1/8 of the full one, a field 8 times smaller, and the
radial distortion rescaled (per mm^2 by 64, per mm^4 by 4096) so that the distortion
pattern relative to the field radius, and hence its size in pixels at the field edge, is
the same fraction of the field as at full size. Pixels beyond the vignetting radius
(``vignetting_mm``) have no data.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..calib.ast import AST_LOCK
from ..calib.skywcs import SkyWcs
from .wcs import HSC_RADIAL_DISTORTION, make_skywcs

__all__ = [
    "AST_LOCK",
    "BROKEN_CCDS",
    "N_SCIENCE_CCDS",
    "PIXEL_MM",
    "PLATE_SCALE_ARCSEC",
    "SIZES",
    "Ccd",
    "CcdSize",
    "camera",
    "gnomonic",
    "science_ccds",
    "tan_skywcs",
    "tan_approximation",
    "true_skywcs",
]

PIXEL_MM = 0.015
PLATE_SCALE_ARCSEC = 0.168
N_SCIENCE_CCDS = 104
BROKEN_CCDS = frozenset({9})
_ROW_COUNTS = (8, 12, 16, 16, 16, 16, 12, 8)
_PITCH_MM = (31.72, 63.84)
_VIGNETTING_MM = 268.0
"""Held while building or (de)serialising AST objects: pyast's Channel/FitsChan I/O is not
thread-safe (checked here: concurrent reads crash the interpreter, concurrent dumps come out
mis-indented). Transforming points (``tran``) concurrently is safe."""


@dataclass(frozen=True)
class CcdSize:
    """Pixel dimensions of a CCD and the factor by which the focal plane is shrunk."""

    width: int
    height: int
    shrink: int

    @property
    def vignetting_mm(self) -> float:
        """Focal-plane radius (mm) beyond which pixels have no data."""
        return _VIGNETTING_MM / self.shrink

    @property
    def radial_distortion(self) -> tuple[float, ...]:
        """Radial distortion coefficients (per mm^2, mm^4) rescaled to this field size."""
        return tuple(c * self.shrink ** (2 * (k + 1)) for k, c in enumerate(HSC_RADIAL_DISTORTION))


SIZES = {"full": CcdSize(2048, 4176, 1), "small": CcdSize(256, 512, 8)}


@dataclass(frozen=True)
class Ccd:
    """One CCD: number, centre on the focal plane (mm), rotation and pixel size."""

    number: int
    center_mm: tuple[float, float]
    rotation_deg: float
    width: int
    height: int

    @property
    def center_pixel(self) -> tuple[float, float]:
        """0-based pixel position of the CCD centre (afw's box centre)."""
        return (self.width - 1) / 2.0, (self.height - 1) / 2.0

    @property
    def origin_mm(self) -> tuple[float, float]:
        """Focal-plane position (mm) of pixel (0, 0)."""
        rot = _rotation(self.rotation_deg) * PIXEL_MM
        fx, fy = np.asarray(self.center_mm) - rot @ np.asarray(self.center_pixel)
        return float(fx), float(fy)

    def to_focal(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Focal-plane mm of 0-based pixels (x, y) (arrays broadcast together)."""
        rot = _rotation(self.rotation_deg) * PIXEL_MM
        x0, y0 = self.origin_mm
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        return x0 + rot[0, 0] * x + rot[0, 1] * y, y0 + rot[1, 0] * x + rot[1, 1] * y


def _rotation(deg: float) -> np.ndarray:
    t = np.radians(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


@lru_cache(maxsize=4)
def camera(size: str = "small") -> tuple[Ccd, ...]:
    """All 104 science CCDs (the broken one included), indexed by CCD number.

    >>> [c.number for c in camera("full")[:3]], len(camera("full"))
    ([0, 1, 2], 104)
    """
    dims = SIZES[size]
    px, py = (p / dims.shrink for p in _PITCH_MM)
    ccds = []
    for row, count in enumerate(_ROW_COUNTS):
        cy = (row - (len(_ROW_COUNTS) - 1) / 2.0) * py
        rotation = 180.0 if cy < 0 else 0.0
        for col in range(count):
            cx = (col - (count - 1) / 2.0) * px
            ccds.append(Ccd(len(ccds), (cx, cy), rotation, dims.width, dims.height))
    return tuple(ccds)


def science_ccds() -> list[int]:
    """Numbers of the CCDs that have data: 0..103 without the broken ones."""
    return [n for n in range(N_SCIENCE_CCDS) if n not in BROKEN_CCDS]


def true_skywcs(
    ccd: Ccd, boresight: tuple[float, float], size: str, position_angle_deg: float = 0.0
) -> SkyWcs:
    """The true (jointcal-like) WCS of ``ccd``: PIXELS -> FOCAL -> IWC -> SKY."""
    with AST_LOCK:
        return make_skywcs(
            boresight,
            ccd_offset_mm=ccd.origin_mm,
            ccd_rotation_deg=ccd.rotation_deg,
            plate_scale_arcsec=PLATE_SCALE_ARCSEC,
            pixel_size_mm=PIXEL_MM,
            position_angle_deg=position_angle_deg,
            radial_distortion=SIZES[size].radial_distortion,
        )


def gnomonic(ra, dec, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Standard coordinates (xi, eta) in degrees of (ra, dec) about (ra0, dec0), degrees.

    >>> [round(float(v), 12) for v in gnomonic(10.0, 20.0, 10.0, 20.0)]
    [0.0, 0.0]
    """
    a, d = np.radians(ra) - np.radians(ra0), np.radians(dec)
    d0 = np.radians(dec0)
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a)
    xi = np.cos(d) * np.sin(a) / cosc
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a)) / cosc
    return np.degrees(xi), np.degrees(eta)


def tan_skywcs(crval: tuple[float, float], crpix0: tuple[float, float], cd: np.ndarray) -> SkyWcs:
    """A FITS-like TAN SkyWcs, PIXELS -> IWC -> SKY, as afw builds from a calexp header.

    Parameters
    ----------
    crval : (float, float)
        Tangent point (ra, dec), degrees.
    crpix0 : (float, float)
        0-based pixel of the tangent point (FITS CRPIX - 1).
    cd : (2, 2) array
        CD matrix, degrees per pixel.
    """
    with AST_LOCK:
        return _tan_skywcs(crval, crpix0, cd)


def _tan_skywcs(crval: tuple[float, float], crpix0: tuple[float, float], cd: np.ndarray):
    import starlink.Ast as Ast

    shift = Ast.ShiftMap([-float(crpix0[0]), -float(crpix0[1])])
    to_iwc = Ast.CmpMap(shift, Ast.MatrixMap(np.asarray(cd, dtype=float)), True)
    chan = Ast.FitsChan(None, None, "Encoding=FITS-WCS")
    cards = {"CTYPE1": "'RA---TAN'", "CTYPE2": "'DEC--TAN'", "RADESYS": "'ICRS'"}
    cards |= {"CRPIX1": 0.0, "CRPIX2": 0.0, "CRVAL1": float(crval[0]), "CRVAL2": float(crval[1])}
    cards |= {"CD1_1": 1.0, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 1.0}
    cards |= {"CUNIT1": "'deg'", "CUNIT2": "'deg'"}
    for key, value in cards.items():
        chan.putfits(f"{key:<8}= {value!s:>20}", False)
    chan.Clean = True
    fits_wcs = chan.read()  # GRID (= IWC in degrees here) -> SKY
    frameset = Ast.FrameSet(Ast.Frame(2, "Domain=PIXELS"))
    frameset.addframe(Ast.CURRENT, to_iwc.simplify(), Ast.Frame(2, "Domain=IWC"))
    sky_map = fits_wcs.getmapping(Ast.BASE, Ast.CURRENT).simplify()
    frameset.addframe(Ast.CURRENT, sky_map, fits_wcs.getframe(Ast.CURRENT))
    return SkyWcs.from_frameset(frameset)


def tan_approximation(
    wcs: SkyWcs, ccd: Ccd, shift_arcsec: float, shift_angle_deg: float
) -> tuple[SkyWcs, dict[str, object]]:
    """A TAN-only WCS tangent at the CCD centre, with the true local scale, shifted on sky.

    This is what single-frame processing gives before the mosaic fit: right scale and
    orientation at the centre, no distortion, an offset of ``shift_arcsec``.

    Returns
    -------
    (SkyWcs, dict)
        The WCS and its FITS cards (CRPIX 1-based, CRVAL, CD, CTYPE, ...).
    """
    xc, yc = ccd.center_pixel
    ra, dec = wcs.pixel_to_sky(np.array([xc, xc + 1, xc - 1, xc, xc]),
                               np.array([yc, yc, yc, yc + 1, yc - 1]))  # fmt: skip
    xi, eta = gnomonic(ra, dec, ra[0], dec[0])
    cd = np.array([[xi[1] - xi[2], xi[3] - xi[4]], [eta[1] - eta[2], eta[3] - eta[4]]]) / 2.0
    t = np.radians(shift_angle_deg)
    ddec = shift_arcsec / 3600.0 * np.cos(t)
    dra = shift_arcsec / 3600.0 * np.sin(t) / np.cos(np.radians(dec[0]))
    crval = (float((ra[0] + dra) % 360.0), float(dec[0] + ddec))
    cards: dict[str, object] = {"WCSAXES": 2, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN"}
    cards |= {"CRPIX1": xc + 1.0, "CRPIX2": yc + 1.0, "CRVAL1": crval[0], "CRVAL2": crval[1]}
    cards |= {"CD1_1": cd[0, 0], "CD1_2": cd[0, 1], "CD2_1": cd[1, 0], "CD2_2": cd[1, 1]}
    cards |= {"CUNIT1": "deg", "CUNIT2": "deg", "RADESYS": "ICRS"}
    return tan_skywcs(crval, (xc, yc), cd), {k: _plain(v) for k, v in cards.items()}


def _plain(value: object) -> object:
    return float(value) if isinstance(value, np.floating) else value
