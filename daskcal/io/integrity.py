"""Cheap integrity checks: does a file's length agree with the structure it declares?

A FITS file is a sequence of HDUs, each a header of 2880-byte blocks ending with an
``END`` card, then ``|BITPIX| / 8 * GCOUNT * (PCOUNT + NAXIS1 * ... * NAXISn)`` bytes of
data padded to 2880. Walking the headers (reading only them) tells whether the file ends
exactly where its last HDU does and how many HDUs it has, which catches a file truncated
anywhere: mid-header, mid-data, or at an HDU boundary when the expected HDU count is known
(daskcal writes it as ``DASKCAL_NHDU`` in the primary header of what it writes). A Parquet
file ends with its footer, its length and ``PAR1``; reading the footer (pyarrow) checks it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping

from astropy.io import fits

from .afwtable import card_key
from .fitsfile import open_regular

__all__ = [
    "NHDU_KEY",
    "count_hdus",
    "fits_problem",
    "inspect_fits",
    "parquet_problem",
    "primary_cards",
    "with_cards",
]

#: The primary-header card in which daskcal records how many HDUs it wrote.
NHDU_KEY = "DASKCAL_NHDU"
BLOCK = 2880
CARD = 80
#: Never walk more HDUs than this (a hostile file cannot make the walk unbounded).
MAX_HDUS = 10_000


def _int_value(card: bytes) -> int:
    text = card[10:].split(b"/", 1)[0].strip()
    return int(text)


def _read_header(handle, start: int, size: int) -> tuple[dict[str, int], int, bytes]:
    """(structural keywords, header length, header bytes) of the header at ``start``."""
    values: dict[str, int] = {}
    chunks = []
    offset = start
    while True:
        if offset + BLOCK > size:
            raise ValueError(f"header at byte {start} runs past the end of the file")
        handle.seek(offset)
        block = handle.read(BLOCK)
        chunks.append(block)
        offset += BLOCK
        for i in range(0, BLOCK, CARD):
            card = block[i : i + CARD]
            key = card[:8].rstrip()
            if key == b"END":
                return values, offset - start, b"".join(chunks)
            if card[8:10] == b"= " and (
                key in (b"BITPIX", b"NAXIS", b"PCOUNT", b"GCOUNT") or key.startswith(b"NAXIS")
            ):
                values[key.decode()] = _int_value(card)
        if len(chunks) > 10_000:
            raise ValueError(f"header at byte {start} has no END card")


def _data_size(values: dict[str, int]) -> int:
    naxis = values.get("NAXIS", 0)
    if naxis == 0:
        return 0
    count = 1
    for axis in range(1, naxis + 1):
        count *= values[f"NAXIS{axis}"]
    size = abs(values["BITPIX"]) // 8 * values.get("GCOUNT", 1) * (values.get("PCOUNT", 0) + count)
    return -(-size // BLOCK) * BLOCK


def fits_problem(path: str | os.PathLike, expected_hdus: int | None = None) -> str | None:
    """What is wrong with a FITS file's structure, or None when it is whole.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    expected_hdus : int, optional
        The number of HDUs it must have (e.g. its ``DASKCAL_NHDU`` card).

    Returns
    -------
    str or None
        A short reason ("truncated: ..." or "not FITS: ...") or None.
    """
    return inspect_fits(path, expected_hdus=expected_hdus)[1]


def inspect_fits(
    path: str | os.PathLike,
    keys: tuple[str, ...] = (),
    *,
    expected_hdus: int | None = None,
    count_key: str | None = None,
) -> tuple[dict[str, object], str | None]:
    """Some primary-header cards and the structure's problem, in one pass over the file.

    ``count_key`` names a primary card holding the number of HDUs the file must have (it
    is read with ``keys``); ``expected_hdus`` gives that number directly.

    Returns
    -------
    (dict, str or None)
        The values of the ``keys`` present, and :func:`fits_problem`'s answer.
    """
    cards: dict[str, object] = {}
    try:
        with open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            offset = hdus = 0
            while offset < size and hdus < MAX_HDUS:
                values, length, raw = _read_header(handle, offset, size)
                if hdus == 0 and (keys or count_key):
                    header = fits.Header.fromstring(raw)
                    wanted = (*keys, count_key) if count_key else keys
                    cards = {key: header[key] for key in wanted if key in header}
                offset += length + _data_size(values)
                hdus += 1
    except (OSError, ValueError, KeyError) as err:
        return cards, f"truncated or not FITS ({err})"
    counted = cards.get(count_key) if count_key else None
    if expected_hdus is None and isinstance(counted, int):
        expected_hdus = counted
    if offset > size:
        return cards, f"truncated: {size} bytes, its HDUs need {offset}"
    if expected_hdus is not None and hdus != expected_hdus:
        return cards, f"truncated: {hdus} HDUs, {expected_hdus} written"
    return cards, None


def count_hdus(raw: bytes) -> int:
    """The number of whole HDUs in FITS bytes (e.g. an archive about to be written)."""
    handle, offset, hdus = io.BytesIO(raw), 0, 0
    while offset < len(raw):
        values, length, _ = _read_header(handle, offset, len(raw))
        offset += length + _data_size(values)
        hdus += 1
    return hdus


def with_cards(raw: bytes, cards: Mapping[str, object]) -> bytes:
    """FITS bytes whose first header gains (or updates) some cards, all else byte for byte.

    The new cards go just before ``END``; the header is padded to whole blocks again.
    """
    _, length, header = _read_header(io.BytesIO(raw), 0, len(raw))
    images = [header[i : i + CARD] for i in range(0, len(header), CARD)]
    end = next(i for i, c in enumerate(images) if c[:8].rstrip() == b"END")
    new = {fits.Card(card_key(k), v).image.encode("ascii")[:CARD] for k, v in cards.items()}
    names = {c[:CARD].split(b"=", 1)[0].strip() for c in new}
    kept = [c for c in images[:end] if c.split(b"=", 1)[0].strip() not in names]
    body = b"".join(kept) + b"".join(sorted(new)) + images[end]
    body += b" " * (-len(body) % BLOCK)
    return body + raw[length:]


def primary_cards(path: str | os.PathLike, keys: tuple[str, ...]) -> dict[str, object]:
    """The values of some cards of a FITS file's primary header (read alone).

    Missing cards are left out; an unreadable file gives an empty dict.
    """
    try:
        with open_regular(path) as handle:
            _, _, raw = _read_header(handle, 0, os.fstat(handle.fileno()).st_size)
        header = fits.Header.fromstring(raw)
    except (OSError, ValueError):
        return {}
    return {key: header[key] for key in keys if key in header}


def parquet_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with a Parquet file's footer and row groups, or None when it is whole."""
    import pyarrow.parquet as pq

    try:
        with open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            meta = pq.read_metadata(handle)
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            for j in range(group.num_columns):
                column = group.column(j)
                start = column.dictionary_page_offset or column.data_page_offset
                if start + column.total_compressed_size > size:
                    return f"truncated: row group {i} runs past the end of the file"
    except (OSError, ValueError) as err:
        return f"truncated or not Parquet ({' '.join(str(err).split())})"
    return None
