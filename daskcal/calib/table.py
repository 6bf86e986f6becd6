"""Per-(visit, ccd) calibration lookup tables: everything needed to calibrate a CCD.

One row per data id: which photometric calibration was chosen (``jointcal``, ``fgcm``,
``fgcm_tract`` or ``fgcmZeropoints``), cbar, sigma_c, the zero point, the bounded field
serialised as JSON, the SkyWcs as AST text (plus, on request, its TAN-SIP approximation as
FITS cards), the sky centre and corners, the skyCorr path, and what was missing or
unreadable. Saved as Parquet, the table alone is enough to calibrate a catalog:
:func:`calibrations_from_row` rebuilds the evaluators.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd

from ..config import CalibrateConfig
from ..io.atomic import atomic_write
from ..io.fitsfile import open_fits
from .boundedfield import bounded_field_from_dict
from .photocalib import PhotoCalib, read_photocalib
from .skywcs import SkyWcs, read_skywcs

__all__ = [
    "calibration_row",
    "calibration_table",
    "calibrations_from_row",
    "fgcm_table_rows",
    "read_calibration_table",
    "table_path",
    "write_calibration_table",
]

ID_COLUMNS = ("visit", "ccd", "tract", "filter", "pointing")
AB_ZEROPOINT = 31.4  # mag of 1 nJy


def table_path(output_dir: Path, tract: int, filt: str) -> Path:
    """Where a table is saved: ``<rerun>/calibrated/<tract %04d>/calib-<filter>.parquet``."""
    return Path(output_dir) / "calibrated" / f"{tract:04d}" / f"calib-{filt}.parquet"


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
        Also fit the TAN-SIP approximation (``sipOrder``/``sipSpacing``).
    expected : mapping of dataset name to Path, optional
        Where absent products were looked for, named in the ``missing`` messages.

    Returns
    -------
    dict
        The row; ``missing`` and ``errors`` say what could not be had (one message per
        product, ``; ``-separated), so one bad CCD never stops the others.
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
            text = " ".join(str(err).split())
            errors.append(f"{name}: {text}" if str(path) in text else f"{name}: {path}: {text}")
            return None

    photo_name = f"{config.externalPhotoCalibName}_photoCalib"
    wcs_name = f"{config.externalSkyWcsName}_wcs"
    pc = wcs = None
    if config.doApplyExternalPhotoCalib:
        pc = _read(photo_name, read_photocalib, missing)
    if config.doApplyExternalSkyWcs:
        wcs = _read(wcs_name, read_skywcs, missing)
    row["photo_source"] = config.externalPhotoCalibName
    row["photocalib_path"] = str(paths.get(photo_name) or "")
    row.update(_photocalib_columns(pc))
    row["wcs_path"] = str(paths.get(wcs_name) or "")
    row["wcs_ast"] = "" if wcs is None else wcs.ast_text
    row["skycorr_path"] = str(paths.get("skyCorr") or "")
    bbox = _read("calexp", _exposure_bbox, [])
    if bbox is None and pc is not None and pc.field is not None and not pc.field.bbox.is_empty:
        bbox = tuple(int(v) for v in pc.field.bbox)
    row["bbox"] = list(bbox) if bbox else None
    geometry = {"ra": math.nan, "dec": math.nan, "ra_corners": None, "dec_corners": None}
    if wcs is not None and bbox is not None:
        geometry = _sky_geometry(wcs, bbox)
    row.update(geometry)
    row["sip_header"] = ""
    if with_sip and wcs is not None and bbox is not None:
        from .sip import fit_tan_sip, sip_header

        approx = fit_tan_sip(wcs, bbox, order=config.sipOrder, spacing=config.sipSpacing)
        row["sip_header"] = sip_header(approx).tostring(sep="\n")
    row["missing"] = "; ".join(missing)
    row["errors"] = "; ".join(errors)
    return row


def calibration_table(
    repo, ids: Iterable[Mapping[str, Any]], config: CalibrateConfig, *, with_sip: bool = False
) -> pd.DataFrame:
    """The calibration table of a set of data ids, read in parallel with Dask.

    Parameters
    ----------
    repo : daskcal.Repository
        Where the products are found (input lookup chain).
    ids : iterable of dict
        Full data ids with ``tract``.
    config : CalibrateConfig
        Which products to read.
    with_sip : bool
        Also fit TAN-SIP approximations.

    Returns
    -------
    pandas.DataFrame
        One row per id, in the order given.
    """
    names = (
        "calexp",
        "skyCorr",
        f"{config.externalPhotoCalibName}_photoCalib",
        f"{config.externalSkyWcsName}_wcs",
    )
    tasks = []
    for dataid in ids:
        paths = {name: repo.find(name, dataid) for name in names}
        expected = {n: repo.input_path(n, dataid) for n, p in paths.items() if p is None}
        task = dask.delayed(calibration_row)(
            dict(dataid), paths, config, with_sip=with_sip, expected=expected
        )
        tasks.append(task)
    rows = dask.compute(*tasks)
    return pd.DataFrame(list(rows))


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
