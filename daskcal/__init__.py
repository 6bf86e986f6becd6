"""daskcal: apply HSC mosaic calibrations (jointcal, FGCM, skyCorr) to every CCD with Dask.

The public API::

    repo = daskcal.Repository("~/HSC", rerun="test")
    ids = daskcal.parse_id("field=NGC604 tract=0 ccd=0..8^10..103")
    cats = daskcal.open_catalogs(repo, ids)           # lazy dask DataFrame, one CCD a partition
    exps = daskcal.open_exposures(repo, ids)          # lazy xarray Datasets
    cal = daskcal.calibrated_catalogs(repo, ids)      # lazy calibrated catalogs
    calexps = daskcal.calibrated_exposures(repo, ids) # lazy calibrated exposures (xarray)
    pc = daskcal.read_photocalib(path); wcs = daskcal.read_skywcs(path)
"""

from importlib.metadata import PackageNotFoundError, version

from .calib.background import read_background
from .calib.photocalib import PhotoCalib, read_photocalib
from .calib.skywcs import SkyWcs, read_skywcs
from .calib.table import calibration_table
from .collections import open_catalogs, open_exposures
from .config import CalibrateConfig
from .dataid import DataIdError, format_id, parse_id, parse_ids
from .graph import calibrated_catalogs, calibrated_exposures
from .io.catalog import read_catalog, write_catalog
from .io.exposure import read_exposure, write_exposure
from .repo import Repository, RepositoryError

try:
    __version__ = version("daskcal")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "CalibrateConfig",
    "DataIdError",
    "PhotoCalib",
    "Repository",
    "RepositoryError",
    "SkyWcs",
    "__version__",
    "calibrated_catalogs",
    "calibrated_exposures",
    "calibration_table",
    "format_id",
    "open_catalogs",
    "open_exposures",
    "parse_id",
    "parse_ids",
    "read_background",
    "read_catalog",
    "read_exposure",
    "read_photocalib",
    "read_skywcs",
    "write_catalog",
    "write_exposure",
]
