"""Third-party decoder chatter kept off the user's terminal and the service log.

Two kinds: Python warnings and log records from Pillow and pillow-heif ("Corrupt EXIF data", "More samples
per pixel than can be decoded"...), and lines that C libraries (libtiff above all) write straight to file
descriptor 2. A warning or record raised while an image decodes (``collecting``) goes to that image: into its
failure reason when it fails, into a count when it decodes. C lines cannot be told apart by thread, so ``c_messages_captured`` points fd 2 at a pipe for a
command's run and counts them, while Python's own stderr (progress bar, messages) goes to the real one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

_local = threading.local()
_lock = threading.Lock()
_counts = {"warnings": 0}
MAX_EXAMPLES = 3


def _show(message, category, filename, lineno, file=None, line=None) -> None:
    sink = getattr(_local, "sink", None)
    if sink is None:
        return _previous(message, category, filename, lineno, file, line)
    sink.append(f"{category.__name__}: {message}")


class _LogToSink(logging.Handler):
    """Pillow also logs what it refuses (``logger.error`` in its TIFF plugin): kept like a warning."""

    def emit(self, record: logging.LogRecord) -> None:
        sink = getattr(_local, "sink", None)
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if sink is not None:
            sink.append(text)
        else:
            with _lock:
                _counts["warnings"] += 1


_previous = warnings.showwarning
warnings.showwarning = _show
# Every occurrence, not once per code location: each belongs to its own image.
warnings.filterwarnings("always", module=r"(PIL|pillow_heif)(\.|$)")
for _name in ("PIL", "pillow_heif"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(h, _LogToSink) for h in _logger.handlers):
        _logger.addHandler(_LogToSink(logging.WARNING))
    _logger.propagate = False  # not into the application's own log (the service's)


@contextlib.contextmanager
def collecting() -> Iterator[list[str]]:
    """Warnings raised in this thread inside the block land in the yielded list, not on stderr; those left
    in it at the end are counted (a caller that puts them into a failure reason clears the list)."""
    outer = getattr(_local, "sink", None)
    sink: list[str] = []
    _local.sink = sink
    try:
        yield sink
    finally:
        _local.sink = outer
        if outer is not None:
            outer.extend(sink)
        elif sink:
            with _lock:
                _counts["warnings"] += len(sink)


def warnings_count() -> int:
    """How many decoder warnings were collected and counted in this process so far."""
    return _counts["warnings"]


@dataclass
class CMessages:
    """Lines C libraries wrote to fd 2 during ``c_messages_captured``: how many, and the first few."""

    lines: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                self.lines += 1
                if len(self.examples) < MAX_EXAMPLES:
                    self.examples.append(line.strip()[:200])


@contextlib.contextmanager
def c_messages_captured() -> Iterator[CMessages]:
    """fd 2 goes to a pipe (counted in the yielded CMessages) and ``sys.stderr`` to the real stderr, for the
    block. Where fd 2 cannot be redirected (no such descriptor), the block runs as it is."""
    messages = CMessages()
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield messages
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    reader = threading.Thread(target=_drain, args=(read_end, messages), daemon=True, name="stderr-drain")
    reader.start()
    saved = sys.stderr
    if _fileno(saved) == 2:  # Python's own stderr goes on to the real one (a replaced sys.stderr is left be)
        sys.stderr = io.TextIOWrapper(os.fdopen(real, "wb", buffering=0, closefd=False), errors="backslashreplace",
                                      encoding=getattr(saved, "encoding", None) or "utf-8", line_buffering=True)
    try:
        yield messages
    finally:
        sys.stderr.flush()
        sys.stderr = saved
        os.dup2(real, 2)  # closes the pipe's last write end: the reader sees its end
        os.close(real)
        reader.join(timeout=5)


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _drain(fd: int, messages: CMessages) -> None:
    with os.fdopen(fd, "rb") as pipe:
        for raw in pipe:
            messages.add(raw.decode("utf-8", "replace"))
