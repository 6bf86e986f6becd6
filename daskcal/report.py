"""The run report: one line per data id (done, skipped, failed with reason, output)."""

from __future__ import annotations

import json
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
    def exit_code(self) -> int:
        """0 when nothing failed, 1 otherwise."""
        return 1 if self.failed else 0

    def summary(self) -> str:
        """One line: counts per status."""
        n = sum(o.kind == "ccd" for o in self.outcomes)
        parts = [f"{self.count(s)} {s}" for s in STATUSES]
        text = f"{self.task}: {n} data ids: " + ", ".join(parts)
        visits = [o for o in self.outcomes if o.kind == "visit"]
        if visits:
            written, bad = self.count("done", "visit"), self.count("failed", "visit")
            text += f"; visit Parquet files: {written} written"
            text += f", {bad} failed" if bad else ""
        return text

    def table(self, keys: tuple[str, ...] = ("visit", "ccd")) -> str:
        """Aligned text table, failures first."""
        order = {"failed": 0, "done": 1, "skipped": 2}
        rows = [
            (*(str(o.dataid.get(k, "")) for k in keys), o.status, o.reason or o.output)
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
            "outcomes": [asdict(o) for o in self.outcomes],
        }
        with atomic_write(path) as tmp:
            Path(tmp).write_text(json.dumps(payload, indent=1, default=str) + "\n")
