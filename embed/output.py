"""Check where a command will write before it does any long work, and say plainly when it cannot.

Every check raises OutputError (a ValueError: the command line prints it as one line and exits 2) naming the
path and the reason: it is a file where a folder is needed (or the reverse), its parent is missing, or it is
not writable (read-only folder or file system, full disk). Writability is tested by writing, because
permission bits say nothing for root or on a read-only mount.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

DISK_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied"}


class OutputError(ValueError):
    """An output location that cannot be written."""


def os_reason(error: OSError) -> str:
    """An OSError as a short reason ("the disk is full"), for one-line messages."""
    return DISK_ERRNOS.get(error.errno, error.strerror or str(error))


def check_folder(path: str | Path, what: str) -> Path:
    """``path`` is (or can be created as) a writable folder; creates it."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create {what} {folder}: {os_reason(error)}") from None
    probe_writable(folder, what)
    return folder


def check_file(path: str | Path, what: str) -> Path:
    """``path`` can be written as a file: not a folder, in a writable folder (created if missing)."""
    file = Path(path)
    if file.is_dir():
        raise OutputError(f"{what} {file} is a folder, not a file")
    if file.name in ("", ".", ".."):
        raise OutputError(f"{what} {path!s} names no file")
    check_folder(file.parent if str(file.parent) else Path("."), f"the folder of {what}")
    return file


def probe_writable(folder: Path, what: str) -> None:
    probe = folder / f".write-probe.{os.getpid()}.tmp"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * 4096)  # a whole block: a full disk fails here, not only later
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise OutputError(f"cannot write to {what} {folder}: {os_reason(error)}") from None
    finally:
        probe.unlink(missing_ok=True)
