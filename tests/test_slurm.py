"""Both calibrate commands on a real (single-node) Slurm, compared with an in-process run.

CI starts Slurm with ``.ci/slurm-up`` and sets ``DASKCAL_TEST_SLURM=1``; elsewhere these
tests skip, saying why. The commands run as a user types them, in a subprocess, with the
site policy in a dask-jobqueue YAML as ``deploy/README.md`` describes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from conftest import copy_repository

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("DASKCAL_TEST_SLURM") != "1",
        reason="no Slurm here: CI starts one with .ci/slurm-up and sets DASKCAL_TEST_SLURM=1",
    ),
    pytest.mark.skipif(shutil.which("sbatch") is None, reason="sbatch is not on PATH"),
]

BIN = Path(sys.executable).parent
IDS = ["--id", "field=NGC604", "tract=0", "ccd=0..8^10..103"]
SITE_YAML = """\
jobqueue:
  slurm:
    queue: debug
    memory: 1GB
    interface: lo
    local-directory: {tmp}/worker-space
    log-directory: {tmp}/slurm-logs
    scheduler-options:
      dashboard_address: ":0"
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_repository):
    """The demo repository calibrated twice: ``--batch-type=none`` and ``--batch-type=slurm``."""
    tmp = tmp_path_factory.mktemp("slurm")
    repo = tmp / "repo"
    copy_repository(demo_repository(visits=2, ccds=(0, 1, 50), seed=11), repo)
    (tmp / "dask").mkdir()
    (tmp / "dask" / "jobqueue.yaml").write_text(SITE_YAML.format(tmp=tmp))
    env = {**os.environ, "DASK_CONFIG": str(tmp / "dask")}
    for batch in ("none", "slurm"):
        extra = ["--cores", "1", "--nodes", "2", "--time", "60"] if batch == "slurm" else []
        for command in ("calibrateExposure.py", "calibrateCatalog.py"):
            argv = [str(BIN / command), str(repo), "--rerun", f"demo:{batch}", *IDS]
            done = subprocess.run(
                [*argv, f"--batch-type={batch}", *extra],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, f"{command} {batch}:\n{done.stdout}\n{done.stderr}"
    return repo / "rerun", tmp / "slurm-logs"


def outputs(rerun: Path, pattern: str) -> dict[str, Path]:
    return {p.name: p for p in sorted((rerun / "calibrated").rglob(pattern))}


def test_workers_ran_as_slurm_jobs(runs):
    _, logs = runs
    worker_logs = sorted(logs.glob("*.err"))
    assert len(worker_logs) >= 2, "each command should have started --nodes=2 Slurm jobs"
    text = "".join(p.read_text() for p in worker_logs)
    assert "Starting established connection" in text or "Registered to" in text
    leftover = subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip()
    assert leftover == "", f"jobs left behind: {leftover}"


def test_calexps_identical(runs):
    rerun, _ = runs
    ref, got = outputs(rerun / "none", "CALEXP-*.fits"), outputs(rerun / "slurm", "CALEXP-*.fits")
    assert len(ref) == 6 and ref.keys() == got.keys()
    for name in ref:
        with fits.open(ref[name]) as a, fits.open(got[name]) as b:
            assert len(a) == len(b)
            for hdu_a, hdu_b in zip(a[1:4], b[1:4], strict=True):
                assert np.array_equal(hdu_a.data, hdu_b.data, equal_nan=True), name


def test_calsrcs_identical(runs):
    rerun, _ = runs
    ref, got = outputs(rerun / "none", "CALSRC-*.fits"), outputs(rerun / "slurm", "CALSRC-*.fits")
    assert len(ref) == 6 and ref.keys() == got.keys()
    for name in ref:
        with fits.open(ref[name]) as a, fits.open(got[name]) as b:
            assert a[1].columns.names == b[1].columns.names
            for column in a[1].columns.names:
                assert np.array_equal(a[1].data[column], b[1].data[column], equal_nan=True)


def test_parquet_identical(runs):
    rerun, _ = runs
    ref = outputs(rerun / "none", "*.parquet")
    got = outputs(rerun / "slurm", "*.parquet")
    assert any(name.startswith("visit-") for name in ref) and ref.keys() == got.keys()
    for name in ref:
        pd.testing.assert_frame_equal(pd.read_parquet(ref[name]), pd.read_parquet(got[name]))
