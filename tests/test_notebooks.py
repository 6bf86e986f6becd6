"""The tutorial notebooks are committed stripped: no outputs, no execution counts.

Running them is nbmake's job (``pytest --nbmake notebooks/``); these checks only read the
JSON, so an unstripped commit fails even where nbmake is not installed. Strip with
``.venv/bin/python -m nbstripout notebooks/*.ipynb``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
TUTORIALS = ("01-quickstart.ipynb", "02-catalogs.ipynb", "03-hpc.ipynb")


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_tutorials_are_there():
    assert {p.name for p in NOTEBOOKS} >= set(TUTORIALS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped(path: Path):
    nb = load(path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cells"
    with_outputs = [i for i, c in enumerate(nb["cells"]) if c.get("outputs")]
    assert not with_outputs, f"{path.name}: cells {with_outputs} have outputs (nbstripout)"
    counted = [i for i, c in enumerate(nb["cells"]) if c.get("execution_count") is not None]
    assert not counted, f"{path.name}: cells {counted} have execution counts (nbstripout)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_on_the_python3_kernel(path: Path):
    nb = load(path)
    assert nb["nbformat"] == 4
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_works_in_a_temporary_directory(path: Path):
    # the notebooks run in the test suite: they must never write into the source tree
    source = "\n".join("".join(c["source"]) for c in load(path)["cells"])
    assert "tempfile.TemporaryDirectory(" in source
    assert ".cleanup()" in source
