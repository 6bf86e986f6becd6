"""afw source tables (src, CALSRC) as pandas DataFrames, read and written in afw format.

The DataFrame keeps the file's column order; the packed ``flags`` column is replaced, at
its place, by one bool column per ``TFLAGn`` name (so all flags come first, in bit
order). Fixed-size array columns (TFORM ``kD`` with k > 1) and variable-length columns
become object columns holding one numpy array per row; strings become ``str``. Names are
never changed: version 1-2 tables keep their ``_flux``/``Sigma``/``Err`` names, and
:func:`instflux_columns` maps them the way afw does when it reads them. The real files
show: version 3 (HSC src, 2021) ``P_instFlux``/``P_instFluxErr``; version 2 (afw
``sourceTable-v2``) ``P_flux``/``P_fluxErr``, ``b_xErr``; version 1 (CFHT ``SRC``, obs_base
``source_catalog``) ``P_flux``/``P_fluxSigma``, ``b_xSigma``, ``P_flux_xx_Cov``.

``df.attrs`` holds everything needed to write the table back: ``path``, ``afw_type``,
``table_version``, ``aliases`` (alias -> target, in file order), ``units``, ``docs``,
``formats`` (TFORM), ``ccls`` (TCCLS), ``flag_names``, ``flag_docs`` and ``metadata``
(all other header cards, e.g. the repeated ``BASE_CIRCULARAPERTUREFLUX_RADII`` and
COMMENTs, as (keyword, value, comment) tuples in order). The dict entries are read-only
:class:`FrozenDict` objects, shared rather than copied when pandas copies ``attrs``.

Why one module of more than ~300 lines: reading and writing afw source tables share the
schema rules (flags, aliases, units, afw's field naming).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits

from .afwtable import (
    Field,
    FlagField,
    card_key,
    decode_columns,
    encode_table,
    field_names,
    flag_column_name,
    make_table_hdu,
)
from .archive import ArchiveWriter, find_archive_hdu
from .atomic import atomic_write
from .fitsfile import open_fits, read_span
from .integrity import NHDU_KEY, count_hdus, with_cards

__all__ = [
    "FrozenDict",
    "instflux_columns",
    "read_catalog",
    "resolve_alias",
    "slot_centroid_columns",
    "write_catalog",
]

_SCHEMA_CARD = re.compile(
    r"^(XTENSION|BITPIX|NAXIS\d*|PCOUNT|GCOUNT|TFIELDS|CHECKSUM|DATASUM|FLAGCOL|ALIAS|AR_HDU|"
    r"AFW_TABLE_VERSION|AFW_TYPE|T(TYPE|FORM|DOC|UNIT|CCLS|FLAG|FDOC|NULL|ZERO|SCAL|DISP|DIM)\d+)$"
)
_DICT_ATTRS = ("units", "docs", "formats", "ccls", "flag_docs", "aliases")
_INFO_KEYS = (*_DICT_ATTRS, "afw_type", "table_version", "flag_names", "metadata")
# numpy dtype -> FITS letter (astropy stores uint16/uint32 with TZERO, as afw reads them)
_CODES = {"f8": "D", "f4": "E", "i8": "K", "i4": "J", "i2": "I", "u1": "B", "u2": "I", "u4": "J"}


class FrozenDict(dict):
    """A read-only dict that ``copy.deepcopy`` shares instead of copying.

    pandas deep-copies ``DataFrame.attrs`` every time a column is taken; with the schema
    of a 250-column table that costs milliseconds per column. Immutable entries can be
    shared safely. To change one, assign a new dict, e.g.
    ``df.attrs["units"] = {**df.attrs["units"], "x_flux": "nJy"}``.

    Examples
    --------
    >>> import copy
    >>> d = FrozenDict({"a": 1})
    >>> copy.deepcopy(d) is d, d == {"a": 1}
    (True, True)
    """

    def _read_only(self, *args, **kwargs):
        raise TypeError("FrozenDict is read-only; assign a new dict instead")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __deepcopy__(self, memo) -> FrozenDict:
        return self

    def __reduce__(self):
        return (FrozenDict, (dict(self),))


class _Shared(tuple):
    """A tuple (immutable) that ``copy.deepcopy`` shares, like :class:`FrozenDict`."""

    __slots__ = ()

    def __deepcopy__(self, memo) -> _Shared:
        return self


def _table_version(cards: dict) -> int:
    """afw's rule: AFW_TABLE_VERSION, else 0 for a file with AFW_TYPE, else current (3)."""
    return int(cards.get("AFW_TABLE_VERSION", 0 if "AFW_TYPE" in cards else 3))


def _indexed(cards: list[tuple], prefix: str) -> dict[int, str]:
    """``{n: value}`` of the cards ``<prefix><n>``."""
    n = len(prefix)
    return {int(k[n:]): str(v) for k, v, _ in cards if k.startswith(prefix) and k[n:].isdigit()}


def _header_info(header: fits.Header) -> dict:
    """Schema and metadata of an afw table header, as plain (picklable) values."""
    cards = [(c.keyword, c.value, c.comment) for c in header.cards]  # parse each card once
    single = {k: v for k, v, _ in cards}
    names = _indexed(cards, "TTYPE")
    flags = [v for _, v in sorted(_indexed(cards, "TFLAG").items())]

    def per_column(prefix: str) -> dict[str, str]:
        return {names[i]: v for i, v in _indexed(cards, prefix).items() if i in names}

    aliases = [str(v) for k, v, _ in cards if k == "ALIAS"]
    return {
        "afw_type": str(single["AFW_TYPE"]).strip() if "AFW_TYPE" in single else None,
        "table_version": _table_version(single),
        "aliases": FrozenDict(a.split(":", 1) for a in aliases if ":" in a),
        "units": FrozenDict((k, v) for k, v in per_column("TUNIT").items() if v),
        "docs": FrozenDict(per_column("TDOC")),
        "formats": FrozenDict(per_column("TFORM")),
        "ccls": FrozenDict(per_column("TCCLS")),
        "flag_names": _Shared(flags),
        "flag_docs": FrozenDict(
            (flags[i - 1], v) for i, v in _indexed(cards, "TFDOC").items() if 0 < i <= len(flags)
        ),
        "metadata": _Shared((k, v, c) for k, v, c in cards if k and not _SCHEMA_CARD.match(k)),
    }


def _series_values(values: np.ndarray):
    """A decoded FITS column as something pandas stores faithfully."""
    if values.dtype == object:  # variable-length arrays (copied: the file will close)
        return [np.array(v, dtype=np.asarray(v).dtype.newbyteorder("=")) for v in values]
    if values.ndim > 1:  # fixed-size arrays: one array per row
        return list(values.astype(values.dtype.newbyteorder("=")))
    if values.dtype.kind == "S":
        return values.astype(str)
    return values.astype(values.dtype.newbyteorder("="), copy=False)


def read_catalog(path: str | os.PathLike, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read the afw table in HDU 1 of ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        An afw table file (src, CALSRC, any table version 0-3).
    columns : sequence of str, optional
        Only these fields and flags, in this order (repeats ignored): the other columns
        are not decoded. Every column when None.

    Returns
    -------
    pandas.DataFrame
        One column per field (flags expanded to bools at the packed column's place);
        ``attrs`` as described in the module docstring (the schema of the whole table,
        also with ``columns``).

    Raises
    ------
    KeyError
        A name in ``columns`` is neither a field nor a flag of the table (the message
        names the file and the columns).
    """
    path = str(Path(path).resolve())
    with open_fits(path) as hdul:
        try:  # not len(hdul): that parses the header of every archive HDU
            hdu = hdul[1]
        except IndexError:
            hdu = hdul[0]
        if not isinstance(hdu, fits.BinTableHDU):
            raise ValueError(f"{path}: HDU 1 is not an afw table (binary table)")
        info = _header_info(hdu.header)
        if columns is not None:
            columns = _known_columns(columns, hdu.header, info, path)
        data = decode_columns(hdu, columns=columns)
    if columns is not None:
        data = {name: data[name] for name in columns}
    # copied (consolidated): a frame of one block per column warns when columns are added
    df = pd.DataFrame({k: _series_values(v) for k, v in data.items()})
    df.attrs.update(info, path=path)
    return df


def _known_columns(
    columns: Sequence[str], header: fits.Header, info: dict, path: str
) -> list[str]:
    """``columns`` without repeats, checked against the table's fields and flags."""
    if isinstance(columns, str):
        raise TypeError(f"columns must be a sequence of names, not the string {columns!r}")
    wanted = list(dict.fromkeys(columns))
    flagcol = flag_column_name(header)
    known = {n for n in field_names(header) if n != flagcol} | set(info["flag_names"])
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise KeyError(f"{path}: no column {', '.join(map(repr, unknown))} in the table")
    return wanted


def _tform(fmt: str | None) -> tuple[int, str]:
    """(repeat count, type letter) of a TFORM; ``P``/``Q`` mark variable-length arrays."""
    m = re.match(r"^(\d*)([A-Z])", fmt or "")
    return (int(m.group(1) or 1), m.group(2)) if m else (1, "")


def _column_format(name: str, series: pd.Series, info: dict) -> tuple[str, np.ndarray, str]:
    """TFORM, values and TCCLS for one non-flag column (known format, or inferred)."""
    values = series.to_numpy()
    fmt = info["formats"].get(name)
    ccls = info["ccls"].get(name)
    repeat, code = _tform(fmt)
    first = values[0] if len(values) else None
    if isinstance(first, np.ndarray) or code in ("P", "Q") or (repeat > 1 and code != "A"):
        arrays = [np.asarray(v) for v in values]
        if fmt is None:
            lengths = {len(a) for a in arrays}
            letter = _CODES.get(arrays[0].dtype.str[1:], "D")
            fmt = f"{lengths.pop()}{letter}" if len(lengths) == 1 else f"Q{letter}"
            repeat, code = _tform(fmt)
        if code in ("P", "Q"):
            values = np.array([*arrays, None], dtype=object)[:-1]
        else:
            values = np.stack(arrays) if arrays else np.zeros((0, repeat))
        return fmt, values, ccls or "Array"
    if code == "A" or values.dtype == object or pd.api.types.is_string_dtype(series.dtype):
        values = np.asarray(values, dtype=str)
        width = max(1, int(np.char.str_len(values).max())) if len(values) else 1
        return fmt or f"{width}A", values, ccls or "String"
    if fmt is None and values.dtype.str[1:] not in _CODES:
        raise TypeError(f"column {name!r}: no afw field type for dtype {values.dtype}")
    return fmt or "1" + _CODES[values.dtype.str[1:]], values, ccls or "Scalar"


def _raw_hdus(hdul: fits.HDUList, first: int, last: int) -> bytes:
    """HDUs ``first`` to ``last`` of an open file, byte for byte."""
    # the HDUs' own fileinfo(): HDUList.fileinfo() re-serialises every header first
    start, end = hdul[first].fileinfo(), hdul[last].fileinfo()
    return read_span(
        start["file"], start["hdrLoc"], end["datLoc"] + end["datSpan"] - start["hdrLoc"]
    )


def _template_archive(hdul: fits.HDUList) -> bytes:
    """The archive HDUs of a template (index to the end), byte for byte.

    Without ``AR_HDU`` afw looks for the archive right after the table (ExposureCatalogs).
    """
    first = find_archive_hdu(hdul)
    if first is None or first < 2:
        return b""
    return _raw_hdus(hdul, first, len(hdul) - 1)


def _merge_info(attrs: dict, template: dict | None) -> dict:
    """df.attrs over the template's schema: dicts merged, other entries replaced."""
    base = {k: {} for k in _DICT_ATTRS} | {"flag_names": [], "metadata": []}
    base |= {"afw_type": "SOURCE", "table_version": 3}
    if template is not None:
        base |= template
    out = base | {k: v for k, v in attrs.items() if k not in _DICT_ATTRS}
    for key in _DICT_ATTRS:
        out[key] = {**base.get(key, {}), **attrs.get(key, {})}
    return out


def _table_parts(df: pd.DataFrame, info: dict, footprint: np.ndarray | None) -> tuple:
    """Fields, values, flags and flag values of the afw table: flags packed first (file
    order, new ones appended), then the fields in ``df`` order, then ``footprint`` (afw
    adds it last when writing a SourceCatalog)."""
    df = df.copy(deep=False)
    df.attrs = {}  # pandas deep-copies attrs on every column access
    bools = {c for c, dtype in df.dtypes.items() if pd.api.types.is_bool_dtype(dtype)}
    flag_order = [f for f in info["flag_names"] if f in bools]
    flag_order += [f for f in df.columns if f in bools and f not in set(flag_order)]
    fields, columns = [], {}
    for name in df.columns:
        if name in bools or name == "footprint":
            continue
        fmt, columns[name], ccls = _column_format(name, df[name], info)
        doc, unit = info["docs"].get(name, ""), info["units"].get(name, "")
        fields.append(Field(name, fmt, doc, unit, ccls))
    if "footprint" in df.columns:
        footprint = df["footprint"].to_numpy()
    if footprint is not None:
        doc = info["docs"].get("footprint", "archive ID for Footprint")
        fields.append(Field("footprint", info["formats"].get("footprint", "1J"), doc))
        columns["footprint"] = footprint
    flags = [FlagField(f, info["flag_docs"].get(f, "")) for f in flag_order]
    values = {f: df[f].to_numpy(dtype=bool) for f in flag_order}
    return fields, columns, flags, values


def _table_cards(info: dict, has_archive: bool) -> list[fits.Card]:
    """The cards after the schema: aliases, metadata, archive pointer, afw version/type."""
    cards = [fits.Card("ALIAS", f"{alias}:{target}") for alias, target in info["aliases"].items()]
    cards += [_fitting_card(key, value, comment) for key, value, comment in info["metadata"]]
    if has_archive:
        cards.append(fits.Card("AR_HDU", 3, "HDU (1-indexed) containing the archive index"))
    cards.append(fits.Card("HIERARCH AFW_TABLE_VERSION", int(info["table_version"])))
    if info.get("afw_type"):
        kind = str(info["afw_type"]).capitalize()
        comment = f"Tells lsst::afw to load this as a {kind} table."
        cards.append(_fitting_card("AFW_TYPE", kind.upper(), comment))
    return cards


def _fitting_card(key: str, value, comment: str) -> fits.Card:
    """A card for ``key`` whose comment is cut to fit 80 characters (no VerifyWarning)."""
    card = fits.Card(card_key(key), value)
    if comment and not (isinstance(value, str) and len(value) > 60):
        room = 80 - max(len(card.image.rstrip()), 30) - 3  # values fill 30 columns
        card = fits.Card(card_key(key), value, comment[: max(room, 0)] if room > 0 else "")
    return card


def write_catalog(
    path: str | os.PathLike,
    df: pd.DataFrame,
    *,
    template: str | os.PathLike | None = None,
    primary_cards: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``df`` as an afw table, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination.
    df : pandas.DataFrame
        A table as returned by :func:`read_catalog`, possibly with new columns. Bool
        columns are Flag fields (packed into ``flags``; new ones get the next bits);
        other new columns take units and docs from ``df.attrs["units"]`` /
        ``["docs"]`` and are placed after the existing fields, before ``footprint``
        (afw appends ``footprint`` last when it writes a SourceCatalog, so that fields
        added to a schema precede it).
    template : str or os.PathLike, optional
        The src file ``df`` came from: its primary header, schema cards, metadata and
        archive HDUs (footprints, byte for byte) are carried over, and its ``footprint``
        column is used when ``df`` has none. ``df.attrs`` win over the template. Without
        a template a SOURCE table gets an empty archive (and zero footprint ids when
        ``df`` has no ``footprint`` column).
    primary_cards : mapping, optional
        Cards added to the primary header (the rest of it is kept byte for byte), e.g.
        daskcal's record; ``DASKCAL_NHDU`` among them is set to the number of HDUs.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    if template is None:
        info = _merge_info(df.attrs, None)
        archive = ArchiveWriter().hdus() if info.get("afw_type") == "SOURCE" else []
        return _write(path, df, info, fits.Header(), archive, extra_cards=primary_cards)
    with open_fits(template) as hdul:
        complete = all(key in df.attrs for key in _INFO_KEYS)  # else fill in from template
        info = _merge_info(df.attrs, None if complete else _header_info(hdul[1].header))
        footprint = None
        if "footprint" not in df.columns and "footprint" in hdul[1].columns.names:
            footprint = np.asarray(hdul[1].data["footprint"])
            if len(footprint) != len(df):
                raise ValueError(
                    f"{template}: {len(footprint)} footprints for {len(df)} rows; "
                    "keep the 'footprint' column when selecting rows"
                )
        primary = _raw_hdus(hdul, 0, 0)
        archive = _template_archive(hdul)
        return _write(path, df, info, primary, archive, footprint, extra_cards=primary_cards)


def _write(
    path,
    df: pd.DataFrame,
    info: dict,
    primary: fits.Header | bytes,
    archive: list | bytes,
    footprint=None,
    extra_cards: Mapping[str, Any] | None = None,
) -> Path:
    """Primary HDU, table, archive to ``path``; ``bytes`` are HDUs copied from a template."""
    if footprint is None and info.get("afw_type") == "SOURCE" and "footprint" not in df:
        footprint = np.zeros(len(df), dtype=np.int32)
    fields, columns, flags, values = _table_parts(df, info, footprint)
    cards = _table_cards(info, bool(archive))
    table = encode_table(fields, columns, flags, values, len(df), cards)
    if table is None or not isinstance(primary, bytes) or not isinstance(archive, bytes):
        hdu = make_table_hdu(fields, columns, flags, values, nrows=len(df))
        for card in cards:
            hdu.header.append(card, end=True)
        hdus = [_primary_hdu(primary), hdu, *_hdu_list(archive)]
        for key, value in _counted(extra_cards, len(hdus)).items():
            hdus[0].header[card_key(key)] = value
        with atomic_write(path) as tmp:
            fits.HDUList(hdus).writeto(tmp)
        return Path(path)
    if extra_cards:
        primary = with_cards(primary, _counted(extra_cards, 2 + count_hdus(archive)))
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        f.write(primary)
        f.write(table)
        f.write(archive)
    return Path(path)


def _counted(cards: Mapping[str, Any] | None, nhdu: int) -> dict[str, Any]:
    cards = dict(cards or {})
    if NHDU_KEY in cards:
        cards[NHDU_KEY] = nhdu
    return cards


def _primary_hdu(primary: fits.Header | bytes) -> fits.PrimaryHDU:
    if isinstance(primary, bytes):
        return fits.PrimaryHDU.fromstring(primary)
    return fits.PrimaryHDU(header=primary)


def _hdu_list(archive: list | bytes) -> list:
    if isinstance(archive, bytes):
        return list(fits.HDUList.fromstring(archive)) if archive else []
    return archive


def resolve_alias(name: str, aliases: dict[str, str], max_steps: int = 64) -> str:
    """Apply afw alias substitution: replace the longest alias prefix until none matches.

    Examples
    --------
    >>> resolve_alias("slot_Centroid_x", {"slot_Centroid": "base_SdssCentroid"})
    'base_SdssCentroid_x'
    """
    for _ in range(max_steps):
        matches = [a for a in aliases if name.startswith(a)]
        if not matches:
            return name
        best = max(matches, key=len)
        name = aliases[best] + name[len(best) :]
    raise ValueError(f"alias cycle while resolving {name!r}")


def slot_centroid_columns(df: pd.DataFrame) -> tuple[str, str]:
    """The real (x, y) column names of the ``slot_Centroid`` alias (chains followed).

    Raises
    ------
    KeyError
        If the resolved columns are not in ``df``.
    """
    aliases = df.attrs.get("aliases", {})
    prefix = resolve_alias("slot_Centroid", aliases)
    cols = (f"{prefix}_x", f"{prefix}_y")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        where = df.attrs.get("path", "catalog")
        raise KeyError(f"{where}: slot_Centroid -> {prefix!r}, but no column {missing}")
    return cols


def _is_instflux(name: str, unit: str) -> bool:
    """afw's test for an old-style instrumental flux field (table versions < 3)."""
    if "flux" not in name:
        return False
    if "modelfit_CModel" in name and not unit:
        return True
    unit = unit.lower()
    return any(u in unit for u in ("count", "dn", "adu"))


def _modern_name(name: str, unit: str, version: int) -> str:
    """The version-3 name afw gives (as an alias) to a field of an older table."""
    if version == 0 and _is_instflux(name, unit):
        if name.endswith("_err"):
            return name.replace("_err", "_instFluxErr", 1)
        return name + "_instFlux"
    if version < 2 and name.endswith("Sigma"):
        name = name.replace("Sigma", "Err", 1)
    if version < 3 and _is_instflux(name, unit):
        name = name.replace("flux", "instFlux", 1)
    return name


def instflux_columns(df: pd.DataFrame) -> dict[str, tuple[str, str | None]]:
    """Instrumental-flux columns by measurement prefix, for any table version.

    Version 3 tables name them ``P_instFlux`` / ``P_instFluxErr``. Older ones use
    ``P_flux`` with ``P_fluxSigma`` (v1) or ``P_fluxErr`` (v2); like afw, a column counts
    as an instFlux when its name contains ``flux`` and its unit is counts (count, dn,
    adu), and ``Sigma`` is read as ``Err`` in version 1.

    Returns
    -------
    dict of str to (str, str or None)
        Prefix ``P`` -> (instFlux column, its error column or None), in sorted prefix
        order (the order afw's ``Schema.getNames()`` gives).
    """
    version = int(df.attrs.get("table_version", 3))
    units = df.attrs.get("units", {})
    modern = {}
    for col, dtype in df.dtypes.items():  # not df[col]: pandas deep-copies attrs per column
        if not pd.api.types.is_bool_dtype(dtype):
            modern[_modern_name(col, units.get(col, ""), version)] = col
    out = {}
    for name in sorted(modern):
        if name.endswith("_instFlux"):
            prefix = name[: -len("_instFlux")]
            out[prefix] = (modern[name], modern.get(prefix + "_instFluxErr"))
    return out


def catalog_meta(path: str | os.PathLike, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """An empty frame with :func:`read_catalog`'s columns, dtypes and attrs, from the header.

    Reads the header of HDU 1 only (no table rows): it is the ``meta`` of lazy catalogs.
    ``columns`` selects as in :func:`read_catalog`.
    """
    path = str(Path(path).resolve())
    with open_fits(path) as hdul:
        header = hdul[1].header.copy()
        cols = [
            fits.Column(name=c.name, format=c.format, unit=c.unit, dim=c.dim)
            for c in hdul[1].columns
        ]
    empty = fits.BinTableHDU.from_columns(cols, nrows=0, header=header)
    info = _header_info(header)
    if columns is not None:
        columns = _known_columns(columns, header, info, path)
    data = decode_columns(empty, columns=columns)
    if columns is not None:
        data = {name: data[name] for name in columns}
    df = pd.DataFrame({k: _series_values(v) for k, v in data.items()})
    df.attrs.update(info, path=path)
    return df
