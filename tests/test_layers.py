"""The import contract: each layer imports only from the layers below it.

    values -> formats (io/) -> calibration products (calib/) -> repository and records
    -> pure kernels -> per-CCD and per-visit tasks (tasks/) -> lazy collections (lazy/)
    -> runs (runs/, qa/) -> command line (cli)

Nothing imports upward, nobody takes a private name from another module, and the library
never imports the demo generator (the demo uses the library; only the command line offers it).
README.md's layout section describes the same layers.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "daskcal"

#: module prefix (dotted, under daskcal) -> layer; the longest matching prefix wins
LAYERS = {
    "dataid": 0,
    "config": 0,
    "errors": 0,
    "layout": 0,
    "io": 1,
    "calib": 2,
    "repo": 3,
    "reruns": 0,
    "idmatch": 0,
    "records": 3,
    "inventory": 3,
    "report": 3,
    "apply": 4,
    "calexp": 4,
    "tasks": 5,
    "lazy": 6,
    "runs": 7,
    "qa": 7,
    "cli": 8,
    "commands": 8,
    "demo": 7,  # uses the library like any client; never imported by it (see below)
    "": 0,  # the package root: lazy re-exports only
}
NAMES = ["values", "formats", "products", "repository", "kernels", "tasks", "lazy", "runs", "cli"]


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".") or p == ""),
               key=len)  # fmt: skip
    return LAYERS[best]


def _imports(path: Path):
    """(imported module under daskcal, imported names, line) of every import in a file."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "daskcal":
                target = node.module.removeprefix("daskcal").lstrip(".")
            else:
                continue
            yield target, [a.name for a in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "daskcal":
                    yield alias.name.removeprefix("daskcal").lstrip("."), [], node.lineno


def _files():
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    assert all(_module(p) == "" or _layer(_module(p)) is not None for p in _files())


def test_no_module_imports_from_a_layer_above_it():
    wrong = []
    for path in _files():
        module = _module(path)
        for target, names, line in _imports(path):
            targets = [target] if not names or target else names
            for t in targets:
                if _layer(t) > _layer(module):
                    wrong.append(
                        f"{path.relative_to(PACKAGE.parent)}:{line} ({NAMES[_layer(module)]}) "
                        f"imports {t} ({NAMES[_layer(t)]})"
                    )
    assert not wrong, "\n".join(wrong)


def test_no_module_takes_a_private_name_from_another():
    wrong = []
    for path in _files():
        for target, names, line in _imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and target != _module(path):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {private} of {target}")
    assert not wrong, "\n".join(wrong)


def test_the_library_never_imports_the_demo():
    wrong = []
    for path in _files():
        module = _module(path)
        if module.startswith(("demo", "commands")) or module == "cli":
            continue
        wrong += [f"{module} imports {t}" for t, _, _ in _imports(path) if t.startswith("demo")]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module", ["daskcal", "daskcal.dataid", "daskcal.config"])
def test_light_modules_import_no_heavy_library(module):
    code = (
        f"import sys; import {module}; "
        "print(sorted(m for m in ('dask', 'xarray', 'scipy', 'pandas', 'astropy') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
