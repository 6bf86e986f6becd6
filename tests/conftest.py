"""Shared fixtures: the real LSST/HSC files in ``../shared/data/real``; a small demo repository."""

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


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """A small demo repository (one visit, CCDs 0 and 50), built once; tests that change a
    file in it put it back, and outputs go to reruns of their own."""
    from daskcal.demo import make_demo_repository
    from daskcal.repo import Repository

    root = tmp_path_factory.mktemp("demo") / "repo"
    make_demo_repository(root, visits=1, ccds=(0, 50), seed=9, scheduler="sync")
    return Repository(root, rerun="demo")


@pytest.fixture(scope="session")
def ids(demo):
    """The demo repository's two data ids."""
    return demo.expand([{"visit": 1228, "tract": 0}])
