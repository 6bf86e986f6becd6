"""Reruns of a Gen2 repository: where ``--rerun NAME`` lives and its parents.

A rerun's parents come from its ``repositoryCfg.yaml`` (``_parents``) or a legacy
``_parent`` link; read recursively, they give the lookup chain of inputs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["RepositoryError", "lookup_chain", "read_parents", "rerun_dir"]


class RepositoryError(ValueError):
    """Not a repository, a bad rerun, or an unreadable repositoryCfg / registry."""


class _TolerantLoader(yaml.SafeLoader):
    """Safe YAML loader that reads Gen2's tagged ``!RepositoryCfg_v1`` as plain data."""


def _untagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


def _parent_path(directory: Path, entry: Any) -> Path | None:
    if isinstance(entry, Mapping):
        entry = entry.get("_root", entry.get("root"))
    if not isinstance(entry, str | os.PathLike) or not str(entry):
        return None
    text = str(entry).removeprefix("file://")
    return Path(os.path.normpath(directory / text))


_TolerantLoader.add_multi_constructor("", _untagged)


def read_parents(directory: Path) -> list[Path]:
    """Parents of one repository folder (``repositoryCfg.yaml`` ``_parents``, ``_parent``)."""
    cfg = directory / "repositoryCfg.yaml"
    entries: Any = []
    if cfg.is_file():
        try:
            data = yaml.load(cfg.read_text(), Loader=_TolerantLoader)
        except yaml.YAMLError as err:
            raise RepositoryError(f"{cfg}: unreadable YAML ({str(err).splitlines()[0]})") from None
        raw = data.get("_parents", data.get("parents")) if isinstance(data, dict) else None
        entries = [raw] if isinstance(raw, str | Mapping) else raw if isinstance(raw, list) else []
    parents = [p for e in entries if (p := _parent_path(directory, e)) is not None]
    if (directory / "_parent").is_symlink() or (directory / "_parent").exists():
        parents.append((directory / "_parent").resolve())
    for parent in parents:
        if not parent.is_dir():
            raise RepositoryError(f"{directory}: parent repository {parent} does not exist")
    return parents


def lookup_chain(start: Path) -> list[Path]:
    """``start`` then its parents, depth first, each folder once (cycles are cut)."""
    chain: list[Path] = []
    seen: set[Path] = set()
    stack = [Path(start)]
    while stack:
        directory = stack.pop()
        if directory.resolve() in seen:
            continue
        seen.add(directory.resolve())
        chain.append(directory)
        stack.extend(reversed(read_parents(directory)))
    return chain


def rerun_dir(root: Path, name: str) -> Path:
    base = root / "rerun"
    path = Path(name)
    if not name or ".." in path.parts:
        raise RepositoryError(f"rerun {name!r}: a rerun name may not be empty or contain '..'")
    candidate = Path(os.path.normpath(path if path.is_absolute() else base / path))
    inside = candidate.is_relative_to(base) or candidate.resolve().is_relative_to(base.resolve())
    if candidate == base or not inside:
        raise RepositoryError(f"rerun {name!r} is outside the repository's reruns ({base})")
    return candidate
