"""Pure calibration kernels: one catalog frame, one image block. No Dask, no I/O.

They implement hscPipe 8's calibrateCatalog / calibrateExposure arithmetic (docs/calibration.md,
'Fluxes and magnitudes' and 'Images') on numpy arrays and pandas frames, so they can be
tested on five-row frames and mapped over partitions or blocks by
:mod:`daskcal.lazy.calibrated`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .calib.photocalib import PhotoCalib, calibrate_instflux
from .calib.skywcs import SkyWcs
from .io.catalog import FrozenDict, instflux_columns, slot_centroid_columns

__all__ = ["with_ids", "calibrate_catalog", "calibrate_image_block", "calibrated_flux_columns"]

FLUX_UNIT = "nJy"
MAG_UNIT = "mag(AB)"


def calibrated_flux_columns(df: pd.DataFrame) -> list[tuple[str, str, str | None]]:
    """The columns calibrateCatalog appends, in afw's order.

    Returns
    -------
    list of (new column, source instFlux column, source instFluxErr column or None)
        For each prefix ``P`` in sorted order: ``P_flux``, ``P_mag`` and, when
        ``P_instFluxErr`` exists, ``P_fluxErr`` and ``P_magErr``.
    """
    out: list[tuple[str, str, str | None]] = []
    for prefix, (flux, err) in instflux_columns(df).items():
        out.append((f"{prefix}_flux", flux, err))
        out.append((f"{prefix}_mag", flux, err))
        if err is not None:
            out.append((f"{prefix}_fluxErr", flux, err))
            out.append((f"{prefix}_magErr", flux, err))
    clash = [name for name, _, _ in out if name in df.columns]
    if clash:
        where = df.attrs.get("path", "catalog")
        raise ValueError(
            f"{where}: calibrated column {clash[0]!r} would overwrite an existing column "
            f"(table version {df.attrs.get('table_version')})"
        )
    return out


def calibrate_catalog(
    df: pd.DataFrame,
    photocalib: PhotoCalib | None,
    skywcs: SkyWcs | None,
    *,
    error_rule: str = "hscpipe8",
) -> pd.DataFrame:
    """Apply a PhotoCalib and a SkyWcs to one src catalog, as hscPipe 8 does.

    Parameters
    ----------
    df : pandas.DataFrame
        A src catalog as :func:`daskcal.read_catalog` returns it (attrs with aliases,
        units, table version).
    photocalib : PhotoCalib or None
        Evaluated once at every source's ``slot_Centroid``; None leaves fluxes alone.
    skywcs : SkyWcs or None
        Recomputes ``coord_ra/coord_dec`` (radians) at ``slot_Centroid``; None keeps
        them.
    error_rule : {"hscpipe8", "afw29"}
        Flux/magnitude error convention (see :func:`calibrate_instflux`).

    Returns
    -------
    pandas.DataFrame
        A copy: every input column unchanged except the coordinates, then the new
        columns appended; ``attrs["units"]``/``["docs"]`` describe them.
    """
    out = df.copy()
    out.attrs = dict(df.attrs)  # shallow: read-only entries stay shared (see FrozenDict)
    if photocalib is None and skywcs is None:
        return out
    xcol, ycol = slot_centroid_columns(df)
    plain = _without_attrs(df)
    x = plain[xcol].to_numpy(dtype=float)
    y = plain[ycol].to_numpy(dtype=float)
    if skywcs is not None:
        ra, dec = skywcs.pixel_to_sky_rad(x, y)
        out["coord_ra"] = np.asarray(ra, dtype=float)
        out["coord_dec"] = np.asarray(dec, dtype=float)
    if photocalib is not None:
        new = _flux_columns(df, photocalib.evaluate(x, y), photocalib.err, error_rule)
        attrs = out.attrs
        out = pd.concat([out, pd.DataFrame(new, index=df.index)], axis=1)
        units = {n: MAG_UNIT if n.endswith(("_mag", "_magErr")) else FLUX_UNIT for n in new}
        out.attrs = {
            **attrs,
            "units": FrozenDict({**attrs.get("units", {}), **units}),
            "docs": FrozenDict({**attrs.get("docs", {}), **{n: _doc(n) for n in new}}),
        }
    return out


def _without_attrs(df: pd.DataFrame) -> pd.DataFrame:
    """A view of ``df`` whose column access is cheap (pandas deep-copies attrs each time)."""
    view = df.copy(deep=False)
    view.attrs = {}
    return view


def _flux_columns(
    df: pd.DataFrame, c: np.ndarray, sigma_c: float, error_rule: str
) -> dict[str, np.ndarray]:
    calibrated_flux_columns(df)  # refuses a name clash before computing anything
    new: dict[str, np.ndarray] = {}
    plain = _without_attrs(df)
    for prefix, (flux_col, err_col) in instflux_columns(df).items():
        err = plain[err_col].to_numpy(dtype=float) if err_col else None
        flux, flux_err, mag, mag_err = calibrate_instflux(
            plain[flux_col].to_numpy(dtype=float), err, c, sigma_c, error_rule
        )
        new[f"{prefix}_flux"] = np.atleast_1d(flux)
        new[f"{prefix}_mag"] = np.atleast_1d(mag)
        if err_col:
            new[f"{prefix}_fluxErr"] = np.atleast_1d(flux_err)
            new[f"{prefix}_magErr"] = np.atleast_1d(mag_err)
    return new


def _doc(name: str) -> str:
    prefix, kind = name.rsplit("_", 1)
    what = {
        "flux": "calibrated flux",
        "fluxErr": "calibrated flux error",
        "mag": "AB magnitude",
        "magErr": "AB magnitude error",
    }[kind]
    return f"{what} from {prefix}_instFlux"


_CHUNK_PIXELS = 16384  # float64 scratch of 128 kB per array: in cache


def calibrate_image_block(
    image: np.ndarray,
    variance: np.ndarray,
    c: np.ndarray | float,
    cbar: float,
    *,
    sigma_c: float = 0.0,
    sky: np.ndarray | float = 0.0,
    include_calib_var: bool = False,
    fix_zero_variance: bool = False,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrate one block of an exposure (docs/calibration.md, 'Images': hscPipe 8 order).

    image' = p c / cbar - sky; variance' = (c^2 v [+ p^2 sigma_c^2]) / cbar^2. hscPipe 8
    scales the variance by the ratio of new to old pixel values, which is NaN where a
    pixel is exactly 0; that is reproduced unless ``fix_zero_variance``.

    Parameters
    ----------
    image, variance : numpy.ndarray
        The block's planes (counts, counts^2).
    c : numpy.ndarray or float
        The calibration at the block's pixels (nJy per count).
    cbar : float
        The PhotoCalib mean; calibrated pixels are in units of cbar nJy.
    sigma_c : float
        The PhotoCalib error, used with ``include_calib_var``.
    sky : numpy.ndarray or float
        The skyCorr image over the block, subtracted after the rescaling.
    include_calib_var, fix_zero_variance : bool
        See :class:`daskcal.config.CalibrateConfig`.
    out : (numpy.ndarray, numpy.ndarray), optional
        Float32 arrays of the block's shape for the results; they may be ``image`` and
        ``variance`` themselves (calibrated in place).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The calibrated image and variance, float32.
    """
    image, variance = np.asarray(image), np.asarray(variance)
    if out is None:
        out = (np.empty(image.shape, np.float32), np.empty(image.shape, np.float32))
    # any shape is calibrated as rows of its last axis
    shape = image.shape
    rows2d = (math.prod(shape[:-1]), shape[-1] if image.ndim else 1)
    image, variance = image.reshape(rows2d), variance.reshape(rows2d)
    planes = [o.reshape(rows2d) for o in out]
    width = rows2d[1]
    c, sky = (
        a if a.ndim == 0 else np.broadcast_to(a, shape).reshape(rows2d)
        for a in (np.asarray(c, dtype=np.float64), np.asarray(sky))
    )
    # float64 scratch for a few rows at a time: every step stays in the CPU cache and a
    # block allocates nothing large (fresh pages cost more than the arithmetic)
    rows = max(1, _CHUNK_PIXELS // max(width, 1))
    scratch = np.empty((4, min(rows, image.shape[0]), width))
    for r0 in range(0, image.shape[0], rows):
        part = slice(r0, r0 + rows)
        n = len(image[part])
        p, scale, var, term = scratch[:, :n]
        np.copyto(p, image[part])
        np.divide(c if c.ndim == 0 else c[part], np.float64(cbar), out=scale)
        np.multiply(scale, scale, out=var)
        np.multiply(variance[part], var, out=var)
        if include_calib_var:
            np.multiply(p, np.float64(sigma_c), out=term)
            np.divide(term, np.float64(cbar), out=term)
            np.multiply(term, term, out=term)
            np.add(var, term, out=var)
        if not fix_zero_variance:
            np.copyto(var, np.nan, where=p == 0)
        np.copyto(planes[1][part], var, casting="same_kind")
        np.multiply(p, scale, out=p)
        np.subtract(p, sky if sky.ndim == 0 else sky[part], out=p)
        np.copyto(planes[0][part], p, casting="same_kind")
    return planes[0].reshape(shape), planes[1].reshape(shape)


def with_ids(df: pd.DataFrame, dataid: Mapping[str, Any]) -> pd.DataFrame:
    """Append the data-id columns (visit, ccd, tract, filter, pointing) to a frame."""
    n = len(df)
    ids = {
        "visit": np.full(n, int(dataid["visit"]), dtype=np.int64),
        "ccd": np.full(n, int(dataid["ccd"]), dtype=np.int64),
        "tract": np.full(n, int(dataid.get("tract", -1)), dtype=np.int64),
        "filter": pd.array([str(dataid["filter"])] * n, dtype="string"),
        "pointing": np.full(n, int(dataid["pointing"]), dtype=np.int64),
    }
    out = pd.concat([df, pd.DataFrame(ids, index=df.index)], axis=1)
    out.attrs = df.attrs
    return out
