"""The afw schema of the demo ``src`` tables, modelled on a real HSC src (AFW_TABLE_VERSION 3).

Column names, units, field templates and alias cards follow the hscPipe/afw conventions
(``slot_Centroid:base_SdssCentroid``, ``*_instFlux`` in counts, angles in radians); the
descriptions are our own words. Apertures of 3, 6 and 12 pixels make the sorted-name
order (``..._12_0`` before ``..._3_0``) differ from the file order.
"""

from __future__ import annotations

from ..io.catalog import FrozenDict

__all__ = ["APERTURES", "COLUMNS", "FLAGS", "MEASUREMENTS", "src_attrs"]

APERTURES = (3.0, 6.0, 12.0)
MEASUREMENTS = (
    *(f"base_CircularApertureFlux_{r:.0f}_0" for r in APERTURES),
    "base_GaussianFlux",
    "base_PsfFlux",
)
"""Measurement prefixes with ``_instFlux`` and ``_instFluxErr`` columns."""

_FLUX_DOCS = {
    "base_PsfFlux": "instFlux of a linear least-squares fit of the PSF model",
    "base_GaussianFlux": "instFlux of an elliptical Gaussian matched to the source",
    **{f"base_CircularApertureFlux_{r:.0f}_0": f"instFlux in a {r:.1f}-pixel aperture"
       for r in APERTURES},
}  # fmt: skip

# (name, TFORM, unit, TCCLS, doc), in file order (footprint last)
COLUMNS: tuple[tuple[str, str, str, str, str], ...] = (
    ("id", "1K", "", "Scalar", "unique ID"),
    ("coord_ra", "1D", "rad", "Angle", "position in ra/dec"),
    ("coord_dec", "1D", "rad", "Angle", "position in ra/dec"),
    ("parent", "1K", "", "Scalar", "unique ID of parent source"),
    ("deblend_nChild", "1J", "", "Scalar", "number of children this object has"),
    ("deblend_psf_instFlux", "1D", "count", "Scalar", "instFlux of the PSF deblend template"),
    ("base_SdssCentroid_x", "1D", "pixel", "Scalar", "centroid from the SDSS algorithm"),
    ("base_SdssCentroid_y", "1D", "pixel", "Scalar", "centroid from the SDSS algorithm"),
    ("base_SdssCentroid_xErr", "1E", "pixel", "Scalar", "1-sigma uncertainty on x"),
    ("base_SdssCentroid_yErr", "1E", "pixel", "Scalar", "1-sigma uncertainty on y"),
    ("base_SdssShape_xx", "1D", "pixel^2", "Scalar", "adaptive second moment xx"),
    ("base_SdssShape_yy", "1D", "pixel^2", "Scalar", "adaptive second moment yy"),
    ("base_SdssShape_xy", "1D", "pixel^2", "Scalar", "adaptive second moment xy"),
    *(
        col
        for p in MEASUREMENTS[:3]
        for col in (
            (f"{p}_instFlux", "1D", "count", "Scalar", _FLUX_DOCS[p]),
            (f"{p}_instFluxErr", "1D", "count", "Scalar", "1-sigma instFlux uncertainty"),
        )
    ),
    ("base_GaussianFlux_instFlux", "1D", "count", "Scalar", _FLUX_DOCS["base_GaussianFlux"]),
    ("base_GaussianFlux_instFluxErr", "1D", "count", "Scalar", "1-sigma instFlux uncertainty"),
    ("base_LocalPhotoCalib", "1D", "", "Scalar", "local PhotoCalib factor at the source"),
    ("base_LocalPhotoCalibErr", "1D", "", "Scalar", "error of base_LocalPhotoCalib"),
    ("base_PsfFlux_instFlux", "1D", "count", "Scalar", _FLUX_DOCS["base_PsfFlux"]),
    ("base_PsfFlux_instFluxErr", "1D", "count", "Scalar", "1-sigma instFlux uncertainty"),
    ("base_PsfFlux_area", "1E", "pixel", "Scalar", "effective area of the PSF"),
    ("base_ClassificationExtendedness_value", "1D", "", "Scalar", "1 if extended, else 0"),
    ("base_FootprintArea_value", "1J", "pixel", "Scalar", "pixels in the footprint"),
    ("footprint", "1J", "", "Scalar", "archive ID for Footprint"),
)

_APERTURE_FLAGS = tuple(
    (f"base_CircularApertureFlux_{r:.0f}_0_flag{suffix}", doc)
    for r in APERTURES
    for suffix, doc in (
        ("", "general failure flag"),
        ("_apertureTruncated", "aperture did not fit within the measurement image"),
        ("_sincCoeffsTruncated", "sinc coefficients were truncated"),
    )
)
FLAGS: tuple[tuple[str, str], ...] = (
    ("calib_detected", "source was detected as an icSource"),
    ("calib_psf_candidate", "candidate for PSF determination"),
    ("calib_psf_used", "used for PSF determination"),
    ("calib_psf_reserved", "reserved from PSF determination"),
    ("deblend_deblendedAsPsf", "deblender treated this source as a PSF"),
    ("deblend_skipped", "deblender skipped this source"),
    ("sky_source", "sky objects"),
    ("base_SdssCentroid_flag", "general failure flag"),
    ("base_SdssCentroid_flag_edge", "object too close to the edge"),
    ("base_SdssCentroid_flag_resetToPeak", "centroid reset to the footprint peak"),
    ("base_SdssShape_flag", "general failure flag"),
    *_APERTURE_FLAGS,
    ("base_GaussianFlux_flag", "general failure flag"),
    ("base_LocalPhotoCalib_flag", "failed to compute the local calibration"),
    ("base_PixelFlags_flag", "general failure flag"),
    ("base_PixelFlags_flag_offimage", "source centre is off the image"),
    ("base_PixelFlags_flag_edge", "source is outside the usable exposure region"),
    ("base_PixelFlags_flag_interpolated", "interpolated pixel in the footprint"),
    ("base_PixelFlags_flag_saturated", "saturated pixel in the footprint"),
    ("base_PixelFlags_flag_bad", "bad pixel in the footprint"),
    ("base_PixelFlags_flag_saturatedCenter", "saturated pixel in the source centre"),
    ("base_PsfFlux_flag", "general failure flag"),
    ("base_PsfFlux_flag_noGoodPixels", "not enough non-rejected pixels in the data"),
    ("base_PsfFlux_flag_edge", "object was too close to the edge of the image"),
    ("detect_isPrimary", "source is a primary detection"),
    ("detect_isDeblendedSource", "source is deblended or was never blended"),
    ("detect_isIsolated", "source has no blended neighbours"),
    ("base_GaussianFlux_flag_apCorr", "aperture correction failed"),
    ("base_PsfFlux_flag_apCorr", "aperture correction failed"),
    ("base_ClassificationExtendedness_flag", "extendedness could not be computed"),
    ("calib_astrometry_used", "used in the astrometric calibration"),
    ("calib_photometry_used", "used in the photometric calibration"),
    ("calib_photometry_reserved", "reserved from the photometric calibration"),
)

_ALIASES = {
    "base_CircularApertureFlux_flag_badCentroid": "base_SdssCentroid_flag",
    "base_GaussianFlux_flag_badCentroid": "base_SdssCentroid_flag",
    "base_PsfFlux_flag_badCentroid": "base_SdssCentroid_flag",
    "base_SdssShape_flag_badCentroid": "base_SdssCentroid_flag",
    "slot_ApFlux": "base_CircularApertureFlux_12_0",
    "slot_CalibFlux": "base_CircularApertureFlux_12_0",
    "slot_Centroid": "base_SdssCentroid",
    "slot_GaussianFlux": "base_GaussianFlux",
    "slot_ModelFlux": "base_GaussianFlux",
    "slot_PsfFlux": "base_PsfFlux",
    "slot_Shape": "base_SdssShape",
}


def src_attrs(exposure_id: int) -> dict:
    """``DataFrame.attrs`` for :func:`daskcal.io.catalog.write_catalog` (complete schema)."""
    metadata = [("BASE_CIRCULARAPERTUREFLUX_RADII", r, "") for r in APERTURES]
    noise = {"SEED_MULTIPLIER": 1, "SOURCE": "measure", "OFFSET": 0.0, "EXPOSURE_ID": exposure_id}
    metadata += [(f"NOISE_{key}", value, "") for key, value in noise.items()]
    return {
        "afw_type": "SOURCE",
        "table_version": 3,
        "aliases": FrozenDict(_ALIASES),
        "units": FrozenDict((n, u) for n, _, u, _, _ in COLUMNS if u),
        "docs": FrozenDict((n, d) for n, _, _, _, d in COLUMNS),
        "formats": FrozenDict((n, f) for n, f, _, _, _ in COLUMNS),
        "ccls": FrozenDict((n, c) for n, _, _, c, _ in COLUMNS),
        "flag_names": tuple(n for n, _ in FLAGS),
        "flag_docs": FrozenDict(FLAGS),
        "metadata": tuple(metadata),
    }
