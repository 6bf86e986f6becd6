"""The calibrate jobs, start to finish: ids -> plan -> Dask graph -> outputs -> report.

``run_catalog`` is hscPipe's calibrateCatalog.py and ``run_exposure`` its
calibrateExposure.py. Both read like the same table of contents: expand the ids (ids with
no data are reported, not fatal, as hscPipe does), check the rerun's provenance, plan
(missing inputs fail, existing outputs are skipped unless ``redo``), read the calibration
table, then run one task per CCD and one per visit (Parquet file, quick-look PNG) on
whatever cluster the execution options give, and save the report, where every id ends.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import pandas as pd

from .calib.table import (
    calibration_table,
    read_calibration_table,
    table_path,
    write_calibration_table,
)
from .catalog_job import calibrate_catalog_ccd, fragment_path, write_visit_parquet
from .cluster import ExecutionOptions, dask_client
from .config import CalibrateConfig
from .dataid import DataIdError, format_id
from .exposure_job import calibrate_exposure_ccd
from .io.parquet import visit_file
from .provenance import check_and_record
from .quicklook import quicklook_path, thumbnail_path, write_visit_quicklook
from .repo import Repository
from .report import Outcome, RunReport

__all__ = ["RunOptions", "run_catalog", "run_exposure"]

log = logging.getLogger("daskcal")


@dataclass(frozen=True)
class RunOptions:
    """What a run may do beyond the configuration (hscPipe's command-line switches).

    Attributes
    ----------
    redo : bool
        Recompute outputs that already exist.
    doraise : bool
        Stop at the first failure, with its traceback.
    clobber_config, clobber_versions, no_versions : bool
        Provenance policy (see :func:`daskcal.provenance.check_and_record`).
    progress : bool
        Show a progress bar (only on a terminal).
    """

    redo: bool = False
    doraise: bool = False
    clobber_config: bool = False
    clobber_versions: bool = False
    no_versions: bool = False
    progress: bool = True


def _compute(tasks: list, client, progress: bool) -> list:
    """Compute delayed tasks on the client (or in process), with a progress bar."""
    show = progress and sys.stderr.isatty()
    if client is None:
        if show:
            from dask.diagnostics import ProgressBar

            with ProgressBar():
                return list(dask.compute(*tasks))
        return list(dask.compute(*tasks))
    futures = client.compute(tasks)
    if show:
        from distributed import progress as distributed_progress

        distributed_progress(futures)
    return client.gather(futures)


def expand_ids(repo: Repository, ids: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Full data ids with tract; ids with no data are logged (as hscPipe does), not fatal.

    Raises
    ------
    DataIdError
        When no id has data, or an id lacks ``tract``.
    """
    ids = list(ids)
    repo.expand(ids, require_tract=True, allow_missing=True)  # checks tract on every id
    full, unmatched = repo.match(ids)
    if not full:
        raise DataIdError(f"no data in {repo.root} for the given --id")
    if unmatched:
        shown = "; ".join(format_id(d) for d in unmatched[:3])
        more = f" and {len(unmatched) - 3} more" if len(unmatched) > 3 else ""
        log.warning("no data for %s%s", shown, more)
    return full


def _save_tables(repo: Repository, table) -> None:
    """Save the rows in each ``calib-<filter>.parquet``, replacing those of the same CCDs.

    A re-run that completes a few CCDs keeps the rows of the others.
    """
    for (tract, filt), part in table.groupby(["tract", "filter"], sort=True):
        path = table_path(repo.output_dir, int(tract), str(filt))
        if path.exists():
            old = read_calibration_table(path)
            kept = ~old.set_index(["visit", "ccd"]).index.isin(
                part.set_index(["visit", "ccd"]).index
            )
            if kept.any():
                part = pd.concat([old[kept], part], ignore_index=True)
                part = part.sort_values(["visit", "ccd"], kind="stable", ignore_index=True)
        write_calibration_table(part, path)


def _begin(
    repo: Repository,
    ids: Iterable[Mapping[str, Any]],
    config: CalibrateConfig,
    options: RunOptions,
    task: str,
) -> tuple[list[dict[str, Any]], RunReport]:
    """Expand the ids (see :func:`expand_ids`), then check and record the provenance."""
    full = expand_ids(repo, ids)
    repo.ensure_output()
    check_and_record(
        repo.output_dir,
        task,
        config.to_dict(),
        clobber_config=options.clobber_config,
        clobber_versions=options.clobber_versions,
        no_versions=options.no_versions,
    )
    return full, RunReport(task)


def _plan(
    repo: Repository,
    full: list[dict[str, Any]],
    dataset: str,
    output: str,
    report: RunReport,
    redo: bool,
) -> list[tuple[dict[str, Any], Path, Path]]:
    """The (id, input, output) left to do; missing inputs fail, existing outputs are skipped."""
    todo = []
    for dataid in full:
        found, out = repo.find(dataset, dataid), repo.output_path(output, dataid)
        if found is None:
            reason = f"no {dataset}: {repo.input_path(dataset, dataid)}"
            report.add(Outcome(dataid, "failed", reason=reason))
        elif out.exists() and not redo:
            report.add(Outcome(dataid, "skipped", output=str(out)))
        else:
            todo.append((dataid, found, out))
    return todo


def _table_rows(repo: Repository, todo: list, config: CalibrateConfig, with_sip: bool = False):
    """The calibration-table rows of the ids to do (the tables are saved in the rerun)."""
    table = calibration_table(repo, [d for d, _, _ in todo], config, with_sip=with_sip)
    if len(table):
        _save_tables(repo, table)
    return table.to_dict("records")


def _visit_key(dataid: Mapping[str, Any]) -> tuple[int, str, int]:
    return (dataid["tract"], dataid["filter"], dataid["visit"])


def _visit_tasks(
    report: RunReport,
    todo: list,
    ccd_tasks: list,
    func: Callable[..., Outcome],
    exists: Callable[[int, str, int], bool],
    label: str,
    *args: Any,
) -> list:
    """One ``func(*args, visit_id, ccd_outcomes)`` task per visit with a CCD done or skipped.

    A visit whose CCDs were all skipped is left out when its output ``exists``.
    """
    groups: dict[tuple[int, str, int], list] = defaultdict(list)
    for outcome in report.outcomes:
        if outcome.status == "skipped":
            groups.setdefault(_visit_key(outcome.dataid), [])
    for (dataid, _, _), task in zip(todo, ccd_tasks, strict=True):
        groups[_visit_key(dataid)].append(task)
    tasks = []
    for (tract, filt, visit), members in sorted(groups.items()):
        if not members and exists(tract, filt, visit):
            continue
        visit_id = {"tract": tract, "filter": filt, "visit": visit}
        key = f"{label}-{tract}-{filt}-{visit}"
        tasks.append(dask.delayed(func, pure=False)(*args, visit_id, members, dask_key_name=key))
    return tasks


def _finish(repo: Repository, report: RunReport, results: list, start: float, n: int):
    """Record the outcomes, save the report in the rerun and warn about failures."""
    for outcome in results:
        report.add(outcome)
    report.elapsed = time.monotonic() - start
    stamp = time.strftime("%Y%m%dT%H%M%S")
    saved = repo.output_dir / "calibrated" / "reports" / f"{report.task}-{stamp}.json"
    report.save(saved)
    report.path = str(saved)
    if report.failed:
        log.warning("%d of %d data ids failed; report: %s", len(report.failed), n, saved)
    return report


def run_catalog(
    repo: Repository,
    ids: Iterable[Mapping[str, Any]],
    config: CalibrateConfig,
    execution: ExecutionOptions | None = None,
    options: RunOptions | None = None,
) -> RunReport:
    """Run calibrateCatalog on some data ids.

    Parameters
    ----------
    repo : Repository
        Inputs and output rerun.
    ids : iterable of dict
        Data ids (partial ids are expanded; ``tract`` is required).
    config : CalibrateConfig
        The calibration configuration.
    execution : ExecutionOptions, optional
        Where to run (default: in process).
    options : RunOptions, optional
        Redo, doraise, provenance policy, progress.

    Returns
    -------
    RunReport
        One outcome per data id and one per visit Parquet file; saved in the rerun.
    """
    execution = execution or ExecutionOptions()
    options = options or RunOptions()
    start = time.monotonic()
    full, report = _begin(repo, ids, config, options, "calibrateCatalog")
    todo = _plan(repo, full, "src", "calibrated_src", report, options.redo)
    calibrated = repo.output_dir / "calibrated"
    work = calibrated / ".work" / "src-fragments"
    parquet_root = calibrated / "parquet" / "src"
    with dask_client(execution, len(todo)) as client:
        rows = _table_rows(repo, todo, config)
        tasks = [
            dask.delayed(calibrate_catalog_ccd, pure=False)(
                dataid,
                str(src),
                str(out),
                str(fragment_path(work, dataid)),
                row,
                config,
                options.doraise,
                dask_key_name=f"calsrc-{dataid['visit']}-{dataid['ccd']}",
            )
            for (dataid, src, out), row in zip(todo, rows, strict=True)
        ]
        visit_tasks = _visit_tasks(
            report,
            todo,
            tasks,
            write_visit_parquet,
            lambda t, f, v: visit_file(parquet_root, t, f, v).exists(),
            "parquet",
            str(parquet_root),
            str(work),
            str(calibrated),
        )
        results = _compute(tasks + visit_tasks, client, options.progress)
    return _finish(repo, report, results, start, len(full))


def run_exposure(
    repo: Repository,
    ids: Iterable[Mapping[str, Any]],
    config: CalibrateConfig,
    execution: ExecutionOptions | None = None,
    options: RunOptions | None = None,
    *,
    quicklook: bool = False,
    chunk_rows: int = 512,
) -> RunReport:
    """Run calibrateExposure on some data ids: one CALEXP per CCD.

    Parameters
    ----------
    repo, ids, config, execution, options
        As for :func:`run_catalog`.
    quicklook : bool
        Also write a PNG mosaic per visit (``calibrated/<tract>/quicklook/``).
    chunk_rows : int
        Rows calibrated at a time in a worker (bounds its temporaries; it holds one CCD).

    Returns
    -------
    RunReport
        One outcome per data id (and per quick-look PNG); saved in the rerun.
    """
    execution = execution or ExecutionOptions()
    options = options or RunOptions()
    start = time.monotonic()
    full, report = _begin(repo, ids, config, options, "calibrateExposure")
    todo = _plan(repo, full, "calexp", "calibrated_exp", report, options.redo)
    calibrated = repo.output_dir / "calibrated"
    thumbs = calibrated / ".work" / "quicklook"
    with dask_client(execution, len(todo)) as client:
        rows = _table_rows(repo, todo, config, with_sip=True)
        tasks = [
            dask.delayed(calibrate_exposure_ccd, pure=False)(
                dataid,
                str(calexp),
                str(out),
                row,
                config,
                str(repo.input_path("skyCorr", dataid)),
                options.doraise,
                chunk_rows,
                str(thumbnail_path(thumbs, dataid)) if quicklook else "",
                dask_key_name=f"calexp-{dataid['visit']}-{dataid['ccd']}",
            )
            for (dataid, calexp, out), row in zip(todo, rows, strict=True)
        ]
        visit_tasks = []
        if quicklook:
            visit_tasks = _visit_tasks(
                report,
                todo,
                tasks,
                write_visit_quicklook,
                lambda t, f, v: quicklook_path(calibrated, t, v).exists(),
                "quicklook",
                str(calibrated),
                str(thumbs),
            )
        results = _compute(tasks + visit_tasks, client, options.progress)
    return _finish(repo, report, results, start, len(full))
