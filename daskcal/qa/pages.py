"""The pages of a QA report: one per visit (a Dask task each) and the index."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .html import render_page, write_page
from .options import QAOptions
from .summary import RunSummary
from .visit_maps import visit_maps

__all__ = ["SECTIONS", "write_index_page", "write_visit_page"]

SECTIONS = (
    ("photometric", "Photometric correction"),
    ("astrometric", "Astrometric correction"),
    ("sky", "Sky correction"),
    ("sources", "Sources (CALSRC)"),
)


def _grids(rows: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, np.ndarray]]:
    grids = {}
    for row in rows:
        if row.get("work") and Path(row["work"]).is_file():
            with np.load(row["work"]) as data:
                grids[int(row["ccd"])] = {k: data[k] for k in data.files}
    return grids


def write_visit_page(
    path: str | os.PathLike,
    visit: Mapping[str, Any],
    ccds: Sequence[Mapping[str, Any]],
    outliers: Sequence[Mapping[str, Any]],
    options: QAOptions,
    neighbours: tuple[Mapping[str, Any] | None, Mapping[str, Any] | None] = (None, None),
) -> str:
    """Draw a visit's maps and write its page.

    Parameters
    ----------
    path : path
        The page to write.
    visit : mapping
        Its row of the visit table (tract, visit, filter, mjd, n_ccds, zp_per_second,
        mean_shift_mas).
    ccds : sequence of mapping
        Its CCD metrics rows (with ``work``, the CCD's saved grids).
    outliers : sequence of mapping
        Its rows of the outlier table.
    options : QAOptions
        Shown with the outlier table.
    neighbours : (mapping or None, mapping or None)
        Previous and next visits (``tract``, ``visit``) for the navigation links.

    Returns
    -------
    str
        The page written.
    """
    flagged: dict[str, list[int]] = {}
    for o in outliers:
        if o["level"] == "ccd":
            flagged.setdefault(o["metric"], []).append(int(o["ccd"]))
    zps = np.array([c.get("zp", math.nan) for c in ccds], dtype=float)
    median_zp = float(np.nanmedian(zps)) if np.isfinite(zps).any() else math.nan
    maps = visit_maps(ccds, _grids(ccds), {"median_zp": median_zp}, flagged)
    html = render_page(
        "visit.html", visit=visit, ccds=ccds, outliers=outliers, maps=maps,
        sections=SECTIONS, options=vars(options),
        outlier_ccds={int(o["ccd"]) for o in outliers if o["level"] == "ccd"},
        previous=neighbours[0], next=neighbours[1],
    )  # fmt: skip
    return str(write_page(path, html))


def write_index_page(
    path: str | os.PathLike,
    *,
    repo: str,
    rerun: str,
    version: str,
    generated: str,
    tracts: Sequence[Mapping[str, Any]],
    outliers: Sequence[Mapping[str, Any]],
    summary: RunSummary,
    seconds_png: bytes | None,
    problems: Sequence[Mapping[str, Any]],
    options: QAOptions,
    n_ccds: int,
) -> Path:
    """Write the index page.

    Parameters
    ----------
    path : path
        ``calibrated/qa/index.html``.
    repo, rerun, version, generated : str
        What the header says.
    tracts : sequence of mapping
        Per tract: ``tract``, ``trend`` (a :class:`~daskcal.qa.maps.MapImage`) and
        ``visits`` (visit-table rows with ``n_outliers``).
    outliers : sequence of mapping
        The outlier table, worst first.
    summary : RunSummary
        What the saved reports say.
    seconds_png : bytes or None
        Histogram of the seconds per CCD.
    problems : sequence of mapping
        ``id`` and ``problems`` of the CCDs the QA could not fully measure.
    options : QAOptions
        The options used.
    n_ccds : int
        CCDs measured.

    Returns
    -------
    Path
        The page written.
    """
    n_visits = sum(len(t["visits"]) for t in tracts)
    html = render_page(
        "index.html", repo=repo, rerun=rerun, version=version, generated=generated,
        tracts=tracts, outliers=outliers, summary=summary, seconds_png=seconds_png,
        problems=problems, options=vars(options), n_ccds=n_ccds, n_visits=n_visits,
    )  # fmt: skip
    return write_page(path, html)
