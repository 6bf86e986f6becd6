"""What a run would do, without doing it: ``--dry-run`` plans and ``daskcal info``'s
stale and corrupt outputs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..calexp import config_digest
from ..config import CalibrateConfig
from ..records import CcdWork
from ..repo import Repository
from ..report import Outcome, format_table
from ..tasks.catalog import (
    catalog_inputs,
)
from ..tasks.exposure import exposure_inputs
from .state import Job, RunState

__all__ = ["RunPlan", "output_states", "plan_only"]


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


def plan_only(job: Job, repo: Repository, full: list[dict], config, options) -> RunPlan:
    run = RunState(job, repo, full, config, options)
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
