"""Where everything a run writes lives under its output rerun: one owner of the layout.

``OutputLayout(rerun_dir)`` answers every "where is ...?" about an output rerun; the
functions elsewhere that return such paths (``table_path``, ``visit_file``,
``fragment_path``, ``thumbnail_path``, ``quicklook_path``) ask it. docs/layout.md lists
the files and what each records. Pure path arithmetic: nothing here touches the disk.

>>> out = OutputLayout("/r/rerun/cal")
>>> out.table(0, "HSC-I").as_posix()
'/r/rerun/cal/calibrated/0000/calib-HSC-I.parquet'
>>> out.visit_parquet(0, "HSC-I", 1228).relative_to(out.parquet).as_posix()
'tract=0/filter=HSC-I/visit-0001228.parquet'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["OutputLayout", "visit_file"]


@dataclass(frozen=True)
class OutputLayout:
    """The output layout of one rerun (picklable: tasks receive it whole).

    Parameters
    ----------
    rerun : path
        The output rerun, ``ROOT/rerun/OUT``.
    """

    rerun: Path

    def __init__(self, rerun: str | os.PathLike) -> None:
        object.__setattr__(self, "rerun", Path(rerun))

    # -- folders -----------------------------------------------------------------------

    @property
    def calibrated(self) -> Path:
        """``calibrated/``: everything but the configuration records."""
        return self.rerun / "calibrated"

    @property
    def config(self) -> Path:
        """``config/``: the configuration and package versions the rerun was made with."""
        return self.rerun / "config"

    @property
    def lock(self) -> Path:
        """``.daskcal.lock``: held by the one run writing the rerun."""
        return self.rerun / ".daskcal.lock"

    @property
    def reports(self) -> Path:
        """``calibrated/reports/``: one JSON-lines report per run."""
        return self.calibrated / "reports"

    @property
    def work(self) -> Path:
        """``calibrated/.work/``: intermediate files of the visit products."""
        return self.calibrated / ".work"

    @property
    def fragments(self) -> Path:
        """Per-CCD Parquet fragments waiting for their visit file."""
        return self.work / "src-fragments"

    @property
    def thumbnails(self) -> Path:
        """Per-CCD quick-look thumbnails waiting for their visit mosaic."""
        return self.work / "quicklook"

    @property
    def parquet(self) -> Path:
        """``calibrated/parquet/src``: the hive-partitioned Parquet catalog."""
        return self.calibrated / "parquet" / "src"

    @property
    def hats(self) -> Path:
        """``calibrated/hats``: HATS catalogs (LSDB)."""
        return self.calibrated / "hats"

    @property
    def qa(self) -> Path:
        """``calibrated/qa``: the QA report."""
        return self.calibrated / "qa"

    # -- files -------------------------------------------------------------------------

    def ccd_folder(self, tract: int, pointing: int, filt: str) -> Path:
        """Folder of the CALEXP/CALSRC files of one (tract, pointing, filter)."""
        return self.calibrated / f"{tract:04d}" / f"{pointing:05d}" / filt

    def table(self, tract: int, filt: str) -> Path:
        """The calibration lookup table of a tract and filter."""
        return self.calibrated / f"{tract:04d}" / f"calib-{filt}.parquet"

    def visit_parquet(self, tract: int, filt: str, visit: int) -> Path:
        """One visit's Parquet file (hive layout: tract and filter in the path)."""
        return visit_file(self.parquet, tract, filt, visit)

    def fragment(self, dataid: Mapping[str, Any]) -> Path:
        """One CCD's Parquet fragment."""
        return _per_ccd(self.fragments, dataid, "parquet")

    def thumbnail(self, dataid: Mapping[str, Any]) -> Path:
        """One CCD's quick-look thumbnail."""
        return _per_ccd(self.thumbnails, dataid, "npz")

    @staticmethod
    def thumbnail_in(folder: str | os.PathLike, dataid: Mapping[str, Any]) -> Path:
        """A CCD's thumbnail under any thumbnail folder (a standalone quick-look)."""
        return _per_ccd(Path(folder), dataid, "npz")

    def quicklook(self, tract: int, visit: int) -> Path:
        """One visit's quick-look PNG."""
        return self.calibrated / f"{tract:04d}" / "quicklook" / f"visit-{visit:07d}.png"


def visit_file(root: str | os.PathLike, tract: int, filt: str, visit: int) -> Path:
    """A visit's Parquet file in the hive layout under ``root``."""
    return Path(root) / f"tract={tract}" / f"filter={filt}" / f"visit-{visit:07d}.parquet"


def _per_ccd(folder: Path, dataid: Mapping[str, Any], suffix: str) -> Path:
    visit_dir = folder / f"tract={dataid['tract']}" / f"visit-{dataid['visit']:07d}"
    return visit_dir / f"ccd-{dataid['ccd']:03d}.{suffix}"
