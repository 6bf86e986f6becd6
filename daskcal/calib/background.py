"""Sky backgrounds (afw ``BackgroundList``: skyCorr, calexpBackground), evaluated as afw does.

A BackgroundList file holds entries of three HDUs each (image, mask, variance of a binned
"stats" image; the first image is the primary HDU), every HDU carrying the cards INTERPSTYLE,
UNDERSAMPLESTYLE, APPROXSTYLE, APPROXORDERX/Y, APPROXWEIGHTING and BKGD_X0/Y0/WIDTH/HEIGHT.
Each entry becomes a full-resolution image as in afw's ``BackgroundMI.getImage``
(docs/calibration.md, 'Sky correction'): a total-order Chebyshev fit when APPROXSTYLE is 0
(afw's ``ApproximateChebyshev``: terms T_i(x') T_j(y') with i + j <= APPROXORDERX, normal
equations weighted by float32 1/variance, solved by LU once per entry and cached), else
interpolation of each stats column along y then of each pixel row along x, with afw's
quadratic extrapolation past the end bin centres. Entries are evaluated in float64, cast to
float32 and summed in float32, as ``BackgroundList.getImage`` does.

Coordinates: images and blocks use 0-based indices of the full-resolution array, i.e. they are
relative to the entry's bbox; array pixel (i, j) lies at PARENT (BKGD_X0 + i, BKGD_Y0 + j).
afw itself works in these local coordinates (bin centres and the Chebyshev domain
[-0.5, W-0.5] x [-0.5, H-0.5] are relative to the bbox), so BKGD_X0/Y0 never enter the math.

Too few finite bins for the interpolation style: REDUCE_INTERP_ORDER (1) falls back to the
highest style the points allow (1 CONSTANT, 2 LINEAR, 3-4 CUBIC_SPLINE, as afw's
``lookupMaxInterpStyle``) and an empty column or row gives NaN; THROW_EXCEPTION (0) raises
``ValueError``; INCREASE_NXNYSAMPLE (2), unimplemented in afw too, raises
``NotImplementedError``, as do the periodic styles. The Akima spline is GSL's (exact zero tests,
no global threshold as in scipy's), so every row is independent of the others and a block of
rows is bit-identical to the same rows of the whole image.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import numpy as np

from .interpolation import (
    MIN_POINTS,
    ApproxStyle,
    InterpStyle,
    UndersampleStyle,
    bin_centers,
    chebyshev_basis,
    interpolate_nan,
    max_style,
    min_points,
    outer_sum,
    resolve_style,
)

DEFAULT_MASK_PLANES = {
    "BAD": 0,
    "SAT": 1,
    "INTRP": 2,
    "CR": 3,
    "EDGE": 4,
    "DETECTED": 5,
    "DETECTED_NEGATIVE": 6,
    "SUSPECT": 7,
    "NO_DATA": 8,
    "UNMASKEDNAN": 9,
}


@dataclass(frozen=True, eq=False)
class BackgroundEntry:
    """One background: a binned stats image (ny, nx) and how to expand it to its bbox.

    ``bbox`` is (x0, y0, width, height) of the full-resolution image in PARENT pixels.
    ``variance`` defaults to ones (float32), ``mask`` to zeros (int32, as hscPipe 8 writes),
    ``mask_planes`` to afw's default planes; ``approx_order_y = -1`` means ``approx_order_x``.
    """

    image: np.ndarray
    bbox: tuple[int, int, int, int]
    variance: np.ndarray | None = None
    mask: np.ndarray | None = None
    interp_style: InterpStyle = InterpStyle.AKIMA_SPLINE
    undersample_style: UndersampleStyle = UndersampleStyle.REDUCE_INTERP_ORDER
    approx_style: ApproxStyle = ApproxStyle.UNKNOWN
    approx_order_x: int = 1
    approx_order_y: int = -1
    approx_weighting: bool = True
    mask_planes: dict[str, int] | None = None

    def __post_init__(self) -> None:
        image = np.asarray(self.image, dtype=np.float32)
        defaults = {"image": image, "bbox": tuple(int(v) for v in self.bbox),
                    "variance": np.ones_like(image) if self.variance is None else self.variance,
                    "mask": np.zeros(image.shape, np.int32) if self.mask is None else self.mask,
                    "mask_planes": dict(self.mask_planes or DEFAULT_MASK_PLANES),
                    "interp_style": InterpStyle(int(self.interp_style)),
                    "undersample_style": UndersampleStyle(int(self.undersample_style)),
                    "approx_style": ApproxStyle(int(self.approx_style)),
                    "approx_order_x": int(self.approx_order_x),
                    "approx_order_y": int(self.approx_order_y),
                    "approx_weighting": bool(self.approx_weighting)}  # fmt: skip
        for name, value in defaults.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "variance", np.asarray(self.variance, dtype=np.float32))
        if image.ndim != 2 or self.variance.shape != image.shape or self.mask.shape != image.shape:
            raise ValueError("stats image, variance and mask must be 2-D arrays of one shape")
        if self.approx_order_y not in (-1, self.approx_order_x):
            raise ValueError("afw's Chebyshev approximation needs APPROXORDERX == APPROXORDERY")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BackgroundEntry):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    __hash__ = None  # type: ignore[assignment]

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the full-resolution image."""
        return self.bbox[3], self.bbox[2]

    def evaluate(self, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
        """The full-resolution float64 image over columns [x0, x1) and rows [y0, y1)."""
        xs, ys = np.arange(x0, x1, dtype=float), np.arange(y0, y1, dtype=float)
        style = self._interp_style_used
        if self.approx_style == ApproxStyle.CHEBYSHEV:
            coeffs = self._chebyshev
            order = len(coeffs) - 1
            tx, ty = (
                chebyshev_basis(xs, self.bbox[2], order),
                chebyshev_basis(ys, self.bbox[3], order),
            )
            q = [sum(tx[:, i] * coeffs[i, j] for i in range(order + 1)) for j in range(order + 1)]
            return outer_sum(ty, q)
        (ny, nx), under = self.image.shape, self.undersample_style
        stats = self.image.astype(np.float64)
        grid = interpolate_nan(
            bin_centers(ny, self.bbox[3]), stats, ys, style, under
        )  # (rows, nx)
        return interpolate_nan(bin_centers(nx, self.bbox[2]), grid.T, xs, style, under).T

    @functools.cached_property
    def _interp_style_used(self) -> InterpStyle:
        """afw's whole-entry check of the bin counts against the interpolation style."""
        ny, nx = self.image.shape
        style, under = self.interp_style, self.undersample_style
        if style not in MIN_POINTS and self.approx_style == ApproxStyle.CHEBYSHEV:
            return style
        if min(nx, ny) < min_points(style):
            resolve_style(style, min(nx, ny), under)  # raises unless REDUCE_INTERP_ORDER
            return max_style(min(nx, ny))
        return style

    @functools.cached_property
    def _chebyshev(self) -> np.ndarray:
        """Weighted least-squares total-order Chebyshev coefficients C[i, j] of T_i(x) T_j(y)."""
        ny, nx = self.image.shape
        order = self.approx_order_x
        terms = [(n - k, k) for n in range(order + 1) for k in range(n + 1)]  # afw's order
        tx = chebyshev_basis(bin_centers(nx, self.bbox[2]), self.bbox[2], order)
        ty = chebyshev_basis(bin_centers(ny, self.bbox[3]), self.bbox[3], order)
        design = np.stack([ty[:, j, None] * tx[None, :, i] for i, j in terms], -1)
        with np.errstate(divide="ignore"):
            ivar = np.float32(1) / self.variance if self.approx_weighting else np.ones(nx * ny)
        val, ivar = self.image.ravel().astype(np.float64), np.ravel(ivar).astype(np.float64)
        good = np.isfinite(val + ivar)
        a = design.reshape(nx * ny, len(terms))[good]
        normal = a.T @ (a * ivar[good, None])
        if not normal.any():
            raise ValueError("no valid points for the Chebyshev background fit")
        coeffs = np.zeros((order + 1, order + 1))
        coeffs[tuple(np.array(terms).T)] = np.linalg.solve(normal, a.T @ (val[good] * ivar[good]))
        return coeffs


def _copy_rounded(out: np.ndarray, values: np.ndarray, columns: int = 128) -> None:
    """``out[...] = values`` rounded to ``out``'s dtype; a transposed ``values`` (the
    interpolated entries are computed column-major) is copied ``columns`` output columns
    at a time, reading whole cache lines of its rows: ~2x faster, the same values."""
    if values.ndim != 2 or values.flags.c_contiguous or not values.T.flags.c_contiguous:
        np.copyto(out, values, casting="same_kind")
        return
    for c0 in range(0, out.shape[1], columns):
        np.copyto(out[:, c0 : c0 + columns], values[:, c0 : c0 + columns], casting="same_kind")


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    return a == b


@dataclass(frozen=True)
class BackgroundList:
    """The entries of one BackgroundList file; its image is the float32 sum of theirs."""

    entries: tuple[BackgroundEntry, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", tuple(self.entries))
        if not self.entries or any(e.bbox != self.entries[0].bbox for e in self.entries):
            raise ValueError("a BackgroundList needs one or more entries sharing one bbox")

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(x0, y0, width, height) of the full-resolution image (BKGD_* cards)."""
        return self.entries[0].bbox

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the full-resolution image."""
        return self.entries[0].shape

    def evaluate_block(
        self, x0: int, x1: int, y0: int, y1: int, dtype: np.dtype | type = np.float32
    ) -> np.ndarray:
        """Sum of the entries over array columns [x0, x1) and rows [y0, y1) (bbox-relative).

        With float32 (the default) each entry is cast to float32 and added in float32, as
        afw does; float64 sums the unrounded entries.
        """
        height, width = self.shape
        if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
            raise ValueError(f"block [{x0}:{x1}, {y0}:{y1}] is outside {width} x {height}")
        if x0 == x1 or y0 == y1:  # dask may probe with empty blocks
            return np.zeros((y1 - y0, x1 - x0), dtype)
        total = np.empty((y1 - y0, x1 - x0), dtype)
        _copy_rounded(total, self.entries[0].evaluate(x0, x1, y0, y1))
        rounded = np.empty_like(total) if len(self.entries) > 1 else total
        for entry in self.entries[1:]:  # each entry rounded to dtype, then added in dtype
            _copy_rounded(rounded, entry.evaluate(x0, x1, y0, y1))
            total += rounded
        return total

    def image_rows(self, y0: int, y1: int, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """Full-width rows [y0, y1) of the image."""
        return self.evaluate_block(0, self.shape[1], y0, y1, dtype)

    def image(self, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """The whole full-resolution image, shape (BKGD_HEIGHT, BKGD_WIDTH)."""
        return self.evaluate_block(0, self.shape[1], 0, self.shape[0], dtype)
