"""Errors about the output folder, which stop a run (unlike a bad input file, which fails only its own video), and
the one-line form every error takes for users."""

from __future__ import annotations

import errno
from pathlib import Path

__all__ = ["DamagedOutputError", "OutputError", "is_disk_full", "is_transient", "one_line"]

_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_FULL_TEXT = ("no space left on device", "disk quota exceeded")


def one_line(e: BaseException, limit: int = 300) -> str:
    """``str(e)`` on one line (whitespace collapsed), at most ``limit`` characters; the class name when empty."""
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg if len(msg) <= limit else msg[:limit - 3] + "..."


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` (or an exception it was raised from) says the file system is full or over quota: ``OSError``
    with ``ENOSPC``/``EDQUOT``, or Arrow's I/O errors, which carry the system's text but no errno."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError) and (e.errno in _FULL or any(t in str(e).lower() for t in _FULL_TEXT)):
            return True
        e, seen = (e.__cause__ or e.__context__), seen + 1
    return False


#: I/O errors that may go away when tried again (a network share or a USB disk hiccup), not a bad file.
_TRANSIENT = tuple(getattr(errno, n) for n in ("EIO", "EAGAIN", "ETIMEDOUT", "ESTALE", "ECONNRESET", "EINTR",
                                              "EBUSY", "EREMOTEIO", "ENETDOWN", "ENETUNREACH", "EHOSTUNREACH")
                   if hasattr(errno, n))


def is_transient(e: BaseException) -> bool:
    """Whether ``e`` (or an exception it was raised from) is an ``OSError`` whose errno is worth a retry (EIO,
    ETIMEDOUT, ESTALE, ...; see ``_TRANSIENT``), as opposed to a missing, unreadable or broken file."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError) and e.errno in _TRANSIENT:
            return True
        e, seen = (e.__cause__ or e.__context__), seen + 1
    return False


class OutputError(OSError):
    """The output folder cannot be written (no space left, read-only, ...): the run stops, what was committed
    before stays, nothing staged is left behind.

    Attributes:
        out_dir: the output folder.
    """

    def __init__(self, message: str, out_dir: str | Path) -> None:
        super().__init__(message)
        self.out_dir = Path(out_dir)

    def __reduce__(self):
        return type(self), (str(self), str(self.out_dir))

    @classmethod
    def disk_full(cls, out_dir: str | Path) -> OutputError:
        """The error for a full file system (or quota) under ``out_dir``."""
        return cls(f"no space left on device: {out_dir}", out_dir)

    @classmethod
    def from_os_error(cls, e: OSError, out_dir: str | Path) -> OutputError:
        """The error for ``e``, met while writing under ``out_dir``: :meth:`disk_full` when it says the file system
        is full (:func:`is_disk_full`), else "cannot write to the output folder OUT: <reason>"."""
        if is_disk_full(e):
            return cls.disk_full(out_dir)
        return cls(f"cannot write to the output folder {out_dir}: {one_line(e)}", out_dir)


class DamagedOutputError(ValueError):
    """Parquet files of the output folder cannot be read (overwritten, truncated, not Parquet).

    Attributes:
        paths: the unreadable files.
    """

    def __init__(self, paths: list[str | Path], reason: str = "") -> None:
        self.paths = [Path(p) for p in paths]
        self.reason = reason
        shown = ", ".join(map(str, self.paths[:3])) + (f" and {len(self.paths) - 3} more" if len(self.paths) > 3
                                                       else "")
        super().__init__(f"damaged output file{'s' if len(self.paths) > 1 else ''} {shown}"
                         + (f" ({reason})" if reason else "")
                         + ": re-analyse the video (`fer-pipeline analyze ... --force`) or delete the file")

    def __reduce__(self):
        return type(self), ([str(p) for p in self.paths], self.reason)
