"""What a repository holds for some data ids: the inventory ``daskcal info`` prints.

For each dataset (inputs and calibrated outputs), how many of the ids have it along the
rerun's lookup chain and which do not; tract datasets are looked for in the tract given,
or in every tract that has jointcal/FGCM results on disk for the id's filter.
"""

from __future__ import annotations

from typing import Any

from .repo import TRACT_DATASETS, Repository

__all__ = ["INFO_DATASETS", "info_rows", "missing_text", "tract_groups"]

#: The datasets ``daskcal info`` counts, in its order.
INFO_DATASETS = (
    "calexp",
    "src",
    "skyCorr",
    "jointcal_wcs",
    "jointcal_photoCalib",
    "fgcm_photoCalib",
    "fgcm_tract_photoCalib",
    "calibrated_exp",
    "calibrated_src",
)


def missing_text(missing: list[dict[str, Any]], limit: int) -> str:
    shown = " ".join(f"{d['visit']}/{d['ccd']}" for d in missing[:limit])
    return shown + (" ..." if len(missing) > limit else "")


def tract_groups(
    dataset: str, ids: list[dict[str, Any]], on_disk: dict[str, list[int]]
) -> dict[str, list[tuple[dict[str, Any], list[dict[str, Any]]]]]:
    """Table label -> [(data id, the ids to look for)] for one dataset."""
    if dataset not in TRACT_DATASETS:
        return {"-": [(d, [d]) for d in ids]}
    groups: dict[str, list[tuple[dict[str, Any], list[dict[str, Any]]]]] = {}
    for d in ids:
        if d.get("tract") is not None:
            label, tries = str(d["tract"]), [d]
        else:
            tracts = on_disk.get(d["filter"], [])
            label = "on disk: " + ",".join(map(str, tracts)) if tracts else "n/a (give tract=)"
            tries = [{**d, "tract": t} for t in tracts]
        groups.setdefault(label, []).append((d, tries))
    return groups


def info_rows(
    repo: Repository, ids: list[dict[str, Any]], limit: int = 5
) -> list[tuple[str, str, str, str, str]]:
    """Rows (dataset, tract, found, missing, missing ids) of the ``info`` table.

    Ids with ``tract`` are looked for in that tract (one row per tract). Ids without it are
    looked for in every tract that has jointcal/FGCM results for their filter on disk (tract
    column ``on disk: T1,T2``) and count as found when present in any of them; a filter
    with no such tract shows ``n/a (give tract=)`` and its ids count as missing.
    """
    on_disk = repo.tracts()
    rows = []
    for dataset in INFO_DATASETS:
        for label, members in tract_groups(dataset, ids, on_disk).items():
            missing = [
                d for d, tries in members if not any(repo.exists(dataset, t) for t in tries)
            ]
            found, text = len(members) - len(missing), missing_text(missing, limit)
            rows.append((dataset, label, str(found), str(len(missing)), text))
    return rows
