"""``daskcal hats``: a rerun's calibrated Parquet catalog as a HATS catalog for LSDB.

Reads ``<rerun>/calibrated/parquet/src`` (written by calibrateCatalog) and writes
``<rerun>/calibrated/hats/<name>`` by default, with :func:`daskcal.io.hats.write_hats`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..io.hats import HatsSummary, write_hats
from ..layout import OutputLayout
from ..repo import Repository

__all__ = ["hats_paths", "write_rerun_hats"]


def hats_paths(repo: Repository, output: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The Parquet dataset of a rerun and the folder its HATS catalogs go to.

    Parameters
    ----------
    repo : Repository
        The repository; its output rerun holds the Parquet dataset.
    output : str or os.PathLike, optional
        Folder for the catalog (default: ``<rerun>/calibrated/hats``).

    Returns
    -------
    tuple of pathlib.Path
        ``(parquet_dir, out_dir)``.
    """
    layout = OutputLayout(repo.output_dir)
    return layout.parquet, Path(output) if output is not None else layout.hats


def write_rerun_hats(
    repo: Repository,
    *,
    output: str | os.PathLike | None = None,
    name: str = "calsrc",
    order: int | None = None,
    max_rows_per_pixel: int = 1_000_000,
    overwrite: bool = False,
) -> HatsSummary:
    """Write the rerun's calibrated Parquet catalog as the HATS catalog ``out_dir/name``.

    Parameters
    ----------
    repo : Repository
        The repository and rerun (its output rerun is read).
    output : str or os.PathLike, optional
        Folder for the catalog (default: ``<rerun>/calibrated/hats``).
    name : str
        Catalog name (its folder name).
    order, max_rows_per_pixel, overwrite
        As for :func:`daskcal.io.hats.write_hats`.

    Returns
    -------
    HatsSummary

    Raises
    ------
    FileNotFoundError
        If the rerun has no Parquet dataset yet.
    FileExistsError
        If the catalog exists and ``overwrite`` is False.
    """
    parquet_dir, out_dir = hats_paths(repo, output)
    if not parquet_dir.is_dir() or next(parquet_dir.rglob("*.parquet"), None) is None:
        raise FileNotFoundError(
            f"no Parquet dataset in {parquet_dir}: run calibrateCatalog.py on this rerun first"
        )
    return write_hats(
        parquet_dir,
        out_dir,
        name,
        order=order,
        max_rows_per_pixel=max_rows_per_pixel,
        overwrite=overwrite,
    )
