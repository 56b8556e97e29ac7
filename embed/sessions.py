"""A pool of encoder sessions of one variant, each lent to one caller at a time.

Concurrent calls on one session share its intra-op thread pool and slow each other down, while separate
sessions run side by side: a caller borrows a session of its own and waits only when there are more callers
than sessions. The first session chooses the variant (``auto``: the fastest interchangeable one here); the
others load exactly that variant, so a fallback is said once.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Iterator

from embed.encoders import check_same_encoder
from embed.runtime import Encoder

log = logging.getLogger("embed.sessions")


class EncoderPool:
    """``sessions`` sessions of the encoder whose recorded spec is ``spec``, loaded once by ``load`` (never
    exported here: no torch import) and lent by ``borrow``."""

    def __init__(self) -> None:
        self.sessions = 0  # sessions loaded
        self._encoders: list[Encoder] = []
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()

    @property
    def first(self) -> Encoder | None:
        return self._encoders[0] if self._encoders else None

    def load(self, spec: dict, runtime: str = "auto", precision: str = "auto", sessions: int = 1,
             threads: int | None = None, batches: tuple[int, ...] = (1, 16), agree_with: dict | None = None) -> Encoder:
        """The first session, loading them all on the first call; later calls return it whatever their options.
        Raises EncoderMismatch when the exported file is of another encoder than ``spec``."""
        with self._lock:
            if not self._encoders:
                options = {"batches": batches, "agree_with": agree_with, "export": False}
                first = Encoder.load(spec, threads, runtime=runtime, precision=precision, **options)
                check_same_encoder(spec, first.spec.to_dict(), "the image encoder")
                chosen = first.variant
                self._encoders = [first] + [  # exactly what the first one chose (no second fallback message)
                    Encoder.load(spec, threads, runtime=chosen.runtime, precision=chosen.precision, **options)
                    for _ in range(sessions - 1)]
                for encoder in self._encoders:
                    self._free.put(encoder)
                self.sessions = len(self._encoders)
                log.info("encoder %s: %d session(s) of %s (computing in %s)", first.spec.name, self.sessions,
                         chosen.name, first.record["ran_precision"])
        return self._encoders[0]

    @contextlib.contextmanager
    def borrow(self) -> Iterator[Encoder]:
        """A session to use alone (``load`` must have run)."""
        encoder = self._free.get()
        try:
            yield encoder
        finally:
            self._free.put(encoder)

    @contextlib.contextmanager
    def borrow_all(self) -> Iterator[list[Encoder]]:
        """Every session at once (waits until each is free): for warming them all up."""
        borrowed = [self._free.get() for _ in range(self.sessions)]
        try:
            yield borrowed
        finally:
            for encoder in borrowed:
                self._free.put(encoder)
