"""The sky correction (skyCorr) over a CCD: a coarse image, its mean level and its range.

The background is evaluated as the exposure job subtracts it (afw's interpolation of the
binned stats image, :class:`~daskcal.calib.background.BackgroundList`), on a few full rows
per map cell rather than on every pixel: a background varies over hundreds of pixels, so
this sees its level, gradients and steps for a fraction of the cost.
"""

from __future__ import annotations

import math

import numpy as np

from ..calib.background import BackgroundList

__all__ = ["ROWS_PER_CELL", "skycorr_summary"]

ROWS_PER_CELL = 4
"""Rows evaluated per map cell."""


def skycorr_summary(
    background: BackgroundList, cells: tuple[int, int]
) -> tuple[np.ndarray, dict[str, float]]:
    """The background binned to ``cells`` = (ny, nx) and its mean, min, max and range.

    Parameters
    ----------
    background : BackgroundList
        The skyCorr, in the units of the calibrated image (counts scaled by c / cbar).
    cells : (int, int)
        Map cells along y and x.

    Returns
    -------
    grid : ndarray, shape (ny, nx)
        Mean of the evaluated values in each cell.
    stats : dict
        ``sky_mean``, ``sky_min``, ``sky_max`` and ``sky_range`` (max - min) of the
        evaluated values.
    """
    height, width = background.shape
    ny, nx = cells
    # rows at the centres of ROWS_PER_CELL equal slices of each cell
    edges = (np.arange(ny * ROWS_PER_CELL) + 0.5) * height / (ny * ROWS_PER_CELL)
    rows = np.clip(edges.astype(int), 0, height - 1)
    values = np.concatenate([background.evaluate_block(0, width, r, r + 1, np.float64)
                             for r in rows])  # fmt: skip
    usable = width // nx * nx
    grid = values[:, :usable].reshape(ny, ROWS_PER_CELL, nx, usable // nx).mean(axis=(1, 3))
    finite = values[np.isfinite(values)]
    if not finite.size:
        nan = math.nan
        return grid, {"sky_mean": nan, "sky_min": nan, "sky_max": nan, "sky_range": nan}
    low, high = float(finite.min()), float(finite.max())
    stats = {"sky_mean": float(finite.mean()), "sky_min": low, "sky_max": high}
    return grid, {**stats, "sky_range": high - low}
