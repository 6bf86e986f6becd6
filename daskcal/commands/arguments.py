"""Arguments every command shares: the repository and ``--id``s, checked number types, and
:class:`Command`, what a subcommand is.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from ..dataid import Selection, parse_selections
from ..repo import Repository

#: Upper bounds of ``--cores`` (worker processes on one node) and ``--nodes`` (batch jobs).
MAX_CORES, MAX_NODES = 1024, 1000


@dataclass(frozen=True)
class Command:
    """One subcommand: ``arguments(parser)`` declares its options, ``run(args)`` returns 0/1."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def add_repo_arguments(parser: argparse.ArgumentParser) -> None:
    """``REPO``, ``--rerun`` and repeatable ``--id``, as hscPipe's command-line tasks take."""
    parser.add_argument("repo", metavar="REPO", help="repository root (with _mapper)")
    parser.add_argument("--rerun", help="NAME, or IN:OUT to read IN and write OUT")
    parser.add_argument(
        "--id",
        nargs="*",
        action="append",
        metavar="KEY=VALUE",
        help="data ids, e.g. --id field=NGC604 tract=0 ccd=0..8^10..103 (repeatable; "
        "values split on ^, A..B:S ranges; default: everything)",
    )


def open_repository(args: argparse.Namespace) -> tuple[Repository, list[Selection]]:
    """The repository and the data ids of a command line, one compact selection per ``--id``.

    The selections are checked (:func:`daskcal.dataid.parse_selection`) but not expanded:
    ``Repository.match`` / ``expand`` take them and match their ranges in the registry.
    """
    ids = parse_selections(args.id or [[]])
    return Repository(args.repo, rerun=args.rerun), ids


def count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def bounded(text: str, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer") from None
    if not 1 <= value <= high:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not in 1..{high}")
    return value


def cores(text: str) -> int:
    return bounded(text, MAX_CORES)


def nodes(text: str) -> int:
    return bounded(text, MAX_NODES)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number") from None
    if not 0 < value < 1e7:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds in (0, 1e7)")
    return value


def order(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 29:
        raise ValueError(text)
    return value
