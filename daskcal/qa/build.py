"""``daskcal qa``: a rerun's QA report, built with Dask.

1. The CCDs with a CALEXP or CALSRC in the output rerun (and matching ``--id``) are listed
   from the file names (:mod:`.targets`).
2. One task per CCD measures it from its files (:func:`~daskcal.qa.ccd.measure_ccd`),
   saving its grids and stars to ``calibrated/.work/qa/<run>/`` and returning scalars;
   one task per tract matches its stars between visits (:mod:`.repeat`).
3. The driver joins the scalars into the CCD and visit tables and finds the outliers.
4. One task per visit draws its maps and writes its page; the driver writes
   ``calibrated/qa/index.html`` and the tables ``ccds.parquet``, ``visits.parquet`` and
   ``outliers.csv`` beside it, and removes the work files.

What the driver holds is a few dozen numbers per CCD; grids and stars go through files.
Without a client the tasks run in this process (``dask.compute`` with the scheduler in
effect); with a ``distributed.Client`` on its workers.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import dask
import pandas as pd

from ..dataid import Selection, format_id
from ..io.atomic import atomic_write
from ..layout import OutputLayout
from ..repo import Repository
from .ccd import measure_ccd
from .html import visit_page_name
from .options import QAOptions
from .outliers import find_outliers
from .pages import write_index_page, write_visit_page
from .repeat import load_stars, repeatability
from .summary import RunSummary, run_summary
from .tables import ccd_table, sip_table_errors, visit_table
from .targets import (
    calibration_datasets,
    ccd_targets,
    output_ids,
    recorded_configs,
    select_ids,
)
from .trends import seconds_histogram, tract_trends

__all__ = ["QAError", "QAReport", "qa_folder", "write_qa_report"]

_ID_KEYS = ("visit", "ccd", "tract", "filter")


class QAError(ValueError):
    """Nothing to report on: no calibrated output matches. The message is one line."""


@dataclass
class QAReport:
    """What :func:`write_qa_report` wrote.

    Attributes
    ----------
    index : Path
        ``calibrated/qa/index.html``.
    pages : list of Path
        The visit pages.
    ccds, visits, outliers : pandas.DataFrame
        The tables of the report (also saved beside it).
    summary : RunSummary
        The run summary.
    """

    index: Path
    pages: list[Path]
    ccds: pd.DataFrame
    visits: pd.DataFrame
    outliers: pd.DataFrame
    summary: RunSummary


def qa_folder(rerun_dir: str | os.PathLike) -> Path:
    """Where a rerun's QA report goes: ``<rerun>/calibrated/qa``."""
    return OutputLayout(rerun_dir).qa


def _compute(client: Any, *collections: Any) -> tuple:
    if client is None:
        return dask.compute(*collections)
    return tuple(client.gather(client.compute(list(collections))))


def _tract_repeat(tract: int, rows: list[dict[str, Any]], options: QAOptions) -> pd.DataFrame:
    offsets = repeatability(load_stars(rows), options)
    return offsets.assign(tract=tract).reset_index().set_index(["tract", "visit", "ccd"])


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dict("records")


def write_qa_report(
    repo: Repository,
    selections: Iterable[Selection] = (),
    options: QAOptions | None = None,
    *,
    client: Any = None,
) -> QAReport:
    """Measure the calibrated CCDs of ``repo``'s output rerun and write the QA report.

    Parameters
    ----------
    repo : Repository
        The repository seen through the rerun that was calibrated (``--rerun IN:OUT``
        or ``OUT``): outputs are read from its output rerun, inputs along its chain.
    selections : iterable of Selection
        ``--id`` selections (:func:`daskcal.dataid.parse_selections`); none: every CCD
        with a CALEXP or CALSRC.
    options : QAOptions, optional
        What is measured and flagged.
    client : distributed.Client, optional
        Run the tasks on this client.

    Returns
    -------
    QAReport

    Raises
    ------
    QAError
        No CALEXP or CALSRC matches.
    """
    options = options or QAOptions()
    selections = list(selections)
    ids = select_ids(repo, output_ids(repo), selections)
    if not ids:
        where = repo.output_dir / "calibrated"
        raise QAError(
            f"no CALEXP or CALSRC in {where}" + (" for the given --id" if selections else "")
        )
    configs = recorded_configs(repo.output_dir)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    work_dir = OutputLayout(repo.output_dir).work / "qa" / token
    try:
        return _write(repo, ids, configs, work_dir, options, client)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _write(repo, ids, configs, work_dir, options, client) -> QAReport:
    targets = ccd_targets(repo, ids, calibration_datasets(configs), work_dir)
    measured, by_tract = [], {}
    for target in targets:
        d = target.dataid
        name = f"qa-ccd-{d['tract']}-{d['visit']}-{d['ccd']}"
        task = dask.delayed(measure_ccd, pure=False)(target, options, dask_key_name=name)
        measured.append(task)
        by_tract.setdefault(d["tract"], []).append(task)
    repeats = [dask.delayed(_tract_repeat, pure=False)(t, rows, options)
               for t, rows in sorted(by_tract.items())]  # fmt: skip
    rows, offsets = _compute(client, measured, repeats)
    tract_filters = {(d["tract"], d["filter"]) for d in ids}
    ccds = ccd_table(rows, pd.concat(offsets), sip_table_errors(repo.output_dir, tract_filters))
    visits = visit_table(ccds)
    outliers = find_outliers(ccds, visits, options)
    folder = qa_folder(repo.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    pages = _compute(client, _page_tasks(folder, ccds, visits, outliers, options))[0]
    for stale in set(folder.glob("visit-*-tract-*.html")) - {Path(p) for p in pages}:
        stale.unlink(missing_ok=True)
    summary = run_summary(repo.output_dir, ids)
    index = _index(folder, repo, ccds, visits, outliers, summary, options)
    _save_tables(folder, ccds, visits, outliers)
    return QAReport(index, [Path(p) for p in pages], ccds, visits, outliers, summary)


def _page_tasks(folder: Path, ccds, visits, outliers, options) -> list:
    """One task per visit writing its page, with its CCD rows and outliers."""
    by_visit = {key: _records(rows) for key, rows in ccds.groupby(["tract", "visit"])}
    flagged = {key: _records(rows) for key, rows in outliers.groupby(["tract", "visit"])}
    order = _records(visits)
    tasks = []
    for i, visit in enumerate(order):
        key = (visit["tract"], visit["visit"])
        neighbours = (order[i - 1] if i else None, order[i + 1] if i + 1 < len(order) else None)
        path = folder / visit_page_name(*key)
        tasks.append(dask.delayed(write_visit_page, pure=False)(
            str(path), visit, by_visit.get(key, []), flagged.get(key, []), options, neighbours,
            dask_key_name=f"qa-page-{key[0]}-{key[1]}",
        ))  # fmt: skip
    return tasks


def _index(folder: Path, repo: Repository, ccds, visits, outliers, summary, options) -> Path:
    tracts = []
    counts = outliers.groupby(["tract", "visit"]).size() if len(outliers) else pd.Series(dtype=int)
    for tract, members in visits.groupby("tract", sort=True):
        flagged = outliers[(outliers["tract"] == tract) & (outliers["level"] == "visit")]
        rows = [{**v, "n_outliers": int(counts.get((tract, v["visit"]), 0))}
                for v in _records(members)]  # fmt: skip
        trend = tract_trends(members.reset_index(drop=True), flagged["visit"].tolist())
        tracts.append({"tract": int(tract), "trend": trend, "visits": rows})
    problems = [
        {"id": format_id({k: r[k] for k in _ID_KEYS}), "problems": r["problems"]}
        for r in _records(ccds)
        if r.get("problems")
    ]
    try:
        version = metadata.version("daskcal")
    except metadata.PackageNotFoundError:
        version = "unknown"
    rerun = repo.rerun or "(repository root)"
    return write_index_page(
        folder / "index.html", repo=str(repo.root), rerun=rerun, version=version,
        generated=time.strftime("%Y-%m-%d %H:%M:%S"), tracts=tracts,
        outliers=_records(outliers), summary=summary,
        seconds_png=seconds_histogram(summary.seconds), problems=problems,
        options=options, n_ccds=len(ccds),
    )  # fmt: skip


def _save_tables(folder: Path, ccds: pd.DataFrame, visits: pd.DataFrame, outliers) -> None:
    for name, frame in (
        ("ccds", ccds.drop(columns=["work"], errors="ignore")),
        ("visits", visits),
    ):
        with atomic_write(folder / f"{name}.parquet") as tmp:
            frame.to_parquet(tmp, index=False)
    with atomic_write(folder / "outliers.csv") as tmp:
        outliers.to_csv(tmp, index=False)
