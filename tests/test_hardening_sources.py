"""Issue 10, points 2, 3 and 9: zip bombs, bad zip members, damaged archives, and files skipped without a word.

Each bad member is its own failure row; the good members are embedded. Archives are built here, in memory.
"""

from __future__ import annotations

import csv
import os
import resource
import struct
import zipfile
from pathlib import Path

import pytest

from embed import cli, sources
from embed.cache import read_cache
from embed.pipeline import EncoderChoice, embed_sources
from embed.sources import SourceError, list_sources, read_member
from embed.summary import DUPLICATES, FAILURES, IGNORED


def failures(out: Path, name: str = FAILURES) -> dict[str, str]:
    with open(out / name, newline="") as handle:
        return {row["origin"]: row["reason"] for row in csv.DictReader(handle)}


def run(sources_, out, encoder):
    return embed_sources([str(s) for s in sources_], out, EncoderChoice(encoder, threads=1), progress=False)


def set_member_flag(path: Path, name: str, flag: int) -> None:
    """Set a general-purpose flag bit (bit 0: encrypted) in both the local and the central header."""
    data = bytearray(path.read_bytes())
    encoded = name.encode()
    for signature, flag_at, name_at in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        at = data.find(signature)
        while at >= 0:
            if data[at + name_at : at + name_at + len(encoded)] == encoded:
                flags = struct.unpack("<H", data[at + flag_at : at + flag_at + 2])[0] | flag
                data[at + flag_at : at + flag_at + 2] = struct.pack("<H", flags)
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))


def corrupt_member_data(path: Path, name: str) -> None:
    """Flip a byte inside a stored member's data: the CRC no longer matches."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def good(picture, image_bytes) -> dict[str, bytes]:
    return {f"good{i}": image_bytes(picture(i, size=(70, 60))) for i in range(3)}


def zip_with(path: Path, good: dict[str, bytes], extra: list[tuple[str, bytes, int]]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for uuid, data in good.items():
            archive.writestr(f"data/{uuid}.jpg", data, zipfile.ZIP_STORED)
        for name, data, method in extra:
            archive.writestr(name, data, method)
    return path


@pytest.mark.parametrize("kind", ["encrypted", "bzip2", "lzma", "bad-crc", "bomb", "too-large"])
def test_one_bad_member_fails_alone(tmp_path, good, kind, tiny_clip, tiny_encoder, monkeypatch) -> None:
    name = "data/evil.jpg"
    method = {"bzip2": zipfile.ZIP_BZIP2, "lzma": zipfile.ZIP_LZMA}.get(kind, zipfile.ZIP_STORED)
    payload = b"\0" * (30 * 2**20) if kind == "bomb" else good["good0"]
    if kind == "bomb":
        method = zipfile.ZIP_DEFLATED
    if kind == "too-large":
        monkeypatch.setattr(sources, "MAX_FILE_BYTES", 1000)
    archive = zip_with(tmp_path / "data.zip", {} if kind == "too-large" else good, [(name, payload, method)])
    if kind == "too-large":  # the others must stay under the lowered cap: add small ones
        archive = zip_with(tmp_path / "data.zip", {}, [(name, payload, method), ("data/tiny.png", b"x" * 10, 0)])
    if kind == "encrypted":
        set_member_flag(archive, name, 0x1)
    if kind == "bad-crc":
        corrupt_member_data(archive, name)
    summary = run([archive], tmp_path / "cache", tiny_clip.name)
    reasons = failures(tmp_path / "cache")
    reason = reasons[f"{archive}:{name}"]
    expected = {"encrypted": "encrypted", "bzip2": "unsupported zip compression method 12",
                "lzma": "unsupported zip compression method 14", "bad-crc": "CRC", "bomb": "zip bomb",
                "too-large": "larger than"}[kind]
    assert expected in reason, reason
    if kind != "too-large":
        assert summary.encoded == 3 and sorted(read_cache(tmp_path / "cache").uuids) == sorted(good)


def test_zip_bomb_is_refused_without_inflating(tmp_path) -> None:
    # 64 MB of zeros deflate to ~64 KB: refused from the header, before a byte is inflated.
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("bomb.png", b"\0" * (64 * 2**20))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refs, _ = list_sources([archive])
    with pytest.raises(SourceError, match="zip bomb"):
        refs[0].read()
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 < 32 * 2**20


def test_member_inflating_past_its_declared_size_is_cut_off(tmp_path) -> None:
    # A header that lies (declares 1 KB, holds 3 MB): the read stops at the declared size and fails.
    archive = tmp_path / "liar.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("liar.png", os.urandom(1024) + b"\0" * (3 * 2**20))
    with zipfile.ZipFile(archive) as handle:
        info = handle.getinfo("liar.png")
    data = bytearray(archive.read_bytes())
    central = data.find(b"PK\x01\x02")
    data[central + 24 : central + 28] = struct.pack("<I", 1024)  # uncompressed size in the central directory
    archive.write_bytes(bytes(data))
    with zipfile.ZipFile(archive) as handle, pytest.raises(SourceError, match="damaged zip member"):
        read_member(handle, "liar.png")
    assert info.file_size > 1024


@pytest.mark.parametrize("damage", ["central-directory", "truncated", "not-a-zip"])
def test_damaged_archive_is_one_line_exit_2(tmp_path, good, damage, capsys) -> None:
    archive = zip_with(tmp_path / "data.zip", good, [])
    data = bytearray(archive.read_bytes())
    if damage == "central-directory":
        central = data.find(b"PK\x01\x02")
        data[central : central + 46] = os.urandom(46)
    elif damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"this is not a zip archive" * 10)
    archive.write_bytes(bytes(data))
    assert cli.main([str(archive), "--out", str(tmp_path / "cache"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a readable zip archive" in err[0] and "Traceback" not in err[0]


def test_skipped_files_are_counted_and_listed(tmp_path, write_image, tiny_clip, tiny_encoder, monkeypatch) -> None:
    root = tmp_path / "images"
    write_image(root / "a1.jpg", seed=0)
    write_image(root / "sub" / "a2.png", seed=1)
    (root / "notes.txt").write_text("not an image")
    (root / "loop").symlink_to(root, target_is_directory=True)  # a folder that contains itself
    (root / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    locked = root / "locked"
    locked.mkdir()
    write_image(locked / "hidden.jpg", seed=2)
    real_scandir = os.scandir

    def scandir(path="."):  # root reads every folder: make one unreadable the way a permission error would
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    other = tmp_path / "other"
    write_image(other / "a1.jpg", seed=3)  # the same uuid in a second source
    summary = run([root, other], tmp_path / "cache", tiny_clip.name)
    reasons = failures(tmp_path / "cache")
    assert summary.encoded == 2 and summary.failed == len(reasons) == 2, reasons
    assert "symlink loop" in reasons[str(root / "loop")]
    assert "cannot read folder" in reasons[str(locked)]
    ignored = failures(tmp_path / "cache", IGNORED)
    assert summary.ignored == len(ignored) == 2, ignored
    assert "not an image (unrecognised format)" == ignored[str(root / "notes.txt")]
    assert "broken symlink" in ignored[str(root / "dangling.jpg")]
    duplicates = failures(tmp_path / "cache", DUPLICATES)
    assert f"duplicate key 'a1': {root / 'a1.jpg'} has it too" in duplicates[str(other / "a1.jpg")]
    assert "2 failed" in summary.line() and "2 ignored" in summary.line() and "1 duplicates" in summary.line()
