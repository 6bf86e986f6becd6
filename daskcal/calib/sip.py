"""TAN-SIP approximations of a SkyWcs (the CALEXP header WCS) and FITS-WCS headers.

hscPipe 8's calibrateExposure writes a TAN-SIP approximation of the jointcal SkyWcs into the
CALEXP primary header (afw ``calculateSipWcsHeader(wcs, sipOrder=9, bbox, sipSpacing=20)``).
afw anchors that fit at the SkyWcs's own sky origin (CRVAL) and pixel origin (CRPIX), keeps
the CD matrix there and fits every SIP term (orders 0 and 1 too) on a grid of
``bbox / spacing`` points that stops one step short of the far edges. For jointcal WCSs the
sky origin lies a degree or more off the CCD and afw finds its pixel through the FrameSet's
fitted inverse, valid near the CCD only, so its anchor can be wildly off.

:func:`fit_tan_sip` instead anchors at the bbox centre: CRVAL = sky of the centre, CRPIX =
centre, IWC from the gnomonic projection about CRVAL. The pixel -> IWC map is
then fitted by linear least squares as a polynomial with no constant term, on scaled
coordinates over a grid that includes the box edges; its linear part is the CD matrix and
the rest, through CD^-1, the SIP A/B terms (orders 2..order). The inverse AP/BP (orders
0..order) is fitted the same way. astropy's ``fit_wcs_from_points`` (a non-linear fit of
unscaled coefficients) took 15 s per HSC CCD and ended 0.7" off at order 9, so it is not used.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import scipy.linalg
from astropy.io import fits
from astropy.wcs import WCS, Sip

from .ast import ast
from .skywcs import SkyWcs, SkyWcsError, angular_separation_mas

__all__ = [
    "SipFitError",
    "angular_separation_mas",
    "fit_tan_sip",
    "fit_tan_sip_checked",
    "gnomonic_iwc",
    "sip_header",
    "sip_max_error",
    "skywcs_from_fits_header",
]

_MAX_CHECK_STEP = 32.0  # pixels: the error is measured this densely whatever the spacing
_WCS_KEY = re.compile(
    r"^(WCSAXES|CTYPE\d|CRPIX\d|CRVAL\d|CD\d_\d|PC\d_\d|CDELT\d|CUNIT\d|CROTA\d|RADE(C)?SYS|"
    r"EQUINOX|EPOCH|LONPOLE|LATPOLE|PV\d_\d+|(A|B|AP|BP)_(ORDER|\d+_\d+)|MJD-OBS|DATE-OBS)$"
)


class SipFitError(ValueError):
    """A TAN-SIP approximation further from its SkyWcs than allowed."""


def _grid(bbox: Any, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Points every ~``spacing`` px over the pixel-edge box, both edges included."""
    x0, y0, x1, y1 = (float(v) for v in bbox)
    axes = [
        np.linspace(lo - 0.5, hi + 0.5, int(np.ceil((hi - lo + 1) / spacing)) + 1)
        for lo, hi in ((x0, x1), (y0, y1))
    ]
    x, y = np.meshgrid(*axes)
    return x.ravel(), y.ravel()


def _terms(order: int, min_degree: int) -> list[tuple[int, int]]:
    return [(p, q) for p in range(order + 1) for q in range(order + 1 - p) if p + q >= min_degree]


def _poly_fit(u: np.ndarray, v: np.ndarray, targets: np.ndarray, order: int, min_degree: int):
    """Least-squares polynomial coefficients ``{(p, q): [c per target row]}`` of u, v."""
    hu, hv = max(np.abs(u).max(), 1.0), max(np.abs(v).max(), 1.0)
    terms = _terms(order, min_degree)
    pu, pv = np.vander(u / hu, order + 1, increasing=True), np.vander(v / hv, order + 1, True)
    design = np.stack([pu[:, p] * pv[:, q] for p, q in terms], axis=1)
    # QR with column pivoting: as accurate here as the SVD solver, several times faster
    coeffs = scipy.linalg.lstsq(design, targets.T, lapack_driver="gelsy", check_finite=False)[0]
    return {pq: coeffs[k] / (hu ** pq[0] * hv ** pq[1]) for k, pq in enumerate(terms)}


def _matrices(coeffs: dict, order: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.zeros((order + 1, order + 1)), np.zeros((order + 1, order + 1))
    for (p, q), (ca, cb) in coeffs.items():
        a[p, q], b[p, q] = ca, cb
    return a, b


def gnomonic_iwc(ra: Any, dec: Any, crval: tuple[float, float]) -> np.ndarray:
    """FITS intermediate world coordinates (degrees; x east, y north) of a TAN projection.

    The gnomonic projection about ``crval`` (degrees) with the native pole at LONPOLE =
    180 deg, as FITS-WCS and AST define it; returns shape (2, ...).
    """
    a0, d0 = np.radians(crval[0]), np.radians(crval[1])
    da, d = np.radians(ra) - a0, np.radians(dec)
    cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(da)
    xi = np.cos(d) * np.sin(da) / cos_c
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(da)) / cos_c
    return np.degrees(np.stack([xi, eta]))


def fit_tan_sip(skywcs: SkyWcs, bbox: Any, order: int = 9, spacing: float = 20.0) -> WCS:
    """Fit a TAN-SIP approximation of ``skywcs`` over a pixel box.

    Parameters
    ----------
    skywcs : SkyWcs
        The exact WCS.
    bbox : (x0, y0, x1, y1)
        Inclusive integer PARENT pixel box (afw ``Box2I`` min/max), e.g. (0, 0, 2047, 4175)
        for an HSC CCD; the fit covers its pixel edges, x0 - 0.5 .. x1 + 0.5.
    order : int
        SIP order (maximum p + q), forward and inverse.
    spacing : float
        Grid spacing in pixels.

    Returns
    -------
    astropy.wcs.WCS
        ``RA---TAN-SIP`` WCS with A/B and AP/BP, in FITS pixels of PARENT coordinates:
        pixel_to_world(x, y) (0-based) matches ``skywcs.pixel_to_sky(x, y)``.
    """
    x, y = _grid(bbox, spacing)
    centre = ((bbox[0] + bbox[2]) / 2.0, (bbox[1] + bbox[3]) / 2.0)
    crval = tuple(float(v) for v in skywcs.pixel_to_sky(*centre))
    ra, dec = skywcs.pixel_to_sky(x, y)
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        raise SkyWcsError(f"SkyWcs is undefined (NaN) somewhere in the box {tuple(bbox)}")
    iwc = gnomonic_iwc(ra, dec, crval)
    du, dv = x - centre[0], y - centre[1]
    fwd = _poly_fit(du, dv, iwc, order, 1)
    cd = np.column_stack([fwd[(1, 0)], fwd[(0, 1)]])
    cd_inv = np.linalg.inv(cd)
    sip = {pq: cd_inv @ c for pq, c in fwd.items() if sum(pq) >= 2}
    scaled = cd_inv @ iwc
    inv = _poly_fit(scaled[0], scaled[1], np.stack([du, dv]) - scaled, order, 0)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    wcs.wcs.crval = crval
    wcs.wcs.crpix = (centre[0] + 1.0, centre[1] + 1.0)
    wcs.wcs.cd = cd
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.radesys = "ICRS"
    wcs.sip = Sip(*_matrices(sip, order), *_matrices(inv, order), wcs.wcs.crpix)
    wcs.wcs.set()
    return wcs


def sip_max_error(skywcs: SkyWcs, wcs: WCS, bbox: Any, step: float = 8.0) -> float:
    """Largest separation (milliarcseconds) between ``skywcs`` and ``wcs`` over the box.

    Both are evaluated on a grid every ~``step`` pixels over the pixel edges of ``bbox``
    (edges and corners included); ``wcs`` in FITS convention (0-based ``x`` is FITS x + 1).
    """
    x, y = _grid(bbox, step)
    ra, dec = skywcs.pixel_to_sky(x, y)
    ra2, dec2 = wcs.all_pix2world(x, y, 0)
    return float(np.max(angular_separation_mas(ra, dec, ra2, dec2)))


def fit_tan_sip_checked(
    skywcs: SkyWcs,
    bbox: Any,
    order: int = 9,
    spacing: float = 20.0,
    max_error_mas: float = 0.1,
) -> tuple[WCS, float]:
    """:func:`fit_tan_sip`, refused when it is further than ``max_error_mas`` from ``skywcs``.

    The error is measured by :func:`sip_max_error` on a grid of half the fit's spacing
    (between 1 and 32 pixels), edges and corners included: most of its points lie between
    the fit's grid points, where a polynomial fitted on too coarse a grid strays.

    Parameters
    ----------
    skywcs, bbox, order, spacing
        As for :func:`fit_tan_sip`.
    max_error_mas : float
        Largest separation allowed, milliarcseconds (the ``sipMaxError`` config field).

    Returns
    -------
    (astropy.wcs.WCS, float)
        The TAN-SIP WCS and its maximum error in milliarcseconds.

    Raises
    ------
    SipFitError
        The error reached exceeds ``max_error_mas`` (or is NaN); the message gives both.
    """
    wcs = fit_tan_sip(skywcs, bbox, order=order, spacing=spacing)
    step = min(max(spacing / 2.0, 1.0), _MAX_CHECK_STEP)
    error = sip_max_error(skywcs, wcs, bbox, step=step)
    if not error <= max_error_mas:
        raise SipFitError(
            f"TAN-SIP approximation (order {order}, spacing {spacing:g} px) is off by up to "
            f"{error:.3g} mas over the box {tuple(int(v) for v in bbox)}, more than "
            f"sipMaxError = {max_error_mas:g} mas"
        )
    return wcs, error


def sip_header(wcs: WCS, xy0: tuple[int, int] = (0, 0)) -> fits.Header:
    """The FITS cards of a TAN-SIP WCS, in afw's ``makeTanSipMetadata`` order.

    RADESYS, CTYPEi, CRPIXi, CRVALi, CUNITi, the non-zero CDi_j, then A_ORDER and the
    non-zero A_p_q, likewise B, AP and BP. With ``xy0 = (0, 0)`` (the default, and what
    hscPipe's ``calculateSipWcsHeader`` writes into the CALEXP primary header) CRPIX refers to
    PARENT pixels (FITS pixel = PARENT + 1). Give the image's ``xy0`` to describe the pixel
    array instead (CRPIX - xy0), as afw does for the WCS of each image HDU (where ``LTV1/2`` =
    -xy0).
    """
    if wcs.sip is None:
        raise ValueError("sip_header needs a TAN-SIP WCS (wcs.sip is None)")
    cards = [("RADESYS", wcs.wcs.radesys or "ICRS")]
    cards += [("CTYPE1", "RA---TAN-SIP"), ("CTYPE2", "DEC--TAN-SIP")]
    cards += [(f"CRPIX{i + 1}", float(wcs.wcs.crpix[i] - xy0[i])) for i in range(2)]
    cards += [(f"CRVAL{i + 1}", float(wcs.wcs.crval[i])) for i in range(2)]
    cards += [("CUNIT1", "deg"), ("CUNIT2", "deg")]
    cd = wcs.wcs.cd if wcs.wcs.has_cd() else wcs.pixel_scale_matrix
    cards += [
        (f"CD{i + 1}_{j + 1}", float(cd[i, j])) for i in range(2) for j in range(2) if cd[i, j]
    ]
    sip = wcs.sip
    for name, matrix in (("A", sip.a), ("B", sip.b), ("AP", sip.ap), ("BP", sip.bp)):
        if matrix is None:
            continue
        cards.append((f"{name}_ORDER", matrix.shape[0] - 1))
        cards += [
            (f"{name}_{p}_{q}", float(matrix[p, q]))
            for p, q in zip(*np.nonzero(matrix), strict=True)
        ]
    return fits.Header(cards)  # built at once: header[key] = value is quadratic in length


def skywcs_from_fits_header(header: fits.Header, xy0: tuple[int, int] = (0, 0)) -> SkyWcs:
    """A SkyWcs (``PIXELS -> IWC -> SKY``) from FITS-WCS cards, read by AST as afw does.

    Pixels are 0-based PARENT coordinates: FITS pixel p is PARENT p - 1 + xy0. When CD cards
    are present, CDELT/PC/CROTA cards are dropped before AST reads the header, so CD wins for
    headers that carry both, like early Suprime-Cam files (afw's ``testCD_PC`` case). AST
    understands TAN-SIP and TPV headers.
    """
    Ast = ast()
    has_cd = any(re.match(r"CD\d_\d$", key) for key in header)
    chan = Ast.FitsChan(None, None, "Encoding=FITS-WCS, Iwc=1")
    for card in header.cards:
        if not _WCS_KEY.match(card.keyword):
            continue
        if has_cd and re.match(r"(CDELT|PC\d_|CROTA)", card.keyword):
            continue
        chan.putfits(card.image, False)
    chan.Clean = True
    fits_wcs = chan.read()
    if fits_wcs is None or not isinstance(fits_wcs.getframe(Ast.CURRENT), Ast.SkyFrame):
        raise SkyWcsError("FITS header holds no celestial WCS that AST can read")
    domains = [fits_wcs.getframe(k).Domain for k in range(1, fits_wcs.Nframe + 1)]
    if "IWC" not in domains:
        raise SkyWcsError("AST found no IWC frame in the FITS header")
    iwc = domains.index("IWC") + 1
    to_grid = Ast.ShiftMap([1.0 - xy0[0], 1.0 - xy0[1]])  # PIXELS -> GRID (FITS, 1-based)
    frameset = Ast.FrameSet(Ast.Frame(2, "Domain=PIXELS"))
    pixels_to_iwc = Ast.CmpMap(to_grid, fits_wcs.getmapping(Ast.BASE, iwc), True)
    frameset.addframe(Ast.BASE, pixels_to_iwc.simplify(), fits_wcs.getframe(iwc))
    iwc_to_sky = fits_wcs.getmapping(iwc, Ast.CURRENT)
    frameset.addframe(Ast.CURRENT, iwc_to_sky, fits_wcs.getframe(Ast.CURRENT))
    return SkyWcs.from_frameset(frameset)
