"""Matching data ids: against registry rows or files on disk, sorting, and ids from file names."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .dataid import (
    ENUMERATE_MAX,
    MAX_CARRIED,
    DataIdError,
    Selection,
    check_id,
    unique_ids,
)

__all__ = ["id_from_path", "match_ids", "match_selection", "sort_ids", "template_glob"]


_FIELD = re.compile(r"%\((\w+)\)(\d*)([ds])")  # a %(key)05d or %(key)s in a path template


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


def match_selection(
    selection: Selection, rows: Iterable[Mapping[str, Any]], columns: Iterable[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any] | Selection]]:
    """Expand a selection against full rows (a registry query's, or the files' on disk).

    A row matches when it agrees with the selection on every key the rows have
    (``columns``); keys the rows lack (``tract``) are carried into the result, one data id
    per value and matched row. The ranges are never listed, so the work and the memory
    follow the rows, not the size of the selection.

    Parameters
    ----------
    selection : Selection
        One ``--id``.
    rows : iterable of dict
        Full data ids (with valid values), each with the keys ``columns``.
    columns : iterable of str
        The keys of the rows.

    Returns
    -------
    matched : list of dict
        Full ids (row keys + carried keys), unique, sorted by (visit, ccd, tract).
    unmatched : list of dict or Selection
        What selects no row. A selection of at most :data:`ENUMERATE_MAX` ids gives its
        unmatched ids one by one, as :func:`match_ids` does; a larger one gives itself
        when nothing matched, else the narrowed selections (one key set to one of its
        alternatives) that match nothing.

    Raises
    ------
    DataIdError
        The carried keys have more than :data:`MAX_CARRIED` values.

    Examples
    --------
    >>> from daskcal.dataid import parse_selection
    >>> rows = [{"visit": 1, "ccd": 0}, {"visit": 1, "ccd": 1}, {"visit": 2, "ccd": 0}]
    >>> matched, unmatched = match_selection(parse_selection("ccd=0^2 tract=9"), rows, ["ccd"])
    >>> matched
    [{'visit': 1, 'ccd': 0, 'tract': 9}, {'visit': 2, 'ccd': 0, 'tract': 9}]
    >>> unmatched
    [{'ccd': 2, 'tract': 9}]
    """
    columns = set(columns)
    found = [row for row in rows if selection.matches(row)]
    carried_keys = [k for k in selection.keys if k not in columns]
    carried = selection.project(carried_keys)
    if carried.size > MAX_CARRIED:
        raise DataIdError(
            f"--id {str(selection)!r}: {carried.size} combinations of "
            f"{', '.join(carried_keys)}, more than the limit of {MAX_CARRIED} (each would be "
            "a data id of every matched CCD)"
        )
    extra = [c for c in carried.ids() if check_id(c) is None]
    matched = [{**row, **c} for row in found for c in extra]
    return sort_ids(matched), _unmatched(selection, found, columns)


def _unmatched(
    selection: Selection, found: list[Mapping[str, Any]], columns: set[str]
) -> list[dict[str, Any] | Selection]:
    if selection.size <= ENUMERATE_MAX:
        keys = [k for k in selection.keys if k in columns]
        present = {tuple(row[k] for k in keys) for row in found}
        return [d for d in selection.ids() if tuple(d[k] for k in keys) not in present]
    if not found:
        return [selection]
    unmatched: list[dict[str, Any] | Selection] = []
    for key, alternatives in selection.terms:
        if key not in columns or len(alternatives) < 2:
            continue
        for alt in alternatives:
            narrow = Selection(((key, (alt,)),))
            if not any(narrow.matches(row) for row in found):
                unmatched.append(selection.restrict(key, alt))
    return unmatched


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
