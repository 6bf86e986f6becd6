"""Quick-look PNG mosaics of a visit's calibrated CCDs (``calibrateExposure --quicklook``).

Each CCD's calibrated image is binned (about 256 pixels on its long side; BAD, SAT and
NO_DATA pixels and NaNs left out) into a small thumbnail saved with the sky position of
three of its corners (``.npz`` in ``calibrated/.work/quicklook``). The per-visit task
places every thumbnail on the gnomonic tangent plane at the visit's centre through the
affine map its corners give, so any camera layout (and rotated CCDs) come out right
without a camera model, and writes ``calibrated/<tract %04d>/quicklook/visit-<visit
%07d>.png`` (North up, East left). The grey scale is shared by all CCDs: an asinh stretch
between the median - 2 sigma (sigma from the MAD, as zscale estimates it) and the 99.9th
percentile. matplotlib is used through its Agg canvas only (no GUI, no global backend).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..calib.sip import gnomonic_iwc
from ..calib.skywcs import SkyWcs, read_skywcs
from ..dataid import format_id
from ..errors import failure_reason
from ..io.atomic import atomic_write
from ..io.exposure import read_exposure, read_rows
from ..layout import OutputLayout
from ..records import inspect_output
from ..report import Outcome

__all__ = [
    "bin_image",
    "quicklook_path",
    "render_mosaic",
    "save_thumbnail",
    "thumbnail_from_calexp",
    "thumbnail_path",
    "write_visit_quicklook",
]

THUMB_PIXELS = 256
"""Target size of a thumbnail's long side."""
_BAD_PLANES = ("BAD", "SAT", "NO_DATA")
_CALEXP = re.compile(r"CALEXP-(\d{7})-(\d{3})\.fits$")


def thumbnail_path(work_dir: str | os.PathLike, dataid: Mapping[str, Any]) -> Path:
    """Where one CCD's thumbnail waits for its visit mosaic, under the thumbnail folder
    ``work_dir`` (:meth:`daskcal.layout.OutputLayout.thumbnail`)."""
    return OutputLayout.thumbnail_in(work_dir, dataid)


def quicklook_path(calibrated_dir: str | os.PathLike, tract: int, visit: int) -> Path:
    """``<calibrated>/<tract %04d>/quicklook/visit-<visit %07d>.png``."""
    return OutputLayout(Path(calibrated_dir).parent).quicklook(tract, visit)


def bin_image(
    image: np.ndarray, mask: np.ndarray, mask_planes: Mapping[str, int], factor: int
) -> np.ndarray:
    """Mean of ``factor`` x ``factor`` blocks over good pixels (NaN where none is good).

    Rows and columns beyond a multiple of ``factor`` are dropped.
    """
    bits = sum(1 << int(mask_planes[p]) for p in _BAD_PLANES if p in mask_planes)
    ny, nx = (n // factor * factor for n in image.shape)
    data = np.asarray(image[:ny, :nx], dtype=np.float64)
    good = np.isfinite(data) & ((mask[:ny, :nx] & bits) == 0)
    shape = (ny // factor, factor, nx // factor, factor)
    sums = np.where(good, data, 0.0).reshape(shape).sum(axis=(1, 3))
    counts = good.reshape(shape).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts).astype(np.float32)


def save_thumbnail(
    path: str | os.PathLike,
    image: np.ndarray,
    mask: np.ndarray,
    mask_planes: Mapping[str, int],
    xy0: Sequence[int],
    wcs: SkyWcs | str | os.PathLike,
) -> Path:
    """Bin a calibrated CCD and save it with the sky position of three corners.

    ``wcs`` is the CCD's SkyWcs, or a file to read it from (an exposure).
    """
    if not isinstance(wcs, SkyWcs):
        wcs = read_skywcs(wcs)
    factor = max(1, round(max(image.shape) / THUMB_PIXELS))
    thumb = bin_image(image, mask, mask_planes, factor)
    x0, y0 = float(xy0[0]) - 0.5, float(xy0[1]) - 0.5
    width, height = thumb.shape[1] * factor, thumb.shape[0] * factor
    ra, dec = wcs.pixel_to_sky(np.array([x0, x0 + width, x0]), np.array([y0, y0, y0 + height]))
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, image=thumb, ra=np.asarray(ra), dec=np.asarray(dec))
    return Path(path)


def thumbnail_from_calexp(calexp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """:func:`save_thumbnail` of a CALEXP file (for CCDs calibrated by an earlier run)."""
    ds = read_exposure(calexp)
    file, hdus, ny = ds.attrs["path"], ds.attrs["hdus"], ds.sizes["y"]
    image = read_rows(file, hdus["image"], 0, ny, "float32")
    mask = read_rows(file, hdus["mask"], 0, ny, "int32")
    return save_thumbnail(path, image, mask, ds.attrs["mask_planes"], ds.attrs["xy0"], calexp)


def _limits(thumbs: Sequence[np.ndarray]) -> tuple[float, float]:
    values = np.concatenate([t[np.isfinite(t)] for t in thumbs])
    if not values.size:
        return 0.0, 1.0
    median = float(np.median(values))
    sigma = 1.4826 * float(np.median(np.abs(values - median))) or 1.0
    low = median - 2.0 * sigma
    return low, max(float(np.percentile(values, 99.9)), low + 10.0 * sigma)


def _stretch(image: np.ndarray, low: float, high: float, q: float = 10.0) -> np.ndarray:
    scaled = np.clip((image - low) / (high - low), 0.0, 1.0)
    return np.arcsinh(q * scaled) / np.arcsinh(q)


def _tangent_point(ra: np.ndarray, dec: np.ndarray) -> tuple[float, float]:
    ra, dec = np.radians(ra), np.radians(dec)
    v = np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)]).mean(axis=1)
    lon = np.degrees(np.arctan2(v[1], v[0])) % 360.0
    return float(lon), float(np.degrees(np.arcsin(v[2] / np.linalg.norm(v))))


def render_mosaic(
    thumbs: Sequence[Mapping[str, Any]],
    out: str | os.PathLike,
    title: str = "",
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Draw thumbnails (dicts with ``image``, ``ra``, ``dec``, ``ccd``) on one PNG.

    ``metadata`` goes into the PNG's text chunks.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.transforms import Affine2D

    centre = _tangent_point(
        np.concatenate([t["ra"] for t in thumbs]), np.concatenate([t["dec"] for t in thumbs])
    )
    low, high = _limits([t["image"] for t in thumbs])
    fig = Figure(figsize=(8, 8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_facecolor("0.15")
    corners = []
    for t in thumbs:
        (x00, x10, x01), (y00, y10, y01) = gnomonic_iwc(t["ra"], t["dec"], centre)
        rows, cols = t["image"].shape
        matrix = [[(x10 - x00) / cols, (x01 - x00) / rows, x00],
                  [(y10 - y00) / cols, (y01 - y00) / rows, y00], [0.0, 0.0, 1.0]]  # fmt: skip
        ax.imshow(_stretch(t["image"], low, high), origin="lower", extent=(0, cols, 0, rows),
                  transform=Affine2D(np.array(matrix)) + ax.transData, cmap="gray", vmin=0,
                  vmax=1, interpolation="nearest")  # fmt: skip
        cx, cy = (x10 + x01) / 2, (y10 + y01) / 2
        ax.text(cx, cy, str(t["ccd"]), color="tab:orange", fontsize=6, ha="center", va="center")
        corners += [(x00, y00), (x10, y10), (x01, y01), (x10 + x01 - x00, y10 + y01 - y00)]
    xs, ys = np.array(corners).T
    margin = 0.03 * max(np.ptp(xs), np.ptp(ys), 1e-3)
    ax.set_xlim(xs.max() + margin, xs.min() - margin)  # East to the left
    ax.set_ylim(ys.min() - margin, ys.max() + margin)
    ax.set_aspect("equal")
    ax.set_xlabel("xi (deg, East left)")
    ax.set_ylabel("eta (deg, North up)")
    ax.set_title(title, fontsize=10)
    with atomic_write(out) as tmp:
        fig.savefig(tmp, format="png", metadata=dict(metadata or {}))
    return Path(out)


_MEMBERS_KEY = "daskcal-ccds"


def _recorded_members(png: Path) -> str | None:
    """The CALEXP records a quick-look was drawn from (its PNG text), or None."""
    from PIL import Image

    if not png.is_file():
        return None
    try:
        with Image.open(png) as image:
            return image.text.get(_MEMBERS_KEY)
    except (OSError, ValueError):
        return None


def write_visit_quicklook(
    layout: OutputLayout, visit_id: dict[str, Any], outcomes: list[Outcome]
) -> Outcome:
    """The visit's PNG from every whole CALEXP of the visit in the output (this run's or not).

    The PNG records the CALEXP records it was drawn from and is redrawn when they change.
    """
    tract, filt, visit = visit_id["tract"], visit_id["filter"], visit_id["visit"]
    out = layout.quicklook(tract, visit)
    where = {k: visit_id[k] for k in ("tract", "filter", "visit")}
    folder = layout.ccd_folder(tract, visit_id["pointing"], filt)
    try:
        members = {}
        for calexp in sorted(folder.glob(f"CALEXP-{visit:07d}-*.fits")):
            record, problem = inspect_output(calexp)
            if problem is None:
                st = calexp.stat()
                members[int(_CALEXP.search(calexp.name).group(2))] = (
                    calexp,
                    record or f"{st.st_size}-{st.st_mtime_ns}",
                )
        if not members:
            status = "failed" if any(o.status != "failed" for o in outcomes) else "skipped"
            reason = f"no CALEXP for {format_id(where)} in {folder}"
            return Outcome(where, status, reason=reason, kind="quicklook")
        wanted = json.dumps({str(c): r for c, (_, r) in sorted(members.items())})
        if out.exists() and _recorded_members(out) == wanted:
            return Outcome(where, "skipped", output=str(out), kind="quicklook")
        thumbs = []
        for ccd, (calexp, _) in sorted(members.items()):
            thumb = layout.thumbnail({"tract": tract, "visit": visit, "ccd": ccd})
            if not thumb.exists() or thumb.stat().st_mtime_ns < calexp.stat().st_mtime_ns:
                thumbnail_from_calexp(calexp, thumb)
            with np.load(thumb) as data:
                thumbs.append({"ccd": ccd, **{k: data[k] for k in ("image", "ra", "dec")}})
        title = f"visit {visit} ({filt}), tract {tract}: {len(thumbs)} calibrated CCDs"
        render_mosaic(thumbs, out, title, metadata={_MEMBERS_KEY: wanted})
    except Exception as err:
        return Outcome(where, "failed", reason=failure_reason(err, str(out)), kind="quicklook")
    extra = {"ccds": len(thumbs)}
    return Outcome(where, "done", output=str(out), extra=extra, kind="quicklook")
