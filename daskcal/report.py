"""The run report: one line per data id (done, skipped, failed with reason, output).

Outcomes have a kind: ``ccd`` (a data id), ``visit`` (a visit's Parquet file),
``quicklook`` (a visit's PNG) or ``table`` (a calibration lookup table). A CCD written
uncalibrated in flag mode is ``done`` with ``extra["uncalibrated"]`` saying why, and is
counted as flagged. A run stopped by a signal records it in ``interrupted``.

A saved report is a JSON-lines file written as the run goes: a first line with the task,
one line per outcome as it arrives (flushed), and a last line with the summary. A run
killed outright leaves a readable partial report (no last line); :func:`read_report`
reads both.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .io.atomic import atomic_write

__all__ = ["Outcome", "RunReport", "format_table", "read_report"]

STATUSES = ("done", "skipped", "failed")


@dataclass
class Outcome:
    """What happened to one data id."""

    dataid: dict[str, Any]
    status: str
    reason: str = ""
    output: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = "ccd"

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} not in {STATUSES}")


@dataclass
class RunReport:
    """All outcomes of one run of a task."""

    task: str
    outcomes: list[Outcome] = field(default_factory=list)
    elapsed: float = 0.0
    path: str = ""
    interrupted: int = 0
    problems: list[str] = field(default_factory=list)
    _stream: Any = field(default=None, repr=False, compare=False)

    def add(self, outcome: Outcome) -> None:
        """Record one outcome (and append it to the report file, if one is open)."""
        self.outcomes.append(outcome)
        if self._stream is not None:
            self._write_line({"outcome": asdict(outcome)})

    def _write_line(self, value: dict[str, Any]) -> None:
        try:
            self._stream.write(json.dumps(value, default=str) + "\n")
            self._stream.flush()
        except OSError as err:
            self.problems.append(f"cannot write the report {self.path}: {err.strerror or err}")
            self._stream = None

    def open(self, path: Path) -> None:
        """Start the report file at ``path``: outcomes are appended as they are added."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = open(path, "x", buffering=1)  # noqa: SIM115 - closed by close()
        except OSError as err:
            self.problems.append(f"cannot save the report {path}: {err.strerror or err}")
            return
        self.path = str(path)
        self._write_line({"task": self.task, "started": time.time(), "pid": os.getpid()})
        for outcome in self.outcomes:
            self._write_line({"outcome": asdict(outcome)})

    def close(self) -> None:
        """Write the last line (summary, problems) and close the report file."""
        if self._stream is None:
            return
        self._write_line(self._footer())
        if self._stream is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._stream.fileno())
            self._stream.close()
            self._stream = None

    def _footer(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "elapsed_s": self.elapsed,
            "interrupted": signal.Signals(self.interrupted).name if self.interrupted else "",
            "problems": self.problems,
        }

    def count(self, status: str, kind: str = "ccd") -> int:
        """Number of outcomes of one kind (``ccd`` or ``visit``) with this status."""
        return sum(o.status == status and o.kind == kind for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        """The failed outcomes."""
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def flagged(self) -> list[Outcome]:
        """The CCDs written uncalibrated (``onMissingCalibration=flag``)."""
        return [o for o in self.outcomes if o.status == "done" and o.extra.get("uncalibrated")]

    @property
    def exit_code(self) -> int:
        """128 + signal when interrupted; 1 when anything failed; 0 otherwise."""
        if self.interrupted:
            return 128 + self.interrupted
        return 1 if self.failed or self.problems else 0

    def summary(self) -> str:
        """One line: counts per status."""
        n = sum(o.kind == "ccd" for o in self.outcomes)
        parts = [f"{self.count(s)} {s}" for s in STATUSES]
        text = f"{self.task}: {n} data ids: " + ", ".join(parts)
        if self.flagged:
            text += f" ({len(self.flagged)} flagged uncalibrated)"
        visits = [o for o in self.outcomes if o.kind == "visit"]
        if visits:
            written, bad = self.count("done", "visit"), self.count("failed", "visit")
            text += f"; visit Parquet files: {written} written"
            text += f", {bad} failed" if bad else ""
        if self.interrupted:
            text += f"; interrupted by {signal.Signals(self.interrupted).name}"
        return text

    def table(
        self, keys: tuple[str, ...] = ("visit", "ccd"), outcomes: list[Outcome] | None = None
    ) -> str:
        """Aligned text table of ``outcomes`` (default: all), failures first."""
        order = {"failed": 0, "done": 1, "skipped": 2}
        rows = [
            (*(str(o.dataid.get(k, "")) for k in keys), o.status, _detail(o))
            for o in sorted(
                self.outcomes if outcomes is None else outcomes, key=lambda o: order[o.status]
            )  # fmt: skip
        ]
        header = (*keys, "status", "reason / output")
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(keys) + 1)]
        lines = [
            "  ".join(f"{c:<{w}}" for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
            for r in [header, *rows]
        ]
        return "\n".join(line.rstrip() for line in lines)

    def save(self, path: Path) -> None:
        """Write the whole report at ``path`` (atomically), in the format of :meth:`open`."""
        lines = [{"task": self.task, "started": None, "pid": os.getpid()}]
        lines += [{"outcome": asdict(o)} for o in self.outcomes]
        lines.append(self._footer())
        with atomic_write(path) as tmp:
            Path(tmp).write_text("".join(json.dumps(v, default=str) + "\n" for v in lines))


def read_report(path: str | os.PathLike) -> dict[str, Any]:
    """A saved report as one dict: task, summary, elapsed_s, interrupted, problems,
    outcomes (list of dicts) and ``complete`` (False when the run never finished it)."""
    report: dict[str, Any] = {"outcomes": [], "complete": False}
    with open(path) as f:
        for line in f:
            try:
                value = json.loads(line)
            except ValueError:  # a line cut by a kill
                break
            if "outcome" in value:
                report["outcomes"].append(value["outcome"])
            elif "summary" in value:
                report.update(value, complete=True)
            else:
                report.update(value)
    return report


def _detail(o: Outcome) -> str:
    if o.reason:
        return o.reason
    if o.extra.get("uncalibrated"):
        return f"flagged uncalibrated ({o.extra['uncalibrated']}): {o.output}"
    return o.output


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> str:
    """An aligned text table; the columns numbered in ``right`` are right-aligned.

    >>> print(format_table(("name", "n"), [("calexp", "3"), ("src", "12")], right=[1]))
    name     n
    calexp   3
    src     12
    """
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
