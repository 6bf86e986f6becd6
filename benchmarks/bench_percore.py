"""calibrateExposure per core against hscPipe's best case, on one full-size CCD.

    .venv/bin/python benchmarks/bench_percore.py [--repeats 5] [--before /tmp/old-tree]
    .venv/bin/python benchmarks/bench_percore.py --codecs   # only the codec table

Uses the full-size demo CCD of ``bench_exposure.py`` (2048 x 4176; its calexp written in
hscPipe's layout: GZIP_2, one row per tile) and measures

- **daskcal's marginal cost per CCD**: ``calibrateExposure.py --batch-type=none`` run as a
  new user would (a fresh process each time) on 1 and on 5 CCDs (symbolic links to the same
  files; every output is written and fsynced); (5 CCDs - 1 CCD) / 4;
- **hscPipe's best case** per CCD, in this process: cfitsio (fitsio) reads the three
  planes, the formula ``image * c / cbar - sky``, ``variance * (c / cbar)^2`` in float32
  with ``c`` and ``sky`` given for free, cfitsio writes the three planes GZIP_2 (afw's
  lossless recipe; not fsynced);
- their ratio (the aim is <= 0.33), the file sizes of each layout, and where one CCD's
  time goes in daskcal (per step, in a fresh process);
- with ``--codecs``: CPU seconds to write the three planes in each layout and to read them
  with astropy, cfitsio (fitsio) and daskcal's decoder, MB on disk, lossless or not.

Both sides are timed per core: CPU seconds (user + system) of the process that does the
work, one BLAS thread (``--blas-threads``; daskcal's Dask workers run with one), medians of
``--repeats``; wall-clock seconds are printed too. On a shared machine the CPU time of a
single-threaded process is far steadier than its wall time. ``--before TREE`` (and
``--after TREE``) time the daskcal package of another checkout, e.g.
``git archive <rev> | tar -x -C /tmp/old``, on the same inputs. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_exposure import make_repository, make_source  # noqa: E402

MB = 2**20
# run code with the daskcal package of another tree (the editable install finds its own)
PRELUDE = """import sys
tree = {tree!r}
if tree:
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, tree)
"""
BLAS_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_python(code: str, args: list[str], tree: str | None, env: dict) -> tuple:
    """Run ``code`` in a fresh interpreter (daskcal from ``tree`` if given).

    Returns (completed process, wall seconds, CPU seconds of the child).
    """
    script = PRELUDE.format(tree=tree or "") + code
    cpu, wall = _children_cpu(), time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env
    )
    return done, time.perf_counter() - wall, _children_cpu() - cpu


def marginal(source, work: Path, repeats: int, tree: str | None, label: str, env) -> dict:
    """``calibrateExposure.py --batch-type=none`` on 1 and 5 CCDs; the cost of one more."""
    code = "from daskcal.cli import calibrate_exposure_main as m\nsys.exit(m(sys.argv[1:]))\n"
    repos = {n: make_repository(source, work, n) for n in (1, 5)}
    cpu: dict[int, list[float]] = {1: [], 5: []}
    wall: dict[int, list[float]] = {1: [], 5: []}
    for _ in range(repeats):
        for n, repo in repos.items():
            args = [str(repo.root), "--rerun", f"demo:{label}", "--id", "tract=0", "--redo",
                    "--batch-type=none", "--clobber-config", "--clobber-versions"]  # fmt: skip
            done, seconds, cpu_seconds = run_python(code, args, tree, env)
            if done.returncode:
                raise RuntimeError(f"calibrateExposure failed ({label}):\n{done.stderr[-2000:]}")
            cpu[n].append(cpu_seconds)
            wall[n].append(seconds)
    output = next((repos[1].root / "rerun" / label / "calibrated").rglob("CALEXP-*.fits"))
    result = {"CALEXP MB": output.stat().st_size / MB, "cpu runs": cpu, "wall runs": wall}
    for kind, runs in (("cpu", cpu), ("wall", wall)):
        one, five = statistics.median(runs[1]), statistics.median(runs[5])
        result.update({f"1 CCD {kind} s": one, f"5 CCDs {kind} s": five})
        result[f"per CCD {kind} s"] = (five - one) / 4
    return result


def _where_things_are() -> tuple:
    """(per-CCD exposure module, background_block), wherever this tree keeps them."""
    try:
        from daskcal.tasks import exposure as job
    except ImportError:  # before the move to tasks/
        from daskcal import exposure_job as job
    try:
        from daskcal.calib.background_file import background_block
    except ImportError:
        from daskcal.calib.background import background_block
    return job, background_block


def _calibration(source):
    from daskcal.calib.table import calibration_row
    from daskcal.config import CalibrateConfig
    from daskcal.io.exposure import read_exposure

    job, background_block = _where_things_are()
    config = CalibrateConfig()
    dataid = source.expand([{"tract": 0}])[0]
    names = ("calexp", "skyCorr", "fgcm_tract_photoCalib", "jointcal_wcs")
    paths = {name: source.find(name, dataid) for name in names}
    plan = job.exposure_plan(calibration_row(dataid, paths, config), config)
    ds = read_exposure(paths["calexp"])
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    c = plan.photocalib().evaluate_grid(0, nx, 0, ny).astype(np.float32)
    sky = background_block(plan.skycorr, 0, ny)
    return paths["calexp"], c, sky, plan.cbar


def hscpipe_best(source, work: Path, repeats: int) -> dict:
    """cfitsio read of three planes + the formula + cfitsio GZIP_2 write of three planes."""
    import fitsio

    calexp, c, sky, cbar = _calibration(source)
    scale = (c / np.float32(cbar)).astype(np.float32)
    scale2 = scale * scale
    out = work / "hscpipe.fits"
    steps: dict[str, list[float]] = {"read": [], "formula": [], "write": []}
    cpu, wall = [], []
    for _ in range(repeats):
        start, clock = time.process_time(), time.perf_counter()
        with fitsio.FITS(str(calexp)) as f:
            image, mask, variance = (f[i].read() for i in (1, 2, 3))
        read = time.process_time()
        image *= scale
        image -= sky
        variance *= scale2
        formula = time.process_time()
        out.unlink(missing_ok=True)
        with fitsio.FITS(str(out), "rw") as f:
            for data in (image, mask, variance):
                qlevel = 0 if data.dtype.kind == "f" else None
                f.write_image(data, compress="GZIP_2", qlevel=qlevel)
        end = time.process_time()
        wall.append(time.perf_counter() - clock)
        cpu.append(end - start)
        for key, seconds in zip(steps, (read - start, formula - read, end - formula), strict=True):
            steps[key].append(seconds)
    result = {f"{k} cpu s": statistics.median(v) for k, v in steps.items()}
    result["per CCD cpu s"] = statistics.median(cpu)
    result["per CCD wall s"] = statistics.median(wall)
    result["output MB"] = out.stat().st_size / MB
    result["input MB"] = Path(calexp).stat().st_size / MB
    return result


PHASES = """
import json, statistics, sys, time
from pathlib import Path
try:
    from daskcal.tasks import exposure as job
except ImportError:
    from daskcal import exposure_job as job
try:
    from daskcal.calib.background_file import background_block
except ImportError:
    from daskcal.calib.background import background_block
from daskcal.calib.table import calibration_row
from daskcal.config import CalibrateConfig
from daskcal.io.exposure import read_exposure, read_rows
from astropy.io import fits
import numpy as np

config = CalibrateConfig()
dataid, paths = json.loads({inputs!r})
paths = {{name: Path(path) for name, path in paths.items()}}
times = {{}}
KINDS = (("image", "float32"), ("mask", "int32"), ("variance", "float32"))

def timed(label, func, *args, **kwargs):
    start = time.process_time()
    result = func(*args, **kwargs)
    times.setdefault(label, []).append(time.process_time() - start)
    return result

def astropy_planes(ds):
    with fits.open(ds.attrs["path"]) as hdul:
        return [np.array(hdul[ds.attrs["hdus"][p]].section[:], dtype=t) for p, t in KINDS]

def planes(ds):
    ny = ds.sizes["y"]
    return [read_rows(ds.attrs["path"], ds.attrs["hdus"][p], 0, ny, t) for p, t in KINDS]

for _ in range({repeats}):
    row = timed("calibration row + TAN-SIP fit", calibration_row, dataid, paths, config,
                with_sip=True)
    plan = job.exposure_plan(row, config)
    ds = timed("read headers (read_exposure)", read_exposure, paths["calexp"])
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    timed("read + decompress 3 planes, astropy", astropy_planes, ds)
    timed("read + decompress 3 planes", planes, ds)
    timed("skyCorr at full resolution", background_block, plan.skycorr, 0, ny)
    timed("c(x, y) at every pixel", plan.photocalib().evaluate_grid, 0, nx, 0, ny)
    calibrated = timed("read + calibrate (512-row blocks)", job._read_calibrated, ds, plan, 512)
    out = Path({work!r}) / "phases.fits"
    timed("CALEXP metadata + compress + write", job._write_calexp, ds, str(out),
          calibrated, plan, config)
    out.unlink()
print(json.dumps({{k: statistics.median(v) for k, v in times.items()}}))
"""


def phases(source, work: Path, repeats: int, tree: str | None, env) -> dict:
    """Median CPU seconds of each step of one CCD, in a fresh process (``tree``'s daskcal)."""
    dataid = source.expand([{"tract": 0}])[0]
    names = ("calexp", "skyCorr", "fgcm_tract_photoCalib", "jointcal_wcs")
    paths = {name: str(source.find(name, dataid)) for name in names}
    inputs = json.dumps([dict(dataid), paths])
    code = PHASES.format(inputs=inputs, work=str(work), repeats=repeats)
    done, _, _ = run_python(code, [], tree, env)
    if done.returncode:
        raise RuntimeError(f"phases failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def layout_sizes(source, work: Path) -> dict:
    """MB of one CCD's planes written in each layout (the calexp's pixels, no archive)."""
    from daskcal.io.exposure import read_exposure, read_rows, write_exposure

    calexp = source.find("calexp", source.expand([{"tract": 0}])[0])
    ds = read_exposure(calexp)
    ny = ds.sizes["y"]
    kinds = (("image", "float32"), ("mask", "int32"), ("variance", "float32"))
    planes = [read_rows(str(calexp), ds.attrs["hdus"][p], 0, ny, t) for p, t in kinds]
    sizes = {}
    for codec in ("daskcal", "afw", "astropy"):
        out = work / f"layout-{codec}.fits"
        write_exposure(out, *planes, primary_header=None, mask_planes={}, codec=codec)
        sizes[codec] = out.stat().st_size / MB
        out.unlink()
    return sizes


def codec_table(source, work: Path, repeats: int) -> dict:
    """CPU seconds to write one CCD's three planes in each layout and to read them back
    with astropy, cfitsio (fitsio) and daskcal's decoder; MB on disk; lossless or not."""
    import fitsio
    from astropy.io import fits

    from daskcal.io.exposure import read_exposure, read_rows, write_exposure
    from daskcal.io.tilecodec import read_image_rows

    calexp = source.find("calexp", source.expand([{"tract": 0}])[0])
    ds = read_exposure(calexp)
    ny = ds.sizes["y"]
    kinds = (("image", "float32"), ("mask", "int32"), ("variance", "float32"))
    planes = [read_rows(str(calexp), ds.attrs["hdus"][p], 0, ny, t) for p, t in kinds]

    def with_daskcal(codec):
        return lambda out: write_exposure(out, *planes, primary_header=None, mask_planes={},
                                          codec=codec)  # fmt: skip

    def with_fitsio(out):
        with fitsio.FITS(str(out), "rw", clobber=True) as f:
            for data in planes:
                f.write_image(
                    data, compress="GZIP_2", qlevel=0 if data.dtype.kind == "f" else None
                )

    def read_astropy(out):
        with fits.open(out) as hdul:
            return [np.array(hdul[i].data) for i in (1, 2, 3)]

    readers = {
        "astropy": read_astropy,
        "fitsio": lambda out: [fitsio.read(str(out), ext=i) for i in (1, 2, 3)],
        "daskcal": lambda out: [read_image_rows(out, i) for i in (1, 2, 3)],
    }
    writers = {
        "astropy GZIP_2 1-row floats + RICE_1 mask (daskcal before)": with_daskcal("astropy"),
        "cfitsio (fitsio) GZIP_2 1-row, 3 planes (afw, hscPipe)": with_fitsio,
        "daskcal codec, afw layout (GZIP_2 1-row, ISA-L level 1)": with_daskcal("afw"),
        "daskcal codec, GZIP_2 32-row tiles, ISA-L level 2 (now)": with_daskcal("daskcal"),
    }

    def cpu(func, arg) -> tuple[float, object]:
        times, result = [], None
        for _ in range(repeats):
            start = time.process_time()
            result = func(arg)
            times.append(time.process_time() - start)
        return statistics.median(times), result

    table = {}
    for name, write in writers.items():
        out = work / "codec.fits"
        out.unlink(missing_ok=True)
        row = {"write": cpu(write, out)[0], "MB": out.stat().st_size / MB}
        for reader, read in readers.items():
            row[reader], back = cpu(read, out)
            row[f"{reader} lossless"] = all(
                np.array_equal(np.asarray(b).astype(a.dtype).view(np.uint8), a.view(np.uint8))
                for a, b in zip(planes, back, strict=True)
            )
        table[name] = row
        out.unlink()
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--before", type=str, default=None, help="an older daskcal tree")
    parser.add_argument("--after", type=str, default=None, help="daskcal tree to time "
                        "(default: the one this Python imports)")  # fmt: skip
    parser.add_argument("--blas-threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also save the results")
    parser.add_argument("--codecs", action="store_true", help="only the codec table")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-percore-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **dict.fromkeys(BLAS_VARIABLES, str(args.blas_threads))}
    source = make_source(work)
    if args.codecs:
        print(f"one CCD's three planes (98 MB raw), median CPU s of {args.repeats}:")
        print(f"  {'layout':<60} {'MB':>5} {'write':>6} {'astropy':>8} {'fitsio':>7} "
              f"{'daskcal':>8}  lossless")  # fmt: skip
        for name, row in codec_table(source, work, args.repeats).items():
            same = all(row[f"{r} lossless"] for r in ("astropy", "fitsio", "daskcal"))
            print(f"  {name:<60} {row['MB']:>5.1f} {row['write']:>6.3f} {row['astropy']:>8.3f} "
                  f"{row['fitsio']:>7.3f} {row['daskcal']:>8.3f}  {same}")  # fmt: skip
        return
    print(f"load average before: {os.getloadavg()[0]:.2f}; medians of {args.repeats} runs; "
          f"{args.blas_threads} BLAS thread(s)")  # fmt: skip
    results = {"hscpipe": hscpipe_best(source, work, args.repeats)}
    trees = {"after": args.after, **({"before": args.before} if args.before else {})}
    for name, tree in trees.items():
        results[name] = marginal(source, work, args.repeats, tree, name, env)
        results[name]["phases"] = phases(source, work, args.repeats, tree, env)
    results["layouts MB"] = layout_sizes(source, work)
    hsc = results["hscpipe"]
    print(f"\nhscPipe best case per CCD: {hsc['per CCD cpu s']:.3f} CPU s "
          f"(read {hsc['read cpu s']:.3f}, formula {hsc['formula cpu s']:.3f}, "
          f"write {hsc['write cpu s']:.3f}), {hsc['per CCD wall s']:.3f} wall s; "
          f"output {hsc['output MB']:.1f} MB, input calexp {hsc['input MB']:.1f} MB")  # fmt: skip
    for name in trees:
        r = results[name]
        for kind in ("cpu", "wall"):
            per = r[f"per CCD {kind} s"]
            print(f"daskcal {name} ({kind}): 1 CCD {r[f'1 CCD {kind} s']:.2f} s, 5 CCDs "
                  f"{r[f'5 CCDs {kind} s']:.2f} s -> {per:.3f} s per CCD = "
                  f"{per / hsc[f'per CCD {kind} s']:.2f} x hscPipe")  # fmt: skip
        print(f"  CALEXP {r['CALEXP MB']:.1f} MB")
    print("\nlayouts, same planes (MB): " + ", ".join(
        f"{k} {v:.1f}" for k, v in results["layouts MB"].items()))  # fmt: skip
    print("\none CCD, in process (median CPU s):")
    print(f"  {'step':<40}" + "".join(f"{name:>10}" for name in trees))
    for step in results["after"]["phases"]:
        cells = "".join(f"{results[n]['phases'].get(step, float('nan')):>10.3f}" for n in trees)
        print(f"  {step:<40}{cells}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
