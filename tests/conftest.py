"""Shared fixtures: the real LSST/HSC files in ``../shared/data/real``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# No per-example deadline: CI machines are shared and timing belongs in benchmarks.
settings.register_profile("daskcal", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("daskcal")

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """The folder of real files; tests that need it skip when it is absent."""
    if not REAL.is_dir():
        pytest.skip(f"real data folder {REAL} is absent")
    return REAL


@pytest.fixture(scope="session")
def golden(real_dir: Path) -> dict:
    """Reference values from ``golden.json``."""
    return json.loads((real_dir / "golden.json").read_text())


def real_path(relative: str) -> Path:
    """Path of one real file, skipping the calling test when it is absent."""
    path = REAL / relative
    if not path.exists():
        pytest.skip(f"real file {path} is absent")
    return path
