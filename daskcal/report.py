"""The run report: one line per data id (done, skipped, failed with reason, output).

Outcomes have a kind: ``ccd`` (a data id), ``visit`` (a visit's Parquet file),
``quicklook`` (a visit's PNG) or ``table`` (a calibration lookup table). A CCD written
uncalibrated in flag mode is ``done`` with ``extra["uncalibrated"]`` saying why, and is
counted as flagged. A run stopped by a signal records it in ``interrupted``.
"""

from __future__ import annotations

import json
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .io.atomic import atomic_write

__all__ = ["Outcome", "RunReport"]

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

    def add(self, outcome: Outcome) -> None:
        """Record one outcome."""
        self.outcomes.append(outcome)

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

    def table(self, keys: tuple[str, ...] = ("visit", "ccd")) -> str:
        """Aligned text table, failures first."""
        order = {"failed": 0, "done": 1, "skipped": 2}
        rows = [
            (*(str(o.dataid.get(k, "")) for k in keys), o.status, _detail(o))
            for o in sorted(self.outcomes, key=lambda o: order[o.status])
        ]
        header = (*keys, "status", "reason / output")
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(keys) + 1)]
        lines = [
            "  ".join(f"{c:<{w}}" for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
            for r in [header, *rows]
        ]
        return "\n".join(line.rstrip() for line in lines)

    def save(self, path: Path) -> None:
        """Write the report as JSON (atomically)."""
        payload = {
            "task": self.task,
            "summary": self.summary(),
            "elapsed_s": self.elapsed,
            "interrupted": signal.Signals(self.interrupted).name if self.interrupted else "",
            "problems": self.problems,
            "outcomes": [asdict(o) for o in self.outcomes],
        }
        with atomic_write(path) as tmp:
            Path(tmp).write_text(json.dumps(payload, indent=1, default=str) + "\n")


def _detail(o: Outcome) -> str:
    if o.reason:
        return o.reason
    if o.extra.get("uncalibrated"):
        return f"flagged uncalibrated ({o.extra['uncalibrated']}): {o.output}"
    return o.output
