"""afw BoundedFields: 2-d functions over a pixel box, read from and written to afw archives.

All positions are PARENT pixel coordinates; ``evaluate(x, y)`` broadcasts over arrays and
``evaluate_grid(x0, x1, y0, y1)`` returns the (y1 - y0, x1 - x0) block at integer pixels.
``to_dict()`` / :func:`bounded_field_from_dict` give a JSON-friendly form (plain lists,
numbers and strings) for lookup tables.

Supported classes: ``ChebyshevBoundedField``, ``ProductBoundedField`` and
``TransformBoundedField`` (AST mapping, evaluated with starlink-pyast as afw does).
meas_mosaic's ``FluxFitBoundedField`` (its value also needs the Jacobian of a SkyWcs) and
any other class raise :class:`UnsupportedCalibration`.

Why one module of more than ~300 lines: the bounded-field classes afw persists (Chebyshev,
Product, Transform) share one archive-reading and evaluation protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
from numpy.polynomial import chebyshev as cheb

from ..io.afwtable import Field, bytes_column
from ..io.archive import Archive, ArchiveWriter, NewCatalog
from .ast import ast, dump_ast, read_ast

__all__ = [
    "BBox",
    "BoundedField",
    "ChebyshevBoundedField",
    "InvalidBoundedField",
    "ProductBoundedField",
    "TransformBoundedField",
    "UnsupportedCalibration",
    "bounded_field_from_dict",
    "read_bounded_field",
    "validate_bounded_field",
]

_MODULE = "lsst.afw.math"
_TRANSFORM_CLASS = "TransformPoint2ToGeneric"
_BBOX_FIELDS = [
    Field(f"bbox_{end}_{axis}", "1J", f"bounding box ({word})", unit="pixel")
    for end, word in (("min", "minimum"), ("max", "maximum"))
    for axis in ("x", "y")
]
_ORDER_X = Field("order_x", "1J", "maximum Chebyshev function order in x")


class UnsupportedCalibration(ValueError):
    """A calibration product daskcal cannot evaluate; the message names file and class."""


class InvalidBoundedField(ValueError):
    """A bounded field whose parameters or values cannot be a calibration."""


class BBox(NamedTuple):
    """An afw integer box (``Box2I``): inclusive pixel bounds; max < min means empty."""

    min_x: int
    min_y: int
    max_x: int
    max_y: int

    @property
    def is_empty(self) -> bool:
        """True for an empty box (afw writes 0..-1 for the constant field of a PhotoCalib)."""
        return self.max_x < self.min_x or self.max_y < self.min_y

    @property
    def width(self) -> int:
        return max(self.max_x - self.min_x + 1, 0)

    @property
    def height(self) -> int:
        return max(self.max_y - self.min_y + 1, 0)

    @property
    def center(self) -> tuple[float, float]:
        """Centre of the box (afw ``Box2D(bbox).getCenter()``)."""
        return (self.min_x + self.max_x) / 2.0, (self.min_y + self.max_y) / 2.0

    def columns(self) -> dict[str, np.ndarray]:
        """The four persisted ``bbox_*`` columns (one row)."""
        return {
            f.name: np.array([v], dtype=np.int32) for f, v in zip(_BBOX_FIELDS, self, strict=True)
        }


def _bbox_from_catalog(cat: Any) -> BBox:
    return BBox(*(int(cat[f.name][0]) for f in _BBOX_FIELDS))


class BoundedField:
    """Base class: a function of PARENT pixel position over ``bbox``."""

    bbox: BBox

    def evaluate(self, x: Any, y: Any) -> np.ndarray:
        """Values at points ``(x, y)`` (arrays broadcast together)."""
        raise NotImplementedError

    def evaluate_grid(self, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
        """Values at integer pixels ``x0 <= x < x1``, ``y0 <= y < y1``; shape (y1-y0, x1-x0)."""
        xx, yy = np.meshgrid(np.arange(x0, x1, dtype=float), np.arange(y0, y1, dtype=float))
        return self.evaluate(xx, yy)

    def mean(self) -> float:
        """Mean over the box, where afw defines one."""
        raise NotImplementedError(f"{type(self).__name__} has no mean() (afw defines none)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly description; inverse of :meth:`from_dict`."""
        raise NotImplementedError

    @staticmethod
    def from_dict(d: dict[str, Any]) -> BoundedField:
        """Rebuild a field of any supported class from :meth:`to_dict` output."""
        return bounded_field_from_dict(d)

    def add_to_archive(self, writer: ArchiveWriter) -> int:
        """Append this field (and any it refers to) to ``writer``; returns its archive id."""
        raise NotImplementedError


@dataclass(eq=False)
class ChebyshevBoundedField(BoundedField):
    """afw ChebyshevBoundedField: f = sum_j sum_i C[j, i] T_i(x') T_j(y').

    The integer box is widened by half a pixel, so x' = 2 (x - cx) / (max_x - min_x + 1)
    with cx the box centre (same for y). An empty box (afw's constant PhotoCalib field)
    with one coefficient is the constant C[0, 0].

    >>> field = ChebyshevBoundedField(BBox(-100, -100, 100, 100), [[1000.0, 1000.0]])
    >>> round(float(field.evaluate(-10, 0)), 9)
    900.497512438
    """

    bbox: BBox
    coefficients: np.ndarray

    def __post_init__(self) -> None:
        self.bbox = BBox(*(int(v) for v in self.bbox))
        self.coefficients = np.atleast_2d(np.asarray(self.coefficients, dtype=float))
        if self.coefficients.ndim != 2 or self.coefficients.size == 0:
            raise ValueError(
                f"Chebyshev coefficients must be 2-d (ny, nx), not {self.coefficients.shape}"
            )
        if self.bbox.is_empty and self.coefficients.size != 1:
            raise ValueError(f"a Chebyshev field on the empty box {self.bbox} must be constant")

    @classmethod
    def constant(cls, value: float, bbox: BBox | None = None) -> ChebyshevBoundedField:
        """A constant field; by default on afw's empty box (0, 0)..(-1, -1)."""
        return cls(bbox if bbox is not None else BBox(0, 0, -1, -1), [[float(value)]])

    def _reduced(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cx, cy = self.bbox.center
        sx, sy = 2.0 / self.bbox.width, 2.0 / self.bbox.height
        return sx * x - sx * cx, sy * y - sy * cy

    def evaluate(self, x: Any, y: Any) -> np.ndarray:
        x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        if self.bbox.is_empty:
            return np.full(x.shape, self.coefficients[0, 0])[()]
        xr, yr = self._reduced(x, y)
        return np.asarray(cheb.chebval2d(yr, xr, self.coefficients))[()]

    def evaluate_grid(self, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
        if self.bbox.is_empty:
            return np.full((y1 - y0, x1 - x0), self.coefficients[0, 0])
        xr, yr = self._reduced(np.arange(x0, x1, dtype=float), np.arange(y0, y1, dtype=float))
        ny, nx = self.coefficients.shape
        vx = cheb.chebvander(xr, nx - 1)
        vy = cheb.chebvander(yr, ny - 1)
        return vy @ self.coefficients @ vx.T

    def mean(self) -> float:
        """Analytic mean over the (widened) box: the mean of T_n on [-1, 1] is 1/(1-n^2)
        for even n and 0 for odd n (afw ``ChebyshevBoundedField::mean``)."""
        if self.bbox.is_empty:
            return float(self.coefficients[0, 0])
        ny, nx = self.coefficients.shape
        my, mx = _tn_means(ny), _tn_means(nx)
        return float(my @ self.coefficients @ mx)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "chebyshev",
            "bbox": list(self.bbox),
            "coefficients": self.coefficients.tolist(),
        }

    def add_to_archive(self, writer: ArchiveWriter) -> int:
        ny, nx = self.coefficients.shape
        doc = "Chebyshev function coefficients, ordered by y then x"
        fields = [_ORDER_X, *_BBOX_FIELDS, Field("coefficients", f"{nx * ny}D", doc, ccls="Array")]
        coeffs = self.coefficients.reshape(1, -1) if nx * ny > 1 else self.coefficients[0]
        columns = {"order_x": np.array([nx - 1], dtype=np.int32), **self.bbox.columns()}
        columns["coefficients"] = coeffs
        return writer.add("ChebyshevBoundedField", _MODULE, [NewCatalog(fields, columns)])

    @classmethod
    def from_catalog(cls, cat: Any) -> ChebyshevBoundedField:
        nx = int(cat["order_x"][0]) + 1
        flat = np.array(cat["coefficients"][0], dtype=float).ravel()
        if flat.size % nx:
            raise ValueError(f"{flat.size} Chebyshev coefficients do not fit order_x={nx - 1}")
        return cls(_bbox_from_catalog(cat), flat.reshape(-1, nx))


def _tn_means(n: int) -> np.ndarray:
    k = np.arange(n)
    with np.errstate(divide="ignore"):
        return np.where(k % 2 == 0, 1.0 / (1.0 - k * k), 0.0)


@dataclass(eq=False)
class ProductBoundedField(BoundedField):
    """afw ProductBoundedField: the product of its factors (which share one box)."""

    factors: tuple[BoundedField, ...]

    def __post_init__(self) -> None:
        self.factors = tuple(self.factors)
        if not self.factors:
            raise ValueError("ProductBoundedField needs at least one factor")
        boxes = {f.bbox for f in self.factors}
        if len(boxes) != 1:
            raise ValueError(f"ProductBoundedField factors have different boxes: {sorted(boxes)}")

    @property
    def bbox(self) -> BBox:  # type: ignore[override]
        return self.factors[0].bbox

    def evaluate(self, x: Any, y: Any) -> np.ndarray:
        out = self.factors[0].evaluate(x, y)
        for f in self.factors[1:]:
            out = out * f.evaluate(x, y)
        return out

    def evaluate_grid(self, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
        out = self.factors[0].evaluate_grid(x0, x1, y0, y1)
        if out.base is not None or not out.flags.writeable or out.dtype != np.float64:
            out = np.array(out, dtype=np.float64)
        for f in self.factors[1:]:
            # in place: the same products without an image-sized temporary per factor
            out *= f.evaluate_grid(x0, x1, y0, y1)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "product",
            "bbox": list(self.bbox),
            "factors": [f.to_dict() for f in self.factors],
        }

    def add_to_archive(self, writer: ArchiveWriter) -> int:
        # afw gives the product its id before its factors: reserve it, then fill the ids
        ids = np.zeros(len(self.factors), dtype=np.int32)
        field = Field("id", "1J", "Archive ID of a BoundedField factor.")
        obj_id = writer.add("ProductBoundedField", _MODULE, [NewCatalog([field], {"id": ids})])
        for k, factor in enumerate(self.factors):
            ids[k] = factor.add_to_archive(writer)
        return obj_id


@dataclass(eq=False)
class TransformBoundedField(BoundedField):
    """afw TransformBoundedField: an AST Mapping from (x, y) to one value.

    ``ast_text`` is the AST dump of the mapping (as afw stores it after the header
    ``1 TransformPoint2ToGeneric``). The pyast object is built lazily and is not pickled.
    """

    bbox: BBox
    ast_text: str

    def __post_init__(self) -> None:
        self.bbox = BBox(*(int(v) for v in self.bbox))

    @classmethod
    def from_mapping(cls, bbox: BBox, mapping: Any) -> TransformBoundedField:
        """Wrap a pyast Mapping (2 inputs, 1 output)."""
        return cls(bbox, _ast_dump(mapping))

    @cached_property
    def mapping(self) -> Any:
        """The pyast Mapping (Nin = 2; output axis 1 is the value)."""
        obj = read_ast(self.ast_text)
        if obj is None or not isinstance(obj, ast().Mapping) or obj.Nin != 2:
            raise ValueError("TransformBoundedField text is not an AST Mapping with 2 inputs")
        return obj

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "mapping"}

    def evaluate(self, x: Any, y: Any) -> np.ndarray:
        x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        if x.size == 0:  # AST refuses empty point sets
            return np.empty(x.shape)
        points = np.vstack([x.ravel(), y.ravel()])
        return np.asarray(self.mapping.tran(points))[0].reshape(x.shape)[()]

    def evaluate_grid(self, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
        out = np.empty((y1 - y0, x1 - x0))
        step = max(1, 2**20 // max(x1 - x0, 1))  # bound the temporary point arrays
        for r in range(y0, y1, step):
            out[r - y0 : r - y0 + step] = super().evaluate_grid(x0, x1, r, min(r + step, y1))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "transform", "bbox": list(self.bbox), "ast": self.ast_text}

    def add_to_archive(self, writer: ArchiveWriter) -> int:
        text = f"1 {_TRANSFORM_CLASS} {self.ast_text}".encode()
        fields = [
            *_BBOX_FIELDS,
            Field("frameSet", "QB", "FrameSet contained in the Transform", ccls="Array"),
        ]
        columns = {**self.bbox.columns(), "frameSet": bytes_column([text])}
        return writer.add("TransformBoundedField", _MODULE, [NewCatalog(fields, columns)])

    @classmethod
    def from_bytes(cls, bbox: BBox, data: bytes, where: str) -> TransformBoundedField:
        """Parse afw's ``1 TransformPoint2ToGeneric <AST dump>`` text."""
        parts = data.decode("ascii", errors="replace").split(None, 2)
        if len(parts) != 3 or parts[0] != "1" or parts[1] != _TRANSFORM_CLASS:
            head = " ".join(parts[:2])
            raise ValueError(f"{where}: unexpected TransformBoundedField header {head!r}")
        return cls(bbox, parts[2])


def _ast_dump(obj: Any) -> str:
    return dump_ast(obj).lstrip()


def bounded_field_from_dict(d: dict[str, Any]) -> BoundedField:
    """Rebuild a field from :meth:`BoundedField.to_dict` output."""
    kind = d.get("kind")
    if kind == "chebyshev":
        return ChebyshevBoundedField(BBox(*d["bbox"]), np.asarray(d["coefficients"], float))
    if kind == "product":
        return ProductBoundedField(tuple(bounded_field_from_dict(f) for f in d["factors"]))
    if kind == "transform":
        return TransformBoundedField(BBox(*d["bbox"]), d["ast"])
    raise ValueError(f"unknown bounded field kind {kind!r}")


def read_bounded_field(archive: Archive, obj_id: int) -> BoundedField:
    """Read the BoundedField with archive id ``obj_id``, dispatching on its class name.

    Raises
    ------
    UnsupportedCalibration
        For ``FluxFitBoundedField`` (meas_mosaic) and any other unknown class; the
        message names the file and the class.
    """
    obj = archive[obj_id]
    where = f"{archive.filename}: archive object {obj_id}"
    if obj.name == "ChebyshevBoundedField":
        return ChebyshevBoundedField.from_catalog(obj.catalogs[0])
    if obj.name == "ProductBoundedField":
        ids = [int(i) for i in obj.catalogs[0]["id"]]
        return ProductBoundedField(tuple(read_bounded_field(archive, i) for i in ids))
    if obj.name == "TransformBoundedField":
        cat = obj.catalogs[0]
        return TransformBoundedField.from_bytes(
            _bbox_from_catalog(cat), cat.bytes("frameSet"), where
        )
    if obj.name == "FluxFitBoundedField":
        raise UnsupportedCalibration(
            f"{archive.filename}: {obj.name} (module {obj.module or '?'}, archive id {obj_id}) "
            "is not supported: meas_mosaic's flux fit multiplies its polynomial by the "
            "Jacobian of a SkyWcs, which daskcal does not reproduce; use the fcr "
            "(FLUXMAG0) file or a jointcal/FGCM photoCalib instead"
        )
    raise UnsupportedCalibration(
        f"{archive.filename}: bounded field class {obj.name} (archive id {obj_id}) "
        "is not supported"
    )


def _nonfinite_parameters(field: BoundedField) -> str:
    """What is not finite among a field's stored numbers ("" if nothing, or unknown)."""
    if isinstance(field, ChebyshevBoundedField):
        bad = int(np.count_nonzero(~np.isfinite(field.coefficients)))
        if bad:
            return f"{bad} of its {field.coefficients.size} Chebyshev coefficients are not finite"
    elif isinstance(field, ProductBoundedField):
        for k, factor in enumerate(field.factors):
            problem = _nonfinite_parameters(factor)
            if problem:
                return f"factor {k} ({type(factor).__name__}): {problem}"
    return ""


def validate_bounded_field(
    field: BoundedField, bbox: Any = None, *, positive: bool = True, points: int = 17
) -> None:
    """Check that a field's parameters are finite and its values usable over a box.

    The field is evaluated on a ``points`` x ``points`` grid from corner pixel to corner
    pixel of ``bbox`` (at the single pixel (0, 0) when the box is empty, as for afw's
    constant field); every value must be finite, and > 0 when ``positive``. A
    ``TransformBoundedField`` is checked through its values only.

    Parameters
    ----------
    field : BoundedField
        The field to check.
    bbox : BBox or (x0, y0, x1, y1), optional
        Inclusive PARENT pixel box where the field is used (e.g. the CCD's); the field's
        own box by default.
    positive : bool
        Require values > 0 (a photometric calibration).
    points : int
        Grid points per axis.

    Raises
    ------
    InvalidBoundedField
        With a one-line message saying what is wrong and where.
    """
    name = type(field).__name__
    problem = _nonfinite_parameters(field)
    if problem:
        raise InvalidBoundedField(f"{name}: {problem}")
    box = field.bbox if bbox is None else BBox(*(int(v) for v in bbox))
    if box.is_empty:
        x = y = np.zeros(1)
    else:
        x, y = np.meshgrid(
            np.linspace(box.min_x, box.max_x, points), np.linspace(box.min_y, box.max_y, points)
        )
    try:
        with np.errstate(all="ignore"):
            values = np.asarray(field.evaluate(x, y), dtype=float)
    except Exception as err:
        text = " ".join(str(err).split()) or type(err).__name__
        raise InvalidBoundedField(f"{name} cannot be evaluated: {text}") from err
    good = np.isfinite(values) & (values > 0 if positive else True)
    if not good.all():
        k = int(np.flatnonzero(~good.ravel())[0])
        rule = "> 0 and finite" if positive else "finite"
        raise InvalidBoundedField(
            f"{name} is {values.ravel()[k]:g} at pixel ({x.ravel()[k]:.1f}, {y.ravel()[k]:.1f}) "
            f"(must be {rule})"
        )
