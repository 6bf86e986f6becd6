"""The driver at survey scale: --dry-run from 10^3 to 10^6 CCDs, real runs at 10^3 / 10^4.

Fabricates repositories cheaply: one small demo CCD is generated, then a registry of N
CCD-visits (100 CCDs a visit, visits alternating HSC-G / HSC-I, one pointing per visit)
whose input files (src, calexp, jointcal_wcs, the tract FGCM photoCalib) are hard links to
that CCD's files (to a fresh copy every 50,000 links: file systems cap links per file).
For each size it runs ``calibrateCatalog.py --dry-run`` in a fresh process (expand, plan
every output, print the counts; no cluster) and reports the driver time per id and the
driver's peak resident memory; for the sizes given to ``--real`` it runs
``calibrateCatalog.py --batch-type=smp --cores=2`` and reports the wall time, the work per
CCD (from the outcomes' ``seconds``), the share of the workers' time not spent in CCD or
visit work (cluster start-up, scheduler, driver, table saves) and the driver's peak memory.

    .venv/bin/python benchmarks/bench_driver.py --sizes 1000 10000 100000 --real 1000
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from daskcal.demo import make_demo_repository
from daskcal.report import read_report

HERE = Path(__file__).resolve().parent
CCDS_PER_VISIT = 100
LINKS_PER_COPY = 50_000
DATASETS = {  # name -> (template under the rerun, file of the base CCD)
    "src": "{pointing:05d}/{filter}/output/SRC-{visit:07d}-{ccd:03d}.fits",
    "calexp": "{pointing:05d}/{filter}/corr/CORR-{visit:07d}-{ccd:03d}.fits",
    "jointcal_wcs": "jointcal-results/{filter}/0000/jointcal_wcs-{visit:07d}-{ccd:03d}.fits",
    "fgcm_tract": "fgcm-results/{filter}/0000/fgcm_photoCalib-{visit:05d}-{ccd:03d}.fits",
}


def base_ccd(work: Path) -> Path:
    """One small demo CCD (visit 1228, ccd 0) with all its products."""
    root = work / "base"
    if not (root / "registry.sqlite3").exists():
        make_demo_repository(root, visits=1, ccds=(0,), seed=4, scheduler="sync")
    return root


def fabricate(work: Path, n: int) -> Path:
    """A repository of ``n`` CCD-visits whose inputs are hard links to the base CCD."""
    root = work / f"repo-{n}"
    if (root / "registry.sqlite3").exists():
        return root
    base = base_ccd(work)
    shutil.rmtree(root, ignore_errors=True)
    rerun = root / "rerun" / "demo"
    rerun.mkdir(parents=True)
    shutil.copy(base / "_mapper", root / "_mapper")
    shutil.copy(base / "rerun/demo/repositoryCfg.yaml", rerun / "repositoryCfg.yaml")
    sources = {
        name: base / "rerun/demo" / t.format(pointing=816, filter="HSC-G", visit=1228, ccd=0)
        for name, t in DATASETS.items()
    }
    rows = []
    made: set[Path] = set()
    for i in range(n):
        visit, ccd = 2 * (i // CCDS_PER_VISIT) + 2, i % CCDS_PER_VISIT
        filt = "HSC-G" if visit % 4 == 2 else "HSC-I"
        values = {"pointing": 1000 + visit // 2, "filter": filt, "visit": visit, "ccd": ccd}
        rows.append(("FAB", visit, ccd, values["pointing"], filt))
        for name, template in DATASETS.items():
            target = rerun / template.format(**values)
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            if i % LINKS_PER_COPY == 0:  # a file system allows ~65,000 links per file
                sources[name] = _fresh_copy(sources[name], rerun.parent / "pool", i)
            os.link(sources[name], target)
    with sqlite3.connect(root / "registry.sqlite3") as db:
        db.execute("CREATE TABLE raw (field TEXT, visit INT, ccd INT, pointing INT, filter TEXT)")
        db.executemany("INSERT INTO raw VALUES (?, ?, ?, ?, ?)", rows)
    db.close()
    return root


def _fresh_copy(source: Path, pool: Path, i: int) -> Path:
    pool.mkdir(exist_ok=True)
    copy = pool / f"{i}-{source.name}"
    shutil.copy2(source, copy)
    return copy


def _peak_rss(pid: int, stop: threading.Event, out: list[float]) -> None:
    peak = 0
    try:
        proc = psutil.Process(pid)
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss)
            stop.wait(0.05)
    except psutil.NoSuchProcess:
        pass
    out.append(peak / 2**30)


def run_driver(root: Path, *args: str) -> tuple[float, float, str]:
    """(seconds, driver peak RSS GB, stdout) of one calibrateCatalog.py run."""
    cmd = [sys.executable, "-m", "daskcal.cli", "catalog", str(root), "--rerun", "demo:cal",
           "--id", "tract=0", "--no-versions", "--clobber-config", *args]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stop, peak = threading.Event(), []
    watcher = threading.Thread(target=_peak_rss, args=(proc.pid, stop, peak))
    watcher.start()
    out, _ = proc.communicate()
    stop.set()
    watcher.join()
    return time.perf_counter() - start, peak[0], out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 100000])
    parser.add_argument("--real", type=int, nargs="*", default=[1000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/daskcal-bench-driver"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"{'CCDs':>8} {'fabricate s':>11} {'dry-run s':>9} {'ms/id':>6} {'peak GB':>7}")
    for n in args.sizes:
        t0 = time.perf_counter()
        root = fabricate(args.work, n)
        made = time.perf_counter() - t0
        seconds, peak, _ = run_driver(root, "--dry-run")
        print(f"{n:>8} {made:>11.1f} {seconds:>9.1f} {1000 * seconds / n:>6.2f} {peak:>7.2f}")
    for n in args.real:
        root = fabricate(args.work, n)
        shutil.rmtree(root / "rerun" / "cal", ignore_errors=True)
        seconds, peak, out = run_driver(root, "--batch-type=smp", "--cores=2")
        report = read_report(next((root / "rerun/cal/calibrated/reports").glob("*.jsonl")))
        work = [o["extra"].get("seconds", math.nan) for o in report["outcomes"]
                if o["kind"] == "ccd" and o["status"] == "done"]  # fmt: skip
        visits = sum(o["extra"].get("seconds", 0.0) for o in report["outcomes"]
                     if o["kind"] == "visit")  # fmt: skip
        busy = sum(work) + visits
        print(
            f"real run, {n} CCDs on 2 workers: {seconds:.1f} s wall, {busy / len(work):.3f} s "
            f"of work per CCD, overhead {1 - busy / (2 * seconds):.0%} of the workers' time, "
            f"driver peak {peak:.2f} GB; {out.strip().splitlines()[-2]}"
        )


if __name__ == "__main__":
    main()
