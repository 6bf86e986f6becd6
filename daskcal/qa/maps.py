"""Focal-plane maps: a visit's CCDs drawn where they are on the sky, coloured by a metric.

As the quick-look mosaics do, every CCD is placed on the gnomonic tangent plane at the
visit's centre through the affine map its sky corners give (jointcal WCS), so any camera
layout and rotated CCDs come out right, North up and East left. A CCD shows a grid of
values (an image over it), or one value (filled), or arrows (shifts, drawn at their grid
points); its number and a short text are written on it and outliers are outlined in
magenta. One colour bar serves the map; its limits come from the CCDs that are no
outliers, and values beyond them take the outlier colour (the bar's end triangles). The
map is a PNG (matplotlib's Agg canvas, no global state) with, per CCD, the polygon it
covers in image pixels, so that an HTML image map can show each CCD's value on hover.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..calib.sip import gnomonic_iwc

__all__ = ["FIGURE_COLOUR", "CcdLayer", "MapImage", "draw_focal_plane", "nice_step"]

FIGURE_COLOUR = "#f6f6f1"
"""Background of every figure: the browser test finds the maps on a screenshot by it."""
_NO_DATA = "0.82"
_OUTLIER = "#d0009a"
_DPI = 90
_LABEL_BOX = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.6}


@dataclass
class CcdLayer:
    """One CCD on a map.

    Attributes
    ----------
    ccd : int
        Its number, written on it.
    corner_ra, corner_dec : ndarray
        Sky positions (degrees) of its corners (x0, y0), (x1, y0), (x1, y1), (x0, y1).
    image : ndarray, optional
        Values on a grid of cells (ny, nx) over the CCD, row 0 at y0.
    value : float
        Its single value (filled colour) when it has no ``image``; NaN: no data (grey).
    text : str
        Written under its number and shown on hover.
    arrows : tuple of ndarray, optional
        (ra, dec, east, north): where (degrees) and how much (East, North, in the arrow
        unit) to draw.
    """

    ccd: int
    corner_ra: np.ndarray
    corner_dec: np.ndarray
    image: np.ndarray | None = None
    value: float = math.nan
    text: str = ""
    arrows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None


@dataclass
class MapImage:
    """A drawn map: PNG bytes, size, and per CCD (number, polygon coords, hover text)."""

    png: bytes
    width: int
    height: int
    areas: list[tuple[int, str, str]] = field(default_factory=list)


def nice_step(value: float) -> float:
    """1, 2 or 5 times a power of ten, at most ``value`` (for arrow keys).

    >>> nice_step(730.0), nice_step(0.03)
    (500.0, 0.02)
    """
    if not (value > 0 and math.isfinite(value)):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return float(max(m * power for m in (1, 2, 5) if m * power <= value * (1 + 1e-12)))


def _centre(ra: np.ndarray, dec: np.ndarray) -> tuple[float, float]:
    """Mean direction of the points (degrees)."""
    r, d = np.radians(ra), np.radians(dec)
    x, y, z = (np.mean(v) for v in (np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)))
    return float(np.degrees(np.arctan2(y, x)) % 360.0), float(
        np.degrees(np.arctan2(z, np.hypot(x, y)))
    )


def _limits(values: np.ndarray, symmetric: bool) -> tuple[float, float]:
    """Colour limits: the range of the values, symmetric about 0 or from 0 for values that
    cannot be negative (lengths, counts)."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return (-1.0, 1.0) if symmetric else (0.0, 1.0)
    low, high = float(finite.min()), float(finite.max())
    if symmetric:
        top = max(abs(low), abs(high), 1e-6)
        return -top, top
    low = 0.0 if finite.min() >= 0 else low
    return (low, high) if high > low else (low - 0.5, low + 0.5)


def _extend(values: np.ndarray, norm) -> str:
    """Which ends of the colour bar values go beyond (drawn in the outlier colour)."""
    finite = values[np.isfinite(values)]
    below, above = bool((finite < norm.vmin).any()), bool((finite > norm.vmax).any())
    return {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
        (below, above), "neither"
    )


def _colour_values(layers: Sequence[CcdLayer], skip: set[int]) -> np.ndarray:
    chosen = [layer for layer in layers if layer.ccd not in skip] or list(layers)
    parts = [np.ravel(layer.image) if layer.image is not None else [layer.value]
             for layer in chosen]  # fmt: skip
    return np.concatenate([np.asarray(p, dtype=float) for p in parts]) if parts else np.zeros(0)


def draw_focal_plane(
    layers: Sequence[CcdLayer],
    *,
    title: str,
    unit: str,
    symmetric: bool = True,
    cmap: str | None = None,
    arrow_unit: str = "mas",
    outliers: Sequence[int] = (),
) -> MapImage:
    """Draw one map of a visit.

    Parameters
    ----------
    layers : sequence of CcdLayer
        The CCDs (at least one).
    title, unit : str
        Title of the map and label of its colour bar.
    symmetric : bool
        A diverging colour scale centred on 0 (relative quantities), else sequential.
    cmap : str, optional
        A matplotlib colour map name (default ``RdBu_r`` or ``viridis``).
    arrow_unit : str
        Unit of the arrows' key.
    outliers : sequence of int
        CCDs outlined in magenta; their values do not set the colour limits.

    Returns
    -------
    MapImage
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Polygon
    from matplotlib.transforms import Affine2D

    ra = np.concatenate([layer.corner_ra for layer in layers])
    dec = np.concatenate([layer.corner_dec for layer in layers])
    centre = _centre(ra, dec)
    norm = Normalize(*_limits(_colour_values(layers, set(outliers)), symmetric))
    palette = colormaps[cmap or ("RdBu_r" if symmetric else "viridis")]
    palette = palette.with_extremes(over=_OUTLIER, under=_OUTLIER, bad=_NO_DATA)
    colours = ScalarMappable(norm, palette)
    polygons = [(layer, np.column_stack(gnomonic_iwc(layer.corner_ra, layer.corner_dec, centre)))
                for layer in layers]  # fmt: skip
    fig, ax, cax = _figure(np.concatenate([c for _, c in polygons]))
    canvas = FigureCanvasAgg(fig)
    font = _label_size(ax, [c for _, c in polygons])
    arrows = []
    for layer, corners in polygons:
        if layer.image is not None:
            ny, nx = np.shape(layer.image)
            (a, b), (c, d) = (corners[1] - corners[0]) / nx, (corners[3] - corners[0]) / ny
            matrix = np.array([[a, c, corners[0, 0]], [b, d, corners[0, 1]], [0.0, 0.0, 1.0]])
            ax.imshow(np.asarray(layer.image, float), origin="lower", extent=(0, nx, 0, ny),
                      transform=Affine2D(matrix) + ax.transData, cmap=colours.cmap, norm=norm,
                      interpolation="nearest")  # fmt: skip
            face = "none"
        else:
            face = colours.to_rgba(layer.value) if math.isfinite(layer.value) else _NO_DATA
        outlier = layer.ccd in outliers
        ax.add_patch(Polygon(corners, closed=True, facecolor=face, zorder=2 if outlier else 1.5,
                             edgecolor=_OUTLIER if outlier else "0.25",
                             linewidth=2.2 if outlier else 0.5))  # fmt: skip
        if layer.arrows is not None:
            arrows.append(layer.arrows)
        label = f"{layer.ccd}\n{layer.text}" if layer.text else str(layer.ccd)
        ax.text(*corners.mean(axis=0), label, fontsize=font, ha="center", va="center", zorder=4,
                bbox=_LABEL_BOX)  # fmt: skip
    if arrows:
        _draw_arrows(ax, arrows, centre, polygons, arrow_unit)
    ax.set_title(title, fontsize=9)
    extend = _extend(_colour_values(layers, set()), norm)
    fig.colorbar(colours, cax=cax, label=unit, extend=extend)
    canvas.draw()
    width, height = (int(v) for v in canvas.get_width_height())
    areas = []
    for layer, corners in polygons:
        pixels = ax.transData.transform(corners)
        coords = ",".join(f"{x:.0f},{height - y:.0f}" for x, y in pixels)
        areas.append((layer.ccd, coords, f"CCD {layer.ccd}: {layer.text or 'no data'}"))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, facecolor=FIGURE_COLOUR)
    return MapImage(buffer.getvalue(), width, height, areas)


def _draw_arrows(ax, arrows, centre, polygons, unit: str) -> None:
    """Arrows scaled so that a typical one spans most of a grid step of its CCD."""
    ra, dec, east, north = (np.concatenate([np.ravel(a[i]) for a in arrows]) for i in range(4))
    xi, eta = gnomonic_iwc(ra, dec, centre)
    length = np.hypot(east, north)
    finite = np.isfinite(length)
    if not finite.any():
        return
    sizes = [np.ptp(c[:, 0]) + np.ptp(c[:, 1]) for _, c in polygons]
    per_ccd = max(1.0, len(ra) / max(len(arrows), 1))
    spacing = 0.5 * float(np.median(sizes)) / math.sqrt(per_ccd)
    key = nice_step(float(np.percentile(length[finite], 90)))
    scale = key / (0.9 * spacing)
    quiver = ax.quiver(xi[finite], eta[finite], east[finite], north[finite], angles="xy",
                       scale_units="xy", scale=scale, width=0.004, zorder=3)  # fmt: skip
    ax.quiverkey(quiver, 0.02, 0.1 / ax.figure.get_size_inches()[1], key, f"{key:g} {unit}",
                 labelpos="E", coordinates="figure", fontproperties={"size": 7})  # fmt: skip


_AXES_WIDTH = 3.8  # inches; the height follows the CCDs' extent
_MARGINS = (0.75, 1.05, 0.6, 0.45)  # left, right, bottom, top (inches)


def _figure(corners: np.ndarray):
    """A figure whose axes have the CCDs' aspect (within limits), its axes and colour-bar
    axes; the axes limits frame the CCDs with one degree as long on both axes."""
    from matplotlib.figure import Figure

    xs, ys = corners[:, 0], corners[:, 1]
    span_x, span_y = max(np.ptp(xs), 1e-4), max(np.ptp(ys), 1e-4)
    height = float(np.clip(_AXES_WIDTH * span_y / span_x, 1.8, 4.6))
    left, right, bottom, top = _MARGINS
    size = (left + _AXES_WIDTH + right, bottom + height + top)
    fig = Figure(figsize=size, dpi=_DPI, facecolor=FIGURE_COLOUR)
    ax = fig.add_axes((left / size[0], bottom / size[1], _AXES_WIDTH / size[0], height / size[1]))
    ax.set_facecolor("white")
    cax = fig.add_axes(((left + _AXES_WIDTH + 0.17) / size[0], bottom / size[1],
                        0.15 / size[0], height / size[1]))  # fmt: skip
    margin = 0.04 * max(span_x, span_y)
    width, tall = span_x + 2 * margin, span_y + 2 * margin
    width, tall = max(width, tall * _AXES_WIDTH / height), max(tall, width * height / _AXES_WIDTH)
    cx, cy = (xs.max() + xs.min()) / 2, (ys.max() + ys.min()) / 2
    ax.set_xlim(cx + width / 2, cx - width / 2)  # East to the left
    ax.set_ylim(cy - tall / 2, cy + tall / 2)
    ax.set_aspect("equal", adjustable="box")
    ax.tick_params(labelsize=6)
    ax.set_xlabel("xi (deg, East left)", fontsize=7)
    ax.set_ylabel("eta (deg, North up)", fontsize=7)
    return fig, ax, cax


def _label_size(ax, polygons: Sequence[np.ndarray]) -> float:
    """A font size (points) for CCD labels that fits a typical CCD's short side."""
    sides = [min(np.hypot(*(c[1] - c[0])), np.hypot(*(c[3] - c[0]))) for c in polygons]
    x0, x1 = ax.get_xlim()
    points = float(np.median(sides)) * _AXES_WIDTH * 72 / abs(x1 - x0)
    return float(np.clip(points / 3.6, 3.5, 7.5))
