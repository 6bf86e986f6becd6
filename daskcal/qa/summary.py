"""The run summary of a QA report: what the saved run reports of a rerun say.

Every saved report (``calibrated/reports/*.jsonl``, read with
:func:`daskcal.report.read_report`, partial ones included) is listed with its summary
line; for each task the *latest* outcome of each data id counts (runs in the order they
started), so a CCD that failed and was redone later is done. Failures and flagged CCDs
are listed with their one-line reasons; the seconds per CCD are those of the latest
outcome that computed the CCD (``extra["seconds"]``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..dataid import format_id
from ..layout import OutputLayout
from ..report import read_report
from .targets import recorded_configs, recorded_versions

__all__ = ["RunSummary", "run_summary"]

_KEY_FIELDS = ("tract", "visit", "ccd", "filter")
_STATUSES = ("done", "skipped", "failed", "flagged")


@dataclass
class RunSummary:
    """What the rerun's reports, configuration and versions record.

    Attributes
    ----------
    runs : list of dict
        Per saved report: ``task``, ``file``, ``started`` (text), ``summary``,
        ``elapsed_s``, ``complete``, ``interrupted``, ``problems``.
    counts : dict of str to dict
        Task -> status (done, skipped, failed, flagged) -> CCDs, latest outcome of each.
    failed, flagged : list of dict
        ``task``, ``kind``, ``id`` (text), ``visit``, ``ccd``, ``reason``.
    seconds : dict of str to list of float
        Task -> seconds per computed CCD.
    timing : dict of str to dict
        Task -> ``n``, ``median``, ``p90``, ``max``, ``total`` seconds.
    configs : dict of str to dict
        Task -> recorded configuration.
    versions : dict of str to str
        Recorded package versions.
    """

    runs: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    failed: list[dict[str, Any]] = field(default_factory=list)
    flagged: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, list[float]] = field(default_factory=dict)
    timing: dict[str, dict[str, float]] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


def _started(report: Mapping[str, Any], path: Path) -> float:
    value = report.get("started")
    return float(value) if isinstance(value, int | float) else path.stat().st_mtime


def _wanted(outcome: Mapping[str, Any], keys: set[tuple] | None, visits: set | None) -> bool:
    if keys is None:
        return True
    dataid = outcome.get("dataid") or {}
    if outcome.get("kind", "ccd") == "ccd":
        return (dataid.get("visit"), dataid.get("ccd")) in keys
    return dataid.get("visit") in visits if "visit" in dataid else True


def _entry(task: str, outcome: Mapping[str, Any], reason: str) -> dict[str, Any]:
    dataid = outcome.get("dataid") or {}
    return {
        "task": task,
        "kind": outcome.get("kind", "ccd"),
        "id": format_id(dataid) if dataid else "",
        "visit": dataid.get("visit"),
        "ccd": dataid.get("ccd"),
        "reason": reason,
    }


def run_summary(
    rerun_dir: str | os.PathLike, ids: Iterable[Mapping[str, Any]] | None = None
) -> RunSummary:
    """Summarise the saved reports of an output rerun.

    Parameters
    ----------
    rerun_dir : path
        The output rerun (``calibrated/reports`` and ``config`` under it).
    ids : iterable of mapping, optional
        Restrict to these data ids (by visit and ccd; visit outcomes by visit).

    Returns
    -------
    RunSummary
    """
    rerun_dir = Path(rerun_dir)
    summary = RunSummary(configs=recorded_configs(rerun_dir),
                         versions=recorded_versions(rerun_dir))  # fmt: skip
    ids = None if ids is None else list(ids)
    keys = None if ids is None else {(d["visit"], d["ccd"]) for d in ids}
    visits = None if ids is None else {d["visit"] for d in ids}
    loaded = []
    for path in sorted(OutputLayout(rerun_dir).reports.glob("*.jsonl")):
        try:
            report = read_report(path)
        except (OSError, UnicodeDecodeError):
            continue
        loaded.append((_started(report, path), path, report))
    latest: dict[tuple, tuple[str, dict[str, Any]]] = {}
    for started, path, report in sorted(loaded, key=lambda item: item[0]):
        task = str(report.get("task", "?"))
        summary.runs.append({
            "task": task, "file": path.name,
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
            "summary": report.get("summary", "(incomplete: the run did not finish)"),
            "elapsed_s": report.get("elapsed_s"), "complete": report.get("complete", False),
            "interrupted": report.get("interrupted", ""), "problems": report.get("problems", []),
        })  # fmt: skip
        for outcome in report["outcomes"]:
            if isinstance(outcome, dict) and _wanted(outcome, keys, visits):
                dataid = outcome.get("dataid") or {}
                key = (task, outcome.get("kind", "ccd"), *(dataid.get(k) for k in _KEY_FIELDS))
                latest[key] = (task, outcome)
    _tally(summary, latest.values())
    return summary


def _tally(summary: RunSummary, outcomes: Iterable[tuple[str, dict[str, Any]]]) -> None:
    for task, outcome in outcomes:
        status, extra = outcome.get("status", ""), outcome.get("extra") or {}
        kind = outcome.get("kind", "ccd")
        if status == "failed":
            summary.failed.append(_entry(task, outcome, str(outcome.get("reason", ""))))
        if kind != "ccd":
            continue
        counts = summary.counts.setdefault(task, dict.fromkeys(_STATUSES, 0))
        if status in counts:
            counts[status] += 1
        if status == "done" and extra.get("uncalibrated"):
            counts["flagged"] += 1
            summary.flagged.append(_entry(task, outcome, f"uncalibrated: {extra['uncalibrated']}"))
        seconds = extra.get("seconds")
        if isinstance(seconds, int | float) and status == "done":
            summary.seconds.setdefault(task, []).append(float(seconds))
    for task, values in summary.seconds.items():
        v = np.asarray(values)
        summary.timing[task] = {"n": int(v.size), "median": float(np.median(v)),
                                "p90": float(np.percentile(v, 90)), "max": float(v.max()),
                                "total": float(v.sum())}  # fmt: skip
