"""What an embedding run did: counts, and what was not embedded, in three kinds kept apart everywhere.

*failed*: a photo that could not be read or decoded, named with its reason (and *missing*: an id asked for
with --ids that no source holds); *ignored*: a file that is not a photo, counted per kind; *duplicate*: a key
two files share (both named; ``--key path`` keys by relative path). Both engines report into one
``EmbedSummary`` through ``record_failure`` and ``record_encoded``; the driver writes the lists next to the
cache once the run ends: ``_failures.csv`` (failed, then missing), ``_ignored.csv`` and ``_duplicates.csv``.
"""

from __future__ import annotations

import contextlib
import csv
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embed.chatter import c_messages_captured, warnings_count
from embed.images import IGNORED_REASONS
from embed.output import OutputError, os_reason
from vinted_tagger.files import atomic_path

if TYPE_CHECKING:
    from embed.cache import CacheWriter
    from embed.sources import Skipped

FAILURES = "_failures.csv"
IGNORED = "_ignored.csv"
DUPLICATES = "_duplicates.csv"
MISSING_REASON = "no image with this uuid in the sources"
SAID = "; decoder said: "  # what embed.images appends to a reason: not part of its kind
LISTS = (("failed and missing", FAILURES), ("duplicates", DUPLICATES), ("ignored", IGNORED))
SHOWN_FAILED = 100  # failed photos named on the terminal (all of them are in _failures.csv)
SHOWN_OTHERS = 5


@dataclass
class EmbedSummary:
    encoded: int = 0
    skipped: int = 0
    failed: int = 0
    ignored: int = 0  # files that are not photos (listed in ignored_files)
    seconds: float = 0.0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (uuid, origin, reason): failed, missing
    missing: list[str] = field(default_factory=list)  # uuids asked for with --ids that have no image
    ignored_files: list[tuple[str, str, str]] = field(default_factory=list)  # (uuid, origin, reason)
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)  # (key, origin left out, reason)
    cache: str = ""
    decoder_messages: int = 0  # third-party warnings and C lines captured (never printed raw)

    @property
    def images_per_s(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        said = f", {self.decoder_messages} decoder messages captured" if self.decoder_messages else ""
        return (
            f"embed: {self.encoded} encoded, {self.skipped} skipped (already cached), {self.failed} failed, "
            f"{len(self.missing)} missing, {self.ignored} ignored (not photos), "
            f"{len(self.duplicates)} duplicates{said}, {self.seconds:.1f} s, {self.images_per_s:.1f} img/s "
            f"-> {self.cache}"
        )

    def report(self, prog: str = "embed", lists: dict[str, object] | None = None) -> None:
        """On stderr, apart: the failed photos (each named with its reason, first), the missing ids, the
        duplicates (both files), the ignored files per kind (count, examples), where the lists are; then the
        summary line on stdout. ``lists``: where each list is, when not in the cache folder."""
        say = _stderr_line
        failed = self.failures[: self.failed]
        for uuid, origin, reason in failed[:SHOWN_FAILED]:
            say(f"{prog}: failed: {origin or uuid}: {reason}")
        if len(failed) > SHOWN_FAILED:
            say(f"{prog}: ... {len(failed) - SHOWN_FAILED} more failed")
        if self.missing:
            more = ", ..." if len(self.missing) > SHOWN_FAILED else ""
            say(f"{prog}: missing: {len(self.missing)} id(s) have no image: {', '.join(self.missing[:SHOWN_FAILED])}{more}")
        for _, origin, reason in self.duplicates[:SHOWN_OTHERS]:
            say(f"{prog}: duplicate: {origin} left out: {reason}")
        if len(self.duplicates) > SHOWN_OTHERS:
            say(f"{prog}: ... {len(self.duplicates) - SHOWN_OTHERS} more duplicates")
        for kind, count, examples in self.ignored_kinds():
            say(f"{prog}: ignored {count}: {kind}, e.g. {', '.join(examples)}")
        rows = {FAILURES: self.failures, DUPLICATES: self.duplicates, IGNORED: self.ignored_files}
        for _, name in LISTS:
            if rows[name]:
                say(f"{prog}: all {len(rows[name])} listed in {(lists or {}).get(name) or Path(self.cache) / name}")
        print(self.line())

    def ignored_kinds(self) -> list[tuple[str, int, list[str]]]:
        """(kind, count, first few origins) of the ignored files, most frequent kind first; the formats
        that are not photos make one kind, with a count per format."""
        kinds = Counter(kind_of(reason) for _, _, reason in self.ignored_files)
        examples: dict[str, list[str]] = {}
        for _, origin, reason in self.ignored_files:
            shown = examples.setdefault(_group(kind_of(reason)), [])
            if len(shown) < 3:
                shown.append(origin)
        groups = Counter()
        for kind, count in kinds.items():
            groups[_group(kind)] += count
        formats = ", ".join(f"{kind[len(NOT_A_PHOTO):-1]} {count}" for kind, count in kinds.most_common()
                            if _group(kind) == NOT_A_PHOTO)
        return [(f"{NOT_A_PHOTO}{formats})" if kind == NOT_A_PHOTO else kind, count, examples[kind])
                for kind, count in groups.most_common()]

    def add_listing(self, missing: list[str], skipped: list[Skipped]) -> None:
        """What listing the sources left out: ids without an image, and the skipped files by kind."""
        self.missing = list(missing)
        self.failures[:0] = [(u, "", MISSING_REASON) for u in missing]
        for entry in skipped:
            row = (entry.uuid, entry.origin, entry.reason)
            if entry.kind == "duplicate":
                self.duplicates.append(row)
            elif entry.kind == "failed":
                self.failed += 1
                self.failures.insert(self.failed - 1, row)
            else:
                self.ignored += 1
                self.ignored_files.append(row)


def _stderr_line(text: str) -> None:
    print(text, file=sys.stderr)


@contextlib.contextmanager
def decoder_messages_counted() -> Iterator[list[EmbedSummary]]:
    """For a command's run: C libraries' lines on fd 2 captured, and with the decoders' warnings counted into
    each summary the block appends to the yielded list (embed/chatter.py)."""
    before = warnings_count()
    summaries: list[EmbedSummary] = []
    with c_messages_captured() as c_lines:
        yield summaries
    for summary in summaries:
        summary.decoder_messages = warnings_count() - before + c_lines.lines


NOT_A_PHOTO = IGNORED_REASONS[0]  # "not a photo format (": one group, whatever the format


def _group(kind: str) -> str:
    return NOT_A_PHOTO if kind.startswith(NOT_A_PHOTO) else kind


def kind_of(reason: str) -> str:
    return reason.split(SAID, 1)[0]


def record_failure(summary: EmbedSummary, bar, uuid: str, origin: str, reason: str) -> None:
    """One image that was not embedded: failed (named first), or ignored when its bytes are no photo."""
    if reason.startswith(IGNORED_REASONS):
        summary.ignored += 1
        summary.ignored_files.append((uuid, origin, reason))
    else:
        summary.failures.insert(summary.failed, (uuid, origin, reason))  # failed before missing
        summary.failed += 1
    bar.update(1)


def record_encoded(writer: CacheWriter, summary: EmbedSummary, bar, uuids: list[str], vectors: np.ndarray,
                   made_by: str | None = None) -> None:
    writer.add(uuids, vectors, made_by)
    summary.encoded += len(uuids)
    bar.update(len(uuids))


def write_failures(folder: Path, failures: list[tuple[str, str, str]], name: str = FAILURES) -> Path:
    """One list of the latest run (failures by default: uuid, where the image came from, why)."""
    path = Path(folder) / name
    with atomic_path(path) as temp, open(temp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key" if name.endswith(DUPLICATES) else "uuid", "origin", "reason"])
        writer.writerows(failures)
    return path


def save_failures(out, summary: EmbedSummary, paths: dict[str, Path] | None = None) -> None:
    """Write the run's three lists into the cache folder ``out``, or to ``paths`` (list name -> file); each
    is rewritten, also when empty, so that none is left from an older run. A write error is the user's one
    line."""
    rows = {FAILURES: summary.failures, IGNORED: summary.ignored_files, DUPLICATES: summary.duplicates}
    try:
        for name, listed in rows.items():
            path = Path(paths[name]) if paths else Path(out) / name
            write_failures(path.parent, listed, path.name)
    except OSError as error:
        raise OutputError(f"cannot write the failures list in {out}: {os_reason(error)}") from None
