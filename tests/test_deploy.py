"""The deploy/ files: jobqueue YAML, the driver batch script, container recipes, Kubernetes."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dask
import pytest
import yaml
from dask.utils import parse_bytes, parse_timedelta

from daskcal.runs.cluster import (
    WORKER_ENVIRON,
    ExecutionOptions,
    local_cluster,
    make_jobqueue_cluster,
    walltime,
)

dask_jobqueue = pytest.importorskip("dask_jobqueue")
from dask_jobqueue.pbs import pbs_format_bytes_ceil  # noqa: E402
from dask_jobqueue.slurm import slurm_format_bytes_ceil  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KINDS = ("slurm", "pbs")
CLUSTERS = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}
DIRECTIVE = {"slurm": "#SBATCH", "pbs": "#PBS"}
SITE_KEYS = {
    "queue",
    "account",
    "walltime",
    "cores",
    "processes",
    "memory",
    "interface",
    "local-directory",
    "log-directory",
    "job-directives-skip",
    "job-extra-directives",
    "worker-extra-args",
    "python",
}
# Keys dask-jobqueue 0.9 renamed: they raise a FutureWarning (an error under pytest here).
DEPRECATED_KEYS = {"project", "extra", "env-extra", "job-extra", "header-skip"}


def section(kind: str) -> dict:
    """The ``jobqueue.<kind>`` section of ``deploy/jobqueue-<kind>.yaml``."""
    return yaml.safe_load((DEPLOY / f"jobqueue-{kind}.yaml").read_text())["jobqueue"][kind]


def option(args: list[str], name: str) -> str:
    """The value following ``name`` in a worker argument list."""
    assert name in args, f"{name} missing from worker-extra-args {args}"
    return args[args.index(name) + 1]


def hms(text: str) -> int:
    h, m, s = (int(part) for part in text.split(":"))
    return 3600 * h + 60 * m + s


@contextmanager
def deploy_config(kind: str) -> Iterator[None]:
    """Dask config as if the deploy YAML were in ~/.config/dask, runnable on this machine.

    The file is read by dask's own loader and merged over the defaults, as at import time;
    only the network interface (the site's does not exist here) and the dashboard port
    are changed.
    """
    loaded = dask.config.collect(paths=[str(DEPLOY / f"jobqueue-{kind}.yaml")], env={})
    merged = dask.config.merge(dask.config.config, loaded)
    local = {
        f"jobqueue.{kind}.interface": "lo",
        f"jobqueue.{kind}.scheduler-options": {"dashboard_address": ":0"},
    }
    with dask.config.set({"jobqueue": merged["jobqueue"]}), dask.config.set(local):
        yield


def job_script(make) -> str:
    """The worker job script of a cluster built by ``make()``; nothing is submitted."""
    cluster = make()
    try:
        return cluster.job_script()
    finally:
        cluster.close()


@pytest.mark.parametrize("kind", KINDS)
def test_jobqueue_yaml_has_the_site_keys_with_valid_types(kind):
    data = yaml.safe_load((DEPLOY / f"jobqueue-{kind}.yaml").read_text())
    assert list(data) == ["jobqueue"] and list(data["jobqueue"]) == [kind]
    sec = data["jobqueue"][kind]
    assert SITE_KEYS <= set(sec), SITE_KEYS - set(sec)
    assert not DEPRECATED_KEYS & set(sec)
    assert isinstance(sec["cores"], int) and isinstance(sec["processes"], int)
    assert sec["cores"] % sec["processes"] == 0
    assert parse_bytes(sec["memory"]) >= 2**30 * sec["processes"]  # >= 1 GiB per worker
    assert re.fullmatch(r"\d\d:\d\d:\d\d", sec["walltime"])
    for key in ("queue", "account", "interface", "python", "log-directory", "local-directory"):
        assert isinstance(sec[key], str) and sec[key], key
    for key in ("job-directives-skip", "job-extra-directives", "worker-extra-args"):
        assert isinstance(sec[key], list) and all(isinstance(a, str) for a in sec[key]), key
    assert os.path.isabs(sec["python"])


@pytest.mark.parametrize("kind", KINDS)
def test_workers_retire_before_the_walltime(kind):
    sec = section(kind)
    args = sec["worker-extra-args"]
    latest = parse_timedelta(option(args, "--lifetime")) + parse_timedelta(
        option(args, "--lifetime-stagger")
    )
    assert latest <= hms(sec["walltime"]) - 5 * 60
    # A restarted worker stays in its job, which the walltime then kills.
    assert "--lifetime-restart" not in args


@pytest.mark.parametrize("kind", KINDS)
def test_yaml_settings_reach_the_worker_job_script(kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the relative log-directory is created here
    sec = section(kind)
    with deploy_config(kind):
        script = job_script(CLUSTERS[kind])
    header = [line for line in script.splitlines() if line.startswith("#")]
    memory = parse_bytes(sec["memory"])
    if kind == "slurm":
        expected = [
            f"#SBATCH -p {sec['queue']}",
            f"#SBATCH -A {sec['account']}",
            f"#SBATCH -t {sec['walltime']}",
            f"#SBATCH --mem={slurm_format_bytes_ceil(memory)}",
            f"#SBATCH --cpus-per-task={sec['cores']}",
        ]
    else:
        expected = [
            f"#PBS -q {sec['queue']}",
            f"#PBS -A {sec['account']}",
            f"#PBS -l walltime={sec['walltime']}",
            f"#PBS -l select=1:ncpus={sec['cores']}:mem={pbs_format_bytes_ceil(memory)}",
        ]
    expected += [f"{DIRECTIVE[kind]} {extra}" for extra in sec["job-extra-directives"]]
    for line in expected:
        assert line in header, (line, header)
    worker = script.splitlines()[-1]
    assert worker.startswith(f"{sec['python']} -m distributed.cli.dask_worker ")
    assert f"--nworkers {sec['processes']}" in worker
    assert f"--local-directory {sec['local-directory']}" in worker
    assert " ".join(sec["worker-extra-args"]) in worker
    assert "--interface lo" in worker
    assert (tmp_path / sec["log-directory"]).is_dir()


@pytest.mark.parametrize("kind", KINDS)
def test_command_line_flags_over_the_deploy_yaml(kind, tmp_path, monkeypatch):
    """--cores, --time and --job override the YAML; the site settings stay."""
    monkeypatch.chdir(tmp_path)
    sec = section(kind)
    opts = ExecutionOptions(batch_type=kind, cores=4, nodes=3, time=120, job="calexp")
    with deploy_config(kind):
        script = job_script(lambda: make_jobqueue_cluster(opts, n_ids=400))
    # 1.5 x 120 s x ceil(400 ids / 12 workers) = 6120 s
    assert walltime(120, 400, 12) == "01:42:00"
    memory = parse_bytes(sec["memory"])  # the YAML's per-job memory, not 4 GB per core
    if kind == "slurm":
        expected = [
            "#SBATCH -J calexp",
            "#SBATCH -t 01:42:00",
            "#SBATCH --cpus-per-task=4",
            f"#SBATCH -p {sec['queue']}",
            f"#SBATCH -A {sec['account']}",
            f"#SBATCH --mem={slurm_format_bytes_ceil(memory)}",
        ]
    else:
        expected = [
            "#PBS -N calexp",
            "#PBS -l walltime=01:42:00",
            f"#PBS -q {sec['queue']}",
            f"#PBS -A {sec['account']}",
            f"#PBS -l select=1:ncpus=4:mem={pbs_format_bytes_ceil(memory)}",
        ]
    lines = script.splitlines()
    for line in expected:
        assert line in lines, (line, lines)
    assert sec["walltime"] not in script
    worker = lines[-1]
    assert "--nworkers 4" in worker and "--nthreads 1" in worker
    assert f"--memory-limit {memory // 4 / 2**30:.2f}GiB" in worker
    assert " ".join(sec["worker-extra-args"]) in worker


# --- the driver batch script ---------------------------------------------------------------

SCRIPT = DEPLOY / "run-calibrate.sh"
DRIVER_VARIABLES = {
    "REPO",
    "RERUN",
    "ID",
    "VENV",
    "BATCH_TYPE",
    "CORES",
    "NODES",
    "TIME",
    "EXTRA_ARGS",
}
STUB = """#!/usr/bin/env bash
{{ echo "$(basename "$0")"; printf '%s\\n' "$@"; echo --; }} >> "$CALLS"
exit {code}
"""


def fake_venv(root: Path, exposure_code: int = 0) -> Path:
    """A venv whose calibrate commands only record their arguments."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    for name, code in (("calibrateExposure.py", exposure_code), ("calibrateCatalog.py", 0)):
        path = bin_dir / name
        path.write_text(STUB.format(code=code))
        path.chmod(0o755)
    return root


def run_driver(tmp_path: Path, venv: Path, **env: str) -> tuple[int, list[list[str]], str]:
    calls = tmp_path / "calls.txt"
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in DRIVER_VARIABLES and not k.startswith(("SLURM_", "PBS_"))
    }
    environ.update(VENV=str(venv), CALLS=str(calls), **env)
    proc = subprocess.run(
        ["bash", str(SCRIPT)], cwd=tmp_path, env=environ, capture_output=True, text=True
    )
    text = calls.read_text() if calls.exists() else ""
    runs = [block.strip("\n").split("\n") for block in text.split("--\n") if block.strip()]
    return proc.returncode, runs, proc.stderr


def test_driver_script_is_valid_bash_with_batch_headers():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    lines = SCRIPT.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    header = lines[:first_command]  # sbatch and qsub read directives only up to here
    assert "#SBATCH --cpus-per-task=1" in header and "#SBATCH --ntasks=1" in header
    assert any(line.startswith("#PBS -l select=1:ncpus=1:") for line in header)
    assert lines[first_command] == "set -euo pipefail"


def test_driver_runs_exposure_then_catalog(tmp_path):
    venv = fake_venv(tmp_path / "venv")
    ids = "field=NGC604 tract=0 ccd=0..8^10..103"
    code, runs, err = run_driver(tmp_path, venv, REPO="/data/HSC", RERUN="in:out", ID=ids)
    assert code == 0, err
    assert [run[0] for run in runs] == ["calibrateExposure.py", "calibrateCatalog.py"]
    for run, job in zip(runs, ("daskcal-calexp", "daskcal-calsrc"), strict=True):
        args = run[1:]
        assert args[:7] == ["/data/HSC", "--rerun", "in:out", "--id", *ids.split()]
        assert "--batch-type=slurm" in args
        assert {"--cores=16", "--nodes=4", "--time=600"} <= set(args)
        assert args[-2:] == ["--job", job]


def test_driver_passes_batch_type_and_options(tmp_path):
    venv = fake_venv(tmp_path / "venv")
    code, runs, err = run_driver(
        tmp_path,
        venv,
        REPO="r",
        RERUN="x",
        ID="visit=1 tract=0",
        BATCH_TYPE="pbs",
        CORES="8",
        NODES="2",
        TIME="90",
        EXTRA_ARGS="--doraise --redo",
    )
    assert code == 0, err
    for run in runs:
        assert {"--batch-type=pbs", "--cores=8", "--nodes=2", "--time=90"} <= set(run)
        assert "--doraise" in run and "--redo" in run


def test_driver_stops_at_the_first_failure_with_its_exit_code(tmp_path):
    venv = fake_venv(tmp_path / "venv", exposure_code=1)
    code, runs, _ = run_driver(tmp_path, venv, REPO="r", RERUN="x", ID="visit=1 tract=0")
    assert code == 1
    assert [run[0] for run in runs] == ["calibrateExposure.py"]


def test_driver_refuses_missing_variables(tmp_path):
    venv = fake_venv(tmp_path / "venv")
    code, runs, err = run_driver(tmp_path, venv, REPO="r", ID="visit=1 tract=0")
    assert code != 0 and "RERUN" in err and runs == []
    code, runs, err = run_driver(
        tmp_path, tmp_path / "nowhere", REPO="r", RERUN="x", ID="visit=1 tract=0"
    )
    assert code == 2 and "VENV" in err and runs == []


# --- containers -------------------------------------------------------------------------


def minimum_python() -> str:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    match = re.fullmatch(r">=\s*(\d+\.\d+)", pyproject["project"]["requires-python"])
    assert match, pyproject["project"]["requires-python"]
    return match.group(1)


def test_dockerfile_builds_daskcal_on_the_minimum_python():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.findall(r"^FROM\s+(\S+)", text, re.M) == [f"python:{minimum_python()}-slim"]
    copied = re.findall(r"^COPY\s+(.+?)\s+\S+$", text, re.M)
    sources = [src for line in copied for src in line.split()]
    assert sorted(sources) == ["README.md", "daskcal", "pyproject.toml"]
    assert all((ROOT / src).exists() for src in sources)  # the build context is the repo root
    assert re.search(r"^RUN pip install /tmp/daskcal-src\b", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["daskcal"\]$', text, re.M)


def test_apptainer_definition_matches_the_dockerfile():
    text = (DEPLOY / "daskcal.def").read_text()
    header = dict(
        line.split(":", 1)
        for line in text.split("\n%", 1)[0].splitlines()
        if line and not line.startswith("#")
    )
    assert header["Bootstrap"].strip() == "docker"
    assert header["From"].strip() == f"python:{minimum_python()}-slim"
    sections = dict(
        (block.split("\n", 1) + [""])[:2] for block in re.split(r"^%", text, flags=re.M)[1:]
    )
    files = [line.split()[0] for line in sections["files"].splitlines() if line.strip()]
    assert sorted(files) == ["README.md", "daskcal", "pyproject.toml"]
    assert "pip install /tmp/daskcal-src" in sections["post"]
    assert sections["runscript"].split() == ["exec", "daskcal", '"$@"']


# --- Kubernetes -------------------------------------------------------------------------


def test_kubernetes_daskcluster():
    path = DEPLOY / "kubernetes" / "daskcluster.yaml"
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "kubernetes.dask.org/v1" and doc["kind"] == "DaskCluster"
    name = doc["metadata"]["name"]
    worker, scheduler = doc["spec"]["worker"], doc["spec"]["scheduler"]
    assert worker["replicas"] >= 1
    (wc,) = worker["spec"]["containers"]
    (sc,) = scheduler["spec"]["containers"]
    assert wc["image"] == sc["image"] and "daskcal" in wc["image"]
    # The image's entrypoint is daskcal: the dask commands must replace it, not follow it.
    assert wc["command"][:2] == ["dask", "worker"] and sc["command"] == ["dask", "scheduler"]
    assert "args" not in wc and "args" not in sc
    threads = int(wc["command"][wc["command"].index("--nthreads") + 1])
    assert int(wc["resources"]["limits"]["cpu"]) == threads
    assert wc["resources"]["requests"]["memory"] == wc["resources"]["limits"]["memory"]
    assert {"name": "tcp-comm", "containerPort": 8786, "protocol": "TCP"} in sc["ports"]
    service = scheduler["service"]
    assert any(p["port"] == 8786 and p["targetPort"] == "tcp-comm" for p in service["ports"])
    assert service["selector"]["dask.org/cluster-name"] == name
    for pod in (worker["spec"], scheduler["spec"]):
        (container,) = pod["containers"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert mounts == {"data": "/data"} and set(claims) == {"data"}
        assert pod["securityContext"]["runAsNonRoot"] is True
    assert f"--scheduler tcp://{name}-scheduler:8786" in path.read_text()


@pytest.mark.parametrize("kind", KINDS)
def test_walltime_never_exceeds_the_sites_and_yaml_python_is_used(kind, tmp_path, monkeypatch):
    """A long --time is capped at the YAML walltime (the queue's limit); `python` is kept."""
    monkeypatch.chdir(tmp_path)
    sec = section(kind)
    opts = ExecutionOptions(batch_type=kind, cores=2, nodes=1, time=3600, job="long")
    assert walltime(3600, 1000, 2) > sec["walltime"]
    with deploy_config(kind):
        script = job_script(lambda: make_jobqueue_cluster(opts, n_ids=1000))
    assert sec["walltime"] in script
    assert script.splitlines()[-1].startswith(f"{sec['python']} -m distributed.cli.dask_worker")


@pytest.mark.parametrize("kind", KINDS)
def test_worker_jobs_export_the_allocator_setting_after_the_site_prologue(
    kind, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    opts = ExecutionOptions(batch_type=kind, cores=2)
    prologue = {f"jobqueue.{kind}.job-script-prologue": ["module load python/3.11"]}
    with deploy_config(kind), dask.config.set(prologue):
        lines = job_script(lambda: make_jobqueue_cluster(opts)).splitlines()
    exports = [f"export {k}={v}" for k, v in WORKER_ENVIRON.items()]
    start = lines.index("module load python/3.11")
    assert lines[start + 1 : start + 1 + len(exports)] == exports
    worker = next(i for i, line in enumerate(lines) if "dask_worker" in line)
    assert worker > start + len(exports)
    # a site that sets the variable itself keeps its own value
    own = {f"jobqueue.{kind}.job-script-prologue": ["export MALLOC_MMAP_THRESHOLD_=1048576"]}
    with deploy_config(kind), dask.config.set(own):
        script = job_script(lambda: make_jobqueue_cluster(opts))
    assert script.count("MALLOC_MMAP_THRESHOLD_") == 1
    assert "export MALLOC_MMAP_THRESHOLD_=1048576" in script


def _worker_environ() -> dict[str, str | None]:
    return {key: os.environ.get(key) for key in (*WORKER_ENVIRON, "MALLOC_TRIM_THRESHOLD_")}


@pytest.fixture
def without_worker_environ(monkeypatch):
    """No WORKER_ENVIRON variable here, before or after (a Nanny copies its settings into
    the environment of the process that starts it, and then prefers them)."""
    for key in WORKER_ENVIRON:
        monkeypatch.setenv(key, "")  # recorded as absent, so removed at teardown
        monkeypatch.delenv(key)


def test_local_cluster_workers_get_the_allocator_setting(without_worker_environ):
    distributed = pytest.importorskip("distributed")
    with local_cluster(1) as lc, distributed.Client(lc) as client:
        (seen,) = client.run(_worker_environ).values()
    assert {k: seen[k] for k in WORKER_ENVIRON} == WORKER_ENVIRON
    assert seen["MALLOC_TRIM_THRESHOLD_"] is not None  # distributed's own setting is kept


def test_local_cluster_keeps_a_configured_allocator_setting(without_worker_environ):
    distributed = pytest.importorskip("distributed")
    configured = {"distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 1048576}
    with dask.config.set(configured), local_cluster(1) as lc, distributed.Client(lc) as client:
        (seen,) = client.run(_worker_environ).values()
    assert seen["MALLOC_MMAP_THRESHOLD_"] == "1048576"
