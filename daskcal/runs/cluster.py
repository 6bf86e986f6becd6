"""Where the graph runs: in process, on this machine, on PBS/Slurm, or on a running cluster.

``--batch-type none`` computes in this process with Dask's synchronous scheduler;
``smp`` starts a ``distributed.LocalCluster`` of ``--cores`` single-threaded worker
processes; ``pbs`` and ``slurm`` start dask-jobqueue clusters whose site policy (queue,
account, memory, interface, ...) comes from the user's dask-jobqueue YAML; ``--scheduler
ADDRESS`` connects to a running scheduler. The science code never sees which.

What cannot work is refused at once with a :class:`ClusterError`: ``smp`` cores beyond
this machine's, a batch system whose submit command is not on ``PATH``, a scheduler that
does not answer within :data:`CONNECT_TIMEOUT` seconds. The ``smp`` scheduler and its
dashboard listen on 127.0.0.1 only, unless the Dask config keys
``daskcal.smp.host`` / ``daskcal.smp.dashboard-address`` say otherwise.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dask

# imported here, not on first use: dask-jobqueue registers its config defaults at import,
# and an import inside a user's `with dask.config.set(...)` block would lose them on exit
import dask_jobqueue
import yaml

__all__ = [
    "CONNECT_TIMEOUT",
    "WORKER_ENVIRON",
    "ClusterError",
    "ExecutionOptions",
    "available_cores",
    "check_execution",
    "dask_client",
    "local_cluster",
    "make_jobqueue_cluster",
    "walltime",
]

log = logging.getLogger("daskcal")

BATCH_TYPES = ("none", "smp", "pbs", "slurm")
#: Seconds to wait for a ``--scheduler`` to answer.
CONNECT_TIMEOUT = 10

# distributed starts its workers with MALLOC_TRIM_THRESHOLD_=65536, which also pins glibc's
# mmap threshold at 128 KiB: every plane and block temporary of a CCD is then a fresh
# mapping, faulted in page by page and unmapped when freed (~1 GB of page faults per
# full-size CCD, 15-30 % of its time). Allocations up to 256 MiB served from the heap are
# reused CCD after CCD instead; a worker holds about one CCD, so its memory stays bounded.
WORKER_ENVIRON = {"MALLOC_MMAP_THRESHOLD_": str(256 * 2**20)}


class ClusterError(RuntimeError):
    """Execution options that cannot work here: too many cores, no batch system, no
    scheduler at the address. The message is one line."""


def available_cores() -> int:
    """The CPUs this process may run on (its affinity set where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ExecutionOptions:
    """How to run: the hscPipe batch flags plus a scheduler address.

    Attributes
    ----------
    batch_type : str
        ``none``, ``smp``, ``pbs`` or ``slurm``.
    cores : int
        Worker processes per node (``smp``: on this machine).
    nodes : int
        Batch jobs (``pbs``/``slurm``).
    time : float
        Expected seconds per data id, as hscPipe's ``--time``; sets the walltime.
    job : str or None
        Batch job name.
    scheduler : str or None
        Address of a running Dask scheduler; overrides ``batch_type``.
    """

    batch_type: str = "none"
    cores: int = 1
    nodes: int = 1
    time: float = 600.0
    job: str | None = None
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if self.batch_type not in BATCH_TYPES:
            raise ValueError(
                f"--batch-type {self.batch_type!r}: must be one of {', '.join(BATCH_TYPES)}"
            )
        if self.cores < 1 or self.nodes < 1:
            raise ValueError("--cores and --nodes must be >= 1")
        if self.scheduler is None and self.batch_type == "smp":
            _check_smp_cores(self.cores)


def _check_smp_cores(cores: int) -> None:
    available = available_cores()
    if cores > available:
        raise ClusterError(
            f"--cores {cores}: this machine runs this process on {available} CPUs; "
            f"--batch-type=smp starts at most that many workers"
        )


def _submit_command(batch_type: str) -> str:
    """The command dask-jobqueue submits jobs with (``sbatch``, ``qsub``)."""
    cls = {"pbs": dask_jobqueue.PBSCluster, "slurm": dask_jobqueue.SLURMCluster}[batch_type]
    return str(getattr(cls.job_cls, "submit_command", None) or "").split()[0]


def check_execution(opts: ExecutionOptions) -> None:
    """Refuse options that cannot work on this machine, before anything is started.

    Raises
    ------
    ClusterError
        ``smp`` with more cores than this process may use, or ``pbs``/``slurm`` whose
        submit command (``qsub``/``sbatch``) is not on ``PATH``.
    """
    if opts.scheduler is not None or opts.batch_type == "none":
        return
    if opts.batch_type == "smp":
        _check_smp_cores(opts.cores)
        return
    command = _submit_command(opts.batch_type)
    if shutil.which(command) is None:
        raise ClusterError(
            f"--batch-type={opts.batch_type}: {command!r} is not on PATH; run on a "
            f"{opts.batch_type} login node, or use --batch-type=smp or --scheduler"
        )


def walltime(seconds_per_id: float, n_ids: int, workers: int) -> str:
    """Batch walltime ``HH:MM:SS`` for ``n_ids`` ids over ``workers``, with 50% margin.

    >>> walltime(600, 100, 8)
    '03:15:00'
    """
    total = max(600, math.ceil(1.5 * seconds_per_id * math.ceil(n_ids / workers)))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def _seconds(hms: str) -> int:
    """Seconds of a ``[[HH:]MM:]SS`` walltime."""
    total = 0
    for part in str(hms).split(":"):
        total = 60 * total + int(part)
    return total


@functools.cache
def _packaged_defaults() -> dict:
    path = Path(dask_jobqueue.__file__).with_name("jobqueue.yaml")
    return yaml.safe_load(path.read_text())["jobqueue"]


def _site_setting(kind: str, key: str):
    """A jobqueue setting the site configured: None when it is dask-jobqueue's own default."""
    value = dask.config.get(f"jobqueue.{kind}.{key}", None)
    return None if value == _packaged_defaults().get(kind, {}).get(key) else value


def make_jobqueue_cluster(opts: ExecutionOptions, n_ids: int = 1):
    """A dask-jobqueue PBSCluster/SLURMCluster: ``opts.cores`` workers per job.

    Site settings (queue, account, memory, interface, job_directives_skip, python, ...)
    are read by dask-jobqueue from its YAML config (``~/.config/dask/jobqueue.yaml``);
    only what the command line decides is passed here. The walltime follows ``--time``
    but never exceeds a walltime the site configured (the queue's limit); without a
    ``python`` in the config, the workers run this Python.
    """
    cls = {"pbs": dask_jobqueue.PBSCluster, "slurm": dask_jobqueue.SLURMCluster}[opts.batch_type]
    section = f"jobqueue.{opts.batch_type}"
    wanted = walltime(opts.time, n_ids, opts.cores * opts.nodes)
    limit = _site_setting(opts.batch_type, "walltime")
    kwargs = {
        "cores": opts.cores,
        "processes": opts.cores,
        "walltime": limit if limit and _seconds(limit) < _seconds(wanted) else wanted,
    }
    if dask.config.get(f"{section}.python", None) is None:
        kwargs["python"] = sys.executable
    if dask.config.get(f"{section}.memory", None) is None:
        kwargs["memory"] = f"{4 * opts.cores}GB"
    if opts.job:
        kwargs["job_name"] = opts.job
    prologue = list(dask.config.get(f"{section}.job-script-prologue", None) or [])
    kwargs["job_script_prologue"] = prologue + [
        f"export {key}={value}"
        for key, value in WORKER_ENVIRON.items()
        if not any(key in line for line in prologue)  # the site's own setting wins
    ]
    return cls(**kwargs)


def local_cluster(cores: int, **kwargs):
    """A LocalCluster of ``cores`` single-threaded worker processes (``--batch-type=smp``).

    Its workers get :data:`WORKER_ENVIRON` unless the environment or the Dask config
    already sets those variables. The scheduler and its dashboard (on a free port) listen
    on 127.0.0.1 only, unless ``kwargs`` or the Dask config keys ``daskcal.smp.host`` /
    ``daskcal.smp.dashboard-address`` say otherwise.
    """
    from distributed import LocalCluster

    spawn = "distributed.nanny.pre-spawn-environ"
    configured = {**(dask.config.get(spawn, None) or {}), **os.environ}
    environ = {f"{spawn}.{k}": v for k, v in WORKER_ENVIRON.items() if k not in configured}
    if "interface" not in kwargs:  # an interface names the address itself
        kwargs.setdefault("host", dask.config.get("daskcal.smp.host", "127.0.0.1"))
    kwargs.setdefault(
        "dashboard_address", dask.config.get("daskcal.smp.dashboard-address", "127.0.0.1:0")
    )
    with dask.config.set(environ):  # read by each Nanny as it is created
        return LocalCluster(n_workers=cores, threads_per_worker=1, processes=True, **kwargs)


def _connect(address: str):
    """A Client of the scheduler at ``address``, or a ClusterError within the timeout."""
    from distributed import Client

    try:
        return Client(address, timeout=CONNECT_TIMEOUT)
    # MemoryError: something else listens there and its first bytes read as a huge frame
    except (OSError, TimeoutError, ValueError, TypeError, MemoryError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ClusterError(
            f"--scheduler {address}: no Dask scheduler answered within {CONNECT_TIMEOUT} s "
            f"({type(err).__name__}: {reason[:200]})"
        ) from None


@contextmanager
def dask_client(opts: ExecutionOptions, n_ids: int = 1) -> Iterator[object | None]:
    """A ``distributed.Client`` for the options, or None for in-process execution."""
    if opts.scheduler is None and opts.batch_type == "none":
        with dask.config.set(scheduler="synchronous"):
            yield None
        return
    from distributed import Client

    check_execution(opts)
    if opts.scheduler is not None:
        with _connect(opts.scheduler) as client:
            log.info("connected to %s; dashboard: %s", opts.scheduler, client.dashboard_link)
            yield client
        return
    if opts.batch_type == "smp":
        cluster = local_cluster(opts.cores)
    else:
        cluster = make_jobqueue_cluster(opts, n_ids)
        # adaptive, not scale(): a job that ends (worker --lifetime before the walltime,
        # a lost node) is replaced, as dask-jobqueue recommends
        cluster.adapt(minimum_jobs=opts.nodes, maximum_jobs=opts.nodes)
    with cluster, Client(cluster) as client:
        log.info("dashboard: %s", client.dashboard_link)
        yield client
