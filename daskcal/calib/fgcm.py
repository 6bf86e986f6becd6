"""FGCM's ``fgcmZeropoints`` table: one row per (visit, ccd) -> a PhotoCalib.

The rule is that of fgcmcal's Gen2 ``FgcmOutputProductsTask._outputZeropoints`` (the
hscPipe 8 era, table columns ``visit``/``ccd``), which wrote ``fgcm_photoCalib``:

- Rows are used only when ``fgcmFlag < 16`` (16: no zero point could be computed,
  32: too few stars); other rows have no calibration and are left out.
- Without a ``fgcmfZptCheb`` column (fitted with ``superStarSubCcd=False``) the calibration
  is constant: c = F_AB * 10**(-0.4 (fgcmZpt + offset)) * scaling [nJy per count], i.e.
  ``fgcmZpt`` is the AB magnitude of one count.
- With ``fgcmfZptCheb`` the zero point is a flux-space Chebyshev field whose values are in
  units of the AB zero-magnitude flux per count: C = fgcmfZptCheb.reshape(n, n)
  * F_AB * 10**(-0.4 offset) * scaling, n = sqrt(len), y-major (C[j, i] multiplies
  T_i(x') T_j(y')), on the box (0, 0)..fgcmfZptChebXyMax (the CCD's maximum x and y
  pixel). cbar is the field's analytic mean over that box (afw ``PhotoCalib(field, err)``).
- sigma_c = ln(10) / 2.5 * cbar * fgcmZptErr in both cases.

``offset`` is the per-filter reference-catalog offset (mag) that the output task computed
(``doReferenceCalibration``) and ``scaling`` the per-CCD flat scaling of FGCM's visit
catalogue; neither is stored in ``fgcmZeropoints``, so they are arguments (defaults 0 and 1).

Later fgcmcal tables (``detector``, ``fgcmfZptSstarCheb``) split out the super-star flat and
multiply by a camera-geometry pixel-area field and a chromatic correction; daskcal cannot
rebuild that field, so those tables raise :class:`UnsupportedCalibration`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ..io.afwtable import Field, decode_columns, make_table_hdu
from ..io.atomic import atomic_write
from ..io.fitsfile import open_fits
from .boundedfield import BBox, ChebyshevBoundedField, UnsupportedCalibration
from .photocalib import F_AB_NJY, PhotoCalib

__all__ = [
    "fgcm_photocalib",
    "fgcm_photocalibs",
    "read_fgcm_zeropoints",
    "write_fgcm_zeropoints",
]

CANNOT_COMPUTE_FLAG = 16
_LN10_OVER_2P5 = np.log(10.0) / 2.5
_INT_COLUMNS = [("visit", "visit number"), ("ccd", "CCD number"), ("fgcmFlag", "FGCM flag")]
_FLOAT_COLUMNS = [
    ("fgcmZpt", "zero point at the CCD centre (mag of one count)"),
    ("fgcmZptErr", "zero-point error (mag)"),
    ("fgcmI0", "passband integral"),
    ("fgcmI10", "normalised chromatic integral"),
    ("fgcmR0", "retrieved I0"),
    ("fgcmR10", "retrieved I10"),
    ("fgcmGry", "gray extinction"),
    ("fgcmZptVar", "zero-point variance over the CCD"),
    ("fgcmTilings", "photometric tilings"),
    ("fgcmFpGry", "focal-plane gray extinction"),
    ("fgcmFpGryBlue", "focal-plane gray, bluest stars"),
    ("fgcmFpGryBlueErr", "error of fgcmFpGryBlue"),
    ("fgcmFpGryRed", "focal-plane gray, reddest stars"),
    ("fgcmFpGryRedErr", "error of fgcmFpGryRed"),
    ("fgcmFpVar", "focal-plane gray variance"),
    ("fgcmDust", "dust extinction"),
    ("fgcmFlat", "super-star flat correction"),
    ("fgcmAperCorr", "aperture correction"),
    ("exptime", "exposure time"),
]


def read_fgcm_zeropoints(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns of an ``fgcmZeropoints`` afw table (HDU 1), as numpy arrays."""
    with open_fits(path) as hdul:
        if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
            raise ValueError(f"{path}: no table in HDU 1")
        return {k: np.array(v) for k, v in decode_columns(hdul[1]).items()}


def fgcm_photocalib(
    row: Mapping[str, Any], offset: float = 0.0, scaling: float = 1.0, where: str = ""
) -> PhotoCalib:
    """The PhotoCalib of one ``fgcmZeropoints`` row (see the module docstring)."""
    if "fgcmfZptSstarCheb" in row:
        raise UnsupportedCalibration(
            f"{where or 'fgcmZeropoints'}: this fgcmcal table layout (fgcmfZptSstarCheb) needs "
            "the camera's pixel-area field; use the fgcm_photoCalib files instead"
        )
    factor = 10.0 ** (-0.4 * float(offset)) * float(scaling)
    err = float(row["fgcmZptErr"])
    cheb = row.get("fgcmfZptCheb")
    if cheb is None:
        mean = F_AB_NJY * 10.0 ** (-0.4 * float(row["fgcmZpt"])) * factor
        return PhotoCalib(mean, _LN10_OVER_2P5 * mean * err, True)
    flat = np.asarray(cheb, dtype=float).ravel()
    n = int(round(np.sqrt(flat.size)))
    if n * n != flat.size:
        raise ValueError(f"{where}: fgcmfZptCheb has {flat.size} values, not a square number")
    x_max, y_max = (int(np.rint(v)) for v in np.asarray(row["fgcmfZptChebXyMax"]).ravel())
    field = ChebyshevBoundedField(BBox(0, 0, x_max, y_max), flat.reshape(n, n) * F_AB_NJY * factor)
    mean = field.mean()
    return PhotoCalib(mean, _LN10_OVER_2P5 * mean * err, False, field)


def fgcm_photocalibs(
    table: Mapping[str, Any],
    offsets: Mapping[str, float] | None = None,
    scalings: Mapping[tuple[int, int], float] | None = None,
) -> dict[tuple[int, int], PhotoCalib]:
    """PhotoCalibs of all usable rows (``fgcmFlag < 16``), keyed by (visit, ccd).

    Parameters
    ----------
    table : mapping of column name to array
        The ``fgcmZeropoints`` columns (e.g. from :func:`read_fgcm_zeropoints`).
    offsets : mapping of filter name to float, optional
        Reference-calibration offsets (mag) per ``filtername``; 0 where absent.
    scalings : mapping of (visit, ccd) to float, optional
        Flat scalings from FGCM's visit catalogue; 1 where absent.
    """
    ccd_key = "ccd" if "ccd" in table else "detector"
    flags = np.asarray(table["fgcmFlag"])
    offsets, scalings = offsets or {}, scalings or {}
    out: dict[tuple[int, int], PhotoCalib] = {}
    for i in np.flatnonzero(flags < CANNOT_COMPUTE_FLAG):
        row = {k: v[i] for k, v in table.items()}
        key = (int(row["visit"]), int(row[ccd_key]))
        filt = str(row.get("filtername", "")).strip()
        where = f"fgcmZeropoints visit {key[0]} ccd {key[1]}"
        out[key] = fgcm_photocalib(row, offsets.get(filt, 0.0), scalings.get(key, 1.0), where)
    return out


def write_fgcm_zeropoints(
    path: str | os.PathLike,
    rows: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    overwrite: bool = False,
) -> None:
    """Write an ``fgcmZeropoints`` table in fgcmcal's Gen2 layout (afw table in HDU 1).

    ``rows`` is a mapping of column name to values (a dict or DataFrame) or a sequence of
    row dicts. ``visit``, ``ccd``, ``fgcmFlag``, ``fgcmZpt`` and ``fgcmZptErr`` are
    required; ``fgcmfZptCheb`` (n*n values per row) with ``fgcmfZptChebXyMax`` make the
    calibration spatially varying. Other columns default as afw does (NaN, 0, "").
    """
    cols = _as_columns(rows)
    missing = [c for c in ("visit", "ccd", "fgcmFlag", "fgcmZpt", "fgcmZptErr") if c not in cols]
    if missing:
        raise ValueError(f"write_fgcm_zeropoints: missing required columns {missing}")
    nrows = len(np.asarray(cols["visit"]))
    fields, values = [], {}
    for name, doc in _INT_COLUMNS:
        fields.append(Field(name, "1J", doc))
        values[name] = np.asarray(cols[name], dtype=np.int32)
    if "fgcmfZptCheb" in cols:
        cheb = np.asarray(cols["fgcmfZptCheb"], dtype=float).reshape(nrows, -1)
        xymax = np.asarray(cols["fgcmfZptChebXyMax"], dtype=float).reshape(nrows, 2)
        fields += [
            Field("fgcmfZptCheb", f"{cheb.shape[1]}D", "zero-point Chebyshev", ccls="Array"),
            Field("fgcmfZptChebXyMax", "2D", "max x and y of the Chebyshev box", ccls="Array"),
        ]
        values.update(fgcmfZptCheb=cheb, fgcmfZptChebXyMax=xymax)
    for name, doc in _FLOAT_COLUMNS:
        fields.append(Field(name, "1E", doc))
        values[name] = np.asarray(cols.get(name, np.full(nrows, np.nan)), dtype=np.float32)
    names = np.asarray(cols.get("filtername", [""] * nrows), dtype=str)
    width = max(2, max((len(s) for s in names), default=0))
    fields.append(Field("filtername", f"{width}A", "filter name", ccls="String"))
    values["filtername"] = names
    hdu = make_table_hdu(fields, values, nrows=nrows)
    if Path(path).exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True)")
    with atomic_write(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp)


def _as_columns(rows: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if isinstance(rows, Mapping) or hasattr(rows, "columns"):
        return {str(k): rows[k] for k in (rows.columns if hasattr(rows, "columns") else rows)}
    rows = list(rows)
    if not rows:
        raise ValueError("write_fgcm_zeropoints: no rows")
    return {k: [r[k] for r in rows] for k in rows[0]}
