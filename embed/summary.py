"""What an embedding run did: counts, failures, and the failures list written next to the cache.

Both engines report into one ``EmbedSummary`` through ``record_failure`` and ``record_encoded``; the driver
writes the run's failures (``_failures.csv``) into the cache folder once the run ends.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embed.output import OutputError, describe
from vinted_tagger.files import atomic_path

if TYPE_CHECKING:
    from embed.cache import CacheWriter

FAILURES = "_failures.csv"
MISSING_REASON = "no image with this uuid in the sources"


@dataclass
class EmbedSummary:
    encoded: int = 0
    skipped: int = 0
    failed: int = 0
    ignored: int = 0  # files that are not images, duplicate uuids, unreadable folders: listed in the failures
    seconds: float = 0.0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (uuid, origin, reason)
    missing: list[str] = field(default_factory=list)  # uuids asked for with --ids that have no image
    cache: str = ""

    @property
    def images_per_s(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"embed: {self.encoded} encoded, {self.skipped} skipped (already cached), {self.failed} failed, "
            f"{len(self.missing)} missing, {self.ignored} ignored (not images, duplicate uuids), "
            f"{self.seconds:.1f} s, {self.images_per_s:.1f} img/s -> {self.cache}"
        )


def record_failure(summary: EmbedSummary, bar, uuid: str, origin: str, reason: str) -> None:
    summary.failed += 1
    summary.failures.append((uuid, origin, reason))
    bar.update(1)


def record_encoded(writer: CacheWriter, summary: EmbedSummary, bar, uuids: list[str], vectors: np.ndarray,
                   made_by: str | None = None) -> None:
    writer.add(uuids, vectors, made_by)
    summary.encoded += len(uuids)
    bar.update(len(uuids))


def write_failures(folder: Path, failures: list[tuple[str, str, str]]) -> Path:
    """The failures of the latest run: uuid, where the image came from, and why it failed."""
    path = Path(folder) / FAILURES
    with atomic_path(path) as temp, open(temp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uuid", "origin", "reason"])
        writer.writerows(failures)
    return path


def save_failures(out, summary: EmbedSummary) -> None:
    """Write the run's failures list into the cache folder ``out``; a write error is the user's one line."""
    try:
        write_failures(Path(out), summary.failures)
    except OSError as error:
        raise OutputError(f"cannot write the failures list in {out}: {describe(error)}") from None
