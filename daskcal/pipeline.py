"""The calibrate jobs, start to finish: ids -> plan -> Dask graph -> outputs -> report.

``run_catalog`` is hscPipe's calibrateCatalog.py: it expands the ids, checks the rerun's
provenance, reads the calibration table, then runs one task per CCD (CALSRC + Parquet
fragment) and one per visit (the Parquet file), on whatever cluster the execution options
give. Outputs already present are skipped unless ``redo``; every id ends in the report.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dask

from .calib.table import calibration_table, table_path, write_calibration_table
from .catalog_job import calibrate_catalog_ccd, fragment_path, write_visit_parquet
from .cluster import ExecutionOptions, dask_client
from .config import CalibrateConfig
from .dataid import DataIdError, format_id
from .io.parquet import visit_file
from .provenance import check_and_record
from .repo import Repository
from .report import Outcome, RunReport

__all__ = ["RunOptions", "run_catalog"]

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
    for (tract, filt), part in table.groupby(["tract", "filter"], sort=True):
        write_calibration_table(part, table_path(repo.output_dir, int(tract), str(filt)))


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
    full = expand_ids(repo, ids)
    repo.ensure_output()
    check_and_record(
        repo.output_dir,
        "calibrateCatalog",
        config.to_dict(),
        clobber_config=options.clobber_config,
        clobber_versions=options.clobber_versions,
        no_versions=options.no_versions,
    )
    report = RunReport("calibrateCatalog")
    calibrated = repo.output_dir / "calibrated"
    work = calibrated / ".work" / "src-fragments"
    parquet_root = calibrated / "parquet" / "src"
    todo, by_visit = [], defaultdict(list)
    for dataid in full:
        src = repo.find("src", dataid)
        out = repo.output_path("calibrated_src", dataid)
        visit_key = (dataid["tract"], dataid["filter"], dataid["visit"])
        if src is None:
            report.add(
                Outcome(dataid, "failed", reason=f"no src: {repo.input_path('src', dataid)}")
            )
        elif out.exists() and not options.redo:
            report.add(Outcome(dataid, "skipped", output=str(out)))
            by_visit.setdefault(visit_key, [])
        else:
            todo.append((dataid, src, out))
    with dask_client(execution, len(todo)) as client:
        table = calibration_table(repo, [d for d, _, _ in todo], config)
        if len(table):
            _save_tables(repo, table)
        rows = table.to_dict("records")
        tasks = []
        for (dataid, src, out), row in zip(todo, rows, strict=True):
            task = dask.delayed(calibrate_catalog_ccd, pure=False)(
                dataid,
                str(src),
                str(out),
                str(fragment_path(work, dataid)),
                row,
                config,
                options.doraise,
                dask_key_name=f"calsrc-{dataid['visit']}-{dataid['ccd']}",
            )
            tasks.append(task)
            by_visit[(dataid["tract"], dataid["filter"], dataid["visit"])].append(task)
        visit_tasks = []
        for (tract, filt, visit), ccd_tasks in sorted(by_visit.items()):
            exists = visit_file(parquet_root, tract, filt, visit).exists()
            if not ccd_tasks and exists:
                continue
            visit_id = {"tract": tract, "filter": filt, "visit": visit}
            visit_tasks.append(
                dask.delayed(write_visit_parquet, pure=False)(
                    str(parquet_root),
                    str(work),
                    str(calibrated),
                    visit_id,
                    ccd_tasks,
                    dask_key_name=f"parquet-{tract}-{filt}-{visit}",
                )
            )
        results = _compute(tasks + visit_tasks, client, options.progress)
    for outcome in results:
        report.add(outcome)
    report.elapsed = time.monotonic() - start
    stamp = time.strftime("%Y%m%dT%H%M%S")
    saved = repo.output_dir / "calibrated" / "reports" / f"calibrateCatalog-{stamp}.json"
    report.save(saved)
    report.path = str(saved)
    if report.failed:
        log.warning("%d of %d data ids failed; report: %s", len(report.failed), len(full), saved)
    return report
