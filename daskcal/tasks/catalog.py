"""calibrateCatalog, per CCD: read src, apply the calibration row, write CALSRC + Parquet.

The worker functions take only paths, plain dicts and the frozen config, so they run on
any Dask worker; each returns an :class:`~daskcal.report.Outcome` instead of raising, so
one bad CCD never stops the others (unless ``doraise``).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ..apply import calibrate_catalog, with_ids
from ..calexp import config_digest, provenance_cards
from ..calib.table import (
    applied_calibrations,
    calibration_row,
    calibrations_from_row,
    row_datasets,
)
from ..config import CalibrateConfig
from ..dataid import format_id
from ..errors import failure_reason, uncalibrated_reason, writing_output
from ..io.catalog import read_catalog, write_catalog
from ..io.integrity import parquet_problem
from ..io.parquet import (
    FRAGMENT_KEY,
    arrow_table,
    fragment_record,
    merge_fragments,
    write_fragment,
)
from ..layout import OutputLayout
from ..records import NHDU_CARD, RECORD_CARD, CcdWork, inspect_output, plan_ccd
from ..report import Outcome

__all__ = [
    "UNCALIBRATED_FLAG",
    "calibrate_catalog_ccd",
    "calibrate_catalog_ccds",
    "catalog_inputs",
    "calibrated_frame",
    "parquet_frame",
    "table_row",
    "write_visit_parquet",
]

UNCALIBRATED_FLAG = "daskcal_uncalibrated"


def calibrated_frame(
    df: pd.DataFrame, row: Mapping[str, Any], config: CalibrateConfig
) -> pd.DataFrame:
    """Apply one calibration-table row to one src frame, as the config says.

    A row whose products are present but unreadable or invalid (its ``errors``) raises
    :class:`CalibrationMissing` naming the files, whatever ``onMissingCalibration``. A row
    that lacks a product the config needs (its ``missing``) raises it too, or, with
    ``onMissingCalibration="flag"``, gives the uncalibrated frame with NaN calibrated
    columns and the ``daskcal_uncalibrated`` flag set.
    """
    missing = uncalibrated_reason(row, config.onMissingCalibration)
    pc, wcs = calibrations_from_row(row)
    if not config.doApplyExternalPhotoCalib:
        pc = None
    if not config.doApplyExternalSkyWcs:
        wcs = None
    if missing:  # flag mode: same columns as a calibrated frame, NaN values
        out = calibrate_catalog(df, _nan_photocalib(), None, error_rule=config.fluxErrorRule)
        out[UNCALIBRATED_FLAG] = np.ones(len(out), dtype=bool)
        return out
    out = calibrate_catalog(df, pc, wcs, error_rule=config.fluxErrorRule)
    if config.onMissingCalibration == "flag":
        out[UNCALIBRATED_FLAG] = np.zeros(len(out), dtype=bool)
    return out


def _nan_photocalib():
    from ..calib.photocalib import PhotoCalib

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


def _arrow(df: pd.DataFrame, dataid: Mapping[str, Any], record: str = ""):
    frame = parquet_frame(df, dataid)
    units = dict(df.attrs.get("units", {}), ra="deg", dec="deg")
    docs = dict(
        df.attrs.get("docs", {}),
        ra="right ascension (ICRS, degrees)",
        dec="declination (ICRS, degrees)",
    )
    table = arrow_table(frame, units, docs)
    return table.replace_schema_metadata({**table.schema.metadata, FRAGMENT_KEY: record.encode()})


TASK = "calibrateCatalog"


def catalog_inputs(config: CalibrateConfig) -> tuple[str, ...]:
    """The datasets a CALSRC is made from under ``config`` (its record covers them)."""
    return ("src", *applied_calibrations(config))


def calibrate_catalog_ccd(
    work: CcdWork, fragment: str, config: CalibrateConfig, doraise: bool = False
) -> Outcome:
    """Calibrate one CCD's catalog: CALSRC plus a Parquet fragment, unless it is current.

    The CALSRC is skipped when it is whole and its record (:mod:`daskcal.records`) is the
    one it would get now; otherwise it is (re)written with that record. When the
    calibration table's row for the CCD is not the one it would get now
    (``work.table_record``), the new row is returned in ``extra["row"]``.

    Returns
    -------
    Outcome
        ``done`` (with the CALSRC path, row count and why it was made), ``skipped``
        (current), or ``failed`` with a one-line reason naming the data id and the file.
    """
    start = time.perf_counter()
    dataid, src_path, out_path = work.dataid, work.inputs["src"], work.output
    extra: dict[str, Any] = {}
    try:
        plan = plan_ccd(
            work, TASK, config_digest(config), catalog_inputs(config), row_datasets(config)
        )
        record, action = plan.record, plan.action
        extra["record"] = record
        if not action.run:
            if plan.row_needed:
                extra["row"] = table_row(work, config, plan.row_record)
            return Outcome(dataid, "skipped", output=out_path, extra=extra)
        row = table_row(work, config, plan.row_record)
        df = read_catalog(src_path)
        out = calibrated_frame(df, row, config)
        cards = {
            **provenance_cards(config, {"SRC": src_path, **_calibration_files(row)}),
            RECORD_CARD: record,
            NHDU_CARD: 0,
        }
        writing_output(
            lambda: write_catalog(out_path, out, template=src_path, primary_cards=cards),
            out_path,
        )
        writing_output(
            lambda: write_fragment(_arrow(out, dataid, record), Path(fragment)), fragment
        )
    except Exception as err:
        if doraise:
            raise
        return Outcome(dataid, "failed", reason=failure_reason(err, src_path))
    extra.update(rows=len(out), row=row, why=plan.why, seconds=time.perf_counter() - start)
    if row.get("missing") and config.onMissingCalibration == "flag":
        extra["uncalibrated"] = row["missing"]
    return Outcome(dataid, "done", output=out_path, extra=extra)


def _calibration_files(row: Mapping[str, Any]) -> dict[str, str]:
    return {"PHOTOCALIB": row.get("photocalib_path") or "", "SKYWCS": row.get("wcs_path") or ""}


def calibrate_catalog_ccds(
    works: list[CcdWork], layout: OutputLayout, config: CalibrateConfig, doraise: bool = False
) -> list[Outcome]:
    """:func:`calibrate_catalog_ccd` over a group of CCDs in one task (large runs: a
    scheduler handles ~10^4 tasks of a few seconds far better than 10^6 tiny ones)."""
    return [
        calibrate_catalog_ccd(work, str(layout.fragment(work.dataid)), config, doraise)
        for work in works
    ]


def table_row(
    work: CcdWork, config: CalibrateConfig, row_record: str, **kwargs: Any
) -> dict[str, Any]:
    """The calibration-table row of a CCD (:func:`calibration_row`) with its record."""
    row = calibration_row(
        work.dataid, work.paths(), config, expected=work.expected_paths(), **kwargs
    )
    row["row_record"] = row_record
    return row


_CALSRC = re.compile(r"CALSRC-(\d{7})-(\d{3})\.fits$")
_MEMBERS_KEY = b"daskcal.ccds"


def _visit_members(folder: Path, visit: int) -> tuple[dict[int, tuple[Path, str]], list[str]]:
    """ccd -> (CALSRC, record or identity) of a visit's whole CALSRC files, and warnings."""
    members: dict[int, tuple[Path, str]] = {}
    warnings: list[str] = []
    prefix = f"CALSRC-{visit:07d}-"
    try:
        entries = sorted(e.name for e in os.scandir(folder) if e.name.startswith(prefix))
    except FileNotFoundError:
        return members, warnings
    for name in entries:
        match = _CALSRC.fullmatch(name)
        if match is None:
            continue
        path = folder / name
        record, problem = inspect_output(path)
        if problem:
            warnings.append(f"{path} left out: {problem}")
            continue
        if not record:  # not written by daskcal: its size and time identify it
            st = path.stat()
            record = f"{st.st_size}-{st.st_mtime_ns}"
        members[int(match.group(2))] = (path, record)
    return members, warnings


def _recorded_members(out: Path) -> dict[str, str] | None:
    if not out.exists() or parquet_problem(out):
        return None
    meta = pq.read_schema(out).metadata or {}
    try:
        return json.loads(meta.get(_MEMBERS_KEY, b"null"))
    except ValueError:
        return None


def write_visit_parquet(
    layout: OutputLayout, visit_id: dict[str, Any], outcomes: list[Outcome]
) -> Outcome:
    """Bring one visit's Parquet file up to date with the visit's CALSRC files.

    Every whole CALSRC of the visit in the output goes in (this run's or not), one row
    group per CCD; the file records the CALSRC records it was built from and is rebuilt
    whenever that set differs (a CCD added, redone or removed, or an earlier run that
    failed to write it). CCDs without a matching fragment are converted from their
    CALSRC. CCDs whose columns differ are unified (missing columns as nulls, named in
    ``extra["warnings"]``).
    """
    start = time.perf_counter()
    visit, tract, filt = visit_id["visit"], visit_id["tract"], visit_id["filter"]
    out = layout.visit_parquet(tract, filt, visit)
    folder = layout.ccd_folder(tract, visit_id["pointing"], filt)
    where = {k: visit_id[k] for k in ("tract", "filter", "visit")}
    try:
        members, warnings = _visit_members(folder, visit)
        wanted = {str(ccd): record for ccd, (_, record) in sorted(members.items())}
        if not members:
            status = "failed" if any(o.status != "failed" for o in outcomes) else "skipped"
            reason = f"no CALSRC for {format_id(where)} in {folder}"
            return Outcome(where, status, reason=reason, kind="visit")
        if _recorded_members(out) == wanted:
            return Outcome(where, "skipped", output=str(out), kind="visit")
        fragments = []
        for ccd, (calsrc, record) in sorted(members.items()):
            dataid = dict(where, ccd=ccd, pointing=visit_id["pointing"])
            frag = layout.fragment(dataid)
            if fragment_record(frag) != record:
                write_fragment(_arrow(read_catalog(calsrc), dataid, record), frag)
            fragments.append(frag)
        metadata = {_MEMBERS_KEY: json.dumps(wanted).encode()}
        rows, unified = merge_fragments(fragments, out, metadata=metadata)
        warnings += unified
    except Exception as err:
        return Outcome(where, "failed", reason=failure_reason(err, str(out)), kind="visit")
    done = sum(o.status == "done" for o in outcomes)
    extra = {"rows": rows, "ccds": len(members), "ccds_new": done}
    extra["seconds"] = time.perf_counter() - start
    if warnings:
        extra["warnings"] = warnings
    return Outcome(where, "done", output=str(out), extra=extra, kind="visit")
