"""Write every file of one simulated CCD with daskcal's own afw-format writers.

Per (visit, ccd): the calexp (tile-compressed IMAGE/MASK/VARIANCE, primary metadata with
component ids, archive with the calexp's SkyWcs, PhotoCalib and a GaussianPsf, TAN cards in
the plane headers), its original background (BKGD), the skyCorr, the src table, the
jointcal_wcs (the true WCS), jointcal_photoCalib, fgcm_photoCalib and
fgcm_tract_photoCalib (the true calibration). Returns the small truth records the
repository tables are made of.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..calib.background_file import write_background
from ..calib.photocalib import F_AB_NJY, write_photocalib
from ..io.afwtable import Field, card_key
from ..io.archive import ArchiveWriter, NewCatalog
from ..io.atomic import atomic_write
from ..io.catalog import write_catalog
from ..io.exposure import write_exposure
from .ccd import MASK_PLANES, CcdData, simulate_ccd
from .model import GAIN, READ_NOISE, DemoConfig
from .paths import TEMPLATES, dataset_path
from .photometry import fgcm_zeropoint_row

__all__ = ["write_ccd", "write_skywcs_file"]

_PSF_FIELDS = [
    Field("dimensions_x", "1J", "width/height of realization of Psf", "pixel"),
    Field("dimensions_y", "1J", "width/height of realization of Psf", "pixel"),
    Field("sigma", "1D", "radius of Gaussian", "pixel"),
]


def write_skywcs_file(path: Path, wcs) -> None:
    """A standalone SkyWcs file as jointcal writes it: empty primary HDU, then the archive."""
    writer = ArchiveWriter()
    wcs.add_to_archive(writer)
    with atomic_write(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(), *writer.hdus()]).writeto(tmp)


def _calexp_archive(data: CcdData) -> tuple[list, dict[str, int]]:
    """Archive HDUs (SkyWcs, PhotoCalib, GaussianPsf) and the component ids."""
    model = data.model
    writer = ArchiveWriter()
    ids = {"SKYWCS": model.calexp_wcs.add_to_archive(writer)}
    ids["PHOTOCALIB"] = model.photometry.calexp.add_to_archive(writer)
    sigma = model.visit.psf_sigma
    width = np.array([2 * int(np.ceil(5 * sigma)) + 1], dtype=np.int32)
    psf = {"dimensions_x": width, "dimensions_y": width.copy(), "sigma": np.array([sigma])}
    ids["PSF"] = writer.add("GaussianPsf", "lsst.afw.detection", [NewCatalog(_PSF_FIELDS, psf)])
    return writer.hdus(), ids


def _calexp_header(config: DemoConfig, data: CcdData, ids: dict[str, int]) -> fits.Header:
    """Primary metadata of the calexp: observation cards, sky statistics, component ids."""
    m = data.model
    v = m.visit
    header = fits.Header()
    cards = [
        ("TELESCOP", "Subaru", None), ("INSTRUME", "Hyper Suprime-Cam", None),
        ("OBJECT", config.field, None), ("DATA-TYP", "OBJECT", "Characteristics of this data"),
        ("EXP-ID", f"HSCE{v.visit:08d}", "Exposure ID"),
        ("FRAMEID", f"HSCA{v.visit * 100 + m.ccd.number:08d}", "Image sequential number"),
        ("VISIT", v.visit, "visit number"), ("CCD", m.ccd.number, "CCD number"),
        ("CCDNUM", m.ccd.number, "CCD number"), ("DET-ID", m.ccd.number, "detector id"),
        ("FILTER", v.filter, None), ("FILTER01", v.filter, "Filter name"),
        ("POINTING", v.pointing, "pointing number"),
        ("DATE-OBS", v.date_obs, "Observation start date"),
        ("MJD", v.mjd, "Modified Julian Date at start of exposure"),
        ("TIMESYS", "TAI", None), ("EXPTIME", v.exptime, "exposure time (s)"),
        ("DARKTIME", v.exptime, "dark time (s)"),
        ("RA2000", v.boresight[0], "boresight ra (deg)"),
        ("DEC2000", v.boresight[1], "boresight dec (deg)"),
        ("BORE-RA", v.boresight[0], None), ("BORE-DEC", v.boresight[1], None),
        ("INST-PA", v.position_angle, "instrument position angle (deg)"),
        ("GAIN", GAIN, "electrons per count"), ("RDNOISE", READ_NOISE, "read noise (counts)"),
        ("SKYLEVEL", v.sky.level, "sky level (counts)"),
        ("SKYSIGMA", float(np.sqrt(m.pixel_variance)), "sky noise (counts)"),
        ("MAGZERO", -2.5 * np.log10(m.photometry.calexp.mean * v.exptime / F_AB_NJY),
         "AB mag of 1 count/s"),
        ("EXPINFO_V", 2, None),
    ]  # fmt: skip
    for name, obj_id in ids.items():
        comment = f"archive ID for generic component '{name}'"
        cards += [(f"{name}_ID", obj_id, comment), (f"ARCHIVE_ID_{name}", obj_id, comment)]
    for key, value, comment in cards:
        header.append(_card(key, value, comment), end=True)
    return header


def _card(key: str, value, comment: str | None) -> fits.Card:
    """A card whose comment is cut to fit 80 characters (no VerifyWarning)."""
    card = fits.Card(card_key(key), value)
    room = 80 - len(card.image.rstrip()) - 3
    return fits.Card(card_key(key), value, (comment or "")[: max(room, 0)])


def _write_calexp(path: Path, config: DemoConfig, data: CcdData) -> None:
    archive, ids = _calexp_archive(data)
    wcs_cards = fits.Header([(k, v) for k, v in data.model.calexp_wcs_cards.items()])
    # as hscPipe writes calexps: every plane GZIP_2, one row per tile
    write_exposure(
        path, data.image, data.mask, data.variance,
        primary_header=_calexp_header(config, data, ids), mask_planes=MASK_PLANES,
        archive_hdus=archive, xy0=(0, 0), compress=True, codec="afw",
        plane_headers={plane: wcs_cards for plane in ("image", "mask", "variance")},
    )  # fmt: skip


def write_ccd(rerun_dir: Path, config: DemoConfig, visit: int, ccd: int) -> dict:
    """Simulate and write one CCD; returns its truth records.

    Returns
    -------
    dict
        ``sources`` (truth rows of its src), ``ccd`` (its ``ccds.parquet`` row),
        ``zeropoint`` (its ``fgcmZeropoints`` row) and ``raw`` (its registry row).
    """
    data = simulate_ccd(config, visit, ccd)
    m, phot = data.model, data.model.photometry
    data_id = {"visit": visit, "ccd": ccd, "pointing": m.visit.pointing,
               "filter": m.visit.filter, "tract": config.tract}  # fmt: skip
    paths = {name: dataset_path(rerun_dir, name, **data_id) for name in TEMPLATES}
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    _write_calexp(paths["calexp"], config, data)
    write_background(paths["calexpBackground"], m.calexp_background, overwrite=True)
    write_background(paths["skyCorr"], m.sky_corr, overwrite=True)
    write_catalog(paths["src"], data.src)
    write_skywcs_file(paths["jointcal_wcs"], m.true_wcs)
    write_photocalib(paths["jointcal_photoCalib"], phot.jointcal, overwrite=True)
    write_photocalib(paths["fgcm_photoCalib"], phot.fgcm, overwrite=True)
    write_photocalib(paths["fgcm_tract_photoCalib"], phot.truth, overwrite=True)
    root = Path(rerun_dir).parents[1]
    return {
        "sources": data.truth,
        "ccd": _ccd_row(config, data, {k: str(p.relative_to(root)) for k, p in paths.items()}),
        "zeropoint": fgcm_zeropoint_row(visit, ccd, m.visit.filter, phot.fgcm, m.visit.exptime),
        "raw": _raw_row(config, data),
    }


def _ccd_row(config: DemoConfig, data: CcdData, paths: dict[str, str]) -> dict:
    m, phot = data.model, data.model.photometry
    v = m.visit
    return {
        "visit": v.visit, "ccd": m.ccd.number, "filter": v.filter, "pointing": v.pointing,
        "tract": config.tract, "field": config.field, "cbar": phot.cbar,
        "sigma_c": phot.truth.err, "photocalib_field": json.dumps(phot.truth.field.to_dict()),
        "fgcm_mean": phot.fgcm.mean, "jointcal_mean": phot.jointcal.mean,
        "calexp_calib_mean": phot.calexp.mean, "wcs": m.true_wcs.to_text(),
        "calexp_wcs": m.calexp_wcs.to_text(), "psf_sigma": v.psf_sigma, "gain": GAIN,
        "read_noise": READ_NOISE, "sky_level": v.sky.level, "bad_column": m.bad_column,
        "width": m.ccd.width, "height": m.ccd.height, "n_src": len(data.src),
        "n_sky": int(data.truth["is_sky"].sum()), "boresight_ra": v.boresight[0],
        "boresight_dec": v.boresight[1], "sky_path": paths["skyCorr"],
        **{f"path_{k}": p for k, p in paths.items()},
    }  # fmt: skip


def _raw_row(config: DemoConfig, data: CcdData) -> dict:
    m = data.model
    v = m.visit
    rng = np.random.default_rng([config.seed, v.visit, m.ccd.number, 3])
    return {
        "field": config.field, "visit": v.visit, "ccd": m.ccd.number, "pointing": v.pointing,
        "filter": v.filter, "dateObs": v.date_obs, "taiObs": v.tai_obs, "expTime": v.exptime,
        "pa": v.position_angle, "proposal": "o16001", "config": "A", "autoguider": 1,
        "ccdTemp": float(np.round(-100.0 + rng.normal(0.0, 0.5), 2)),
    }  # fmt: skip
