"""The Gen2 ``registry.sqlite3`` of a demo repository (tables ``raw`` and ``raw_visit``)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from ..io.atomic import atomic_write
from .model import DemoConfig

__all__ = ["RAW_COLUMNS", "write_registry"]

RAW_COLUMNS = ("field", "visit", "ccd", "pointing", "filter", "dateObs", "taiObs", "expTime",
               "pa", "proposal", "config", "autoguider", "ccdTemp")  # fmt: skip
_SCHEMA = """
CREATE TABLE raw (id INTEGER PRIMARY KEY AUTOINCREMENT, field TEXT, visit INT, ccd INT,
    pointing INT, filter TEXT, dateObs TEXT, taiObs TEXT, expTime DOUBLE, pa DOUBLE,
    proposal TEXT, config TEXT, autoguider INT, ccdTemp DOUBLE, UNIQUE(visit, ccd));
CREATE TABLE raw_visit (visit INT, field TEXT, filter TEXT, dateObs TEXT, taiObs TEXT,
    pointing INT, UNIQUE(visit));
"""


def write_registry(path: str | os.PathLike, config: DemoConfig, rows: Sequence[dict]) -> Path:
    """Write the registry atomically: one ``raw`` row per CCD, one ``raw_visit`` per visit.

    Rows are sorted by (visit, ccd) so the file does not depend on task order.
    """
    rows = sorted(rows, key=lambda r: (r["visit"], r["ccd"]))
    visits = {r["visit"]: r for r in rows}
    with atomic_write(path) as tmp:
        with sqlite3.connect(tmp) as conn:
            conn.executescript(_SCHEMA)
            placeholders = ", ".join("?" * len(RAW_COLUMNS))
            conn.executemany(
                f"INSERT INTO raw ({', '.join(RAW_COLUMNS)}) VALUES ({placeholders})",
                [tuple(r[c] for c in RAW_COLUMNS) for r in rows],
            )
            conn.executemany(
                "INSERT INTO raw_visit VALUES (?, ?, ?, ?, ?, ?)",
                [(v, r["field"], r["filter"], r["dateObs"], r["taiObs"], r["pointing"])
                 for v, r in visits.items()],
            )  # fmt: skip
        conn.close()
    return Path(path)
