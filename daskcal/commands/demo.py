"""``daskcal demo make``: write a demo repository."""

from __future__ import annotations

import argparse

from .arguments import (
    Command,
)


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    from ..demo.cli import add_arguments

    add_arguments(parser)


def _run_demo(args: argparse.Namespace) -> int:
    """``daskcal demo make``: write a demo repository."""
    return args.func(args)


COMMAND = Command("demo", "synthetic HSC repositories with truth", _demo_arguments, _run_demo)
