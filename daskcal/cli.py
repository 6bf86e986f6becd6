"""The ``daskcal`` command line.

Each subcommand is a :class:`~daskcal.commands.arguments.Command` (its arguments and its
``run`` function) in its own module of :mod:`daskcal.commands`, listed once in
:data:`COMMANDS`. User errors (bad ``--id``, missing repository, bad rerun, bad config, a
held rerun) are printed as one line ``daskcal: error: ...`` on stderr with exit code 2,
without a traceback; a run stopped by a signal exits with 128 + the signal.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .commands import calibrate, demo, hats, info, qa
from .commands.arguments import Command, add_repo_arguments, open_repository
from .config import ConfigError
from .dataid import DataIdError
from .errors import RunSetupError
from .repo import RepositoryError
from .runs.cluster import ClusterError
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


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"daskcal: error: {message} (see {self.prog} --help)\n")


#: The subcommands, in the order ``daskcal --help`` lists them.
COMMANDS: tuple[Command, ...] = (
    info.COMMAND,
    demo.COMMAND,
    calibrate.EXPOSURE,
    calibrate.CATALOG,
    hats.COMMAND,
    qa.COMMAND,
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
