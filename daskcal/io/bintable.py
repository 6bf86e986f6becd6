"""FITS binary-table rows moved with one numpy dtype: astropy handles the headers.

astropy's ``FITS_rec`` builds ``Column`` objects whose every attribute goes through
astropy's configuration system (about 1 ms per column): reading or writing a 250-column
afw table costs 0.2-0.4 s that way, and a calibration row reads a dozen small archive
tables. The binary-table layout is fixed by the FITS standard (big-endian fields in
TFORM order, a heap for variable-length arrays), so the rows are read and written here as
one structured numpy array. What this does not cover (scaled columns other than the
unsigned-integer convention, multi-dimensional cells, compressed files, HDUs not backed
by a file) makes :func:`read_columns` return None, and callers use astropy.
"""

from __future__ import annotations

import re
from collections.abc import Collection

import numpy as np
from astropy.io import fits

from .fitsfile import read_span

__all__ = ["BLOCK", "encode_rows", "padded", "read_columns", "row_dtype"]

BLOCK = 2880
_FIXED = re.compile(r"^(\d*)([LXBIJKAEDCM])$")
_VARIABLE = re.compile(r"^(\d*)([PQ])([LBIJKAEDCM])(\(\d+\))?$")
_TYPES = {
    "L": "i1",
    "B": "u1",
    "I": ">i2",
    "J": ">i4",
    "K": ">i8",
    "E": ">f4",
    "D": ">f8",
    "C": ">c8",
    "M": ">c16",
}
# the FITS convention for unsigned integers (and signed bytes): TZERO flips the sign bit
_OFFSETS = {("I", 32768): "u2", ("J", 2**31): "u4", ("K", 2**63): "u8", ("B", -128): "i1"}


def _field(header: fits.Header, i: int) -> tuple[np.dtype, tuple] | None:
    """numpy field dtype and how to decode column ``i`` (1-based), or None if unsupported."""
    form = str(header.get(f"TFORM{i}", "")).strip()
    if header.get(f"TSCAL{i}", 1) != 1 or f"TDIM{i}" in header:
        return None
    zero = header.get(f"TZERO{i}", 0)
    if m := _FIXED.match(form):
        repeat, code = int(m.group(1) or 1), m.group(2)
        if zero and (code, zero) not in _OFFSETS:
            return None
        if code == "A":
            return np.dtype(f"S{repeat}"), ("A",)
        if code == "X":
            return np.dtype(("u1", ((repeat + 7) // 8,))), ("X", repeat)
        base = np.dtype(_TYPES[code])
        decode = ("O", _OFFSETS[(code, zero)]) if zero else (code,)
        return (base if repeat == 1 else np.dtype((base, (repeat,)))), decode
    if (m := _VARIABLE.match(form)) and not zero and int(m.group(1) or 1) == 1:
        desc = np.dtype((">i4" if m.group(2) == "P" else ">i8", (2,)))
        return desc, ("V", m.group(3))
    return None


def row_dtype(
    header: fits.Header, check_width: bool = True
) -> tuple[np.dtype, list[tuple]] | None:
    """The row dtype of a binary-table header and each column's decoding, or None.

    With ``check_width``, a dtype whose size differs from ``NAXIS1`` gives None.
    """
    names, formats, decodes = [], [], []
    for i in range(1, int(header.get("TFIELDS", 0)) + 1):
        field = _field(header, i)
        if field is None:
            return None
        names.append(str(header[f"TTYPE{i}"]))
        formats.append(field[0])
        decodes.append(field[1])
    dtype = np.dtype({"names": names, "formats": formats})
    if check_width and dtype.itemsize != int(header.get("NAXIS1", -1)):
        return None
    return dtype, decodes


def _decode(values: np.ndarray, decode: tuple, heap: np.ndarray | None) -> np.ndarray:
    kind = decode[0]
    if kind == "A":
        return np.char.rstrip(values.astype(f"U{max(values.dtype.itemsize, 1)}"))
    if kind == "X":
        return np.unpackbits(values, axis=-1)[..., : decode[1]].astype(bool)
    if kind == "L":
        return values == ord("T")
    if kind == "O":  # the offset convention: flip the sign bit
        target = np.dtype(decode[1])
        if target.kind == "u":
            raw = values.view(values.dtype.str.replace("i", "u"))
            return (raw ^ raw.dtype.type(1 << (8 * raw.itemsize - 1))).astype(target)
        return (values ^ np.uint8(0x80)).view(np.int8)
    if kind == "V":
        out = np.empty(len(values), dtype=object)
        if decode[1] == "A":  # variable-length strings: one bytes object per row
            for k, (count, offset) in enumerate(values.tolist()):
                out[k] = heap[offset : offset + count].tobytes().split(b"\0", 1)[0]
            return out
        item = np.dtype(_TYPES[decode[1]])
        for k, (count, offset) in enumerate(values.tolist()):  # one small array per row
            cell = heap[offset : offset + count * item.itemsize].view(item)
            out[k] = cell == ord("T") if decode[1] == "L" else cell.astype(item.newbyteorder("="))
        return out
    return values.astype(values.dtype.newbyteorder("="))


def read_columns(
    hdu: fits.BinTableHDU, names: Collection[str] | None = None
) -> dict[str, np.ndarray] | None:
    """The columns of a file-backed binary-table HDU, decoded, without ``hdu.data``.

    Parameters
    ----------
    hdu : astropy.io.fits.BinTableHDU
        The table HDU (its header and file; astropy's ``Column`` objects are not built).
    names : collection of str, optional
        Only these columns (names not in the table are ignored); every column when None.
        The rows are read whole (fields are interleaved in them), but only these columns
        are decoded, and the heap is read only when one of them is variable-length.

    Returns
    -------
    dict of str to numpy.ndarray, or None
        Native-endian arrays in table order (``X`` columns as bool arrays of shape
        ``(rows, n)``, ``L`` as bool, strings stripped, variable-length cells as an object
        array of arrays); None when the HDU needs astropy (see the module docstring).
    """
    info = hdu.fileinfo()
    source = info.get("file") if info else None
    if source is None or getattr(source, "compression", None):
        return None
    header = hdu.header
    layout = row_dtype(header)
    if layout is None:
        return None
    dtype, decodes = layout
    chosen = [
        (name, decode)
        for name, decode in zip(dtype.names, decodes, strict=True)
        if names is None or name in names
    ]
    nrows = int(header["NAXIS2"])
    heap_size = int(header.get("PCOUNT", 0)) if any(d[0] == "V" for _, d in chosen) else 0
    heap_start = int(header.get("THEAP", dtype.itemsize * nrows))
    size = heap_start + heap_size if heap_size else dtype.itemsize * nrows
    data = read_span(source, info["datLoc"], size)
    rows = np.frombuffer(data, dtype=dtype, count=nrows)
    heap = np.frombuffer(data, dtype="u1", offset=heap_start) if heap_size else None
    return {name: _decode(rows[name], decode, heap) for name, decode in chosen}


def encode_rows(dtype: np.dtype, columns: dict[str, np.ndarray], nrows: int) -> bytes:
    """The data unit of a binary table without a heap: rows in ``dtype`` (big-endian).

    ``columns`` holds, per field of ``dtype``, values that numpy casts to the field's
    type (bit fields as packed ``uint8`` bytes, strings as bytes or str).
    """
    rows = np.zeros(nrows, dtype=dtype)
    for name in dtype.names:
        rows[name] = columns[name]
    return padded(rows.tobytes())


def padded(data: bytes, fill: bytes = b"\0") -> bytes:
    """``data`` padded to a whole number of FITS blocks."""
    return data + fill * (-len(data) % BLOCK)
