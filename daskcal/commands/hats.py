"""``daskcal hats``: a rerun's Parquet catalog as a HATS catalog for LSDB."""

from __future__ import annotations

import argparse
import sys

from ..repo import Repository
from .arguments import (
    Command,
    order,
    positive,
)


def _hats_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo", metavar="REPO", help="repository root (with _mapper)")
    parser.add_argument("--rerun", help="the rerun whose calibrated/parquet/src is read")
    parser.add_argument("--output", metavar="DIR", help="default: RERUN/calibrated/hats")
    parser.add_argument("--name", default="calsrc", help="catalog name: the folder DIR/NAME")
    parser.add_argument("--order", type=order, help="HEALPix order (default: from --max-rows)")
    parser.add_argument("--max-rows", type=positive, default=1_000_000, help="rows per file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing catalog")


def run_hats_command(args: argparse.Namespace) -> int:
    """``daskcal hats``: the rerun's Parquet catalog as a HATS catalog for LSDB."""
    from ..runs.hats import write_rerun_hats

    repo = Repository(args.repo, rerun=args.rerun)
    try:
        s = write_rerun_hats(
            repo, output=args.output, name=args.name, order=args.order,
            max_rows_per_pixel=args.max_rows, overwrite=args.overwrite,
        )  # fmt: skip
    except FileExistsError as err:
        print(f"daskcal: error: {err} (give --overwrite to replace it)", file=sys.stderr)
        return 2
    except ValueError as err:  # the data: incompatible schemas, no valid ra/dec
        print(f"daskcal: error: {err}", file=sys.stderr)
        return 1
    print(f"{s.path}: {s.n_rows} rows in {s.n_pixels} files at order {s.order}, {s.dropped} "
          "rows without valid ra/dec left out")  # fmt: skip
    return 0


COMMAND = Command(
    "hats", "a rerun's Parquet catalog as a HATS catalog (LSDB)", _hats_arguments, run_hats_command
)
