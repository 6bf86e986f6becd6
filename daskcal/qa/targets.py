"""Which CCDs a QA report covers, and the files each is measured from.

A CCD is covered when the output rerun holds its CALEXP or CALSRC. Its inputs are the
products the run used: the calexp, the skyCorr and the PhotoCalib and SkyWcs named by the
configuration recorded in ``rerun/<OUT>/config/`` (``calibrateExposure.json`` first, then
``calibrateCatalog.json``; hscPipe 8 defaults when neither exists), found along the
rerun's input chain as the run found them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dataid import Selection, check_id
from ..idmatch import id_from_path, sort_ids, template_glob
from ..layout import OutputLayout
from ..repo import REGISTRY_ONLY, Repository

__all__ = [
    "CALIBRATE_TASKS",
    "CcdTarget",
    "calibration_datasets",
    "ccd_targets",
    "output_ids",
    "recorded_configs",
    "recorded_versions",
    "select_ids",
]

CALIBRATE_TASKS = ("calibrateExposure", "calibrateCatalog")
_MAX_JSON_BYTES = 1 << 20
_DEFAULT_NAMES = {"externalPhotoCalibName": "fgcm_tract", "externalSkyWcsName": "jointcal"}


def _read_json(path: Path) -> dict[str, Any]:
    """A small JSON object file, or {} when absent, too large or not a JSON object."""
    try:
        if not path.is_file() or path.stat().st_size > _MAX_JSON_BYTES:
            return {}
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def recorded_configs(rerun_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The configurations recorded in an output rerun.

    Parameters
    ----------
    rerun_dir : path
        The output rerun.

    Returns
    -------
    dict
        Task name -> its ``config/<task>.json`` (tasks without one left out).
    """
    folder = OutputLayout(rerun_dir).config
    found = {task: _read_json(folder / f"{task}.json") for task in CALIBRATE_TASKS}
    return {task: config for task, config in found.items() if config}


def recorded_versions(rerun_dir: str | os.PathLike) -> dict[str, str]:
    """The package versions recorded in an output rerun.

    Parameters
    ----------
    rerun_dir : path
        The output rerun.

    Returns
    -------
    dict of str to str
        Package -> version from ``config/packages.json`` ({} if none).
    """
    versions = _read_json(OutputLayout(rerun_dir).config / "packages.json")
    return {str(k): str(v) for k, v in versions.items()}


def calibration_datasets(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The calibration datasets the recorded run applied.

    Parameters
    ----------
    configs : mapping
        :func:`recorded_configs`.

    Returns
    -------
    dict of str to str
        ``photocalib`` -> ``<externalPhotoCalibName>_photoCalib``, ``skywcs`` ->
        ``<externalSkyWcsName>_wcs``.
    """
    chosen = next((configs[t] for t in CALIBRATE_TASKS if t in configs), {})
    names = {k: str(chosen.get(k, default)) for k, default in _DEFAULT_NAMES.items()}
    return {
        "photocalib": f"{names['externalPhotoCalibName']}_photoCalib",
        "skywcs": f"{names['externalSkyWcsName']}_wcs",
    }


def output_ids(repo: Repository) -> list[dict[str, Any]]:
    """The CCDs with a CALEXP or CALSRC in the output rerun, from the file names.

    Parameters
    ----------
    repo : Repository
        Its output rerun is listed.

    Returns
    -------
    list of dict
        Data ids (tract, pointing, filter, visit, ccd), sorted; names holding values no
        data id can have are left out.
    """
    found: dict[tuple, dict[str, Any]] = {}
    for dataset in ("calibrated_exp", "calibrated_src"):
        template = Repository.template(dataset)
        for path in repo.output_dir.glob(template_glob(template)):
            dataid = id_from_path(template, path.relative_to(repo.output_dir).as_posix())
            if dataid is not None and check_id(dataid) is None:
                found.setdefault((dataid["tract"], dataid["visit"], dataid["ccd"]), dataid)
    return sort_ids(found.values())


def select_ids(
    repo: Repository, ids: Iterable[Mapping[str, Any]], selections: Iterable[Selection]
) -> list[dict[str, Any]]:
    """The ids that some ``--id`` selection matches.

    Parameters
    ----------
    repo : Repository
        Its registry matches the keys the file names lack (``field``, ``dateObs``, ...),
        as the calibrate commands match them.
    ids : iterable of mapping
        :func:`output_ids`.
    selections : iterable of Selection
        ``--id`` selections; none keeps every id.

    Returns
    -------
    list of dict
    """
    ids = [dict(d) for d in ids]
    selections = list(selections)
    if not selections:
        return ids
    keep: list[dict[str, Any]] = []
    for selection in selections:
        allowed = None
        if set(selection.keys) & set(REGISTRY_ONLY):
            rows, _ = repo.match([selection])
            allowed = {(r["visit"], r["ccd"]) for r in rows}
        keep += [
            d
            for d in ids
            if selection.matches(d) and (allowed is None or (d["visit"], d["ccd"]) in allowed)
        ]
    unique = {(d["tract"], d["visit"], d["ccd"]): d for d in keep}
    return sort_ids(unique.values())


@dataclass(frozen=True)
class CcdTarget:
    """One CCD to measure.

    Attributes
    ----------
    dataid : dict
        visit, ccd, tract, pointing, filter.
    paths : dict of str to str or None
        ``calexp``, ``skycorr``, ``photocalib``, ``skywcs`` (inputs) and ``calexp_out``,
        ``calsrc_out`` (outputs); None where absent.
    work : str
        Where the CCD's grids and stars are saved for its visit page and the matching.
    """

    dataid: dict[str, Any]
    paths: dict[str, str | None] = field(default_factory=dict)
    work: str = ""


def ccd_targets(
    repo: Repository,
    ids: Iterable[Mapping[str, Any]],
    datasets: Mapping[str, str],
    work_dir: str | os.PathLike,
) -> list[CcdTarget]:
    """The files of each CCD.

    Parameters
    ----------
    repo : Repository
        Inputs are found along its chain, outputs in its output rerun.
    ids : iterable of mapping
        Full data ids with tract.
    datasets : mapping
        :func:`calibration_datasets`.
    work_dir : path
        Where the work files go.

    Returns
    -------
    list of CcdTarget
    """
    roles = {"calexp": "calexp", "skycorr": "skyCorr", **datasets}
    targets = []
    for d in ids:
        paths = {role: repo.find(name, d) for role, name in roles.items()}
        for role, name in (("calexp_out", "calibrated_exp"), ("calsrc_out", "calibrated_src")):
            path = repo.output_dir / repo.relative_path(name, d)
            paths[role] = path if path.is_file() else None
        work = Path(work_dir) / f"tract={d['tract']}" / f"{d['visit']:07d}-{d['ccd']:03d}.npz"
        text = {role: None if p is None else str(p) for role, p in paths.items()}
        targets.append(CcdTarget(dict(d), text, str(work)))
    return targets
