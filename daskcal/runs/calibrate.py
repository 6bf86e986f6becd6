"""The calibrate runs, start to finish: ids -> plan -> tasks -> outputs -> report.

``run_catalog`` is hscPipe's calibrateCatalog.py and ``run_exposure`` its
calibrateExposure.py; both are one :func:`_run` over a :class:`_Job` that says what a CCD
task and a visit task are. A run:

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
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..calexp import config_digest
from ..calib.table import merge_table_rows, row_datasets, table_records
from ..config import CalibrateConfig
from ..dataid import DataIdError, format_id
from ..errors import RunSetupError
from ..exposure_job import calibrate_exposure_ccd, exposure_inputs
from ..layout import OutputLayout
from ..records import CcdWork, plan_ccd
from ..repo import OUTPUT_DATASETS, Repository, RepositoryError
from ..report import Outcome, RunReport, format_table
from ..tasks.catalog import (
    calibrate_catalog_ccds,
    catalog_inputs,
    write_visit_parquet,
)
from ..tasks.quicklook import write_visit_quicklook
from .cluster import ExecutionOptions, dask_client
from .driver import Call, RunInterrupted, drive, handle_signals, remove_temporaries
from .listing import Listings, first_existing
from .lock import RerunLock
from .provenance import check_and_record

__all__ = ["RunOptions", "RunPlan", "expand_ids", "output_states", "run_catalog", "run_exposure"]

log = logging.getLogger("daskcal")

#: Calibration-table rows held by the driver before they are merged into the tables.
ROWS_PER_FLUSH = 2000


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


@dataclass(frozen=True)
class _Job:
    """What one command does per CCD (or group of CCDs) and per visit.

    ``ccds(works)`` and ``visit(visit_id, outcomes)`` give ``(function, args)`` of a task;
    ``record_inputs`` are the datasets an output's record covers.
    """

    task: str
    input: str
    output: str
    record_inputs: tuple[str, ...]
    ccds: Callable[[list[CcdWork]], tuple[Callable[..., Any], tuple]]
    visit: Callable[[dict, list[Outcome]], tuple[Callable[..., Outcome], tuple]] | None
    visit_kind: str = "visit"
    sip: bool = False
    group: int = 1  # CCDs per task; 0: chosen from the number of ids (group_size)


def _visit_key(dataid: Mapping[str, Any]) -> tuple[int, str, int]:
    return (dataid["tract"], dataid["filter"], dataid["visit"])


def group_size(n_ids: int, requested: int = 0, per_task_cap: int = 104) -> int:
    """CCDs per catalog task: 1 up to 20,000 ids, then enough to keep ~20,000 tasks.

    A scheduler sustains a few thousand tasks a second; 10^6 catalog tasks of ~0.2 s
    would keep it, not the workers, busy.

    >>> group_size(5_000), group_size(1_000_000), group_size(10, requested=4)
    (1, 50, 4)
    """
    if requested > 0:
        return requested
    return max(1, min(per_task_cap, -(-n_ids // 20_000)))


class _Run:
    """The state of one run: what is left per visit, table rows to save, the report."""

    def __init__(self, job: _Job, repo: Repository, full: list[dict], config, options) -> None:
        self.job, self.repo, self.full = job, repo, full
        self.config, self.options = config, options
        self.digest = config_digest(config)
        self.report = RunReport(job.task)
        self.left = Counter(_visit_key(d) for d in full)
        self.pointing = {_visit_key(d): d["pointing"] for d in full}
        self.by_visit: dict[tuple, list[Outcome]] = {}
        self.finished: set[tuple[int, int]] = set()
        self.rows: list[dict[str, Any]] = []
        self.tables: dict[tuple[int, str], dict] = {}
        self.layout = OutputLayout(repo.output_dir)
        self.listings = Listings()
        self.folders: dict = {}  # output folders proven inside the output rerun
        self.input_dirs = [str(d) for d in repo.input_dirs]
        self.datasets = tuple(dict.fromkeys((job.input, *row_datasets(config))))
        self.templates = {name: repo.template(name) for name in self.datasets}
        self.started = False  # a task was handed to the driver (a cluster may run)
        self.group = job.group or group_size(len(full))

    def _table_record(self, dataid: Mapping[str, Any]) -> str:
        key = (dataid["tract"], dataid["filter"])
        if key not in self.tables:
            path = self.layout.table(*key)
            try:
                self.tables[key] = table_records(path)
            except (OSError, ValueError) as err:
                log.warning("%s unreadable (%s): its rows are made again", path, err)
                self.tables[key] = {}
        record, sip_ok = self.tables[key].get((dataid["visit"], dataid["ccd"]), ("", False))
        return record if sip_ok or not self.job.sip else ""

    def _find(self, dataset: str, relative: str) -> str | None:
        dirs = self.input_dirs
        if dataset in OUTPUT_DATASETS and self.repo.output_dir != self.repo.input_dir:
            dirs = [str(self.repo.output_dir), *dirs]
        return first_existing([f"{d}/{relative}" for d in dirs], self.listings)

    def _relative(self, dataid: Mapping[str, Any]) -> dict[str, str]:
        """Input paths relative to a rerun (templates filled as strings: no Path objects)."""
        try:
            return {name: self.templates[name] % dataid for name in self.datasets}
        except (KeyError, TypeError):  # let Repository say what is wrong
            return {name: str(self.repo.relative_path(name, dataid)) for name in self.datasets}

    def work(self, dataid: dict[str, Any]) -> CcdWork | Outcome:
        """The task's plain values, or the failed outcome of an id that cannot have one."""
        try:
            out = self.repo.output_path(self.job.output, dataid, checked=self.folders)
            relative = self._relative(dataid)
        except (DataIdError, RepositoryError) as err:
            return Outcome(dataid, "failed", reason=str(err))
        found = {name: self._find(name, path) for name, path in relative.items()}
        expected = {
            name: f"{self.repo.input_dir}/{relative[name]}"
            for name, p in found.items()
            if p is None
        }
        if found[self.job.input] is None:
            return Outcome(
                dataid, "failed", reason=f"no {self.job.input}: {expected[self.job.input]}"
            )
        return CcdWork(
            dataid=dataid,
            inputs=found,
            expected=expected,
            output=str(out),
            root=str(self.repo.root),
            redo=self.options.redo,
            table_record=self._table_record(dataid),
        )

    def plan(self, work: CcdWork):
        """:func:`daskcal.records.plan_ccd` for this run's task and config."""
        return plan_ccd(
            work, self.job.task, self.digest, self.job.record_inputs, row_datasets(self.config)
        )

    def _now(self, outcome: Outcome) -> Iterator[Call]:
        """Record an outcome found by the driver itself; its visit task follows.

        Before any task was handed out, a visit task runs here (its products are most
        likely current): a run with nothing to do never starts a cluster.
        """
        for call in self.record(outcome):
            if self.started:
                yield call
            else:
                self.on_outcome(call, call.func(*call.args))

    def _group_call(self, works: list[CcdWork]) -> Call:
        func, args = self.job.ccds(works)
        first = works[0].dataid
        key = f"{self.job.task}-{first['tract']}-{first['visit']}-{first['ccd']}"
        if len(works) > 1:
            key += f"+{len(works) - 1}"
        info = {"dataids": [w.dataid for w in works]} if len(works) > 1 else {}
        return Call(key, func, args, first, info=info)

    def calls(self) -> Iterator[Call]:
        """The CCD task calls, in groups of one visit's CCDs.

        Until the first CCD that needs work, the driver checks the CCDs itself and records
        those with nothing to do as skipped, without a task.
        """
        checking = not self.options.redo
        group: list[CcdWork] = []
        for dataid in self.full:
            if group and (
                len(group) == self.group or _visit_key(group[0].dataid) != _visit_key(dataid)
            ):
                self.started = True
                yield self._group_call(group)
                group = []
            work = self.work(dataid)
            if isinstance(work, Outcome):
                yield from self._now(work)
                continue
            if checking:
                plan = self.plan(work)
                if plan.nothing_to_do:
                    extra = {"record": plan.record}
                    yield from self._now(
                        Outcome(dataid, "skipped", output=work.output, extra=extra)
                    )
                    continue
                checking = False
            group.append(work)
        if group:
            self.started = True
            yield self._group_call(group)

    def record(self, outcome: Outcome) -> list[Call]:
        """Add an outcome; returns the visit call its visit is now ready for, if any."""
        row = outcome.extra.pop("row", None)
        if row is not None:
            self.rows.append(row)
            if len(self.rows) >= ROWS_PER_FLUSH:
                self.save_rows()
        for warning in outcome.extra.get("warnings", [])[:5]:
            log.warning("%s: %s", format_id(outcome.dataid), warning)
        self.report.add(outcome)
        if outcome.kind != "ccd":
            return []
        key = _visit_key(outcome.dataid)
        self.finished.add((outcome.dataid["visit"], outcome.dataid["ccd"]))
        self.by_visit.setdefault(key, []).append(outcome)
        self.left[key] -= 1
        if self.left[key] or self.job.visit is None:
            return []
        tract, filt, visit = key
        visit_id = {"tract": tract, "filter": filt, "visit": visit, "pointing": self.pointing[key]}
        func, args = self.job.visit(visit_id, self.by_visit.pop(key))
        return [
            Call(f"{self.job.visit_kind}-{tract}-{filt}-{visit}", func, args, visit_id, "visit")
        ]

    def on_outcome(self, call: Call, outcome: Outcome) -> list[Call]:
        if call.kind == "visit":
            outcome.kind = self.job.visit_kind
        return self.record(outcome)

    def save_rows(self) -> None:
        """Merge the rows held into their tables; a failure is a problem of the run."""
        groups: dict[tuple[int, str], list[dict]] = {}
        for row in self.rows:
            groups.setdefault((int(row["tract"]), str(row["filter"])), []).append(row)
        self.rows = []
        for (tract, filt), rows in sorted(groups.items()):
            path = self.layout.table(tract, filt)
            try:
                merge_table_rows(path, rows)
            except (OSError, ValueError) as err:
                what = getattr(err, "strerror", None) or " ".join(str(err).split())
                self.report.problems.append(f"cannot write {path}: {what}")

    def interrupted(self, signum: int) -> None:
        """Report every id without an outcome as interrupted."""
        self.report.interrupted = signum
        name = signal.Signals(signum).name
        for dataid in self.full:
            if (dataid["visit"], dataid["ccd"]) not in self.finished:
                reason = f"interrupted by {name} before it finished"
                self.report.add(Outcome(dataid, "failed", reason=reason))


#: task -> (output dataset, the datasets its record covers under a config)
_OUTPUTS = {
    "calibrateCatalog": ("calibrated_src", catalog_inputs),
    "calibrateExposure": ("calibrated_exp", exposure_inputs),
}


def output_states(
    repo: Repository, ids: Iterable[Mapping[str, Any]], task: str
) -> dict[str, list[tuple[dict[str, Any], str]]]:
    """The state of each existing output of ``task`` for full data ids (``daskcal info``).

    Returns state (``current``, ``stale``, ``corrupt``) -> [(data id, detail)]. Staleness
    is judged against the configuration recorded in the output rerun; without one, an
    output that is whole counts as current.
    """
    import json

    from ..calexp import config_digest
    from ..records import output_state

    dataset, inputs_of = _OUTPUTS[task]
    recorded = repo.output_dir / "config" / f"{task}.json"
    config = None
    if recorded.is_file():
        try:
            config = CalibrateConfig(**json.loads(recorded.read_text()))
        except (ValueError, TypeError):
            config = None
    states: dict[str, list[tuple[dict[str, Any], str]]] = {}
    for dataid in ids:
        path = repo.find(dataset, dataid)
        if path is None:
            continue
        wanted = ""
        if config is not None:
            names = inputs_of(config)
            found = {n: repo.find(n, dataid) for n in names}
            work = CcdWork(dataid, {n: str(p) if p else None for n, p in found.items()},
                           root=str(repo.root))  # fmt: skip
            wanted = work.record(task, config_digest(config), names)
        state, detail = output_state(path, wanted)
        if state == "stale" and config is None:
            state = "current"
        states.setdefault(state, []).append((dataid, detail))
    return states


_PLAN_COLUMNS = ("no input", "new", "stale", "corrupt", "redo", "up to date", "table rows")


@dataclass
class RunPlan:
    """What a run would do (``--dry-run``): counts per (tract, filter) and visits."""

    task: str
    counts: dict[tuple[int, str], Counter]
    visits: dict[tuple[int, str], set[int]]
    elapsed: float = 0.0

    def table(self) -> str:
        """An aligned table: one row per (tract, filter)."""
        header = ("tract", "filter", "visits", "data ids", *_PLAN_COLUMNS)
        rows = []
        for key in sorted(self.counts):
            c = self.counts[key]
            cells = [str(c[col]) for col in _PLAN_COLUMNS]
            ids = sum(c[col] for col in _PLAN_COLUMNS[:-1])
            rows.append((str(key[0]), key[1], str(len(self.visits[key])), str(ids), *cells))
        return format_table(header, rows, right=tuple(range(2, len(header))))

    def summary(self) -> str:
        """One line: what a run would make and skip."""
        total = Counter()
        for c in self.counts.values():
            total.update(c)
        make = sum(total[k] for k in ("new", "stale", "corrupt", "redo"))
        return (
            f"{self.task} dry run: {make} outputs to make, {total['up to date']} up to date, "
            f"{total['no input']} data ids without input; nothing was written"
        )


def _plan_only(job: _Job, repo: Repository, full: list[dict], config, options) -> RunPlan:
    run = _Run(job, repo, full, config, options)
    counts: dict[tuple[int, str], Counter] = {}
    visits: dict[tuple[int, str], set[int]] = {}
    for dataid in full:
        key = (dataid["tract"], dataid["filter"])
        visits.setdefault(key, set()).add(dataid["visit"])
        tally = counts.setdefault(key, Counter())
        work = run.work(dataid)
        if isinstance(work, Outcome):
            tally["no input"] += 1
            continue
        plan = run.plan(work)
        tally["up to date" if not plan.action.run else plan.action.why] += 1
        tally["table rows"] += plan.row_needed
    return RunPlan(job.task, counts, visits)


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
    job: _Job,
    repo: Repository,
    ids: Iterable[Mapping[str, Any]],
    config: CalibrateConfig,
    execution: ExecutionOptions,
    options: RunOptions,
) -> RunReport:
    start = time.monotonic()
    with handle_signals():
        full = expand_ids(repo, ids)
        if options.dry_run:
            plan = _plan_only(job, repo, full, config, options)
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
            run = _Run(job, repo, full, config, options)
            _open_report(repo, run.report)
            try:
                with contextlib.ExitStack() as stack:
                    ran = drive(
                        run.calls(),
                        run.on_outcome,
                        connect=lambda: stack.enter_context(dask_client(execution, len(full))),
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

    job = _Job(
        "calibrateCatalog",
        "src",
        "calibrated_src",
        catalog_inputs(config),
        ccds,
        visit,
        group=options.group,
    )
    return _run(job, repo, ids, config, execution, options)


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
    layout = OutputLayout(repo.output_dir)

    def ccds(works: list[CcdWork]):
        (work,) = works
        thumb = str(layout.thumbnail(work.dataid)) if quicklook else ""
        return calibrate_exposure_ccd, (work, config, options.doraise, chunk_rows, thumb)

    def visit(visit_id, outcomes):
        return write_visit_quicklook, (layout, visit_id, outcomes)

    job = _Job(
        "calibrateExposure",
        "calexp",
        "calibrated_exp",
        exposure_inputs(config),
        ccds,
        visit if quicklook else None,
        visit_kind="quicklook",
        sip=True,
    )
    return _run(job, repo, ids, config, execution, options)
