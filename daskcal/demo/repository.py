"""Write a complete demo Gen2 HSC repository, one Dask task per CCD, plus its truth.

Layout (docs/layout.md, 'Input repository'), with ROOT the output folder and RERUN =
``ROOT/rerun/<rerun>``:

- ROOT/_mapper, ROOT/registry.sqlite3 (tables ``raw`` and ``raw_visit``);
- RERUN/repositoryCfg.yaml (parent: ROOT), the single-frame outputs (calexp, BKGD, skyCorr,
  src) and the mosaic results (jointcal_wcs, jointcal_photoCalib, fgcm_photoCalib,
  fgcm_tract_photoCalib, fgcm-results/fgcmZeropoints.fits);
- ROOT/truth/: demo.json (the :class:`DemoConfig`), sources.parquet (one row per src row),
  ccds.parquet (one row per CCD).

Files are (re)written in place, atomically; the same seed gives the same data.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pandas as pd

from ..calib.fgcm import write_fgcm_zeropoints
from ..io.atomic import atomic_write
from .ccd import true_image, true_sources
from .focalplane import BROKEN_CCDS, science_ccds
from .model import DemoConfig, ccd_model
from .paths import FGCM_ZEROPOINTS, TRUTH_DIR
from .registry import write_registry
from .writers import write_ccd

__all__ = [
    "DemoSummary",
    "load_config",
    "make_demo_repository",
    "read_truth",
    "truth_image",
]


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`make_demo_repository` wrote.

    Attributes
    ----------
    root, rerun_dir, truth_dir : Path
        The repository, its rerun and the truth folder.
    config : DemoConfig
        Everything the data follow from (with the seed).
    filters : dict of int to str
        Filter of each visit.
    ccds : tuple of int
        CCDs written per visit (broken ones left out).
    skipped : tuple of int
        Requested CCDs that have no data (broken).
    n_ccds, n_sources, n_sky_sources : int
        CCD files written and src rows (sky sources included in ``n_sources``).
    paths : dict of str to Path
        registry, fgcmZeropoints, sources / ccds truth tables, demo.json.
    seconds : float
        Wall time.
    """

    root: Path
    rerun_dir: Path
    truth_dir: Path
    config: DemoConfig
    filters: dict[int, str]
    ccds: tuple[int, ...]
    skipped: tuple[int, ...]
    n_ccds: int
    n_sources: int
    n_sky_sources: int
    paths: dict[str, Path]
    seconds: float

    def format(self) -> str:
        """A short human-readable summary (what the CLI prints)."""
        c = self.config
        lines = [
            f"demo repository {self.root} (seed {c.seed}, size {c.size}, field {c.field})",
            f"  visits   {', '.join(f'{v} ({f})' for v, f in self.filters.items())}",
            f"  CCDs     {self.n_ccds} written ({len(self.ccds)} per visit)"
            + (f"; no data for broken CCD(s) {list(self.skipped)}" if self.skipped else ""),
            f"  sources  {self.n_sources} src rows, {self.n_sky_sources} of them sky sources",
            f"  rerun    {self.rerun_dir}",
            f"  truth    {self.truth_dir}",
            f"  time     {self.seconds:.1f} s",
        ]
        return "\n".join(lines)


def _ccd_task(root: str, config: DemoConfig, visit: int, ccd: int) -> dict:
    """One Dask task: simulate and write one CCD; returns its small truth records."""
    rerun_dir = Path(root) / "rerun" / config.rerun
    return write_ccd(rerun_dir, config, visit, ccd)


def make_demo_repository(
    out: str | os.PathLike,
    *,
    visits: int = 4,
    ccds: Sequence[int] | None = None,
    size: str = "small",
    seed: int = 1,
    rerun: str = "demo",
    field: str = "NGC604",
    tract: int = 0,
    client=None,
    scheduler: str = "threads",
) -> DemoSummary:
    """Write a seeded demo HSC repository with its truth.

    Parameters
    ----------
    out : str or os.PathLike
        Repository root (created; files in it are overwritten).
    visits : int
        Number of visits: 1228, 1230, ... alternating HSC-G and HSC-I.
    ccds : sequence of int, optional
        CCD numbers (default: all science CCDs); broken ones (9) are skipped and reported.
    size : {"small", "full"}
        256 x 512 or 2048 x 4176-pixel CCDs (see :mod:`daskcal.demo.focalplane`).
    seed : int
        Seed of everything random.
    rerun, field, tract : str, str, int
        Rerun name, field name (registry ``field``) and tract of the mosaic products.
    client : distributed.Client, optional
        Run the per-CCD tasks on this client; else with Dask's ``scheduler``.
    scheduler : str
        Local Dask scheduler when no client is given ("threads", "processes", "sync").

    Returns
    -------
    DemoSummary
    """
    start = time.perf_counter()
    wanted = science_ccds() if ccds is None else sorted({int(c) for c in ccds})
    bad = [c for c in wanted if not 0 <= c < 104]
    if bad:
        raise ValueError(f"CCDs {bad} are not HSC science CCDs (0..103)")
    skipped = tuple(c for c in wanted if c in BROKEN_CCDS)
    good = tuple(c for c in wanted if c not in BROKEN_CCDS)
    if visits < 1 or not good:
        raise ValueError(f"nothing to make: {visits} visits, CCDs {list(wanted)}")
    config = DemoConfig(seed, size, DemoConfig.visit_numbers(visits), good, field, tract, rerun)
    root = Path(out).resolve()
    rerun_dir = root / "rerun" / rerun
    tasks = [
        dask.delayed(_ccd_task, pure=True)(str(root), config, v, c)
        for v in config.visits
        for c in config.ccds
    ]
    if client is not None:
        results = client.gather(client.compute(tasks))
    else:
        results = dask.compute(*tasks, scheduler=scheduler)
    paths = _write_tables(root, rerun_dir, config, results)
    return DemoSummary(
        root=root,
        rerun_dir=rerun_dir,
        truth_dir=root / TRUTH_DIR,
        config=config,
        filters={v: config.filter_of(v) for v in config.visits},
        ccds=config.ccds,
        skipped=skipped,
        n_ccds=len(results),
        n_sources=sum(len(r["sources"]) for r in results),
        n_sky_sources=sum(int(r["sources"]["is_sky"].sum()) for r in results),
        paths=paths,
        seconds=time.perf_counter() - start,
    )


def _write_tables(root: Path, rerun_dir: Path, config: DemoConfig, results) -> dict[str, Path]:
    """Registry, mapper, rerun config, fgcmZeropoints and the truth tables."""
    (root / "_mapper").write_text("lsst.obs.hsc.HscMapper\n")
    rerun_dir.mkdir(parents=True, exist_ok=True)
    (rerun_dir / "repositoryCfg.yaml").write_text(_REPOSITORY_CFG)
    registry = write_registry(root / "registry.sqlite3", config, [r["raw"] for r in results])
    zeropoints = rerun_dir / FGCM_ZEROPOINTS
    zeropoints.parent.mkdir(parents=True, exist_ok=True)
    rows = [r["zeropoint"] for r in results]
    write_fgcm_zeropoints(zeropoints, {k: [r[k] for r in rows] for k in rows[0]}, overwrite=True)
    truth = root / TRUTH_DIR
    paths = {"registry": registry, "fgcm_zeropoints": zeropoints}
    paths["config"] = truth / "demo.json"
    with atomic_write(paths["config"]) as tmp:
        tmp.write_text(config.to_json())
    tables = {
        "sources": pd.concat([r["sources"] for r in results], ignore_index=True),
        "ccds": pd.DataFrame([r["ccd"] for r in results]),
    }
    for name, table in tables.items():
        paths[name] = truth / f"{name}.parquet"
        with atomic_write(paths[name]) as tmp:
            table.to_parquet(tmp, index=False)
    return paths


_REPOSITORY_CFG = """!RepositoryCfg_v1
_mapper: !!python/name:lsst.obs.hsc.hscMapper.HscMapper ''
_mapperArgs: {}
_parents:
- ../..
_policy: null
_root: null
dirty: true
"""


def load_config(root: str | os.PathLike) -> DemoConfig:
    """The :class:`DemoConfig` a demo repository was made with (``truth/demo.json``)."""
    return DemoConfig.from_json((Path(root) / TRUTH_DIR / "demo.json").read_text())


def truth_image(root: str | os.PathLike, visit: int, ccd: int) -> np.ndarray:
    """The true calibrated image T of (visit, ccd), re-rendered from the seed.

    ``calexp * c / cbar - skyCorr`` equals T within the noise (``sqrt(variance) * c /
    cbar``) outside the BAD, SAT and NO_DATA masks; T is in the units of the calibrated
    image, so ``T * cbar`` is in nJy per pixel.
    """
    config = load_config(root)
    if visit not in config.visits or ccd not in config.ccds:
        raise KeyError(f"{root}: the demo has no visit {visit} ccd {ccd}")
    model = ccd_model(config, visit, ccd)
    return true_image(model, true_sources(config, model))


def read_truth(root: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(sources, ccds) truth tables of a demo repository."""
    truth = Path(root) / TRUTH_DIR
    return pd.read_parquet(truth / "sources.parquet"), pd.read_parquet(truth / "ccds.parquet")


def field_of(ccd_row: pd.Series):
    """The true c(x, y) of a ``ccds.parquet`` row, as a BoundedField."""
    from ..calib.boundedfield import bounded_field_from_dict

    return bounded_field_from_dict(json.loads(ccd_row["photocalib_field"]))
