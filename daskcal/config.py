"""The calibrate configuration: hscPipe 8 fields and defaults, parsed safely.

``--config k=v`` and ``--configfile FILE`` (pex_config-style ``config.k = v`` lines) are
parsed as Python *literals* only: a config file is never executed.

>>> cfg = parse_overrides(["externalPhotoCalibName=jointcal", "doApplySkyCorr=False"])
>>> cfg.externalPhotoCalibName, cfg.doApplySkyCorr
('jointcal', False)
"""

from __future__ import annotations

import ast
import dataclasses
import os
import stat
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["CalibrateConfig", "ConfigError", "parse_overrides", "read_config_file"]

PHOTOCALIB_NAMES = ("jointcal", "fgcm", "fgcm_tract")
ERROR_RULES = ("hscpipe8", "afw29")
ON_MISSING = ("fail", "flag")


class ConfigError(ValueError):
    """A bad configuration: unknown key, bad value or malformed config-file line."""


@dataclass(frozen=True)
class CalibrateConfig:
    """Configuration of calibrateExposure / calibrateCatalog (hscPipe 8 defaults).

    Attributes
    ----------
    doApplyExternalPhotoCalib : bool
        Apply the external photometric calibration.
    doApplyExternalSkyWcs : bool
        Attach (exposures) or apply (catalogs) the jointcal WCS.
    doApplySkyCorr : bool
        Subtract the skyCorr background (exposures only).
    includePhotoCalibVar : bool
        Add the calibration's own variance to the image variance.
    externalPhotoCalibName : str
        ``jointcal``, ``fgcm`` or ``fgcm_tract``: reads ``<name>_photoCalib``.
    externalSkyWcsName : str
        Reads ``<name>_wcs``; only ``jointcal`` exists.
    sipOrder : int
        Order of the TAN-SIP approximation written into the CALEXP header.
    sipSpacing : int
        Grid spacing in pixels of the TAN-SIP fit.
    sipMaxError : float
        daskcal: the largest error (milliarcseconds) the TAN-SIP approximation may reach
        over the CCD, measured between the fit's grid points too; a CCD whose fit is worse
        fails. An int is taken as a float.
    fluxErrorRule : str
        daskcal: ``hscpipe8`` adds sigma_c/c in quadrature to flux and magnitude errors
        (afw <= 28); ``afw29`` drops it, as afw 29+ does.
    fixZeroPixelVariance : bool
        daskcal: hscPipe 8 produces NaN variance where a pixel is exactly 0; True fixes it.
    onMissingCalibration : str
        daskcal: ``fail`` (default) fails a CCD whose calibration is missing; ``flag``
        writes it uncalibrated with a ``daskcal_uncalibrated`` flag. A calibration that is
        present but unreadable or invalid fails the CCD either way.
    """

    doApplyExternalPhotoCalib: bool = True
    doApplyExternalSkyWcs: bool = True
    doApplySkyCorr: bool = True
    includePhotoCalibVar: bool = False
    externalPhotoCalibName: str = "fgcm_tract"
    externalSkyWcsName: str = "jointcal"
    sipOrder: int = 9
    sipSpacing: int = 20
    sipMaxError: float = 0.1
    fluxErrorRule: str = "hscpipe8"
    fixZeroPixelVariance: bool = False
    onMissingCalibration: str = "fail"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            expected = {"bool": bool, "int": int, "float": float}.get(f.type, str)
            if expected is float and type(value) is int:
                value = float(value)
                object.__setattr__(self, f.name, value)  # frozen: set once, here
            if type(value) is not expected:
                raise ConfigError(f"config {f.name}={value!r}: expected {expected.__name__}")
        _choice("externalPhotoCalibName", self.externalPhotoCalibName, PHOTOCALIB_NAMES)
        _choice("externalSkyWcsName", self.externalSkyWcsName, ("jointcal",))
        _choice("fluxErrorRule", self.fluxErrorRule, ERROR_RULES)
        _choice("onMissingCalibration", self.onMissingCalibration, ON_MISSING)
        if not 1 <= self.sipOrder <= 12:
            raise ConfigError(f"config sipOrder={self.sipOrder}: must be 1..12")
        if self.sipSpacing < 1:
            raise ConfigError(f"config sipSpacing={self.sipSpacing}: must be >= 1")
        if not self.sipMaxError > 0:
            raise ConfigError(f"config sipMaxError={self.sipMaxError}: must be > 0 (mas)")

    def replace(self, **changes: Any) -> CalibrateConfig:
        """A copy with some fields changed (validated)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(_unknown_message(sorted(unknown)[0]))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields."""
        return dataclasses.asdict(self)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"config {name}={value!r}: must be one of {', '.join(allowed)}")


def _unknown_message(key: str) -> str:
    known = ", ".join(f.name for f in fields(CalibrateConfig))
    return f"unknown config key {key!r} (known: {known})"


def _literal(key: str, text: str) -> Any:
    text = text.strip()
    if text in ("True", "False"):
        return text == "True"
    if len(text) > 1000:
        raise ConfigError(f"config {key}: value of {len(text)} characters is too long")
    try:
        return ast.literal_eval(text)
    except (MemoryError, RecursionError):
        raise ConfigError(f"config {key}: value nested too deeply to parse") from None
    except (ValueError, SyntaxError):
        if text.replace("_", "").replace("-", "").isalnum():
            return text  # bare word, as pex_config's command line accepts
        raise ConfigError(f"config {key}: cannot parse value {text!r} as a literal") from None


def parse_overrides(items: list[str], base: CalibrateConfig | None = None) -> CalibrateConfig:
    """Apply ``key=value`` overrides (the ``--config`` arguments) to ``base``."""
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().removeprefix("config.")
        if not sep or not key:
            raise ConfigError(f"--config {item!r}: expected key=value")
        changes[key] = _literal(key, value)
    return (base or CalibrateConfig()).replace(**changes)


#: Largest config file read (bytes); hscPipe's are a few KiB.
CONFIG_FILE_MAX = 2**20


def _config_text(path: Path) -> str:
    """The UTF-8 text of a regular file of at most CONFIG_FILE_MAX bytes, or ConfigError.

    Opened without blocking (a FIFO or a device is refused, not waited on) and read at
    most one byte past the limit, whatever the file claims to hold.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "not a regular file"
    elif info.st_size > CONFIG_FILE_MAX:
        problem = f"{info.st_size} bytes, more than the limit of {CONFIG_FILE_MAX}"
    if problem is not None:
        os.close(fd)
        raise ConfigError(f"config file {path}: {problem}")
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(CONFIG_FILE_MAX + 1)
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    if len(data) > CONFIG_FILE_MAX:
        raise ConfigError(f"config file {path}: more than the limit of {CONFIG_FILE_MAX} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not UTF-8 text (at byte {exc.start})") from None


def read_config_file(path: str | Path, base: CalibrateConfig | None = None) -> CalibrateConfig:
    """Apply a pex_config-style file (``config.key = value`` lines, ``#`` comments).

    Parameters
    ----------
    path : str or Path
        A regular UTF-8 text file of at most :data:`CONFIG_FILE_MAX` bytes.
    base : CalibrateConfig, optional
        The configuration the file's values override (default: hscPipe 8's).

    Returns
    -------
    CalibrateConfig
        ``base`` with the file's values.

    Raises
    ------
    ConfigError
        One line naming the file: missing or unreadable, not a regular file (a FIFO,
        a device such as ``/dev/urandom``), too large, not UTF-8, a malformed line or value.
    """
    path = Path(path)
    lines = _config_text(path).splitlines()
    items = []
    for n, line in enumerate(lines, start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().startswith("config."):
            raise ConfigError(f"{path}:{n}: expected 'config.<key> = <value>', got {line!r}")
        items.append(f"{key.strip()}={value.strip()}")
    try:
        return parse_overrides(items, base)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except (MemoryError, RecursionError):  # the parser's stack, on e.g. '------...1'
        raise ConfigError(f"{path}: a value is nested too deeply to parse") from None
