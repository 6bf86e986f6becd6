"""Low-level afw-table HDU encoding shared by the archive and catalog readers/writers.

An afw table is a FITS binary table whose Flag fields are packed into one bit column
(``flags``, TFORM ``nX``, ``FLAGCOL``) with bit k named by ``TFLAG<k+1>``; each ordinary
column carries ``TDOCn`` (description), ``TUNITn`` and ``TCCLSn`` (afw field template).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from .bintable import encode_rows, padded, read_columns, row_dtype

__all__ = [
    "card_key",
    "Field",
    "FlagField",
    "bytes_column",
    "decode_columns",
    "encode_table",
    "field_names",
    "flag_column_name",
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


@dataclass(frozen=True)
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


def field_names(header: fits.Header) -> list[str]:
    """Names of the table's columns (``TTYPEn``), in order, the packed flag column included."""
    return [str(header[f"TTYPE{i}"]) for i in range(1, int(header.get("TFIELDS", 0)) + 1)]


def decode_columns(
    hdu: fits.BinTableHDU, rows: slice | None = None, columns: Collection[str] | None = None
) -> dict[str, np.ndarray]:
    """Columns of an afw table HDU, with packed flags expanded to bool arrays.

    Parameters
    ----------
    hdu : astropy.io.fits.BinTableHDU
        The table HDU.
    rows : slice, optional
        Rows to return (all by default).
    columns : collection of str, optional
        Only these fields and flags (names not in the table are ignored): the others are
        not decoded, and the packed flag column only when a flag is asked for.

    Returns
    -------
    dict of str to numpy.ndarray
        Column name to values in file order; the packed flag column is replaced, at its
        position, by one bool column per ``TFLAGn`` name (those in ``columns``).
    """
    flagcol = flag_column_name(hdu.header)
    names = flag_names(hdu.header) if flagcol is not None else []
    wanted = None
    if columns is not None:
        wanted = set(columns)
        names = [flag for flag in names if flag in wanted]
        if names:
            wanted.add(flagcol)
    data = read_columns(hdu, wanted)
    if data is None:  # astropy's way: slower, but any binary table
        data = hdu.data
        data = {} if data is None else {n: data[n] for n in field_names(hdu.header)}
        if wanted is not None:
            data = {n: v for n, v in data.items() if n in wanted}
    if rows is not None:
        data = {name: values[rows] for name, values in data.items()}
    nrows = len(next(iter(data.values()))) if data else 0
    out: dict[str, np.ndarray] = {}
    for name in data:
        values = data[name]
        if name == flagcol:
            bit = {flag: k for k, flag in enumerate(flag_names(hdu.header))}
            bits = np.asarray(values, dtype=bool).reshape(nrows, -1) if nrows else None
            for flag in names:
                k = bit[flag]
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


@functools.lru_cache(maxsize=16)
def _schema_header(
    fields: tuple[Field, ...], flags: tuple[FlagField, ...]
) -> tuple[str, np.dtype]:
    """The header cards of an afw table with 0 rows, as text, and its row dtype.

    The same cards, in the same order, as :func:`make_table_hdu`. Formatting a thousand
    cards costs ~0.1 s in astropy, and every CCD of a run has the same schema: cached.
    """
    columns = [("flags", f"{len(flags)}X", "")] if flags else []
    columns += [(f.name, f.format, f.unit) for f in fields]
    cards = [
        ("XTENSION", "BINTABLE", "binary table extension"),
        ("BITPIX", 8, "array data type"),
        ("NAXIS", 2, "number of array dimensions"),
        ("NAXIS1", 0, "length of dimension 1"),
        ("NAXIS2", 0, "length of dimension 2"),
        ("PCOUNT", 0, "number of group parameters"),
        ("GCOUNT", 1, "number of groups"),
        ("TFIELDS", len(columns), "number of table fields"),
    ]
    for i, (name, form, unit) in enumerate(columns, start=1):
        comment = "bits for all Flag fields; see also TFLAGn" if flags and i == 1 else ""
        cards += [(f"TTYPE{i}", name, comment), (f"TFORM{i}", form)]
        if unit:
            cards.append((f"TUNIT{i}", unit))
    if flags:
        cards.append(("FLAGCOL", 1, "Column number for the bitflags."))
    for i, f in enumerate(fields, start=2 if flags else 1):
        if f.doc:
            cards.append((f"TDOC{i}", f.doc))
        cards.append((f"TCCLS{i}", f.ccls, "Field template used by lsst.afw.table"))
    for k, flag in enumerate(flags, start=1):
        cards.append((f"TFLAG{k}", flag.name))
        if flag.doc:
            cards.append((f"TFDOC{k}", flag.doc))
    header = fits.Header(cards)
    layout = row_dtype(header, check_width=False)
    if layout is None:
        raise ValueError("not a fixed-width table")
    header["NAXIS1"] = layout[0].itemsize
    return header.tostring(endcard=False, padding=False), layout[0]


def encode_table(
    fields: list[Field],
    columns: dict[str, np.ndarray],
    flags: list[FlagField],
    flag_values: dict[str, np.ndarray],
    nrows: int,
    extra_cards: list[fits.Card] = (),
) -> bytes | None:
    """An afw-table HDU (header and data) as bytes: :func:`make_table_hdu`, fast.

    ``extra_cards`` (aliases, metadata, ...) follow the schema cards. Returns None for a
    schema with variable-length columns, which need :func:`make_table_hdu`.
    """
    if any(re.match(r"^\d*[PQ]", f.format) for f in fields):
        return None
    text, dtype = _schema_header(tuple(fields), tuple(flags))
    naxis2 = fits.Card("NAXIS2", nrows, "length of dimension 2").image
    text = text[: 4 * 80] + naxis2 + text[5 * 80 :] + "".join(c.image for c in extra_cards)
    values = dict(columns)
    if flags:
        bits = np.zeros((nrows, len(flags)), dtype=bool)
        for k, flag in enumerate(flags):
            if flag.name in flag_values:
                bits[:, k] = np.asarray(flag_values[flag.name], dtype=bool)
        values["flags"] = np.packbits(bits, axis=1)
    header = padded((text + "END".ljust(80)).encode("ascii"), b" ")
    return header + encode_rows(dtype, values, nrows)
