"""Plots of a tract's visits against time, and of the time the run spent per CCD."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .maps import FIGURE_COLOUR, MapImage

__all__ = ["seconds_histogram", "tract_trends"]

_DPI = 90
_OUTLIER = "#d0009a"


def tract_trends(visits: pd.DataFrame, outlier_visits: Sequence[int] = ()) -> MapImage:
    """Each visit's zero point and mean astrometric shift against time, per filter.

    Parameters
    ----------
    visits : pandas.DataFrame
        One tract's rows of :func:`~daskcal.qa.tables.visit_table` (``visit``, ``filter``,
        ``mjd``, ``zp_per_second`` or ``zp``, ``mean_shift_mas``).
    outlier_visits : sequence of int
        Visits ringed in magenta.

    Returns
    -------
    MapImage
        The PNG, and per visit (number, ``x,y,r`` circle in image pixels, hover text) for
        an HTML image map.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 5.2), dpi=_DPI, facecolor=FIGURE_COLOUR)
    canvas = FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    per_second = bool(visits["zp_per_second"].notna().any())
    zp = visits["zp_per_second"] if per_second else visits["zp"]
    label = "zero point (mag, 1 count/s)" if per_second else "zero point (mag)"
    time = visits["mjd"].to_numpy(float)
    dated = bool(np.isfinite(time).any())
    origin = float(np.floor(np.nanmin(time))) if dated else 0.0
    time = time - origin if dated else np.arange(len(visits), dtype=float)  # else: in order
    points = []
    for filt, members in visits.groupby("filter", sort=True):
        rows = members.index
        x = time[visits.index.get_indexer(rows)]
        for ax, y in ((top, zp.loc[rows]), (bottom, visits.loc[rows, "mean_shift_mas"])):
            ax.plot(x, y.to_numpy(float), "o", label=str(filt), markersize=5)
            points += [(ax, v, xi, yi) for v, xi, yi in zip(members["visit"], x, y, strict=True)]
    for ax, visit, x, y in points:
        if visit in outlier_visits and np.isfinite(y):
            ax.plot([x], [y], "o", markersize=11, markerfacecolor="none", color=_OUTLIER)
    top.set_ylabel(label, fontsize=8)
    bottom.set_ylabel("mean shift calexp -> jointcal (mas)", fontsize=8)
    bottom.set_xlabel(f"days since MJD {origin:.0f}" if dated else "visits, in order", fontsize=8)
    top.legend(fontsize=7, loc="best")
    for ax in (top, bottom):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    canvas.draw()
    width, height = (int(v) for v in canvas.get_width_height())
    areas = []
    for ax, visit, x, y in points:
        if np.isfinite(x) and np.isfinite(y):
            px, py = ax.transData.transform((x, y))
            areas.append((int(visit), f"{px:.0f},{height - py:.0f},6", f"visit {visit}"))
    return MapImage(_png(fig), width, height, areas)


def seconds_histogram(seconds: Mapping[str, Sequence[float]]) -> bytes | None:
    """A histogram of the time the run spent per CCD.

    Parameters
    ----------
    seconds : mapping of str to sequence of float
        Task -> seconds per CCD (:attr:`RunSummary.seconds`).

    Returns
    -------
    bytes or None
        PNG; None when nothing was timed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = {task: np.asarray(v, float) for task, v in seconds.items()}
    series = {task: v[np.isfinite(v)] for task, v in series.items() if np.isfinite(v).any()}
    if not series:
        return None
    fig = Figure(figsize=(6.0, 2.6), dpi=_DPI, facecolor=FIGURE_COLOUR)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    high = max(float(v.max()) for v in series.values())
    bins = np.linspace(0.0, high * 1.05 if high > 0 else 1.0, 30)
    for task, values in series.items():
        ax.hist(values, bins=bins, histtype="step", linewidth=1.5, label=task)
    ax.set_xlabel("seconds per CCD", fontsize=8)
    ax.set_ylabel("CCDs", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, facecolor=FIGURE_COLOUR)
    return buffer.getvalue()
