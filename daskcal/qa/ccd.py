"""One Dask task per CCD: its QA metrics, from the files of a :class:`CcdTarget`.

The CCD is evaluated on a grid of cell centres (``grid_cells`` along its long side):

- ``zp``: the zero point of the applied calibration (the recorded ``<name>_photoCalib``);
- ``dzp``: the change of zero point from the calexp's own PhotoCalib (its archive), mmag;
- ``east``/``north``: the shift from the calexp's WCS to the jointcal one (the CALEXP's
  SkyWcs, or the input ``jointcal_wcs`` without a CALEXP), mas, at ``ra``/``dec``;
- ``sky``: the skyCorr.

These grids, the CCD's corners on the sky (jointcal WCS) and its bright stars (CALSRC)
are saved in the target's ``work`` file (``.npz``) for its visit page and the matching
between visits; the task returns the scalar metrics only, so that what the driver holds
stays small. A product that is absent or unreadable leaves its metrics NaN and is named
in ``problems``; without a WCS the CCD cannot be placed and ``placed`` is False.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..calib.background_file import read_background
from ..calib.photocalib import read_photocalib
from ..calib.skywcs import read_skywcs
from ..io.atomic import atomic_write
from ..io.catalog import read_catalog
from ..io.fitsfile import open_fits
from .astrometry import sip_error, wcs_shift
from .options import QAOptions
from .photometry import mean_zeropoint, zeropoint_grid
from .sky import skycorr_summary
from .sources import source_metrics, star_table
from .targets import CcdTarget

__all__ = ["cell_grid", "exposure_info", "measure_ccd"]

_MJD_CARDS = ("MJD-OBS", "MJD")


def cell_grid(bbox: tuple[int, int, int, int], cells: int) -> tuple[np.ndarray, np.ndarray]:
    """PARENT pixel centres of a grid of cells over a CCD.

    Parameters
    ----------
    bbox : (int, int, int, int)
        Inclusive PARENT box (x0, y0, x1, y1).
    cells : int
        Cells along the long side; the short side in proportion (at least 2).

    Returns
    -------
    x, y : ndarray
        Shape (ny, nx).

    >>> x, y = cell_grid((0, 0, 255, 511), 16)
    >>> x.shape, float(x[0, 0]), float(y[0, 0])
    ((16, 8), 15.5, 15.5)
    """
    x0, y0, x1, y1 = bbox
    width, height = x1 - x0 + 1, y1 - y0 + 1
    step = max(width, height) / cells
    nx, ny = (max(2, round(n / step)) for n in (width, height))
    xs = x0 - 0.5 + (np.arange(nx) + 0.5) * width / nx
    ys = y0 - 0.5 + (np.arange(ny) + 0.5) * height / ny
    return np.meshgrid(xs, ys)


def exposure_info(path: str | os.PathLike) -> dict[str, Any]:
    """Box, date and exposure time of an exposure file, from its headers only.

    Parameters
    ----------
    path : path
        A calexp or CALEXP.

    Returns
    -------
    dict
        ``bbox`` (PARENT x0, y0, x1, y1 inclusive, from the raw IMAGE header without
        decompressing it), ``mjd`` (``MJD-OBS`` or ``MJD``) and ``exptime`` (``EXPTIME``);
        NaN where a card is absent.
    """
    with open_fits(path, disable_image_compression=True) as hdul:
        primary, image = hdul[0].header, hdul[1].header
        nx = int(image.get("ZNAXIS1", image.get("NAXIS1", 0)))
        ny = int(image.get("ZNAXIS2", image.get("NAXIS2", 0)))
        x0, y0 = -int(image.get("LTV1", 0)), -int(image.get("LTV2", 0))
        mjd = next((primary[k] for k in _MJD_CARDS if k in primary), math.nan)
        exptime = primary.get("EXPTIME", math.nan)
    return {
        "bbox": (x0, y0, x0 + nx - 1, y0 + ny - 1),
        "mjd": _number(mjd),
        "exptime": _number(exptime),
    }


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _corners(wcs, bbox: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Sky position of the pixel-edge corners (x0, y0), (x1, y0), (x1, y1), (x0, y1)."""
    x0, y0, x1, y1 = bbox
    xs = np.array([x0 - 0.5, x1 + 0.5, x1 + 0.5, x0 - 0.5])
    ys = np.array([y0 - 0.5, y0 - 0.5, y1 + 0.5, y1 + 0.5])
    return wcs.pixel_to_sky(xs, ys)


class _Problems(list):
    """One-line problems of a CCD; ``attempt`` runs a step and records its failure."""

    def attempt(self, what: str, step, *args):
        try:
            return step(*args)
        except Exception as err:  # one bad product leaves its metrics NaN, not the CCD
            text = " ".join(str(err).split()) or type(err).__name__
            self.append(f"{what}: {text}")
            return None


def _photometry(paths, x, y, grids: dict, row: dict) -> None:
    applied = read_photocalib(paths["photocalib"])
    grids["zp"] = zeropoint_grid(applied, x, y)
    row["zp"] = mean_zeropoint(applied, x, y)
    if paths.get("calexp"):
        own = read_photocalib(paths["calexp"])
        grids["dzp"] = (grids["zp"] - zeropoint_grid(own, x, y)) * 1e3
        row["phot_calexp_mmag"] = (row["zp"] - mean_zeropoint(own, x, y)) * 1e3


def _astrometry(paths, bbox, x, y, grids: dict, row: dict) -> None:
    jointcal = read_skywcs(paths["calexp_out"] or paths["skywcs"])
    grids["corner_ra"], grids["corner_dec"] = _corners(jointcal, bbox)
    ra, dec = jointcal.pixel_to_sky(x, y)
    grids["ra"], grids["dec"] = np.asarray(ra), np.asarray(dec)
    row["placed"] = True
    if paths.get("calexp"):
        _, _, east, north = wcs_shift(read_skywcs(paths["calexp"]), jointcal, x, y)
        grids["east"], grids["north"] = east, north
        row["shift_east_mas"], row["shift_north_mas"] = float(east.mean()), float(north.mean())
        row["shift_mas"] = math.hypot(row["shift_east_mas"], row["shift_north_mas"])
        spread = np.hypot(east - east.mean(), north - north.mean())
        row["shift_rms_mas"] = float(np.sqrt(np.mean(spread**2)))


def _sky(path, cells, grids: dict, row: dict) -> None:
    grids["sky"], stats = skycorr_summary(read_background(path), cells)
    row.update(stats)


def _sources(path, options: QAOptions, grids: dict, row: dict) -> None:
    catalog = read_catalog(path)
    row.update(source_metrics(catalog, options))
    grids.update({f"star_{k}": v for k, v in star_table(catalog, options).items()})


def measure_ccd(target: CcdTarget, options: QAOptions) -> dict[str, Any]:
    """Measure one CCD and save its grids (see the module docstring).

    Parameters
    ----------
    target : CcdTarget
        The CCD's data id, files and work file.
    options : QAOptions
        Grid size and star selection.

    Returns
    -------
    dict
        The data id, ``zp`` (mag), ``phot_calexp_mmag``, ``shift_east_mas``,
        ``shift_north_mas``, ``shift_mas``, ``shift_rms_mas``, ``sip_error_mas`` (the
        CALEXP's ``DASKCAL_SIPERR``), ``sky_mean``/``min``/``max``/``range``,
        ``n_sources``, ``n_stars``, ``psf_ap_mmag``, ``psf_ap_n``, ``mjd``, ``exptime``,
        ``placed``, ``problems`` (``; ``-separated) and ``work`` (the saved file, "" if
        nothing was saved). Metrics that could not be measured are NaN.
    """
    paths, problems = target.paths, _Problems()
    row: dict[str, Any] = {**target.dataid, "placed": False, "work": ""}
    grids: dict[str, np.ndarray] = {}
    exposure = paths.get("calexp_out") or paths.get("calexp")
    info = problems.attempt("calexp", exposure_info, exposure) if exposure else None
    if exposure is None:
        problems.append("no calexp nor CALEXP: nothing gives the CCD's box")
    if info is not None:
        row.update(mjd=info["mjd"], exptime=info["exptime"])
        x, y = cell_grid(info["bbox"], options.grid_cells)
        if paths.get("photocalib"):
            problems.attempt("photoCalib", _photometry, paths, x, y, grids, row)
        if paths.get("calexp_out") or paths.get("skywcs"):
            problems.attempt("SkyWcs", _astrometry, paths, info["bbox"], x, y, grids, row)
        if paths.get("skycorr"):
            problems.attempt("skyCorr", _sky, paths["skycorr"], x.shape, grids, row)
    if paths.get("calexp_out"):
        header = problems.attempt("CALEXP", _primary_header, paths["calexp_out"])
        row["sip_error_mas"] = sip_error(header)
    if paths.get("calsrc_out"):
        problems.attempt("CALSRC", _sources, paths["calsrc_out"], options, grids, row)
    if row["placed"]:
        problems.attempt("QA work file", _save, target.work, grids)
        row["work"] = target.work if Path(target.work).is_file() else ""
    row["problems"] = "; ".join(problems)
    return row


def _primary_header(path: str):
    with open_fits(path) as hdul:
        return hdul[0].header.copy()


def _save(path: str, grids: dict[str, np.ndarray]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **grids)
