"""``calibrateExposure.py`` / ``calibrateCatalog.py`` (``daskcal exposure`` / ``daskcal
catalog``): hscPipe's options, the run, its report.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from ..config import CalibrateConfig, parse_overrides, read_config_file
from ..repo import Repository, RepositoryError
from ..runs.cluster import BATCH_TYPES, ExecutionOptions, check_execution
from .arguments import (
    Command,
    add_repo_arguments,
    cores,
    nodes,
    open_repository,
    seconds,
)


def _calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of hscPipe's calibrateExposure.py / calibrateCatalog.py."""
    add_repo_arguments(parser)
    parser.add_argument("--calib", help="calibration repository (accepted; not needed here)")
    parser.add_argument("--output", help="output rerun folder, ROOT/rerun/NAME (as --rerun NAME)")
    parser.add_argument(
        "-c",
        "--config",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME=VALUE",
        help="config overrides, e.g. externalPhotoCalibName=jointcal doApplySkyCorr=False",
    )
    parser.add_argument(
        "-C",
        "--configfile",
        action="append",
        default=[],
        metavar="FILE",
        help="config file of 'config.NAME = VALUE' lines (parsed, never executed)",
    )
    parser.add_argument(
        "--clobber-config", action="store_true", help="overwrite a differing recorded config"
    )
    parser.add_argument(
        "--clobber-versions",
        action="store_true",
        help="overwrite differing recorded package versions",
    )
    parser.add_argument(
        "--no-versions", action="store_true", help="neither check nor record package versions"
    )
    parser.add_argument("--doraise", action="store_true", help="stop at the first failure")
    parser.add_argument("--redo", action="store_true", help="recompute existing outputs")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="expand and plan only: print what a run would do; write nothing",
    )
    parser.add_argument(
        "--qa",
        action="store_true",
        help="then write the QA report of the rerun: calibrated/qa/index.html (see daskcal qa)",
    )
    parser.add_argument(
        "--batch-type",
        choices=BATCH_TYPES,
        default="none",
        help="none (in process), smp (this machine), pbs or slurm",
    )
    parser.add_argument("--cores", type=cores, default=1, help="worker processes per node")
    parser.add_argument("--nodes", type=nodes, default=1, help="batch jobs (pbs/slurm)")
    parser.add_argument(
        "--time",
        type=seconds,
        default=600.0,
        help="expected seconds per data id (sets the batch walltime)",
    )
    parser.add_argument("--job", help="batch job name")
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="connect to a running Dask scheduler (overrides --batch-type)",
    )


def calibrate_setup(
    args: argparse.Namespace,
) -> tuple[Repository, list[dict[str, Any]], CalibrateConfig, ExecutionOptions, Any]:
    """Repository, ids, config, execution and run options of a calibrate command line."""
    from ..runs.calibrate import RunOptions

    if args.output:
        if args.rerun:
            raise RepositoryError("give --rerun or --output, not both")
        args.rerun = _rerun_of_output(args.repo, args.output)
    repo, ids = open_repository(args)
    config = CalibrateConfig()
    for path in args.configfile:
        config = read_config_file(path, config)
    config = parse_overrides(args.config, config)
    execution = ExecutionOptions(
        args.batch_type, args.cores, args.nodes, args.time, args.job, args.scheduler
    )
    check_execution(execution)  # before anything is expanded, recorded or written
    options = RunOptions(
        redo=args.redo,
        doraise=args.doraise,
        clobber_config=args.clobber_config,
        clobber_versions=args.clobber_versions,
        no_versions=args.no_versions,
        dry_run=args.dry_run,
    )
    return repo, ids, config, execution, options


def _rerun_of_output(root: str, output: str) -> str:
    reruns = os.path.abspath(os.path.join(root, "rerun"))
    path = os.path.abspath(output)
    if os.path.dirname(path) != reruns:
        raise RepositoryError(f"--output {output}: must be a folder ROOT/rerun/NAME ({reruns})")
    return os.path.basename(path)


def print_report(report: Any) -> int:
    """Print the failures and the summary of a run; returns its exit code."""
    shown = report.failed[:50] + report.flagged[:50]
    if shown:
        print(report.table(outcomes=shown))
        if len(report.failed) > 50:
            print(f"... and {len(report.failed) - 50} more failures (see the report)")
    for problem in report.problems:
        print(f"error: {problem}")
    print(report.summary() + f" in {report.elapsed:.1f} s")
    if report.path:
        print(f"report: {report.path}")
    return report.exit_code


def reported(run: Callable[[], Any], after: Callable[[Any], None] | None = None) -> int:
    """Run a calibrate job and print its report, also when a signal stopped it."""
    from ..runs.driver import RunInterrupted

    try:
        report = run()
    except RunInterrupted as interrupt:
        report = getattr(interrupt, "report", None)
        if report is None:
            raise
    if not hasattr(report, "outcomes"):  # a dry run's plan
        print(report.table())
        print(report.summary() + f" ({report.elapsed:.1f} s)")
        return 0
    code = print_report(report)
    if after is not None:
        after(report)
    return code


def with_qa(args: argparse.Namespace, code: int) -> int:
    """After a calibrate command: its QA report when ``--qa`` (and the run was not a dry
    run), on the same machine or scheduler; the exit code of both."""
    if not args.qa or args.dry_run or code >= 128:
        return code
    from ..qa.options import QAOptions
    from ..repo import Repository
    from .qa import write_and_print

    repo, selections = open_repository(args)
    output = repo.output_dir.relative_to(repo.root / "rerun") if repo.rerun else None
    repo = Repository(repo.root, rerun=str(output) if output else None)
    batch = args.batch_type if args.batch_type in ("none", "smp") else "none"
    qa_code = write_and_print(
        repo,
        selections,
        QAOptions(),
        ExecutionOptions(batch, args.cores, scheduler=args.scheduler),
    )
    return max(code, 1 if qa_code else 0)


def run_catalog_command(args: argparse.Namespace) -> int:
    """``daskcal catalog`` / ``calibrateCatalog.py``."""
    from ..runs.calibrate import run_catalog

    repo, ids, config, execution, options = calibrate_setup(args)
    return with_qa(args, reported(lambda: run_catalog(repo, ids, config, execution, options)))


def _exposure_arguments(parser: argparse.ArgumentParser) -> None:
    _calibrate_arguments(parser)
    parser.add_argument(
        "--quicklook",
        action="store_true",
        help="also write a PNG mosaic per visit: calibrated/<tract>/quicklook/visit-<visit>.png",
    )
    parser.add_argument(
        "--codec",
        choices=("daskcal", "afw", "astropy"),
        default="daskcal",
        help="CALEXP compression (all lossless): daskcal (fast, several rows a tile), afw "
        "(one row a tile, as hscPipe writes) or astropy (exactly what astropy writes)",
    )


def run_exposure_command(args: argparse.Namespace) -> int:
    """``daskcal exposure`` / ``calibrateExposure.py``."""
    from ..runs.calibrate import run_exposure

    repo, ids, config, execution, options = calibrate_setup(args)

    def quicklooks(report) -> None:
        done, failed = report.count("done", "quicklook"), report.count("failed", "quicklook")
        skipped = report.count("skipped", "quicklook")
        print(f"quick-look PNGs: {done} written, {skipped} up to date, {failed} failed")

    code = reported(
        lambda: run_exposure(
            repo, ids, config, execution, options, quicklook=args.quicklook, codec=args.codec
        ),
        quicklooks if args.quicklook else None,
    )
    return with_qa(args, code)


EXPOSURE = Command(
    "exposure",
    "calibrateExposure: apply jointcal/FGCM calibrations and skyCorr to calexps",
    _exposure_arguments,
    run_exposure_command,
)
CATALOG = Command(
    "catalog",
    "calibrateCatalog: apply jointcal/FGCM calibrations to src catalogs",
    _calibrate_arguments,
    run_catalog_command,
)
