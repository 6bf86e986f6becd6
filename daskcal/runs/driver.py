"""The run driver: tasks submitted in a bounded window, outcomes handled as they arrive.

Both calibrate commands hand the driver a stream of per-CCD calls; it keeps at most
``window`` of them in flight (in this process, or on a ``distributed.Client``), passes
each outcome to the caller as soon as it arrives (which may answer with more calls, e.g.
a visit's Parquet file once its last CCD is done) and never lets one task's failure stop
the others: an exception escaping a task, or a worker that died while running it (an
out-of-memory kill), becomes a ``failed`` outcome for its data id.

SIGINT and SIGTERM raise :class:`RunInterrupted` (a ``KeyboardInterrupt``) in the
driver, so that the run can record what finished, report the rest as interrupted and
exit with ``128 + signal``: dask-jobqueue's import replaces Python's SIGINT handler with
one that exits with status 0, which would let ``calibrate... && next_step`` go on.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..report import Outcome

__all__ = [
    "Call",
    "RunInterrupted",
    "drive",
    "handle_signals",
    "remove_temporaries",
]

log = logging.getLogger("daskcal")

TEMPORARY = re.compile(r"^\..+\.tmp-\d+-[0-9a-f]{8}$")


class RunInterrupted(KeyboardInterrupt):
    """The run received SIGINT or SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """``128 + signal``, as shells report a process ended by a signal."""
        return 128 + self.signum


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`RunInterrupted` (main thread).

    After the first signal, a second one stops the program at once (Python's default
    handlers), whatever handler was installed before; the previous ones come back on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def _raise(signum, frame):
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise RunInterrupted(signum)

    for s in previous:
        signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@dataclass
class Call:
    """One task: ``func(*args)`` returning an :class:`Outcome` for ``dataid``.

    A task over a group of CCDs returns a list of outcomes; ``info["dataids"]`` lists
    them (so that a task that dies fails each of them).
    """

    key: str
    func: Callable[..., Outcome]
    args: tuple
    dataid: dict[str, Any]
    kind: str = "ccd"
    info: dict[str, Any] = field(default_factory=dict)


def _failure(call: Call, err: BaseException) -> Outcome | list[Outcome]:
    name = type(err).__name__
    if name == "KilledWorker":
        reason = (
            f"the worker running {call.key} died (killed while calibrating it, e.g. out of "
            "memory), every time it was tried"
        )
    else:
        reason = f"{name}: {' '.join(str(err).split())}"
    members = call.info.get("dataids")
    if members:
        return [Outcome(d, "failed", reason=reason, kind=call.kind) for d in members]
    return Outcome(call.dataid, "failed", reason=reason, kind=call.kind)


class _InProcess:
    """Runs calls one at a time in this process, in submission order."""

    def __init__(self, doraise: bool) -> None:
        self.queue: deque[Call] = deque()
        self.doraise = doraise

    def submit(self, call: Call) -> None:
        self.queue.append(call)

    def completed(self) -> Iterator[tuple[Call, Outcome]]:
        while self.queue:
            call = self.queue.popleft()
            try:
                outcome = call.func(*call.args)
            except Exception as err:
                if self.doraise:
                    raise
                outcome = _failure(call, err)
            yield call, outcome

    def cancel(self) -> None:
        self.queue.clear()


class _OnClient:
    """Submits calls to a ``distributed.Client``; yields them as they complete."""

    def __init__(self, client, doraise: bool) -> None:
        from distributed import as_completed

        self.client = client
        self.doraise = doraise
        self.pending: dict[str, tuple[Call, Any]] = {}
        self.stream = as_completed()

    def submit(self, call: Call) -> None:
        future = self.client.submit(call.func, *call.args, key=call.key, pure=False)
        self.pending[future.key] = (call, future)
        self.stream.add(future)

    def completed(self) -> Iterator[tuple[Call, Outcome]]:
        for future in self.stream:
            call, _ = self.pending.pop(future.key)
            try:
                outcome = future.result()
            except Exception as err:
                if self.doraise:
                    raise
                outcome = _failure(call, err)
            future.release()
            yield call, outcome

    def cancel(self) -> None:
        futures = [f for _, f in self.pending.values()]
        self.pending.clear()
        if futures:
            with contextlib.suppress(Exception):
                self.client.cancel(futures, force=True)


class _Progress:
    """A log line at most every ``every`` seconds: done, failed, left."""

    def __init__(self, label: str, total: int, every: float = 10.0) -> None:
        self.label, self.total, self.every = label, total, every
        self.seen = self.failed = 0
        self.last = time.monotonic()

    def update(self, outcome: Outcome) -> None:
        if outcome.kind != "ccd" or not self.label:
            return
        self.seen += 1
        self.failed += outcome.status == "failed"
        now = time.monotonic()
        if now - self.last >= self.every and self.seen < self.total:
            self.last = now
            log.info(
                "%s: %d of %d data ids finished (%d failed)",
                self.label,
                self.seen,
                self.total,
                self.failed,
            )


def drive(
    calls: Iterable[Call],
    on_outcome: Callable[[Call, Outcome], Iterable[Call]],
    *,
    connect: Callable[[], Any] = lambda: None,
    window: int = 1000,
    doraise: bool = False,
    label: str = "run",
    total: int = 0,
) -> bool:
    """Run ``calls`` with at most ``window`` in flight; hand each outcome on.

    Parameters
    ----------
    calls : iterable of Call
        The calls (consumed lazily); a call's function returns an :class:`Outcome` or a
        list of them (a group of CCDs).
    on_outcome : callable
        Called with each finished call and each of its outcomes, in completion order;
        returns further calls to run (visit products), which do not count against the
        window.
    connect : callable
        Returns the ``distributed.Client`` to run on (None: in this process); called at
        the first call only, so that a run with nothing to do starts no cluster.
    window : int
        Calls from ``calls`` in flight at most (bounds the driver's and the scheduler's
        memory).
    doraise : bool
        Let a task's exception propagate instead of failing its data ids.
    label, total : str, int
        For the progress lines ("" for none).

    Returns
    -------
    bool
        Whether any call was run (a cluster was asked for).
    """
    source = iter(calls)
    first = next(source, None)
    if first is None:
        return False
    client = connect()
    executor = _InProcess(doraise) if client is None else _OnClient(client, doraise)
    source = itertools.chain([first], source)
    progress = _Progress(label, total)
    window = max(1, window)
    in_flight = 0

    def refill() -> None:
        nonlocal in_flight
        while in_flight < window:
            call = next(source, None)
            if call is None:
                return
            call.info["from_source"] = True
            executor.submit(call)
            in_flight += 1

    try:
        refill()
        for call, result in executor.completed():
            in_flight -= bool(call.info.get("from_source"))
            for outcome in result if isinstance(result, list) else [result]:
                progress.update(outcome)
                for more in on_outcome(call, outcome):
                    executor.submit(more)
            refill()
    finally:
        executor.cancel()
    return True


def remove_temporaries(folder: str | os.PathLike) -> int:
    """Remove the temporary files killed runs left under ``folder``; returns the count.

    Only names of :func:`daskcal.io.atomic.temporary_name`'s form are touched. Call it
    while holding the rerun's lock: no live run of this rerun can be writing then.
    """
    removed = 0
    stack = [Path(folder)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif TEMPORARY.match(entry.name):
                with contextlib.suppress(OSError):
                    os.remove(entry.path)
                    removed += 1
    if removed:
        log.info("removed %d temporary files left by interrupted runs in %s", removed, folder)
    return removed
