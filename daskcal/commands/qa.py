"""``daskcal qa``: the QA report of what the calibration did."""

from __future__ import annotations

import argparse
import sys

from ..runs.cluster import ExecutionOptions
from .arguments import (
    Command,
    add_repo_arguments,
    cores,
    open_repository,
    positive,
)


def _qa_arguments(parser: argparse.ArgumentParser) -> None:
    from ..qa.options import QAOptions

    add_repo_arguments(parser)
    defaults = QAOptions()
    parser.add_argument(
        "--n-mad",
        type=float,
        default=defaults.n_mad,
        help="flag values further than this many MAD from their tract median",
    )
    parser.add_argument(
        "--min-count",
        type=positive,
        default=defaults.min_count,
        help="fewest CCDs (or visits) a median and MAD are taken from",
    )
    parser.add_argument(
        "--mad-floor-mmag", type=float, default=defaults.mad_floor_mmag, help="smallest MAD (mmag)"
    )
    parser.add_argument(
        "--mad-floor-mas", type=float, default=defaults.mad_floor_mas, help="smallest MAD (mas)"
    )
    parser.add_argument(
        "--batch-type",
        choices=("none", "smp"),
        default="none",
        help="none (in process) or smp (--cores worker processes on this machine)",
    )
    parser.add_argument("--cores", type=cores, default=1, help="worker processes (smp)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler")


def run_qa_command(args: argparse.Namespace) -> int:
    """``daskcal qa``: the QA report of a rerun (``calibrated/qa/index.html``)."""
    from ..qa.options import QAOptions

    repo, selections = open_repository(args)
    try:
        options = QAOptions(
            n_mad=args.n_mad,
            min_count=args.min_count,
            mad_floor_mmag=args.mad_floor_mmag,
            mad_floor_mas=args.mad_floor_mas,
        )
    except ValueError as err:
        print(f"daskcal: error: {err}", file=sys.stderr)
        return 2
    execution = ExecutionOptions(args.batch_type, args.cores, scheduler=args.scheduler)
    return write_and_print(repo, selections, options, execution)


def write_and_print(repo, selections, options, execution: ExecutionOptions) -> int:
    """Write the QA report on the execution's cluster and print where it is; 0, or 2 when
    nothing calibrated matches the ids."""
    from ..qa.build import QAError, write_qa_report
    from ..runs.cluster import dask_client

    with dask_client(execution) as client:
        try:
            report = write_qa_report(repo, selections, options, client=client)
        except QAError as err:
            print(f"daskcal: error: {err}", file=sys.stderr)
            return 2
    flagged = report.outliers
    ccds = flagged[flagged["level"] == "ccd"][["visit", "ccd"]].drop_duplicates()
    visits = int((flagged["level"] == "visit").sum())
    print(
        f"QA of {len(report.ccds)} CCD(s) in {len(report.visits)} visit(s): {len(flagged)} "
        f"outlier(s) (CCDs: {len(ccds)}, visits: {visits})"
    )
    print(f"QA report: {report.index}")
    return 0


COMMAND = Command(
    "qa",
    "a QA report of what the calibration did, in HTML (calibrated/qa/index.html)",
    _qa_arguments,
    run_qa_command,
)
