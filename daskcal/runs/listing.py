"""Existence checks from directory listings: one ``os.scandir`` per directory per run.

On cluster file systems (Lustre, GPFS) every ``stat`` or ``open`` is a round trip to a
metadata server (~1 ms); a directory listed once answers every later question about the
files in it. The listings of the most recently used directories are kept (data ids come
sorted by visit, so a run works through its directories in order and memory stays bounded).
"""

from __future__ import annotations

import os
from collections import OrderedDict

__all__ = ["Listings", "first_existing"]


class Listings:
    """Names in directories, listed once and kept for the ``capacity`` latest ones.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     open(os.path.join(d, "a.fits"), "w").close()
    ...     seen = Listings()
    ...     seen.exists(os.path.join(d, "a.fits")), seen.exists(f"{d}/b.fits"), seen.listed
    (True, False, 1)
    """

    def __init__(self, capacity: int = 512) -> None:
        self.capacity = capacity
        self.listed = 0
        self._names: OrderedDict[str, frozenset[str]] = OrderedDict()

    def names(self, folder: str | os.PathLike) -> frozenset[str]:
        """The names in ``folder`` (empty when it does not exist or cannot be read)."""
        key = os.fspath(folder)
        names = self._names.get(key)
        if names is not None:
            self._names.move_to_end(key)
            return names
        try:
            with os.scandir(key) as entries:
                names = frozenset(entry.name for entry in entries)
        except OSError:
            names = frozenset()
        self.listed += 1
        self._names[key] = names
        if len(self._names) > self.capacity:
            self._names.popitem(last=False)
        return names

    def exists(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` was in its directory's listing."""
        folder, name = os.path.split(os.fspath(path))
        return name in self.names(folder)

    def forget(self, folder: str | os.PathLike) -> None:
        """Drop a listing (the directory changed)."""
        self._names.pop(os.fspath(folder), None)


def first_existing(candidates: list[str], listings: Listings) -> str | None:
    """The first of ``candidates`` that exists, by the listings."""
    return next((c for c in candidates if listings.exists(c)), None)
