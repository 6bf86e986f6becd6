"""Shared fixtures: the real LSST/HSC files in ``../shared/data/real``; a small demo repository."""

from __future__ import annotations

import json
import shutil
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
def demo_repository(tmp_path_factory):
    """The one way tests get a demo repository: ``demo_repository(visits, ccds, seed)``.

    Each set of arguments is generated once per session (daskcal's own seeded generator,
    small CCDs) and shared by every module that asks for it: treat the result as read-only,
    and :func:`copy_repository` it before changing a file in it.
    """
    from daskcal.demo import make_demo_repository

    built: dict[tuple, Path] = {}

    def make(visits: int = 1, ccds: tuple[int, ...] = (0, 50), seed: int = 9) -> Path:
        key = (visits, tuple(ccds), seed)
        if key not in built:
            root = tmp_path_factory.mktemp("demo") / "repo"
            make_demo_repository(root, visits=visits, ccds=ccds, seed=seed, scheduler="sync")
            built[key] = root
        return built[key]

    return make


def copy_repository(root: Path, destination: Path) -> Path:
    """A private copy of a demo repository: its inputs, not the reruns tests wrote."""

    def inputs_only(folder, names):
        return [n for n in names if Path(folder).name == "rerun" and n != "demo"]

    return Path(shutil.copytree(root, destination, symlinks=True, ignore=inputs_only))


@pytest.fixture(scope="session")
def demo(demo_repository):
    """A small demo repository (one visit, CCDs 0 and 50); tests that change a file in it
    put it back, and outputs go to reruns of their own."""
    from daskcal.repo import Repository

    return Repository(demo_repository(), rerun="demo")


@pytest.fixture(scope="session")
def ids(demo):
    """The demo repository's two data ids."""
    return demo.expand([{"visit": 1228, "tract": 0}])
