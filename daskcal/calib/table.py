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
    "applied_calibrations",
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


def applied_calibrations(config: CalibrateConfig) -> tuple[str, ...]:
    """The calibration datasets ``config`` applies: the PhotoCalib, the SkyWcs, or both."""
    names = []
    if config.doApplyExternalPhotoCalib:
        names.append(f"{config.externalPhotoCalibName}_photoCalib")
    if config.doApplyExternalSkyWcs:
        names.append(f"{config.externalSkyWcsName}_wcs")
    return tuple(names)


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
    run after an exposure run does not drop them. Done in Arrow, column by column: the
    driver holds the table once, not several pandas copies of it.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    new = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    if Path(path).exists():
        old = pq.read_table(path)
        old_keys, new_keys = _row_keys(old), _row_keys(new)
        if {"row_record", "sip_header"} <= set(old.column_names):
            new = _keep_tan_sip(old, old_keys, new, new_keys)
        kept = old.filter(pa.array(~np.isin(old_keys, new_keys)))
        new = pa.concat_tables([kept, new], promote_options="permissive")
    new = new.take(np.lexsort((_column(new, "ccd"), _column(new, "visit"))))
    length = pc.utf8_length  # no Python strings: the WCS texts are large
    sip_ok = pc.or_(
        pc.greater(length(new["sip_header"].fill_null("")), 0),
        pc.equal(length(new["wcs_ast"].fill_null("")), 0),
    )
    new = new.drop_columns([c for c in ("sip_ok",) if c in new.column_names])
    new = new.append_column("sip_ok", sip_ok)
    with atomic_write(path) as tmp:
        pq.write_table(new, tmp)
    return Path(path)


def _column(table, name: str) -> np.ndarray:
    return table[name].to_numpy().astype(np.int64)


def _row_keys(table) -> np.ndarray:
    """One integer per (visit, ccd): ccd < 1000 (the HscMapper's %03d)."""
    return _column(table, "visit") * 1000 + _column(table, "ccd")


def _keep_tan_sip(old, old_keys: np.ndarray, new, new_keys: np.ndarray):
    """``new`` with the TAN-SIP columns of the old rows it replaces, where it has none."""
    import pyarrow as pa

    order = np.argsort(old_keys, kind="stable")
    at = np.clip(np.searchsorted(old_keys[order], new_keys), 0, max(len(order) - 1, 0))
    if not len(order):
        return new
    index = order[at]
    found = old_keys[index] == new_keys
    old_sip = np.asarray(old["sip_header"].fill_null("").to_pylist(), dtype=object)[index]
    same = np.asarray(old["row_record"].fill_null("").to_pylist(), dtype=object)[index]
    new_sip = np.asarray(new["sip_header"].fill_null("").to_pylist(), dtype=object)
    keep = found & (new_sip == "") & (old_sip != "")
    keep &= same == np.asarray(new["row_record"].fill_null("").to_pylist(), dtype=object)
    if not keep.any():
        return new
    for name in ("sip_header", "sip_max_error_mas"):
        if name in old.column_names and name in new.column_names:
            values = np.where(keep, np.asarray(old[name].to_pylist(), dtype=object)[index],
                              np.asarray(new[name].to_pylist(), dtype=object))  # fmt: skip
            column = pa.array(values.tolist(), type=new.schema.field(name).type)
            new = new.set_column(new.schema.get_field_index(name), name, column)
    return new


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
