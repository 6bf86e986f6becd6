"""Where the graph runs: in process, on this machine, on PBS/Slurm, or on a running cluster.

``--batch-type none`` computes in this process with Dask's synchronous scheduler;
``smp`` starts a ``distributed.LocalCluster`` of ``--cores`` single-threaded worker
processes; ``pbs`` and ``slurm`` start dask-jobqueue clusters whose site policy (queue,
account, memory, interface, ...) comes from the user's dask-jobqueue YAML; ``--scheduler
ADDRESS`` connects to a running scheduler. The science code never sees which.
"""

from __future__ import annotations

import functools
import logging
import math
import os
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
    "WORKER_ENVIRON",
    "ExecutionOptions",
    "dask_client",
    "local_cluster",
    "make_jobqueue_cluster",
    "walltime",
]

log = logging.getLogger("daskcal")

BATCH_TYPES = ("none", "smp", "pbs", "slurm")

# distributed starts its workers with MALLOC_TRIM_THRESHOLD_=65536, which also pins glibc's
# mmap threshold at 128 KiB: every plane and block temporary of a CCD is then a fresh
# mapping, faulted in page by page and unmapped when freed (~1 GB of page faults per
# full-size CCD, 15-30 % of its time). Allocations up to 256 MiB served from the heap are
# reused CCD after CCD instead; a worker holds about one CCD, so its memory stays bounded.
WORKER_ENVIRON = {"MALLOC_MMAP_THRESHOLD_": str(256 * 2**20)}


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
    already sets those variables.
    """
    from distributed import LocalCluster

    spawn = "distributed.nanny.pre-spawn-environ"
    configured = {**(dask.config.get(spawn, None) or {}), **os.environ}
    environ = {f"{spawn}.{k}": v for k, v in WORKER_ENVIRON.items() if k not in configured}
    with dask.config.set(environ):  # read by each Nanny as it is created
        return LocalCluster(
            n_workers=cores, threads_per_worker=1, processes=True, dashboard_address=":0", **kwargs
        )


@contextmanager
def dask_client(opts: ExecutionOptions, n_ids: int = 1) -> Iterator[object | None]:
    """A ``distributed.Client`` for the options, or None for in-process execution."""
    if opts.scheduler is None and opts.batch_type == "none":
        with dask.config.set(scheduler="synchronous"):
            yield None
        return
    from distributed import Client

    if opts.scheduler is not None:
        with Client(opts.scheduler) as client:
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
