"""The seeded model of a demo repository: configuration, visits and per-CCD truth.

Every random quantity comes from ``numpy.random.default_rng`` seeded by a tuple that names
what it is for: ``(seed, visit)`` for a visit, ``(seed, visit, ccd, stream)`` for a CCD with
stream 0 for the model (WCS, calibration, backgrounds), 1 for pixel noise and 2 for the
source measurements. CCDs are therefore independent of each other and of the order in
which they are made, and the model of one CCD can be rebuilt alone (see
:func:`daskcal.demo.truth_image`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import numpy as np

from ..calib.background import BackgroundList
from ..calib.skywcs import SkyWcs
from .focalplane import PLATE_SCALE_ARCSEC, SIZES, Ccd, camera, tan_approximation, true_skywcs
from .photometry import CcdPhotometry, make_photometry
from .sky import FIELDS, FILTERS, SkyCatalog, catalog_radius_deg, make_sky_catalog
from .skybg import SkyModel, make_backgrounds

__all__ = ["CcdModel", "DemoConfig", "VisitModel", "ccd_model", "visit_model"]

FIRST_VISIT = 1228
POINTINGS = {"HSC-G": 816, "HSC-I": 817}
_ZEROPOINT = {"HSC-G": 0.95, "HSC-I": 0.78}  # nJy per count at the CCD centre, typical
_SKY_LEVEL = {"HSC-G": 350.0, "HSC-I": 900.0}  # counts
_SEEING = {"HSC-G": 0.80, "HSC-I": 0.65}  # FWHM, arcsec
_DITHERS = ((0, 0), (1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1))
_DITHER_DEG = 0.06
_EXPTIME = 300.0
_START = datetime(2016, 11, 24, 10, 0, 0)
GAIN = 3.0
"""Electrons per count."""
READ_NOISE = 1.5
"""Read noise in counts."""
SATURATION = 50000.0
"""Counts above which a pixel of the calexp saturates (mask SAT, value clipped)."""


@dataclass(frozen=True)
class DemoConfig:
    """What a demo repository holds; everything else follows from it and ``seed``."""

    seed: int = 1
    size: str = "small"
    visits: tuple[int, ...] = (1228, 1230, 1232, 1234)
    ccds: tuple[int, ...] = ()
    field: str = "NGC604"
    tract: int = 0
    rerun: str = "demo"

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}, not {self.size!r}")
        if self.field not in FIELDS:
            raise ValueError(f"field must be one of {sorted(FIELDS)}, not {self.field!r}")
        object.__setattr__(self, "visits", tuple(int(v) for v in self.visits))
        object.__setattr__(self, "ccds", tuple(int(c) for c in self.ccds))

    @staticmethod
    def visit_numbers(n: int) -> tuple[int, ...]:
        """HSC-like even visit numbers: 1228, 1230, ..."""
        return tuple(FIRST_VISIT + 2 * k for k in range(n))

    def filter_of(self, visit: int) -> str:
        """Visits alternate between the filters, HSC-G first."""
        return FILTERS[((visit - FIRST_VISIT) // 2) % len(FILTERS)]

    def sky(self) -> SkyCatalog:
        """The true sky catalogue (cached per process)."""
        radius = catalog_radius_deg(self.size, 1.5 * _DITHER_DEG / SIZES[self.size].shrink)
        return make_sky_catalog(self.seed, self.size, FIELDS[self.field], radius)

    def to_json(self) -> str:
        """JSON text; :meth:`from_json` inverts it."""
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> DemoConfig:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class VisitModel:
    """One visit: its registry values and the observing conditions."""

    visit: int
    filter: str
    pointing: int
    boresight: tuple[float, float]
    position_angle: float
    psf_sigma: float
    zeropoint: float
    sky: SkyModel
    exptime: float
    start: datetime

    @property
    def date_obs(self) -> str:
        return self.start.strftime("%Y-%m-%d")

    @property
    def tai_obs(self) -> str:
        return self.start.strftime("%Y-%m-%dT%H:%M:%S.000")

    @property
    def mjd(self) -> float:
        return (self.start - datetime(1858, 11, 17)).total_seconds() / 86400.0


def visit_model(config: DemoConfig, visit: int) -> VisitModel:
    """The visit's pointing (a dither about the field centre), seeing, sky and zero point."""
    rng = np.random.default_rng([config.seed, visit])
    filt = config.filter_of(visit)
    k = (visit - FIRST_VISIT) // 2
    step = _DITHER_DEG / SIZES[config.size].shrink
    pattern = np.asarray(_DITHERS[(k // len(FILTERS)) % len(_DITHERS)], dtype=float)
    dx, dy = pattern * step + rng.normal(0.0, 0.05 * step, 2)
    ra0, dec0 = FIELDS[config.field]
    boresight = (float(ra0 + dx / np.cos(np.radians(dec0))), float(dec0 + dy))
    fwhm = _SEEING[filt] * np.exp(rng.normal(0.0, 0.08))
    return VisitModel(
        visit=visit,
        filter=filt,
        pointing=POINTINGS[filt],
        boresight=boresight,
        position_angle=0.0,
        psf_sigma=float(fwhm / 2.3548 / PLATE_SCALE_ARCSEC),
        zeropoint=float(_ZEROPOINT[filt] * np.exp(rng.normal(0.0, 0.03))),
        sky=SkyModel.draw(rng, _SKY_LEVEL[filt] * np.exp(rng.normal(0.0, 0.1))),
        exptime=_EXPTIME,
        start=_START + timedelta(seconds=420 * k),
    )


@dataclass(frozen=True, eq=False)
class CcdModel:
    """Everything true about one (visit, ccd), and what the pipelines wrote from it."""

    visit: VisitModel
    ccd: Ccd
    true_wcs: SkyWcs
    calexp_wcs: SkyWcs
    calexp_wcs_cards: dict
    photometry: CcdPhotometry
    sky_corr: BackgroundList
    calexp_background: BackgroundList
    bad_column: int

    @property
    def pixel_variance(self) -> float:
        """Variance (counts^2) of a sky pixel."""
        return self.visit.sky.level / GAIN + READ_NOISE**2

    @property
    def exposure_id(self) -> int:
        """HSC's exposure id: visit * 200 + ccd."""
        return self.visit.visit * 200 + self.ccd.number


def ccd_model(config: DemoConfig, visit: int, ccd: int) -> CcdModel:
    """Build the model of one CCD from stream 0 of its generator."""
    vm = visit_model(config, visit)
    rng = np.random.default_rng([config.seed, visit, ccd, 0])
    geometry = camera(config.size)[ccd]
    wcs = true_skywcs(geometry, vm.boresight, config.size, vm.position_angle)
    shift = abs(rng.normal(0.3, 0.05))
    calexp_wcs, cards = tan_approximation(wcs, geometry, shift, rng.uniform(0.0, 360.0))
    cbar = vm.zeropoint * (1.0 + rng.normal(0.0, 0.01))
    photometry = make_photometry(rng, geometry, config.size, cbar)
    variance = vm.sky.level / GAIN + READ_NOISE**2
    sky_corr, calexp_bg = make_backgrounds(rng, geometry, config.size, vm.sky, variance)
    bad_column = int(rng.integers(8, geometry.width - 8))
    return CcdModel(vm, geometry, wcs, calexp_wcs, cards, photometry, sky_corr, calexp_bg,
                    bad_column)  # fmt: skip
