"""The Gen2 butler repository of hscPipe (obs_subaru HscMapper): paths, reruns, registry.

A repository ROOT holds ``_mapper``, usually ``registry.sqlite3`` (table ``raw``) and reruns
under ``ROOT/rerun/NAME``. Inputs are looked up in the input rerun, then in its parents
(``repositoryCfg.yaml`` ``_parents`` or a legacy ``_parent`` symlink, recursively), then in
ROOT and ROOT's own parents. ``rerun="IN:OUT"`` reads IN and writes OUT. This module is path
logic and the registry only: it never opens a data file.

Values read from the registry or from file names never choose where anything is written:
rows and names whose values no HscMapper data id can have (:func:`daskcal.dataid.check_id`)
are left out with one warning, and :meth:`Repository.output_path` refuses a path that would
resolve outside the output rerun.

>>> Repository.template("fgcm_photoCalib") % {"filter": "HSC-I", "visit": 1228, "ccd": 49}
'fgcm-results/HSC-I/fgcm_photoCalib-01228-049.fits'

Why one module of more than ~300 lines: the registry queries use the Repository's state
(lookup chain, warnings given); reruns and their parents live in :mod:`daskcal.reruns`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import yaml

from .dataid import (
    INT_MAX,
    DataIdError,
    IdRange,
    Selection,
    check_id,
    format_id,
    unique_ids,
    value_problem,
)
from .idmatch import id_from_path, match_ids, match_selection, sort_ids, template_glob
from .io.atomic import atomic_write
from .reruns import RepositoryError, lookup_chain, read_parents, rerun_dir

__all__ = ["Repository", "RepositoryError", "TEMPLATES", "TRACT_DATASETS", "lookup_chain"]


_VC = "%(visit)07d-%(ccd)03d.fits"
_JC = "jointcal-results/%(filter)s/%(tract)04d/jointcal_"
_CAL = "calibrated/%(tract)04d/%(pointing)05d/%(filter)s/"
#: Path templates relative to a rerun (obs_subaru HscMapper, hscPipe 8).
TEMPLATES = {
    "calexp": "%(pointing)05d/%(filter)s/corr/CORR-" + _VC,
    "calexpBackground": "%(pointing)05d/%(filter)s/corr/BKGD-" + _VC,
    "skyCorr": "%(pointing)05d/%(filter)s/corr/skyCorr-" + _VC,
    "src": "%(pointing)05d/%(filter)s/output/SRC-" + _VC,
    "jointcal_wcs": _JC + "wcs-" + _VC,
    "jointcal_photoCalib": _JC + "photoCalib-" + _VC,
    "fgcm_photoCalib": "fgcm-results/%(filter)s/fgcm_photoCalib-%(visit)05d-%(ccd)03d.fits",
    "fgcm_tract_photoCalib": (
        "fgcm-results/%(filter)s/%(tract)04d/fgcm_photoCalib-%(visit)05d-%(ccd)03d.fits"
    ),
    "calibrated_exp": _CAL + "CALEXP-" + _VC,
    "calibrated_src": _CAL + "CALSRC-" + _VC,
}
TRACT_DATASETS = tuple(name for name, t in TEMPLATES.items() if "%(tract)" in t)
OUTPUT_DATASETS = ("calibrated_exp", "calibrated_src")
#: Keys of a full data id (``tract`` is carried through when given).
ID_KEYS = ("field", "visit", "ccd", "pointing", "filter")
REGISTRY_ONLY = ("field", "dateObs", "taiObs", "expTime")
_SQL_MAX_VALUES = 500

log = logging.getLogger("daskcal")


class Repository:
    """A Gen2 repository seen through one ``--rerun``.

    Parameters
    ----------
    root : str or os.PathLike
        The repository root (with ``_mapper``).
    rerun : str, optional
        ``NAME`` (read and write NAME) or ``IN:OUT`` (read IN, write OUT); None reads and
        writes ROOT itself.

    Attributes
    ----------
    root, input_dir, output_dir : Path
        The repository, the input rerun and the output rerun (ROOT without a rerun).
    input_dirs : list of Path
        Where inputs are looked for, in order: input rerun, its parents, ROOT, ROOT's parents.
    registry : Path or None
        The first ``registry.sqlite3`` along ``input_dirs``.
    """

    def __init__(self, root: str | os.PathLike, rerun: str | None = None) -> None:
        self.root = Path(os.path.abspath(Path(root).expanduser()))
        if not self.root.is_dir():
            raise RepositoryError(f"repository {self.root} does not exist")
        if not (self.root / "_mapper").is_file():
            raise RepositoryError(f"{self.root} is not a Gen2 repository (no _mapper file)")
        self.rerun = rerun
        self.input_dir, self.output_dir = self._rerun_dirs(rerun)
        chain: dict[Path, Path] = {}
        for directory in lookup_chain(self.input_dir) + lookup_chain(self.root):
            chain.setdefault(directory.resolve(), directory)
        self.input_dirs = list(chain.values())
        registries = [d / "registry.sqlite3" for d in self.input_dirs]
        self.registry = next((r for r in registries if r.is_file()), None)
        self._warned: set[str] = set()

    def _rerun_dirs(self, rerun: str | None) -> tuple[Path, Path]:
        if rerun is None:
            return self.root, self.root
        name_in, _, name_out = rerun.partition(":")
        input_dir = rerun_dir(self.root, name_in)
        output_dir = rerun_dir(self.root, name_out) if name_out else input_dir
        if output_dir == input_dir:
            return input_dir, output_dir
        if not input_dir.is_dir():
            raise RepositoryError(f"input rerun {name_in!r} does not exist ({input_dir})")
        parents = {p.resolve() for p in read_parents(output_dir)} if output_dir.is_dir() else set()
        if parents and input_dir.resolve() not in parents:
            raise RepositoryError(
                f"output rerun {name_out!r} was made from other inputs "
                f"({', '.join(map(str, sorted(parents)))}), not {input_dir}"
            )
        return input_dir, output_dir

    def __repr__(self) -> str:
        return f"Repository({str(self.root)!r}, rerun={self.rerun!r})"

    @staticmethod
    def template(dataset: str) -> str:
        """The path template of a dataset, relative to a rerun (docs/layout.md, 'Dataset
        templates')."""
        try:
            return TEMPLATES[dataset]
        except KeyError:
            raise RepositoryError(
                f"unknown dataset {dataset!r} (known: {', '.join(TEMPLATES)})"
            ) from None

    def relative_path(self, dataset: str, dataid: Mapping[str, Any]) -> Path:
        """The path of a dataset relative to a rerun."""
        try:
            return Path(self.template(dataset) % dict(dataid))
        except KeyError as err:
            raise DataIdError(f"{dataset} needs {err.args[0]}= ({format_id(dataid)})") from None
        except TypeError:
            raise DataIdError(f"{dataset}: bad value types in {format_id(dataid)}") from None

    def _search_dirs(self, dataset: str) -> list[Path]:
        if dataset in OUTPUT_DATASETS and self.output_dir != self.input_dir:
            return [self.output_dir, *self.input_dirs]
        return self.input_dirs

    def find(self, dataset: str, dataid: Mapping[str, Any]) -> Path | None:
        """The first existing file along the lookup chain (outputs: output rerun first)."""
        relative = self.relative_path(dataset, dataid)
        return next(
            (d / relative for d in self._search_dirs(dataset) if (d / relative).exists()), None
        )

    def exists(self, dataset: str, dataid: Mapping[str, Any]) -> bool:
        """Whether the dataset exists anywhere along the lookup chain."""
        return self.find(dataset, dataid) is not None

    def input_path(self, dataset: str, dataid: Mapping[str, Any]) -> Path:
        """The found path, or where it would be in the input rerun (for messages)."""
        return self.find(dataset, dataid) or self.input_dir / self.relative_path(dataset, dataid)

    def output_path(
        self, dataset: str, dataid: Mapping[str, Any], *, checked: dict | None = None
    ) -> Path:
        """Where a dataset is written: under the output rerun, proven to stay there.

        ``checked``: a dict in which the verdict on each folder is kept, for a caller that
        asks for many outputs at once (a run); None checks every time.

        Raises
        ------
        RepositoryError
            The path, symlinks followed, would be outside the output rerun (a data id
            whose values were not checked, or a symlinked folder leading elsewhere).
        """
        path = self.output_dir / self.relative_path(dataset, dataid)
        if not _folder_inside(path, self.output_dir, checked):
            raise RepositoryError(
                f"{format_id(dataid)}: the {dataset} path {_one_line(str(path))} resolves "
                f"outside the output rerun {self.output_dir}"
            )
        return path

    def ensure_output(self) -> Path:
        """Create the output rerun, recording its parent in ``repositoryCfg.yaml`` if new.

        The parent is the input rerun for ``IN:OUT`` (so that a later ``--rerun OUT`` finds
        IN's inputs), else ROOT. An existing ``repositoryCfg.yaml`` is left alone.
        """
        out = self.output_dir
        cfg = out / "repositoryCfg.yaml"
        out.mkdir(parents=True, exist_ok=True)
        if out == self.root or cfg.exists() or (out / "_parent").exists():
            return out
        parent = self.input_dir if self.input_dir != out else self.root
        mapper = (self.root / "_mapper").read_text().strip()
        fields = {"_mapper": mapper, "_mapperArgs": {}, "_parents": [os.path.relpath(parent, out)]}
        with atomic_write(cfg) as tmp:
            Path(tmp).write_text("!RepositoryCfg_v1\n" + yaml.safe_dump(fields))
        return self.output_dir

    def _left_out(self, where: str, what: str, bad: Mapping[Any, tuple[str, str]]) -> None:
        """One warning for the rows or files left out (``bad``: item -> (text, problem)),
        given once per repository; ``what`` is ``"row"``, ``"file"``, ..."""
        if not bad:
            return
        text, problem = next(iter(bad.values()))
        message = (
            f"{where}: left out {len(bad)} {what}{'s' if len(bad) > 1 else ''} with values "
            f"no data id can have (first: {text}: {problem})"
        )
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

    def _scan(self, template: str) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Existing paths matching a template along the input chain, with their ids."""
        for directory in self.input_dirs:
            for path in sorted(directory.glob(template_glob(template))):
                found = id_from_path(template, path.relative_to(directory).as_posix())
                if found is not None:
                    yield path, found

    def _valid_scan(
        self, template: str, bad: dict[Path, tuple[str, str]]
    ) -> Iterator[tuple[Path, dict[str, Any]]]:
        """:meth:`_scan` without the paths whose names hold invalid values (put in ``bad``)."""
        for path, dataid in self._scan(template):
            problem = check_id(dataid)
            if problem is None:
                yield path, dataid
            else:
                bad.setdefault(path, (_one_line(str(path)), problem))

    def tracts(self) -> dict[str, list[int]]:
        """Tracts per filter that have jointcal / FGCM results on disk (input chain).

        Folders whose names are no filter or tract are left out, with one warning.
        """
        found: dict[str, set[int]] = {}
        bad: dict[Path, tuple[str, str]] = {}
        for dataset in ("jointcal_wcs", "jointcal_photoCalib", "fgcm_tract_photoCalib"):
            for path, dataid in self._valid_scan(TEMPLATES[dataset].rsplit("/", 1)[0], bad):
                if path.is_dir():
                    found.setdefault(dataid["filter"], set()).add(dataid["tract"])
        self._left_out(str(self.input_dir), "tract folder", bad)
        return {f: sorted(t) for f, t in sorted(found.items())}

    def _disk_rows(self) -> list[dict[str, Any]]:
        rows: dict[tuple[int, int], dict[str, Any]] = {}
        bad: dict[Path, tuple[str, str]] = {}
        for dataset in ("calexp", "src"):
            for _, dataid in self._valid_scan(TEMPLATES[dataset], bad):
                row = {"field": None, **{k: dataid[k] for k in ID_KEYS[1:]}}
                rows.setdefault((row["visit"], row["ccd"]), row)
        self._left_out(str(self.input_dir), "calexp or src file", bad)
        return list(rows.values())

    def _fetch(
        self,
        db: sqlite3.Connection,
        columns: list[str],
        where: list[str],
        params: list[Any],
        bad: dict[Any, tuple[str, str]],
    ) -> list[dict[str, Any]]:
        """Distinct rows of ``raw``; rows with invalid data-id values go to ``bad``."""
        sql = f"SELECT DISTINCT {', '.join(columns)} FROM raw"
        sql += f" WHERE {' AND '.join(where)}" if where else ""
        try:
            cursor = db.execute(sql, params)
        except (sqlite3.Error, OverflowError) as err:
            raise RepositoryError(f"{self.registry}: {err}") from None
        rows: dict[tuple, dict[str, Any]] = {}
        for values in cursor:
            row = dict(zip(columns, values, strict=True))
            problem = check_id({k: row[k] for k in ID_KEYS})
            if problem is None:
                rows.setdefault(values, row)
            else:
                bad.setdefault(values, (_row_text(row), problem))
        return list(rows.values())

    def _connect(self) -> closing[sqlite3.Connection]:
        return closing(sqlite3.connect(f"{self.registry.as_uri()}?mode=ro", uri=True))

    def _registry_rows(
        self, ids: list[dict[str, Any]], bad: dict[Any, tuple[str, str]]
    ) -> list[dict[str, Any]]:
        columns = [*ID_KEYS, *(k for k in REGISTRY_ONLY[1:] if any(k in d for d in ids))]
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for dataid in ids:
            if check_id(dataid) is None:  # else it can match no valid row
                groups.setdefault(tuple(k for k in dataid if k in columns), []).append(dataid)
        rows: list[dict[str, Any]] = []
        with self._connect() as db:
            for keys, group in groups.items():  # one query per --id shape, not per ccd
                where, params = [], []
                for key in keys:
                    values = list(dict.fromkeys(d[key] for d in group))
                    if len(values) <= _SQL_MAX_VALUES:  # else filtered by match_ids only
                        where.append(f'"{key}" IN ({",".join("?" * len(values))})')
                        params += values
                rows += self._fetch(db, columns, where, params, bad)
        return unique_ids(rows)

    def _selection_rows(
        self, db: sqlite3.Connection, selection: Selection, bad: dict[Any, tuple[str, str]]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """The registry rows a selection may match (SQL ranges and IN lists) and the columns."""
        columns = [*ID_KEYS, *(k for k in REGISTRY_ONLY[1:] if k in selection.keys)]
        where, params = [], []
        for key, alternatives in selection.terms:
            if key not in columns:
                continue
            clause = _sql_clause(key, alternatives)
            if clause is None:  # too many values for one query: match_selection filters
                continue
            if not clause[0]:
                return [], columns
            where.append(clause[0])
            params += clause[1]
        return self._fetch(db, columns, where, params, bad), columns

    def match(
        self, ids: Iterable[Mapping[str, Any] | Selection]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any] | Selection]]:
        """Full data ids of partial ones or of selections, and what selects no data.

        Parameters
        ----------
        ids : iterable of dict or Selection
            Partial data ids (:func:`daskcal.dataid.parse_ids`) and/or compact selections
            (:func:`daskcal.dataid.parse_selections`, what the commands use). A selection's
            ranges are matched with SQL range predicates, or against the files on disk,
            never listed.

        Returns
        -------
        matched : list of dict
            Keys field, visit, ccd, pointing, filter (+ tract when given), unique, sorted by
            (visit, ccd, tract). Without a registry, ids come from the calexp and src files
            on disk and ``field`` is None. Registry rows and file names with values no data
            id can have are left out, with one warning.
        unmatched : list of dict or Selection
            The ids that matched nothing (see :func:`daskcal.dataid.match_selection` for
            what a selection reports).

        Raises
        ------
        DataIdError
            A registry-only key (field, dateObs, taiObs, expTime) without a registry.
        RepositoryError
            The registry cannot be read.
        """
        items = list(ids)
        dict_ids = unique_ids(d for d in items if not isinstance(d, Selection))
        selections = list(dict.fromkeys(d for d in items if isinstance(d, Selection)))
        if self.registry is None:
            bad_id = next(
                (d for d in [*dict_ids, *selections] if set(_keys(d)) & set(REGISTRY_ONLY)),
                None,
            )
            if bad_id is not None:
                raise DataIdError(
                    f"{format_id(bad_id)}: {', '.join(REGISTRY_ONLY)} need the registry, and "
                    f"{self.root} has no registry.sqlite3"
                )
        matched: list[dict[str, Any]] = []
        unmatched: list[dict[str, Any] | Selection] = []
        bad: dict[Any, tuple[str, str]] = {}
        disk_rows = self._disk_rows() if self.registry is None else []
        if dict_ids:
            rows = disk_rows if self.registry is None else self._registry_rows(dict_ids, bad)
            found, missing = match_ids(dict_ids, rows)
            matched += found
            unmatched += missing
        if selections and self.registry is None:
            for selection in selections:
                found, missing = match_selection(selection, disk_rows, ID_KEYS)
                matched += found
                unmatched += missing
        elif selections:
            with self._connect() as db:
                for selection in selections:  # one query per --id
                    rows, columns = self._selection_rows(db, selection, bad)
                    found, missing = match_selection(selection, rows, columns)
                    matched += found
                    unmatched += missing
        self._left_out(f"{self.registry}: table raw", "row", bad)
        keys = (*ID_KEYS, "tract")
        return sort_ids({k: d[k] for k in keys if k in d} for d in matched), unmatched

    def expand(
        self,
        ids: Iterable[Mapping[str, Any] | Selection],
        *,
        require_tract: bool = False,
        allow_missing: bool = False,
    ) -> list[dict[str, Any]]:
        """Expand partial data ids or selections to full ids (see :meth:`match`).

        Parameters
        ----------
        ids : iterable of dict or Selection
            Partial data ids, e.g. from :func:`daskcal.dataid.parse_ids`, or selections
            from :func:`daskcal.dataid.parse_selections`.
        require_tract : bool
            Refuse ids without ``tract`` (the calibrate commands need it).
        allow_missing : bool
            Drop ids that select no data instead of raising.

        Raises
        ------
        DataIdError
            An id lacks tract (with ``require_tract``) or selects no data.
        """
        ids = list(ids)
        if require_tract:
            bad = next((d for d in ids if not _has_tract(d)), None)
            if bad is not None:
                raise DataIdError(
                    f"tract is required; give tract= in --id ({format_id(bad) or 'all data'})"
                )
        matched, unmatched = self.match(ids)
        if unmatched and not allow_missing:
            shown = "; ".join(format_id(d) or "everything" for d in unmatched[:3])
            more = f" and {len(unmatched) - 3} more" if len(unmatched) > 3 else ""
            raise DataIdError(f"no data for {shown}{more}")
        return matched


def _keys(dataid: Mapping[str, Any] | Selection) -> Iterable[str]:
    return dataid.keys if isinstance(dataid, Selection) else dataid.keys()


def _has_tract(dataid: Mapping[str, Any] | Selection) -> bool:
    if isinstance(dataid, Selection):
        return "tract" in dataid.keys
    return dataid.get("tract") is not None


def _sql_clause(key: str, alternatives: tuple[Any, ...]) -> tuple[str, list[Any]] | None:
    """``("(col IN (...) OR col BETWEEN ? AND ? ...)", params)`` for one key of a selection.

    Values no data id can have are dropped (they match no valid row; an integer beyond
    SQLite's would not even bind) and ranges end at the key's largest value; ``("", [])``
    when nothing is left, None when it takes more than ``_SQL_MAX_VALUES`` parameters.
    """
    column = f'"{key}"'
    values = [
        a for a in alternatives if not isinstance(a, IdRange) and value_problem(key, a) is None
    ]
    parts = [f"{column} IN ({','.join('?' * len(values))})"] if values else []
    params: list[Any] = list(values)
    for alt in alternatives:
        if not isinstance(alt, IdRange):
            continue
        stop = min(alt.stop, INT_MAX.get(key, alt.stop))
        if alt.start > stop:
            continue
        if alt.step == 1:
            parts.append(f"{column} BETWEEN ? AND ?")
            params += [alt.start, stop]
        else:
            parts.append(f"({column} BETWEEN ? AND ? AND ({column} - ?) % ? = 0)")
            params += [alt.start, stop, alt.start, alt.step]
    if len(params) > _SQL_MAX_VALUES:
        return None
    return ("(" + " OR ".join(parts) + ")" if parts else ""), params


def _one_line(text: str) -> str:
    return text if text.isprintable() else repr(text)


def _row_text(row: Mapping[str, Any]) -> str:
    """A registry row for a message: ``key=repr`` pairs, each cut short, on one line."""
    cells = []
    for key, value in row.items():
        text = repr(value)
        cells.append(f"{key}={text if len(text) <= 40 else text[:37] + '...'}")
    return " ".join(cells)


def _folder_inside(path: Path, base: Path, checked: dict | None) -> bool:
    """:func:`_resolves_inside`, remembered per folder in ``checked`` when one is given."""
    if checked is None:
        return _resolves_inside(path, base)
    if path.parent not in checked:
        if len(checked) > 4096:
            checked.clear()
        checked[path.parent] = _resolves_inside(path.parent, base) or path.parent == base
    return checked[path.parent] and path.name not in ("", ".", "..")


def _resolves_inside(path: Path, base: Path) -> bool:
    """Whether ``path`` lies strictly inside ``base`` once symlinks are followed.

    ``os.path.realpath`` resolves every existing component (the deepest existing parent,
    and a dangling symlink's target) and appends the rest, so a symlinked folder on the
    way that leads elsewhere is caught before anything is created through it.
    """
    try:
        relative = path.relative_to(base)
    except ValueError:
        return False
    if ".." in relative.parts or not relative.parts:
        return False
    real, real_base = Path(os.path.realpath(path)), Path(os.path.realpath(base))
    return real != real_base and real.is_relative_to(real_base)
