"""starlink-pyast plumbing shared by SkyWcs and TransformBoundedField: text in, text out.

AST is not thread-safe when it reads or writes object text (``Channel``) or builds
objects: concurrent reads have crashed the interpreter and concurrent writes produced
mangled dumps. Every such call goes through :data:`AST_LOCK`; evaluating a mapping on
points (``tran``) is safe in parallel and needs no lock.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["AST_LOCK", "ast", "dump_ast", "read_ast"]

#: Held while AST reads, writes or builds objects (re-entrant).
AST_LOCK = threading.RLock()


def ast():
    """The ``starlink.Ast`` module (imported on first use)."""
    import starlink.Ast as Ast

    return Ast


class _Lines:
    """A pyast Channel source and sink: hands out or collects one line per call."""

    def __init__(self, lines: list[str] | None = None):
        self.lines = list(lines or [])
        self._next = iter(self.lines)

    def astsource(self) -> str | None:
        return next(self._next, None)

    def astsink(self, line: str) -> None:
        self.lines.append(line)


def read_ast(text: str) -> Any:
    """The AST object serialised in ``text`` (None if it holds none)."""
    with AST_LOCK:
        return ast().Channel(_Lines(text.splitlines())).read()


def dump_ast(obj: Any) -> str:
    """AST text of a pyast object as afw writes it (``Comment=0``, one item a line)."""
    sink = _Lines()
    with AST_LOCK:
        ast().Channel(None, sink, "Comment=0").write(obj)
    return "\n".join(sink.lines) + "\n"
