"""afw PhotoCalib: the photometric calibration c(x, y) in nJy per count, and conversions.

Conversions follow afw (docs/calibration.md, 'Fluxes and magnitudes'), with c evaluated at
each source position:

- flux = instFlux * c
- fluxErr = |flux| * hypot(instFluxErr / instFlux, sigma_c / c)
- mag = -2.5 log10(flux / F_AB) (NaN for flux < 0, +inf at 0)
- magErr = 2.5 / ln(10) * hypot(instFluxErr / instFlux, sigma_c / c)

``error_rule="hscpipe8"`` (afw <= 28, the default) keeps the sigma_c / c term;
``"afw29"`` drops it. As in hscPipe 8, ``mean`` is whatever the file stores (cbar).

Sources of a PhotoCalib (:func:`read_photocalib`): a standalone PhotoCalib file, an
exposure (component id from the primary header), or a legacy ``FLUXMAG0`` header
(meas_mosaic ``fcr`` files and old calexps): c = F_AB / FLUXMAG0,
sigma_c = F_AB * FLUXMAG0ERR / FLUXMAG0**2. For an ``fcr`` file this is only the constant
part: its spatial ``C_i_j`` polynomial is not applied.

Why one module of more than ~300 lines: afw's PhotoCalib, its archive form and its
conversions (instFlux to nJy and AB magnitudes, with errors) are one object as afw defines
it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ..io.afwtable import Field, FlagField
from ..io.archive import Archive, ArchiveWriter, NewCatalog, find_archive_hdu, read_archive
from ..io.atomic import atomic_write
from ..io.fitsfile import open_fits
from .boundedfield import (
    BoundedField,
    ChebyshevBoundedField,
    InvalidBoundedField,
    UnsupportedCalibration,
    read_bounded_field,
    validate_bounded_field,
)

__all__ = [
    "ERROR_RULES",
    "F_AB_NJY",
    "CalibrationError",
    "InvalidPhotoCalib",
    "PhotoCalib",
    "calibrate_instflux",
    "nanojansky_to_abmag",
    "photocalib_from_archive",
    "photocalib_from_fluxmag0",
    "read_photocalib",
    "validate_photocalib",
    "write_photocalib",
]

F_AB_NJY = 3630780547701.0024
"""AB zero-magnitude flux density in nJy (10**(0.4 * 31.4))."""
ERROR_RULES = ("hscpipe8", "afw29")
_MAG_ERR_SCALE = 2.5 / np.log(10.0)
_ID_KEYS = ("PHOTOCALIB_ID", "ARCHIVE_ID_PHOTOCALIB")
_FIELDS = [
    Field("calibrationMean", "1D", "mean calibration on this PhotoCalib's domain", "count"),
    Field("calibrationErr", "1D", "1-sigma error on calibrationMean", "count"),
    Field("field", "1J", "archive ID of the BoundedField object"),
    Field("version", "1J", "version of this PhotoCalib"),
]
_FLAGS = [FlagField("isConstant", "Is this spatially-constant?")]


class CalibrationError(ValueError):
    """A file holds no usable PhotoCalib; the message names the file."""


class InvalidPhotoCalib(CalibrationError):
    """A PhotoCalib that reads but whose values cannot be right (:func:`validate_photocalib`)."""


@dataclass(eq=False)
class PhotoCalib:
    """A photometric calibration (afw ``PhotoCalib``).

    Attributes
    ----------
    mean : float
        ``calibrationMean`` (cbar), nJy per count.
    err : float
        ``calibrationErr`` (sigma_c), nJy per count.
    is_constant : bool
        If True, c = ``mean`` everywhere and ``field`` is not evaluated.
    field : BoundedField or None
        c(x, y) in PARENT pixels; required when not constant.
    """

    mean: float
    err: float = 0.0
    is_constant: bool = True
    field: BoundedField | None = None

    def __post_init__(self) -> None:
        self.mean, self.err = float(self.mean), float(self.err)
        self.is_constant = bool(self.is_constant)
        if not self.is_constant and self.field is None:
            raise ValueError("a spatially varying PhotoCalib needs a bounded field")

    def evaluate(self, x: Any = None, y: Any = None) -> np.ndarray:
        """c at points (x, y); the constant ``mean`` (broadcast to x's shape) if constant."""
        if self.is_constant:
            shape = np.broadcast_shapes(np.shape(x), np.shape(y)) if x is not None else ()
            return np.full(shape, self.mean)[()]
        if x is None or y is None:
            raise ValueError("a spatially varying PhotoCalib needs positions x, y")
        return self.field.evaluate(x, y)

    def evaluate_grid(self, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
        """c at integer pixels x0 <= x < x1, y0 <= y < y1; shape (y1 - y0, x1 - x0)."""
        if self.is_constant:
            return np.full((y1 - y0, x1 - x0), self.mean)
        return self.field.evaluate_grid(x0, x1, y0, y1)

    def to_constant(self) -> PhotoCalib:
        """The constant PhotoCalib(cbar, sigma_c) attached to calibrated exposures."""
        return PhotoCalib(self.mean, self.err, True, ChebyshevBoundedField.constant(self.mean))

    def instflux_to_nanojansky(
        self,
        flux: Any,
        err: Any = None,
        x: Any = None,
        y: Any = None,
        error_rule: str = "hscpipe8",
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Instrumental flux (counts) to (nJy, nJyErr); nJyErr is None when err is None."""
        njy, njy_err, _, _ = calibrate_instflux(
            flux, err, self.evaluate(x, y), self.err, error_rule
        )
        return njy, njy_err

    def instflux_to_magnitude(
        self,
        flux: Any,
        err: Any = None,
        x: Any = None,
        y: Any = None,
        error_rule: str = "hscpipe8",
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Instrumental flux (counts) to (AB mag, magErr); magErr is None when err is None."""
        _, _, mag, mag_err = calibrate_instflux(
            flux, err, self.evaluate(x, y), self.err, error_rule
        )
        return mag, mag_err

    def add_to_archive(self, writer: ArchiveWriter) -> int:
        """Append as afw's PhotoCalib catalog (plus its field); returns the PhotoCalib id."""
        field_id = np.zeros(1, dtype=np.int32)
        columns = {
            "calibrationMean": np.array([self.mean]),
            "calibrationErr": np.array([self.err]),
            "field": field_id,
            "version": np.array([1], dtype=np.int32),
        }
        flags = {"isConstant": np.array([self.is_constant])}
        obj_id = writer.add("PhotoCalib", "", [NewCatalog(_FIELDS, columns, _FLAGS, flags)])
        field = self.field if self.field is not None else ChebyshevBoundedField.constant(self.mean)
        field_id[0] = field.add_to_archive(writer)  # afw numbers the field after the calib
        return obj_id


def calibrate_instflux(
    flux: Any, err: Any, c: Any, sigma_c: float, error_rule: str = "hscpipe8"
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Instrumental fluxes to (nJy, nJyErr, AB mag, magErr) given c at each source.

    Parameters
    ----------
    flux, err : array-like
        ``instFlux`` and ``instFluxErr`` (counts); ``err`` may be None.
    c : array-like
        The calibration (nJy per count) evaluated at each source.
    sigma_c : float
        ``calibrationErr``; enters as sigma_c / c with ``error_rule="hscpipe8"``.
    error_rule : {"hscpipe8", "afw29"}
        Whether the calibration error is added in quadrature (afw <= 28).

    Returns
    -------
    tuple
        (flux, fluxErr, mag, magErr); the errors are None when ``err`` is None.
    """
    if error_rule not in ERROR_RULES:
        raise ValueError(f"error_rule must be one of {ERROR_RULES}, not {error_rule!r}")
    flux = np.asarray(flux, dtype=float)
    c = np.asarray(c, dtype=float)
    njy = flux * c
    mag = nanojansky_to_abmag(njy)
    if err is None:
        return njy[()], None, mag, None
    with np.errstate(divide="ignore", invalid="ignore"):
        cal = sigma_c / c if error_rule == "hscpipe8" else np.zeros_like(c)
        rel = np.hypot(np.asarray(err, dtype=float) / flux, cal)
        return njy[()], (np.abs(njy) * rel)[()], mag, (_MAG_ERR_SCALE * rel)[()]


def nanojansky_to_abmag(njy: Any) -> np.ndarray:
    """AB magnitude of fluxes in nJy: NaN for negative, +inf for zero, no warnings."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (-2.5 * np.log10(np.asarray(njy, dtype=float) / F_AB_NJY))[()]


def photocalib_from_fluxmag0(fluxmag0: float, fluxmag0err: float = 0.0) -> PhotoCalib:
    """The constant PhotoCalib of a legacy ``FLUXMAG0`` (counts of a 0-mag source)."""
    fluxmag0, fluxmag0err = float(fluxmag0), float(fluxmag0err)
    if not np.isfinite(fluxmag0) or fluxmag0 <= 0:
        raise ValueError(f"FLUXMAG0 must be positive and finite, not {fluxmag0}")
    mean = F_AB_NJY / fluxmag0
    err = F_AB_NJY * fluxmag0err / fluxmag0**2
    return PhotoCalib(mean, err, True, ChebyshevBoundedField.constant(mean))


def photocalib_from_archive(archive: Archive, obj_id: int) -> PhotoCalib:
    """Read the PhotoCalib with archive id ``obj_id`` (and its bounded field)."""
    obj = archive[obj_id]
    if obj.name != "PhotoCalib":
        raise CalibrationError(
            f"{archive.filename}: archive object {obj_id} is a {obj.name}, not a PhotoCalib"
        )
    cat = obj.catalogs[0]
    version = int(cat["version"][0]) if "version" in cat else 1
    if version != 1:
        raise CalibrationError(f"{archive.filename}: PhotoCalib version {version} is unknown")
    is_constant = bool(cat["isConstant"][0])
    field_id = int(cat["field"][0])
    field = None
    if field_id in archive:
        try:
            field = read_bounded_field(archive, field_id)
        except UnsupportedCalibration:
            if not is_constant:
                raise
    elif not is_constant:
        raise CalibrationError(f"{archive.filename}: PhotoCalib {obj_id} has no field {field_id}")
    mean, err = float(cat["calibrationMean"][0]), float(cat["calibrationErr"][0])
    return PhotoCalib(mean, err, is_constant, field)


def read_photocalib(path: str | os.PathLike) -> PhotoCalib:
    """The PhotoCalib of a file: a standalone PhotoCalib, an exposure, or FLUXMAG0 headers.

    Raises
    ------
    CalibrationError
        No PhotoCalib found (or several without a header saying which); names the file.
    UnsupportedCalibration
        The PhotoCalib's field is of a class daskcal cannot evaluate.
    """
    name = str(path)
    with open_fits(path) as hdul:
        header = hdul[0].header
        archive = read_archive(hdul, name) if find_archive_hdu(hdul) is not None else None
        ids = [int(header[k]) for k in _ID_KEYS if k in header]
        if archive is not None and ids:
            return photocalib_from_archive(archive, ids[0])
        found = archive.find("PhotoCalib") if archive is not None else []
        if len(found) == 1:
            return photocalib_from_archive(archive, found[0])
        if len(found) > 1:
            raise CalibrationError(f"{name}: {len(found)} PhotoCalibs and no PHOTOCALIB_ID card")
        if "FLUXMAG0" in header:
            return photocalib_from_fluxmag0(header["FLUXMAG0"], header.get("FLUXMAG0ERR", 0.0))
    raise CalibrationError(f"{name}: no PhotoCalib (no archive entry, no FLUXMAG0 header)")


def validate_photocalib(photocalib: PhotoCalib, bbox: Any = None) -> None:
    """Refuse a PhotoCalib that cannot be a calibration.

    The mean (cbar) must be > 0 and finite, the error (sigma_c) >= 0 and finite. A
    spatially varying PhotoCalib's field must have finite parameters and be > 0 and finite
    on a coarse grid over ``bbox`` (:func:`~daskcal.calib.boundedfield.validate_bounded_field`);
    a constant one's field is not checked, as it is never evaluated.

    Parameters
    ----------
    photocalib : PhotoCalib
        As read (:func:`read_photocalib`); reading does not validate.
    bbox : BBox or (x0, y0, x1, y1), optional
        Inclusive PARENT pixel box where it is applied (the CCD's); the field's own box by
        default.

    Raises
    ------
    InvalidPhotoCalib
        With a one-line message, e.g. "PhotoCalib mean is 0 (must be > 0 and finite)".
    """
    mean, err = photocalib.mean, photocalib.err
    if not (np.isfinite(mean) and mean > 0):
        raise InvalidPhotoCalib(f"PhotoCalib mean is {mean:g} (must be > 0 and finite)")
    if not (np.isfinite(err) and err >= 0):
        raise InvalidPhotoCalib(f"PhotoCalib error is {err:g} (must be >= 0 and finite)")
    if photocalib.is_constant:
        return
    try:
        validate_bounded_field(photocalib.field, bbox)
    except InvalidBoundedField as problem:
        raise InvalidPhotoCalib(f"PhotoCalib field {problem}") from None


def write_photocalib(
    path: str | os.PathLike, photocalib: PhotoCalib, overwrite: bool = False
) -> None:
    """Write a standalone PhotoCalib file as afw does (archive index at HDU 1), atomically."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True)")
    writer = ArchiveWriter()
    photocalib.add_to_archive(writer)
    with atomic_write(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(), *writer.hdus()]).writeto(tmp)
