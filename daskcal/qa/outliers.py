"""Outliers: CCDs and visits whose metric lies more than ``n_mad`` MAD from the tract median.

For a scalar metric the distance is ``|value - median|``; for a vector metric (a shift,
East and North) it is the length of ``value - median`` (medians per component). The MAD
is the median of these distances over the group (the tract, or the tract and filter for
magnitudes), floored at ``mad_floor_mmag`` / ``mad_floor_mas``; a group of fewer than
``min_count`` values flags nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .options import QAOptions

__all__ = ["CCD_METRICS", "OUTLIER_COLUMNS", "VISIT_METRICS", "Metric", "find_outliers"]


@dataclass(frozen=True)
class Metric:
    """A quantity tested for outliers.

    Attributes
    ----------
    name : str
        Its name in the outlier table.
    label : str
        What it is, for people.
    unit : str
        ``mmag`` or ``mas`` (chooses the MAD floor).
    category : str
        ``photometric`` or ``astrometric``: the map it belongs to.
    columns : tuple of str
        One column (scalar) or the East and North columns (vector), in ``unit``.
    per_filter : bool
        Compared within its filter (magnitudes) or the whole tract.
    """

    name: str
    label: str
    unit: str
    category: str
    columns: tuple[str, ...]
    per_filter: bool


CCD_METRICS = (
    Metric("phot_field", "zero point - visit median", "mmag", "photometric",
           ("phot_field_mmag",), True),
    Metric("phot_calexp", "zero-point change from the calexp's PhotoCalib", "mmag",
           "photometric", ("phot_calexp_mmag",), True),
    Metric("phot_repeat", "star magnitudes - other visits", "mmag", "photometric",
           ("phot_repeat_mmag",), True),
    Metric("astro_shift", "shift calexp WCS -> jointcal WCS", "mas", "astrometric",
           ("shift_east_mas", "shift_north_mas"), False),
    Metric("astro_repeat", "star positions - other visits", "mas", "astrometric",
           ("astro_east_mas", "astro_north_mas"), False),
)  # fmt: skip
"""The CCD metrics tested (columns of the per-CCD metrics table)."""
VISIT_METRICS = (
    Metric("visit_zeropoint", "visit zero point (1 count/s)", "mmag", "photometric",
           ("zp_per_second_mmag",), True),
    Metric("visit_shift", "visit mean shift calexp -> jointcal", "mas", "astrometric",
           ("mean_shift_mas",), False),
)  # fmt: skip
"""The visit metrics tested (columns of the per-visit table)."""
OUTLIER_COLUMNS = (
    "level", "category", "metric", "label", "unit", "tract", "filter", "visit", "ccd",
    "value", "median", "deviation", "mad", "n_mad",
)  # fmt: skip


def _metric_outliers(
    frame: pd.DataFrame, metric: Metric, options: QAOptions, level: str
) -> pd.DataFrame:
    if not set(metric.columns) <= set(frame.columns) or frame.empty:
        return pd.DataFrame(columns=list(OUTLIER_COLUMNS))
    keys = ["tract", "filter"] if metric.per_filter else ["tract"]
    values = frame[list(metric.columns)].astype(float)
    grouped = values.groupby([frame[k] for k in keys])
    median = grouped.transform("median")
    offsets = values - median
    distance = np.sqrt((offsets**2).sum(axis=1, min_count=1))
    by_key = distance.groupby([frame[k] for k in keys])
    mad = by_key.transform("median")
    count = by_key.transform("count")
    floor = options.mad_floor_mmag if metric.unit == "mmag" else options.mad_floor_mas
    scale = np.maximum(mad.fillna(0.0), floor)
    flagged = (count >= options.min_count) & (distance > options.n_mad * scale)
    scalar = len(metric.columns) == 1
    column = metric.columns[0]
    out = pd.DataFrame({
        "level": level, "category": metric.category, "metric": metric.name,
        "label": metric.label, "unit": metric.unit, "tract": frame["tract"],
        "filter": frame["filter"], "visit": frame["visit"],
        "ccd": frame["ccd"] if "ccd" in frame else -1,
        "value": values[column] if scalar else np.hypot(values.iloc[:, 0], values.iloc[:, 1]),
        "median": median[column] if scalar else np.hypot(median.iloc[:, 0], median.iloc[:, 1]),
        "deviation": offsets[column] if scalar else distance,
        "mad": scale, "n_mad": distance / scale,
    })  # fmt: skip
    return out[flagged.to_numpy()]


def find_outliers(ccds: pd.DataFrame, visits: pd.DataFrame, options: QAOptions) -> pd.DataFrame:
    """Every CCD and visit beyond ``n_mad`` MAD of its tract median, worst first.

    Parameters
    ----------
    ccds : pandas.DataFrame
        Per-CCD metrics (tract, filter, visit, ccd and the columns of :data:`CCD_METRICS`).
    visits : pandas.DataFrame
        Per-visit metrics (tract, filter, visit and the columns of :data:`VISIT_METRICS`).
    options : QAOptions
        ``n_mad``, ``min_count`` and the MAD floors.

    Returns
    -------
    pandas.DataFrame
        :data:`OUTLIER_COLUMNS`: ``level`` (``ccd`` or ``visit``), the metric, where, its
        value, the tract median, the deviation (signed for scalars, the length of the
        offset for vectors), the MAD used and the distance in MADs.
    """
    parts = [_metric_outliers(ccds, m, options, "ccd") for m in CCD_METRICS]
    parts += [_metric_outliers(visits, m, options, "visit") for m in VISIT_METRICS]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame(columns=list(OUTLIER_COLUMNS))
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values("n_mad", ascending=False, ignore_index=True)
