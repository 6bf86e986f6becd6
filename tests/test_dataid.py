"""The --id grammar: ranges, strides, alternatives, products, unions, errors, round trips."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daskcal.dataid import INT_KEYS, STR_KEYS, DataIdError, format_id, parse_id, parse_ids
from daskcal.idmatch import id_from_path, match_ids, sort_ids, template_glob
from daskcal.repo import TEMPLATES


def test_tutorial_id_is_a_product_of_103_ccds():
    ids = parse_id("field=NGC604 tract=0 ccd=0..8^10..103")
    assert [d["ccd"] for d in ids] == [*range(0, 9), *range(10, 104)]
    assert all(d == {"field": "NGC604", "tract": 0, "ccd": d["ccd"]} for d in ids)
    assert all(type(d["ccd"]) is int and type(d["tract"]) is int for d in ids)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("visit=0..10:5", [0, 5, 10]),
        ("visit=1..10:4", [1, 5, 9]),
        ("visit=7..7", [7]),
        ("visit=3^1^2", [3, 1, 2]),
        ("visit=1^1..3", [1, 2, 3]),  # repeated values are kept once
        ("visit=1228^1230..1234:2", [1228, 1230, 1232, 1234]),
    ],
)
def test_ranges_strides_alternatives(text, expected):
    assert [d["visit"] for d in parse_id(text)] == expected


def test_string_keys_are_not_mangled():
    ids = parse_id("filter=HSC-I^HSC-R2^N921 field=123")
    assert [d["filter"] for d in ids] == ["HSC-I", "HSC-R2", "N921"]
    assert ids[0]["field"] == "123"  # integer-looking, but field is a string key
    assert parse_id("dateObs=2015-01-20 taiObs=2015-01-20T10:00:00.000") == [
        {"dateObs": "2015-01-20", "taiObs": "2015-01-20T10:00:00.000"}
    ]
    assert parse_id("expTime=30") == [{"expTime": 30.0}]


def test_product_order_and_key_order():
    ids = parse_id("visit=1^2 ccd=3^4 filter=HSC-G")
    assert [(d["visit"], d["ccd"]) for d in ids] == [(1, 3), (1, 4), (2, 3), (2, 4)]
    assert list(ids[0]) == ["visit", "ccd", "filter"]


def test_tokens_as_argparse_gives_them_and_empty_id():
    assert parse_id(["visit=1", "ccd=2^3"]) == parse_id("visit=1 ccd=2^3")
    assert parse_id("") == [{}]
    assert parse_id([]) == [{}]


def test_union_of_several_ids():
    ids = parse_ids(["visit=1 ccd=0..2", "ccd=2^3 visit=1", "visit=2 ccd=0"])
    assert [(d["visit"], d["ccd"]) for d in ids] == [(1, 0), (1, 1), (1, 2), (1, 3), (2, 0)]


@pytest.mark.parametrize(
    ("text", "token", "reason"),
    [
        ("visit=1 ccd", "ccd", "expected key=value"),
        ("=5", "=5", "unknown key"),
        ("foo=1 visit=2", "foo=1", "unknown key 'foo'"),
        ("visit=", "visit=", "empty value"),
        ("visit=5..2", "visit=5..2", "empty range"),
        ("visit=1..x", "visit=1..x", "bad range"),
        ("ccd=1...3", "ccd=1...3", "bad range"),
        ("ccd=-1..3", "ccd=-1..3", "bad range"),
        ("ccd=1..5:0", "ccd=1..5:0", "stride 0"),
        ("visit=1 ccd=2 visit=3", "visit=3", "given twice"),
        ("ccd=1^^2", "ccd=1^^2", "empty alternative"),
        ("visit=12a", "visit=12a", "not an integer"),
        ("tract=0.5", "tract=0.5", "not an integer"),
        ("filter=HSC-I..HSC-R", "filter=HSC-I..HSC-R", "integer key"),
        ("expTime=fast", "expTime=fast", "not a number"),
        ("expTime=nan", "expTime=nan", "not a finite number"),
    ],
)
def test_errors_name_the_token(text, token, reason):
    with pytest.raises(DataIdError) as info:
        parse_id(text)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert repr(token) in message and reason in message
    assert "\n" not in message


def test_parse_ids_reports_the_bad_value():
    with pytest.raises(DataIdError, match="'ccd=9..1'"):
        parse_ids(["visit=1", "visit=2 ccd=9..1"])


def test_format_id_order_and_none():
    assert format_id({"tract": 0, "ccd": 49, "visit": 1228}) == "visit=1228 ccd=49 tract=0"
    full = {"field": None, "visit": 1228, "ccd": 49, "pointing": 816, "filter": "HSC-I"}
    assert format_id(full) == "visit=1228 ccd=49 pointing=816 filter=HSC-I"
    assert format_id({}) == ""


def test_match_ids_carries_tract_and_reports_unmatched():
    rows = [
        {"visit": v, "ccd": c, "filter": f}
        for v, f in ((1228, "HSC-I"), (1240, "HSC-R"))
        for c in (0, 1, 2)
    ]
    ids = [{"filter": "HSC-R", "ccd": 2, "tract": 0}, {"ccd": 0}, {"visit": 9, "ccd": 0}]
    matched, unmatched = match_ids(ids, rows)
    assert matched == [
        {"visit": 1228, "ccd": 0, "filter": "HSC-I"},
        {"visit": 1240, "ccd": 0, "filter": "HSC-R"},
        {"visit": 1240, "ccd": 2, "filter": "HSC-R", "tract": 0},
    ]
    assert unmatched == [{"visit": 9, "ccd": 0}]
    assert match_ids([{"visit": 1}], []) == ([], [{"visit": 1}])


def test_sort_ids_orders_by_visit_ccd_tract():
    ids = [{"visit": 2, "ccd": 1, "tract": 1}, {"visit": 2, "ccd": 1, "tract": 0}, {"visit": 1}]
    assert sort_ids(ids) == [ids[2], ids[1], ids[0]]


def test_template_glob_and_path_parsing():
    template = TEMPLATES["jointcal_wcs"]
    assert template_glob(template) == "jointcal-results/*/*/jointcal_wcs-*-*.fits"
    found = id_from_path(template, "jointcal-results/HSC-R/9615/jointcal_wcs-0023900-049.fits")
    assert found == {"filter": "HSC-R", "tract": 9615, "visit": 23900, "ccd": 49}
    assert id_from_path(template, "jointcal-results/HSC-R/9615/x/jointcal_wcs-1-2.fits") is None


# --- properties ---------------------------------------------------------------------------

_WORD = st.text(
    alphabet=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcz0123456789-_.+:"), min_size=1
).filter(lambda s: ".." not in s)
_VALUES = {
    **dict.fromkeys(INT_KEYS, st.integers(min_value=-(10**6), max_value=10**9)),
    **dict.fromkeys(STR_KEYS, _WORD),
    "expTime": st.floats(allow_nan=False, allow_infinity=False),
}


@st.composite
def data_ids(draw):
    keys = draw(st.lists(st.sampled_from(sorted(_VALUES)), unique=True, max_size=6))
    return {k: draw(_VALUES[k]) for k in keys}


@given(data_ids())
def test_format_parse_round_trip(dataid):
    assert parse_id(format_id(dataid)) == [dataid]


@given(st.integers(0, 500), st.integers(0, 500), st.integers(1, 50), st.sampled_from(INT_KEYS))
def test_range_equals_python_range(start, length, stride, key):
    ids = parse_id(f"{key}={start}..{start + length}:{stride}")
    assert [d[key] for d in ids] == list(range(start, start + length + 1, stride))


@given(st.lists(st.lists(st.integers(0, 20), min_size=1, max_size=4), min_size=1, max_size=4))
def test_union_is_ordered_set_of_products(alternatives):
    values = [f"visit={'^'.join(map(str, alts))} ccd=1" for alts in alternatives]
    expected = list(dict.fromkeys(itertools.chain.from_iterable(alternatives)))
    assert [d["visit"] for d in parse_ids(values)] == expected


@given(
    st.sampled_from(sorted(TEMPLATES)),
    st.fixed_dictionaries(
        {
            "visit": st.integers(0, 10**7),
            "ccd": st.integers(0, 111),
            "pointing": st.integers(0, 99999),
            "tract": st.integers(0, 20000),
            "filter": _WORD.filter(lambda s: "/" not in s),
        }
    ),
)
def test_path_round_trip(dataset, dataid):
    template = TEMPLATES[dataset]
    found = id_from_path(template, template % dataid)
    assert found == {k: v for k, v in dataid.items() if f"%({k})" in template}
