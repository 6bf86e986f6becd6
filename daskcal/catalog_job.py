"""calibrateCatalog, per CCD: read src, apply the calibration row, write CALSRC + Parquet.

The worker functions take only paths, plain dicts and the frozen config, so they run on
any Dask worker; each returns an :class:`~daskcal.report.Outcome` instead of raising, so
one bad CCD never stops the others (unless ``doraise``).
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .apply import calibrate_catalog
from .calib.table import calibrations_from_row
from .collections import with_ids
from .config import CalibrateConfig
from .dataid import format_id
from .io.catalog import read_catalog, write_catalog
from .io.parquet import arrow_table, merge_fragments, visit_file, write_fragment
from .report import Outcome

__all__ = [
    "UNCALIBRATED_FLAG",
    "calibrate_catalog_ccd",
    "calibrated_frame",
    "parquet_frame",
    "write_visit_parquet",
]

UNCALIBRATED_FLAG = "daskcal_uncalibrated"


class CalibrationMissing(RuntimeError):
    """A CCD's calibration products are missing or unreadable."""


def calibrated_frame(
    df: pd.DataFrame, row: Mapping[str, Any], config: CalibrateConfig
) -> pd.DataFrame:
    """Apply one calibration-table row to one src frame, as the config says.

    A row that lacks a product the config needs raises :class:`CalibrationMissing`, or,
    with ``onMissingCalibration="flag"``, gives the uncalibrated frame with NaN calibrated
    columns and the ``daskcal_uncalibrated`` flag set.
    """
    problems = "; ".join(p for p in (row.get("missing"), row.get("errors")) if p)
    if problems and config.onMissingCalibration == "fail":
        raise CalibrationMissing(f"calibration unavailable: {problems}")
    pc, wcs = calibrations_from_row(row)
    if not config.doApplyExternalPhotoCalib:
        pc = None
    if not config.doApplyExternalSkyWcs:
        wcs = None
    if problems:  # flag mode: same columns as a calibrated frame, NaN values
        out = calibrate_catalog(df, _nan_photocalib(), None, error_rule=config.fluxErrorRule)
        out[UNCALIBRATED_FLAG] = np.ones(len(out), dtype=bool)
        return out
    out = calibrate_catalog(df, pc, wcs, error_rule=config.fluxErrorRule)
    if config.onMissingCalibration == "flag":
        out[UNCALIBRATED_FLAG] = np.zeros(len(out), dtype=bool)
    return out


def _nan_photocalib():
    from .calib.photocalib import PhotoCalib

    return PhotoCalib(np.nan, np.nan)


def parquet_frame(df: pd.DataFrame, dataid: Mapping[str, Any]) -> pd.DataFrame:
    """The Parquet form of a calibrated frame: ids first, ra/dec degrees beside coord_*."""
    out = with_ids(df, dataid)
    position = out.columns.get_loc("coord_dec") + 1 if "coord_dec" in out else len(out.columns)
    out.insert(position, "ra", np.degrees(out["coord_ra"].to_numpy(dtype=float)))
    out.insert(position + 1, "dec", np.degrees(out["coord_dec"].to_numpy(dtype=float)))
    ids = ["tract", "filter", "visit", "ccd", "pointing"]
    last = [c for c in ("footprint",) if c in out.columns]  # as in CALSRC: after new columns
    out = out[ids + [c for c in out.columns if c not in ids and c not in last] + last]
    out.attrs = df.attrs
    return out


def _arrow(df: pd.DataFrame, dataid: Mapping[str, Any]):
    frame = parquet_frame(df, dataid)
    units = dict(df.attrs.get("units", {}), ra="deg", dec="deg")
    docs = dict(
        df.attrs.get("docs", {}),
        ra="right ascension (ICRS, degrees)",
        dec="declination (ICRS, degrees)",
    )
    return arrow_table(frame, units, docs)


def fragment_path(work_dir: Path, dataid: Mapping[str, Any]) -> Path:
    """Where one CCD's Parquet fragment waits for its visit file."""
    return (
        Path(work_dir)
        / f"tract={dataid['tract']}"
        / f"visit-{dataid['visit']:07d}"
        / f"ccd-{dataid['ccd']:03d}.parquet"
    )


def calibrate_catalog_ccd(
    dataid: dict[str, Any],
    src_path: str,
    out_path: str,
    fragment: str,
    row: dict[str, Any],
    config: CalibrateConfig,
    doraise: bool = False,
) -> Outcome:
    """Calibrate one CCD's catalog: CALSRC plus a Parquet fragment.

    Returns
    -------
    Outcome
        ``done`` with the CALSRC path and row count, or ``failed`` with a one-line reason
        naming the data id and the file.
    """
    try:
        df = read_catalog(src_path)
        out = calibrated_frame(df, row, config)
        write_catalog(out_path, out, template=src_path)
        write_fragment(_arrow(out, dataid), Path(fragment))
    except Exception as err:
        if doraise:
            raise
        return Outcome(dataid, "failed", reason=_reason(err, src_path))
    return Outcome(dataid, "done", output=out_path, extra={"rows": len(out)})


def _reason(err: Exception, path: str) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if path not in text and not isinstance(err, CalibrationMissing):
        text = f"{path}: {text}"
    if isinstance(err, (OSError, ValueError, KeyError, CalibrationMissing)):
        return text
    frame = traceback.extract_tb(err.__traceback__)[-1]
    return f"{type(err).__name__}: {text} ({Path(frame.filename).name}:{frame.lineno})"


_CALSRC = re.compile(r"CALSRC-(\d{7})-(\d{3})\.fits$")


def write_visit_parquet(
    parquet_root: str,
    work_dir: str,
    calibrated_dir: str,
    visit_id: dict[str, Any],
    outcomes: list[Outcome],
) -> Outcome:
    """Write one visit's Parquet file from its CCD fragments, one row group per CCD.

    Every CALSRC of the visit present in the output (not only those done by this run)
    goes in; CCDs without a fresh fragment are converted from their CALSRC.
    """
    visit, tract, filt = visit_id["visit"], visit_id["tract"], visit_id["filter"]
    out = visit_file(Path(parquet_root), tract, filt, visit)
    if out.exists() and not any(o.status == "done" for o in outcomes):
        return Outcome(visit_id, "skipped", output=str(out), kind="visit")
    try:
        fragments = []
        pattern = f"{tract:04d}/*/{filt}/CALSRC-{visit:07d}-*.fits"
        for calsrc in sorted(Path(calibrated_dir).glob(pattern)):
            ccd = int(_CALSRC.search(calsrc.name).group(2))
            dataid = dict(visit_id, ccd=ccd, pointing=int(calsrc.parent.parent.name))
            frag = fragment_path(Path(work_dir), dataid)
            if not frag.exists():
                write_fragment(_arrow(read_catalog(calsrc), dataid), frag)
            fragments.append(frag)
        if not fragments:
            reason = f"no CALSRC for {format_id(visit_id)}"
            return Outcome(visit_id, "failed", reason=reason, kind="visit")
        rows = merge_fragments(fragments, out)
    except Exception as err:
        return Outcome(visit_id, "failed", reason=_reason(err, str(out)), kind="visit")
    done = sum(o.status == "done" for o in outcomes)
    extra = {"rows": rows, "ccds_new": done}
    return Outcome(visit_id, "done", output=str(out), extra=extra, kind="visit")
