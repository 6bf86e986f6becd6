"""``daskcal demo make OUT ...``: write a demo repository and print what was written."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..dataid import DataIdError, parse_id
from .repository import make_demo_repository

__all__ = ["add_arguments", "main", "parse_ccds", "register", "run_make"]


def parse_ccds(text: str) -> list[int]:
    """CCD numbers in the ``--id`` value syntax (``^`` alternatives, ``A..B[:S]`` ranges).

    >>> parse_ccds("0..3^10")
    [0, 1, 2, 3, 10]
    """
    try:
        return sorted({int(d["ccd"]) for d in parse_id(f"ccd={text}")})
    except DataIdError as err:
        raise argparse.ArgumentTypeError(f"--ccds {text!r}: {err}") from None


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``demo make`` to a ``daskcal`` sub-command parser; returns the ``demo`` parser."""
    demo = subparsers.add_parser("demo", help="synthetic HSC repositories with truth")
    add_arguments(demo)
    return demo


def add_arguments(demo: argparse.ArgumentParser) -> None:
    """The ``make`` sub-command and its options, on the ``demo`` parser."""
    commands = demo.add_subparsers(dest="demo_command", metavar="COMMAND", required=True)
    make = commands.add_parser(
        "make",
        help="write a seeded demo Gen2 HSC repository (and its truth)",
        description="Write calexp, src, skyCorr, jointcal and FGCM products of field NGC604 "
        "in HSC-G and HSC-I, a registry, and the truth under OUT/truth.",
    )
    make.add_argument("out", metavar="OUT", help="repository root to write")
    make.add_argument("--visits", type=int, default=4, help="number of visits (default 4)")
    make.add_argument("--ccds", type=parse_ccds, default=None, metavar="LIST",
                      help="CCDs, e.g. 0..8^10..103 (default: all science CCDs)")  # fmt: skip
    make.add_argument("--size", choices=("small", "full"), default="small",
                      help="small: 256x512-pixel CCDs (default); full: 2048x4176")  # fmt: skip
    make.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    make.add_argument("--rerun", default="demo", help="rerun name (default demo)")
    make.add_argument("--tract", type=int, default=0, help="tract of the mosaic products")
    make.add_argument(
        "--scheduler", default="processes", choices=("processes", "threads", "sync"),
        help="local Dask scheduler (default processes: writing FITS with astropy holds the "
        "GIL, so threads hardly run in parallel)",
    )  # fmt: skip
    make.set_defaults(func=run_make)


def run_make(args: argparse.Namespace) -> int:
    """Handler of ``demo make``: writes the repository, prints the summary, returns 0."""
    summary = make_demo_repository(
        args.out, visits=args.visits, ccds=args.ccds, size=args.size, seed=args.seed,
        rerun=args.rerun, tract=args.tract, scheduler=args.scheduler,
    )  # fmt: skip
    print(summary.format())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m daskcal.demo.cli make OUT ...``."""
    parser = argparse.ArgumentParser(prog="daskcal")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"daskcal demo: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
