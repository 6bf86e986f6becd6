"""``daskcal info``: what a repository holds for some data ids, and the outputs a run would
redo.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..dataid import DataIdError, format_id
from ..inventory import info_rows, missing_text
from ..repo import Repository
from ..report import format_table
from .arguments import (
    Command,
    add_repo_arguments,
    count,
    open_repository,
)


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    add_repo_arguments(parser)
    parser.add_argument(
        "--show-missing", type=count, default=5, metavar="N", help="list up to N missing ids"
    )


def run_info(args: argparse.Namespace) -> int:
    """``daskcal info``: what exists for the selected data ids."""
    repo, ids = open_repository(args)
    found, unmatched = repo.match(ids)
    if not found:
        raise DataIdError(f"no data in {repo.root}" + (" for the given --id" if args.id else ""))
    rerun = f"{repo.input_dir}" if repo.rerun else "(none: ROOT itself)"
    rerun += f" -> {repo.output_dir}" if repo.output_dir != repo.input_dir else ""
    source = repo.registry or "none: ids from calexp/src files on disk"
    filters = sorted({d["filter"] for d in found})
    print(f"repository  {repo.root}\nrerun       {rerun}\nregistry    {source}")
    print(
        f"data ids    {len(found)} ({len({d['visit'] for d in found})} visits, "
        f"{len({d['ccd'] for d in found})} ccds; filters {' '.join(filters)})"
    )
    if unmatched:
        more = " ..." if len(unmatched) > 3 else ""
        shown = "; ".join(map(format_id, unmatched[:3]))
        print(f"no data     {len(unmatched)} data ids: {shown}{more}")
    print()
    header = ("dataset", "tract", "found", "missing", "missing (visit/ccd)")
    print(format_table(header, info_rows(repo, found, args.show_missing), right=(2, 3)))
    _print_output_states(repo, found, args.show_missing)
    return 0


def _print_output_states(repo: Repository, ids: list[dict[str, Any]], limit: int) -> None:
    """Outputs that a run would redo: stale (other inputs or config) or corrupt."""
    from ..runs.calibrate import output_states

    ids = [d for d in ids if d.get("tract") is not None]
    lines = []
    for task in ("calibrateExposure", "calibrateCatalog"):
        states = output_states(repo, ids, task)
        for state in ("stale", "corrupt"):
            members = states.get(state, [])
            if members:
                shown = missing_text([d for d, _ in members], limit)
                lines.append(f"{task} outputs {state}: {len(members)} ({shown}): {members[0][1]}")
    if lines:
        print("\n" + "\n".join(lines))


COMMAND = Command(
    "info", "what exists in a repository for some data ids", _info_arguments, run_info
)
