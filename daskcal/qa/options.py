"""What a QA report measures and what it flags: :class:`QAOptions`."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["QAOptions"]


@dataclass(frozen=True)
class QAOptions:
    """Settings of a QA report (``daskcal qa``).

    Attributes
    ----------
    n_mad : float
        A value is an outlier when its distance from the tract median exceeds ``n_mad``
        times the median absolute deviation (MAD) of its metric (5 MAD is 3.4 sigma for
        Gaussian scatter).
    min_count : int
        Fewest values (CCDs, or visits for the visit trends) a median and MAD are taken
        from; with fewer nothing is flagged.
    mad_floor_mmag, mad_floor_mas : float
        Smallest MAD used for photometric (mmag) and astrometric (mas) metrics, so that a
        near-perfect tract does not flag differences that do not matter.
    grid_cells : int
        Cells along a CCD's long side on which the maps are evaluated (the short side in
        proportion).
    bright_snr : float
        PSF signal-to-noise of the stars whose median PSF - aperture magnitude is shown.
    match_snr : float
        PSF signal-to-noise of the stars matched between visits (repeatability).
    match_radius_arcsec : float
        Detections of different visits closer than this are the same star.
    min_visits : int
        A star enters the repeatability when detected in this many visits (of one filter,
        for magnitudes). With 2, CCDs that share few stars with the rest of the tract hang
        on those few and their offsets scatter; 3 ties each star to the others better.
    min_stars : int
        Fewest matched stars of a CCD for its repeatability offsets.
    max_stars : int
        Brightest stars kept per CCD for the repeatability (bounds memory).
    """

    n_mad: float = 5.0
    min_count: int = 5
    mad_floor_mmag: float = 5.0
    mad_floor_mas: float = 10.0
    grid_cells: int = 16
    bright_snr: float = 50.0
    match_snr: float = 20.0
    match_radius_arcsec: float = 2.0
    min_visits: int = 3
    min_stars: int = 3
    max_stars: int = 1000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not value > 0:  # also refuses NaN
                raise ValueError(f"QA option {f.name} must be > 0, not {value!r}")
        if self.min_visits < 2 or self.grid_cells < 2:
            raise ValueError("QA options min_visits and grid_cells must be >= 2")
