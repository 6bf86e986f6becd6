"""calibrateExposure, per CCD: read the calexp, calibrate it block by block, write CALEXP.

hscPipe 8's ``CalibrateExposureTask.runDataRef`` (docs/hscpipe.md, 'calibrateExposure'), in
its order:

1. photometry: ``image' = p c(x, y) / cbar``, ``variance' = (c^2 v [+ p^2 sigma_c^2]) /
   cbar^2`` with c evaluated at every pixel in PARENT coordinates; the mask is unchanged;
   a constant PhotoCalib(cbar, sigma_c) replaces the calexp's;
2. astrometry: the jointcal SkyWcs replaces the calexp's, and a TAN-SIP approximation
   (``sipOrder``, ``sipSpacing``) goes into the primary header;
3. sky: the full-resolution skyCorr image is subtracted from the image plane, after the
   rescaling (hscPipe's order, in calibrated units).

The quirk kept from hscPipe 8: afw's ``PhotoCalib.calibrateImage`` derives the variance
from the ratio of the calibrated to the uncalibrated pixel, so every pixel whose value is
exactly 0 (often NO_DATA or interpolated pixels) gets a NaN variance. daskcal does the
same unless ``fixZeroPixelVariance=True``. Without ``doApplyExternalPhotoCalib`` nothing is
rescaled and there is no quirk (hscPipe never calls ``calibrateImage`` then).

The work is split so that the lazy graph (:mod:`daskcal.lazy.calibrated`) and the CLI worker share
it: :func:`exposure_plan` turns a calibration-table row into an :class:`ExposurePlan`
(plain values only, so it travels to any Dask worker); :func:`calibrate_rows` calibrates
any block of rows exactly as the whole CCD would be; :func:`calibrate_exposure_ccd` is
the per-CCD worker (CALEXP written atomically, its metadata made by :mod:`daskcal.calexp`;
an :class:`~daskcal.report.Outcome` returned, never raised, unless ``doraise``). With
``onMissingCalibration="flag"`` a CCD whose calibration is missing is written as its
calexp, nothing applied, with the card ``DASKCAL_UNCALIBRATED = T``. A missing skyCorr
(with ``doApplySkyCorr``) always fails the CCD, and so does a calibration that is present
but unreadable or invalid, or a TAN-SIP fit over ``sipMaxError`` (the row's ``errors``).

Why one module of more than ~300 lines: the plan of a CCD, the block-by-block calibration
and the CALEXP write are the one calibrateExposure step, shared by the command and the lazy
graph.
"""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.utils.exceptions import AstropyUserWarning

from ..apply import calibrate_image_block
from ..calexp import calexp_archive, calexp_headers, config_digest, provenance_cards
from ..calib.background_file import background_block, load_background
from ..calib.photocalib import PhotoCalib
from ..calib.skywcs import SkyWcs
from ..calib.table import applied_calibrations, calibrations_from_row, row_datasets
from ..config import CalibrateConfig
from ..errors import CalibrationMissing, failure_reason, uncalibrated_reason, writing_output
from ..io.exposure import read_exposure, read_rows, write_exposure
from ..records import NHDU_CARD, RECORD_CARD, CcdWork, plan_ccd
from ..report import Outcome
from .catalog import table_row
from .quicklook import save_thumbnail

__all__ = [
    "ExposurePlan",
    "calibrate_exposure_ccd",
    "calibrate_rows",
    "check_skycorr",
    "exposure_inputs",
    "exposure_plan",
]


@dataclass(frozen=True)
class ExposurePlan:
    """What calibrateExposure does to one CCD, as plain values.

    Attributes
    ----------
    photo : bool
        Apply the photometric calibration (``cbar``, ``sigma_c``, ``field``).
    cbar, sigma_c : float
        PhotoCalib mean and error (nJy per count).
    field : str
        The bounded field as JSON (:func:`bounded_field_from_dict`); "" if constant.
    include_calib_var, fix_zero_variance : bool
        ``includePhotoCalibVar`` and ``fixZeroPixelVariance``.
    skycorr : str
        skyCorr file to subtract, or "".
    wcs_ast : str
        AST text of the SkyWcs to attach, or "" to keep the calexp's.
    sip_header : str
        TAN-SIP cards (PARENT pixels, newline-separated) for the headers, or "".
    sip_max_error_mas : float or None
        The TAN-SIP approximation's maximum error over the CCD (milliarcseconds), for
        the ``DASKCAL_SIPERR`` card; None without a TAN-SIP.
    uncalibrated : str
        Flag mode: why nothing is applied ("" otherwise).
    photocalib_path, wcs_path : str
        Where the calibrations came from (provenance cards).
    """

    photo: bool = False
    cbar: float = 1.0
    sigma_c: float = 0.0
    field: str = ""
    include_calib_var: bool = False
    fix_zero_variance: bool = False
    skycorr: str = ""
    wcs_ast: str = ""
    sip_header: str = ""
    sip_max_error_mas: float | None = None
    uncalibrated: str = ""
    photocalib_path: str = ""
    wcs_path: str = ""

    def photocalib(self) -> PhotoCalib | None:
        """The PhotoCalib applied (rebuilt once per process), or None."""
        return _photocalib(self.cbar, self.sigma_c, self.field) if self.photo else None

    def new_photocalib(self) -> PhotoCalib | None:
        """The constant PhotoCalib(cbar, sigma_c) the CALEXP carries, or None (unchanged)."""
        return PhotoCalib(self.cbar, self.sigma_c).to_constant() if self.photo else None


@functools.lru_cache(maxsize=64)
def _photocalib(cbar: float, sigma_c: float, field: str) -> PhotoCalib:
    return calibrations_from_row({"cbar": cbar, "sigma_c": sigma_c, "field": field})[0]


def exposure_plan(
    row: Mapping[str, Any], config: CalibrateConfig, skycorr_expected: str = ""
) -> ExposurePlan:
    """The plan for one CCD from its calibration-table row and the config.

    Raises
    ------
    CalibrationMissing
        The skyCorr is missing while ``doApplySkyCorr`` (naming ``skycorr_expected``); a
        needed calibration is present but unreadable or invalid (the row's ``errors``,
        whatever ``onMissingCalibration``); or one is missing and ``onMissingCalibration``
        is ``fail`` (with ``flag`` the plan is to write the calexp uncalibrated).
    """
    skycorr = str(row.get("skycorr_path") or "")
    if config.doApplySkyCorr and not skycorr:
        where = skycorr_expected or f"visit {row.get('visit')} ccd {row.get('ccd')}"
        raise CalibrationMissing(f"no skyCorr ({where}); doApplySkyCorr is True")
    missing = uncalibrated_reason(row, config.onMissingCalibration)
    if missing:
        return ExposurePlan(uncalibrated=missing)
    photo = config.doApplyExternalPhotoCalib
    wcs = config.doApplyExternalSkyWcs and bool(row.get("wcs_ast"))
    sip = str(row.get("sip_header") or "") if wcs else ""
    sip_error = row.get("sip_max_error_mas")
    if not sip or sip_error is None or not np.isfinite(sip_error):
        sip_error = None
    return ExposurePlan(
        photo=photo,
        cbar=float(row["cbar"]) if photo else 1.0,
        sigma_c=float(row["sigma_c"]) if photo else 0.0,
        field=str(row.get("field") or "") if photo else "",
        include_calib_var=config.includePhotoCalibVar,
        fix_zero_variance=config.fixZeroPixelVariance,
        skycorr=skycorr if config.doApplySkyCorr else "",
        wcs_ast=str(row["wcs_ast"]) if wcs else "",
        sip_header=sip,
        sip_max_error_mas=None if sip_error is None else float(sip_error),
        photocalib_path=str(row.get("photocalib_path") or "") if photo else "",
        wcs_path=str(row.get("wcs_path") or "") if wcs else "",
    )


def check_skycorr(path: str, shape: tuple[int, int]) -> None:
    """Refuse a skyCorr whose image is not the calexp's size (afw needs equal dimensions)."""
    height, width = load_background(path).shape
    if (height, width) != tuple(shape):
        raise ValueError(
            f"{path}: skyCorr image is {width}x{height} pixels, the calexp {shape[1]}x{shape[0]}"
        )


def _calibration(pc: PhotoCalib, x0: int, x1: int, y0: int, y1: int) -> np.ndarray | float:
    """c on a block's pixels; a scalar when constant.

    BLAS evaluates a one-row matrix product by another path whose sums round differently,
    so a one-row block is evaluated as two rows: every block then equals the same rows of
    the whole CCD bit for bit.
    """
    if pc.is_constant:
        return pc.mean
    if y1 - y0 == 1:
        return pc.evaluate_grid(x0, x1, y0, y0 + 2)[:1]
    return pc.evaluate_grid(x0, x1, y0, y1)


def calibrate_rows(
    image: np.ndarray,
    variance: np.ndarray,
    plan: ExposurePlan,
    xy0: tuple[int, int],
    row0: int,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrate rows ``row0 .. row0 + len(image)`` of a CCD whose pixel (0, 0) is at ``xy0``.

    ``out``: float32 arrays for the results (they may be ``image`` and ``variance``).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The calibrated image and variance (float32), independent of how the CCD is split
        into blocks.
    """
    if plan.uncalibrated:
        if out is None:
            return np.array(image, np.float32), np.array(variance, np.float32)
        np.copyto(out[0], image)
        np.copyto(out[1], variance)
        return out
    ny, nx = image.shape
    sky = background_block(plan.skycorr, row0, row0 + ny) if plan.skycorr else 0.0
    pc = plan.photocalib()
    if pc is None:  # sky only: hscPipe never calls calibrateImage, so no NaN variance
        return calibrate_image_block(
            image, variance, 1.0, 1.0, sky=sky, fix_zero_variance=True, out=out
        )
    x0, y0 = int(xy0[0]), int(xy0[1]) + row0
    return calibrate_image_block(
        image,
        variance,
        _calibration(pc, x0, x0 + nx, y0, y0 + ny),
        plan.cbar,
        sigma_c=plan.sigma_c,
        sky=sky,
        include_calib_var=plan.include_calib_var,
        fix_zero_variance=plan.fix_zero_variance,
        out=out,
    )


def _read_calibrated(ds, plan: ExposurePlan, chunk_rows: int) -> tuple[np.ndarray, ...]:
    """(image, mask, variance) of a :func:`read_exposure` dataset, calibrated in place.

    Each plane is read whole (astropy decompresses a whole plane about twice as fast as
    row sections), then calibrated ``chunk_rows`` rows at a time, which bounds the float64
    temporaries: the worker holds about one CCD (3 planes) plus one block.
    """
    path, hdus, xy0 = ds.attrs["path"], ds.attrs["hdus"], ds.attrs["xy0"]
    ny = ds.sizes["y"]
    if plan.skycorr:
        check_skycorr(plan.skycorr, (ny, ds.sizes["x"]))
    image = read_rows(path, hdus["image"], 0, ny, "float32")
    variance = read_rows(path, hdus["variance"], 0, ny, "float32")
    for r0 in range(0, ny, chunk_rows):
        rows = slice(r0, min(r0 + chunk_rows, ny))
        calibrate_rows(
            image[rows], variance[rows], plan, xy0, r0, out=(image[rows], variance[rows])
        )
    return image, read_rows(path, hdus["mask"], 0, ny, "int32"), variance


def _write_calexp(
    ds,
    out_path: str,
    planes: tuple,
    plan: ExposurePlan,
    config,
    record: str = "",
    codec: str = "daskcal",
) -> None:
    """Write CALEXP: the calibrated planes, the calexp's metadata updated (:mod:`.calexp`)."""
    handle, calexp = ds.attrs["archive"], ds.attrs["path"]
    with handle.open() if handle is not None else contextlib.nullcontext() as archive:
        wcs = SkyWcs(plan.wcs_ast) if plan.wcs_ast else None
        hdus, ids = calexp_archive(archive, plan.new_photocalib(), wcs)
        files = {"CALEXP": calexp, "PHOTOCALIB": plan.photocalib_path, "SKYWCS": plan.wcs_path}
        primary, headers = calexp_headers(
            ds.attrs["header"],
            ds.attrs["plane_headers"],
            ids=ids,
            sip_header=plan.sip_header,
            provenance={
                **provenance_cards(config, {**files, "SKYCORR": plan.skycorr}),
                **({RECORD_CARD: record, NHDU_CARD: 4 + len(hdus)} if record else {}),
            },
            xy0=ds.attrs["xy0"],
            uncalibrated=plan.uncalibrated,
            sip_max_error_mas=plan.sip_max_error_mas,
        )
        write_exposure(
            out_path,
            *planes,
            primary_header=primary,
            mask_planes=ds.attrs["mask_planes"],
            archive_hdus=hdus,
            xy0=ds.attrs["xy0"],
            plane_headers=headers,
            codec=codec,
        )


@contextlib.contextmanager
def _strict_reading(path: str):
    """astropy only warns that a file "may have been truncated"; make that an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", AstropyUserWarning)
        try:
            yield
        except AstropyUserWarning as warning:
            raise OSError(f"{path}: {warning}") from None


TASK = "calibrateExposure"


def exposure_inputs(config: CalibrateConfig) -> tuple[str, ...]:
    """The datasets a CALEXP is made from under ``config`` (its record covers them)."""
    sky = ("skyCorr",) if config.doApplySkyCorr else ()
    return ("calexp", *sky, *applied_calibrations(config))


def calibrate_exposure_ccd(
    work: CcdWork,
    config: CalibrateConfig,
    doraise: bool = False,
    chunk_rows: int = 512,
    thumbnail: str = "",
    codec: str = "daskcal",
) -> Outcome:
    """Calibrate one CCD's calexp into CALEXP (and a quick-look thumbnail if asked).

    The CALEXP is skipped when it is whole and its record (:mod:`daskcal.records`) is
    the one it would get now; otherwise it is (re)written with that record. When the
    calibration table's row for the CCD is not the one it would get now
    (``work.table_record``), the new row is returned in ``extra["row"]``.

    Parameters
    ----------
    work : CcdWork
        The data id, its input files (``calexp``, ``skyCorr``, the calibrations), the
        CALEXP to write (atomically) and the table's record of its row.
    config : CalibrateConfig
        The configuration.
    doraise : bool
        Raise instead of returning a failed outcome.
    chunk_rows : int
        Rows calibrated at a time.
    thumbnail : str
        Where to save its quick-look thumbnail ("" for none).
    codec : {"daskcal", "afw", "astropy"}
        How the planes are compressed (:func:`daskcal.io.exposure.write_exposure`).

    Returns
    -------
    Outcome
        ``done`` with the CALEXP path, ``skipped`` (current), or ``failed`` with a
        one-line reason naming the file.
    """
    start = time.perf_counter()
    dataid, calexp, out_path = work.dataid, work.inputs["calexp"], work.output
    extra: dict[str, Any] = {}
    try:
        ccd = plan_ccd(
            work, TASK, config_digest(config), exposure_inputs(config), row_datasets(config)
        )
        extra["record"] = ccd.record
        if not ccd.action.run:
            if ccd.row_needed:
                extra["row"] = table_row(work, config, ccd.row_record, with_sip=True)
            return Outcome(dataid, "skipped", output=out_path, extra=extra)
        row = table_row(work, config, ccd.row_record, with_sip=True)
        plan = exposure_plan(row, config, str(work.expected.get("skyCorr", "")))
        with _strict_reading(calexp):
            ds = read_exposure(calexp, chunk_rows=chunk_rows)
            image, mask, variance = _read_calibrated(ds, plan, chunk_rows)
        writing_output(
            lambda: _write_calexp(
                ds, out_path, (image, mask, variance), plan, config, ccd.record, codec
            ),
            out_path,
        )
        if thumbnail:
            wcs = SkyWcs(plan.wcs_ast) if plan.wcs_ast else calexp
            planes = ds.attrs["mask_planes"]
            save_thumbnail(thumbnail, image, mask, planes, ds.attrs["xy0"], wcs)
    except Exception as err:
        if doraise:
            raise
        return Outcome(dataid, "failed", reason=failure_reason(err, calexp))
    extra.update(row=row, why=ccd.why, seconds=time.perf_counter() - start)
    if plan.photo:
        extra["cbar"] = plan.cbar
    if plan.uncalibrated:
        extra["uncalibrated"] = plan.uncalibrated
    return Outcome(dataid, "done", output=out_path, extra=extra)
