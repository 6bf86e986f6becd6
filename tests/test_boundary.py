"""Inputs checked at the boundary: hostile registries, file names, --id values, cluster
options, config files and non-regular input files give one-line errors or warnings, never a
hang, a traceback, unbounded memory or a file written outside the output rerun."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from daskcal import idmatch as idmatch_module
from daskcal.cli import main
from daskcal.commands.arguments import MAX_CORES
from daskcal.config import CONFIG_FILE_MAX, ConfigError, read_config_file
from daskcal.dataid import (
    ENUMERATE_MAX,
    INT_MAX,
    MAX_CARRIED,
    MAX_IDS,
    DataIdError,
    IdRange,
    Selection,
    check_id,
    parse_id,
    parse_selection,
    parse_selections,
)
from daskcal.idmatch import match_ids, match_selection
from daskcal.repo import TEMPLATES, Repository, RepositoryError
from daskcal.runs.cluster import ClusterError, ExecutionOptions, available_cores, local_cluster

ROOT = Path(__file__).resolve().parents[1]
ESCAPE = "../../../../../../E"  # from calibrated/0000/00816/ of rerun OUT: ROOT/.. /E
HOSTILE = [  # (field, visit, ccd, pointing, filter)
    ("NGC604", 1229, 50, 816, ESCAPE),
    ("NGC604", "12x", 1, 816, "HSC-G"),
    (None, None, None, None, None),
    ("NGC604", 1230, 0, 2**62, "HSC-G"),
    ("NGC604", 1231, 0, 816, "HSC G\nwarning: forged"),
]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *needles: str) -> bool:
    return (
        err.startswith("daskcal: error: ")
        and err.count("\n") == 1
        and "Traceback" not in err
        and all(n in err for n in needles)
    )


def files(base: Path) -> set[Path]:
    return {p for p in base.rglob("*")}


@pytest.fixture(scope="module")
def pristine(demo_repository) -> Path:
    """A demo repository (visit 1228, CCDs 0 and 50), copied by each test that changes it."""
    return demo_repository(visits=1, ccds=(0, 50), seed=9)


@pytest.fixture
def base(tmp_path, pristine) -> Path:
    """``tmp_path`` holding a copy of the demo repository at ``g/p/repo``."""
    shutil.copytree(pristine, tmp_path / "g" / "p" / "repo", symlinks=True)
    return tmp_path


def hostile_registry(root: Path) -> Path:
    """The demo registry plus the HOSTILE rows, and the inputs the escaping row points at:
    CCD 50's files copied to where its ``filter`` leads, so that only the checks stop it."""
    registry = root / "registry.sqlite3"
    with sqlite3.connect(registry) as db:
        db.executemany(
            "INSERT INTO raw (field, visit, ccd, pointing, filter) VALUES (?, ?, ?, ?, ?)",
            HOSTILE,
        )
    db.close()
    demo = Repository(root, rerun="demo")
    good = {"visit": 1228, "ccd": 50, "pointing": 816, "filter": "HSC-G", "tract": 0}
    evil = {**good, "visit": 1229, "filter": ESCAPE}
    for dataset in ("calexp", "src", "skyCorr", "jointcal_wcs", "jointcal_photoCalib",
                    "fgcm_photoCalib", "fgcm_tract_photoCalib"):  # fmt: skip
        target = Path(os.path.normpath(demo.input_dir / demo.relative_path(dataset, evil)))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(demo.find(dataset, good), target)
    return registry


# --- 1. registry rows and file names never choose where we write ------------------------


def test_hostile_registry_rows_are_left_out_of_info_with_one_warning(capsys, base):
    root = base / "g/p/repo"
    registry = hostile_registry(root)
    code, out, err = run(capsys, "info", root, "--rerun", "demo")
    assert code == 0
    assert "data ids    2 (1 visits, 2 ccds; filters HSC-G)" in out
    assert err.count("\n") == 1
    assert err.startswith(f"daskcal WARNING: {registry}: table raw: left out 5 rows ")
    assert f"filter {ESCAPE!r}" in err and "visit=1229" in err
    with sqlite3.connect(registry) as db:  # now the forged row comes first
        db.execute("DELETE FROM raw WHERE visit IS NULL OR visit NOT IN (1228, 1231)")
    db.close()
    code, out, err = run(capsys, "info", root, "--rerun", "demo")
    assert code == 0 and "left out 1 row " in err
    assert err.count("\n") == 1 and "\\nwarning: forged" in err  # shown escaped
    code, out, err = run(capsys, "info", root, "--rerun", "demo", "--id", "visit=1229")
    assert code == 2 and one_line_error(err, "no data")


def test_hostile_registry_run_writes_only_inside_the_output_rerun(capsys, base):
    root = base / "g/p/repo"
    hostile_registry(root)
    before = files(base)
    code, out, err = run(capsys, "catalog", root, "--rerun", "demo:out", "--id", "tract=0",
                         "--no-versions")  # fmt: skip
    assert code == 0, out + err
    assert "2 data ids" in out and "2 done" in out
    assert "left out 5 rows" in err and "Traceback" not in err
    new = files(base) - before
    assert new and all(p.is_relative_to(root / "rerun/out") for p in new)
    assert not (base / "g/p/E").exists()


def test_output_path_proves_it_stays_in_the_output_rerun(base, tmp_path):
    root = base / "g/p/repo"
    repo = Repository(root, rerun="demo:out")
    good = {"visit": 1228, "ccd": 50, "pointing": 816, "filter": "HSC-G", "tract": 0}
    assert repo.output_path("calibrated_src", good).is_relative_to(root / "rerun/out")
    with pytest.raises(RepositoryError, match=r"visit=1229 .*calibrated_src path .* outside"):
        repo.output_path("calibrated_src", {**good, "visit": 1229, "filter": ESCAPE})
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "rerun/out").mkdir(parents=True)
    (root / "rerun/out/calibrated").symlink_to(outside)  # a folder on the way leads out
    with pytest.raises(RepositoryError, match="resolves outside the output rerun"):
        repo.output_path("calibrated_exp", good)
    (root / "rerun/out/calibrated").unlink()
    (root / "rerun/out/calibrated").symlink_to(tmp_path / "dangling")  # even if absent
    with pytest.raises(RepositoryError, match="resolves outside"):
        repo.output_path("calibrated_exp", good)
    (root / "rerun/linked").symlink_to(outside)  # the rerun itself elsewhere: fine
    linked = Repository(root, rerun="demo:linked")
    assert linked.output_path("calibrated_exp", good).parent.name == "HSC-G"


def test_file_names_on_disk_are_checked_like_registry_rows(caplog, tmp_path):
    root = tmp_path / "HSC"
    root.mkdir()
    (root / "_mapper").write_text("lsst.obs.hsc.HscMapper\n")
    names = [
        "00816/HSC-G/corr/CORR-0001228-000.fits",
        "00816/HSC G/corr/CORR-0001228-001.fits",  # a space: not a filter name
        "00816/HSC-G/corr/CORR-99999999999999999999999-000.fits",
        "99999999/HSC-G/corr/CORR-0001228-002.fits",
        "00816/..x/output/SRC-0001228-003.fits",
        "jointcal-results/HSC-G/123456/jointcal_wcs-0001228-000.fits",
    ]
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    repo = Repository(root)
    with caplog.at_level("WARNING", logger="daskcal"):
        ids = repo.expand(parse_selections(["tract=0"]))
        assert repo.tracts() == {}
    assert ids == [
        {"field": None, "visit": 1228, "ccd": 0, "pointing": 816, "filter": "HSC-G", "tract": 0}
    ]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and "left out 4 calexp or src files" in warnings[0]
    assert "HSC G/corr/CORR-0001228-001.fits: filter 'HSC G' is not a name" in warnings[0]
    assert "left out 1 tract folder " in warnings[1] and "tract 123456 is outside" in warnings[1]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("filter=../x", "filter '../x' is not a name"),
        ("filter=a/b", "filter 'a/b' is not a name"),
        ("field=-x", "field '-x' is not a name"),
        ("visit=99999999999999999999", "more than 18 digits"),
        ("visit=10000000", "visit 10000000 is outside 0..9999999"),
        ("ccd=-1", "ccd -1 is outside 0..999"),
        ("ccd=1000..2000", "starts after the largest ccd, 999"),
        ("tract=0..99999999999999999999", "more than 18 digits"),
    ],
)
def test_bad_id_values_are_one_line_errors(capsys, pristine, value, reason):
    code, out, err = run(capsys, "info", pristine, "--rerun", "demo", "--id", value)
    assert code == 2 and out == "" and one_line_error(err, reason)
    code, _, err = run(capsys, "catalog", pristine, "--rerun", "demo:x", "--id", value)
    assert code == 2 and one_line_error(err, reason)
    assert not (pristine / "rerun/x").exists()


def test_check_id_limits_follow_the_path_templates():
    for key, largest in INT_MAX.items():
        assert check_id({key: largest}) is None and check_id({key: largest + 1})
        assert check_id({key: -1}) and check_id({key: True}) and check_id({key: "1"})
    for key in ("visit", "ccd", "pointing"):  # fixed width: every valid value fits it
        template = next(t for t in TEMPLATES.values() if f"%({key})0" in t)
        width = int(template.split(f"%({key})0")[1].split("d")[0])
        assert len(str(INT_MAX[key])) == width
    assert check_id({"filter": "HSC-I2", "field": "SSP_UDEEP_COSMOS"}) is None
    assert check_id({"filter": "N" * 65})


# --- 2. ranges are matched, never listed ---------------------------------------------------


def test_huge_range_matches_the_registry_rows_quickly_in_little_memory(capsys, pristine):
    start = time.monotonic()
    code, out, err = run(capsys, "info", pristine, "--rerun", "demo", "--id",
                         "visit=1..100000000", "tract=0")  # fmt: skip
    assert code == 0 and err == "" and "data ids    2 (1 visits, 2 ccds" in out
    assert time.monotonic() - start < 30
    repo = Repository(pristine, rerun="demo")
    tracemalloc.start()
    try:
        found, unmatched = repo.match(parse_selections(["visit=1..100000000 ccd=0^7 tract=0"]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20
    assert [(d["visit"], d["ccd"], d["tract"]) for d in found] == [(1228, 0, 0)]
    assert [str(u) for u in unmatched] == ["visit=1..100000000 ccd=7 tract=0"]


def test_strided_and_clamped_ranges_in_sql(pristine):
    repo = Repository(pristine, rerun="demo")
    assert len(repo.expand(parse_selections(["visit=0..100000000:4 tract=0"]))) == 2
    found, unmatched = repo.match(parse_selections(["visit=1..100000000:4 tract=0"]))
    assert found == [] and [str(u) for u in unmatched] == ["visit=1..100000000:4 tract=0"]
    unchecked = Selection((("visit", (1228, 10**30, IdRange(10**20, 10**21))), ("tract", (0,))))
    found, _ = repo.match([unchecked])  # built by hand: values beyond SQLite's never bound
    assert [d["ccd"] for d in found] == [0, 50]
    found, _ = repo.match([{"visit": 10**30, "tract": 0}, {"visit": 1228, "ccd": 50}])
    assert [d["ccd"] for d in found] == [50]  # an unbindable int is simply not matched


def test_parse_id_refuses_to_list_more_than_the_limit():
    with pytest.raises(DataIdError) as info:
        parse_id("visit=1..100000000 tract=0")
    message = str(info.value)
    assert "100000000 data ids" in message and str(MAX_IDS) in message
    assert "\n" not in message
    assert len(parse_id("visit=0..30000 ccd=1")) == 30001
    with pytest.raises(DataIdError, match="more than 18 digits"):
        parse_id("visit=" + "9" * 5000)  # not int()'s own 4300-digit ValueError


def test_carried_keys_are_bounded(capsys, pristine):
    code, _, err = run(capsys, "info", pristine, "--rerun", "demo", "--id",
                       "visit=1..100000000", "tract=0..5000")  # fmt: skip
    assert code == 2 and one_line_error(err, "5001 combinations of tract", "limit of 1000")


def test_disk_rows_match_a_huge_range_without_listing_it(tmp_path):
    root = tmp_path / "HSC"
    root.mkdir()
    (root / "_mapper").write_text("lsst.obs.hsc.HscMapper\n")
    for visit, ccd in ((1228, 0), (1228, 50), (1230, 3)):
        path = root / f"00816/HSC-G/corr/CORR-{visit:07d}-{ccd:03d}.fits"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    repo = Repository(root)
    found, unmatched = repo.match(parse_selections(["visit=1..100000000 ccd=0^3^5 tract=2"]))
    assert [(d["visit"], d["ccd"], d["tract"]) for d in found] == [(1228, 0, 2), (1230, 3, 2)]
    assert [str(u) for u in unmatched] == ["visit=1..100000000 ccd=5 tract=2"]
    with pytest.raises(DataIdError, match="need the registry"):
        repo.match(parse_selections(["field=NGC604"]))


def test_the_commands_take_selections(pristine):
    repo = Repository(pristine, rerun="demo")
    selections = parse_selections(["visit=1228 ccd=0..49 tract=0", "ccd=50 tract=0"])
    full = repo.expand(selections, require_tract=True, allow_missing=True)
    assert [d["ccd"] for d in full] == [0, 50]
    assert full[0] == {"field": "NGC604", "visit": 1228, "ccd": 0, "pointing": 816,
                       "filter": "HSC-G", "tract": 0}  # fmt: skip
    with pytest.raises(DataIdError, match=r"tract is required.*\(visit=1228\)"):
        repo.expand(parse_selections(["visit=1228"]), require_tract=True)
    with pytest.raises(DataIdError, match="no data for visit=1228 ccd=1 tract=0; visit"):
        repo.expand(selections)


# --- properties: a selection is its parse_id list, kept compact ---------------------------

_NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_+.-]{0,8}", fullmatch=True).filter(
    lambda s: ".." not in s
)
_RANGES = st.builds(
    lambda a, n, s: IdRange(a, a + n, s), st.integers(0, 40), st.integers(0, 12),
    st.integers(1, 4),
)  # fmt: skip


def _alternatives(key: str):
    if key in INT_MAX:
        single = st.integers(0, 60) if key != "tract" else st.integers(0, 3)
        return st.lists(st.one_of(single, _RANGES), min_size=1, max_size=3, unique=True)
    return st.lists(st.sampled_from(["HSC-G", "HSC-I", "N921"]), min_size=1, max_size=2,
                    unique=True)  # fmt: skip


@st.composite
def selections(draw, keys=("visit", "ccd", "filter", "pointing", "tract")):
    chosen = draw(st.lists(st.sampled_from(keys), unique=True, max_size=len(keys)))
    return Selection(tuple((k, tuple(draw(_alternatives(k)))) for k in chosen))


_ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "visit": st.integers(0, 60),
            "ccd": st.integers(0, 60),
            "filter": st.sampled_from(["HSC-G", "HSC-I", "N921"]),
        }
    ),
    max_size=12,
    unique_by=lambda r: (r["visit"], r["ccd"]),
)


@given(
    st.lists(st.sampled_from(["visit", "ccd", "pointing", "tract", "filter", "field"]),
             unique=True),
    st.data(),
)  # fmt: skip
def test_selection_text_round_trip(keys, data):
    terms = []
    for key in keys:
        alts = (
            _alternatives(key)
            if key != "field"
            else st.lists(_NAMES, min_size=1, max_size=3, unique=True)
        )
        terms.append((key, tuple(data.draw(alts))))
    selection = Selection(tuple(terms))
    assert parse_selection(str(selection)) == selection
    if selection.size <= 2000:
        assert parse_id(str(selection)) == selection.ids()


@given(selections(), _ROWS)
def test_match_selection_equals_matching_the_listed_ids(selection, rows):
    assume(selection.size <= ENUMERATE_MAX)  # else not listed one by one: below
    assume(selection.project(["pointing", "tract"]).size <= MAX_CARRIED)
    columns = ["visit", "ccd", "filter"]
    expected = match_ids(selection.ids(), rows) if rows else ([], selection.ids())
    assert match_selection(selection, rows, columns) == expected
    with mock.patch.object(idmatch_module, "ENUMERATE_MAX", 0):  # the large-selection way
        matched, unmatched = match_selection(selection, rows, columns)
    assert matched == expected[0]
    for narrow in unmatched:  # each reported part selects none of the rows
        assert not any(narrow.matches(r) for r in rows if selection.matches(r))


@settings(max_examples=40)
@given(selections(keys=("visit", "ccd", "filter", "tract")), _ROWS)
def test_registry_sql_matches_like_python(selection, rows):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "_mapper").write_text("lsst.obs.hsc.HscMapper\n")
        with sqlite3.connect(root / "registry.sqlite3") as db:
            db.execute("CREATE TABLE raw (field TEXT, visit INT, ccd INT, pointing INT, "
                       "filter TEXT)")  # fmt: skip
            db.executemany(
                "INSERT INTO raw VALUES ('F', ?, ?, 7, ?)",
                [(r["visit"], r["ccd"], r["filter"]) for r in rows],
            )
        db.close()
        found, _ = Repository(root).match([selection])
    full = [{"field": "F", **r, "pointing": 7} for r in rows]
    expected, _ = match_selection(selection, full, ["field", "visit", "ccd", "pointing",
                                                    "filter"])  # fmt: skip
    assert found == expected


# --- 3. cluster arguments -----------------------------------------------------------------


def test_smp_cores_beyond_this_machine_are_refused(capsys, pristine):
    cores = available_cores() + 1
    if cores > MAX_CORES:
        pytest.skip("this machine has more CPUs than --cores takes")
    with pytest.raises(ClusterError, match=f"--cores {cores}"):
        ExecutionOptions("smp", cores)
    code, _, err = run(capsys, "catalog", pristine, "--rerun", "demo:x", "--id", "tract=0",
                       "--batch-type", "smp", "--cores", cores)  # fmt: skip
    assert code == 2 and one_line_error(err, f"--cores {cores}", "CPUs")


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--cores", "100000"], "argument --cores: '100000' is not in 1..1024"),
        (["--nodes", "0"], "argument --nodes"),
        (["--time", "nan"], "argument --time"),
        (["--time", "-5"], "argument --time"),
    ],
)
def test_bad_execution_arguments_are_usage_errors(capsys, pristine, argv, reason):
    code, _, err = run(capsys, "catalog", pristine, "--id", "tract=0", *argv)
    assert code == 2 and one_line_error(err, reason)


@pytest.mark.parametrize(("batch", "command"), [("slurm", "sbatch"), ("pbs", "qsub")])
def test_batch_system_without_its_submit_command(capsys, monkeypatch, base, batch, command):
    monkeypatch.setenv("PATH", str(base / "empty"))
    root = base / "g/p/repo"
    start = time.monotonic()
    code, _, err = run(capsys, "catalog", root, "--rerun", "demo:out", "--id", "tract=0",
                       "--no-versions", "--batch-type", batch)  # fmt: skip
    assert code == 2 and one_line_error(err, f"'{command}' is not on PATH")
    assert time.monotonic() - start < 60


def test_unreachable_scheduler_is_a_one_line_error(capsys, monkeypatch, base):
    monkeypatch.setattr("daskcal.runs.cluster.CONNECT_TIMEOUT", 2)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    start = time.monotonic()
    code, _, err = run(capsys, "catalog", base / "g/p/repo", "--rerun", "demo:out", "--id",
                       "tract=0", "--no-versions", "--scheduler", address)  # fmt: skip
    assert code == 2 and one_line_error(err, f"--scheduler {address}", "within 2 s")
    assert time.monotonic() - start < 60


def test_smp_scheduler_and_dashboard_listen_on_localhost_only():
    distributed = pytest.importorskip("distributed")
    with local_cluster(1) as cluster, distributed.Client(cluster):
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        hosts = {s.getsockname()[0] for s in cluster.scheduler.http_server._sockets.values()}
    assert hosts == {"127.0.0.1"}


# --- 4. config files ----------------------------------------------------------------------


def test_config_file_must_be_a_small_regular_utf8_file(capsys, tmp_path, pristine):
    code, _, err = run(capsys, "catalog", pristine, "--id", "tract=0", "-C", "/dev/urandom")
    assert code == 2 and one_line_error(err, "/dev/urandom: not a regular file")
    big = tmp_path / "big.py"
    big.write_bytes(b"#" * (CONFIG_FILE_MAX + 1))
    with pytest.raises(ConfigError, match=f"big.py: {CONFIG_FILE_MAX + 1} bytes, more than"):
        read_config_file(big)
    bad = tmp_path / "bad.py"
    bad.write_bytes(b"config.sipOrder = 3\n\xff\n")
    with pytest.raises(ConfigError, match="bad.py: not UTF-8 text"):
        read_config_file(bad)
    with pytest.raises(ConfigError, match=f"{tmp_path}: not a regular file"):
        read_config_file(tmp_path)
    deep = tmp_path / "deep.py"
    deep.write_text("config.sipOrder = " + "-" * 100_000 + "1\n")
    with pytest.raises(ConfigError, match="deep.py: config sipOrder: value of 100001 characters"):
        read_config_file(deep)
    link = tmp_path / "link.py"
    (tmp_path / "real.py").write_text("config.sipOrder = 3\n")
    link.symlink_to(tmp_path / "real.py")
    assert read_config_file(link).sipOrder == 3


# --- 5. FIFOs and other non-regular inputs ------------------------------------------------

_FIFO_SCRIPT = """
import os, sys
from daskcal.config import ConfigError, read_config_file
from daskcal.io.exposure import exposure_archive, read_exposure, read_rows
from daskcal.io.fitsfile import FitsFileError, open_fits
fifo = sys.argv[1]
os.mkfifo(fifo)
calls = [
    lambda: open_fits(fifo).__enter__(),
    lambda: read_rows(fifo, 1, 0, 1, "float32"),
    lambda: read_exposure(fifo),
    lambda: exposure_archive(fifo).__enter__(),
    lambda: open_fits("/dev/zero").__enter__(),
    lambda: open_fits(os.path.dirname(fifo)).__enter__(),
    lambda: read_config_file(fifo),
]
for call in calls:
    try:
        call()
    except (FitsFileError, ConfigError) as err:
        assert "not a regular file" in str(err), err
        print("refused")
"""


def test_fifos_and_devices_are_refused_without_blocking(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", _FIFO_SCRIPT, str(tmp_path / "calexp.fits")],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["refused"] * 7


def test_symlink_to_a_regular_fits_file_is_read(pristine, tmp_path):
    from daskcal.io.fitsfile import open_fits

    calexp = next(pristine.glob("rerun/demo/00816/HSC-G/corr/CORR-*.fits"))
    (tmp_path / "link.fits").symlink_to(calexp)
    with open_fits(tmp_path / "link.fits") as hdul:
        assert len(hdul) > 3


def test_a_fifo_calexp_fails_its_ccd_and_the_run_ends(base):
    root = base / "g/p/repo"
    calexp = root / "rerun/demo/00816/HSC-G/corr/CORR-0001228-050.fits"
    calexp.unlink()
    os.mkfifo(calexp)
    done = subprocess.run(
        [sys.executable, "-m", "daskcal.cli", "exposure", str(root), "--rerun", "demo:out",
         "--id", "visit=1228", "tract=0", "--no-versions"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if line.split()[2:3] == ["failed"]]
    assert len(failed) == 1 and f"{calexp}: not a regular file" in failed[0]
    assert "Traceback" not in done.stderr


def test_selections_compare_and_hash_by_value():
    a, b = parse_selection("visit=1..5 ccd=2"), parse_selection(["visit=1..5", "ccd=2"])
    assert a == b and len({a, b}) == 1
    assert parse_selections(["visit=1", "visit=1"]) == [parse_selection("visit=1")]
    assert list(itertools.islice(IdRange(0, 10**18), 3)) == [0, 1, 2]
