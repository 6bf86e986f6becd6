"""calibrateCatalog throughput against the I/O floor, and its scaling with cores.

    .venv/bin/python benchmarks/bench_catalog.py [--ccds 103] [--cores 1 2] [--work DIR]

Builds a demo repository (one visit over the focal plane, small CCDs) for the calibration
products and, when ../shared/data/real is present, replaces every src by the real HSC src
(771 rows, 126 columns + 122 flags): realistic catalogs. Then, on a LocalCluster of N
single-threaded workers, it times

- the I/O floor: read every src, write it as CALSRC (same afw writer, template) and as a
  Parquet fragment, then merge each visit's fragments into its Parquet file: the same
  outputs, no calibration;
- the full calibrateCatalog run (calibration table, kernel, CALSRC, Parquet per visit);

both on one cluster (its start-up is in neither), and prints rows per second per core and
the ratio full / floor. Not part of the tests.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import dask
from distributed import Client

from daskcal.config import CalibrateConfig
from daskcal.demo import make_demo_repository
from daskcal.io.catalog import read_catalog, write_catalog
from daskcal.io.parquet import merge_fragments, write_fragment
from daskcal.repo import Repository
from daskcal.runs.calibrate import RunOptions, run_catalog
from daskcal.runs.cluster import ExecutionOptions, local_cluster
from daskcal.tasks.catalog import _arrow

REAL_SRC = (
    Path(__file__).resolve().parents[2]
    / "shared/data/real/lsst/faro/tests/data"
    / "src_HSC_i_HSC-I_903986_0_31_HSC_runs_ci_hsc_20210407T021858Z.fits"
)


def io_floor(dataid: dict, src: str, out: str, fragment: str) -> int:
    """Read + write the same outputs without calibrating: the floor for one CCD."""
    df = read_catalog(src)
    write_catalog(out, df, template=src)
    write_fragment(_arrow(df, dataid), Path(fragment))
    return len(df)


def build(work: Path, n_ccds: int) -> tuple[Repository, list[dict]]:
    root = work / "repo"
    if not root.exists():
        ccds = [c for c in range(104) if c != 9][:n_ccds]
        make_demo_repository(
            root, visits=1, ccds=ccds, size="small", seed=3, scheduler="processes"
        )
        if REAL_SRC.exists():
            for src in (root / "rerun/demo").rglob("SRC-*.fits"):
                shutil.copyfile(REAL_SRC, src)
    repo = Repository(root, rerun="demo")
    return repo, repo.expand([{"tract": 0}])


def floor_visit(fragments: list[str], out: str, rows: list[int]) -> int:
    """Merge one visit's fragments into its Parquet file, as the full run does."""
    merge_fragments([Path(f) for f in fragments], Path(out))
    return sum(rows)


def bench(repo: Repository, ids: list[dict], cores: int) -> dict:
    """Floor and full run on one LocalCluster (its start-up is outside both timings)."""
    floor_dir = Path(repo.root) / "floor"
    shutil.rmtree(floor_dir, ignore_errors=True)
    with local_cluster(cores) as lc, Client(lc) as client:
        visits: dict[int, list] = {}
        for d in ids:
            frag = str(floor_dir / f"frag-{d['visit']}-{d['ccd']}.parquet")
            out = str(floor_dir / f"CALSRC-{d['visit']}-{d['ccd']}.fits")
            task = dask.delayed(io_floor)(d, str(repo.find("src", d)), out, frag)
            visits.setdefault(d["visit"], []).append((frag, task))
        tasks = [
            dask.delayed(floor_visit)(
                [f for f, _ in members], str(floor_dir / f"visit-{visit}.parquet"),
                [t for _, t in members],
            )
            for visit, members in visits.items()
        ]  # fmt: skip
        start = time.perf_counter()
        rows = sum(client.gather(client.compute(tasks)))
        floor = time.perf_counter() - start
        rerun = f"demo:bench{cores}"
        shutil.rmtree(Path(repo.root) / "rerun" / f"bench{cores}", ignore_errors=True)
        run_repo = Repository(repo.root, rerun=rerun)
        start = time.perf_counter()
        report = run_catalog(
            run_repo,
            [{"tract": 0}],
            CalibrateConfig(),
            ExecutionOptions(scheduler=lc.scheduler_address),
            RunOptions(progress=False),
        )
        full = time.perf_counter() - start
    assert report.exit_code == 0, report.table()
    return {"cores": cores, "rows": rows, "floor_s": floor, "full_s": full}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ccds", type=int, default=103)
    parser.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    repo, ids = build(work, args.ccds)
    print(f"{len(ids)} CCDs; src: {'real HSC src (771 rows)' if REAL_SRC.exists() else 'demo'}")
    print(f"{'cores':>5} {'rows':>8} {'floor s':>8} {'full s':>8} {'rows/s/core':>12} "
          f"{'full/floor':>10}")  # fmt: skip
    for cores in args.cores:
        r = bench(repo, ids, cores)
        rate = r["rows"] / r["full_s"] / cores
        print(f"{cores:>5} {r['rows']:>8} {r['floor_s']:>8.1f} {r['full_s']:>8.1f} "
              f"{rate:>12.0f} {r['full_s'] / r['floor_s']:>10.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
