"""Smoke test of an installed daskcal (run by .ci/floors at the dependency floors).

Prints the versions it runs with (checked against the pins file given as argument), then
one line per check: every module imports; a tiny demo repository; ``daskcal catalog``,
``daskcal exposure`` and ``daskcal hats`` with ``--batch-type none``; the lazy API
(catalog columns, calibrated catalogs, exposures with sky coordinates) and the xarray
backend. Exits non-zero at the first failure.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

START = time.perf_counter()
PASSED: list[str] = []


def check(what: str) -> None:
    PASSED.append(what)
    print(f"   ok  {what}  ({time.perf_counter() - START:.1f} s)", flush=True)


def installed_versions(pins: Path) -> None:
    """Each pinned distribution is installed at its pin."""
    wrong = []
    for line in pins.read_text().split():
        name, pinned = line.split("==")
        name = re.sub(r"\[.*\]", "", name)
        got = version(name)
        print(f"   {name:16s} {got}")
        if _release(got) != _release(pinned):
            wrong.append(f"{name} {got} (pinned {pinned})")
    if wrong:
        sys.exit(f"not installed at their floors: {wrong}")
    check("every direct dependency is installed at its floor")


def _release(text: str) -> tuple[int, ...]:
    parts = [int(p) for p in re.findall(r"\d+", text.split("+")[0])[:3]]
    while parts and parts[-1] == 0:  # 6 == 6.0 == 6.0.0
        parts.pop()
    return tuple(parts)


def import_everything() -> None:
    import daskcal

    names = [m.name for m in pkgutil.walk_packages(daskcal.__path__, "daskcal.")]
    for name in names:
        importlib.import_module(name)
    check(f"{len(names)} modules import")


def daskcal_cli(*args: str) -> None:
    cmd = [str(Path(sys.executable).with_name("daskcal")), *args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")


def main(pins: Path) -> None:
    installed_versions(pins)
    import_everything()

    import numpy as np
    import pandas as pd
    import xarray as xr

    import daskcal
    from daskcal.demo import make_demo_repository

    root = Path(tempfile.mkdtemp()) / "repo"
    make_demo_repository(root, visits=1, ccds=(0, 50), seed=7, scheduler="sync")
    check("demo repository: 1 visit, CCDs 0 and 50")

    ident = ["--id", "field=NGC604", "tract=0", "--batch-type", "none", "--no-versions"]
    daskcal_cli("catalog", str(root), "--rerun", "demo:floors", *ident)
    calsrc = sorted((root / "rerun" / "floors" / "calibrated").rglob("CALSRC-*.fits"))
    parquet = sorted((root / "rerun" / "floors" / "calibrated" / "parquet").rglob("*.parquet"))
    assert len(calsrc) == 2 and parquet, (calsrc, parquet)
    check("daskcal catalog --batch-type none: 2 CALSRC and the visit Parquet")
    daskcal_cli("exposure", str(root), "--rerun", "demo:floors", *ident)
    calexps = sorted((root / "rerun" / "floors" / "calibrated").rglob("CALEXP-*.fits"))
    assert len(calexps) == 2, calexps
    check("daskcal exposure --batch-type none: 2 CALEXP")
    daskcal_cli("hats", str(root), "--rerun", "floors")
    assert (root / "rerun" / "floors" / "calibrated" / "hats").is_dir()
    check("daskcal hats: a HATS catalog")

    repo = daskcal.Repository(root, rerun="demo")
    ids = repo.expand([{"tract": 0}])
    cols = ["base_PsfFlux_instFlux", "coord_ra", "sky_source"]
    cats = daskcal.open_catalogs(repo, ids, columns=cols).compute()
    full = daskcal.open_catalogs(repo, ids).compute()
    pd.testing.assert_frame_equal(cats, full[list(cats.columns)])
    cal = daskcal.calibrated_catalogs(repo, ids, columns=["base_PsfFlux_mag"]).compute()
    written = pd.concat([daskcal.read_catalog(p) for p in calsrc], ignore_index=True)
    np.testing.assert_allclose(cal["base_PsfFlux_mag"], written["base_PsfFlux_mag"])
    check("open_catalogs / calibrated_catalogs (columns=) agree with the CALSRC files")

    path = repo.find("calexp", ids[1])
    ds = daskcal.read_exposure(path, chunk_rows=100)
    assert np.isfinite(ds["ra"].isel(y=slice(0, 4), x=slice(0, 4)).values).all()
    exps = daskcal.calibrated_exposures(repo, ids)
    np.testing.assert_array_equal(
        exps[1]["mask"].values, daskcal.read_exposure(calexps[1])["mask"].values
    )
    check("read_exposure (lazy ra/dec), calibrated_exposures")

    opened = xr.open_dataset(path, engine="daskcal", chunks={"y": 100})
    assert opened["image"].chunks[0][0] == 100
    np.testing.assert_array_equal(opened["image"].values, ds["image"].values)
    both = xr.open_mfdataset(
        [repo.find("calexp", d) for d in ids],
        engine="daskcal",
        combine="nested",
        concat_dim="exposure",
    )
    assert both.sizes["exposure"] == 2 and opened.attrs["photocalib"].mean > 0
    check("xarray engine='daskcal': open_dataset with chunks, open_mfdataset")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    print(f"floors: {len(PASSED)} passed, 0 failed")
