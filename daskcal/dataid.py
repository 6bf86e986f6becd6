"""The ``--id`` grammar of the LSST Gen2 argument parser: parse, format and match data ids.

One ``--id`` value is a list of ``key=value`` tokens. A value is split on ``^`` into
alternatives; an alternative ``A..B`` or ``A..B:S`` (non-negative integers) is the inclusive
range from A to B with stride S. The data ids of one ``--id`` are the cartesian product over
its keys. Integer keys (visit, ccd, pointing, tract) give ints, ``expTime`` gives floats, the
others (field, filter, dateObs, taiObs) stay strings, so ``filter=HSC-I`` is kept as written.
Everything here is pure: no file is opened.

:func:`parse_id` lists every data id of an ``--id`` (up to :data:`MAX_IDS`);
:func:`parse_selection` keeps it compact (per key its values and ranges) and checks every
value against what the HscMapper's paths can hold (:func:`value_problem`), so that
``visit=1..100000000`` costs no more than its text and ``filter=../x`` is refused.

>>> parse_id("visit=1228 ccd=49^50 tract=0")
[{'visit': 1228, 'ccd': 49, 'tract': 0}, {'visit': 1228, 'ccd': 50, 'tract': 0}]
>>> [d["ccd"] for d in parse_id("ccd=0..8:4^100..103")]
[0, 4, 8, 100, 101, 102, 103]
>>> format_id({"tract": 0, "ccd": 49, "visit": 1228, "filter": "HSC-I"})
'visit=1228 ccd=49 tract=0 filter=HSC-I'

Why one module of more than ~300 lines: the grammar, the value rules and ``Selection`` (the
compact form of a parsed ``--id``) are one language; matching ids lives in
:mod:`daskcal.idmatch`.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DataIdError",
    "FLOAT_KEYS",
    "INT_KEYS",
    "INT_MAX",
    "IdRange",
    "KEYS",
    "MAX_IDS",
    "NAME_KEYS",
    "STR_KEYS",
    "Selection",
    "check_id",
    "format_id",
    "parse_id",
    "parse_ids",
    "parse_selection",
    "parse_selections",
    "unique_ids",
    "value_problem",
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

_RANGE = re.compile(r"(\d+)\.\.(\d+)(?::(\d+))?")
_INT = re.compile(r"-?\d+")

#: Largest value of each integer key: what the path templates' fields hold (visit %07d,
#: ccd %03d, pointing %05d); tract is %04d but HSC's rings skymap numbers tracts up to
#: 18937, so five digits are allowed.
INT_MAX = {"visit": 9_999_999, "ccd": 999, "pointing": 99_999, "tract": 99_999}
#: String keys that become folder names (filter) or select rows (field): checked against
#: :data:`NAME_PATTERN`.
NAME_KEYS = ("field", "filter")
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_+.-]*"
_NAME = re.compile(NAME_PATTERN)
_NAME_MAX = 64
_DIGITS_MAX = 18  # an int64 holds every integer of 18 digits
#: Most data ids :func:`parse_id` lists for one ``--id``.
MAX_IDS = 1_000_000
#: Most values of the keys a registry row lacks (tract), per ``--id``: each is a data id
#: per matched row.
MAX_CARRIED = 1000
#: Selections up to this many ids report their unmatched ids one by one.
ENUMERATE_MAX = 10_000


class DataIdError(ValueError):
    """A malformed ``--id`` token, or a data id that selects no data."""


def _fail(token: str, reason: str) -> DataIdError:
    return DataIdError(f"--id {token!r}: {reason}")


def value_problem(key: str, value: Any) -> str | None:
    """Why a value cannot be the ``key`` of a data id, or None when it can.

    Integer keys take non-negative ints up to :data:`INT_MAX`; ``filter`` and ``field``
    take names of :data:`NAME_PATTERN` (at most 64 characters, no ``..``); ``expTime``
    takes finite numbers; the other keys any non-empty string.

    >>> value_problem("visit", 1228) is None, value_problem("filter", "HSC-I") is None
    (True, True)
    >>> value_problem("filter", "../../tmp")
    "filter '../../tmp' is not a name of [A-Za-z0-9][A-Za-z0-9_+.-]* without '..'"
    >>> value_problem("ccd", 1000)
    'ccd 1000 is outside 0..999'
    """
    if key in INT_MAX:
        if type(value) is not int:
            return f"{key} {_short(value)} is not an integer"
        if not 0 <= value <= INT_MAX[key]:
            return f"{key} {value} is outside 0..{INT_MAX[key]}"
        return None
    if key in FLOAT_KEYS:
        if type(value) not in (int, float) or not math.isfinite(value):
            return f"{key} {_short(value)} is not a finite number"
        return None
    if not isinstance(value, str) or not value:
        return f"{key} {_short(value)} is not a non-empty string"
    if key in NAME_KEYS and (
        len(value) > _NAME_MAX or ".." in value or not _NAME.fullmatch(value)
    ):
        return f"{key} {_short(value)} is not a name of {NAME_PATTERN} without '..'"
    return None


def _short(value: Any, limit: int = 40) -> str:
    """``repr`` of a value, cut to ``limit`` characters (one line whatever it holds)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_id(dataid: Mapping[str, Any]) -> str | None:
    """The first problem of a data id's values (:func:`value_problem`), or None.

    Only the keys it has are checked; ``field`` may be None (ids read from file names).

    >>> check_id({"visit": 1228, "ccd": 49, "filter": "HSC-I", "field": None}) is None
    True
    >>> check_id({"visit": "12x", "ccd": 49})
    "visit '12x' is not an integer"
    """
    for key, value in dataid.items():
        if key == "field" and value is None:
            continue
        if key in INT_MAX or key in FLOAT_KEYS or key in STR_KEYS:
            problem = value_problem(key, value)
            if problem is not None:
                return problem
    return None


@dataclass(frozen=True)
class IdRange:
    """The integers ``start, start + step, ...`` up to ``stop`` inclusive: ``A..B:S``.

    Never materialised: membership and size are arithmetic.

    >>> r = IdRange(0, 100_000_000, 4)
    >>> 8 in r, 9 in r, r.count, str(r)
    (True, False, 25000001, '0..100000000:4')
    """

    start: int
    stop: int
    step: int = 1

    @property
    def count(self) -> int:
        """How many integers the range holds."""
        return (self.stop - self.start) // self.step + 1

    def __contains__(self, value: object) -> bool:
        return (
            type(value) is int
            and self.start <= value <= self.stop
            and (value - self.start) % self.step == 0
        )

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop + 1, self.step))

    def __str__(self) -> str:
        return f"{self.start}..{self.stop}" + (f":{self.step}" if self.step != 1 else "")


def _integer(token: str, digits: str) -> int:
    if len(digits.lstrip("-")) > _DIGITS_MAX:
        raise _fail(token, f"{_short(digits)} has more than {_DIGITS_MAX} digits")
    return int(digits)


def _int_alternative(token: str, key: str, alt: str, validate: bool) -> int | IdRange:
    if ".." not in alt:
        if not _INT.fullmatch(alt):
            raise _fail(token, f"{alt!r} is not an integer")
        value = _integer(token, alt)
        if validate and (problem := value_problem(key, value)) is not None:
            raise _fail(token, problem)
        return value
    match = _RANGE.fullmatch(alt)
    if match is None:
        raise _fail(token, f"bad range {alt!r} (expected A..B or A..B:S, A and B >= 0)")
    start, stop, stride = (_integer(token, g) if g is not None else 1 for g in match.groups())
    if start > stop:
        raise _fail(token, f"empty range {alt!r} (start after end)")
    if stride == 0:
        raise _fail(token, f"range {alt!r} has stride 0")
    if validate and start > INT_MAX[key]:
        raise _fail(token, f"range {alt!r} starts after the largest {key}, {INT_MAX[key]}")
    return IdRange(start, stop, stride)


def _float_value(token: str, alt: str) -> float:
    try:
        value = float(alt)
    except ValueError:
        raise _fail(token, f"{alt!r} is not a number") from None
    if not math.isfinite(value):
        raise _fail(token, f"{alt!r} is not a finite number")
    return value


def _alternatives(token: str, key: str, text: str, validate: bool) -> tuple[Any, ...]:
    alternatives: list[Any] = []
    for alt in text.split("^"):
        if not alt:
            raise _fail(token, "empty alternative")
        if key in INT_KEYS:
            alternatives.append(_int_alternative(token, key, alt, validate))
        elif ".." in alt and (key not in NAME_KEYS or not validate):
            raise _fail(token, f"ranges need an integer key ({', '.join(INT_KEYS)})")
        elif key in FLOAT_KEYS:
            alternatives.append(_float_value(token, alt))
        elif validate and (problem := value_problem(key, alt)) is not None:
            raise _fail(token, problem)
        else:
            alternatives.append(alt)
    return tuple(dict.fromkeys(alternatives))


def _expanded(alternatives: Iterable[Any]) -> list[Any]:
    """The values of alternatives, ranges expanded, each value once, in order."""
    values: dict[Any, None] = {}
    for alt in alternatives:
        values.update(dict.fromkeys(alt if isinstance(alt, IdRange) else (alt,)))
    return list(values)


def _format_alternative(alt: Any) -> str:
    return str(alt) if isinstance(alt, IdRange) else _format_value(alt)


@dataclass(frozen=True)
class Selection:
    """The data ids of one ``--id``, kept compact: per key its alternatives.

    An alternative is a value or an :class:`IdRange`. A selection holds the cartesian
    product over its keys without listing it: :meth:`matches` tests a registry row and
    :attr:`size` counts the ids arithmetically. ``str()`` gives the ``--id`` text back.

    Attributes
    ----------
    terms : tuple of (str, tuple)
        ``(key, alternatives)`` in the order the keys were given; no key selects all.

    Examples
    --------
    >>> sel = parse_selection("visit=1..100000000 ccd=0^50 tract=0")
    >>> sel.size, sel.matches({"visit": 1228, "ccd": 50, "filter": "HSC-I"})
    (200000000, True)
    >>> str(sel.restrict("ccd", 50))
    'visit=1..100000000 ccd=50 tract=0'
    """

    terms: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys, in the order given."""
        return tuple(key for key, _ in self.terms)

    def alternatives(self, key: str) -> tuple[Any, ...]:
        """The alternatives of one key (values and :class:`IdRange`)."""
        return dict(self.terms)[key]

    @property
    def size(self) -> int:
        """The number of data ids, at most (overlapping alternatives count twice)."""
        return math.prod(
            sum(a.count if isinstance(a, IdRange) else 1 for a in alts) for _, alts in self.terms
        )

    @functools.cached_property
    def _tests(self) -> tuple[tuple[str, frozenset, tuple[IdRange, ...]], ...]:
        return tuple(
            (
                key,
                frozenset(a for a in alts if not isinstance(a, IdRange)),
                tuple(a for a in alts if isinstance(a, IdRange)),
            )
            for key, alts in self.terms
        )

    def matches(self, row: Mapping[str, Any]) -> bool:
        """Whether a row agrees with the selection on every key the row has."""
        for key, values, ranges in self._tests:
            if key not in row:
                continue
            value = row[key]
            if value in values and type(value) is not bool:
                continue
            if not any(value in r for r in ranges):
                return False
        return True

    def project(self, keys: Iterable[str]) -> Selection:
        """The selection over some of its keys only."""
        wanted = set(keys)
        return Selection(tuple((k, alts) for k, alts in self.terms if k in wanted))

    def restrict(self, key: str, alternative: Any) -> Selection:
        """The selection with one key narrowed to one of its alternatives."""
        return Selection(
            tuple((k, (alternative,) if k == key else alts) for k, alts in self.terms)
        )

    def ids(self, limit: int = MAX_IDS) -> list[dict[str, Any]]:
        """Every data id, as :func:`parse_id` lists them.

        Raises
        ------
        DataIdError
            More than ``limit`` ids.
        """
        size = self.size
        if size > limit:
            raise DataIdError(
                f"--id {str(self)!r}: would list {size} data ids, more than the limit of "
                f"{limit} (match it against a repository with Repository.match instead)"
            )
        keys = self.keys
        columns = [_expanded(alts) for _, alts in self.terms]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*columns)]

    def __str__(self) -> str:
        return " ".join(
            f"{key}={'^'.join(map(_format_alternative, alts))}" for key, alts in self.terms
        )


def _parse(text: str | Sequence[str], validate: bool) -> Selection:
    tokens = text.split() if isinstance(text, str) else [t for s in text for t in s.split()]
    terms: dict[str, tuple[Any, ...]] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep:
            raise _fail(token, "expected key=value")
        if key not in KEYS:
            raise _fail(token, f"unknown key {_short(key)} (known: {', '.join(KEYS)})")
        if key in terms:
            raise _fail(token, f"key {key!r} given twice in one --id")
        if not value:
            raise _fail(token, "empty value")
        terms[key] = _alternatives(token, key, value, validate)
    return Selection(tuple(terms.items()))


def parse_selection(text: str | Sequence[str]) -> Selection:
    """One ``--id`` value as a compact :class:`Selection`, every value checked.

    Parameters
    ----------
    text : str or sequence of str
        ``"key=value key=value ..."``, or its tokens as argparse delivers them.
        An empty value selects everything.

    Returns
    -------
    Selection
        Ranges are kept as ranges, whatever their length.

    Raises
    ------
    DataIdError
        As :func:`parse_id`, and for a value no data id can have (:func:`value_problem`):
        ``filter=../x``, ``visit=99999999999``; a range may end beyond the largest value
        of its key (``visit=1..100000000``) but not start there.

    Examples
    --------
    >>> str(parse_selection("visit=1..100000000 tract=0"))
    'visit=1..100000000 tract=0'
    >>> parse_selection("filter=../x")
    Traceback (most recent call last):
    ...
    daskcal.dataid.DataIdError: --id 'filter=../x': filter '../x' is not a name of \
[A-Za-z0-9][A-Za-z0-9_+.-]* without '..'
    """
    return _parse(text, validate=True)


def parse_selections(values: Iterable[str | Sequence[str]]) -> list[Selection]:
    """Several ``--id`` values as selections (duplicates removed, order kept)."""
    return list(dict.fromkeys(parse_selection(value) for value in values))


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
        Unknown key, token without ``=``, empty value, bad range, an integer of more than
        18 digits, or a key given twice (the message names the offending token); or a
        product of more than :data:`MAX_IDS` ids (use :func:`parse_selection` for those).

    Examples
    --------
    >>> parse_id("field=NGC604 filter=HSC-I^HSC-R")
    [{'field': 'NGC604', 'filter': 'HSC-I'}, {'field': 'NGC604', 'filter': 'HSC-R'}]
    >>> parse_id("visit=5..2")
    Traceback (most recent call last):
    ...
    daskcal.dataid.DataIdError: --id 'visit=5..2': empty range '5..2' (start after end)
    """
    return _parse(text, validate=False).ids()


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


def format_id(dataid: Mapping[str, Any] | Selection) -> str:
    """A data id (or a :class:`Selection`) as ``--id`` text, for messages; ``None`` values
    are left out.

    For a single id with known keys, ``parse_id(format_id(d)) == [d]``.

    >>> format_id({"visit": 1228, "ccd": 49, "tract": 0, "field": None})
    'visit=1228 ccd=49 tract=0'
    """
    if isinstance(dataid, Selection):
        return str(dataid)
    order = [k for k in FORMAT_ORDER if k in dataid]
    order += sorted(k for k in dataid if k not in FORMAT_ORDER)
    return " ".join(f"{k}={_format_value(dataid[k])}" for k in order if dataid[k] is not None)
