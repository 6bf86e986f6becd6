"""HTML pages of a QA report from Jinja2 templates (``daskcal/qa/templates``).

Pages are static and self-contained: images are inline PNG data URIs, the style sheet is
in the page, and there is no script, so a report opens from disk, offline (a cluster's
login node, a copied folder). Values are escaped by Jinja2's autoescaping.
"""

from __future__ import annotations

import base64
import functools
import math
import os
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_write

__all__ = ["data_uri", "fmt", "render_page", "visit_page_name", "write_page"]


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def fmt(value: Any, spec: str = ".1f") -> str:
    """``value`` formatted with ``spec``; ``n/a`` for None, NaN or text that is no number.

    >>> fmt(-98.25), fmt(float("nan")), fmt(3, "d")
    ('-98.2', 'n/a', '3')
    """
    try:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "n/a"
        return format(value, spec)
    except (TypeError, ValueError):
        return "n/a"


def visit_page_name(tract: int, visit: int) -> str:
    """File name of a visit's page (a visit can reach several tracts).

    >>> visit_page_name(0, 1228)
    'visit-0001228-tract-0000.html'
    """
    return f"visit-{int(visit):07d}-tract-{int(tract):04d}.html"


@functools.cache
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=jinja2.select_autoescape(("html",)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fmt=fmt, data_uri=data_uri)
    env.globals.update(visit_page_name=visit_page_name)
    return env


def render_page(template: str, **context: Any) -> str:
    """Render a page.

    Parameters
    ----------
    template : str
        A file of ``daskcal/qa/templates``.
    **context
        Its variables.

    Returns
    -------
    str
        The HTML.
    """
    return _environment().get_template(template).render(**context)


def write_page(path: str | os.PathLike, html: str) -> Path:
    """Write a page atomically (UTF-8).

    Parameters
    ----------
    path : path
        Where.
    html : str
        The page.

    Returns
    -------
    Path
    """
    with atomic_write(path) as tmp:
        Path(tmp).write_text(html, encoding="utf-8")
    return Path(path)
