"""The focal-plane maps of one visit, from its CCD rows and their saved grids.

Each map is a :class:`MapSpec`: what it shows, how it was computed (the caption on the
page), and how a CCD's layer is made from its metrics row and its ``.npz`` work file
(:func:`~daskcal.qa.ccd.measure_ccd`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .maps import CcdLayer, MapImage, draw_focal_plane

__all__ = ["MAPS", "MapSpec", "visit_maps"]

Row = Mapping[str, Any]
Grids = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class MapSpec:
    """One map of the visit page.

    Attributes
    ----------
    key, section, title, unit : str
        Anchor, page section (``photometric``, ``astrometric``, ``sky``, ``sources``),
        title and colour-bar unit.
    caption : str
        How the values are computed.
    layer : callable
        (row, grids, visit) -> keyword arguments of :class:`CcdLayer` (image, value,
        text, arrows).
    symmetric : bool
        Diverging colour scale about 0.
    outlier_metrics : tuple of str
        Outlier metrics (:data:`~daskcal.qa.outliers.CCD_METRICS`) whose CCDs it outlines.
    """

    key: str
    section: str
    title: str
    unit: str
    caption: str
    layer: Callable[[Row, Grids, Row], dict[str, Any]]
    symmetric: bool = True
    outlier_metrics: tuple[str, ...] = ()


def _number(row: Row, key: str) -> float:
    value = row.get(key)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _text(value: float, fmt: str, suffix: str = "") -> str:
    return "n/a" if not math.isfinite(value) else format(value, fmt) + suffix


def _field(row: Row, grids: Grids, visit: Row) -> dict[str, Any]:
    image = (grids["zp"] - visit["median_zp"]) * 1e3 if "zp" in grids else None
    return {"image": image, "text": _text(_number(row, "phot_field_mmag"), "+.1f")}


def _calexp(row: Row, grids: Grids, visit: Row) -> dict[str, Any]:
    return {"image": grids.get("dzp"), "text": _text(_number(row, "phot_calexp_mmag"), "+.1f")}


def _repeat_phot(row: Row, grids: Grids, visit: Row) -> dict[str, Any]:
    value = _number(row, "phot_repeat_mmag")
    n = int(_number(row, "phot_n")) if math.isfinite(_number(row, "phot_n")) else 0
    return {"value": value, "text": _text(value, "+.1f", f" ({n})")}


def _shift(row: Row, grids: Grids, visit: Row) -> dict[str, Any]:
    arrows = None
    if "east" in grids:
        pick = (slice(None, None, 2), slice(None, None, 2))
        arrows = tuple(grids[k][pick] for k in ("ra", "dec", "east", "north"))
    value = _number(row, "shift_mas")
    return {"value": value, "text": _text(value, ".0f"), "arrows": arrows}


def _repeat_astro(row: Row, grids: Grids, visit: Row) -> dict[str, Any]:
    value = _number(row, "astro_repeat_mas")
    arrows = None
    if math.isfinite(value) and "ra" in grids:
        where = [np.array([float(np.mean(grids[k]))]) for k in ("ra", "dec")]
        shift = [np.array([_number(row, k)]) for k in ("astro_east_mas", "astro_north_mas")]
        arrows = (*where, *shift)
    return {"value": value, "text": _text(value, ".1f"), "arrows": arrows}


def _sip(row: Row, grids: Grids, visit: Row) -> dict[str, Any]:
    value = _number(row, "sip_error_mas")
    if not math.isfinite(value):
        value = _number(row, "sip_max_error_mas")
    return {"value": value, "text": _text(value, ".2g")}


def _sky_level(row: Row, grids: Grids, visit: Row) -> dict[str, Any]:
    return {"image": grids.get("sky"), "text": _text(_number(row, "sky_mean"), ".2f")}


def _sky_range(row: Row, grids: Grids, visit: Row) -> dict[str, Any]:
    value = _number(row, "sky_range")
    return {"value": value, "text": _text(value, ".2f")}


def _psf_ap(row: Row, grids: Grids, visit: Row) -> dict[str, Any]:
    value = _number(row, "psf_ap_mmag")
    n = int(_number(row, "psf_ap_n")) if math.isfinite(_number(row, "psf_ap_n")) else 0
    return {"value": value, "text": _text(value, "+.1f", f" ({n})")}


def _counts(row: Row, grids: Grids, visit: Row) -> dict[str, Any]:
    value = _number(row, "n_sources")
    stars = _number(row, "n_stars")
    text = "n/a" if not math.isfinite(value) else f"{value:.0f}/{_text(stars, '.0f')}"
    return {"value": value, "text": text}


MAPS: tuple[MapSpec, ...] = (
    MapSpec("phot-field", "photometric", "Zero point - visit median", "mmag",
            "The applied calibration c(x, y) (recorded PhotoCalib) as a zero point, "
            "31.4 - 2.5 log10 c, on a grid over each CCD, minus the median zero point of "
            "the visit's CCDs. Label: the CCD's mean.", _field,
            outlier_metrics=("phot_field",)),
    MapSpec("phot-calexp", "photometric", "Zero-point change from the calexp", "mmag",
            "Zero point of the applied calibration minus that of the calexp's own "
            "PhotoCalib (its archive), on the same grid. Label: the CCD's mean.", _calexp,
            outlier_metrics=("phot_calexp",)),
    MapSpec("phot-repeat", "photometric", "Star magnitudes - other visits", "mmag",
            "Offset of the CCD's unblended stars (PSF S/N above match_snr, in CALSRC) from "
            "the same stars in the other visits of the filter: a relative solution over "
            "stars seen in enough visits. Label: offset (stars).", _repeat_phot,
            outlier_metrics=("phot_repeat",)),
    MapSpec("astro-shift", "astrometric", "Shift calexp WCS -> jointcal WCS", "mas",
            "Arrows: where the jointcal WCS puts a pixel minus where the calexp's WCS put "
            "it (East, North), on a grid over each CCD. Colour and label: length of the "
            "CCD's mean shift.", _shift, symmetric=False, outlier_metrics=("astro_shift",)),
    MapSpec("astro-repeat", "astrometric", "Star positions - other visits", "mas",
            "Offset of the CCD's stars (CALSRC positions, jointcal WCS) from the same stars "
            "in the other visits; arrow: its direction.", _repeat_astro, symmetric=False,
            outlier_metrics=("astro_repeat",)),
    MapSpec("sip-error", "astrometric", "TAN-SIP approximation error", "mas",
            "Largest distance between the TAN-SIP header WCS and the jointcal WCS over the "
            "CCD (DASKCAL_SIPERR of the CALEXP, else sip_max_error_mas of the calibration "
            "table).", _sip, symmetric=False),
    MapSpec("sky-level", "sky", "skyCorr level", "counts",
            "The sky correction subtracted from each CCD, on the map grid. Label: its mean.",
            _sky_level),
    MapSpec("sky-range", "sky", "skyCorr range", "counts",
            "Largest minus smallest value of the sky correction over the CCD.", _sky_range,
            symmetric=False),
    MapSpec("psf-aperture", "sources", "PSF - aperture magnitude", "mmag",
            "Median PSF minus slot_CalibFlux aperture magnitude of the bright unblended "
            "stars (PSF S/N above bright_snr). Label: median (stars).", _psf_ap),
    MapSpec("counts", "sources", "Sources", "sources",
            "Sources of the CALSRC that are no sky sources. Label: sources/stars.", _counts,
            symmetric=False),
)  # fmt: skip
"""The maps of a visit page, in order."""


def visit_maps(
    rows: Sequence[Row],
    grids: Mapping[int, Grids],
    visit: Row,
    outliers: Mapping[str, Sequence[int]],
) -> list[tuple[MapSpec, MapImage]]:
    """Draw every map of :data:`MAPS` for one visit.

    Parameters
    ----------
    rows : sequence of mapping
        The visit's CCD metrics rows (with ``ccd``).
    grids : mapping of int to mapping
        CCD -> its saved grids (``corner_ra``/``corner_dec`` at least); CCDs without
        grids are not drawn.
    visit : mapping
        ``median_zp``: the visit's median zero point.
    outliers : mapping of str to sequence of int
        Outlier metric -> its outlying CCDs in this visit.

    Returns
    -------
    list of (MapSpec, MapImage)
        The maps drawn, in :data:`MAPS` order (a map no CCD can be drawn on is left out).
    """
    drawn = []
    for spec in MAPS:
        layers = []
        for row in rows:
            ccd = int(row["ccd"])
            if ccd not in grids:
                continue
            g = grids[ccd]
            layers.append(
                CcdLayer(ccd, g["corner_ra"], g["corner_dec"], **spec.layer(row, g, visit))
            )
        if not layers:
            continue
        flagged = sorted({c for m in spec.outlier_metrics for c in outliers.get(m, ())})
        image = draw_focal_plane(layers, title=spec.title, unit=spec.unit,
                                 symmetric=spec.symmetric, outliers=flagged)  # fmt: skip
        drawn.append((spec, image))
    return drawn
