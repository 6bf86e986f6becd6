"""Low-level afw-table HDU encoding shared by the archive and catalog readers/writers.

An afw table is a FITS binary table whose Flag fields are packed into one bit column
(``flags``, TFORM ``nX``, ``FLAGCOL``) with bit k named by ``TFLAG<k+1>``; each ordinary
column carries ``TDOCn`` (description), ``TUNITn`` and ``TCCLSn`` (afw field template).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits

__all__ = [
    "card_key",
    "Field",
    "FlagField",
    "bytes_column",
    "decode_columns",
    "flag_names",
    "make_table_hdu",
]


@dataclass(frozen=True)
class Field:
    """One afw-table column: a FITS TFORM plus afw's documentation cards.

    Parameters
    ----------
    name : str
        Column name (``TTYPEn``).
    format : str
        FITS binary-table format (``TFORMn``), e.g. ``"1D"``, ``"64A"``, ``"QB"``.
    doc : str
        Description (``TDOCn``).
    unit : str
        Unit (``TUNITn``), empty for none.
    ccls : str
        afw field template (``TCCLSn``): ``Scalar``, ``Array``, ``String``, ``Angle``...
    """

    name: str
    format: str
    doc: str = ""
    unit: str = ""
    ccls: str = "Scalar"


@dataclass
class FlagField:
    """A packed Flag field: a name and its description (``TFLAGn``, ``TFDOCn``)."""

    name: str
    doc: str = ""


def card_key(keyword: str) -> str:
    """A header keyword as astropy must be given it: long ones as ``HIERARCH`` cards."""
    if len(keyword) > 8 or not keyword.replace("-", "").replace("_", "").isalnum():
        return f"HIERARCH {keyword}"
    return keyword


def flag_names(header: fits.Header) -> list[str]:
    """Names of the packed flag bits, in bit order, from ``TFLAGn`` cards."""
    names: list[str] = []
    k = 1
    while f"TFLAG{k}" in header:
        names.append(str(header[f"TFLAG{k}"]))
        k += 1
    return names


def flag_column_name(header: fits.Header) -> str | None:
    """Name of the packed flag column (``FLAGCOL`` card, 1-based), or None."""
    col = header.get("FLAGCOL")
    if col is None:
        return None
    return str(header[f"TTYPE{int(col)}"])


def decode_columns(hdu: fits.BinTableHDU, rows: slice | None = None) -> dict[str, np.ndarray]:
    """Columns of an afw table HDU, with packed flags expanded to bool arrays.

    Parameters
    ----------
    hdu : astropy.io.fits.BinTableHDU
        The table HDU.
    rows : slice, optional
        Rows to return (all by default).

    Returns
    -------
    dict of str to numpy.ndarray
        Column name to values in file order; the packed flag column is replaced, at its
        position, by one bool column per ``TFLAGn`` name.
    """
    data = hdu.data
    if rows is not None:
        data = data[rows]
    nrows = 0 if data is None else len(data)
    flagcol = flag_column_name(hdu.header)
    out: dict[str, np.ndarray] = {}
    for name in hdu.columns.names:
        values = data[name] if data is not None else np.array([])
        if name == flagcol:
            names = flag_names(hdu.header)
            bits = np.asarray(values, dtype=bool).reshape(nrows, -1) if nrows else None
            for k, flag in enumerate(names):
                out[flag] = bits[:, k] if bits is not None else np.zeros(0, dtype=bool)
        elif values.dtype.kind in "SU":
            out[name] = np.char.rstrip(np.asarray(values))
        else:
            out[name] = np.asarray(values) if values.dtype != object else values
    return out


def make_table_hdu(
    fields: list[Field],
    columns: dict[str, np.ndarray],
    flags: list[FlagField] | None = None,
    flag_values: dict[str, np.ndarray] | None = None,
    nrows: int | None = None,
) -> fits.BinTableHDU:
    """Build an afw-table HDU: packed flags first, then the given fields in order.

    Parameters
    ----------
    fields : list of Field
        Ordinary columns, in order.
    columns : dict of str to array
        Values per field name.
    flags : list of FlagField, optional
        Flag bits, in bit order; they are packed into a leading ``flags`` column.
    flag_values : dict of str to array of bool, optional
        Values per flag name (False where absent).
    nrows : int, optional
        Row count, needed only for a table with neither fields nor flags.

    Returns
    -------
    astropy.io.fits.BinTableHDU
    """
    flags = flags or []
    flag_values = flag_values or {}
    if nrows is None:
        first = next(iter(columns.values()), None)
        nrows = len(first) if first is not None else 0
    cols: list[fits.Column] = []
    if flags:
        bits = np.zeros((nrows, len(flags)), dtype=bool)
        for k, flag in enumerate(flags):
            if flag.name in flag_values:
                bits[:, k] = np.asarray(flag_values[flag.name], dtype=bool)
        cols.append(fits.Column(name="flags", format=f"{len(flags)}X", array=bits))
    for f in fields:
        cols.append(
            fits.Column(name=f.name, format=f.format, unit=f.unit or None, array=columns[f.name])
        )
    hdu = fits.BinTableHDU.from_columns(cols, nrows=nrows)
    header = hdu.header
    offset = 1 if flags else 0
    if flags:
        header.comments["TTYPE1"] = "bits for all Flag fields; see also TFLAGn"
        header["FLAGCOL"] = (1, "Column number for the bitflags.")
    # appended, not inserted after TFORMn: astropy gathers the standard column cards
    # together when it writes anyway, and inserting is quadratic in the header length
    for i, f in enumerate(fields, start=1 + offset):
        if f.doc:
            header.append((f"TDOC{i}", f.doc), end=True)
        header.append((f"TCCLS{i}", f.ccls, "Field template used by lsst.afw.table"), end=True)
    for k, flag in enumerate(flags, start=1):
        header.append((f"TFLAG{k}", flag.name), end=True)
        if flag.doc:
            header.append((f"TFDOC{k}", flag.doc), end=True)
    return hdu


def bytes_column(values: list[bytes]) -> np.ndarray:
    """A variable-length ``QB`` column from a list of byte strings."""
    return np.array([np.frombuffer(v, dtype=np.uint8) for v in values] + [None], dtype=object)[:-1]
