"""HATS catalogs (for LSDB) from daskcal's hive-partitioned Parquet dataset.

A native writer: every format detail comes from the ``hats`` library itself (the
``_healpix_29`` spatial index, the ``dataset/Norder=K/Dir=D/Npix=N.parquet`` paths, the
Parquet write settings, ``partition_info.csv``, ``_metadata`` / ``_common_metadata`` and
``hats.properties``); this module only moves rows. Layout written::

    <out_dir>/<name>/hats.properties, properties, partition_info.csv
    <out_dir>/<name>/dataset/_metadata, _common_metadata
    <out_dir>/<name>/dataset/Norder=K/Dir=D/Npix=N.parquet

All partitions are at one HEALPix order K, chosen as the lowest order whose fullest pixel
holds at most ``max_rows_per_pixel`` rows (or given). Memory stays bounded: the input is
read one file (visit) at a time; rows are grouped by pixel in memory up to a byte budget
and spilled to Arrow IPC scratch files beyond it; each pixel is then assembled, sorted by
``_healpix_29`` and written alone. Every file has the same Arrow schema: ``_healpix_29``
(int64) first, then the union of the input files' columns with the hive partition keys
(``tract``, ``filter``) as ordinary columns. The catalog is built in a hidden sibling
folder and renamed into place at the end, so a killed run never leaves a partial catalog
under the final name.

Why one module of more than ~300 lines: choosing the order, partitioning and writing the
metadata are one format, written through the hats library.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from hats.catalog import CatalogType, PartitionInfo, TableProperties
from hats.io import paths
from hats.io.file_io import get_parquet_write_table_kwargs
from hats.io.parquet_metadata import write_parquet_metadata
from hats.pixel_math import HealpixPixel
from hats.pixel_math.spatial_index import (
    SPATIAL_INDEX_COLUMN,
    SPATIAL_INDEX_ORDER,
    compute_spatial_index,
    spatial_index_to_healpix,
)

from .atomic import temporary_name

__all__ = [
    "HatsSummary",
    "choose_order",
    "open_parquet_dataset",
    "write_hats",
]

log = logging.getLogger("daskcal.hats")

#: Finest order of the row-count histogram used to choose the partition order.
HISTOGRAM_ORDER = 13
#: hats' own write settings with ZSTD level 3: its default level 15 wrote ~10x slower here.
_WRITE_OVERRIDES = {"compression": "zstd", "compression_level": 3}


@dataclass(frozen=True)
class HatsSummary:
    """What :func:`write_hats` wrote.

    Attributes
    ----------
    path : pathlib.Path
        The catalog folder (``hats.properties`` and ``dataset/`` inside).
    n_rows : int
        Rows written.
    n_pixels : int
        HEALPix partitions (Parquet files) written.
    order : int
        HEALPix order of every partition.
    dropped : int
        Input rows left out for a null or non-finite ra/dec (or ``|dec| > 90``).
    """

    path: Path
    n_rows: int
    n_pixels: int
    order: int
    dropped: int


def open_parquet_dataset(parquet_dir: str | os.PathLike) -> ds.Dataset:
    """The hive-partitioned Parquet dataset under ``parquet_dir``, with its union schema.

    Parameters
    ----------
    parquet_dir : str or os.PathLike
        Root of the dataset (``tract=<t>/filter=<f>/visit-XXXXXXX.parquet`` below it).

    Returns
    -------
    pyarrow.dataset.Dataset
        Its schema is the union of every file's schema (types promoted where they differ,
        missing columns read as nulls) followed by the hive partition keys.

    Raises
    ------
    FileNotFoundError
        If the folder does not exist or holds no Parquet file.
    ValueError
        If two files give one column incompatible types.
    """
    root = Path(parquet_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no Parquet dataset at {root}")
    found = ds.dataset(root, format="parquet", partitioning="hive")
    fragments = list(found.get_fragments())
    if not fragments:
        raise FileNotFoundError(f"no Parquet files in {root}")
    schemas = [f.physical_schema for f in fragments]
    if found.partitioning is not None:
        schemas.append(found.partitioning.schema)
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid) as err:
        raise ValueError(f"{root}: files with incompatible schemas ({err})") from None
    return ds.dataset(root, format="parquet", partitioning="hive", schema=schema)


def _radec(table: pa.Table, ra_column: str, dec_column: str) -> tuple[np.ndarray, np.ndarray]:
    """ra, dec as float64 arrays, nulls as NaN."""
    out = []
    for name in (ra_column, dec_column):
        col = pc.fill_null(pc.cast(table[name], pa.float64()), np.nan)
        out.append(np.asarray(col.to_numpy(), dtype=np.float64))
    return out[0], out[1]


def _valid(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    return np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90.0)


def _check_columns(dataset: ds.Dataset, *names: str) -> None:
    missing = [n for n in names if n not in dataset.schema.names]
    if missing:
        raise ValueError(f"the Parquet dataset has no column {', '.join(missing)}")
    if SPATIAL_INDEX_COLUMN in dataset.schema.names:
        raise ValueError(f"the Parquet dataset already has a {SPATIAL_INDEX_COLUMN} column")


def choose_order(
    dataset: ds.Dataset,
    max_rows_per_pixel: int,
    *,
    ra_column: str = "ra",
    dec_column: str = "dec",
) -> int:
    """The lowest HEALPix order whose fullest pixel holds at most ``max_rows_per_pixel`` rows.

    Reads only the ra/dec columns, one file at a time, into a sparse row-count histogram
    at :data:`HISTOGRAM_ORDER`, the highest order returned (when even that is not enough,
    e.g. many rows at one position).

    Parameters
    ----------
    dataset : pyarrow.dataset.Dataset
        The input (see :func:`open_parquet_dataset`).
    max_rows_per_pixel : int
        Target maximum of rows in one partition.
    ra_column, dec_column : str
        Coordinate columns, in degrees.

    Returns
    -------
    int
        The order, 0 to :data:`HISTOGRAM_ORDER`.
    """
    if max_rows_per_pixel < 1:
        raise ValueError(f"max_rows_per_pixel must be positive, not {max_rows_per_pixel}")
    _check_columns(dataset, ra_column, dec_column)
    keys = np.empty(0, dtype=np.int64)
    counts = np.empty(0, dtype=np.int64)
    for fragment in dataset.get_fragments():
        table = fragment.to_table(schema=dataset.schema, columns=[ra_column, dec_column])
        ra, dec = _radec(table, ra_column, dec_column)
        ok = _valid(ra, dec)
        index = compute_spatial_index(ra[ok], dec[ok])
        pixels = spatial_index_to_healpix(index, target_order=HISTOGRAM_ORDER)
        keys, counts = _add_counts(keys, counts, pixels, np.ones(len(pixels), dtype=np.int64))
    for order in range(HISTOGRAM_ORDER + 1):
        shift = 2 * (HISTOGRAM_ORDER - order)
        _, coarse = _add_counts(keys[:0], counts[:0], keys >> shift, counts)
        if coarse.size == 0 or coarse.max() <= max_rows_per_pixel:
            return order
    return HISTOGRAM_ORDER


def _add_counts(
    keys: np.ndarray, counts: np.ndarray, new_keys: np.ndarray, new_counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Merge (key, count) pairs into a sparse histogram (sorted unique keys)."""
    unique, inverse = np.unique(np.concatenate([keys, new_keys]), return_inverse=True)
    total = np.bincount(inverse, weights=np.concatenate([counts, new_counts]))
    return unique, total.astype(np.int64)


class _PixelSpool:
    """Rows grouped by pixel: in memory up to ``budget`` bytes, then spilled to IPC files."""

    def __init__(self, scratch: Path, schema: pa.Schema, budget: int) -> None:
        self.scratch, self.schema, self.budget = scratch, schema, budget
        self.tables: dict[int, list[pa.Table]] = defaultdict(list)
        self.spills: dict[int, list[Path]] = defaultdict(list)
        self.rows: dict[int, int] = defaultdict(int)
        self.nbytes = 0

    def add(self, pixel: int, table: pa.Table) -> None:
        self.tables[pixel].append(table)
        self.rows[pixel] += table.num_rows
        self.nbytes += table.nbytes
        if self.nbytes > self.budget:
            self.spill()

    def spill(self) -> None:
        self.scratch.mkdir(exist_ok=True)
        for pixel, tables in self.tables.items():
            path = self.scratch / f"{pixel}-{len(self.spills[pixel])}.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, self.schema) as out:
                for table in tables:
                    out.write_table(table)
            self.spills[pixel].append(path)
        self.tables.clear()
        self.nbytes = 0

    def pop(self, pixel: int) -> pa.Table:
        """All rows of one pixel (its scratch files are deleted)."""
        parts = []
        for path in self.spills.pop(pixel, []):
            with pa.OSFile(str(path), "rb") as source:
                parts.append(pa.ipc.open_file(source).read_all())
            path.unlink()
        parts.extend(self.tables.pop(pixel, []))
        return pa.concat_tables(parts)


def _spool_fragment(
    table: pa.Table,
    schema: pa.Schema,
    order: int,
    spool: _PixelSpool,
    ra_column: str,
    dec_column: str,
) -> int:
    """Add one input file's rows to the spool, grouped by pixel; returns the rows dropped."""
    ra, dec = _radec(table, ra_column, dec_column)
    ok = _valid(ra, dec)
    index = compute_spatial_index(ra[ok], dec[ok])
    sort = np.argsort(index, kind="stable")
    index = index[sort]
    table = table.take(pa.array(np.flatnonzero(ok)[sort]))
    table = table.add_column(0, schema.field(SPATIAL_INDEX_COLUMN), pa.array(index, pa.int64()))
    table = table.cast(schema)
    pixels = spatial_index_to_healpix(index, target_order=order)
    starts = np.flatnonzero(np.diff(pixels, prepend=-1))
    ends = np.append(starts[1:], len(pixels))
    for start, end in zip(starts, ends, strict=True):
        spool.add(int(pixels[start]), table.slice(start, end - start))
    return int(np.count_nonzero(~ok))


def write_hats(
    parquet_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    catalog_name: str = "calsrc",
    *,
    order: int | None = None,
    max_rows_per_pixel: int = 1_000_000,
    ra_column: str = "ra",
    dec_column: str = "dec",
    overwrite: bool = False,
    buffer_bytes: int = 256 * 2**20,
) -> HatsSummary:
    """Write a Parquet dataset as a HATS catalog ``out_dir/catalog_name`` that LSDB opens.

    Parameters
    ----------
    parquet_dir : str or os.PathLike
        The hive-partitioned input dataset (e.g. a rerun's ``calibrated/parquet/src``).
    out_dir : str or os.PathLike
        Folder that receives the catalog folder (created if missing).
    catalog_name : str
        The catalog's folder name and its ``obs_collection`` in ``hats.properties``.
    order : int, optional
        HEALPix order of the partitions (0 to 29); default: chosen by
        :func:`choose_order` from ``max_rows_per_pixel``.
    max_rows_per_pixel : int
        Target maximum of rows per partition when ``order`` is not given.
    ra_column, dec_column : str
        Coordinate columns, in degrees (ICRS).
    overwrite : bool
        Replace an existing catalog of that name (only once the new one is complete).
    buffer_bytes : int
        Rows held in memory before they are spilled to scratch files; together with the
        largest pixel and the largest input file, this bounds the memory used.

    Returns
    -------
    HatsSummary
        Where and what was written; ``dropped`` counts the rows left out because their
        ra/dec is null, not finite or has ``|dec| > 90`` (also logged as a warning).

    Raises
    ------
    FileExistsError
        If the catalog exists and ``overwrite`` is False.
    FileNotFoundError
        If ``parquet_dir`` is missing or holds no Parquet file.
    ValueError
        If a coordinate column is missing, the files' schemas are incompatible, the order
        is out of range, or no row has valid coordinates.

    Examples
    --------
    >>> import lsdb  # doctest: +SKIP
    >>> cal = "demo-repo/rerun/calib/calibrated"
    >>> s = write_hats(f"{cal}/parquet/src", f"{cal}/hats")  # doctest: +SKIP
    >>> lsdb.open_catalog(s.path).cone_search(23.5, 30.7, 60).compute()  # doctest: +SKIP
    """
    final = Path(out_dir) / catalog_name
    if final.exists() and not overwrite:
        raise FileExistsError(f"HATS catalog {final} exists")
    if order is not None and not 0 <= order <= SPATIAL_INDEX_ORDER:
        raise ValueError(f"HEALPix order {order} is not in 0..{SPATIAL_INDEX_ORDER}")
    dataset = open_parquet_dataset(parquet_dir)
    _check_columns(dataset, ra_column, dec_column)
    if order is None:
        order = choose_order(
            dataset, max_rows_per_pixel, ra_column=ra_column, dec_column=dec_column
        )
    index_field = pa.field(
        SPATIAL_INDEX_COLUMN,
        pa.int64(),
        metadata={b"description": b"HEALPix nested index of (ra, dec) at order 29 (hats)"},
    )
    schema = pa.schema([index_field, *dataset.schema], metadata=dataset.schema.metadata)
    final.parent.mkdir(parents=True, exist_ok=True)
    build = temporary_name(final)
    try:
        n_rows, n_pixels, max_rows, dropped = _build(
            dataset, schema, build, order, ra_column, dec_column, buffer_bytes
        )
        _write_metadata(build, catalog_name, n_rows, max_rows, ra_column, dec_column)
        _replace(build, final, overwrite)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    if dropped:
        log.warning(
            "%s: %d rows without valid %s/%s left out", final, dropped, ra_column, dec_column
        )
    return HatsSummary(final, n_rows, n_pixels, order, dropped)


def _build(
    dataset: ds.Dataset,
    schema: pa.Schema,
    build: Path,
    order: int,
    ra_column: str,
    dec_column: str,
    buffer_bytes: int,
) -> tuple[int, int, int, int]:
    """Write the pixel files into ``build``; returns rows, pixels, max rows, dropped rows."""
    scratch = build / ".spill"
    build.mkdir()
    spool = _PixelSpool(scratch, schema, buffer_bytes)
    dropped = 0
    for fragment in dataset.get_fragments():
        table = fragment.to_table(schema=dataset.schema)
        dropped += _spool_fragment(table, schema, order, spool, ra_column, dec_column)
    if not spool.rows:
        raise ValueError(f"no row with valid {ra_column}/{dec_column} ({dropped} dropped)")
    kwargs = get_parquet_write_table_kwargs(
        schema, write_table_kwargs={**_WRITE_OVERRIDES, "sorting_columns": [pq.SortingColumn(0)]}
    )
    pixels = sorted(spool.rows)
    for pixel in pixels:
        table = spool.pop(pixel)
        index = table[SPATIAL_INDEX_COLUMN].to_numpy()
        if np.any(index[1:] < index[:-1]):  # rows from several files: merge them
            table = table.take(pa.array(np.argsort(index, kind="stable")))
        path = paths.new_pixel_catalog_file(build, HealpixPixel(order, pixel))
        pq.write_table(table, path.path, **kwargs)
    shutil.rmtree(scratch, ignore_errors=True)
    PartitionInfo([HealpixPixel(order, p) for p in pixels]).write_to_file(catalog_path=build)
    return sum(spool.rows.values()), len(pixels), max(spool.rows.values()), dropped


def _write_metadata(
    build: Path, name: str, n_rows: int, max_rows: int, ra_column: str, dec_column: str
) -> None:
    """``_metadata``, ``_common_metadata`` and ``hats.properties`` (hats' own writers)."""
    from importlib.metadata import version

    __version__ = version("daskcal")

    total = write_parquet_metadata(build)
    if total != n_rows:  # pragma: no cover - a bug, not a user error
        raise RuntimeError(f"{build}: _metadata counts {total} rows, {n_rows} were written")
    provenance = TableProperties.new_provenance_dict(build, builder=f"daskcal v{__version__}")
    properties = TableProperties(
        catalog_name=name,
        catalog_type=CatalogType.SOURCE,
        total_rows=n_rows,
        ra_column=ra_column,
        dec_column=dec_column,
        healpix_column=SPATIAL_INDEX_COLUMN,
        healpix_order=SPATIAL_INDEX_ORDER,
        hats_max_rows=max_rows,
        **provenance,
    )
    properties.to_properties_file(build)


def _replace(build: Path, final: Path, overwrite: bool) -> None:
    """Rename the finished catalog into place; an old one is removed only afterwards."""
    old = None
    if final.exists():
        if not overwrite:
            raise FileExistsError(f"HATS catalog {final} exists")
        old = temporary_name(final)
        os.replace(final, old)
    try:
        os.replace(build, final)
    except OSError:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old)
