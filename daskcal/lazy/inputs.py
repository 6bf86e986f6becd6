"""Lazy collections over a repository: catalogs as a dask DataFrame, exposures as xarray.

Nothing here reads table rows or pixels: a catalog collection is built from the first
file's header (its ``meta``) and one partition per (visit, ccd); an exposure dataset from
headers, with one dask task per row block. Tasks receive file names, never open files, so
the graphs run on any Dask scheduler, distributed clusters included.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import dask.array as da
import dask.dataframe as dd
import pandas as pd
import xarray as xr

from ..apply import with_ids
from ..dataid import DataIdError, format_id
from ..io.catalog import catalog_meta, read_catalog
from ..io.exposure import read_exposure as read_exposure_planes
from ..repo import Repository
from .coords import SKY_COORDS, drop_sky_coords, sky_coord_arrays, with_sky_coords

__all__ = [
    "ID_COLUMNS",
    "catalogs_from_paths",
    "open_catalogs",
    "open_exposures",
    "read_exposure",
    "resolve_ids",
    "source_columns",
]

#: Data-id columns added to every catalog partition, in this order.
ID_COLUMNS = ("visit", "ccd", "tract", "filter", "pointing")


def resolve_ids(
    repo: Repository,
    ids: Iterable[Mapping[str, Any]] | None,
    dataset: str,
    *,
    require_tract: bool = False,
) -> tuple[list[dict[str, Any]], list[Path]]:
    """Full data ids and their files; raises DataIdError naming ids whose file is absent."""
    full = repo.expand(list(ids) if ids is not None else [{}], require_tract=require_tract)
    paths = [repo.find(dataset, d) for d in full]
    absent = [format_id(d) for d, p in zip(full, paths, strict=True) if p is None]
    if absent:
        more = f" and {len(absent) - 3} more" if len(absent) > 3 else ""
        raise DataIdError(f"no {dataset} for {'; '.join(absent[:3])}{more}")
    return full, paths


def _catalog_partition(
    path: str, dataid: dict[str, Any], columns: list[str] | None = None
) -> pd.DataFrame:
    """One CCD: its src with the id columns; only ``columns`` (src and id columns, in
    this order) when given, as Dask's column projection passes them."""
    out = with_ids(read_catalog(path, columns=source_columns(columns)), dataid)
    return out if columns is None else out[list(columns)]


def source_columns(columns: Iterable[str] | None) -> list[str] | None:
    """The names of ``columns`` to read from a table: repeats and data-id columns left out.

    The data-id columns (:data:`ID_COLUMNS`) are added to every partition anyway.
    """
    if columns is None:
        return None
    if isinstance(columns, str):
        raise TypeError(f"columns must be a list of names, not the string {columns!r}")
    return [name for name in dict.fromkeys(columns) if name not in ID_COLUMNS]


def open_catalogs(
    repo: Repository,
    ids: Iterable[Mapping[str, Any]] | None = None,
    *,
    dataset: str = "src",
    columns: Iterable[str] | None = None,
) -> dd.DataFrame:
    """The src catalogs of some data ids as one lazy dask DataFrame, a partition per CCD.

    Parameters
    ----------
    repo : Repository
        Where to look.
    ids : iterable of dict, optional
        Data ids, partial ones expanded through the registry (all data when None).
    dataset : str
        ``src`` or ``calibrated_src``.
    columns : iterable of str, optional
        Only these fields and flags, in this order: the others are never decoded. The
        data-id columns are added as always. A name the first file's table lacks raises
        a KeyError naming it.

    Returns
    -------
    dask.dataframe.DataFrame
        Every src column (flags as bool), or those in ``columns``, plus visit, ccd, tract,
        filter, pointing; the partitions follow the sorted (visit, ccd) order of the ids.
        Only the first file's header has been read. Columns selected later are pushed into
        the reads too (see :func:`catalogs_from_paths`).
    """
    full, paths = resolve_ids(repo, ids, dataset)
    return catalogs_from_paths(full, paths, label=f"read-{dataset}", columns=columns)


def catalogs_from_paths(
    ids: list[dict[str, Any]],
    paths: list[Path],
    *,
    label: str = "read-src",
    columns: Iterable[str] | None = None,
) -> dd.DataFrame:
    """A lazy catalog collection over given files, one partition per (id, file).

    ``columns`` selects the src columns as in :func:`open_catalogs`. Selections made
    later (``ddf[["coord_ra", "coord_dec"]]``, ``ddf.groupby("ccd")["id"]``...) are pushed
    into the reads too, by Dask's column projection: only those columns are decoded.
    """
    meta = with_ids(catalog_meta(paths[0]), ids[0])
    if columns is not None:
        columns = [*source_columns(columns), *ID_COLUMNS]
        unknown = [name for name in columns if name not in meta.columns]
        if unknown:
            raise KeyError(f"{paths[0]}: no column {', '.join(map(repr, unknown))} in the table")
    return dd.from_map(
        _catalog_partition,
        [str(p) for p in paths],
        ids,
        meta=meta,
        label=label,
        enforce_metadata=False,
        columns=columns,
    )


def read_exposure(path: str | os.PathLike, chunk_rows: int = 512) -> xr.Dataset:
    """An exposure file as a lazy xarray Dataset, with lazy sky coordinates.

    The planes, headers and archive as :func:`daskcal.io.exposure.read_exposure` reads
    them and, when the primary header names a SkyWcs, 2-D ``ra``/``dec`` coords in degrees
    (:func:`daskcal.lazy.coords.with_sky_coords`: the SkyWcs is read from the archive
    when they are first evaluated).
    """
    ds = read_exposure_planes(path, chunk_rows=chunk_rows)
    return with_sky_coords(ds, ds.attrs["path"]) if ds.attrs["has_skywcs"] else ds


def open_exposures(
    repo: Repository,
    ids: Iterable[Mapping[str, Any]] | None = None,
    *,
    stack: bool = False,
    chunk_rows: int = 512,
    dataset: str = "calexp",
) -> list[xr.Dataset] | xr.Dataset:
    """Exposures of some data ids as lazy xarray Datasets (headers read, no pixels).

    Parameters
    ----------
    repo : Repository
        Where to look.
    ids : iterable of dict, optional
        Data ids (all data when None).
    stack : bool
        Return one Dataset with an ``exposure`` dimension indexed by (visit, ccd); all
        exposures must then share shape and xy0 (see :func:`stack_exposures`).
    chunk_rows : int
        Rows per dask block.
    dataset : str
        ``calexp`` or ``calibrated_exp``.

    Returns
    -------
    list of xarray.Dataset or xarray.Dataset
        One Dataset per CCD (``attrs["dataid"]`` says which; lazy ``ra``/``dec`` coords
        from the file's SkyWcs, see :func:`daskcal.read_exposure`), or the stacked Dataset.
    """
    full, paths = resolve_ids(repo, ids, dataset)
    datasets = []
    for dataid, path in zip(full, paths, strict=True):
        ds = read_exposure(path, chunk_rows=chunk_rows)
        ds.attrs["dataid"] = dataid
        datasets.append(ds)
    if not stack:
        return datasets
    return stack_exposures(datasets)


def stack_exposures(datasets: list[xr.Dataset]) -> xr.Dataset:
    """One Dataset with an ``exposure`` dimension indexed by (visit, ccd).

    The datasets (each with ``attrs["dataid"]``) must share shape and xy0; the stacked
    attrs keep the mask planes and the list of paths. The sky coordinates differ from one
    exposure to the next, so they cannot share one index: when every dataset has
    ``ra``/``dec``, the stack carries them as (``exposure``, ``y``, ``x``) dask arrays
    chunked like the image (:func:`daskcal.lazy.coords.sky_coord_arrays`, evaluated only
    when computed); otherwise it has none.
    """
    shapes = {(ds.sizes["y"], ds.sizes["x"], tuple(ds.attrs["xy0"])) for ds in datasets}
    if len(shapes) > 1:
        raise ValueError(f"cannot stack exposures of different shapes/xy0: {sorted(shapes)}")
    ids = [ds.attrs["dataid"] for ds in datasets]
    sky = [sky_coord_arrays(ds) for ds in datasets]
    stacked = xr.concat([drop_sky_coords(ds).drop_attrs() for ds in datasets], dim="exposure")
    if all(pair is not None for pair in sky):
        stacked = stacked.assign_coords(
            {
                name: (("exposure", "y", "x"), da.stack([pair[k] for pair in sky]))
                for k, name in enumerate(SKY_COORDS)
            }
        )
    index = pd.MultiIndex.from_arrays(
        [[d["visit"] for d in ids], [d["ccd"] for d in ids]], names=("visit", "ccd")
    )
    stacked = stacked.assign_coords(xr.Coordinates.from_pandas_multiindex(index, "exposure"))
    stacked.attrs = {
        "mask_planes": datasets[0].attrs["mask_planes"],
        "paths": [str(ds.attrs["path"]) for ds in datasets],
    }
    return stacked
