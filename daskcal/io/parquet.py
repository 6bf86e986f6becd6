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

from ..layout import visit_file
from .atomic import atomic_write

__all__ = [
    "FRAGMENT_KEY",
    "PARTITION_KEYS",
    "arrow_table",
    "fragment_record",
    "merge_fragments",
    "visit_file",
    "write_fragment",
]

PARTITION_KEYS = ("tract", "filter")
#: Schema metadata key of a fragment: the record of the CALSRC it was made from.
FRAGMENT_KEY = b"daskcal.record"
_WRITE_OPTIONS = {"compression": "zstd", "compression_level": 3, "use_dictionary": False}


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


def fragment_record(path: Path) -> str:
    """The record a fragment was made with (its ``daskcal.record`` metadata); "" if none."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, ValueError):
        return ""
    return meta.get(FRAGMENT_KEY, b"").decode()


def _unified_schema(schemas: list[pa.Schema], names: list[str]) -> tuple[pa.Schema, list[str]]:
    """One schema for all fragments: every column, in first-seen order; and what differs."""
    fields: dict[str, pa.Field] = {}
    for schema in schemas:
        for f in schema:
            if f.name not in fields:
                fields[f.name] = f
            elif not f.type.equals(fields[f.name].type):
                raise ValueError(
                    f"column {f.name!r} is {f.type} in one CCD and {fields[f.name].type} "
                    "in another; cannot merge them"
                )
    warnings = []
    for schema, name in zip(schemas, names, strict=True):
        missing = [n for n in fields if n not in schema.names]
        if missing:
            shown = ", ".join(missing[:5]) + (
                f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            )
            warnings.append(f"{name} lacks {len(missing)} columns, filled with nulls: {shown}")
    return pa.schema(list(fields.values()), metadata=schemas[0].metadata), warnings


def merge_fragments(
    fragments: Iterable[Path],
    out: Path,
    *,
    remove: bool = True,
    metadata: dict[bytes, bytes] | None = None,
) -> tuple[int, list[str]]:
    """Concatenate fragment files into one Parquet file, one row group per fragment.

    Fragments whose columns differ (a CCD whose src lacks a column) are unified: the
    union of the columns, nulls where a fragment has none; a column whose type differs
    raises ``ValueError`` naming it. The output is written atomically, with ``metadata``
    added to its schema.

    Returns
    -------
    (int, list of str)
        The rows written, and one warning per fragment that lacked columns.
    """
    fragments = [Path(f) for f in fragments]
    if not fragments:
        raise ValueError(f"{out}: no fragments to merge")
    schemas = [pq.read_schema(f) for f in fragments]
    schema, warnings = _unified_schema(schemas, [f.name for f in fragments])
    schema = schema.with_metadata({**(schema.metadata or {}), **(metadata or {})})
    rows = 0
    with atomic_write(out) as tmp, pq.ParquetWriter(tmp, schema, **_WRITE_OPTIONS) as writer:
        for frag in fragments:
            table = pq.read_table(frag)
            if not table.schema.equals(schema, check_metadata=False):
                columns = [
                    table[f.name] if f.name in table.column_names else pa.nulls(len(table), f.type)
                    for f in schema
                ]
                table = pa.Table.from_arrays(columns, schema=schema)
            writer.write_table(table)
            rows += table.num_rows
    if remove:
        for frag in fragments:
            os.remove(frag)
    return rows, warnings


def flags_as_bool(df: pd.DataFrame, flag_names: Iterable[str]) -> pd.DataFrame:
    """Flag columns as numpy bool (never object), as Parquet readers expect."""
    for name in flag_names:
        if name in df.columns:
            df[name] = np.asarray(df[name], dtype=bool)
    return df
