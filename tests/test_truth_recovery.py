"""calibrateCatalog on a generated repository recovers the truth it was built from."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from daskcal.cli import main
from daskcal.demo import make_demo_repository, read_truth
from daskcal.io.catalog import read_catalog

MAS_PER_RAD = np.degrees(1) * 3.6e6


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "repo"
    make_demo_repository(
        root, visits=2, ccds=[0, 1, 50, 100], size="small", seed=7, scheduler="sync"
    )
    code = main(
        [
            "catalog",
            str(root),
            "--rerun",
            "demo:calib",
            "--id",
            "field=NGC604",
            "tract=0",
            "ccd=0..8^10..103",
            "--no-versions",
        ]
    )
    assert code == 0
    return root


def matched(root):
    """CALSRC rows of all CCDs joined with the true sources, on (visit, ccd, id)."""
    sources, _ = read_truth(root)
    frames = []
    for path in sorted((root / "rerun/calib/calibrated").rglob("CALSRC-*.fits")):
        visit, ccd = (int(v) for v in path.stem.split("-")[1:])
        df = read_catalog(path)
        src = read_catalog(
            str(path).replace("calib/calibrated/0000", "demo").replace("CALSRC", "output/SRC")
        )
        frames.append(
            df.assign(visit=visit, ccd=ccd, src_ra=src["coord_ra"], src_dec=src["coord_dec"])
        )
    cal = pd.concat(frames, ignore_index=True)
    return cal.merge(sources, on=["visit", "ccd", "id"], suffixes=("", "_true"))


def test_fluxes_are_recovered_within_the_noise(demo):
    df = matched(demo)
    df = df[~df["is_sky"] & ~df["nan_centroid"]]
    assert len(df) > 100
    for prefix in ("base_PsfFlux", "base_GaussianFlux", "base_CircularApertureFlux_12_0"):
        flux, inst = df[f"{prefix}_flux"], df[f"{prefix}_instFlux"]
        expected = df["flux"] * df[f"frac_{prefix}"]
        noise = df[f"{prefix}_instFluxErr"] * flux / inst  # instFluxErr * c
        pull = ((flux - expected) / noise).to_numpy()
        pull = pull[np.isfinite(pull)]
        assert abs(pull.mean()) < 0.15, prefix
        assert 0.85 < pull.std() < 1.15, prefix


def test_positions_are_recovered(demo):
    df = matched(demo)
    df = df[~df["nan_centroid"] & ~df["is_sky"]]
    cosd = np.cos(np.radians(df["dec"]))
    dra = (df["coord_ra"] - np.radians(df["ra"])) * cosd * MAS_PER_RAD
    ddec = (df["coord_dec"] - np.radians(df["dec"])) * MAS_PER_RAD
    # no systematic offset left (the calexp's own WCS was ~300 mas off)
    assert abs(dra.mean()) < 1.0 and abs(ddec.mean()) < 1.0
    before = (
        np.hypot(
            (df["src_ra"] - np.radians(df["ra"])) * cosd, df["src_dec"] - np.radians(df["dec"])
        )
        * MAS_PER_RAD
    )
    assert before.median() > 100
    # what is left is centroid noise: pulls of unit width
    sigma = df["base_SdssCentroid_xErr"] * 168.0  # mas per pixel
    pull = np.concatenate([dra / sigma, ddec / sigma])
    assert 0.8 < np.nanstd(pull) < 1.2


def test_parquet_holds_the_same_numbers(demo):
    import duckdb

    dataset = demo / "rerun/calib/calibrated/parquet/src"
    q = duckdb.sql(
        f"SELECT filter, count(*) AS n, sum(base_PsfFlux_flux) AS s FROM read_parquet("
        f"'{dataset}/**/*.parquet', hive_partitioning=true) GROUP BY filter ORDER BY filter"
    ).df()
    df = matched(demo)
    assert list(q["filter"]) == ["HSC-G", "HSC-I"]
    by_filter = df.groupby("filter")["base_PsfFlux_flux"]
    np.testing.assert_allclose(q["s"], by_filter.sum().to_numpy(), rtol=1e-12)
    assert list(q["n"]) == by_filter.size().tolist()
