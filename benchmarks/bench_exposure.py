"""calibrateExposure on full-size HSC CCDs: memory per worker, throughput, the I/O floor.

    .venv/bin/python benchmarks/bench_exposure.py --ccds 10 100 --cores 2 [--codecs]

Generates one full-size (2048 x 4176) demo CCD with all its inputs (calexp, skyCorr,
jointcal and FGCM products) once, then, for each ``--ccds N``, a repository whose N CCDs
of one visit are symbolic links to that CCD's files (the inputs come from the page cache,
as they would after the first read; the outputs are all written). On a fresh LocalCluster
of ``--cores`` single-threaded worker processes (``daskcal.runs.cluster.local_cluster``, as
``--batch-type=smp`` starts it) it runs

- the I/O floor: per CCD, read and decompress the calexp planes and archive, and write
  them as a tile-compressed exposure with the same writer and codecs, no calibration;
- calibrateExposure (``run_exposure``: calibration table with the TAN-SIP fits, the
  block-wise kernel, the CALEXP metadata, the atomic lossless write),
- the I/O floor again: the ratio is taken to the mean of the two floors, which cancels a
  steady drift in the speed of the machine (10-20 % within minutes on a shared VM),

sampling every worker's resident memory (psutil, every 50 ms). It prints seconds, CCDs
per second per core, the ratio to the floor and the peak RSS per worker. ``--codecs``
also times one full CCD written with the candidate codecs and libraries (astropy and
fitsio; GZIP_2, GZIP_1, RICE_1, none), checking that each is lossless. Not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import dask
import numpy as np
import psutil
from distributed import Client, LocalCluster

from daskcal.config import CalibrateConfig
from daskcal.demo import make_demo_repository
from daskcal.io.archive import ArchiveWriter
from daskcal.io.exposure import exposure_archive, read_exposure, read_rows, write_exposure
from daskcal.repo import Repository
from daskcal.runs.calibrate import RunOptions, run_exposure
from daskcal.runs.cluster import ExecutionOptions, local_cluster

INPUTS = ("calexp", "skyCorr", "fgcm_tract_photoCalib", "jointcal_wcs")
SOURCE_CCD = 50
MB = 2**20


def make_source(work: Path) -> Repository:
    """One full-size demo CCD (generated once, kept in ``work/source``)."""
    root = work / "source"
    if not (root / "registry.sqlite3").exists():
        start = time.perf_counter()
        make_demo_repository(root, visits=1, ccds=(SOURCE_CCD,), size="full", seed=3)
        print(f"generated one full-size CCD in {time.perf_counter() - start:.0f} s")
    return Repository(root, rerun="demo")


def make_repository(source: Repository, work: Path, n: int) -> Repository:
    """A repository of ``n`` CCDs of one visit, each a set of links to the source CCD."""
    root = work / f"repo-{n}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "rerun").mkdir(parents=True)
    shutil.copy(source.root / "_mapper", root / "_mapper")
    shutil.copy(source.root / "registry.sqlite3", root / "registry.sqlite3")
    src_id = source.expand([{"tract": 0}])[0]
    repo = Repository(root, rerun="demo")
    ccds = [c for c in range(104) if c != 9][:n]
    with sqlite3.connect(root / "registry.sqlite3") as db:
        columns = [r[1] for r in db.execute("PRAGMA table_info(raw)") if r[1] != "id"]
        first = db.execute(f"SELECT {', '.join(columns)} FROM raw").fetchone()
        row = dict(zip(columns, first, strict=True))
        db.execute("DELETE FROM raw")
        for ccd in ccds:
            values = {**row, "ccd": ccd}
            marks = ", ".join("?" * len(values))
            db.execute(
                f"INSERT INTO raw ({', '.join(values)}) VALUES ({marks})", list(values.values())
            )
            for dataset in INPUTS:
                link = repo.output_path(dataset, {**src_id, "ccd": ccd})
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(source.find(dataset, src_id))
    db.close()
    return repo


def read_planes(ds) -> list[np.ndarray]:
    """Image, mask, variance of a :func:`read_exposure` dataset, each plane read whole."""
    path, hdus, ny = ds.attrs["path"], ds.attrs["hdus"], ds.sizes["y"]
    kinds = (("image", "float32"), ("mask", "int32"), ("variance", "float32"))
    return [read_rows(path, hdus[plane], 0, ny, dtype) for plane, dtype in kinds]


def io_floor(calexp: str, out: str) -> float:
    """Read and decompress a calexp and write it again, uncalibrated: one CCD's floor."""
    start = time.perf_counter()
    ds = read_exposure(calexp)
    planes = read_planes(ds)
    with exposure_archive(calexp) as archive:
        write_exposure(out, *planes, primary_header=ds.attrs["header"],
                       mask_planes=ds.attrs["mask_planes"], xy0=ds.attrs["xy0"],
                       archive_hdus=ArchiveWriter(base=archive).hdus(),
                       plane_headers=ds.attrs["plane_headers"])  # fmt: skip
    return time.perf_counter() - start


@contextmanager
def rss_sampler(client: Client, every: float = 0.05):
    """Yield a dict filled, on exit, with the peak RSS (bytes) of each worker process."""
    pids = list(client.run(os.getpid).values())
    procs = [psutil.Process(pid) for pid in pids]
    peaks = dict.fromkeys(pids, 0)
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for proc in procs:
                try:
                    peaks[proc.pid] = max(peaks[proc.pid], proc.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
            stop.wait(every)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    result: dict[int, int] = {}
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        result.update(peaks)


def cluster(cores: int) -> LocalCluster:
    """The cluster ``--batch-type=smp --cores N`` starts (same worker environment)."""
    return local_cluster(cores, memory_limit="6GiB")


def bench_floor(repo: Repository, ids: list[dict], cores: int) -> dict:
    out = Path(repo.root) / "floor"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    with cluster(cores) as lc, Client(lc) as client:
        client.run(lambda: __import__("daskcal.io.exposure"))
        with rss_sampler(client) as peaks:
            start = time.perf_counter()
            tasks = [
                dask.delayed(io_floor)(str(repo.find("calexp", d)), str(out / f"{d['ccd']}.fits"))
                for d in ids
            ]
            per_ccd = client.gather(client.compute(tasks))
            seconds = time.perf_counter() - start
    shutil.rmtree(out)
    return {"seconds": seconds, "per_ccd": float(np.median(per_ccd)), "peak": max(peaks.values())}


def bench_full(repo: Repository, cores: int) -> dict:
    with cluster(cores) as lc, Client(lc) as client:
        client.run(lambda: __import__("daskcal.runs.calibrate"))
        with rss_sampler(client) as peaks:
            start = time.perf_counter()
            execution = ExecutionOptions(scheduler=lc.scheduler_address)
            options = RunOptions(progress=False, no_versions=True, redo=True)
            report = run_exposure(repo, [{"tract": 0}], CalibrateConfig(), execution, options)
            seconds = time.perf_counter() - start
    assert report.exit_code == 0, report.table()
    return {"seconds": seconds, "peak": max(peaks.values())}


def bench_phases(source: Repository, work: Path) -> None:
    """Where one CCD's time goes, in this process (no Dask)."""
    from daskcal.calib.background_file import background_block
    from daskcal.calib.table import calibration_row
    from daskcal.tasks import exposure as job

    config = CalibrateConfig()
    dataid = source.expand([{"tract": 0}])[0]
    names = ("calexp", "skyCorr", "fgcm_tract_photoCalib", "jointcal_wcs")
    paths = {name: source.find(name, dataid) for name in names}
    times = {}

    def timed(label, func, *args, **kwargs):
        start = time.perf_counter()
        result = func(*args, **kwargs)
        times[label] = time.perf_counter() - start
        return result

    row = timed("calibration row without SIP", calibration_row, dataid, paths, config)
    row = timed("calibration row with the TAN-SIP fit", calibration_row, dataid, paths, config,
                with_sip=True)  # fmt: skip
    plan = job.exposure_plan(row, config)
    ds = read_exposure(paths["calexp"])
    ny = ds.sizes["y"]
    planes = timed("read + decompress 3 planes", read_planes, ds)
    timed("skyCorr, full resolution", background_block, plan.skycorr, 0, ny)
    timed("c(x, y) on every pixel", plan.photocalib().evaluate_grid, 0, ds.sizes["x"], 0, ny)
    timed("read + calibrate (512-row blocks)", job._read_calibrated, ds, plan, 512)
    out = work / "phases.fits"
    timed("CALEXP metadata + compress + write", job._write_calexp, ds, str(out),
          (planes[0], planes[1], planes[2]), plan, config)  # fmt: skip
    out.unlink()
    print("\none full-size CCD, in process:")
    for label, seconds in times.items():
        print(f"  {label:<40} {seconds:>6.2f} s")


def bench_codecs(calexp: Path, work: Path) -> None:
    """Write one full CCD's planes with each candidate; check lossless; time it."""
    import fitsio
    from astropy.io import fits

    planes = read_planes(read_exposure(calexp))
    image = planes[0]

    def astropy_write(out, float_codec, mask_codec):
        hdus_ = [fits.PrimaryHDU()]
        for data in planes:
            codec = float_codec if data.dtype.kind == "f" else mask_codec
            if codec is None:
                hdus_.append(fits.ImageHDU(data))
            else:
                extra = {"quantize_level": 0} if data.dtype.kind == "f" else {}
                hdus_.append(fits.CompImageHDU(data, compression_type=codec, **extra))
        fits.HDUList(hdus_).writeto(out, overwrite=True)

    def fitsio_write(out, float_codec, mask_codec):
        with fitsio.FITS(out, "rw", clobber=True) as f:
            for data in planes:
                codec = float_codec if data.dtype.kind == "f" else mask_codec
                f.write_image(data, compress=codec, qlevel=0 if data.dtype.kind == "f" else None)

    def read_back(out):
        with fits.open(out) as hdul:
            return [np.asarray(h.data) for h in hdul[1:4]]

    candidates = [
        ("astropy GZIP_2 floats + RICE_1 mask (daskcal)", astropy_write, "GZIP_2", "RICE_1"),
        ("astropy GZIP_1 floats + RICE_1 mask", astropy_write, "GZIP_1", "RICE_1"),
        ("astropy GZIP_2 everything (afw Gen2)", astropy_write, "GZIP_2", "GZIP_2"),
        ("fitsio GZIP_2 floats + RICE_1 mask", fitsio_write, "GZIP_2", "RICE"),
        ("fitsio GZIP_1 floats + RICE_1 mask", fitsio_write, "GZIP", "RICE"),
        ("astropy uncompressed", astropy_write, None, None),
    ]
    print(f"\ncodecs, one full CCD ({image.shape[1]} x {image.shape[0]}, 3 planes, "
          f"{sum(p.nbytes for p in planes) / MB:.0f} MB raw):")  # fmt: skip
    print(f"  {'writer':<48} {'write s':>8} {'read s':>7} {'MB':>6} lossless")
    for name, writer, float_codec, mask_codec in candidates:
        out = work / "codec.fits"
        start = time.perf_counter()
        writer(str(out), float_codec, mask_codec)
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        back = read_back(out)
        read_s = time.perf_counter() - start
        same = all(np.array_equal(a, b) for a, b in zip(planes, back, strict=True))
        size = out.stat().st_size / MB
        print(f"  {name:<48} {write_s:>8.2f} {read_s:>7.2f} {size:>6.1f} {same}")
        out.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ccds", type=int, nargs="+", default=[10])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--codecs", action="store_true", help="also compare codecs")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-exposure-"))
    work.mkdir(parents=True, exist_ok=True)
    source = make_source(work)
    bench_phases(source, work)
    print(f"\n{args.cores} single-threaded workers; full-size CCDs (2048 x 4176); "
          f"load average before: {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("floor s: before/after the full run (the ratio uses their mean: the speed of a shared")
    print("virtual machine drifts by 10-20 % within minutes, and this cancels a steady drift)")
    print(f"{'CCDs':>5} {'floor s':>12} {'full s':>8} {'CCD/s/core':>11} {'floor CCD/s/core':>17} "
          f"{'full/floor':>10} {'peak RSS/worker MB (floor, full)':>33}")  # fmt: skip
    for n in args.ccds:
        repo = make_repository(source, work, n)
        ids = repo.expand([{"tract": 0}])
        before = bench_floor(repo, ids, args.cores)
        full = bench_full(repo, args.cores)
        after = bench_floor(repo, ids, args.cores)
        floor = (before["seconds"] + after["seconds"]) / 2
        rate = n / full["seconds"] / args.cores
        floor_rate = n / floor / args.cores
        peaks = f"{max(before['peak'], after['peak']) / MB:.0f}, {full['peak'] / MB:.0f}"
        ratio = full["seconds"] / floor
        floors = f"{before['seconds']:.1f}/{after['seconds']:.1f}"
        print(
            f"{n:>5} {floors:>12} {full['seconds']:>8.1f} {rate:>11.3f} "
            f"{floor_rate:>17.3f} {ratio:>10.2f} {peaks:>33}"
        )
        shutil.rmtree(repo.root)
    print(f"load average after: {os.getloadavg()[0]:.2f} (other jobs on the machine skew it all)")
    if args.codecs:
        bench_codecs(source.find("calexp", source.expand([{"tract": 0}])[0]), work)


if __name__ == "__main__":
    main()
