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

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("daskcal")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

#: Public name -> the module that defines it. Modules are imported on first use, so that
#: ``import daskcal`` (or ``import daskcal.dataid``) does not import dask, xarray or scipy.
_EXPORTS = {
    "CalibrateConfig": "config",
    "DataIdError": "dataid",
    "PhotoCalib": "calib.photocalib",
    "Repository": "repo",
    "RepositoryError": "repo",
    "SkyWcs": "calib.skywcs",
    "calibrated_catalogs": "lazy.calibrated",
    "calibrated_exposures": "lazy.calibrated",
    "calibration_table": "lazy.calibrated",
    "format_id": "dataid",
    "open_catalogs": "lazy.inputs",
    "open_exposures": "lazy.inputs",
    "parse_id": "dataid",
    "parse_ids": "dataid",
    "read_background": "calib.background",
    "read_catalog": "io.catalog",
    "read_exposure": "lazy.inputs",
    "read_photocalib": "calib.photocalib",
    "read_skywcs": "calib.skywcs",
    "write_catalog": "io.catalog",
    "write_exposure": "io.exposure",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'daskcal' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
