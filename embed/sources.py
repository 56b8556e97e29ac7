"""Where images come from: zip archives, folders or single files. The key of an image is its file stem, or
with ``key="path"`` its path relative to the source (for folders whose files share stems).

A source yields ``ImageRef``s (uuid + a way to read the bytes) without reading any pixels, so listing
8,860 images in a zip takes milliseconds and a resumed run can skip cached uuids before touching data.
An ``ImageRef`` also names its bytes as (``location``, ``member``), so that another process (a Ray worker)
can rebuild it with ``ref_at`` and read the bytes itself. A Parquet/CSV list of paths (a ``path`` column,
optional ``uuid``; paths may be URIs such as ``s3://bucket/x.jpg``, read through pyarrow's filesystems) is a
source too.
Whether a file is a photo is decided by its bytes: a file with a photo suffix (embed.images.PHOTO_FORMATS)
is listed without reading it and its decoder decides; any other file is listed when its first bytes announce
a photo format (a HEIC saved without a suffix), else skipped, with its format named when Pillow knows it.
Whatever is left out is a ``Skipped`` entry of one kind, so that the caller can count and list it: ``ignored``
(not a photo, hidden and macOS metadata files, path lists), ``duplicate`` (a key seen twice: both paths
named) or ``failed`` (a folder that cannot be read, a symlink loop). Zip members are streamed with a size cap and
checked against their headers first (encryption, method, size, compression ratio): a bad member fails alone.
"""

from __future__ import annotations

import functools
import os
import threading
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from embed.images import FORMATS, PHOTO_SUFFIXES, not_a_photo, sniff

PATH_LIST_SUFFIXES = {".parquet", ".csv"}
KEYS = ("stem", "path")  # an image's key (uuid): its file stem, or its path relative to the source
HEAD_BYTES = 4096  # read from a file without a photo suffix: enough for any format's header
# Largest image file we read (a 200 MP phone JPEG is ~60-100 MB) and the largest inflation a zip member may
# claim: images barely compress, so a member that inflates 100x is a bomb (small members are let through).
MAX_FILE_BYTES = 256 * 2**20
MAX_RATIO = 100
RATIO_FLOOR_BYTES = 2**20
# Methods whose inflation zipfile bounds as it streams; bzip2 and LZMA inflate a whole read at once.
ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
READ_CHUNK = 2**20


class SourceError(OSError):
    """One image (file or zip member) that cannot be read; it fails alone, the run goes on."""


SKIPPED_KINDS = ("failed", "ignored", "duplicate")


@dataclass(frozen=True)
class Skipped:
    """A file or folder of a source that is not embedded, why, and which kind of reason (SKIPPED_KINDS)."""

    uuid: str
    origin: str
    reason: str
    kind: str = "ignored"


@dataclass(frozen=True)
class ImageRef:
    uuid: str
    origin: str  # human-readable location, for error messages
    read: Callable[[], bytes]
    location: str = ""  # file, zip archive or URI holding the bytes
    member: str | None = None  # name inside a zip archive


def is_hidden(name: str) -> bool:
    """A hidden file or folder, or macOS metadata (``__MACOSX``), anywhere in a relative path."""
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(name).parts)


def has_photo_suffix(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in PHOTO_SUFFIXES


def list_images(sources: Iterable[str | Path], key: str = "stem") -> list[ImageRef]:
    """All images of all sources, in order, as a list; a key seen twice keeps its first occurrence."""
    return list_sources(sources, key)[0]


def list_sources(sources: Iterable[str | Path], key: str = "stem") -> tuple[list[ImageRef], list[Skipped]]:
    """(images of all sources in order, what was left out); a key seen twice keeps its first occurrence."""
    if key not in KEYS:
        raise ValueError(f"unknown key {key!r}; valid keys: {', '.join(KEYS)}")
    refs: dict[str, ImageRef] = {}
    skipped: list[Skipped] = []
    for source in sources:
        for ref in _refs_of(source, skipped, key):
            first = refs.setdefault(ref.uuid, ref)
            if first is not ref:
                skipped.append(Skipped(ref.uuid, ref.origin, f"duplicate key {ref.uuid!r}: {first.origin} has it "
                                       f"too and is kept (--key path keys by relative path)", "duplicate"))
    return list(refs.values()), skipped


def key_of(relative: str, key: str) -> str:
    """The key of a file from its path relative to its source (a zip member's name, a file's own name)."""
    return relative if key == "path" else PurePosixPath(relative).stem


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


def _refs_of(path: Path | str, skipped: list[Skipped], key: str) -> list[ImageRef]:
    if "://" in str(path):
        return _uri_refs(str(path), key)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image source not found: {path}")
    if path.is_dir():
        return _folder_refs(path, skipped, key)
    if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        return _zip_refs(path, skipped, key)
    if path.suffix.lower() in PATH_LIST_SUFFIXES:
        return _path_list_refs(path, key)
    return [_file_ref(path, key_of(path.name, key))]  # named on the command line: its decoder decides


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
        return _read_file(Path(location))
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(location)
    with filesystem.open_input_stream(path) as stream:
        data = stream.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise SourceError(f"file larger than {MAX_FILE_BYTES // 2**20} MB")
    return data


@functools.lru_cache(maxsize=16)
def _zip_reader(path: str, mtime_ns: int, size: int) -> _ZipReader:
    """One reader per archive and process; a rewritten archive (other mtime or size) is opened anew."""
    return _ZipReader(Path(path))


def _path_list_refs(path: Path, key: str) -> list[ImageRef]:
    frame = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path, dtype=str)
    if "path" not in frame.columns:
        raise ValueError(f"path list {path} has no 'path' column (columns: {', '.join(map(str, frame.columns))})")
    refs = []
    for i, location in enumerate(frame["path"].astype(str)):
        if "://" not in location and not Path(location).is_absolute():
            location = str(path.parent / location)  # relative paths are relative to the list
        uuid = str(frame["uuid"].iloc[i]) if "uuid" in frame.columns else key_of(frame["path"].iloc[i], key)
        refs.append(ref_at(uuid, location, location, None))
    return refs


def _uri_refs(uri: str, key: str) -> list[ImageRef]:
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(uri)
    info = filesystem.get_file_info(root)
    if info.type == fs.FileType.NotFound:
        raise FileNotFoundError(f"image source not found: {uri}")
    if info.type == fs.FileType.File:
        return [ref_at(key_of(PurePosixPath(root).name, key), uri, uri, None)]
    scheme = uri.split("://", 1)[0]
    files = sorted(f.path for f in filesystem.get_file_info(fs.FileSelector(root, recursive=True)) if f.is_file)
    # Remote files are not read while listing: photo suffixes only (their decoders still check the bytes).
    inside = [(f, PurePosixPath(f).relative_to(root).as_posix()) for f in files]
    return [ref_at(key_of(rel, key), f"{scheme}://{f}", f"{scheme}://{f}", None)
            for f, rel in inside if has_photo_suffix(rel) and not is_hidden(rel)]


def _folder_refs(root: Path, skipped: list[Skipped], key: str) -> list[ImageRef]:
    """Every image under ``root``, sorted; symlinked folders are followed once (a loop is skipped)."""
    files: list[Path] = []
    seen_folders: set[tuple[int, int]] = set()

    def unreadable(error: OSError) -> None:
        skipped.append(Skipped("", str(error.filename or root), f"cannot read folder: {error.strerror or error}",
                               "failed"))

    for folder, subfolders, names in os.walk(root, onerror=unreadable, followlinks=True):
        identity = _identity(folder)
        if identity in seen_folders:  # reached again through a symlink: a loop, or the same folder twice
            skipped.append(Skipped("", folder, "symlink loop: folder already listed", "failed"))
            subfolders[:] = []
            continue
        seen_folders.add(identity)
        subfolders.sort()
        files.extend(Path(folder) / name for name in names)
    refs = []
    for file in sorted(files):
        inside = file.relative_to(root).as_posix()  # hidden or __MACOSX folders inside the source are skipped
        uuid = key_of(inside, key)
        if not file.is_file():  # a broken symlink, a symlink loop, a socket...
            skipped.append(Skipped(uuid, str(file), "not a readable file (broken symlink or special file)"))
        elif reason := _not_photo_reason(inside, lambda: _read_head(file)):
            skipped.append(Skipped(uuid, str(file), reason))
        else:
            refs.append(_file_ref(file, uuid))
    return refs


def _identity(folder: str) -> tuple[int, int]:
    stat = os.stat(folder)
    return stat.st_dev, stat.st_ino


def _not_photo_reason(name: str, head: Callable[[], bytes]) -> str | None:
    """Why a listed file is not a photo (None: it is one, or its decoder will tell). ``head`` gives its first
    bytes and is called only for a file without a photo suffix."""
    if is_hidden(name):
        return "hidden or macOS metadata file"
    if PurePosixPath(name).suffix.lower() in PATH_LIST_SUFFIXES:
        return "path list file (give it as a source to read the images it lists)"
    if has_photo_suffix(name):
        return None
    try:
        data = head()
    except (OSError, zipfile.BadZipFile, ValueError) as error:  # unreadable: the decoder path names it
        return None if isinstance(error, SourceError) else f"cannot read: {error}"
    if not data:
        return "empty file"
    return None if sniff(data) in FORMATS else str(not_a_photo(data))


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(HEAD_BYTES)


def _file_ref(path: Path, uuid: str) -> ImageRef:
    return ImageRef(uuid=uuid, origin=str(path), read=lambda: _read_file(path), location=str(path))


def _read_file(path: Path) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise SourceError(f"file larger than {MAX_FILE_BYTES // 2**20} MB")
    return data


def _zip_refs(path: Path, skipped: list[Skipped], key: str) -> list[ImageRef]:
    reader = _ZipReader(path)
    refs = []
    for name in reader.names:
        origin, uuid = f"{path}:{name}", key_of(name, key)
        if reason := _not_photo_reason(name, lambda: reader.head(name)):
            skipped.append(Skipped(uuid, origin, reason))
        else:
            refs.append(ImageRef(uuid=uuid, origin=origin, read=reader.opener(name), location=str(path), member=name))
    return refs


def check_member(info: zipfile.ZipInfo) -> None:
    """Refuse a zip member from its header alone: encrypted, unsupported method, too large, too compressible."""
    if info.flag_bits & 0x1:
        raise SourceError("encrypted zip member (password protected)")
    if info.compress_type not in ZIP_METHODS:
        raise SourceError(f"unsupported zip compression method {info.compress_type}; "
                          f"re-zip with {' or '.join(ZIP_METHODS.values())}")
    if info.file_size > MAX_FILE_BYTES:
        raise SourceError(f"zip member of {info.file_size:,} bytes is larger than {MAX_FILE_BYTES // 2**20} MB")
    if info.file_size > RATIO_FLOOR_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise SourceError(f"zip bomb: member inflates {info.file_size / max(info.compress_size, 1):,.0f}x "
                          f"(more than {MAX_RATIO}x)")


def read_member(archive: zipfile.ZipFile, name: str) -> bytes:
    """A member's bytes, streamed and capped at the size its header declares (and MAX_FILE_BYTES)."""
    info = archive.getinfo(name)
    check_member(info)
    chunks, size = [], 0
    try:
        with archive.open(info) as member:  # zipfile stops at the declared size and checks the CRC at the end
            while chunk := member.read(READ_CHUNK):
                size += len(chunk)
                if size > min(info.file_size, MAX_FILE_BYTES):
                    raise SourceError("zip member inflates past its declared size")
                chunks.append(chunk)
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, RuntimeError) as error:
        raise SourceError(f"damaged zip member: {error}") from None
    return b"".join(chunks)


class _ZipReader:
    """One open ZipFile per thread: ZipFile objects are not safe to share between reader threads."""

    def __init__(self, path: Path):
        self.path = path
        self.local = threading.local()
        try:
            with zipfile.ZipFile(path) as archive:
                self.names = [info.filename for info in archive.infolist() if not info.is_dir()]
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError) as error:
            raise ValueError(f"{path} is not a readable zip archive ({error})") from None

    def opener(self, name: str) -> Callable[[], bytes]:
        return lambda: read_member(self._archive(), name)

    def head(self, name: str) -> bytes:
        """The first bytes of a member (its header checked first, as for a whole read)."""
        archive = self._archive()
        info = archive.getinfo(name)
        check_member(info)
        with archive.open(info) as member:
            return member.read(HEAD_BYTES)

    def _archive(self) -> zipfile.ZipFile:
        archive = getattr(self.local, "archive", None)
        if archive is None:
            archive = self.local.archive = zipfile.ZipFile(self.path)
        return archive
