"""Repository: path templates, rerun chains, IN:OUT, refusals, registry and disk expansion."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from daskcal.dataid import DataIdError, parse_id, parse_ids
from daskcal.idmatch import id_from_path
from daskcal.repo import TEMPLATES, TRACT_DATASETS, Repository, RepositoryError

JOINTCAL = "lsst/jointcal/tests/data/output/HSC-R/9615"
RAW = ("field", "visit", "ccd", "pointing", "filter", "dateObs", "taiObs", "expTime")
GEN2_CFG = """!RepositoryCfg_v1
_mapper: &id001 !!python/name:lsst.obs.hsc.hscMapper.HscMapper ''
_mapperArgs: {{}}
_parents:
- !RepositoryCfg_v1
  _mapper: *id001
  _mapperArgs: {{}}
  _parents: []
  _policy: null
  _root: {parent}
  dirty: true
_policy: null
_root: null
dirty: true
"""


def make_root(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "_mapper").write_text("lsst.obs.hsc.HscMapper\n")
    return path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_registry(path: Path, rows: list[tuple]) -> Path:
    columns = ", ".join(RAW)
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE raw (id INTEGER PRIMARY KEY, {columns}, UNIQUE(visit, ccd))")
        db.executemany(f"INSERT INTO raw ({columns}) VALUES ({','.join('?' * len(RAW))})", rows)
    db.close()
    return path


def raw_rows() -> list[tuple]:
    """Two fields, two filters, four visits; visit 1230 lacks ccd 3."""
    rows = []
    for field, visit, pointing, filt in [
        ("SSP_UDEEP_COSMOS", 1228, 816, "HSC-I"),
        ("SSP_UDEEP_COSMOS", 1230, 816, "HSC-I"),
        ("SSP_UDEEP_COSMOS", 1240, 817, "HSC-R"),
        ("NGC604", 23900, 1000, "HSC-R"),
    ]:
        for ccd in range(4) if visit != 1230 else range(3):
            rows.append((field, visit, ccd, pointing, filt, "2015-01-20", "2015-01-20T10:00:00",
                         30.0 if visit != 23900 else 150.0))  # fmt: skip
    return rows


@pytest.fixture
def registry_repo(tmp_path) -> Repository:
    root = make_root(tmp_path / "HSC")
    write_registry(root / "registry.sqlite3", raw_rows())
    return Repository(root)


ID = {"visit": 903986, "ccd": 31, "pointing": 1116, "filter": "HSC-I", "tract": 9615}


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ("calexp", "01116/HSC-I/corr/CORR-0903986-031.fits"),
        ("calexpBackground", "01116/HSC-I/corr/BKGD-0903986-031.fits"),
        ("skyCorr", "01116/HSC-I/corr/skyCorr-0903986-031.fits"),
        ("src", "01116/HSC-I/output/SRC-0903986-031.fits"),
        ("jointcal_wcs", "jointcal-results/HSC-I/9615/jointcal_wcs-0903986-031.fits"),
        (
            "jointcal_photoCalib",
            "jointcal-results/HSC-I/9615/jointcal_photoCalib-0903986-031.fits",
        ),
        ("fgcm_photoCalib", "fgcm-results/HSC-I/fgcm_photoCalib-903986-031.fits"),
        ("fgcm_tract_photoCalib", "fgcm-results/HSC-I/9615/fgcm_photoCalib-903986-031.fits"),
        ("calibrated_exp", "calibrated/9615/01116/HSC-I/CALEXP-0903986-031.fits"),
        ("calibrated_src", "calibrated/9615/01116/HSC-I/CALSRC-0903986-031.fits"),
    ],
)
def test_templates(tmp_path, dataset, expected):
    repo = Repository(make_root(tmp_path), rerun="test")
    assert repo.relative_path(dataset, ID) == Path(expected)
    assert repo.output_path(dataset, ID) == tmp_path / "rerun" / "test" / expected


def test_fgcm_visit_is_five_wide():
    dataid = {"visit": 1228, "ccd": 5, "filter": "HSC-G", "tract": 0}
    assert (
        TEMPLATES["fgcm_photoCalib"] % dataid
        == "fgcm-results/HSC-G/fgcm_photoCalib-01228-005.fits"
    )
    assert set(TRACT_DATASETS) == {
        "jointcal_wcs", "jointcal_photoCalib", "fgcm_tract_photoCalib",
        "calibrated_exp", "calibrated_src",
    }  # fmt: skip


def test_real_jointcal_file_names_fit_the_template(real_dir):
    names = sorted(p.name for p in (real_dir / JOINTCAL).glob("jointcal_wcs-*.fits"))
    assert len(names) == 12
    for name in names:
        dataid = id_from_path(TEMPLATES["jointcal_wcs"], f"jointcal-results/HSC-R/9615/{name}")
        assert dataid["tract"] == 9615 and dataid["visit"] in (23900, 23924, 28976)
        assert (
            Repository.template("jointcal_wcs") % dataid == f"jointcal-results/HSC-R/9615/{name}"
        )


def test_missing_key_and_unknown_dataset(tmp_path):
    repo = Repository(make_root(tmp_path))
    with pytest.raises(DataIdError, match=r"jointcal_wcs needs tract= \(visit=1 ccd=2"):
        repo.find("jointcal_wcs", {"visit": 1, "ccd": 2, "filter": "HSC-I"})
    with pytest.raises(RepositoryError, match="unknown dataset 'calexpp'"):
        repo.template("calexpp")


def test_not_a_repository(tmp_path):
    with pytest.raises(RepositoryError, match=f"{tmp_path}.*no _mapper"):
        Repository(tmp_path)
    with pytest.raises(RepositoryError, match="does not exist"):
        Repository(tmp_path / "nowhere")


def test_lookup_order_rerun_then_gen2_cfg_parent_then_root(tmp_path):
    root = make_root(tmp_path / "HSC")
    shared = make_root(tmp_path / "shared")  # another repository, parent of rerun "a"
    rerun = root / "rerun" / "a"
    rerun.mkdir(parents=True)
    (rerun / "repositoryCfg.yaml").write_text(GEN2_CFG.format(parent=shared))
    for base in (rerun, shared, root):
        touch(base / "01116/HSC-I/corr/CORR-0903986-031.fits")
    touch(shared / "01116/HSC-I/output/SRC-0903986-031.fits")
    touch(root / "01116/HSC-I/output/SRC-0903986-031.fits")
    touch(root / "01116/HSC-I/corr/skyCorr-0903986-031.fits")
    repo = Repository(root, rerun="a")
    assert repo.input_dirs == [rerun, shared, root]
    assert repo.find("calexp", ID) == rerun / "01116/HSC-I/corr/CORR-0903986-031.fits"
    assert repo.find("src", ID) == shared / "01116/HSC-I/output/SRC-0903986-031.fits"
    assert repo.find("skyCorr", ID) == root / "01116/HSC-I/corr/skyCorr-0903986-031.fits"
    assert repo.find("fgcm_photoCalib", ID) is None and not repo.exists("fgcm_photoCalib", ID)
    expected = rerun / "fgcm-results/HSC-I/fgcm_photoCalib-903986-031.fits"
    assert repo.input_path("fgcm_photoCalib", ID) == expected
    assert repo.output_dir == rerun


def test_relative_parents_and_legacy_parent_symlink_recursively(tmp_path):
    root = make_root(tmp_path / "HSC")
    for name in ("a", "b", "c"):
        (root / "rerun" / name).mkdir(parents=True)
    # c -> b by a relative path in plain YAML; b -> a by a legacy _parent symlink
    (root / "rerun/c/repositoryCfg.yaml").write_text("_parents: ['../b']\n")
    (root / "rerun/b/_parent").symlink_to("../a")
    touch(root / "rerun/a/01116/HSC-I/output/SRC-0903986-031.fits")
    repo = Repository(root, rerun="c")
    assert [p.name for p in repo.input_dirs] == ["c", "b", "a", "HSC"]
    assert repo.find("src", ID) == root / "rerun/a/01116/HSC-I/output/SRC-0903986-031.fits"


def test_parent_cycle_terminates(tmp_path):
    root = make_root(tmp_path / "HSC")
    for name, parent in (("a", "../b"), ("b", "../a")):
        (root / "rerun" / name).mkdir(parents=True)
        (root / "rerun" / name / "repositoryCfg.yaml").write_text(f"_parents: [{parent}]\n")
    assert [p.name for p in Repository(root, rerun="a").input_dirs] == ["a", "b", "HSC"]


def test_bad_parents_are_reported(tmp_path):
    root = make_root(tmp_path / "HSC")
    (root / "rerun/a").mkdir(parents=True)
    cfg = root / "rerun/a/repositoryCfg.yaml"
    cfg.write_text("_parents: [../gone]\n")
    with pytest.raises(RepositoryError, match="parent repository .*gone does not exist"):
        Repository(root, rerun="a")
    cfg.write_text("_parents: [unclosed\n")
    with pytest.raises(RepositoryError, match="unreadable YAML"):
        Repository(root, rerun="a")


def test_in_out_reads_in_writes_out_and_records_parent(tmp_path):
    root = make_root(tmp_path / "HSC")
    src = touch(root / "rerun/in/01116/HSC-I/output/SRC-0903986-031.fits")
    repo = Repository(root, rerun="in:out")
    assert repo.input_dir == root / "rerun/in" and repo.output_dir == root / "rerun/out"
    assert repo.find("src", ID) == src
    assert repo.output_path("calibrated_src", ID).is_relative_to(root / "rerun/out")
    assert repo.find("calibrated_src", ID) is None
    repo.ensure_output()
    assert "../in" in (root / "rerun/out/repositoryCfg.yaml").read_text()
    # a later --rerun out finds in's inputs through the recorded parent, outputs in out
    done = touch(repo.output_path("calibrated_src", ID))
    later = Repository(root, rerun="out")
    assert later.find("src", ID) == src and later.find("calibrated_src", ID) == done
    assert Repository(root, rerun="in:out").find("calibrated_src", ID) == done


def test_in_out_refusals(tmp_path):
    root = make_root(tmp_path / "HSC")
    with pytest.raises(RepositoryError, match="input rerun 'in' does not exist"):
        Repository(root, rerun="in:out")
    (root / "rerun/in").mkdir(parents=True)
    (root / "rerun/other").mkdir()
    (root / "rerun/out").mkdir()
    (root / "rerun/out/repositoryCfg.yaml").write_text("_parents: [../other]\n")
    with pytest.raises(RepositoryError, match="'out' was made from other inputs"):
        Repository(root, rerun="in:out")


@pytest.mark.parametrize("rerun", ["../x", "a/../../x", "x:../y", "", "/etc", ":out"])
def test_escaping_reruns_are_refused(tmp_path, rerun):
    with pytest.raises(RepositoryError, match="rerun"):
        Repository(make_root(tmp_path / "HSC"), rerun=rerun)


def test_absolute_rerun_inside_the_repository_is_accepted(tmp_path):
    root = make_root(tmp_path / "HSC")
    assert Repository(root, rerun=str(root / "rerun/u/test")).output_dir == root / "rerun/u/test"


# --- expansion: registry ------------------------------------------------------------------


def test_registry_expands_field_to_sorted_full_ids(registry_repo):
    ids = registry_repo.expand(parse_id("field=SSP_UDEEP_COSMOS tract=0"))
    assert [(d["visit"], d["ccd"]) for d in ids] == [
        (1228, 0), (1228, 1), (1228, 2), (1228, 3), (1230, 0), (1230, 1), (1230, 2),
        (1240, 0), (1240, 1), (1240, 2), (1240, 3),
    ]  # fmt: skip
    assert ids[-1] == {
        "field": "SSP_UDEEP_COSMOS", "visit": 1240, "ccd": 3, "pointing": 817,
        "filter": "HSC-R", "tract": 0,
    }  # fmt: skip


def test_registry_union_filters_and_registry_only_keys(registry_repo):
    ids = registry_repo.expand(
        parse_ids(["filter=HSC-R ccd=1^2", "visit=1240 ccd=2", "expTime=150"])
    )
    assert [(d["visit"], d["ccd"]) for d in ids] == [
        (1240, 1), (1240, 2), (23900, 0), (23900, 1), (23900, 2), (23900, 3),
    ]  # fmt: skip
    assert len(registry_repo.expand(parse_id("dateObs=2015-01-20"))) == 15
    assert registry_repo.expand([{}]) == registry_repo.expand(parse_id("ccd=0..3"))


def test_registry_missing_ids_are_named(registry_repo):
    partial = parse_id("visit=1230 ccd=2..3 tract=0")
    with pytest.raises(DataIdError, match="no data for visit=1230 ccd=3 tract=0$"):
        registry_repo.expand(partial)
    assert [d["ccd"] for d in registry_repo.expand(partial, allow_missing=True)] == [2]
    found, unmatched = registry_repo.match(parse_id("visit=1..5"))
    assert found == [] and len(unmatched) == 5
    with pytest.raises(DataIdError, match="visit=1; visit=2; visit=3 and 2 more"):
        registry_repo.expand(parse_id("visit=1..5"))


def test_require_tract(registry_repo):
    with pytest.raises(DataIdError, match="tract is required.*field=NGC604"):
        registry_repo.expand(parse_id("field=NGC604"), require_tract=True)
    assert len(registry_repo.expand(parse_id("field=NGC604 tract=1"), require_tract=True)) == 4


def test_one_query_per_id_not_per_ccd(registry_repo, monkeypatch):
    statements = []
    connect = sqlite3.connect

    def traced(*args, **kwargs):
        db = connect(*args, **kwargs)
        db.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr("daskcal.repo.sqlite3.connect", traced)
    ids = registry_repo.expand(parse_id("field=NGC604 ccd=0..103 tract=0"), allow_missing=True)
    assert len(ids) == 4
    assert sum(s.lstrip().upper().startswith("SELECT") for s in statements) == 1


def test_long_value_lists_are_filtered_after_the_query(registry_repo):
    ids = registry_repo.expand(parse_id("visit=0..30000 ccd=1"), allow_missing=True)
    assert [d["visit"] for d in ids] == [1228, 1230, 1240, 23900]


def test_registry_without_needed_column(tmp_path):
    root = make_root(tmp_path)
    with sqlite3.connect(root / "registry.sqlite3") as db:
        db.execute("CREATE TABLE raw (visit INT, ccd INT)")
    db.close()
    with pytest.raises(RepositoryError, match="registry.sqlite3: no such column"):
        Repository(root).expand([{}])


# --- expansion: files on disk ---------------------------------------------------------------


def test_disk_scan_expansion_across_the_chain(tmp_path):
    root = make_root(tmp_path / "HSC")
    touch(root / "rerun/a/01116/HSC-I/corr/CORR-0903986-031.fits")
    touch(root / "rerun/a/01116/HSC-I/output/SRC-0903986-031.fits")
    touch(root / "rerun/a/01116/HSC-I/output/SRC-0903986-032.fits")
    touch(root / "01000/HSC-R/corr/CORR-0023900-049.fits")
    touch(root / "01000/HSC-R/corr/BKGD-0023924-049.fits")  # not a calexp: ignored
    repo = Repository(root, rerun="a")
    assert repo.registry is None
    assert repo.expand([{}]) == [
        {"field": None, "visit": 23900, "ccd": 49, "pointing": 1000, "filter": "HSC-R"},
        {"field": None, "visit": 903986, "ccd": 31, "pointing": 1116, "filter": "HSC-I"},
        {"field": None, "visit": 903986, "ccd": 32, "pointing": 1116, "filter": "HSC-I"},
    ]
    assert [d["ccd"] for d in repo.expand(parse_id("filter=HSC-I tract=3"))] == [31, 32]
    with pytest.raises(DataIdError, match="field=NGC604: .*need the registry"):
        repo.expand(parse_id("field=NGC604"))


def test_tracts_on_disk(tmp_path):
    root = make_root(tmp_path / "HSC")
    touch(root / "rerun/a/jointcal-results/HSC-R/9615/jointcal_wcs-0023900-049.fits")
    touch(root / "jointcal-results/HSC-I/8766/jointcal_photoCalib-0011506-049.fits")
    touch(root / "fgcm-results/HSC-I/0000/fgcm_photoCalib-11506-049.fits")
    touch(root / "fgcm-results/HSC-I/fgcm_photoCalib-11506-049.fits")  # not a tract folder
    assert Repository(root, rerun="a").tracts() == {"HSC-I": [0, 8766], "HSC-R": [9615]}


def test_root_parent_supplies_registry_and_inputs(tmp_path):
    shared = make_root(tmp_path / "shared")
    write_registry(shared / "registry.sqlite3", raw_rows())
    calexp = touch(shared / "00816/HSC-I/corr/CORR-0001228-002.fits")
    root = make_root(tmp_path / "HSC")
    (root / "_parent").symlink_to(shared)
    repo = Repository(root, rerun="mine")
    assert repo.input_dirs == [root / "rerun/mine", root, shared]
    assert repo.registry == shared / "registry.sqlite3"
    (dataid,) = repo.expand(parse_id("visit=1228 ccd=2 tract=0"))
    assert repo.find("calexp", dataid) == calexp
