"""Repeatability: how a CCD's stars sit against the same stars in the other visits.

A calibration error confined to one CCD of one visit (a wrong jointcal WCS, a wrong FGCM
field) may hide in the difference from the calexp's own calibration when that is itself
off by as much, but it shows against the other visits: the CCD's stars come out moved or
brighter than everywhere else. The stars of a tract (``star_*`` arrays of the CCD work
files) are matched between visits (friends of friends within ``match_radius_arcsec``,
pairs of one visit never linked; a group holding two detections of one visit is dropped),
and a star detected in at least ``min_visits`` visits (of one filter, for magnitudes)
enters a relative solution, as an ubercal does:

    value(star, ccd) = reference(star) + offset(ccd)

a weighted least-squares fit (inverse variances for magnitudes, equal weights for
positions) of every reference and offset at once, refitted without the detections beyond
5 MAD, with the median offset over the CCDs held at 0 (per filter for magnitudes). A
wrong CCD then gets the whole of its error and the others none, however few stars it
shares with each of them. Positions are offsets on the tangent plane at the stars' mean
position, East and North, in mas; magnitudes in mmag.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import lsqr
from scipy.spatial import cKDTree

from ..calib.sip import gnomonic_iwc
from .options import QAOptions

__all__ = ["load_stars", "match_stars", "relative_offsets", "repeatability"]

_MAS_PER_DEG = 3.6e6
_PASSES = 2
_CLIP_MAD = 5.0
REPEAT_COLUMNS = (
    "astro_east_mas",
    "astro_north_mas",
    "astro_repeat_mas",
    "astro_n",
    "phot_repeat_mmag",
    "phot_n",
)


def load_stars(works: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The stars saved in CCD work files.

    Parameters
    ----------
    works : iterable of mapping
        CCD rows with ``visit``, ``ccd``, ``filter`` and ``work`` (the ``.npz`` file; rows
        without one are skipped).

    Returns
    -------
    pandas.DataFrame
        visit, ccd, filter, ra, dec (degrees), mag, mag_err.
    """
    parts = []
    for row in works:
        if not row.get("work"):
            continue
        with np.load(row["work"]) as data:
            if "star_ra" not in data:
                continue
            stars = {k: data[f"star_{k}"] for k in ("ra", "dec", "mag", "mag_err")}
        parts.append(pd.DataFrame({"visit": row["visit"], "ccd": row["ccd"],
                                   "filter": row["filter"], **stars}))  # fmt: skip
    if not parts:
        columns = ("visit", "ccd", "filter", "ra", "dec", "mag", "mag_err")
        return pd.DataFrame({c: [] for c in columns})
    return pd.concat(parts, ignore_index=True)


def _tangent_centre(ra: np.ndarray, dec: np.ndarray) -> tuple[float, float]:
    r, d = np.radians(ra), np.radians(dec)
    v = np.array([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)]).mean(axis=1)
    return float(np.degrees(np.arctan2(v[1], v[0])) % 360), float(
        np.degrees(np.arctan2(v[2], np.hypot(v[0], v[1])))
    )


def match_stars(
    ra: np.ndarray, dec: np.ndarray, visit: np.ndarray, radius_arcsec: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group detections of one star across visits.

    Parameters
    ----------
    ra, dec : ndarray
        Positions (degrees).
    visit : ndarray
        Visit of each detection.
    radius_arcsec : float
        Linking length.

    Returns
    -------
    star : ndarray of int
        Group label of each detection (-1 for a group with two detections of one visit).
    east, north : ndarray
        Tangent-plane position (mas) at the detections' mean position.
    """
    east, north = gnomonic_iwc(ra, dec, _tangent_centre(ra, dec)) * _MAS_PER_DEG
    n = len(ra)
    if n == 0:
        return np.zeros(0, int), east, north
    pairs = cKDTree(np.column_stack([east, north])).query_pairs(
        radius_arcsec * 1e3, output_type="ndarray"
    )
    pairs = pairs[visit[pairs[:, 0]] != visit[pairs[:, 1]]]
    links = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, star = connected_components(links, directed=False)
    per_star = pd.DataFrame({"star": star, "visit": visit}).groupby("star")["visit"]
    single = (per_star.transform("nunique") == per_star.transform("size")).to_numpy()
    return np.where(single, star, -1), east, north


def relative_offsets(
    values: np.ndarray,
    weights: np.ndarray,
    star: np.ndarray,
    ccd: np.ndarray,
    gauge: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The offset of each CCD in ``value = reference(star) + offset(ccd)``.

    A weighted linear least-squares solution (sparse, LSQR) over every star and CCD,
    solved again without the detections whose normalised residual lies beyond 5 MAD
    (variable or mismatched stars). A constant can move between the stars and the CCDs
    of a connected set (CCDs linked by common stars): within each such set and ``gauge``
    group the median offset is held at 0.

    Parameters
    ----------
    values, weights : ndarray
        One per detection (weights: inverse variances).
    star, ccd : ndarray of int
        The detection's star (codes 0..n_star-1) and CCD (codes 0..n_ccd-1).
    gauge : ndarray of int
        Per CCD code, its group (e.g. its filter).

    Returns
    -------
    offsets : ndarray
        Per CCD code (NaN for a CCD with no detection used).
    used : ndarray of int
        Detections used per CCD code.
    """
    n_star, n_ccd = int(star.max()) + 1 if len(star) else 0, len(gauge)
    use = np.isfinite(values) & (weights > 0)
    offsets = np.full(n_ccd, np.nan)
    for _ in range(_PASSES):
        rows = np.flatnonzero(use)
        if not rows.size:
            break
        root = np.sqrt(weights[rows])
        design = csr_matrix(
            (np.concatenate([root, root]),
             (np.tile(np.arange(rows.size), 2), np.concatenate([star[rows], n_star + ccd[rows]]))),
            shape=(rows.size, n_star + n_ccd),
        )  # fmt: skip
        solution = lsqr(design, root * values[rows], atol=1e-12, btol=1e-12)[0]
        offsets = solution[n_star:]
        residual = (values - solution[star] - offsets[ccd]) * np.sqrt(weights)
        mad = np.median(np.abs(residual[rows]))
        use = use & (np.abs(residual) <= _CLIP_MAD * max(mad, 1e-12))
    links = coo_matrix((np.ones(len(star)), (ccd, star)), shape=(n_ccd, n_star)).tocsr()
    _, linked = connected_components(links @ links.T, directed=False)
    group = pd.MultiIndex.from_arrays([gauge, linked]).factorize()[0]
    offsets = offsets - pd.Series(offsets).groupby(group).transform("median").to_numpy()
    used = np.bincount(ccd[use], minlength=n_ccd)
    return np.where(used > 0, offsets, np.nan), used


def _equal_weights(stars: pd.DataFrame) -> np.ndarray:
    """Positions: equal weights (centroid errors are not always measured)."""
    return np.ones(len(stars))


def _magnitude_weights(stars: pd.DataFrame) -> np.ndarray:
    """Magnitudes: inverse variances, errors floored at 1 mmag."""
    return 1.0 / np.maximum(stars["mag_err"].to_numpy() * 1e3, 1.0) ** 2


def _solve(stars: pd.DataFrame, groups: list[str], options: QAOptions, columns, gauge_key):
    """Offsets per (visit, ccd) of ``columns`` from the stars seen in enough visits."""
    per_group = stars.groupby(groups)["visit"].transform("nunique")
    used = stars[(stars["star"] >= 0) & (per_group >= options.min_visits)]
    if used.empty:
        index = pd.MultiIndex.from_tuples([], names=["visit", "ccd"])
        return pd.DataFrame({c: pd.Series(dtype=float) for c in [*columns, "n"]}, index=index)
    codes, ccds = pd.MultiIndex.from_frame(used[["visit", "ccd"]]).factorize()
    ccds = ccds.set_names(["visit", "ccd"])
    star = pd.MultiIndex.from_frame(used[groups]).factorize()[0]
    gauge = (
        pd.Series(used[gauge_key].to_numpy()).groupby(codes).first().factorize()[0]
        if gauge_key
        else np.zeros(len(ccds), int)
    )
    out = pd.DataFrame(index=ccds)
    counts = []
    for name, (value, weight) in columns.items():
        out[name], n = relative_offsets(used[value].to_numpy(), weight(used), star, codes, gauge)
        counts.append(n)
    out["n"] = np.min(counts, axis=0) if counts else 0
    return out


def repeatability(stars: pd.DataFrame, options: QAOptions) -> pd.DataFrame:
    """Per (visit, ccd) offsets of a tract's stars against the other visits.

    Parameters
    ----------
    stars : pandas.DataFrame
        :func:`load_stars` of one tract.
    options : QAOptions
        ``match_radius_arcsec``, ``min_visits`` and ``min_stars``.

    Returns
    -------
    pandas.DataFrame
        Index (visit, ccd); columns ``astro_east_mas``, ``astro_north_mas``,
        ``astro_repeat_mas`` (their length), ``astro_n``, ``phot_repeat_mmag``,
        ``phot_n``; NaN offsets where a CCD has fewer than ``min_stars`` matched stars.
    """
    index = pd.MultiIndex.from_tuples([], names=["visit", "ccd"])
    empty = pd.DataFrame({c: pd.Series(dtype=float) for c in REPEAT_COLUMNS}, index=index)
    if stars.empty:
        return empty
    stars = stars.reset_index(drop=True)
    star, east, north = match_stars(
        stars["ra"].to_numpy(), stars["dec"].to_numpy(), stars["visit"].to_numpy(),
        options.match_radius_arcsec,
    )  # fmt: skip
    stars = stars.assign(star=star, east=east, north=north, mmag=stars["mag"] * 1e3)
    astro = _solve(stars, ["star"], options, {"astro_east_mas": ("east", _equal_weights),
                   "astro_north_mas": ("north", _equal_weights)}, None)  # fmt: skip
    photo = _solve(stars, ["star", "filter"], options,
                   {"phot_repeat_mmag": ("mmag", _magnitude_weights)}, "filter")  # fmt: skip
    out = astro.rename(columns={"n": "astro_n"}).join(
        photo.rename(columns={"n": "phot_n"}), how="outer"
    )
    out["astro_repeat_mas"] = np.hypot(out["astro_east_mas"], out["astro_north_mas"])
    few_astro = out["astro_n"].fillna(0) < options.min_stars
    out.loc[few_astro, ["astro_east_mas", "astro_north_mas", "astro_repeat_mas"]] = np.nan
    out.loc[out["phot_n"].fillna(0) < options.min_stars, "phot_repeat_mmag"] = np.nan
    out.index = out.index.set_names(["visit", "ccd"])
    return out.reindex(columns=list(REPEAT_COLUMNS))
