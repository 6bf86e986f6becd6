"""The ``--id`` grammar of the LSST Gen2 argument parser: parse, format and match data ids.

One ``--id`` value is a list of ``key=value`` tokens. A value is split on ``^`` into
alternatives; an alternative ``A..B`` or ``A..B:S`` (non-negative integers) is the inclusive
range from A to B with stride S. The data ids of one ``--id`` are the cartesian product over
its keys. Integer keys (visit, ccd, pointing, tract) give ints, ``expTime`` gives floats, the
others (field, filter, dateObs, taiObs) stay strings, so ``filter=HSC-I`` is kept as written.
Everything here is pure: no file is opened.

>>> parse_id("visit=1228 ccd=49^50 tract=0")
[{'visit': 1228, 'ccd': 49, 'tract': 0}, {'visit': 1228, 'ccd': 50, 'tract': 0}]
>>> [d["ccd"] for d in parse_id("ccd=0..8:4^100..103")]
[0, 4, 8, 100, 101, 102, 103]
>>> format_id({"tract": 0, "ccd": 49, "visit": 1228, "filter": "HSC-I"})
'visit=1228 ccd=49 tract=0 filter=HSC-I'
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "DataIdError",
    "FLOAT_KEYS",
    "INT_KEYS",
    "KEYS",
    "STR_KEYS",
    "format_id",
    "id_from_path",
    "match_ids",
    "parse_id",
    "parse_ids",
    "sort_ids",
    "template_glob",
    "unique_ids",
]

INT_KEYS = ("visit", "ccd", "pointing", "tract")
STR_KEYS = ("field", "filter", "dateObs", "taiObs")
FLOAT_KEYS = ("expTime",)
KEYS = INT_KEYS + STR_KEYS + FLOAT_KEYS
#: Order of keys in :func:`format_id`; other keys follow, sorted.
FORMAT_ORDER = (
    "visit",
    "ccd",
    "tract",
    "field",
    "pointing",
    "filter",
    "dateObs",
    "taiObs",
    "expTime",
)

_FIELD = re.compile(r"%\((\w+)\)(\d*)([ds])")  # a %(key)05d or %(key)s in a path template
_RANGE = re.compile(r"(\d+)\.\.(\d+)(?::(\d+))?")
_INT = re.compile(r"-?\d+")


class DataIdError(ValueError):
    """A malformed ``--id`` token, or a data id that selects no data."""


def _fail(token: str, reason: str) -> DataIdError:
    return DataIdError(f"--id {token!r}: {reason}")


def _int_values(token: str, alt: str) -> list[int]:
    if ".." not in alt:
        if not _INT.fullmatch(alt):
            raise _fail(token, f"{alt!r} is not an integer")
        return [int(alt)]
    match = _RANGE.fullmatch(alt)
    if match is None:
        raise _fail(token, f"bad range {alt!r} (expected A..B or A..B:S, A and B >= 0)")
    start, stop, stride = (int(g) if g is not None else 1 for g in match.groups())
    if start > stop:
        raise _fail(token, f"empty range {alt!r} (start after end)")
    if stride == 0:
        raise _fail(token, f"range {alt!r} has stride 0")
    return list(range(start, stop + 1, stride))


def _float_value(token: str, alt: str) -> float:
    try:
        value = float(alt)
    except ValueError:
        raise _fail(token, f"{alt!r} is not a number") from None
    if not math.isfinite(value):
        raise _fail(token, f"{alt!r} is not a finite number")
    return value


def _values(token: str, key: str, text: str) -> list[Any]:
    values: list[Any] = []
    for alt in text.split("^"):
        if not alt:
            raise _fail(token, "empty alternative")
        if key in INT_KEYS:
            values.extend(_int_values(token, alt))
        elif ".." in alt:
            raise _fail(token, f"ranges need an integer key ({', '.join(INT_KEYS)})")
        elif key in FLOAT_KEYS:
            values.append(_float_value(token, alt))
        else:
            values.append(alt)
    return list(dict.fromkeys(values))


def parse_id(text: str | Sequence[str]) -> list[dict[str, Any]]:
    """The data ids selected by one ``--id`` value.

    Parameters
    ----------
    text : str or sequence of str
        ``"key=value key=value ..."``, or its tokens as argparse delivers them.
        An empty value selects everything: ``[{}]``.

    Returns
    -------
    list of dict
        The cartesian product over the keys, in the order the keys were given.

    Raises
    ------
    DataIdError
        Unknown key, token without ``=``, empty value, bad range, or a key given twice;
        the message names the offending token.

    Examples
    --------
    >>> parse_id("field=NGC604 filter=HSC-I^HSC-R")
    [{'field': 'NGC604', 'filter': 'HSC-I'}, {'field': 'NGC604', 'filter': 'HSC-R'}]
    >>> parse_id("visit=5..2")
    Traceback (most recent call last):
    ...
    daskcal.dataid.DataIdError: --id 'visit=5..2': empty range '5..2' (start after end)
    """
    tokens = text.split() if isinstance(text, str) else [t for s in text for t in s.split()]
    columns: dict[str, list[Any]] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep:
            raise _fail(token, "expected key=value")
        if key not in KEYS:
            raise _fail(token, f"unknown key {key!r} (known: {', '.join(KEYS)})")
        if key in columns:
            raise _fail(token, f"key {key!r} given twice in one --id")
        if not value:
            raise _fail(token, "empty value")
        columns[key] = _values(token, key, value)
    keys = list(columns)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*columns.values())]


def _identity(dataid: Mapping[str, Any]) -> tuple:
    return tuple(sorted(dataid.items(), key=lambda kv: kv[0]))


def unique_ids(ids: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Data ids with duplicates removed (whatever their key order), first occurrence kept.

    >>> unique_ids([{"visit": 1, "ccd": 2}, {"ccd": 2, "visit": 1}, {"visit": 1}])
    [{'visit': 1, 'ccd': 2}, {'visit': 1}]
    """
    seen: dict[tuple, dict[str, Any]] = {}
    for dataid in ids:
        seen.setdefault(_identity(dataid), dict(dataid))
    return list(seen.values())


def parse_ids(values: Iterable[str | Sequence[str]]) -> list[dict[str, Any]]:
    """The union of several ``--id`` values, duplicates removed, order kept.

    >>> parse_ids(["visit=1 ccd=1^2", "ccd=2 visit=1", "visit=3 ccd=1"])
    [{'visit': 1, 'ccd': 1}, {'visit': 1, 'ccd': 2}, {'visit': 3, 'ccd': 1}]
    """
    return unique_ids(d for value in values for d in parse_id(value))


def _format_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def format_id(dataid: Mapping[str, Any]) -> str:
    """A data id as ``--id`` text, for messages; ``None`` values are left out.

    For a single id with known keys, ``parse_id(format_id(d)) == [d]``.

    >>> format_id({"visit": 1228, "ccd": 49, "tract": 0, "field": None})
    'visit=1228 ccd=49 tract=0'
    """
    order = [k for k in FORMAT_ORDER if k in dataid]
    order += sorted(k for k in dataid if k not in FORMAT_ORDER)
    return " ".join(f"{k}={_format_value(dataid[k])}" for k in order if dataid[k] is not None)


def _sort_key(dataid: Mapping[str, Any]) -> tuple:
    return tuple(-1 if dataid.get(k) is None else dataid[k] for k in ("visit", "ccd", "tract"))


def sort_ids(ids: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Unique data ids sorted by (visit, ccd, tract).

    >>> sort_ids([{"visit": 2, "ccd": 0}, {"visit": 1, "ccd": 5}, {"visit": 2, "ccd": 0}])
    [{'visit': 1, 'ccd': 5}, {'visit': 2, 'ccd': 0}]
    """
    return sorted(unique_ids(ids), key=_sort_key)


def match_ids(
    ids: Iterable[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Expand partial data ids against full rows (e.g. the registry's ``raw`` table).

    An id matches a row when they agree on every key the rows have; keys the rows lack
    (``tract``) are carried into the result.

    Parameters
    ----------
    ids : iterable of dict
        Partial data ids.
    rows : sequence of dict
        Full data ids, all with the same keys.

    Returns
    -------
    matched : list of dict
        Full ids (row keys + carried keys), unique, sorted by (visit, ccd, tract).
    unmatched : list of dict
        The ids that matched no row, in the order given.

    Examples
    --------
    >>> rows = [{"visit": 1, "ccd": 0}, {"visit": 1, "ccd": 1}, {"visit": 2, "ccd": 0}]
    >>> match_ids([{"ccd": 0, "tract": 9}, {"visit": 3}], rows)
    ([{'visit': 1, 'ccd': 0, 'tract': 9}, {'visit': 2, 'ccd': 0, 'tract': 9}], [{'visit': 3}])
    """
    row_keys = set(rows[0]) if rows else set()
    indexes: dict[tuple[str, ...], dict[tuple, list[Mapping[str, Any]]]] = {}
    matched: list[dict[str, Any]] = []
    unmatched: list[dict[str, Any]] = []
    for dataid in ids:
        keys = tuple(k for k in dataid if k in row_keys)
        if keys not in indexes:
            index: dict[tuple, list[Mapping[str, Any]]] = {}
            for row in rows:
                index.setdefault(tuple(row[k] for k in keys), []).append(row)
            indexes[keys] = index
        found = indexes[keys].get(tuple(dataid[k] for k in keys), [])
        carried = {k: v for k, v in dataid.items() if k not in row_keys}
        matched.extend({**row, **carried} for row in found)
        if not found:
            unmatched.append(dict(dataid))
    return sort_ids(matched), unmatched


def template_glob(template: str) -> str:
    """A glob pattern for the paths of a template (every field becomes ``*``).

    >>> template_glob("%(pointing)05d/%(filter)s/corr/CORR-%(visit)07d-%(ccd)03d.fits")
    '*/*/corr/CORR-*-*.fits'
    """
    return _FIELD.sub("*", template)


def id_from_path(template: str, path: str) -> dict[str, Any] | None:
    """The data id a path was made from with a template, or None if it does not fit.

    Integer fields (``%d``) become ints, ``%s`` fields strings without ``/``.

    >>> id_from_path("%(filter)s/SRC-%(visit)07d-%(ccd)03d.fits", "HSC-I/SRC-0903986-031.fits")
    {'filter': 'HSC-I', 'visit': 903986, 'ccd': 31}
    >>> id_from_path("%(filter)s/SRC-%(visit)07d-%(ccd)03d.fits", "HSC-I/BKGD-0903986-031.fits")
    """
    parts = _FIELD.split(template)  # literal, then (key, width, kind, literal) per field
    pattern = re.escape(parts[0])
    for key, kind, literal in zip(parts[1::4], parts[3::4], parts[4::4], strict=True):
        pattern += (rf"(?P<{key}>\d+)" if kind == "d" else rf"(?P<{key}>[^/]+)") + re.escape(
            literal
        )
    match = re.fullmatch(pattern, path)
    if match is None:
        return None
    kinds = dict(zip(parts[1::4], parts[3::4], strict=True))
    return {k: int(v) if kinds[k] == "d" else v for k, v in match.groupdict().items()}
