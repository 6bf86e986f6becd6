"""Parquet catalogs for downstream queries (pandas, pyarrow, DuckDB, LSDB).

Layout: one dataset per rerun, hive-partitioned by tract and filter, one file per visit::

    <rerun>/calibrated/parquet/src/tract=0/filter=HSC-I/visit-0001228.parquet

``tract`` and ``filter`` live in the path only (hive partitioning), so every reader that
understands hive partitions (``pyarrow.dataset``, ``pandas.read_parquet``, DuckDB's
``read_parquet(..., hive_partitioning=true)``) sees them as columns. Units and descriptions
are kept in each Arrow field's metadata (``unit``, ``description``). A visit file is
assembled from per-CCD fragments one row group at a time, so memory stays bounded by one
CCD whatever the size of the visit.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_write

__all__ = [
    "PARTITION_KEYS",
    "arrow_table",
    "merge_fragments",
    "visit_file",
    "write_fragment",
]

PARTITION_KEYS = ("tract", "filter")
_WRITE_OPTIONS = {"compression": "zstd", "compression_level": 3, "use_dictionary": False}


def visit_file(root: Path, tract: int, filt: str, visit: int) -> Path:
    """Path of one visit's Parquet file in the hive layout under ``root``."""
    return Path(root) / f"tract={tract}" / f"filter={filt}" / f"visit-{visit:07d}.parquet"


def arrow_table(df: pd.DataFrame, units: dict[str, str], docs: dict[str, str]) -> pa.Table:
    """An Arrow table from a frame, with unit/description metadata on every field.

    The hive partition keys (tract, filter) are dropped: they live in the path.
    """
    df = df.drop(columns=[k for k in PARTITION_KEYS if k in df.columns])
    df.attrs = {}  # pandas deep-copies attrs on every column access; pyarrow needs none
    table = pa.Table.from_pandas(df, preserve_index=False)
    fields = []
    for f in table.schema:
        meta = {}
        if units.get(f.name):
            meta[b"unit"] = units[f.name].encode()
        if docs.get(f.name):
            meta[b"description"] = docs[f.name].encode()
        fields.append(f.with_metadata(meta or None))
    schema = pa.schema(fields, metadata={b"daskcal": b"calibrated src"})
    return table.cast(schema)


def write_fragment(table: pa.Table, path: Path) -> Path:
    """Write one CCD's table as a fragment file (atomically)."""
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp, **_WRITE_OPTIONS)
    return Path(path)


def merge_fragments(fragments: Iterable[Path], out: Path, *, remove: bool = True) -> int:
    """Concatenate fragment files into one Parquet file, one row group per fragment.

    Fragments must share one schema (they are built from the same src schema); a
    fragment with a different schema raises ``ValueError`` naming it. Returns the number
    of rows written. The output is written atomically.
    """
    fragments = [Path(f) for f in fragments]
    if not fragments:
        raise ValueError(f"{out}: no fragments to merge")
    schema = pq.read_schema(fragments[0])
    rows = 0
    with atomic_write(out) as tmp, pq.ParquetWriter(tmp, schema, **_WRITE_OPTIONS) as writer:
        for frag in fragments:
            table = pq.read_table(frag)
            if not table.schema.equals(schema, check_metadata=False):
                raise ValueError(f"{frag}: schema differs from {fragments[0]}")
            writer.write_table(table)
            rows += table.num_rows
    if remove:
        for frag in fragments:
            os.remove(frag)
    return rows


def flags_as_bool(df: pd.DataFrame, flag_names: Iterable[str]) -> pd.DataFrame:
    """Flag columns as numpy bool (never object), as Parquet readers expect."""
    for name in flag_names:
        if name in df.columns:
            df[name] = np.asarray(df[name], dtype=bool)
    return df
