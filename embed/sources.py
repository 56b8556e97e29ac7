"""Where images come from: zip archives, folders or single files. The key of an image is its file stem.

A source yields ``ImageRef``s (uuid + a way to read the bytes) without reading any pixels, so listing
8,860 images in a zip takes milliseconds and a resumed run can skip cached uuids before touching data.
"""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass(frozen=True)
class ImageRef:
    uuid: str
    origin: str  # human-readable location, for error messages
    read: Callable[[], bytes]


def is_image_name(name: str) -> bool:
    path = PurePosixPath(name)
    return path.suffix.lower() in IMAGE_SUFFIXES and not any(p.startswith(".") or p == "__MACOSX" for p in path.parts)


def iter_sources(sources: Iterable[str | Path]) -> list[ImageRef]:
    """All images of all sources, in order; a uuid seen twice keeps its first occurrence."""
    refs: dict[str, ImageRef] = {}
    for source in sources:
        for ref in _refs_of(Path(source)):
            refs.setdefault(ref.uuid, ref)
    return list(refs.values())


def select(refs: list[ImageRef], ids: Iterable[str] | None) -> tuple[list[ImageRef], list[str]]:
    """Restrict to ``ids`` (kept in their order); also return the ids that have no image."""
    if ids is None:
        return refs, []
    by_uuid = {ref.uuid: ref for ref in refs}
    wanted = list(dict.fromkeys(str(i) for i in ids))
    return [by_uuid[u] for u in wanted if u in by_uuid], [u for u in wanted if u not in by_uuid]


def read_ids(path: str | Path) -> list[str]:
    """The uuids of a Parquet file (e.g. test.parquet), in its order, as strings."""
    if not Path(path).exists():
        raise FileNotFoundError(f"ids file {path} does not exist")
    frame = pd.read_parquet(path)
    if "uuid" not in frame.columns:
        raise ValueError(f"ids file {path} has no 'uuid' column")
    return frame["uuid"].astype(str).tolist()


def _refs_of(path: Path) -> Iterable[ImageRef]:
    if not path.exists():
        raise FileNotFoundError(f"image source not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        # Judge the path inside the folder, so that images under hidden or __MACOSX folders are skipped too.
        return [_file_ref(p) for p in files if is_image_name(p.relative_to(path).as_posix())]
    if zipfile.is_zipfile(path):
        return _zip_refs(path)
    return [_file_ref(path)]


def _file_ref(path: Path) -> ImageRef:
    return ImageRef(uuid=path.stem, origin=str(path), read=path.read_bytes)


def _zip_refs(path: Path) -> list[ImageRef]:
    reader = _ZipReader(path)
    return [
        ImageRef(uuid=PurePosixPath(name).stem, origin=f"{path}:{name}", read=reader.opener(name))
        for name in reader.names
        if is_image_name(name)
    ]


class _ZipReader:
    """One open ZipFile per thread: ZipFile objects are not safe to share between reader threads."""

    def __init__(self, path: Path):
        self.path = path
        self.local = threading.local()
        with zipfile.ZipFile(path) as archive:
            self.names = [info.filename for info in archive.infolist() if not info.is_dir()]

    def opener(self, name: str) -> Callable[[], bytes]:
        return lambda: self._archive().read(name)

    def _archive(self) -> zipfile.ZipFile:
        archive = getattr(self.local, "archive", None)
        if archive is None:
            archive = self.local.archive = zipfile.ZipFile(self.path)
        return archive
