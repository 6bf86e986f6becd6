"""Per-(visit, ccd) calibration lookup tables: everything needed to calibrate a CCD.

One row per data id: which photometric calibration was chosen (``jointcal``, ``fgcm``,
``fgcm_tract`` or ``fgcmZeropoints``), cbar, sigma_c, the zero point, the bounded field
serialised as JSON, the SkyWcs as AST text (plus, on request, its TAN-SIP approximation as
FITS cards), the sky centre and corners, the skyCorr path, and what was missing or
unreadable. Saved as Parquet, the table alone is enough to calibrate a catalog:
:func:`calibrations_from_row` rebuilds the evaluators.

Why one module of more than ~300 lines: a row's columns, how it is read from the products,
saved and merged are one format; split, the column list would be spread over several
modules.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import CalibrateConfig
from ..io.atomic import atomic_write
from ..io.fitsfile import open_fits
from ..layout import OutputLayout
from .boundedfield import bounded_field_from_dict
from .photocalib import PhotoCalib, read_photocalib, validate_photocalib
from .skywcs import SkyWcs, read_skywcs, validate_skywcs

__all__ = [
    "calibration_row",
    "calibrations_from_row",
    "fgcm_table_rows",
    "merge_table_rows",
    "read_calibration_table",
    "row_datasets",
    "table_path",
    "table_records",
    "write_calibration_table",
]

ID_COLUMNS = ("visit", "ccd", "tract", "filter", "pointing")
AB_ZEROPOINT = 31.4  # mag of 1 nJy


def table_path(output_dir: Path, tract: int, filt: str) -> Path:
    """Where a table is saved (:meth:`daskcal.layout.OutputLayout.table`)."""
    return OutputLayout(output_dir).table(tract, filt)


def row_datasets(config: CalibrateConfig) -> tuple[str, ...]:
    """The datasets a calibration-table row is read from under ``config``."""
    return (
        "calexp",
        "skyCorr",
        f"{config.externalPhotoCalibName}_photoCalib",
        f"{config.externalSkyWcsName}_wcs",
    )


def table_records(path: Path) -> dict[tuple[int, int], tuple[str, bool]]:
    """(visit, ccd) -> (``row_record``, has its TAN-SIP cards) of a saved table's rows.

    Only small columns are read. Rows saved before rows had records get "".
    """
    import pyarrow.parquet as pq

    if not Path(path).exists():
        return {}
    names = set(pq.read_schema(path).names)
    wanted = [c for c in ("visit", "ccd", "row_record", "sip_ok") if c in names]
    table = pq.read_table(path, columns=wanted).to_pydict()
    n = len(table["visit"])
    records = table.get("row_record", [""] * n)
    sip = table.get("sip_ok", [False] * n)
    return {
        (int(v), int(c)): (r or "", bool(ok))
        for v, c, r, ok in zip(table["visit"], table["ccd"], records, sip, strict=True)
    }


def merge_table_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Save new rows into a table file, replacing the rows of the same (visit, ccd).

    A new row without TAN-SIP cards (a catalog run) keeps those of the row it replaces
    when both were made from the same inputs (same ``row_record``), so that a catalog
    run after an exposure run does not drop them.
    """
    new = pd.DataFrame(rows)
    if Path(path).exists():
        old = read_calibration_table(path)
        key_old = pd.MultiIndex.from_frame(old[["visit", "ccd"]])
        key_new = pd.MultiIndex.from_frame(new[["visit", "ccd"]])
        if "row_record" in old and "sip_header" in old:
            previous = old.set_index(["visit", "ccd"])
            matched = previous.reindex(key_new)
            keep = (
                (new["sip_header"].fillna("") == "").to_numpy()
                & (matched["row_record"].to_numpy() == new["row_record"].to_numpy())
                & (matched["sip_header"].fillna("").to_numpy() != "")
            )
            for column in ("sip_header", "sip_max_error_mas"):
                if column in previous and column in new:
                    new.loc[keep, column] = matched[column].to_numpy()[keep]
        kept = old[~key_old.isin(key_new)]
        if len(kept):
            new = pd.concat([kept, new], ignore_index=True)
    new = new.sort_values(["visit", "ccd"], kind="stable", ignore_index=True)
    new["sip_ok"] = (new["sip_header"].fillna("") != "") | (new["wcs_ast"].fillna("") == "")
    return write_calibration_table(new, path)


def _photocalib_columns(pc: PhotoCalib | None) -> dict[str, Any]:
    if pc is None:
        return {
            "cbar": math.nan,
            "sigma_c": math.nan,
            "zeropoint": math.nan,
            "is_constant": True,
            "field": "",
        }
    return {
        "cbar": pc.mean,
        "sigma_c": pc.err,
        "zeropoint": AB_ZEROPOINT - 2.5 * math.log10(pc.mean) if pc.mean > 0 else math.nan,
        "is_constant": pc.is_constant,
        "field": "" if pc.is_constant or pc.field is None else json.dumps(pc.field.to_dict()),
    }


def _exposure_bbox(path: Path | None) -> tuple[int, int, int, int] | None:
    """PARENT bbox (x0, y0, x1, y1 inclusive) from the calexp's IMAGE header, or None."""
    if path is None:
        return None
    # the raw header of a tile-compressed image has ZNAXISn and LTVn: astropy's conversion
    # to an image header, most of the cost of opening it, is not needed
    with open_fits(path, disable_image_compression=True) as hdul:
        header = hdul[1].header
        nx = int(header.get("ZNAXIS1", header.get("NAXIS1", 0)))
        ny = int(header.get("ZNAXIS2", header.get("NAXIS2", 0)))
        x0, y0 = -int(header.get("LTV1", 0)), -int(header.get("LTV2", 0))
    return (x0, y0, x0 + nx - 1, y0 + ny - 1)


def _sky_geometry(wcs: SkyWcs, bbox: tuple[int, int, int, int]) -> dict[str, Any]:
    x0, y0, x1, y1 = bbox
    xs = np.array([x0 - 0.5, x1 + 0.5, x1 + 0.5, x0 - 0.5, (x0 + x1) / 2])
    ys = np.array([y0 - 0.5, y0 - 0.5, y1 + 0.5, y1 + 0.5, (y0 + y1) / 2])
    ra, dec = wcs.pixel_to_sky(xs, ys)
    return {
        "ra": float(ra[4]),
        "dec": float(dec[4]),
        "ra_corners": [float(v) for v in ra[:4]],
        "dec_corners": [float(v) for v in dec[:4]],
    }


def calibration_row(
    dataid: Mapping[str, Any],
    paths: Mapping[str, Path | None],
    config: CalibrateConfig,
    *,
    with_sip: bool = False,
    expected: Mapping[str, Path] | None = None,
) -> dict[str, Any]:
    """Read one CCD's calibration products into a table row.

    Parameters
    ----------
    dataid : mapping
        visit, ccd, tract, filter, pointing.
    paths : mapping of dataset name to Path or None
        ``calexp``, ``skyCorr``, ``<name>_photoCalib`` and ``jointcal_wcs`` as found in
        the repository (None where absent).
    config : CalibrateConfig
        Selects the photometric and astrometric products.
    with_sip : bool
        Also fit the TAN-SIP approximation (``sipOrder``/``sipSpacing``), refused beyond
        ``sipMaxError``; its maximum error goes into ``sip_max_error_mas`` (NaN if none).
    expected : mapping of dataset name to Path, optional
        Where absent products were looked for, named in the ``missing`` messages.

    Returns
    -------
    dict
        The row; ``missing`` names the absent products, ``errors`` those that are present
        but unreadable or invalid (:func:`~daskcal.calib.photocalib.validate_photocalib`,
        :func:`~daskcal.calib.skywcs.validate_skywcs` over the CCD box, a TAN-SIP fit over
        ``sipMaxError``), one message per product naming its file, ``; ``-separated, so one
        bad CCD never stops the others. An invalid product's columns are left empty (NaN).
    """
    row: dict[str, Any] = {k: dataid.get(k) for k in ID_COLUMNS}
    expected = expected or {}
    missing: list[str] = []
    errors: list[str] = []

    def _read(name: str, reader, problems: list[str]):
        path = paths.get(name)
        if path is None:
            problems.append(f"no {name}" + (f" ({expected[name]})" if name in expected else ""))
            return None
        try:
            return reader(path)
        except Exception as err:  # one unreadable product must not stop the table
            _error(name, err)
            return None

    def _error(name: str, err: Exception) -> None:
        path = paths.get(name)
        text = " ".join(str(err).split()) or type(err).__name__
        errors.append(f"{name}: {text}" if str(path) in text else f"{name}: {path}: {text}")

    def _valid(name: str, validate, product, bbox):
        """``product`` if it passes ``validate``; None (and an error) if not."""
        try:
            validate(product, bbox)
        except Exception as err:
            _error(name, err)
            return None
        return product

    photo_name = f"{config.externalPhotoCalibName}_photoCalib"
    wcs_name = f"{config.externalSkyWcsName}_wcs"
    pc = wcs = None
    if config.doApplyExternalPhotoCalib:
        pc = _read(photo_name, read_photocalib, missing)
    if config.doApplyExternalSkyWcs:
        wcs = _read(wcs_name, read_skywcs, missing)
    bbox = _read("calexp", _exposure_bbox, [])
    if bbox is None and pc is not None and pc.field is not None and not pc.field.bbox.is_empty:
        bbox = tuple(int(v) for v in pc.field.bbox)
    if pc is not None:
        pc = _valid(photo_name, validate_photocalib, pc, bbox)
    if wcs is not None and bbox is not None:  # without a box there is nowhere to check it
        wcs = _valid(wcs_name, validate_skywcs, wcs, bbox)
    row["photo_source"] = config.externalPhotoCalibName
    row["photocalib_path"] = str(paths.get(photo_name) or "")
    row.update(_photocalib_columns(pc))
    row["wcs_path"] = str(paths.get(wcs_name) or "")
    row["wcs_ast"] = "" if wcs is None else wcs.ast_text
    row["skycorr_path"] = str(paths.get("skyCorr") or "")
    row["bbox"] = list(bbox) if bbox else None
    geometry = {"ra": math.nan, "dec": math.nan, "ra_corners": None, "dec_corners": None}
    if wcs is not None and bbox is not None:
        geometry = _sky_geometry(wcs, bbox)
    row.update(geometry)
    row["sip_header"] = ""
    row["sip_max_error_mas"] = math.nan
    if with_sip and wcs is not None and bbox is not None:
        from .sip import fit_tan_sip_checked, sip_header

        try:
            approx, sip_error = fit_tan_sip_checked(
                wcs, bbox, config.sipOrder, config.sipSpacing, config.sipMaxError
            )
        except Exception as err:
            _error(wcs_name, err)
        else:
            row["sip_header"] = sip_header(approx).tostring(sep="\n")
            row["sip_max_error_mas"] = sip_error
    row["missing"] = "; ".join(missing)
    row["errors"] = "; ".join(errors)
    return row


def fgcm_table_rows(
    photocalibs: Mapping[tuple[int, int], PhotoCalib], ids: Iterable[Mapping[str, Any]]
) -> pd.DataFrame:
    """Table rows from FGCM's ``fgcmZeropoints`` (see :func:`daskcal.calib.fgcm.fgcm_photocalibs`).

    Only the photometric columns are filled; ids absent from the table are ``missing``.
    """
    rows = []
    for dataid in ids:
        row = {k: dataid.get(k) for k in ID_COLUMNS}
        pc = photocalibs.get((int(dataid["visit"]), int(dataid["ccd"])))
        row.update({"photo_source": "fgcmZeropoints", "photocalib_path": ""})
        row.update(_photocalib_columns(pc))
        row.update(
            {
                "wcs_path": "",
                "wcs_ast": "",
                "skycorr_path": "",
                "missing": "" if pc is not None else "fgcmZeropoints",
                "errors": "",
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def calibrations_from_row(row: Mapping[str, Any]) -> tuple[PhotoCalib | None, SkyWcs | None]:
    """Rebuild the (PhotoCalib, SkyWcs) of one table row; None where the row has none."""
    pc = None
    if row.get("cbar") is not None and np.isfinite(row["cbar"]):
        field = bounded_field_from_dict(json.loads(row["field"])) if row.get("field") else None
        pc = PhotoCalib(row["cbar"], row["sigma_c"], field is None, field)
    wcs = SkyWcs(row["wcs_ast"]) if row.get("wcs_ast") else None
    return pc, wcs


def write_calibration_table(table: pd.DataFrame, path: Path) -> Path:
    """Save a table as Parquet (atomically)."""
    with atomic_write(path) as tmp:
        table.to_parquet(tmp, index=False)
    return Path(path)


def read_calibration_table(path: Path) -> pd.DataFrame:
    """Load a table saved by :func:`write_calibration_table`."""
    return pd.read_parquet(path)
