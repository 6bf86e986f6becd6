"""The state of one calibrate run: what each command does per CCD and per visit (``Job``)
and what the driver tracks while it runs (``RunState``): the CCDs left per visit, the
calibration-table rows to save, the report. :mod:`daskcal.runs.calibrate` drives it.
"""

from __future__ import annotations

import logging
import signal
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..calexp import config_digest
from ..calib.table import merge_table_rows, row_datasets, table_records
from ..dataid import DataIdError, format_id
from ..layout import OutputLayout
from ..records import CcdWork, plan_ccd
from ..repo import OUTPUT_DATASETS, Repository, RepositoryError
from ..report import Outcome, RunReport
from .driver import Call
from .listing import Listings, first_existing

__all__ = ["ROWS_PER_FLUSH", "Job", "RunState", "group_size", "visit_key"]

log = logging.getLogger("daskcal")

#: Calibration-table rows held by the driver before they are merged into the tables.
ROWS_PER_FLUSH = 2000


@dataclass(frozen=True)
class Job:
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


def visit_key(dataid: Mapping[str, Any]) -> tuple[int, str, int]:
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


class RunState:
    """The state of one run: what is left per visit, table rows to save, the report."""

    def __init__(self, job: Job, repo: Repository, full: list[dict], config, options) -> None:
        self.job, self.repo, self.full = job, repo, full
        self.config, self.options = config, options
        self.digest = config_digest(config)
        self.report = RunReport(job.task)
        self.left = Counter(visit_key(d) for d in full)
        self.pointing = {visit_key(d): d["pointing"] for d in full}
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
                len(group) == self.group or visit_key(group[0].dataid) != visit_key(dataid)
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
        key = visit_key(outcome.dataid)
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
