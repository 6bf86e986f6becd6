"""Simulate one CCD: the calexp planes, the src table and their truth.

Pixel model (docs/calibration.md, 'Images' and 'Sky correction', inverted): with T the true
calibrated image (each source a Gaussian of total flux F / cbar), s the skyCorr image,
c(x, y) the true calibration and cbar its value at the CCD centre, the calexp holds

    p = (T + s) * cbar / c + noise,   variance v = (max(signal, 0) + B) / gain + rn^2

where B is the calexp's original background, so that p * c / cbar - s recovers T within
the noise sqrt(v) * c / cbar. Mask: EDGE border, DETECTED where a source adds more than
1.5 sky sigma, a BAD column, SAT where the signal exceeds saturation (value clipped), and
NO_DATA beyond the vignetting radius, where the image is exactly 0 and the variance NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .focalplane import SIZES
from .measure import Detections, Exposure, measure_sources
from .model import GAIN, READ_NOISE, SATURATION, CcdModel, DemoConfig, ccd_model
from .sky import ccd_radius_deg, render_sources, sources_near, total_sigma_px

__all__ = ["MASK_PLANES", "CcdData", "TrueSources", "simulate_ccd", "true_image", "true_sources"]

MASK_PLANES = {
    "BAD": 0, "SAT": 1, "INTRP": 2, "CR": 3, "EDGE": 4, "DETECTED": 5, "DETECTED_NEGATIVE": 6,
    "SUSPECT": 7, "NO_DATA": 8, "VIGNETTED": 9, "STREAK": 10, "BRIGHT_OBJECT": 11,
    "CROSSTALK": 12, "NOT_DEBLENDED": 13, "UNMASKEDNAN": 14,
}  # fmt: skip
"""The 15 mask planes of a real hscPipe/obs_subaru calexp, with their bits."""
_SKY_SOURCES = {"full": 100, "small": 10}
_DETECTION_SNR = 5.0


@dataclass(frozen=True, eq=False)
class TrueSources:
    """True sources whose light falls on a CCD (on it or within the rendering margin)."""

    index: np.ndarray  # rows of the sky catalogue
    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray  # nJy, in the visit's filter
    sigma: np.ndarray  # Gaussian sigma on the image, pixels
    is_star: np.ndarray
    on_chip: np.ndarray


@dataclass(frozen=True, eq=False)
class CcdData:
    """A simulated CCD: the calexp planes, the src table and the truth rows of that src."""

    model: CcdModel
    image: np.ndarray
    mask: np.ndarray
    variance: np.ndarray
    src: pd.DataFrame
    truth: pd.DataFrame


def true_sources(config: DemoConfig, model: CcdModel) -> TrueSources:
    """The catalogue sources that light up the CCD, at their true pixel positions."""
    sky = config.sky()
    ccd, wcs = model.ccd, model.true_wcs
    margin = 5.0 * total_sigma_px(model.visit.psf_sigma, 1.5) + 2
    ra_c, dec_c = wcs.pixel_to_sky(*ccd.center_pixel)
    near = sources_near(sky, float(ra_c), float(dec_c), ccd_radius_deg(ccd, margin))
    x, y = wcs.sky_to_pixel(sky.ra[near], sky.dec[near])
    x, y = np.atleast_1d(x), np.atleast_1d(y)
    w, h = ccd.width, ccd.height
    keep = (x > -margin) & (x < w - 1 + margin) & (y > -margin) & (y < h - 1 + margin)
    on_chip = (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5)
    index = near[keep]
    return TrueSources(
        index=index,
        x=x[keep],
        y=y[keep],
        flux=sky.flux(model.visit.filter)[index],
        sigma=total_sigma_px(model.visit.psf_sigma, sky.size_arcsec[index]),
        is_star=sky.is_star[index],
        on_chip=on_chip[keep],
    )


def true_image(model: CcdModel, sources: TrueSources) -> np.ndarray:
    """T: the true calibrated image (float64), each source of total flux F / cbar."""
    shape = (model.ccd.height, model.ccd.width)
    counts = sources.flux / model.photometry.cbar
    return render_sources(shape, sources.x, sources.y, counts, sources.sigma)


def _no_data(model: CcdModel, size: str) -> np.ndarray | None:
    """Pixels beyond the vignetting radius (None when the whole CCD is inside it)."""
    ccd = model.ccd
    limit = SIZES[size].vignetting_mm
    cx, cy = ccd.to_focal(
        [0, ccd.width - 1, 0, ccd.width - 1], [0, 0, ccd.height - 1, ccd.height - 1]
    )
    if np.hypot(cx, cy).max() < limit:
        return None
    fx, fy = ccd.to_focal(np.arange(ccd.width)[None, :], np.arange(ccd.height)[:, None])
    out = np.hypot(fx, fy) >= limit
    return out if out.any() else None


def _pixels(model: CcdModel, t_image: np.ndarray, size: str, rng: np.random.Generator):
    """Image, mask and variance planes of the calexp, the SAT pixels and the EDGE width."""
    ccd, phot = model.ccd, model.photometry
    ratio = phot.cbar / phot.truth.evaluate_grid(0, ccd.width, 0, ccd.height)
    signal = (t_image + model.sky_corr.image()) * ratio
    background = model.calexp_background.image()
    variance = (np.maximum(signal, 0.0) + background) / GAIN + READ_NOISE**2
    image = signal + np.sqrt(variance) * rng.standard_normal(signal.shape)
    saturated = signal > SATURATION
    image[saturated] = SATURATION
    mask, edge = _mask(model, t_image * ratio, saturated, size)
    image, variance = image.astype(np.float32), variance.astype(np.float32)
    no_data = (mask & (1 << MASK_PLANES["NO_DATA"])) != 0
    image[no_data] = 0.0
    variance[no_data] = np.nan
    return image, mask, variance, saturated, edge


def _mask(model: CcdModel, sources: np.ndarray, saturated: np.ndarray, size: str):
    """The mask plane (EDGE, DETECTED, BAD, SAT, NO_DATA) and the EDGE width."""
    mask = np.zeros(sources.shape, np.int32)
    edge = max(16 // SIZES[size].shrink, 2)
    border = np.ones(sources.shape, bool)
    border[edge:-edge, edge:-edge] = False
    mask[border] |= 1 << MASK_PLANES["EDGE"]
    mask[sources > 1.5 * np.sqrt(model.pixel_variance)] |= 1 << MASK_PLANES["DETECTED"]
    mask[:, model.bad_column] |= 1 << MASK_PLANES["BAD"]
    mask[saturated] |= 1 << MASK_PLANES["SAT"]
    no_data = _no_data(model, size)
    if no_data is not None:
        mask[no_data] |= 1 << MASK_PLANES["NO_DATA"]
    return mask, edge


def _sky_positions(rng, sources: TrueSources, mask: np.ndarray, n: int):
    """Pixel centres of ``n`` blank positions (with data, no true source within 4 sigma)."""
    h, w = mask.shape
    ix, iy = rng.integers(4, w - 4, 4 * n), rng.integers(4, h - 4, 4 * n)
    x, y = ix.astype(float), iy.astype(float)
    d2 = (x[:, None] - sources.x) ** 2 + (y[:, None] - sources.y) ** 2
    blank = np.all(d2 > (4.0 * sources.sigma) ** 2, axis=1)
    blank &= (mask[iy, ix] & (1 << MASK_PLANES["NO_DATA"])) == 0
    return x[blank][:n], y[blank][:n]


def simulate_ccd(config: DemoConfig, visit: int, ccd: int) -> CcdData:
    """Simulate one CCD completely (model, pixels, measurements), deterministically."""
    model = ccd_model(config, visit, ccd)
    sources = true_sources(config, model)
    t_image = true_image(model, sources)
    noise_rng = np.random.default_rng([config.seed, visit, ccd, 1])
    image, mask, variance, saturated, edge = _pixels(model, t_image, config.size, noise_rng)
    rng = np.random.default_rng([config.seed, visit, ccd, 2])
    detected, counts = _detected(model, sources, mask)
    sky_x, sky_y = _sky_positions(rng, sources, mask, _SKY_SOURCES[config.size])
    det = _detections(model, sources, detected, counts, sky_x, sky_y, saturated)
    phot = model.photometry
    exposure = Exposure(
        shape=image.shape, psf_sigma=model.visit.psf_sigma, pixel_variance=model.pixel_variance,
        gain=GAIN, wcs=model.calexp_wcs, local_calib=(phot.calexp.mean, phot.calexp.err),
        exposure_id=model.exposure_id, edge=edge,
    )  # fmt: skip
    src, extra = measure_sources(rng, det, exposure)
    truth = _truth_rows(config, model, sources, detected, det, src, extra)
    return CcdData(model, image, mask, variance, src, truth)


def _detected(model: CcdModel, sources: TrueSources, mask: np.ndarray):
    """Indices (into ``sources``) of the detected on-chip sources, ordered by y then x."""
    phot = model.photometry
    counts = sources.flux / phot.truth.evaluate(sources.x, sources.y)
    psf2 = model.visit.psf_sigma**2
    frac = 2 * psf2 / (psf2 + sources.sigma**2)
    err = np.sqrt(frac * counts / GAIN + 4 * np.pi * psf2 * model.pixel_variance)
    ix = np.clip(np.rint(sources.x).astype(int), 0, model.ccd.width - 1)
    iy = np.clip(np.rint(sources.y).astype(int), 0, model.ccd.height - 1)
    has_data = (mask[iy, ix] & (1 << MASK_PLANES["NO_DATA"])) == 0
    good = sources.on_chip & has_data & (frac * counts / err > _DETECTION_SNR)
    order = np.lexsort((sources.x[good], sources.y[good]))
    return np.flatnonzero(good)[order], counts


def _detections(model, sources, detected, counts, sky_x, sky_y, saturated) -> Detections:
    """Per-row inputs of the measurement: detected sources, then sky sources."""
    n_sky = len(sky_x)
    x = np.concatenate([sources.x[detected], sky_x])
    y = np.concatenate([sources.y[detected], sky_y])
    sigma = np.concatenate([sources.sigma[detected], np.full(n_sky, model.visit.psf_sigma)])
    star = np.concatenate([sources.is_star[detected], np.zeros(n_sky, bool)])
    h, w = saturated.shape
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    box = [
        (np.clip(iy + dy, 0, h - 1), np.clip(ix + dx, 0, w - 1))
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    ]
    return Detections(
        x=x, y=y,
        counts=np.concatenate([counts[detected], np.zeros(n_sky)]),
        sigma=sigma, is_star=star,
        is_sky=np.concatenate([np.zeros(len(detected), bool), np.ones(n_sky, bool)]),
        saturated_center=saturated[np.clip(iy, 0, h - 1), np.clip(ix, 0, w - 1)],
        saturated=np.any([saturated[b] for b in box], axis=0),
        bad=np.abs(x - model.bad_column) < 3 * sigma,
    )  # fmt: skip


def _truth_rows(config, model, sources, detected, det, src, extra) -> pd.DataFrame:
    """One truth row per src row: true sky position, flux, pixel, class and fractions."""
    n_sky = int(det.is_sky.sum())
    sky = config.sky()
    index = sources.index[detected]
    sky_ra, sky_dec = model.true_wcs.pixel_to_sky(det.x[-n_sky:], det.y[-n_sky:])
    ra = np.concatenate([sky.ra[index], np.atleast_1d(sky_ra)[:n_sky]])
    dec = np.concatenate([sky.dec[index], np.atleast_1d(sky_dec)[:n_sky]])
    index = np.concatenate([index, np.full(n_sky, -1)])
    truth = pd.DataFrame({
        "visit": np.int32(model.visit.visit), "ccd": np.int32(model.ccd.number),
        "id": src["id"].to_numpy(), "filter": model.visit.filter,
        "ra": ra, "dec": dec,
        "flux": np.concatenate([sources.flux[detected], np.zeros(n_sky)]),
        "x": det.x, "y": det.y, "is_sky": det.is_sky, "is_star": det.is_star,
        "sigma": det.sigma, "sky_index": index,
        "c_true": model.photometry.truth.evaluate(det.x, det.y),
    })  # fmt: skip
    return pd.concat([truth, extra], axis=1)
