"""The errors of per-CCD work and how a failure becomes its one-line reason."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "CalibrationMissing",
    "uncalibrated_reason",
    "OutputWriteError",
    "RunSetupError",
    "failure_reason",
    "writing_output",
]


class CalibrationMissing(RuntimeError):
    """A CCD's calibration products are missing, unreadable or invalid."""


def uncalibrated_reason(row: Mapping[str, Any], on_missing: str) -> str:
    """The missing-calibration rule, for a calibration-table row: what to do with a CCD.

    A product present but unreadable or invalid (the row's ``errors``) always fails the CCD;
    a missing one (``missing``) fails it with ``onMissingCalibration="fail"`` and, with
    ``"flag"``, leaves it uncalibrated: the reason is returned ("" when nothing is missing).

    Raises
    ------
    CalibrationMissing
        Naming what is missing or wrong.

    Examples
    --------
    >>> uncalibrated_reason({"missing": "no jointcal_wcs", "errors": ""}, "flag")
    'no jointcal_wcs'
    >>> uncalibrated_reason({"missing": "", "errors": ""}, "fail")
    ''
    """
    missing, errors = (str(row.get(k) or "") for k in ("missing", "errors"))
    if errors or (missing and on_missing == "fail"):
        problems = "; ".join(p for p in (missing, errors) if p)
        raise CalibrationMissing(f"calibration unavailable: {problems}")
    return missing


class OutputWriteError(OSError):
    """An output could not be written (full disk, read-only folder); names the output."""


def writing_output(write: Callable[[], object], out_path: str) -> None:
    """Run ``write()``; an OSError becomes an :class:`OutputWriteError` naming the output.

    A full disk or a read-only folder is the output's problem, not the input's: the reason
    must name the file that could not be written.
    """
    try:
        write()
    except OutputWriteError:
        raise
    except OSError as err:
        what = err.strerror or " ".join(str(err).split())
        raise OutputWriteError(f"cannot write {out_path}: {what}") from None


def failure_reason(err: Exception, path: str) -> str:
    """One line for a failed data id: the error, naming ``path`` when it does not already.

    Errors that are not the expected kinds (I/O, bad values, missing calibration) also
    name their type and where they were raised, as they point at a bug.
    """
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, OutputWriteError):
        return text
    if path not in text and not isinstance(err, CalibrationMissing):
        text = f"{path}: {text}"
    if isinstance(err, (OSError, ValueError, KeyError, CalibrationMissing)):
        return text
    frame = traceback.extract_tb(err.__traceback__)[-1]
    return f"{type(err).__name__}: {text} ({Path(frame.filename).name}:{frame.lineno})"


class RunSetupError(RuntimeError):
    """A run cannot start: its output rerun cannot be written (read-only, full disk)."""
