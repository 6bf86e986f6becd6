"""The ``daskcal`` command line.

Each subcommand is a :class:`Command` (its arguments and its ``run`` function) listed once in
:data:`COMMANDS`. User errors (bad ``--id``, missing repository, bad rerun, bad config) are
printed as one line ``daskcal: error: ...`` on stderr with exit code 2, without a traceback.

``daskcal info REPO [--rerun R] [--id ...]`` shows, for the selected data ids, how many of
each input dataset exist along the rerun's lookup chain and which are missing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from .config import CalibrateConfig, ConfigError, parse_overrides, read_config_file
from .dataid import DataIdError, Selection, format_id, parse_selections
from .errors import RunSetupError
from .inventory import info_rows, missing_text
from .repo import Repository, RepositoryError
from .report import format_table
from .runs.cluster import BATCH_TYPES, ClusterError, ExecutionOptions, check_execution
from .runs.lock import RerunLockError
from .runs.provenance import ProvenanceError

__all__ = ["COMMANDS", "Command", "add_repo_arguments", "main", "open_repository"]

#: Errors shown to the user as one line (anything else is a bug and keeps its traceback).
USER_ERRORS = (
    DataIdError,
    ClusterError,
    RepositoryError,
    ConfigError,
    ProvenanceError,
    FileNotFoundError,
    RunSetupError,
    RerunLockError,
)

@dataclass(frozen=True)
class Command:
    """One subcommand: ``arguments(parser)`` declares its options, ``run(args)`` returns 0/1."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"daskcal: error: {message} (see {self.prog} --help)\n")


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


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    add_repo_arguments(parser)
    parser.add_argument(
        "--show-missing", type=_count, default=5, metavar="N", help="list up to N missing ids"
    )


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


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
    from .runs.calibrate import output_states

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
        "--batch-type",
        choices=BATCH_TYPES,
        default="none",
        help="none (in process), smp (this machine), pbs or slurm",
    )
    parser.add_argument("--cores", type=_cores, default=1, help="worker processes per node")
    parser.add_argument("--nodes", type=_nodes, default=1, help="batch jobs (pbs/slurm)")
    parser.add_argument(
        "--time",
        type=_seconds,
        default=600.0,
        help="expected seconds per data id (sets the batch walltime)",
    )
    parser.add_argument("--job", help="batch job name")
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="connect to a running Dask scheduler (overrides --batch-type)",
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


#: Upper bounds of ``--cores`` (worker processes on one node) and ``--nodes`` (batch jobs).
MAX_CORES, MAX_NODES = 1024, 1000


def _bounded(text: str, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer") from None
    if not 1 <= value <= high:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not in 1..{high}")
    return value


def _cores(text: str) -> int:
    return _bounded(text, MAX_CORES)


def _nodes(text: str) -> int:
    return _bounded(text, MAX_NODES)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number") from None
    if not 0 < value < 1e7:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds in (0, 1e7)")
    return value


def calibrate_setup(
    args: argparse.Namespace,
) -> tuple[Repository, list[dict[str, Any]], CalibrateConfig, ExecutionOptions, Any]:
    """Repository, ids, config, execution and run options of a calibrate command line."""
    from .runs.calibrate import RunOptions

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


def _reported(run: Callable[[], Any], after: Callable[[Any], None] | None = None) -> int:
    """Run a calibrate job and print its report, also when a signal stopped it."""
    from .runs.driver import RunInterrupted

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


def run_catalog_command(args: argparse.Namespace) -> int:
    """``daskcal catalog`` / ``calibrateCatalog.py``."""
    from .runs.calibrate import run_catalog

    repo, ids, config, execution, options = calibrate_setup(args)
    return _reported(lambda: run_catalog(repo, ids, config, execution, options))


def _exposure_arguments(parser: argparse.ArgumentParser) -> None:
    _calibrate_arguments(parser)
    parser.add_argument(
        "--quicklook",
        action="store_true",
        help="also write a PNG mosaic per visit: calibrated/<tract>/quicklook/visit-<visit>.png",
    )


def run_exposure_command(args: argparse.Namespace) -> int:
    """``daskcal exposure`` / ``calibrateExposure.py``."""
    from .runs.calibrate import run_exposure

    repo, ids, config, execution, options = calibrate_setup(args)

    def quicklooks(report) -> None:
        done, failed = report.count("done", "quicklook"), report.count("failed", "quicklook")
        skipped = report.count("skipped", "quicklook")
        print(f"quick-look PNGs: {done} written, {skipped} up to date, {failed} failed")

    return _reported(
        lambda: run_exposure(repo, ids, config, execution, options, quicklook=args.quicklook),
        quicklooks if args.quicklook else None,
    )


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    from .demo.cli import add_arguments

    add_arguments(parser)


def _run_demo(args: argparse.Namespace) -> int:
    """``daskcal demo make``: write a demo repository."""
    return args.func(args)


def _hats_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo", metavar="REPO", help="repository root (with _mapper)")
    parser.add_argument("--rerun", help="the rerun whose calibrated/parquet/src is read")
    parser.add_argument("--output", metavar="DIR", help="default: RERUN/calibrated/hats")
    parser.add_argument("--name", default="calsrc", help="catalog name: the folder DIR/NAME")
    parser.add_argument("--order", type=_order, help="HEALPix order (default: from --max-rows)")
    parser.add_argument("--max-rows", type=_positive, default=1_000_000, help="rows per file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing catalog")


def _order(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 29:
        raise ValueError(text)
    return value


def run_hats_command(args: argparse.Namespace) -> int:
    """``daskcal hats``: the rerun's Parquet catalog as a HATS catalog for LSDB."""
    from .runs.hats import write_rerun_hats

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


def _qa_arguments(parser: argparse.ArgumentParser) -> None:
    from .qa.options import QAOptions

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
        type=_positive,
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
    parser.add_argument("--cores", type=_cores, default=1, help="worker processes (smp)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler")


def run_qa_command(args: argparse.Namespace) -> int:
    """``daskcal qa``: the QA report of a rerun (``calibrated/qa/index.html``)."""
    from .qa.build import QAError, write_qa_report
    from .qa.options import QAOptions
    from .runs.cluster import dask_client

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


#: The subcommands, in the order ``daskcal --help`` lists them.
COMMANDS: tuple[Command, ...] = (
    Command("info", "what exists in a repository for some data ids", _info_arguments, run_info),
    Command("demo", "synthetic HSC repositories with truth", _demo_arguments, _run_demo),
    Command(
        "exposure",
        "calibrateExposure: apply jointcal/FGCM calibrations and skyCorr to calexps",
        _exposure_arguments,
        run_exposure_command,
    ),
    Command(
        "catalog",
        "calibrateCatalog: apply jointcal/FGCM calibrations to src catalogs",
        _calibrate_arguments,
        run_catalog_command,
    ),
    Command(
        "hats",
        "a rerun's Parquet catalog as a HATS catalog (LSDB)",
        _hats_arguments,
        run_hats_command,
    ),
    Command(
        "qa",
        "a QA report of what the calibration did, in HTML (calibrated/qa/index.html)",
        _qa_arguments,
        run_qa_command,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    """The ``daskcal`` argument parser with every command of :data:`COMMANDS`."""
    parser = _Parser(prog="daskcal", description="Apply HSC mosaic calibrations with Dask.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        command.arguments(child)
        child.set_defaults(run=command.run)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Logs to whatever ``sys.stderr`` is at the time (notebooks and tests replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging() -> None:
    logger = logging.getLogger("daskcal")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def calibrate_exposure_main(argv: Sequence[str] | None = None) -> int:
    """``calibrateExposure.py``: hscPipe's command, as ``daskcal exposure``."""
    return main(["exposure", *(sys.argv[1:] if argv is None else argv)])


def calibrate_catalog_main(argv: Sequence[str] | None = None) -> int:
    """``calibrateCatalog.py``: hscPipe's command, as ``daskcal catalog``."""
    return main(["catalog", *(sys.argv[1:] if argv is None else argv)])


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``daskcal``; returns the exit code (0 ok, 1 some data failed, 2 usage error)."""
    _setup_logging()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    from .runs.driver import RunInterrupted, handle_signals

    try:
        with handle_signals():
            return args.run(args)
    except RunInterrupted as interrupt:
        print(f"daskcal: interrupted by {interrupt}", file=sys.stderr)
        return interrupt.exit_code
    except USER_ERRORS as err:
        print(f"daskcal: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. ``daskcal info ... | head``
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
