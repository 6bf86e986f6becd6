"""The calibrate runs, start to finish: ids -> plan -> tasks -> outputs -> report.

``run_catalog`` is hscPipe's calibrateCatalog.py and ``run_exposure`` its
calibrateExposure.py; both are one :func:`_run` over a :class:`~daskcal.runs.state.Job`
that says what a CCD task and a visit task are. A run:

1. expands the ids (ids with no data are reported, not fatal, as hscPipe does);
2. takes the output rerun's lock (:mod:`daskcal.runs.lock`: one writer per rerun),
   checks and records the provenance, removes temporary files of killed runs;
3. streams one task per CCD through the driver (:mod:`daskcal.runs.driver`, a bounded
   window of tasks in flight): each task decides itself whether its output is current
   (:mod:`daskcal.records`) and skips it, or (re)makes it; a CCD whose input is missing
   fails without a task;
4. submits each visit's task (Parquet file, quick-look PNG) as soon as its last CCD is
   finished: it rebuilds the visit product whenever the set of CCD outputs changed;
5. merges the calibration-table rows the tasks returned into ``calib-<filter>.parquet``;
6. saves the report, where every data id ends, whatever stopped the run: SIGINT or
   SIGTERM records what finished, reports the rest as interrupted and re-raises
   (:class:`~daskcal.runs.driver.RunInterrupted`, exit code 128 + signal in the CLI).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import CalibrateConfig
from ..dataid import DataIdError, format_id
from ..errors import RunSetupError
from ..layout import OutputLayout
from ..records import CcdWork
from ..repo import Repository
from ..report import RunReport
from ..tasks.catalog import (
    calibrate_catalog_ccds,
    catalog_inputs,
    write_visit_parquet,
)
from ..tasks.exposure import calibrate_exposure_ccd, exposure_inputs
from ..tasks.quicklook import write_visit_quicklook
from .cluster import ExecutionOptions, dask_client
from .driver import RunInterrupted, drive, handle_signals, remove_temporaries
from .lock import RerunLock
from .plan import RunPlan, output_states, plan_only
from .provenance import check_and_record
from .state import Job, RunState

__all__ = ["RunOptions", "RunPlan", "expand_ids", "output_states", "run_catalog", "run_exposure"]

log = logging.getLogger("daskcal")


@dataclass(frozen=True)
class RunOptions:
    """What a run may do beyond the configuration (hscPipe's command-line switches).

    Attributes
    ----------
    redo : bool
        Recompute outputs that are current.
    doraise : bool
        Stop at the first failure, with its traceback.
    clobber_config, clobber_versions, no_versions : bool
        Provenance policy (see :func:`daskcal.runs.provenance.check_and_record`).
    progress : bool
        Log progress lines during long runs.
    window : int
        CCD tasks in flight at most (bounds the driver's and the scheduler's memory).
    group : int
        CCDs per catalog task (0: one up to 20,000 ids, more beyond; see
        :func:`group_size`).
    dry_run : bool
        Expand and plan only: return a :class:`RunPlan`, write nothing, start no cluster.
    """

    redo: bool = False
    doraise: bool = False
    clobber_config: bool = False
    clobber_versions: bool = False
    no_versions: bool = False
    progress: bool = True
    window: int = 1000
    group: int = 0
    dry_run: bool = False


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


def _open_report(repo: Repository, report: RunReport) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    name = f"{report.task}-{stamp}-{os.getpid()}-{secrets.token_hex(2)}.jsonl"
    report.open(OutputLayout(repo.output_dir).reports / name)


def _close_report(report: RunReport, start: float) -> None:
    report.elapsed = time.monotonic() - start
    report.close()
    for problem in report.problems:
        log.error("%s", problem)
    if report.failed:
        n = sum(o.kind == "ccd" for o in report.outcomes)
        log.warning(
            "%d of %d data ids failed; report: %s", len(report.failed), n, report.path or "-"
        )


def _prepare_output(repo: Repository) -> None:
    try:
        repo.ensure_output()
        OutputLayout(repo.output_dir).calibrated.mkdir(exist_ok=True)
    except OSError as err:
        raise RunSetupError(
            f"cannot write in output rerun {repo.output_dir}: {err.strerror or err}"
        ) from None


def _run(
    job: Job,
    repo: Repository,
    ids: Iterable[Mapping[str, Any]],
    config: CalibrateConfig,
    execution: ExecutionOptions,
    options: RunOptions,
    client: Any = None,
) -> RunReport:
    start = time.monotonic()
    with handle_signals():
        full = expand_ids(repo, ids)
        if options.dry_run:
            plan = plan_only(job, repo, full, config, options)
            plan.elapsed = time.monotonic() - start
            return plan
        _prepare_output(repo)
        with RerunLock(repo.output_dir, job.task):
            try:
                check_and_record(
                    repo.output_dir,
                    job.task,
                    config.to_dict(),
                    clobber_config=options.clobber_config,
                    clobber_versions=options.clobber_versions,
                    no_versions=options.no_versions,
                )
            except OSError as err:
                raise RunSetupError(
                    f"cannot record the configuration in {repo.output_dir}: {err.strerror or err}"
                ) from None
            remove_temporaries(OutputLayout(repo.output_dir).calibrated)
            run = RunState(job, repo, full, config, options)
            _open_report(repo, run.report)
            try:
                with contextlib.ExitStack() as stack:
                    ran = drive(
                        run.calls(),
                        run.on_outcome,
                        connect=lambda: (
                            client or stack.enter_context(dask_client(execution, len(full)))
                        ),
                        window=options.window,
                        doraise=options.doraise,
                        label=job.task if options.progress else "",
                        total=len(full),
                    )
                if not ran:
                    log.info("%s: nothing to do, every output is up to date", job.task)
            except RunInterrupted as interrupt:
                run.interrupted(interrupt.signum)
                interrupt.report = run.report
                raise
            finally:
                run.save_rows()
                _close_report(run.report, start)
    return run.report


def run_catalog(
    repo: Repository,
    ids: Iterable[Mapping[str, Any]],
    config: CalibrateConfig,
    execution: ExecutionOptions | None = None,
    options: RunOptions | None = None,
    *,
    client: Any = None,
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
        Where to run (default: in process), when no ``client`` is given.
    options : RunOptions, optional
        Redo, doraise, provenance policy, progress.
    client : distributed.Client, optional
        Run on this client (the caller's cluster, kept open); else the driver starts what
        ``execution`` says, only if there is work to do.

    Returns
    -------
    RunReport
        One outcome per data id and one per visit Parquet file; saved in the rerun.

    Raises
    ------
    RunInterrupted
        On SIGINT/SIGTERM, after saving the partial report (its ``report`` attribute).
    """
    execution = execution or ExecutionOptions()
    options = options or RunOptions()
    layout = OutputLayout(repo.output_dir)

    def ccds(works: list[CcdWork]):
        return calibrate_catalog_ccds, (works, layout, config, options.doraise)

    def visit(visit_id, outcomes):
        return write_visit_parquet, (layout, visit_id, outcomes)

    job = Job(
        "calibrateCatalog",
        "src",
        "calibrated_src",
        catalog_inputs(config),
        ccds,
        visit,
        group=options.group,
    )
    return _run(job, repo, ids, config, execution, options, client)


def run_exposure(
    repo: Repository,
    ids: Iterable[Mapping[str, Any]],
    config: CalibrateConfig,
    execution: ExecutionOptions | None = None,
    options: RunOptions | None = None,
    *,
    client: Any = None,
    quicklook: bool = False,
    chunk_rows: int = 512,
    codec: str = "daskcal",
) -> RunReport:
    """Run calibrateExposure on some data ids: one CALEXP per CCD.

    Parameters
    ----------
    repo, ids, config, execution, options, client
        As for :func:`run_catalog`.
    quicklook : bool
        Also write a PNG mosaic per visit (``calibrated/<tract>/quicklook/``).
    chunk_rows : int
        Rows calibrated at a time in a worker (bounds its temporaries; it holds one CCD).
    codec : str
        How CALEXP planes are compressed: ``daskcal`` (GZIP_2, several rows a tile, fast
        deflate), ``afw`` (GZIP_2, one row a tile, as hscPipe writes) or ``astropy``
        (exactly what astropy writes); lossless and read by every FITS reader alike.

    Returns
    -------
    RunReport
        One outcome per data id (and per quick-look PNG); saved in the rerun.
    """
    execution = execution or ExecutionOptions()
    options = options or RunOptions()
    layout = OutputLayout(repo.output_dir)

    def ccds(works: list[CcdWork]):
        (work,) = works
        thumb = str(layout.thumbnail(work.dataid)) if quicklook else ""
        args = (work, config, options.doraise, chunk_rows, thumb, codec)
        return calibrate_exposure_ccd, args

    def visit(visit_id, outcomes):
        return write_visit_quicklook, (layout, visit_id, outcomes)

    job = Job(
        "calibrateExposure",
        "calexp",
        "calibrated_exp",
        exposure_inputs(config),
        ccds,
        visit if quicklook else None,
        visit_kind="quicklook",
        sip=True,
    )
    return _run(job, repo, ids, config, execution, options, client)
