"""afw SkyWcs: pixel <-> sky through the persisted AST FrameSet, evaluated with starlink-pyast.

afw persists a SkyWcs as an archive object ``SkyWcs`` with one bytes column ``wcs`` holding
``1 SkyWcs <hasFitsApprox> `` followed by an AST FrameSet dump (written with ``Comment=0``).
Its base frame (domain ``PIXELS``) is in 0-based PARENT pixels, its current frame is an ICRS
``SkyFrame`` (radians); jointcal's has ``PIXELS -> FOCAL -> IWC -> SKY``, a FITS-derived one
``PIXELS -> IWC -> SKY``. ``IWC`` is in degrees.

A :class:`SkyWcs` keeps the dump text and builds the pyast FrameSet lazily, so it pickles as
its text (Dask ships it to workers cheaply). AST text is read and written under
:data:`~daskcal.calib.ast.AST_LOCK` (AST is not thread-safe there); evaluating points is.
:func:`daskcal.demo.wcs.make_skywcs` builds jointcal-like distorted WCSs for synthetic
repositories.

Why one module of more than ~300 lines: the SkyWcs object, its archive persistence and its
validation are afw's one class; the AST details stay private here.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from ..io.afwtable import Field, bytes_column
from ..io.archive import (
    SKYWCS_ID_KEYS,
    Archive,
    ArchiveError,
    ArchiveWriter,
    NewCatalog,
    read_archive,
)
from ..io.fitsfile import open_fits
from .ast import ast, dump_ast, read_ast

__all__ = [
    "PIXEL_SCALE_RANGE",
    "InvalidSkyWcs",
    "SkyWcs",
    "SkyWcsError",
    "angular_separation_mas",
    "read_skywcs",
    "skywcs_from_archive",
    "validate_skywcs",
]

_VERSION = 1
_CLASS = "SkyWcs"
_MODULE = "lsst.afw.geom"  # as in the real jointcal_wcs and calexp archives
_FIELDS = [Field("wcs", "QB", "wcs string representation", ccls="Array")]
_HEADER = re.compile(r"\s*(\S+)\s+(\S+)\s+(\S+)\s")
_TWO_PI = 2.0 * np.pi
"""Radial distortion (per mm^2, mm^4) of HSC's focal plane, read off the real jointcal WCSs:
sky radius / (centre scale x focal radius) is 0.995 at 100 mm, 0.981 at 200 mm."""


PIXEL_SCALE_RANGE = (0.01, 10.0)
"""Plausible pixel scales in arcsec per pixel (HSC: 0.168) for :func:`validate_skywcs`."""


class SkyWcsError(ValueError):
    """A file or text holds no usable SkyWcs; the message names the file."""


class InvalidSkyWcs(SkyWcsError):
    """A SkyWcs that reads but cannot be right over a CCD (:func:`validate_skywcs`)."""


def _ast():
    return ast()


def ast_dump(obj: Any) -> str:
    """AST text of a pyast object exactly as afw writes it (``Comment=0``, one line each)."""
    return dump_ast(obj)


class SkyWcs:
    """A pixel -> ICRS mapping: afw's SkyWcs, backed by an AST FrameSet.

    Parameters
    ----------
    ast_text : str
        The AST FrameSet dump (the text after afw's ``1 SkyWcs 0 `` header).
    """

    def __init__(self, ast_text: str):
        self.ast_text = ast_text
        self._frameset: Any = None

    @classmethod
    def from_bytes(cls, data: bytes | str, where: str = "<memory>") -> SkyWcs:
        """Parse afw's persisted form ``1 SkyWcs <flag> <AST dump>``; errors name ``where``."""
        text = data.decode("ascii", errors="replace") if isinstance(data, bytes) else data
        match = _HEADER.match(text)
        if not match:
            raise SkyWcsError(f"{where}: SkyWcs text has no '1 SkyWcs <flag>' header")
        version, name, flag = match.groups()
        if version != str(_VERSION) or name != _CLASS or flag not in ("0", "1"):
            raise SkyWcsError(f"{where}: unsupported SkyWcs header {match.group(0).strip()!r}")
        wcs = cls(text[match.end() :])
        try:
            wcs.frameset  # noqa: B018 - validate now, so errors name the file
        except Exception as err:
            raise SkyWcsError(f"{where}: bad AST FrameSet in SkyWcs: {err}") from err
        return wcs

    @classmethod
    def from_frameset(cls, frameset: Any) -> SkyWcs:
        """Wrap a pyast FrameSet (base: pixels, current: SkyFrame)."""
        wcs = cls(ast_dump(frameset))
        wcs.frameset  # noqa: B018 - validate
        return wcs

    def to_text(self) -> str:
        """afw's persisted text: ``1 SkyWcs 0 `` + the AST dump (no FITS approximation)."""
        return f"{_VERSION} {_CLASS} 0 {self.ast_text}"

    def to_bytes(self) -> bytes:
        """:meth:`to_text` as ASCII bytes (the archive's ``wcs`` cell)."""
        return self.to_text().encode("ascii")

    def add_to_archive(self, writer: ArchiveWriter) -> int:
        """Append as an afw ``SkyWcs`` archive object; returns its id."""
        columns = {"wcs": bytes_column([self.to_bytes()])}
        return writer.add(_CLASS, _MODULE, [NewCatalog(_FIELDS, columns)])

    @property
    def frameset(self) -> Any:
        """The pyast FrameSet, read from the text on first use."""
        if self._frameset is None:
            Ast = _ast()
            obj = read_ast(self.ast_text)
            if not isinstance(obj, Ast.FrameSet):
                raise SkyWcsError(f"AST text holds a {type(obj).__name__}, not a FrameSet")
            if obj.Nin != 2 or not isinstance(obj.getframe(Ast.CURRENT), Ast.SkyFrame):
                raise SkyWcsError("AST FrameSet must map 2-d pixels to a SkyFrame")
            self._frameset = obj
        return self._frameset

    def __reduce__(self) -> tuple:
        return (SkyWcs, (self.ast_text,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SkyWcs) and other.ast_text == self.ast_text

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SkyWcs(domains={self.domains})"

    @property
    def domains(self) -> tuple[str, ...]:
        """Domains of the frames, in FrameSet order (e.g. PIXELS, FOCAL, IWC, SKY)."""
        fs = self.frameset
        return tuple(fs.getframe(k).Domain for k in range(1, fs.Nframe + 1))

    def mapping_to(self, domain: str) -> Any:
        """The pyast Mapping from the pixel (base) frame to the frame of ``domain``."""
        index = self.domains.index(_require(self, domain)) + 1
        return self.frameset.getmapping(_ast().BASE, index)

    def pixel_to_sky_rad(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) in radians, ra in [0, 2 pi), of 0-based pixels; NaN in, NaN out."""
        out = _tran(self.frameset, x, y, forward=True)
        return np.mod(out[0], _TWO_PI)[()], out[1][()]

    def pixel_to_sky(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) in degrees, ra in [0, 360), of 0-based pixels; NaN in, NaN out."""
        ra, dec = self.pixel_to_sky_rad(x, y)
        return np.mod(np.degrees(ra), 360.0)[()], np.degrees(dec)[()]

    def sky_to_pixel(self, ra: Any, dec: Any, refine: bool = True) -> tuple[np.ndarray, ...]:
        """0-based pixels (x, y) of ICRS (ra, dec) in degrees.

        The FrameSet's own inverse is used first (what afw's ``skyToPixel`` returns; for
        jointcal it is a fitted polynomial good to ~1e-5 px). With ``refine`` two Newton
        steps on the exact forward mapping bring the result to ~1e-9 px.
        """
        ra_r, dec_r = np.broadcast_arrays(np.radians(ra), np.radians(dec))
        xy = _tran(self.frameset, ra_r, dec_r, forward=False)
        for _ in range(2 if refine else 0):
            xy = _newton_step(self.frameset, xy, ra_r.ravel(), dec_r.ravel())
        return xy[0].reshape(ra_r.shape)[()], xy[1].reshape(ra_r.shape)[()]

    def sky_origin(self) -> tuple[float, float]:
        """(ra, dec) in degrees of the IWC origin (afw's sky origin, FITS CRVAL)."""
        Ast = _ast()
        iwc = self.domains.index(_require(self, "IWC")) + 1
        out = self.frameset.getmapping(iwc, Ast.CURRENT).tran(np.zeros((2, 1)))
        return float(np.degrees(out[0, 0]) % 360.0), float(np.degrees(out[1, 0]))

    def pixel_origin(self) -> tuple[float, float]:
        """0-based pixel where IWC = 0 (afw's pixel origin; FITS CRPIX - 1).

        Solved by Newton iterations on the forward pixel -> IWC mapping: the FrameSet's own
        inverse (what afw uses) can be far off there, e.g. jointcal's fitted inverse
        polynomials evaluated tens of thousands of pixels off the CCD.
        """
        mapping = self.mapping_to("IWC")
        start = _tran(mapping, 0.0, 0.0, forward=False).ravel()
        xy = start if np.all(np.abs(start) < 1e6) else np.zeros(2)
        for _ in range(50):
            probe = xy[:, None] + [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
            iwc = _tran(mapping, probe[0], probe[1], forward=True)
            jac = iwc[:, 1:] - iwc[:, :1]
            step = np.linalg.solve(jac, iwc[:, 0])
            xy = xy - step
            if np.hypot(*step) < 1e-10:
                break
        return float(xy[0]), float(xy[1])

    def cd_matrix(self, x: float | None = None, y: float | None = None) -> np.ndarray:
        """Jacobian d(IWC)/d(pixel) in degrees per pixel at (x, y), the pixel origin by default."""
        if x is None or y is None:
            x, y = self.pixel_origin()
        mapping = self.mapping_to("IWC")
        at = [float(x), float(y)]
        return np.array([[mapping.rate(at, i, j) for j in (1, 2)] for i in (1, 2)])


def _require(wcs: SkyWcs, domain: str) -> str:
    if domain not in wcs.domains:
        raise SkyWcsError(f"SkyWcs has no {domain} frame (frames: {wcs.domains})")
    return domain


def _tran(mapping: Any, a: Any, b: Any, forward: bool) -> np.ndarray:
    """Apply a 2 -> 2 pyast mapping to broadcast arrays; AST's bad value becomes NaN."""
    Ast = _ast()
    a, b = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    if a.size == 0:  # AST refuses empty point sets; a CCD may have no sources
        return np.empty((2, *a.shape))
    points = np.vstack([a.ravel(), b.ravel()])
    points[~np.isfinite(points)] = Ast.BAD
    out = np.array(mapping.tran(points, forward), dtype=float).reshape(2, -1)
    out[out == Ast.BAD] = np.nan
    return out.reshape((2, *a.shape))


def _newton_step(mapping: Any, xy: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """One Newton step of pixel -> sky = (ra, dec) from ``xy``, with a 1-pixel Jacobian."""
    xy = xy.reshape(2, -1)
    probe = np.concatenate([xy, xy + [[1.0], [0.0]], xy + [[0.0], [1.0]]], axis=1)
    sky = _tran(mapping, probe[0], probe[1], forward=True).reshape(2, 3, -1)
    east = (np.mod(sky[0] - ra + np.pi, _TWO_PI) - np.pi) * np.cos(dec)
    r, jx, jy = np.stack([east, sky[1] - dec], axis=1)  # residual at xy, x + 1, y + 1
    jx, jy = jx - r, jy - r
    with np.errstate(invalid="ignore", divide="ignore"):
        det = jx[0] * jy[1] - jy[0] * jx[1]
        step = np.stack([r[0] * jy[1] - jy[0] * r[1], jx[0] * r[1] - r[0] * jx[1]]) / det
    return np.where(np.isfinite(step), xy - step, xy)


def skywcs_from_archive(archive: Archive, obj_id: int) -> SkyWcs:
    """Read the SkyWcs with archive id ``obj_id``."""
    obj = archive[obj_id]
    where = f"{archive.filename}: archive object {obj_id}"
    if obj.name != _CLASS:
        raise SkyWcsError(f"{where} is a {obj.name}, not a SkyWcs")
    cat = obj.catalogs[0]
    if "wcs" not in cat or len(cat) != 1:
        raise SkyWcsError(f"{where}: SkyWcs catalog has no single 'wcs' cell")
    return SkyWcs.from_bytes(cat.bytes("wcs"), where)


def read_skywcs(path: str | os.PathLike) -> SkyWcs:
    """The SkyWcs of a file: a jointcal_wcs file (its only SkyWcs) or an exposure.

    An exposure names its SkyWcs in the primary header (``SKYWCS_ID`` or
    ``ARCHIVE_ID_SKYWCS``). Raises :class:`SkyWcsError` naming the file.
    """
    name = str(path)
    with open_fits(path) as hdul:
        try:
            archive = read_archive(hdul, name)
        except ArchiveError as err:
            raise SkyWcsError(str(err)) from err
        header = hdul[0].header
        ids = [int(header[k]) for k in SKYWCS_ID_KEYS if k in header]
        if ids:
            return skywcs_from_archive(archive, ids[0])
        found = archive.find(_CLASS)
        if len(found) != 1:
            raise SkyWcsError(f"{name}: {len(found)} SkyWcs objects and no SKYWCS_ID card")
        return skywcs_from_archive(archive, found[0])


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def validate_skywcs(
    wcs: SkyWcs,
    bbox: Any,
    *,
    scale_range: tuple[float, float] = PIXEL_SCALE_RANGE,
    inverse_tolerance: float = 0.1,
) -> None:
    """Refuse a SkyWcs that cannot be right over a CCD.

    At the corners, the edge midpoints and the centre of ``bbox`` (on its pixel edges) the
    WCS must give finite sky positions; the pixel scale between neighbouring points of that
    3 x 3 grid must lie in ``scale_range``; and when the FrameSet has an inverse, sky ->
    pixel (the stored inverse, as afw's ``skyToPixel``, no refinement) of those positions
    must return the pixels within ``inverse_tolerance``.

    Parameters
    ----------
    wcs : SkyWcs
        As read (:func:`read_skywcs`); reading does not validate the values.
    bbox : (x0, y0, x1, y1)
        Inclusive PARENT pixel box of the CCD.
    scale_range : (float, float)
        Smallest and largest plausible pixel scale, arcsec per pixel.
    inverse_tolerance : float
        Pixels. jointcal's fitted inverses are good to ~2e-5 px on an HSC CCD, those of
        meas_mosaic-era jointcal_wcs files and calexps to ~0.025 px at the corners.

    Raises
    ------
    InvalidSkyWcs
        With a one-line message saying what is wrong and where.
    """

    x0, y0, x1, y1 = (float(v) for v in bbox)
    xx, yy = np.meshgrid([x0 - 0.5, (x0 + x1) / 2, x1 + 0.5], [y0 - 0.5, (y0 + y1) / 2, y1 + 0.5])
    x, y = xx.ravel(), yy.ravel()
    try:
        ra, dec = wcs.pixel_to_sky(x, y)
    except Exception as err:
        raise InvalidSkyWcs(f"SkyWcs cannot be evaluated: {_one_line(err)}") from err
    bad = np.flatnonzero(~(np.isfinite(ra) & np.isfinite(dec)))
    if bad.size:
        k = bad[0]
        where = f"({x[k]:.1f}, {y[k]:.1f})"
        raise InvalidSkyWcs(f"SkyWcs gives no finite sky position at pixel {where}")
    # the 12 pairs of neighbours of the 3 x 3 grid: along x, then along y
    grid = np.arange(9).reshape(3, 3)
    a = np.concatenate([grid[:, :-1].ravel(), grid[:-1, :].ravel()])
    b = np.concatenate([grid[:, 1:].ravel(), grid[1:, :].ravel()])
    sep = angular_separation_mas(ra[a], dec[a], ra[b], dec[b]) / 1e3
    scale = sep / np.hypot(x[b] - x[a], y[b] - y[a])
    lo, hi = scale_range
    outside = np.flatnonzero(~((scale >= lo) & (scale <= hi)))
    if outside.size:
        k = outside[0]
        raise InvalidSkyWcs(
            f"SkyWcs pixel scale is {scale[k]:.3g} arcsec/pixel between pixels "
            f"({x[a[k]]:.1f}, {y[a[k]]:.1f}) and ({x[b[k]]:.1f}, {y[b[k]]:.1f}) "
            f"(must be {lo:g} to {hi:g})"
        )
    if not wcs.frameset.TranInverse:
        return
    try:
        px, py = wcs.sky_to_pixel(ra, dec, refine=False)
    except Exception as err:
        raise InvalidSkyWcs(f"SkyWcs inverse cannot be evaluated: {_one_line(err)}") from err
    off = np.hypot(px - x, py - y)
    wrong = np.flatnonzero(~(off <= inverse_tolerance))
    if wrong.size:
        k = wrong[0]
        raise InvalidSkyWcs(
            f"SkyWcs inverse maps the sky position of pixel ({x[k]:.1f}, {y[k]:.1f}) to "
            f"({px[k]:.6g}, {py[k]:.6g}), {off[k]:.3g} px away (tolerance {inverse_tolerance:g})"
        )


_MAS_PER_RAD = np.degrees(1.0) * 3.6e6


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def angular_separation_mas(ra1: Any, dec1: Any, ra2: Any, dec2: Any) -> np.ndarray:
    """Great-circle separation in milliarcseconds of positions in degrees (vectorised)."""
    u, v = _unit_vectors(ra1, dec1), _unit_vectors(ra2, dec2)
    cross = np.linalg.norm(np.cross(u, v, axis=0), axis=0)
    return np.arctan2(cross, np.sum(u * v, axis=0)) * _MAS_PER_RAD
