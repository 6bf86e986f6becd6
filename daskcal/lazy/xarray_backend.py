"""xarray backend ``engine="daskcal"``: afw exposure files (calexp, CALEXP) for xarray.

Registered under the ``xarray.backends`` entry point, so that with daskcal installed::

    ds = xr.open_dataset("CORR-0001228-050.fits", engine="daskcal", chunks={"y": 512})
    ds = xr.open_mfdataset(paths, engine="daskcal", combine="nested", concat_dim="exposure")

gives the planes :func:`daskcal.read_exposure` gives (``image``, ``mask``, ``variance`` on
(``y``, ``x``) with PARENT-pixel coords) and its attrs (mask planes, headers, archive
handle), plus ``attrs["photocalib"]`` and ``attrs["skywcs"]``: :class:`LazyProduct`
objects that read the PhotoCalib / SkyWcs from the archive on first use
(``ds.attrs["photocalib"].mean``, or ``.load()``). Opening reads headers only.

How ``chunks=`` works: the planes are :class:`ExposurePlaneArray` objects, lazily indexed
:class:`~xarray.backends.BackendArray` s, and xarray does the chunking. Without ``chunks``
nothing is read until values are asked for, and then only the rows asked for
(``ds.image[:10].values`` decodes 10 rows). With ``chunks`` xarray wraps each plane in a
dask array of those chunks, one read task per block (``chunks={"y": 512}``: blocks of 512
whole rows). Every read decodes whole rows, so the preferred chunks (``encoding
["preferred_chunks"]``) are whole rows: ``chunks={}`` and ``chunks="auto"`` give one block
of all rows (a full HSC CCD is 34 MB a plane), and blocks that split rows (``{"x": n}``)
work but make xarray warn that they separate the stored chunks.

Sky coordinates: ``sky_coords=True`` attaches the lazy ``ra``/``dec`` of
:func:`daskcal.read_exposure` (see :mod:`daskcal.lazy.coords`); with ``chunks`` xarray
makes dask arrays of them too, evaluated block by block when computed. They are off by
default because exposures with different sky coordinates cannot be combined:
``open_mfdataset`` with them raises a ValueError saying so. To stack exposures with their
sky coordinates use :func:`daskcal.open_exposures` with ``stack=True``. ``open_mfdataset``
keeps the first file's attrs; ``combine_attrs="drop_conflicts"`` keeps only those the files
share (mask planes, xy0...).

Importing this module is cheap (xarray imports every registered backend when it lists
engines): the reader and the calibration classes are imported when a file is opened.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np
import xarray as xr
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

__all__ = ["DaskcalBackendEntrypoint", "ExposurePlaneArray", "LazyProduct"]

#: File name endings ``guess_can_open`` looks at (then the HDUs are checked).
FITS_SUFFIXES = (".fits", ".fit", ".fts")
_PLANES = ("image", "mask", "variance")
_SKY = ("ra", "dec")


class ExposurePlaneArray(BackendArray):
    """One plane of an exposure file, read when indexed (the rows asked for, no more).

    Parameters
    ----------
    path : str
        The file; opened by name on every read, so the array pickles as plain values and
        reads on any Dask worker.
    hdu : int
        0-based HDU of the plane.
    shape : (int, int)
        (rows, columns).
    dtype : numpy.dtype
        Output dtype (float32 planes, int32 mask).
    """

    def __init__(self, path: str, hdu: int, shape: tuple[int, int], dtype: np.dtype):
        self.path = path
        self.hdu = int(hdu)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        """Values at an xarray explicit indexer (outer/vectorized parts applied in memory)."""
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.BASIC, self._read
        )

    def _read(self, key: tuple[int | slice, int | slice]) -> np.ndarray:
        """Basic indexing: read the rows spanned by ``key[0]``, then select."""
        from ..io import exposure

        rows, columns = key
        span = range(self.shape[0])[rows] if isinstance(rows, slice) else None
        if span is None:  # one row
            y = range(self.shape[0])[rows]
            return exposure.read_rows(self.path, self.hdu, y, y + 1, self.dtype.name)[0][columns]
        if not span:
            return np.empty((0, self.shape[1]), self.dtype)[:, columns]
        lo, hi = min(span[0], span[-1]), max(span[0], span[-1]) + 1
        block = exposure.read_rows(self.path, self.hdu, lo, hi, self.dtype.name)
        # the rows asked for, in their order: from the first one, by the step
        return block[span[0] - lo :: span.step][:, columns]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, hdu={self.hdu}, shape={self.shape})"


class LazyProduct:
    """The PhotoCalib or SkyWcs of an exposure file, read on first use, then kept.

    Public attributes are those of the product (``lazy.mean`` reads the PhotoCalib and
    returns its mean); :meth:`load` returns the product itself. It pickles, copies and
    tokenizes as (kind, path), so Datasets carrying it travel to Dask workers cheaply.

    Parameters
    ----------
    path : str
        The exposure file.
    kind : {"photocalib", "skywcs"}
        Which product: read with :func:`daskcal.read_photocalib` or
        :func:`daskcal.read_skywcs`.
    """

    __slots__ = ("_kind", "_lock", "_path", "_value")

    def __init__(self, path: str | os.PathLike, kind: str):
        if kind not in ("photocalib", "skywcs"):
            raise ValueError(f"kind must be 'photocalib' or 'skywcs', not {kind!r}")
        self._path, self._kind = os.fspath(path), kind
        self._lock = threading.Lock()
        self._value: Any = None

    @property
    def path(self) -> str:
        """The exposure file."""
        return self._path

    @property
    def kind(self) -> str:
        """``photocalib`` or ``skywcs``."""
        return self._kind

    @property
    def loaded(self) -> bool:
        """Whether the product has been read."""
        return self._value is not None

    def load(self) -> Any:
        """The :class:`~daskcal.PhotoCalib` or :class:`~daskcal.SkyWcs` (read once).

        Raises
        ------
        daskcal.calib.photocalib.CalibrationError or daskcal.calib.skywcs.SkyWcsError
            The file has no such product (the message names it).
        """
        with self._lock:
            if self._value is None:
                if self._kind == "photocalib":
                    from ..calib.photocalib import read_photocalib as read
                else:
                    from ..calib.skywcs import read_skywcs as read
                self._value = read(self._path)
            return self._value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # dunders (copy, pickle, dask protocols) and slots
            raise AttributeError(name)
        return getattr(self.load(), name)

    def __reduce__(self) -> tuple:
        return (type(self), (self._path, self._kind))

    def __copy__(self) -> LazyProduct:
        return self

    def __deepcopy__(self, memo: dict) -> LazyProduct:
        return self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LazyProduct):
            return NotImplemented
        return (self._kind, self._path) == (other._kind, other._path)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._kind, self._path))

    def __dask_tokenize__(self) -> tuple:
        return (type(self).__name__, self._kind, self._path)

    def __repr__(self) -> str:
        state = repr(self._value) if self._value is not None else "not read yet"
        return f"<{self._kind} of {self._path}: {state}>"


def _names(drop_variables: str | Iterable[str] | None) -> set[str]:
    if drop_variables is None:
        return set()
    if isinstance(drop_variables, str):
        return {drop_variables}
    return {str(name) for name in drop_variables}


class DaskcalBackendEntrypoint(BackendEntrypoint):
    """``xr.open_dataset(path, engine="daskcal")``: an afw exposure, lazily.

    Parameters of ``open_dataset`` besides xarray's own (``chunks``, ``cache``...):
    ``drop_variables`` (any of ``image``, ``mask``, ``variance``, ``ra``, ``dec``; either
    sky coordinate drops both) and ``sky_coords`` (attach lazy ``ra``/``dec``; default
    False). See the module docstring for ``chunks``.
    """

    description = "afw exposures (HSC calexp, daskcal CALEXP) read lazily, with mask planes"
    url = "daskcal README.md, section In Python (no public URL yet)"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "sky_coords")

    def open_dataset(
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        sky_coords: bool = False,
    ) -> xr.Dataset:
        """Open an exposure file: headers are read, pixels are not.

        Parameters
        ----------
        filename_or_obj : str or os.PathLike
            The exposure file (plain or tile-compressed). File objects are refused: the
            reads open the file by name, wherever they run.
        drop_variables : str or iterable of str, optional
            Variables or coordinates to leave out.
        sky_coords : bool
            Attach the lazy ``ra``/``dec`` coordinates (when the file names a SkyWcs).

        Returns
        -------
        xarray.Dataset
            As :func:`daskcal.read_exposure`, with :class:`ExposurePlaneArray` planes and
            ``attrs["photocalib"]`` / ``attrs["skywcs"]`` (:class:`LazyProduct`, or None
            when the headers show the file has none).
        """
        if not isinstance(filename_or_obj, str | os.PathLike):
            raise TypeError(
                f"engine='daskcal' opens files by name, not {type(filename_or_obj).__name__}"
            )
        from .inputs import read_exposure

        drop = _names(drop_variables)
        lazy = read_exposure(filename_or_obj)  # headers only
        attrs = dict(lazy.attrs)
        path = attrs["path"]
        planes = {}
        for plane in _PLANES:
            if plane in drop:
                continue
            var = lazy[plane]
            array = ExposurePlaneArray(path, attrs["hdus"][plane], var.shape, var.dtype)
            # every read decodes whole rows: blocks should not split them
            encoding = {"preferred_chunks": {"x": var.shape[1]}}
            planes[plane] = xr.Variable(
                var.dims, indexing.LazilyIndexedArray(array), encoding=encoding
            )
        if not sky_coords or drop & set(_SKY):
            lazy = lazy.drop_vars([n for n in _SKY if n in lazy.variables])
        has_photocalib = attrs["archive"] is not None or "FLUXMAG0" in attrs["header"]
        attrs["photocalib"] = LazyProduct(path, "photocalib") if has_photocalib else None
        attrs["skywcs"] = LazyProduct(path, "skywcs") if attrs["has_skywcs"] else None
        ds = xr.Dataset(planes, coords=lazy.coords, attrs=attrs)
        return ds.drop_vars([n for n in drop if n in ds.variables and n not in _SKY])

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """True for a FITS file (by name) whose HDUs 1-3 are IMAGE, MASK and VARIANCE."""
        if not isinstance(filename_or_obj, str | os.PathLike):
            return False
        name = os.fspath(filename_or_obj)
        if not isinstance(name, str) or not name.lower().endswith(FITS_SUFFIXES):
            return False
        from ..io.exposure import is_exposure_file

        return is_exposure_file(name)
