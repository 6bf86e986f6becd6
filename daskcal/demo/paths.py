"""Where the datasets of a demo repository live (Gen2 obs_subaru templates; see docs/layout.md,
'Dataset templates')."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FGCM_ZEROPOINTS", "TEMPLATES", "TRUTH_DIR", "dataset_path"]

TEMPLATES = {
    "calexp": "{pointing:05d}/{filter}/corr/CORR-{visit:07d}-{ccd:03d}.fits",
    "calexpBackground": "{pointing:05d}/{filter}/corr/BKGD-{visit:07d}-{ccd:03d}.fits",
    "skyCorr": "{pointing:05d}/{filter}/corr/skyCorr-{visit:07d}-{ccd:03d}.fits",
    "src": "{pointing:05d}/{filter}/output/SRC-{visit:07d}-{ccd:03d}.fits",
    "jointcal_wcs":
        "jointcal-results/{filter}/{tract:04d}/jointcal_wcs-{visit:07d}-{ccd:03d}.fits",
    "jointcal_photoCalib":
        "jointcal-results/{filter}/{tract:04d}/jointcal_photoCalib-{visit:07d}-{ccd:03d}.fits",
    "fgcm_photoCalib": "fgcm-results/{filter}/fgcm_photoCalib-{visit:05d}-{ccd:03d}.fits",
    "fgcm_tract_photoCalib":
        "fgcm-results/{filter}/{tract:04d}/fgcm_photoCalib-{visit:05d}-{ccd:03d}.fits",
}  # fmt: skip
"""Gen2 path templates of the datasets written, relative to the rerun (obs_subaru)."""
FGCM_ZEROPOINTS = "fgcm-results/fgcmZeropoints.fits"
TRUTH_DIR = "truth"


def dataset_path(rerun_dir: str | os.PathLike, dataset: str, **data_id) -> Path:
    """Path of ``dataset`` for a full data id (visit, ccd, pointing, filter, tract).

    >>> dataset_path("/r", "src", visit=1228, ccd=5, pointing=816, filter="HSC-G", tract=0)
    PosixPath('/r/00816/HSC-G/output/SRC-0001228-005.fits')
    """
    return Path(rerun_dir) / TEMPLATES[dataset].format(**data_id)
