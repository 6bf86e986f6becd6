"""Sky backgrounds: the calexp's original background and the skyCorr BackgroundList.

The true sky of a visit is a smooth function of focal-plane position: a level with a
radial and linear gradient (focal-plane model 1) plus a pattern of a few counts (model 2).
Single-frame processing fitted each CCD on its own and got it slightly wrong (an offset
and gradient of a few counts): that is the calexp's background, stored as a Chebyshev
approximation (APPROXSTYLE 0, order 6) on 128-pixel bins. The skyCorr is that background
with its sign flipped followed by the two focal-plane models as Akima entries on 64-pixel
bins (bins shrink with the CCD at ``size="small"``), so its sum, the correction applied to
the calexp, is a few counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..calib.background import BackgroundEntry, BackgroundList
from ..calib.interpolation import ApproxStyle, InterpStyle, bin_centers
from .focalplane import SIZES, Ccd

__all__ = ["SkyModel", "make_backgrounds"]

_CALEXP_BIN = 128
_FOCAL_PLANE_BIN = 64
_CHEBYSHEV_ORDER = 6


@dataclass(frozen=True)
class SkyModel:
    """Parameters of one visit's sky (counts), drawn per visit."""

    level: float
    radial: float
    tilt: tuple[float, float]
    amplitude: float
    waves: tuple[float, float]
    phases: tuple[float, float]

    @classmethod
    def draw(cls, rng: np.random.Generator, level: float) -> SkyModel:
        """A visit's sky around ``level`` counts."""
        return cls(
            level=float(level),
            radial=float(rng.uniform(-0.03, 0.03)),
            tilt=tuple(float(v) for v in rng.normal(0.0, 0.01, 2)),
            amplitude=float(rng.uniform(2.0, 5.0)),
            waves=tuple(float(v) for v in rng.uniform(0.8, 1.6, 2)),
            phases=tuple(float(v) for v in rng.uniform(0.0, 2.0 * np.pi, 2)),
        )

    def bulk(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Focal-plane model 1 at field-radius units (u, v)."""
        return self.level * (
            1.0 + self.radial * (u * u + v * v) + self.tilt[0] * u + self.tilt[1] * v
        )

    def pattern(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Focal-plane model 2 (a few counts) at field-radius units (u, v)."""
        wx, wy = self.waves
        px, py = self.phases
        return self.amplitude * np.sin(2 * np.pi * wx * u + px) * np.cos(2 * np.pi * wy * v + py)


def _grid(ccd: Ccd, size: str, binsize: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Field-radius coordinates (u, v) of the bin centres (ny, nx) and pixels per bin."""
    b = max(binsize // SIZES[size].shrink, 2)
    nx, ny = -(-ccd.width // b), -(-ccd.height // b)
    xx, yy = np.meshgrid(bin_centers(nx, ccd.width), bin_centers(ny, ccd.height))
    fx, fy = ccd.to_focal(xx, yy)
    radius = SIZES[size].vignetting_mm
    return fx / radius, fy / radius, b * b


def make_backgrounds(
    rng: np.random.Generator, ccd: Ccd, size: str, sky: SkyModel, pixel_variance: float
) -> tuple[BackgroundList, BackgroundList]:
    """(skyCorr, calexpBackground) of one CCD.

    Draws three numbers from ``rng``: the offset and the x/y gradient of the single-frame
    background's error.
    """
    bbox = (0, 0, ccd.width, ccd.height)
    u, v, npix = _grid(ccd, size, _CALEXP_BIN)
    offset, gx, gy = rng.normal(0.0, [3.0, 2.0, 2.0])
    xr = np.linspace(-1.0, 1.0, u.shape[1])[None, :]
    yr = np.linspace(-1.0, 1.0, u.shape[0])[:, None]
    calexp_stats = sky.bulk(u, v) + sky.pattern(u, v) + offset + gx * xr + gy * yr
    variance = np.full(u.shape, pixel_variance / npix, dtype=np.float32)
    common = {"bbox": bbox, "variance": variance, "approx_style": ApproxStyle.CHEBYSHEV,
              "approx_order_x": _CHEBYSHEV_ORDER, "approx_order_y": _CHEBYSHEV_ORDER,
              "interp_style": InterpStyle.NATURAL_SPLINE}  # fmt: skip
    original = BackgroundEntry(calexp_stats, **common)
    flipped = BackgroundEntry(-calexp_stats, **common)
    u, v, npix = _grid(ccd, size, _FOCAL_PLANE_BIN)
    fp_variance = np.full(u.shape, pixel_variance / npix, dtype=np.float32)
    focal = [
        BackgroundEntry(model(u, v), bbox, fp_variance, interp_style=InterpStyle.AKIMA_SPLINE)
        for model in (sky.bulk, sky.pattern)
    ]
    return BackgroundList([flipped, *focal]), BackgroundList([original])
