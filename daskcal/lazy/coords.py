"""Lazy ``ra``/``dec`` coordinates of an exposure, evaluated through its SkyWcs where indexed.

:func:`with_sky_coords` attaches 2-D ``ra`` and ``dec`` coordinates (ICRS degrees, ra in
[0, 360)) on the (``y``, ``x``) dims of an exposure Dataset. They are backed by an xarray
:class:`~xarray.indexes.CoordinateTransform` (:class:`SkyCoordTransform`) that maps array
positions to PARENT pixels (``xy0 + step * position``) and those to the sky with
:meth:`~daskcal.calib.skywcs.SkyWcs.pixel_to_sky`: nothing is evaluated until the values
are read (``.values``, ``numpy.asarray``, writing to netCDF...), and then only at the
pixels asked for. Slicing with ``isel`` / ``sel`` keeps them lazy (a new transform over the
sub-grid); integer or array indexing evaluates the selected pixels. ``compute()`` /
``load()`` leave them lazy, as they leave index coordinates alone: evaluating every pixel
of a full 2048x4176 HSC CCD through a jointcal SkyWcs takes seconds and 136 MB, four times
the image, which ``cal.image.compute()`` should not pay unasked. ``ds.sel(ra=..., dec=...,
method="nearest")`` with ``xarray.Variable`` or ``DataArray`` labels finds the nearest
pixels through the inverse mapping.

The transform holds either a :class:`~daskcal.calib.skywcs.SkyWcs` (which pickles as its AST
text) or the path of a file whose SkyWcs :func:`~daskcal.calib.skywcs.read_skywcs` reads on
first use (pickled as the path; read once per process and file version), so Datasets
carrying these coordinates travel to Dask workers cheaply.

Two exposures whose sky coordinates differ (another SkyWcs, another pixel grid) cannot be
aligned: arithmetic or merging between them raises a ValueError saying so; drop the
coordinates of one first (:func:`drop_sky_coords`). Concatenation and ``xarray.map_blocks``
(which wants pandas indexes only) need them dropped too; :func:`sky_coord_arrays` gives
them as dask arrays instead, which is how :func:`daskcal.lazy.inputs.stack_exposures` keeps
them per exposure.

Why one module of more than ~300 lines: it is the one adapter to xarray's
CoordinateTransform index: no other module touches xarray's internals.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.base import normalize_token, tokenize
from numpy.typing import ArrayLike
from xarray.core.indexing import CoordinateTransformIndexingAdapter
from xarray.indexes import CoordinateTransform, CoordinateTransformIndex

from ..calib.skywcs import SkyWcs, read_skywcs

__all__ = [
    "SKY_COORDS",
    "SkyCoordIndex",
    "SkyCoordTransform",
    "drop_sky_coords",
    "sky_coord_arrays",
    "sky_transform",
    "with_sky_coords",
]

#: Names of the sky coordinates, in the order (longitude, latitude).
SKY_COORDS = ("ra", "dec")
_ATTRS = (
    {"units": "deg", "long_name": "ICRS right ascension"},
    {"units": "deg", "long_name": "ICRS declination"},
)


class SkyCoordTransform(CoordinateTransform):
    """(y, x) array positions -> ICRS (ra, dec) in degrees through a SkyWcs.

    Parameters
    ----------
    wcs : SkyWcs, str or os.PathLike
        The SkyWcs (0-based PARENT pixels -> sky), or a file (an exposure or a
        ``jointcal_wcs``) whose SkyWcs is read on first use.
    shape : (int, int)
        Grid size (ny, nx).
    xy0 : (float, float)
        PARENT pixel (x, y) of array position (0, 0).
    xy_step : (float, float)
        PARENT pixels (x, y) per array position (1 unless the grid was sliced with steps).
    dims : (str, str)
        The (row, column) dimension names.
    coord_names : (str, str)
        Names of the (ra, dec) coordinates.

    Notes
    -----
    xarray asks for one coordinate at a time, and each call evaluates both; the other
    result is kept until it is asked for at the same positions (once), so reading ``ra``
    then ``dec`` costs one evaluation. The arrays returned are read-only.
    """

    def __init__(
        self,
        wcs: SkyWcs | str | os.PathLike,
        shape: Sequence[int],
        xy0: Sequence[float] = (0, 0),
        xy_step: Sequence[float] = (1, 1),
        *,
        dims: Sequence[str] = ("y", "x"),
        coord_names: Sequence[Hashable] = SKY_COORDS,
    ):
        if len(shape) != 2 or len(dims) != 2 or len(coord_names) != 2:
            raise ValueError("a sky transform needs two dims, a 2-D shape and two names")
        super().__init__(
            coord_names, dict(zip(dims, (int(n) for n in shape), strict=True)), np.dtype("f8")
        )
        if isinstance(wcs, SkyWcs):
            self._wcs: SkyWcs | None = wcs
            self._path = ""
        else:
            self._wcs, self._path = None, os.fspath(wcs)
        # (row, column) order, like dims
        self._origin = (xy0[1], xy0[0])
        self._step = (xy_step[1], xy_step[0])
        self._lock = threading.Lock()
        self._kept: dict[bytes, dict[Hashable, np.ndarray]] = {}

    @property
    def skywcs(self) -> SkyWcs:
        """The SkyWcs (read from the file on first use when built from a path)."""
        if self._wcs is None:
            stat = os.stat(self._path)
            self._wcs = _file_skywcs(self._path, stat.st_mtime_ns, stat.st_size)
        return self._wcs

    @property
    def xy0(self) -> tuple[float, float]:
        """PARENT pixel (x, y) of array position (0, 0)."""
        return (self._origin[1], self._origin[0])

    @property
    def xy_step(self) -> tuple[float, float]:
        """PARENT pixels (x, y) per array position."""
        return (self._step[1], self._step[0])

    def parent_pixels(self, rows: ArrayLike, columns: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """PARENT (x, y), broadcast together, of array positions (rows, columns)."""
        y = self._origin[0] + self._step[0] * np.asarray(rows, dtype=np.float64)
        x = self._origin[1] + self._step[1] * np.asarray(columns, dtype=np.float64)
        x, y = np.broadcast_arrays(x, y)
        return x, y

    def sky(self, rows: ArrayLike, columns: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) in degrees at array positions (rows, columns), broadcast; no caching."""
        ra, dec = self.skywcs.pixel_to_sky(*self.parent_pixels(rows, columns))
        return np.asarray(ra), np.asarray(dec)

    def forward(self, dim_positions: dict[str, Any]) -> dict[Hashable, Any]:
        """Array positions along ``dims`` -> ``{ra: ..., dec: ...}`` in degrees."""
        rows, columns = (np.asarray(dim_positions[d]) for d in self.dims)
        key = _positions_key(rows, columns)
        with self._lock:
            kept = self._kept.pop(key, None)
        if kept is not None:
            return kept
        ra, dec = self.sky(rows, columns)
        ra.flags.writeable = dec.flags.writeable = False
        out = dict(zip(self.coord_names, (ra, dec), strict=True))
        with self._lock:
            self._kept = {key: out}
        return out

    def reverse(self, coord_labels: dict[Hashable, Any]) -> dict[str, Any]:
        """``{ra: ..., dec: ...}`` in degrees -> fractional array positions along ``dims``."""
        ra, dec = (coord_labels[name] for name in self.coord_names)
        x, y = self.skywcs.sky_to_pixel(ra, dec)
        rows = (np.asarray(y) - self._origin[0]) / self._step[0]
        columns = (np.asarray(x) - self._origin[1]) / self._step[1]
        return dict(zip(self.dims, (rows, columns), strict=True))

    def equals(
        self, other: CoordinateTransform, *, exclude: frozenset[Hashable] | None = None
    ) -> bool:
        """Same SkyWcs (AST text, or file), names and grid (dims in ``exclude`` ignored)."""
        if type(other) is not type(self) or self._wcs_key() != other._wcs_key():
            return False
        if (self.coord_names, self.dims) != (other.coord_names, other.dims):
            return False
        exclude = exclude or frozenset()
        return all(
            self._axis(i) == other._axis(i) for i, d in enumerate(self.dims) if d not in exclude
        )

    def sliced(self, slices: Mapping[Hashable, slice]) -> SkyCoordTransform:
        """The transform of the sub-grid selected by ``slices`` (dim -> slice)."""
        origin, step = list(self._origin), list(self._step)
        size = dict(self.dim_size)
        for i, dim in enumerate(self.dims):
            if dim in slices:
                picked = range(size[dim])[slices[dim]]
                origin[i] += step[i] * picked.start
                step[i] *= picked.step
                size[dim] = len(picked)
        out = SkyCoordTransform(
            self._path or self.skywcs,
            [size[d] for d in self.dims],
            (origin[1], origin[0]),
            (step[1], step[0]),
            dims=self.dims,
            coord_names=self.coord_names,
        )
        out._wcs = self._wcs  # a SkyWcs already read from the file is shared
        return out

    def _axis(self, i: int) -> tuple[Any, ...]:
        return (self.dim_size[self.dims[i]], self._origin[i], self._step[i])

    def _wcs_key(self) -> tuple[str, str]:
        return ("file", self._path) if self._path else ("ast", self.skywcs.ast_text)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_lock=None, _kept={})
        if self._path:  # re-read on the other side
            state["_wcs"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __dask_tokenize__(self) -> tuple:
        axes = tuple(self._axis(i) for i in range(2))
        return (type(self).__name__, self._wcs_key(), self.coord_names, self.dims, axes)

    def __repr__(self) -> str:
        wcs = repr(self._path) if self._path else repr(self._wcs)
        shape = tuple(self.dim_size[d] for d in self.dims)
        return (
            f"{type(self).__name__}({wcs}, shape={shape}, xy0={self.xy0}, "
            f"xy_step={self.xy_step}, dims={self.dims})"
        )


class SkyCoordIndex(CoordinateTransformIndex):
    """The xarray index of the lazy ``ra``/``dec`` coordinates (a :class:`SkyCoordTransform`).

    Slicing keeps the coordinates lazy (a transform over the sub-grid); any other
    selection drops the index and evaluates the selected pixels. Exposures with different
    sky coordinates refuse to align (a ValueError naming the way out).
    """

    transform: SkyCoordTransform

    def create_variables(self, variables=None):
        """The lazy coordinate variables, with units and names as attrs."""
        out = {}
        for name, var in super().create_variables(variables).items():
            out[name] = _LazySkyVariable(var.dims, var._data, var.attrs, var.encoding, True)
        for name, attrs in zip(self.transform.coord_names, _ATTRS, strict=True):
            if variables is None or name not in variables:
                out[name].attrs.update(attrs)
        return out

    def isel(self, indexers: Mapping[Any, Any]) -> SkyCoordIndex | None:
        """A lazy index of the sub-grid for slices; None (evaluate) for anything else."""
        if all(isinstance(v, slice) for v in indexers.values()):
            return type(self)(self.transform.sliced(indexers))
        return None

    def join(self, other: SkyCoordIndex, how: str = "inner") -> SkyCoordIndex:
        """``self`` if both are equal; a ValueError otherwise."""
        if self.equals(other):
            return self
        names = list(self.transform.coord_names)
        raise ValueError(
            f"cannot align exposures whose sky coordinates {names} differ (another SkyWcs "
            f"or pixel grid): drop them from one first, e.g. ds.drop_vars({names})"
        )

    def reindex_like(self, other: SkyCoordIndex) -> dict[Hashable, Any]:
        """No reindexing between equal indexes; a ValueError otherwise."""
        self.join(other)
        return {}


class _LazySkyVariable(xr.Variable):
    """A coordinate variable over a :class:`SkyCoordTransform` that stays lazy.

    ``load()`` / ``compute()`` (and so ``Dataset.compute()``) leave it lazy, as they leave an
    index variable alone: it is evaluated when its values are read. Its dask token is
    that of the transform, not of every value.
    """

    __slots__ = ()

    def load(self, **kwargs: Any) -> _LazySkyVariable:
        """Keep the coordinate lazy (other data is loaded as usual)."""
        if isinstance(self._data, CoordinateTransformIndexingAdapter):
            return self
        return super().load(**kwargs)

    async def load_async(self, **kwargs: Any) -> _LazySkyVariable:
        """As :meth:`load`."""
        if isinstance(self._data, CoordinateTransformIndexingAdapter):
            return self
        return await super().load_async(**kwargs)

    def __dask_tokenize__(self) -> object:
        data = self._data
        if not isinstance(data, CoordinateTransformIndexingAdapter):
            return super().__dask_tokenize__()
        lazy = (data._transform, data._coord_name, data._dims)
        return normalize_token((type(self), self._dims, lazy, self._attrs or None))


def with_sky_coords(ds: xr.Dataset, skywcs: SkyWcs | str | os.PathLike) -> xr.Dataset:
    """``ds`` with lazy 2-D ``ra``/``dec`` coordinates (degrees) from ``skywcs``.

    Parameters
    ----------
    ds : xarray.Dataset
        An exposure on dims (``y``, ``x``). PARENT pixels are taken from its ``x``/``y``
        coordinates (which :func:`daskcal.read_exposure` sets to ``xy0 + i``; they must
        be evenly spaced), or from ``attrs["xy0"]`` (default (0, 0)) without them.
    skywcs : SkyWcs, str or os.PathLike
        The SkyWcs, or a file whose SkyWcs is read when first needed.

    Returns
    -------
    xarray.Dataset
        A new Dataset; any ``ra``/``dec`` it had are replaced. Nothing is evaluated here.

    Examples
    --------
    >>> ds = with_sky_coords(read_exposure(path), read_skywcs(jointcal_wcs))  # doctest: +SKIP
    >>> ds.isel(y=slice(0, 10), x=slice(0, 10)).ra.values  # 100 pixels  # doctest: +SKIP
    """
    xy0 = ds.attrs.get("xy0", (0, 0))
    x0, sx = _parent_axis(ds, "x", xy0[0])
    y0, sy = _parent_axis(ds, "y", xy0[1])
    transform = SkyCoordTransform(skywcs, (ds.sizes["y"], ds.sizes["x"]), (x0, y0), (sx, sy))
    coords = xr.Coordinates.from_xindex(SkyCoordIndex(transform))
    return drop_sky_coords(ds).assign_coords(coords)


def drop_sky_coords(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` without its ``ra``/``dec`` coordinates (if any)."""
    return ds.drop_vars([name for name in SKY_COORDS if name in ds.variables])


def sky_transform(ds: xr.Dataset) -> SkyCoordTransform | None:
    """The transform behind the lazy ``ra``/``dec`` of ``ds``, or None."""
    index = ds.xindexes.get(SKY_COORDS[0])
    return index.transform if isinstance(index, SkyCoordIndex) else None


def sky_coord_arrays(ds: xr.Dataset) -> tuple[da.Array, da.Array] | None:
    """``ra`` and ``dec`` of ``ds`` as dask arrays chunked like its ``image``, or None.

    Lazy coordinates become one task per block (evaluating both), all sharing one graph
    node that holds the transform; coordinates already in memory are wrapped as they are.
    None when ``ds`` has no ``ra``/``dec`` on (``y``, ``x``).
    """
    transform = sky_transform(ds)
    if transform is None:
        if not all(n in ds.coords and ds[n].dims == ("y", "x") for n in SKY_COORDS):
            return None
        return da.asarray(ds[SKY_COORDS[0]].data), da.asarray(ds[SKY_COORDS[1]].data)
    image = ds["image"].data if "image" in ds else None
    if isinstance(image, da.Array) and ds["image"].dims == ("y", "x"):
        chunks = image.chunks
    else:
        chunks = ((ds.sizes["y"],), (ds.sizes["x"],))
    token = tokenize(transform, chunks)
    shared = dask.delayed(transform, pure=True, name=f"sky-transform-{token}")
    pair = da.map_blocks(
        _sky_block, shared, chunks=((2,), *chunks), dtype=np.float64,
        meta=np.empty((0, 0, 0)), name=f"sky-coords-{token}",
    )  # fmt: skip
    return pair[0], pair[1]


def _sky_block(transform: SkyCoordTransform, block_info: dict | None = None) -> np.ndarray:
    """One block task: (ra, dec) stacked, shape (2, rows, columns) of the block."""
    _, (r0, r1), (c0, c1) = block_info[None]["array-location"]
    ra, dec = transform.sky(np.arange(r0, r1)[:, None], np.arange(c0, c1)[None, :])
    return np.stack([ra, dec])


def _parent_axis(ds: xr.Dataset, dim: str, default_origin: float) -> tuple[Any, Any]:
    """(PARENT origin, step) of a dim from its 1-D coordinate, else (default, 1)."""
    if dim not in ds.coords or ds[dim].ndim != 1 or ds.sizes[dim] == 0:
        return default_origin, 1
    values = ds[dim].values
    if values.size == 1:
        return values[0].item(), 1
    start, step = values[0].item(), (values[1] - values[0]).item()
    if step == 0 or not np.array_equal(values, start + step * np.arange(values.size)):
        raise ValueError(f"the {dim!r} coordinate is not evenly spaced PARENT pixels")
    return start, step


@functools.lru_cache(maxsize=128)
def _file_skywcs(path: str, mtime_ns: int, size: int) -> SkyWcs:
    """The SkyWcs of a file, read once per process (and again if the file changes)."""
    return read_skywcs(path)


def _positions_key(rows: np.ndarray, columns: np.ndarray) -> bytes:
    """A digest of the positions asked for (shape, dtype and values of both arrays)."""
    digest = hashlib.blake2b(digest_size=16)
    for a in (rows, columns):
        digest.update(f"{a.shape}{a.dtype.str}".encode())
        digest.update(np.ascontiguousarray(a).data)
    return digest.digest()
