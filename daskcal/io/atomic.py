"""Atomic file writes: a killed run never leaves a partial file under a final name.

Everything daskcal writes goes through :func:`atomic_write`: the data are written to a
hidden temporary file in the destination folder, flushed to disk, and renamed onto the
final name in one ``os.replace`` (atomic on POSIX file systems). On any error the
temporary file is removed and an existing final file is left untouched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write", "temporary_name"]


def temporary_name(path: str | os.PathLike) -> Path:
    """The hidden temporary path used while writing ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        Final destination.

    Returns
    -------
    pathlib.Path
        ``<dir>/.<name>.tmp-<pid>-<random>``, in the same folder so that the final rename
        never crosses a file system.

    Examples
    --------
    >>> temporary_name("/out/CALEXP-0001.fits").name.startswith(".CALEXP-0001.fits.tmp-")
    True
    """
    final = Path(path)
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Write ``path`` atomically through a temporary file.

    Parameters
    ----------
    path : str or os.PathLike
        Final destination; missing parent folders are created.

    Yields
    ------
    pathlib.Path
        Temporary path the caller must write completely. On normal exit it is fsynced
        and renamed onto ``path``; on an exception it is deleted and the exception
        propagates.

    Raises
    ------
    FileNotFoundError
        If the body finished without creating the temporary file.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with atomic_write(Path(d) / "sub" / "a.txt") as tmp:
    ...         _ = tmp.write_text("done")
    ...     (Path(d) / "sub" / "a.txt").read_text()
    'done'
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written for {final} (expected {tmp})")
        _fsync_file(tmp)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable; some file systems do not allow it, which is harmless."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
