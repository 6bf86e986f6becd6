"""One writer per output rerun: a lock file that works on cluster file systems.

``flock``/``fcntl`` locks are not reliable across the nodes of a shared file system
(NFS, Lustre, GPFS), but creating a file with ``O_CREAT | O_EXCL`` is atomic on all of
them. The lock is ``<rerun>/.daskcal.lock``, holding who took it (host, pid, process start
time, task, command). While a run holds it, a thread refreshes its modification time
every ``heartbeat`` seconds. A lock is *stale* when its holder is dead: on this host, when
no process with that pid and start time exists; on another host, when its heartbeat is
older than ``stale_after`` seconds. A stale lock is moved aside and taken over; a live
one is refused with a one-line message naming its holder.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import threading
import time
from pathlib import Path

from ..layout import OutputLayout

__all__ = ["LOCK_NAME", "RerunLock", "RerunLockError"]

LOCK_NAME = OutputLayout("/").lock.name


class RerunLockError(RuntimeError):
    """Another live run holds the output rerun."""


def _start_time(pid: int) -> float | None:
    """Start time (epoch seconds) of a live process, or None when there is none."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, ValueError):
        return None


def _holder(path: Path) -> dict:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "a run being set up"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return (
        f"{holder.get('task', '?')} (pid {holder.get('pid', '?')} on {holder.get('host', '?')},"
        f" started {started})"
    )


class RerunLock:
    """Hold ``<rerun>/.daskcal.lock`` for the duration of a ``with`` block.

    Parameters
    ----------
    rerun_dir : path
        The output rerun (must exist).
    task : str
        What holds it (shown to a second run).
    stale_after : float
        Seconds without a heartbeat after which another host's lock is stale.
    heartbeat : float
        Seconds between refreshes of the lock's modification time.

    Raises
    ------
    RerunLockError
        On entry, when a live run holds the lock.
    """

    def __init__(
        self, rerun_dir, task: str, *, stale_after: float = 300.0, heartbeat: float = 30.0
    ) -> None:
        self.path = Path(rerun_dir) / LOCK_NAME
        self.task = task
        self.stale_after = stale_after
        self.heartbeat = heartbeat
        self.token = secrets.token_hex(8)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _content(self) -> str:
        pid = os.getpid()
        return json.dumps(
            {
                "host": socket.gethostname(),
                "pid": pid,
                "started": _start_time(pid) or time.time(),
                "task": self.task,
                "command": " ".join(sys.argv)[:500],
                "token": self.token,
            }
        )

    def _is_stale(self, holder: dict) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            started = _start_time(holder["pid"])
            return started is None or abs(started - float(holder.get("started", 0))) > 1.0
        # another host, or a lock still being written: only its heartbeat tells
        return age > self.stale_after

    def _create(self) -> bool:
        """Create the lock file with our content; False when it exists already."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as err:
            raise RerunLockError(f"cannot create {self.path}: {err.strerror or err}") from None
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self._content())
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            self.path.unlink(missing_ok=True)
            raise RerunLockError(f"cannot write {self.path}: {err.strerror or err}") from None
        return True

    def _set_aside(self, holder: dict) -> None:
        """Move a stale lock out of the way (unless another run replaced it meanwhile)."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{self.token}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        if _holder(aside).get("token") != holder.get("token"):
            os.replace(aside, self.path)  # a new holder came in between: theirs
            return
        aside.unlink(missing_ok=True)

    def acquire(self) -> None:
        """Take the lock (taking over a stale one) or raise :class:`RerunLockError`."""
        for _ in range(5):
            if self._create():
                return
            holder = _holder(self.path)
            if not self._is_stale(holder):
                raise RerunLockError(
                    f"output rerun {self.path.parent} is in use by {_describe(holder)}; "
                    f"wait for it to finish (or remove {self.path} if that run is gone)"
                )
            self._set_aside(holder)
        raise RerunLockError(f"could not take {self.path}: other runs keep taking it")

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if _holder(self.path).get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RerunLock:
        self.acquire()
        self._thread = threading.Thread(target=self._beat, name="daskcal-lock", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
