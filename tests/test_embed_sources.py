"""Image sources (embed/sources.py): zip, folder and single files; the uuid is the file stem."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from embed.sources import list_images, list_sources


def test_zip_like_the_assignment(tmp_path: Path, picture, image_bytes) -> None:
    jpeg = image_bytes(picture(0))
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/", b"")  # folder entry
        zf.writestr("data/00a1f_abc.jpg", jpeg)
        zf.writestr("data/00b2e_DEF.JPG", jpeg)  # suffix case does not matter
        zf.writestr("data/sub/00c3d_ghi.png", image_bytes(picture(1), "PNG"))
        zf.writestr("data/notes.txt", b"not an image")
        zf.writestr("data/.DS_Store", b"\0\0")
        zf.writestr("data/.hidden.jpg", jpeg)
        zf.writestr("__MACOSX/data/._00a1f_abc.jpg", b"resource fork")
        zf.writestr("__MACOSX/data/00zzz_fork.jpg", b"resource fork")
    refs = list_images([archive])
    assert [ref.uuid for ref in refs] == ["00a1f_abc", "00b2e_DEF", "00c3d_ghi"]
    assert refs[0].read() == jpeg  # the bytes of the member, not of another one
    assert refs[0].origin == f"{archive}:data/00a1f_abc.jpg"


def test_nested_folder(tmp_path: Path, write_image) -> None:
    root = tmp_path / "images"
    write_image(root / "top.jpg", seed=0)
    write_image(root / "a" / "b" / "deep.png", seed=1)
    write_image(root / "a" / "mid.jpeg", seed=2)
    (root / "readme.txt").write_text("not an image")
    (root / "a" / "data.parquet").write_bytes(b"PAR1")
    (root / ".DS_Store").write_bytes(b"\0")
    write_image(root / "a" / "._mid.jpeg", seed=3)  # AppleDouble file
    write_image(root / "__MACOSX" / "a" / "fork.jpg", seed=4)  # unzipped macOS metadata folder
    write_image(root / ".thumbnails" / "top.jpg", seed=5)  # hidden folder: must not shadow the real top.jpg
    refs = list_images([root])
    by_uuid = {ref.uuid: ref for ref in refs}
    assert sorted(by_uuid) == ["deep", "mid", "top"]
    assert by_uuid["top"].read() == (root / "top.jpg").read_bytes()


def test_folder_inside_a_hidden_folder_still_works(tmp_path: Path, write_image) -> None:
    # Only the path inside the source decides; the source itself may live under a dot-folder.
    root = tmp_path / ".cache" / "images"
    write_image(root / "x1.jpg")
    assert [ref.uuid for ref in list_images([root])] == ["x1"]


def test_single_files_and_first_source_wins(tmp_path: Path, write_image) -> None:
    one = write_image(tmp_path / "one" / "aa11.jpg", seed=0)
    two = write_image(tmp_path / "two" / "bb22.png", seed=1)
    again = write_image(tmp_path / "three" / "aa11.jpg", seed=2)  # same uuid in a later source
    refs = list_images([one, two, again])
    assert [ref.uuid for ref in refs] == ["aa11", "bb22"]
    assert refs[0].read() == one.read_bytes()
    assert refs[0].origin == str(one)


def test_mixed_sources(tmp_path: Path, write_image, image_bytes, picture) -> None:
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/z1.jpg", image_bytes(picture(0)))
    folder = tmp_path / "folder"
    write_image(folder / "f1.jpg")
    single = write_image(tmp_path / "s1.png")
    assert [ref.uuid for ref in list_images([archive, folder, single])] == ["z1", "f1", "s1"]


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        list_images([tmp_path / "nope"])


def test_photos_are_listed_by_content_not_suffix(tmp_path: Path, write_image, picture) -> None:
    root = tmp_path / "photos"
    write_image(root / "a.jpg", seed=0)
    write_image(root / "b.TIFF", seed=1)
    (root / "c.heic").write_bytes(b"not read while listing: its decoder decides")
    write_image(root / "d-no-suffix", seed=2)  # a JPEG saved without a suffix is a photo
    picture(3, (16, 16)).save(root / "e.tga", "TGA")
    (root / "notes.txt").write_text("hello")
    write_image(root / ".hidden.jpg", seed=4)
    write_image(root / "__MACOSX" / "a.jpg", seed=5)
    (root / "list.csv").write_text("path\na.jpg\n")
    refs, skipped = list_sources([root])
    assert [r.uuid for r in refs] == ["a", "b", "c", "d-no-suffix"]
    reasons = {Path(s.origin).name: s.reason for s in skipped}
    assert reasons == {
        "e.tga": "not a photo format (TGA)",
        "notes.txt": "not an image (unrecognised format)",
        ".hidden.jpg": "hidden or macOS metadata file",
        "a.jpg": "hidden or macOS metadata file",
        "list.csv": "path list file (give it as a source to read the images it lists)",
    }
    assert {s.kind for s in skipped} == {"ignored"}


def test_duplicate_keys_name_both_files_and_key_path_keeps_both(tmp_path: Path, write_image) -> None:
    one, two = write_image(tmp_path / "x" / "shirt.jpg", seed=0), write_image(tmp_path / "y" / "shirt.png", seed=1)
    refs, skipped = list_sources([tmp_path])
    assert [r.uuid for r in refs] == ["shirt"]
    (duplicate,) = skipped
    assert duplicate.kind == "duplicate" and duplicate.origin == str(two) and str(one) in duplicate.reason
    refs, skipped = list_sources([tmp_path], key="path")
    assert [r.uuid for r in refs] == ["x/shirt.jpg", "y/shirt.png"] and not skipped
    with pytest.raises(ValueError, match="valid keys: stem, path"):
        list_sources([tmp_path], key="name")


def test_a_parquet_or_csv_list_of_paths(tmp_path: Path, write_image) -> None:
    a = write_image(tmp_path / "photos" / "a.jpg", seed=0)
    b = write_image(tmp_path / "photos" / "b.png", seed=1)
    import pandas as pd

    pd.DataFrame({"path": [str(a), "photos/b.png"], "uuid": ["item-1", "item-2"]}).to_parquet(tmp_path / "list.parquet")
    refs = list_images([tmp_path / "list.parquet"])
    assert [r.uuid for r in refs] == ["item-1", "item-2"]  # the uuid column wins over the file stem
    assert refs[1].read() == b.read_bytes()  # relative paths are relative to the list's folder
    (tmp_path / "list.csv").write_text(f"path\n{a}\n")
    assert [r.uuid for r in list_images([tmp_path / "list.csv"])] == ["a"]
    (tmp_path / "bad.csv").write_text("file\nx.jpg\n")
    with pytest.raises(ValueError, match="no 'path' column"):
        list_images([tmp_path / "bad.csv"])


def test_refs_can_be_rebuilt_in_another_process(tmp_path: Path, picture, image_bytes) -> None:
    """What a Ray worker does: rebuild a ref from (location, member) and read the same bytes."""
    from embed.sources import ref_at

    jpeg = image_bytes(picture(0))
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as zf:
        zf.writestr("data/x.jpg", jpeg)
    (ref,) = list_images([tmp_path / "data.zip"])
    again = ref_at(ref.uuid, ref.origin, ref.location, ref.member)
    assert (again.location, again.member) == (str(tmp_path / "data.zip"), "data/x.jpg")
    assert again.read() == jpeg
