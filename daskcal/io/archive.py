"""afw "InputArchive"/"OutputArchive": persisted objects inside FITS files.

An archive is an ``ARCHIVE_INDEX`` table followed by data tables. Each index row says that
object ``id`` (class ``name``) owns rows ``row0 .. row0 + nrows`` of archive catalog
``cat.archive`` (0 is the index itself), as its ``cat.persistable``-th catalog. Catalog n
lives at 0-based HDU ``AR_HDU - 1 + n``. Objects are always resolved through the index,
never by EXTNAME.

Why one module of more than ~300 lines: reading and writing afw archives share the catalog
layout (index, one schema per persisted class) that they only define together.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from .afwtable import Field, FlagField, decode_columns, make_table_hdu
from .fitsfile import read_span

#: Primary-header cards that give the archive id of an exposure's SkyWcs (afw writes both).
SKYWCS_ID_KEYS = ("SKYWCS_ID", "ARCHIVE_ID_SKYWCS")

__all__ = [
    "SKYWCS_ID_KEYS",
    "Archive",
    "ArchiveCatalog",
    "ArchiveError",
    "ArchiveObject",
    "ArchiveWriter",
    "NewCatalog",
    "find_archive_hdu",
    "pristine_copy",
    "read_archive",
]

_INDEX_FIELDS = [
    Field(
        "id",
        "1J",
        "Archive ID of the persistable object that owns the records pointed at by this entry",
    ),
    Field(
        "cat.archive",
        "1J",
        "index of the catalog this entry points to, from the perspective of the archive",
    ),
    Field(
        "cat.persistable",
        "1J",
        "index of the catalog this entry points to, from the perspective of the Persistable",
    ),
    Field("row0", "1J", "first row used by the persistable object in this catalog"),
    Field("nrows", "1J", "number of rows used by the persistable object in this catalog"),
    Field("name", "64A", "unique name for the persistable object's class", ccls="String"),
    Field(
        "module",
        "64A",
        "Python module that should be imported to register the object's factory",
        ccls="String",
    ),
]
# afw's comments, as truncated to fit one card
_CATN_COMMENT = "# of this catalog relative to the start of this"
_NCAT_COMMENT = "# of catalogs in this archive, including the in"


class ArchiveError(ValueError):
    """A malformed archive or a missing object; the message names the file."""


@dataclass
class ArchiveCatalog:
    """The rows of one archive catalog that belong to one object.

    ``columns`` maps column name to values (flags expanded to bool); ``header`` is the
    data HDU's header (units, docs).
    """

    columns: dict[str, np.ndarray]
    header: fits.Header

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    def __len__(self) -> int:
        first = next(iter(self.columns.values()), None)
        return 0 if first is None else len(first)

    def bytes(self, name: str, row: int = 0) -> bytes:
        """A variable-length byte (``QB``) or string cell as ``bytes``."""
        value = self.columns[name][row]
        if isinstance(value, bytes | str):
            return value.encode() if isinstance(value, str) else value
        arr = np.asarray(value)
        if arr.dtype.kind in "SU":  # variable-length strings come back as arrays of characters
            return "".join(arr.astype(str).tolist()).encode()
        return arr.astype(np.uint8, copy=False).tobytes()


@dataclass
class ArchiveObject:
    """One persisted object: its class name and its catalogs in persistable order."""

    id: int
    name: str
    module: str
    catalogs: list[ArchiveCatalog]


@dataclass
class _IndexRow:
    id: int
    cat_archive: int
    cat_persistable: int
    row0: int
    nrows: int
    name: str
    module: str


class Archive:
    """Read access to the archive of an open FITS file.

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList
        The open file.
    ar_hdu : int
        0-based HDU of the ``ARCHIVE_INDEX`` table.
    filename : str
        Used in error messages.
    """

    def __init__(self, hdul: fits.HDUList, ar_hdu: int, filename: str = "<memory>"):
        self.hdul = hdul
        self.index_hdu = ar_hdu
        self.filename = filename
        index = decode_columns(hdul[ar_hdu])
        cat_key = "cat.archive" if "cat.archive" in index else "cat_archive"
        per_key = "cat.persistable" if "cat.persistable" in index else "cat_persistable"
        if cat_key not in index:
            raise ArchiveError(f"{filename}: HDU {ar_hdu} is not an ARCHIVE_INDEX table")
        self._rows: dict[int, list[_IndexRow]] = {}
        for i in range(len(index["id"])):
            row = _IndexRow(
                int(index["id"][i]),
                int(index[cat_key][i]),
                int(index[per_key][i]),
                int(index["row0"][i]),
                int(index["nrows"][i]),
                str(index["name"][i]).strip(),
                str(index["module"][i]).strip(),
            )
            self._rows.setdefault(row.id, []).append(row)
        for rows in self._rows.values():
            rows.sort(key=lambda r: r.cat_persistable)

    @property
    def ids(self) -> list[int]:
        """Archive ids of all objects, sorted."""
        return sorted(self._rows)

    @property
    def n_catalogs(self) -> int:
        """Number of catalogs, the index included."""
        return int(self.hdul[self.index_hdu].header.get("AR_NCAT", 1))

    def class_name(self, obj_id: int) -> str:
        """Class name of object ``obj_id``."""
        return self._index_rows(obj_id)[0].name

    def find(self, class_name: str) -> list[int]:
        """Ids of the objects of one class, sorted."""
        return [i for i in self.ids if self._rows[i][0].name == class_name]

    def __contains__(self, obj_id: int) -> bool:
        return obj_id in self._rows

    def __iter__(self) -> Iterator[int]:
        return iter(self.ids)

    def __getitem__(self, obj_id: int) -> ArchiveObject:
        rows = self._index_rows(obj_id)
        catalogs = []
        for r in rows:
            hdu = self.hdul[self.index_hdu + r.cat_archive]
            cols = decode_columns(hdu, slice(r.row0, r.row0 + r.nrows))
            catalogs.append(ArchiveCatalog(cols, hdu.header))
        return ArchiveObject(obj_id, rows[0].name, rows[0].module, catalogs)

    def _index_rows(self, obj_id: int) -> list[_IndexRow]:
        try:
            return self._rows[int(obj_id)]
        except KeyError:
            raise ArchiveError(
                f"{self.filename}: archive has no object with id {obj_id}"
            ) from None


def find_archive_hdu(hdul: fits.HDUList) -> int | None:
    """0-based HDU of the archive index, from ``AR_HDU`` or by looking for the index."""
    for hdu in hdul[:2]:
        if "AR_HDU" in hdu.header:
            return int(hdu.header["AR_HDU"]) - 1
    for i, hdu in enumerate(hdul):
        if hdu.header.get("EXTTYPE") == "ARCHIVE_INDEX":
            return i
        if isinstance(hdu, fits.BinTableHDU) and {"id", "row0", "nrows", "name"} <= set(
            hdu.columns.names
        ):
            return i
    return None


def read_archive(hdul: fits.HDUList, filename: str = "<memory>") -> Archive:
    """The archive of an open file; raises ArchiveError naming the file if it has none."""
    ar_hdu = find_archive_hdu(hdul)
    if ar_hdu is None:
        raise ArchiveError(f"{filename}: no afw archive (no AR_HDU card, no ARCHIVE_INDEX)")
    return Archive(hdul, ar_hdu, filename)


@dataclass
class NewCatalog:
    """A catalog of a new object to write: schema plus its rows."""

    fields: list[Field]
    columns: dict[str, np.ndarray]
    flags: list[FlagField] = field(default_factory=list)
    flag_values: dict[str, np.ndarray] = field(default_factory=dict)

    def schema_key(self) -> tuple:
        return (tuple((f.name, f.format) for f in self.fields), tuple(f.name for f in self.flags))


class ArchiveWriter:
    """Collect objects and write them as an afw archive (index + data tables).

    Objects of one class whose catalogs share a schema share a data table, as afw does.
    An existing archive can be carried over: its data HDUs are written back unchanged and
    new objects get new ids and new catalogs after them.
    """

    def __init__(self, base: Archive | None = None):
        self._base = base
        self._objects: list[tuple[int, str, str, list[NewCatalog]]] = []
        self._next_id = (max(base.ids) + 1) if base is not None and base.ids else 1

    def add(self, name: str, module: str, catalogs: list[NewCatalog]) -> int:
        """Add an object; returns its archive id."""
        obj_id = self._next_id
        self._next_id += 1
        self._objects.append((obj_id, name, module, catalogs))
        return obj_id

    def hdus(self) -> list[fits.BinTableHDU]:
        """The archive HDUs, index first; the data catalogs follow it directly."""
        index: list[tuple] = []
        data_hdus: list[fits.BinTableHDU] = []
        if self._base is not None:
            base = self._base
            for obj_id in base.ids:
                for r in base._index_rows(obj_id):
                    index.append(
                        (r.id, r.cat_archive, r.cat_persistable, r.row0, r.nrows, r.name, r.module)
                    )
            data_hdus = [
                pristine_copy(base.hdul[base.index_hdu + n]) for n in range(1, base.n_catalogs)
            ]
        # group new catalogs by (class name, schema)
        groups: dict[tuple, list[tuple[int, int, NewCatalog]]] = {}
        for obj_id, name, module, catalogs in self._objects:
            for p, cat in enumerate(catalogs):
                groups.setdefault((name, module, cat.schema_key()), []).append((obj_id, p, cat))
        for (name, module, _), members in groups.items():
            cat_number = len(data_hdus) + 1
            row0 = 0
            merged: dict[str, list[np.ndarray]] = {}
            merged_flags: dict[str, list[np.ndarray]] = {}
            first = members[0][2]
            for obj_id, p, cat in members:
                n = (
                    len(next(iter(cat.columns.values())))
                    if cat.columns
                    else (len(next(iter(cat.flag_values.values()))) if cat.flag_values else 0)
                )
                index.append((obj_id, cat_number, p, row0, n, name, module))
                row0 += n
                for f in cat.fields:
                    merged.setdefault(f.name, []).append(np.asarray(cat.columns[f.name]))
                for fl in cat.flags:
                    merged_flags.setdefault(fl.name, []).append(
                        np.asarray(cat.flag_values.get(fl.name, np.zeros(n, bool)))
                    )
            columns = {k: _concat(v) for k, v in merged.items()}
            flag_values = {k: np.concatenate(v) for k, v in merged_flags.items()}
            hdu = make_table_hdu(first.fields, columns, first.flags, flag_values, nrows=row0)
            hdu.header["EXTTYPE"] = "ARCHIVE_DATA"
            hdu.header["AR_CATN"] = (cat_number, _CATN_COMMENT)
            hdu.header["AR_NAME"] = (name, "Class name for objects stored here")
            hdu.header["EXTNAME"] = name
            hdu.header["HIERARCH AFW_TABLE_VERSION"] = 3
            data_hdus.append(hdu)
        index.sort(key=lambda r: (r[0], r[2]))
        cols = {
            f.name: np.array(
                [r[i] for r in index], dtype=object if f.ccls == "String" else np.int32
            )
            for i, f in enumerate(_INDEX_FIELDS)
        }
        cols["name"] = np.array([r[5] for r in index], dtype="U64")
        cols["module"] = np.array([r[6] for r in index], dtype="U64")
        index_hdu = make_table_hdu(_INDEX_FIELDS, cols, nrows=len(index))
        index_hdu.header["EXTTYPE"] = "ARCHIVE_INDEX"
        index_hdu.header["EXTNAME"] = "ARCHIVE_INDEX"
        index_hdu.header["AR_CATN"] = (0, _CATN_COMMENT)
        index_hdu.header["AR_NCAT"] = (len(data_hdus) + 1, _NCAT_COMMENT)
        index_hdu.header["HIERARCH AFW_TABLE_VERSION"] = 3
        return [index_hdu, *data_hdus]


def pristine_copy(hdu: fits.BinTableHDU) -> fits.BinTableHDU:
    """An unmodified copy of a file's HDU, rebuilt from its bytes on disk.

    astropy re-serialises a table whose columns were read (converted) when it writes it,
    and corrupts the heap of variable-length string columns on the way; an HDU parsed
    afresh from the file's own bytes is written back byte for byte. HDUs not backed by a
    file are returned as they are.
    """
    info = hdu.fileinfo()
    if not info or info.get("file") is None:
        return hdu
    size = info["datLoc"] - info["hdrLoc"] + info["datSpan"]
    return fits.BinTableHDU.fromstring(read_span(info["file"], info["hdrLoc"], size))


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    if any(p.dtype == object for p in parts):
        out = np.empty(sum(len(p) for p in parts), dtype=object)
        i = 0
        for p in parts:
            out[i : i + len(p)] = list(p)
            i += len(p)
        return out
    return np.concatenate(parts)
