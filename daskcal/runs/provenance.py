"""Provenance: the configuration and package versions a rerun was made with.

Like hscPipe, a task records its configuration and the versions of the packages it ran
with in the output rerun (``config/<task>.json`` and ``config/packages.json``). A later run
whose configuration or versions differ refuses to start, printing the difference, unless
told to clobber. Only what changes results is compared: the configuration fields and the
versions of the packages that compute or write the outputs.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_write

__all__ = ["ProvenanceError", "check_and_record", "package_versions"]

PACKAGES = (
    "daskcal",
    "numpy",
    "scipy",
    "pandas",
    "astropy",
    "pyarrow",
    "starlink-pyast",
    "dask",
    "xarray",
)


class ProvenanceError(RuntimeError):
    """The rerun was made with another configuration or other package versions."""


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that determine the outputs."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [
        f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
        for k in keys
        if old.get(k) != new.get(k)
    ]


def _write_json(path: Path, value: dict[str, Any]) -> None:
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def check_and_record(
    rerun_dir: Path,
    task: str,
    config: dict[str, Any],
    *,
    clobber_config: bool = False,
    clobber_versions: bool = False,
    no_versions: bool = False,
) -> None:
    """Compare with what the rerun recorded, refuse on a difference, then record.

    Parameters
    ----------
    rerun_dir : Path
        The output rerun.
    task : str
        ``calibrateExposure`` or ``calibrateCatalog``.
    config : dict
        The effective configuration.
    clobber_config, clobber_versions : bool
        Overwrite a differing record instead of refusing.
    no_versions : bool
        Neither check nor record package versions (hscPipe's ``--no-versions``).

    Raises
    ------
    ProvenanceError
        With the differences, one per line, and the flag that overrides them.
    """
    config_path = rerun_dir / "config" / f"{task}.json"
    versions_path = rerun_dir / "config" / "packages.json"
    problems = []
    if config_path.exists() and not clobber_config:
        diff = _diff(json.loads(config_path.read_text()), config)
        if diff:
            problems.append(
                f"{task} config differs from {config_path} "
                f"(use --clobber-config to overwrite): " + "; ".join(diff)
            )
    versions = package_versions()
    if not no_versions and versions_path.exists() and not clobber_versions:
        diff = _diff(json.loads(versions_path.read_text()), versions)
        if diff:
            problems.append(
                f"package versions differ from {versions_path} "
                f"(use --clobber-versions to overwrite): " + "; ".join(diff)
            )
    if problems:
        raise ProvenanceError("\n".join(problems))
    _write_json(config_path, config)
    if not no_versions:
        _write_json(versions_path, versions)
