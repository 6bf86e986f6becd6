"""Lazy calibrated collections for notebooks: nothing is written, nothing read until used.

:func:`calibrated_catalogs` zips the src partitions (one per CCD) with the rows of the
calibration table, partition by partition, and maps the pure catalog kernel over them.
:func:`calibrated_exposures` maps the exposure kernel
(:func:`daskcal.tasks.exposure.calibrate_rows`) over the row blocks of each calexp's lazy
planes: every block task gets the two input blocks and plain values (the
:class:`~daskcal.tasks.exposure.ExposurePlan`, xy0, its row range), evaluates c on its own
pixels and the skyCorr on its own rows (by file name), so the graphs run on any scheduler
and give the same pixels for any ``chunk_rows``, bit for bit.

Why one module of more than ~300 lines: the two lazy calibrated collections share the
calibration table and the check that keeps its rows aligned with the ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import xarray as xr

from ..apply import calibrated_flux_columns, with_ids
from ..calib.skywcs import SkyWcs
from ..calib.table import calibration_row, row_datasets
from ..config import CalibrateConfig
from ..dataid import format_id
from ..errors import CalibrationMissing
from ..io.catalog import catalog_meta, read_catalog, slot_centroid_columns
from ..repo import Repository
from ..tasks.catalog import UNCALIBRATED_FLAG, calibrated_frame
from ..tasks.exposure import ExposurePlan, calibrate_rows, check_skycorr, exposure_plan
from .coords import with_sky_coords
from .inputs import ID_COLUMNS, read_exposure, resolve_ids, source_columns, stack_exposures

__all__ = [
    "calibration_inputs",
    "calibration_table",
    "calibrated_catalogs",
    "calibrated_exposure",
    "calibrated_exposures",
]


def _calibrated_partition(
    path: str,
    dataid: dict[str, Any],
    row: dict[str, Any],
    config: CalibrateConfig,
    read: list[str] | None = None,
    keep: list[str] | None = None,
) -> pd.DataFrame:
    """One CCD: read its src (columns ``read``), add the id columns, apply its
    calibration-table row, keep the columns ``keep``."""
    try:
        out = calibrated_frame(with_ids(read_catalog(path, columns=read), dataid), row, config)
    except CalibrationMissing as err:
        raise CalibrationMissing(f"{format_id(dataid)}: {err}") from None
    return out if keep is None else out[keep]


def calibration_inputs(src: pd.DataFrame, columns: list[str]) -> list[str]:
    """The src columns to read for some columns of the calibrated catalog.

    Parameters
    ----------
    src : pandas.DataFrame
        The src schema (e.g. :func:`daskcal.io.catalog.catalog_meta`, full).
    columns : list of str
        Columns of the calibrated frame, data-id columns left out.

    Returns
    -------
    list of str
        For each calibrated ``P_flux``, ``P_mag``, ``P_fluxErr`` or ``P_magErr`` its
        ``P_instFlux`` and ``P_instFluxErr``; every other asked column as it is; then the
        ``slot_Centroid`` columns (where the PhotoCalib and the SkyWcs are evaluated).
        Without repeats, in that order.
    """
    made = {new: (flux, err) for new, flux, err in calibrated_flux_columns(src)}
    read: list[str] = []
    for name in columns:
        read += [c for c in made[name] if c is not None] if name in made else [name]
    read += slot_centroid_columns(src)
    return [name for name in dict.fromkeys(read) if name in src.columns]


def calibration_table(
    repo, ids: Iterable[Mapping[str, Any]], config: CalibrateConfig, *, with_sip: bool = False
) -> pd.DataFrame:
    """The calibration table of a set of data ids, read in parallel with Dask.

    Parameters
    ----------
    repo : daskcal.Repository
        Where the products are found (input lookup chain).
    ids : iterable of dict
        Full data ids with ``tract``.
    config : CalibrateConfig
        Which products to read.
    with_sip : bool
        Also fit TAN-SIP approximations.

    Returns
    -------
    pandas.DataFrame
        One row per id, in the order given.
    """
    names = row_datasets(config)
    tasks = []
    for dataid in ids:
        paths = {name: repo.find(name, dataid) for name in names}
        expected = {n: repo.input_path(n, dataid) for n, p in paths.items() if p is None}
        task = dask.delayed(calibration_row)(
            dict(dataid), paths, config, with_sip=with_sip, expected=expected
        )
        tasks.append(task)
    rows = dask.compute(*tasks)
    return pd.DataFrame(list(rows))


def _check_rows_match(table: pd.DataFrame, ids: list[dict[str, Any]]) -> None:
    """Refuse a calibration table whose rows are not the ids, one for one, in order."""
    if len(table) != len(ids):
        raise ValueError(f"calibration table has {len(table)} rows for {len(ids)} data ids")
    for key in ("visit", "ccd"):
        if key not in table:
            raise ValueError(f"calibration table has no {key!r} column")
        given = table[key].to_numpy()
        wanted = np.array([d[key] for d in ids])
        bad = np.flatnonzero(given != wanted)
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"calibration table row {i} is {key}={given[i]}, but data id {i} is "
                f"{format_id(ids[i])}: give the rows in the order of the expanded ids"
            )


def calibrated_catalogs(
    repo: Repository,
    ids: Iterable[Mapping[str, Any]] | None = None,
    config: CalibrateConfig | None = None,
    *,
    table: pd.DataFrame | None = None,
    columns: Iterable[str] | None = None,
) -> dd.DataFrame:
    """The calibrated src catalogs of some data ids, as a lazy dask DataFrame.

    Parameters
    ----------
    repo : Repository
        Inputs.
    ids : iterable of dict, optional
        Data ids with ``tract`` (partial ids are expanded).
    config : CalibrateConfig, optional
        hscPipe 8 defaults when None.
    table : pandas.DataFrame, optional
        A calibration table (:func:`daskcal.calibration_table`) in the order of the
        expanded ids (a table whose rows are not those ids, in that order, is refused
        with a ``ValueError``); read from the repository when None.
    columns : iterable of str, optional
        Only these columns of the calibrated catalog, in this order: src columns and
        calibrated ones (``P_flux``, ``P_mag``, ``P_fluxErr``, ``P_magErr``). Only what
        they need is read from the src files (:func:`calibration_inputs`: the
        instFlux/instFluxErr of each calibrated flux, the slot centroid); the data-id
        columns (and ``daskcal_uncalibrated`` with ``onMissingCalibration="flag"``) are
        added as always. A name the calibrated catalog would not have raises a KeyError.

    Returns
    -------
    dask.dataframe.DataFrame
        One partition per CCD: the src columns (coordinates recomputed), the data-id
        columns and the calibrated ``*_flux``, ``*_mag``, ``*_fluxErr``, ``*_magErr``; or
        the ``columns`` asked for and the data-id columns.
    """
    config = config or CalibrateConfig()
    full, paths = resolve_ids(repo, ids, "src", require_tract=True)
    if table is None:
        table = calibration_table(repo, full, config)
    _check_rows_match(table, full)
    rows = table.to_dict("records")
    meta_row = {**rows[0], "missing": "", "errors": ""}
    src = catalog_meta(paths[0])
    meta = calibrated_frame(with_ids(src, full[0]), meta_row, config)
    read = keep = None
    if columns is not None:
        asked = source_columns(columns)
        unknown = [name for name in asked if name not in meta.columns]
        if unknown:
            raise KeyError(
                f"{paths[0]}: the calibrated catalog has no column {', '.join(map(repr, unknown))}"
            )
        read = calibration_inputs(src, asked)
        keep = [*asked, *ID_COLUMNS]
        if UNCALIBRATED_FLAG in meta.columns and UNCALIBRATED_FLAG not in keep:
            keep.append(UNCALIBRATED_FLAG)
        meta = meta[keep]
    # one from_map over (file, id, row), so that the partitions of every expression built
    # on it are known to be aligned (two zipped collections would be re-aligned by index)
    return dd.from_map(
        _calibrated_partition,
        [str(p) for p in paths],
        full,
        rows,
        args=[config, read, keep],
        meta=meta,
        label="calibrate-src",
        enforce_metadata=False,
    )


def _calibrate_block(
    image: np.ndarray,
    variance: np.ndarray,
    plan: ExposurePlan,
    xy0: tuple[int, int],
    block_info: dict | None = None,
) -> np.ndarray:
    """One block task: (image', variance') stacked, shape (2, rows, columns)."""
    row0 = block_info[0]["array-location"][0][0]
    return np.stack(calibrate_rows(image, variance, plan, xy0, row0))


def calibrated_exposure(ds: xr.Dataset, plan: ExposurePlan) -> xr.Dataset:
    """Calibrate a lazy exposure (:func:`daskcal.read_exposure`) as a plan says, lazily.

    Parameters
    ----------
    ds : xarray.Dataset
        ``image``, ``mask``, ``variance`` with dask data (blocks of whole rows; other
        chunks are merged across columns first).
    plan : ExposurePlan
        From :func:`daskcal.tasks.exposure.exposure_plan`.

    Returns
    -------
    xarray.Dataset
        Same shape and coords: image and variance calibrated, mask unchanged; with a
        SkyWcs in the plan (``doApplyExternalSkyWcs``), lazy ``ra``/``dec`` coords from
        it replace the calexp's (:func:`daskcal.lazy.coords.with_sky_coords`). Attrs: those
        of ``ds`` plus ``plan``, ``photocalib`` (the new constant PhotoCalib(cbar,
        sigma_c), or None when not recalibrated), ``cbar``, ``sigma_c`` (NaN then),
        ``skywcs`` (AST text of the attached SkyWcs, "" if unchanged) and
        ``uncalibrated`` (why nothing was applied, flag mode).
    """
    out = ds.copy()
    new_pc = plan.new_photocalib()
    out.attrs.update(
        plan=plan,
        photocalib=new_pc,
        cbar=new_pc.mean if new_pc is not None else np.nan,
        sigma_c=new_pc.err if new_pc is not None else np.nan,
        skywcs=plan.wcs_ast,
        uncalibrated=plan.uncalibrated,
    )
    if plan.wcs_ast:
        out = with_sky_coords(out, SkyWcs(plan.wcs_ast))
    if plan.uncalibrated:
        return out
    image, variance = ds["image"].data, ds["variance"].data
    if len(image.chunks[1]) > 1:  # the kernel works on blocks of whole rows
        image, variance = image.rechunk({1: -1}), variance.rechunk({1: -1})
    if plan.skycorr:
        check_skycorr(plan.skycorr, image.shape)
    xy0 = tuple(int(v) for v in ds.attrs["xy0"])
    pair = da.map_blocks(
        _calibrate_block,
        image,
        variance,
        plan=plan,
        xy0=xy0,
        new_axis=0,
        chunks=((2,), *image.chunks),
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
    )
    out["image"] = (("y", "x"), pair[0])
    out["variance"] = (("y", "x"), pair[1])
    return out


def calibrated_exposures(
    repo: Repository,
    ids: Iterable[Mapping[str, Any]] | None = None,
    config: CalibrateConfig | None = None,
    *,
    stack: bool = False,
    chunk_rows: int = 512,
    table: pd.DataFrame | None = None,
) -> list[xr.Dataset] | xr.Dataset:
    """The calibrated exposures (what CALEXP files hold) of some data ids, lazily.

    Parameters
    ----------
    repo : Repository
        Inputs.
    ids : iterable of dict, optional
        Data ids with ``tract`` (partial ids are expanded).
    config : CalibrateConfig, optional
        hscPipe 8 defaults when None.
    stack : bool
        One Dataset with an ``exposure`` dimension indexed by (visit, ccd), ``cbar`` and
        ``sigma_c`` as coords along it, ``ra``/``dec`` as dask arrays
        (:func:`daskcal.lazy.inputs.stack_exposures`); the exposures must share shape and
        xy0.
    chunk_rows : int
        Rows per dask block (one read task per plane and one calibration task each).
    table : pandas.DataFrame, optional
        A calibration table in the order of the expanded ids (refused otherwise); read
        when None.

    Returns
    -------
    list of xarray.Dataset or xarray.Dataset
        One Dataset per CCD (see :func:`calibrated_exposure`; ``attrs["dataid"]``), or
        the stacked Dataset.

    Raises
    ------
    CalibrationMissing
        A CCD lacks a needed calibration (``onMissingCalibration="fail"``) or its skyCorr.
    """
    config = config or CalibrateConfig()
    full, paths = resolve_ids(repo, ids, "calexp", require_tract=True)
    if table is None:
        table = calibration_table(repo, full, config)
    _check_rows_match(table, full)
    datasets = []
    for dataid, path, row in zip(full, paths, table.to_dict("records"), strict=True):
        try:
            plan = exposure_plan(row, config, str(repo.input_path("skyCorr", dataid)))
        except CalibrationMissing as err:
            raise CalibrationMissing(f"{format_id(dataid)}: {err}") from None
        ds = read_exposure(path, chunk_rows=chunk_rows)
        ds.attrs["dataid"] = dataid
        datasets.append(calibrated_exposure(ds, plan))
    return _stack(datasets) if stack else datasets


def _stack(datasets: list[xr.Dataset]) -> xr.Dataset:
    stacked = stack_exposures(datasets).assign_coords(
        cbar=("exposure", [ds.attrs["cbar"] for ds in datasets]),
        sigma_c=("exposure", [ds.attrs["sigma_c"] for ds in datasets]),
    )
    stacked.attrs["skywcs"] = [ds.attrs["skywcs"] for ds in datasets]
    return stacked
