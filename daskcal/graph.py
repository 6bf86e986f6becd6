"""Lazy calibrated collections for notebooks: nothing is written, nothing read until used.

:func:`calibrated_catalogs` zips the src partitions (one per CCD) with the rows of the
calibration table, partition by partition, and maps the pure catalog kernel over them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import dask.dataframe as dd
import pandas as pd

from .calib.table import calibration_table
from .catalog_job import CalibrationMissing, calibrated_frame
from .collections import catalogs_from_paths, resolve_ids
from .config import CalibrateConfig
from .dataid import format_id
from .repo import Repository

__all__ = ["calibrated_catalogs"]


def _row_frame(row: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame([row])


def _calibrate_partition(
    df: pd.DataFrame, row: pd.DataFrame, config: CalibrateConfig
) -> pd.DataFrame:
    record = row.iloc[0].to_dict()
    try:
        return calibrated_frame(df, record, config)
    except CalibrationMissing as err:
        ids = {k: record[k] for k in ("visit", "ccd", "tract")}
        raise CalibrationMissing(f"{format_id(ids)}: {err}") from None


def calibrated_catalogs(
    repo: Repository,
    ids: Iterable[Mapping[str, Any]] | None = None,
    config: CalibrateConfig | None = None,
    *,
    table: pd.DataFrame | None = None,
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
        expanded ids; read from the repository when None.

    Returns
    -------
    dask.dataframe.DataFrame
        One partition per CCD: the src columns (coordinates recomputed), the data-id
        columns and the calibrated ``*_flux``, ``*_mag``, ``*_fluxErr``, ``*_magErr``.
    """
    config = config or CalibrateConfig()
    full, paths = resolve_ids(repo, ids, "src", require_tract=True)
    catalogs = catalogs_from_paths(full, paths)
    if table is None:
        table = calibration_table(repo, full, config)
    rows = dd.from_map(_row_frame, table.to_dict("records"), meta=table.iloc[:0])
    meta_row = {**table.iloc[0].to_dict(), "missing": "", "errors": ""}
    meta = calibrated_frame(catalogs._meta, meta_row, config)
    return catalogs.map_partitions(
        _calibrate_partition, rows, config, meta=meta, align_dataframes=False
    )
