"""A small Gen2 repository assembled in a temporary folder from the shared real files."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

HSC_SRC = "lsst/faro/tests/data/src_HSC_i_HSC-I_903986_0_31_HSC_runs_ci_hsc_20210407T021858Z.fits"
WCS_DIR = "lsst/jointcal/tests/data/output/HSC-R/9615"
PHOTOCALIB = "lsst/afw/tests/data/photoCalib-version1.fits"  # constant 123 +- 45 nJy/count
VISIT, TRACT, FILTER, POINTING = 23900, 9615, "HSC-R", 1000
CCDS = (37, 49, 90)


def make_real_repository(real: Path, root: Path, *, wcs_for=CCDS) -> Path:
    """ROOT with a registry and rerun ``sf``: the real HSC src as the src of every CCD,
    the real jointcal SkyWcs of those CCDs, and afw's real PhotoCalib as jointcal's."""
    sf = root / "rerun" / "sf"
    out = sf / f"{POINTING:05d}" / FILTER / "output"
    jc = sf / "jointcal-results" / FILTER / f"{TRACT:04d}"
    out.mkdir(parents=True)
    jc.mkdir(parents=True)
    (root / "_mapper").write_text("lsst.obs.hsc.HscMapper\n")
    with sqlite3.connect(root / "registry.sqlite3") as db:
        db.execute(
            "CREATE TABLE raw (id INTEGER PRIMARY KEY, field TEXT, visit INT, ccd INT, "
            "pointing INT, filter TEXT, dateObs TEXT, taiObs TEXT, expTime DOUBLE, "
            "UNIQUE(visit, ccd))"
        )
        db.executemany(
            "INSERT INTO raw (field, visit, ccd, pointing, filter, dateObs, taiObs, expTime) "
            "VALUES ('SSP_UDEEP', ?, ?, ?, ?, '2016-03-07', '2016-03-07T10:00:00', 270.0)",
            [(VISIT, ccd, POINTING, FILTER) for ccd in CCDS],
        )
    for ccd in CCDS:
        name = f"{VISIT:07d}-{ccd:03d}.fits"
        shutil.copy(real / HSC_SRC, out / f"SRC-{name}")
        shutil.copy(real / PHOTOCALIB, jc / f"jointcal_photoCalib-{name}")
        if ccd in wcs_for:
            shutil.copy(real / WCS_DIR / f"jointcal_wcs-{name}", jc / f"jointcal_wcs-{name}")
    return root
