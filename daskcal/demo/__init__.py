"""A seeded, realistic Gen2 HSC repository with the truth it was made from.

:func:`make_demo_repository` writes calexps, src tables, skyCorr backgrounds, jointcal and
FGCM products and a registry in the real afw/obs_subaru formats for a field observed in
HSC-G and HSC-I, plus truth tables under ``ROOT/truth``; :func:`truth_image` re-renders the
true calibrated image of any CCD. The inverse model (what calibration must recover):

- the true WCS of each CCD is its ``jointcal_wcs``;
- the true calibration c(x, y) (nJy per count) is its ``fgcm_tract_photoCalib``, with
  cbar = c at the CCD centre; ``instFlux * c`` at a source recovers its true flux (times
  the measurement's known fraction, 1 for PSF fluxes of stars) within ``instFluxErr * c``;
- ``calexp * c / cbar - skyCorr`` recovers :func:`truth_image` within the noise.

See the modules: :mod:`.focalplane` (CCD layout, WCS), :mod:`.sky` (true sources,
rendering), :mod:`.photometry` (calibration fields), :mod:`.skybg` (backgrounds),
:mod:`.measure` (src), :mod:`.ccd` (one CCD), :mod:`.repository` (everything, with Dask).
"""

from .ccd import MASK_PLANES
from .model import DemoConfig
from .paths import TEMPLATES, dataset_path
from .repository import DemoSummary, load_config, make_demo_repository, read_truth, truth_image

__all__ = [
    "MASK_PLANES",
    "TEMPLATES",
    "DemoConfig",
    "DemoSummary",
    "dataset_path",
    "load_config",
    "make_demo_repository",
    "read_truth",
    "truth_image",
]
