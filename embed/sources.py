"""Where images come from: zip archives, folders, single files, or a Parquet/CSV list of paths (a ``path``
column, optional ``uuid``; paths may be URIs such as ``s3://bucket/x.jpg``, read through pyarrow's
filesystems). The key of an image is its ``uuid`` column or else its file stem.

A source yields ``ImageRef``s (uuid + a way to read the bytes) without reading any pixels, so listing
8,860 images in a zip takes milliseconds and a resumed run can skip cached uuids before touching data.
An ``ImageRef`` also names its bytes as (``location``, ``member``), so that another process (a Ray worker)
can rebuild it with ``ref_at`` and read the bytes itself.
"""

from __future__ import annotations

import functools
import threading
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
PATH_LIST_SUFFIXES = {".parquet", ".csv"}


@dataclass(frozen=True)
class ImageRef:
    uuid: str
    origin: str  # human-readable location, for error messages
    read: Callable[[], bytes]
    location: str = ""  # file, zip archive or URI holding the bytes
    member: str | None = None  # name inside a zip archive


def is_image_name(name: str) -> bool:
    path = PurePosixPath(name)
    return path.suffix.lower() in IMAGE_SUFFIXES and not any(p.startswith(".") or p == "__MACOSX" for p in path.parts)


def iter_sources(sources: Iterable[str | Path]) -> list[ImageRef]:
    """All images of all sources, in order; a uuid seen twice keeps its first occurrence."""
    refs: dict[str, ImageRef] = {}
    for source in sources:
        for ref in _refs_of(source):
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


def ref_at(uuid: str, origin: str, location: str, member: str | None) -> ImageRef:
    """Rebuild a ref from its location, in any process (zip archives are opened once per process)."""
    if member is not None:
        stat = Path(location).stat()
        return ImageRef(uuid, origin, _zip_reader(location, stat.st_mtime_ns, stat.st_size).opener(member),
                        location, member)
    return ImageRef(uuid, origin, functools.partial(read_location, location), location)


def read_location(location: str) -> bytes:
    """The bytes of a local file, or of a URI through pyarrow's filesystems (s3://, gs://, hdfs://...)."""
    if "://" not in location:
        return Path(location).read_bytes()
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(location)
    with filesystem.open_input_stream(path) as stream:
        return stream.read()


@functools.lru_cache(maxsize=16)
def _zip_reader(path: str, mtime_ns: int, size: int) -> _ZipReader:
    """One reader per archive and process; a rewritten archive (other mtime or size) is opened anew."""
    return _ZipReader(Path(path))


def _path_list_refs(path: Path) -> list[ImageRef]:
    frame = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path, dtype=str)
    if "path" not in frame.columns:
        raise ValueError(f"path list {path} has no 'path' column (columns: {', '.join(map(str, frame.columns))})")
    base = path.parent
    refs = []
    for i, location in enumerate(frame["path"].astype(str)):
        if "://" not in location and not Path(location).is_absolute():
            location = str(base / location)  # relative paths are relative to the list
        uuid = str(frame["uuid"].iloc[i]) if "uuid" in frame.columns else PurePosixPath(location).stem
        refs.append(ref_at(uuid, location, location, None))
    return refs


def _uri_refs(uri: str) -> list[ImageRef]:
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(uri)
    info = filesystem.get_file_info(root)
    if info.type == fs.FileType.NotFound:
        raise FileNotFoundError(f"image source not found: {uri}")
    if info.type == fs.FileType.File:
        return [ref_at(PurePosixPath(root).stem, uri, uri, None)]
    scheme = uri.split("://", 1)[0]
    files = sorted(f.path for f in filesystem.get_file_info(fs.FileSelector(root, recursive=True)) if f.is_file)
    return [ref_at(PurePosixPath(f).stem, f"{scheme}://{f}", f"{scheme}://{f}", None)
            for f in files if is_image_name(PurePosixPath(f).relative_to(root).as_posix())]


def _refs_of(path: Path | str) -> Iterable[ImageRef]:
    if "://" in str(path):
        return _uri_refs(str(path))
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image source not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        # Judge the path inside the folder, so that images under hidden or __MACOSX folders are skipped too.
        return [_file_ref(p) for p in files if is_image_name(p.relative_to(path).as_posix())]
    if zipfile.is_zipfile(path):
        return _zip_refs(path)
    if path.suffix.lower() in PATH_LIST_SUFFIXES:
        return _path_list_refs(path)
    return [_file_ref(path)]


def _file_ref(path: Path) -> ImageRef:
    return ImageRef(uuid=path.stem, origin=str(path), read=path.read_bytes, location=str(path))


def _zip_refs(path: Path) -> list[ImageRef]:
    reader = _ZipReader(path)
    return [
        ImageRef(uuid=PurePosixPath(name).stem, origin=f"{path}:{name}", read=reader.opener(name),
                 location=str(path), member=name)
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
