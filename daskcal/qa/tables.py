"""The per-CCD and per-visit metric tables of a QA report.

Per CCD: what :func:`~daskcal.qa.ccd.measure_ccd` measured, its repeatability offsets
(:func:`~daskcal.qa.repeat.repeatability`), the ``sip_max_error_mas`` of its calibration
table row, and ``phot_field_mmag``: its zero point minus the median zero point of its
visit's CCDs. Per visit: the medians and means the tract trends plot.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..layout import OutputLayout
from .repeat import REPEAT_COLUMNS

__all__ = ["MEASURED", "ccd_table", "sip_table_errors", "visit_table"]

ID_COLUMNS = ("tract", "filter", "visit", "ccd")
#: What :func:`~daskcal.qa.ccd.measure_ccd` may measure (NaN where it could not).
MEASURED = (
    "zp", "phot_calexp_mmag", "shift_east_mas", "shift_north_mas", "shift_mas",
    "shift_rms_mas", "sip_error_mas", "sky_mean", "sky_min", "sky_max", "sky_range",
    "n_sources", "n_stars", "psf_ap_mmag", "psf_ap_n", "mjd", "exptime",
)  # fmt: skip


def sip_table_errors(
    rerun_dir: str | os.PathLike, tract_filters: Iterable[tuple[int, str]]
) -> pd.DataFrame:
    """The TAN-SIP errors recorded in the calibration tables.

    Parameters
    ----------
    rerun_dir : path
        The output rerun.
    tract_filters : iterable of (int, str)
        The (tract, filter) tables ``calib-<filter>.parquet`` to read.

    Returns
    -------
    pandas.DataFrame
        tract, visit, ccd, ``sip_max_error_mas``; absent tables or columns left out.
    """
    import pyarrow.parquet as pq

    parts = []
    for tract, filt in sorted(set(tract_filters)):
        path = OutputLayout(rerun_dir).table(tract, filt)
        try:
            names = set(pq.read_schema(path).names)
        except (OSError, ValueError):
            continue
        if {"visit", "ccd", "sip_max_error_mas"} <= names:
            table = pd.read_parquet(path, columns=["visit", "ccd", "sip_max_error_mas"])
            parts.append(table.assign(tract=tract))
    if not parts:
        return pd.DataFrame(columns=["tract", "visit", "ccd", "sip_max_error_mas"])
    return pd.concat(parts, ignore_index=True).drop_duplicates(["tract", "visit", "ccd"])


def ccd_table(
    rows: Iterable[Mapping[str, Any]], repeat: pd.DataFrame, sip: pd.DataFrame
) -> pd.DataFrame:
    """The per-CCD table of a report.

    Parameters
    ----------
    rows : iterable of mapping
        What :func:`~daskcal.qa.ccd.measure_ccd` returned.
    repeat : pandas.DataFrame
        Repeatability offsets, index (tract, visit, ccd).
    sip : pandas.DataFrame
        :func:`sip_table_errors`.

    Returns
    -------
    pandas.DataFrame
        One row per CCD, sorted by tract, visit, ccd: the measured columns (NaN where not
        measured), the repeatability, ``sip_max_error_mas`` and ``phot_field_mmag``.
    """
    table = pd.DataFrame([dict(r) for r in rows])
    if table.empty:
        return pd.DataFrame(columns=[*ID_COLUMNS, *MEASURED, *REPEAT_COLUMNS, "phot_field_mmag"])
    for column in MEASURED:
        if column not in table:
            table[column] = math.nan
    table = table.join(repeat.reindex(columns=list(REPEAT_COLUMNS)), on=["tract", "visit", "ccd"])
    table = table.merge(sip, on=["tract", "visit", "ccd"], how="left")
    visit_median = table.groupby(["tract", "visit"])["zp"].transform("median")
    table["phot_field_mmag"] = (table["zp"] - visit_median) * 1e3
    return table.sort_values(["tract", "visit", "ccd"], ignore_index=True)


def visit_table(ccds: pd.DataFrame) -> pd.DataFrame:
    """The per-visit table of a report: one row per (tract, visit).

    Parameters
    ----------
    ccds : pandas.DataFrame
        :func:`ccd_table`.

    Returns
    -------
    pandas.DataFrame
        tract, visit, filter, mjd, exptime, n_ccds, zp, mean_shift_mas, repeat_mas,
        zp_per_second, zp_per_second_mmag.

    Notes
    -----

    ``zp`` is the median of the CCD zero points (mag of one count), ``zp_per_second``
    the same for one count per second of exposure; ``mean_shift_mas`` the mean over the
    CCDs of the length of their mean shift calexp -> jointcal, ``repeat_mas`` the
    median of their star-position offsets against the other visits.
    """
    if ccds.empty:
        return pd.DataFrame(columns=["tract", "visit", "filter", "zp_per_second_mmag"])
    grouped = ccds.groupby(["tract", "visit"], sort=True)
    out = grouped.agg(
        filter=("filter", "first"),
        mjd=("mjd", "median"),
        exptime=("exptime", "median"),
        n_ccds=("ccd", "size"),
        zp=("zp", "median"),
        mean_shift_mas=("shift_mas", "mean"),
        repeat_mas=("astro_repeat_mas", "median"),
    ).reset_index()
    with np.errstate(divide="ignore", invalid="ignore"):
        per_second = out["zp"] + 2.5 * np.log10(out["exptime"].where(out["exptime"] > 0))
    out["zp_per_second"] = per_second
    out["zp_per_second_mmag"] = per_second * 1e3
    return out
