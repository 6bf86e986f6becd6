"""The metadata of a CALEXP: the calexp's headers and archive, updated as hscPipe 8 does.

A CALEXP keeps every card and archive object of its calexp. What changes (docs/formats.md,
'What a CALEXP carries'):

- the archive gets a new constant PhotoCalib(cbar, sigma_c) and the jointcal SkyWcs, with
  new ids after the old ones (the old objects, the old PhotoCalib and SkyWcs included,
  still resolve); the primary header's ``PHOTOCALIB_ID`` / ``ARCHIVE_ID_PHOTOCALIB`` and
  ``SKYWCS_ID`` / ``ARCHIVE_ID_SKYWCS`` point at the new ones;
- the FITS-WCS cards are replaced by the TAN-SIP approximation of the new SkyWcs: in
  PARENT pixels in the primary header (afw ``calculateSipWcsHeader``), relative to xy0 in
  the image, mask and variance headers (CRPIX - xy0, as afw writes an image's WCS where
  ``LTV1/2 = -xy0``);
- provenance cards ``DASKCAL_VERSION``, ``DASKCAL_CONFIG`` (config digest) and
  ``DASKCAL_<INPUT>`` (input file names), ``DASKCAL_SIPERR`` (the TAN-SIP approximation's
  maximum error over the CCD, milliarcseconds) with a TAN-SIP, and in flag mode
  ``DASKCAL_UNCALIBRATED = T`` with ``DASKCAL_MISSING``. Every card fits in 80 characters
  (no astropy warning).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from astropy.io import fits

from .calib.photocalib import PhotoCalib
from .calib.skywcs import SkyWcs
from .config import CalibrateConfig
from .io.afwtable import card_key
from .io.archive import Archive, ArchiveWriter

__all__ = [
    "SIP_ERROR_CARD",
    "UNCALIBRATED_CARD",
    "calexp_archive",
    "calexp_headers",
    "config_digest",
    "provenance_cards",
]

UNCALIBRATED_CARD = "DASKCAL_UNCALIBRATED"
SIP_ERROR_CARD = "DASKCAL_SIPERR"
# the FITS-WCS cards of a header (not afw's "A" pixel WCS, not DATE-OBS / MJD-OBS)
_WCS_CARD = re.compile(
    r"^(WCSAXES|CTYPE\d|CRPIX\d|CRVAL\d|CUNIT\d|CD\d_\d|PC\d_\d|CDELT\d|CROTA\d|RADE(C)?SYS|"
    r"EQUINOX|LONPOLE|LATPOLE|PV\d_\d+|(A|B|AP|BP)_(ORDER|DMAX|\d+_\d+))$"
)


def config_digest(config: CalibrateConfig) -> str:
    """First 16 hex digits of the sha256 of the config as sorted JSON.

    >>> len(config_digest(CalibrateConfig()))
    16
    """
    text = json.dumps(config.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def provenance_cards(config: CalibrateConfig, files: Mapping[str, str]) -> dict[str, str]:
    """``DASKCAL_VERSION``, ``DASKCAL_CONFIG`` and ``DASKCAL_<NAME>`` = base name of each file.

    >>> cards = provenance_cards(CalibrateConfig(), {"CALEXP": "/r/CORR-0001228-050.fits"})
    >>> cards["DASKCAL_CALEXP"]
    'CORR-0001228-050.fits'
    """
    try:
        version = metadata.version("daskcal")
    except metadata.PackageNotFoundError:  # pragma: no cover - source tree
        version = "unknown"
    cards = {"DASKCAL_VERSION": version, "DASKCAL_CONFIG": config_digest(config)}
    cards.update({f"DASKCAL_{k}": os.path.basename(v) for k, v in files.items() if v})
    return cards


def _card(key: str, value: Any, comment: str = "") -> fits.Card:
    """A card that fits in 80 characters: the comment is cut, a long text value shortened."""
    key = card_key(key)
    if isinstance(value, str) and len(value) > 40:
        value = "..." + value[-37:]
    room = 80 - len(fits.Card(key, value).image.rstrip()) - 3
    return fits.Card(key, value, comment[: max(room, 0)])


def _put(header: fits.Header, key: str, value: Any, comment: str = "") -> None:
    """Set a card in place (or append it), HIERARCH when needed, without a warning."""
    card = _card(key, value, comment)
    header[card_key(key)] = (card.value, card.comment)


def _with_wcs(header: fits.Header, sip: fits.Header, xy0: tuple[int, int]) -> fits.Header:
    """``header`` without its FITS-WCS cards, then the TAN-SIP cards relative to ``xy0``."""
    out = fits.Header([c for c in header.cards if not _WCS_CARD.match(c.keyword)])
    shifted = sip.copy()
    shifted["CRPIX1"] = sip["CRPIX1"] - xy0[0]
    shifted["CRPIX2"] = sip["CRPIX2"] - xy0[1]
    out.extend(shifted.cards)
    return out


def calexp_headers(
    primary: fits.Header,
    planes: Mapping[str, fits.Header],
    *,
    ids: Mapping[str, int],
    sip_header: str,
    provenance: Mapping[str, Any],
    xy0: tuple[int, int],
    uncalibrated: str = "",
    sip_max_error_mas: float | None = None,
) -> tuple[fits.Header, dict[str, fits.Header]]:
    """The CALEXP primary and plane headers (copies; see the module docstring).

    Parameters
    ----------
    primary, planes : astropy.io.fits.Header
        The calexp's primary header and its headers by plane name.
    ids : mapping of str to int
        New archive id by component (``PHOTOCALIB``, ``SKYWCS``).
    sip_header : str
        TAN-SIP cards in PARENT pixels, newline-separated (the calibration table's
        ``sip_header``); "" leaves the WCS cards alone.
    provenance : mapping
        ``DASKCAL_*`` cards (:func:`provenance_cards`).
    xy0 : (int, int)
        PARENT position of pixel (0, 0).
    uncalibrated : str
        Flag mode: what was missing ("" when calibrated).
    sip_max_error_mas : float, optional
        The TAN-SIP approximation's maximum error (milliarcseconds), recorded in the primary
        header as ``DASKCAL_SIPERR`` along with the ``sip_header`` cards.
    """
    primary = primary.copy()
    planes = {name: header.copy() for name, header in planes.items()}
    for component, obj_id in ids.items():
        comment = f"archive ID for generic component '{component}'"
        _put(primary, f"{component}_ID", obj_id, comment)
        _put(primary, f"ARCHIVE_ID_{component}", obj_id, comment)
    if sip_header:
        sip = fits.Header.fromstring(sip_header, sep="\n")
        primary = _with_wcs(primary, sip, (0, 0))
        planes = {name: _with_wcs(header, sip, xy0) for name, header in planes.items()}
    for key, value in provenance.items():
        _put(primary, key, value)
    if sip_header and sip_max_error_mas is not None:
        comment = "[mas] max TAN-SIP error over the CCD"
        _put(primary, SIP_ERROR_CARD, float(sip_max_error_mas), comment)
    if uncalibrated:
        _put(primary, UNCALIBRATED_CARD, True, "calibration missing: calexp planes as read")
        _put(primary, "DASKCAL_MISSING", uncalibrated)
    return primary, planes


def calexp_archive(
    archive: Archive | None, photocalib: PhotoCalib | None, skywcs: SkyWcs | None
) -> tuple[list, dict[str, int]]:
    """The CALEXP archive: the calexp's objects unchanged, then the new PhotoCalib/SkyWcs.

    Returns the archive HDUs (empty without an archive and new objects) and the new ids by
    component (``PHOTOCALIB``, ``SKYWCS``). ``archive``'s file must stay open until the
    HDUs are written.
    """
    writer = ArchiveWriter(base=archive)
    ids: dict[str, int] = {}
    if photocalib is not None:
        ids["PHOTOCALIB"] = photocalib.add_to_archive(writer)
    if skywcs is not None:
        ids["SKYWCS"] = skywcs.add_to_archive(writer)
    return (writer.hdus() if archive is not None or ids else []), ids
