"""What an output was made from, and whether it is still what a run would make now.

Every CCD output daskcal writes (CALEXP, CALSRC) carries a *record*: a short digest of the
task, the configuration and the identity of each input file (its path relative to the
repository, size and modification time; ``None`` for an input that was absent). It is
stored in the output's primary header as ``DASKCAL_RECORD``, with ``DASKCAL_NHDU``, the
number of HDUs written, so that a truncated file is recognised. A visit's Parquet file
records the digests of the CALSRC files it was built from.

A run computes the record it would write now and compares: an output is *current* when
it is structurally whole and its record is the same; otherwise it is *stale* (other
inputs or another configuration), *corrupt* (truncated) or *missing*, and is redone.
:func:`output_state` and :func:`ccd_action` are plain functions on plain values, tested
without Dask.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io.integrity import NHDU_KEY, inspect_fits, primary_cards

__all__ = [
    "NHDU_CARD",
    "RECORD_CARD",
    "Action",
    "CcdPlan",
    "CcdWork",
    "ccd_action",
    "inspect_output",
    "file_identity",
    "make_record",
    "output_state",
    "plan_ccd",
    "read_record",
]

RECORD_CARD = "DASKCAL_RECORD"
NHDU_CARD = NHDU_KEY
STATES = ("missing", "current", "stale", "corrupt")


def file_identity(path: str | os.PathLike | None, root: str | os.PathLike) -> list | None:
    """``[path relative to root, size, mtime_ns]`` of an input file, or None if absent."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    path, root = os.fspath(path), os.fspath(root).rstrip(os.sep)
    if path.startswith(root + os.sep):
        relative = path[len(root) + 1 :]
    else:
        relative = os.path.relpath(path, root)
    return [relative, st.st_size, st.st_mtime_ns]


def make_record(
    task: str, config_digest: str, inputs: Mapping[str, str | os.PathLike | None], root
) -> str:
    """The record (16 hex digits) of an output made by ``task`` from ``inputs`` now.

    Parameters
    ----------
    task : str
        ``calibrateCatalog`` or ``calibrateExposure``.
    config_digest : str
        :func:`daskcal.calexp.config_digest` of the configuration.
    inputs : mapping of role to path or None
        Every input the output depends on (None: absent, as in flag mode).
    root : path
        The repository root (paths are recorded relative to it).

    Examples
    --------
    >>> make_record("t", "c", {"src": None}, "/") == make_record("t", "c", {"src": None}, "/")
    True
    >>> make_record("t", "c", {"src": None}, "/") == make_record("t", "d", {"src": None}, "/")
    False
    """
    identity = {role: file_identity(path, root) for role, path in sorted(inputs.items())}
    text = json.dumps([task, config_digest, identity], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_record(path: str | os.PathLike) -> tuple[str, int | None]:
    """(``DASKCAL_RECORD``, ``DASKCAL_NHDU``) of an output; ("", None) where absent."""
    cards = primary_cards(path, (RECORD_CARD, NHDU_CARD))
    nhdu = cards.get(NHDU_CARD)
    return str(cards.get(RECORD_CARD, "")), int(nhdu) if isinstance(nhdu, int) else None


def inspect_output(path: str | os.PathLike) -> tuple[str, str | None]:
    """(``DASKCAL_RECORD`` or "", what is wrong with the file's structure or None), read in
    one pass: the HDU count it must have comes from its ``DASKCAL_NHDU``."""
    cards, problem = inspect_fits(path, (RECORD_CARD,), count_key=NHDU_CARD)
    return str(cards.get(RECORD_CARD, "")), problem


def output_state(path: str | os.PathLike, wanted: str) -> tuple[str, str]:
    """(state, detail) of a CCD output against the record a run would write now.

    ``state`` is one of ``missing``, ``current``, ``stale``, ``corrupt``.
    """
    if not os.path.lexists(path):
        return "missing", ""
    if not Path(path).is_file():
        return "corrupt", "not a regular file"
    recorded, problem = inspect_output(path)
    if problem:
        return "corrupt", problem
    if not recorded:
        return "stale", "no daskcal record"
    if recorded != wanted:
        return "stale", "made from other inputs or another config"
    return "current", ""


@dataclass(frozen=True)
class Action:
    """What a run does with one CCD output: ``run`` it (and why) or ``skip`` it."""

    run: bool
    why: str = ""


def ccd_action(state: str, redo: bool) -> Action:
    """The plan for one CCD output in a given state.

    >>> ccd_action("current", redo=False)
    Action(run=False, why='')
    >>> ccd_action("current", redo=True)
    Action(run=True, why='redo')
    >>> ccd_action("stale", redo=False)
    Action(run=True, why='stale')
    """
    if state not in STATES:
        raise ValueError(f"unknown output state {state!r}")
    if state == "current":
        return Action(True, "redo") if redo else Action(False)
    return Action(True, "new" if state == "missing" else state)


@dataclass(frozen=True)
class CcdWork:
    """What one CCD task needs, as plain values that travel to any worker.

    Attributes
    ----------
    dataid : dict
        The full data id.
    inputs : dict of str to str or None
        Dataset name -> the file found along the rerun's lookup chain (None: absent).
    expected : dict of str to str
        Dataset name -> where an absent one was looked for (for messages).
    output : str
        The output file.
    root : str
        The repository root (input paths are recorded relative to it).
    redo : bool
        Recompute the output even when it is current.
    table_record : str
        The ``row_record`` of this CCD's row in the calibration table ("" if none): the
        task returns a new row when it differs from the row it would make now.
    """

    dataid: dict[str, Any]
    inputs: dict[str, str | None]
    expected: dict[str, str] = field(default_factory=dict)
    output: str = ""
    root: str = "/"
    redo: bool = False
    table_record: str = ""

    def record(self, task: str, config_digest: str, datasets) -> str:
        """:func:`make_record` over some of the inputs."""
        return make_record(
            task, config_digest, {d: self.inputs.get(d) for d in datasets}, self.root
        )

    def paths(self) -> dict[str, Path | None]:
        """The inputs as paths (None where absent)."""
        return {name: Path(p) if p else None for name, p in self.inputs.items()}

    def expected_paths(self) -> dict[str, Path]:
        """Where absent inputs were looked for, as paths."""
        return {name: Path(p) for name, p in self.expected.items()}


@dataclass(frozen=True)
class CcdPlan:
    """What a run does with one CCD, decided from its output and its table row.

    Attributes
    ----------
    record, row_record : str
        The record its output would get now, and that of its calibration-table row.
    state, detail : str
        The output's state (:func:`output_state`) and why.
    action : Action
        Whether the output is (re)made.
    row_needed : bool
        Whether the table's row is not the one it would get now.
    """

    record: str
    row_record: str
    state: str
    detail: str
    action: Action
    row_needed: bool

    @property
    def why(self) -> str:
        """Why the output is made, e.g. ``stale (made from other inputs ...)``."""
        return self.action.why + (f" ({self.detail})" if self.detail else "")

    @property
    def nothing_to_do(self) -> bool:
        """The output is current and so is its table row."""
        return not self.action.run and not self.row_needed


def plan_ccd(
    work: CcdWork,
    task: str,
    config_digest: str,
    output_datasets: tuple[str, ...],
    row_datasets: tuple[str, ...],
) -> CcdPlan:
    """The plan for one CCD: the records it would write and what to (re)make."""
    record = work.record(task, config_digest, output_datasets)
    row_record = work.record("calibration", config_digest, row_datasets)
    state, detail = output_state(work.output, record)
    action = ccd_action(state, work.redo)
    return CcdPlan(record, row_record, state, detail, action, work.table_record != row_record)
