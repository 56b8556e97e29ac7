"""Model files: ``model.json`` + one file per head, none of which can run code when loaded.

    MODEL_DIR/model.json            classes, tags, thresholds, the embedding columns each tag reads, encoder
                                    spec, CV scores, choices (deterministic)
    MODEL_DIR/training.json         seconds per head and when (changes every run, so kept apart)
    MODEL_DIR/category.npz          logistic head: mean, scale, coef, intercept   (or category.lgb.txt)
    MODEL_DIR/tag-<slug>.npz        one per tag                                    (or tag-<slug>.lgb.txt)

NPZ files are read with ``allow_pickle=False`` and LightGBM models are text, so a model folder from
elsewhere cannot execute anything. ``model.json`` records the sha256 of every head file, and loading checks
it against a schema (``classifiers.model_schema``) and every head's shapes against the classes, the tag
columns and the encoder's dimension: a tampered, mixed-up or truncated folder is refused with the field it
got wrong, never used. A model is saved whole into a folder beside the target, which then takes the
target's place (an atomic exchange where the OS has one), so a crash leaves the old model or the new one.
The same model gives byte-identical files.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import os
import re
import shutil
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from classifiers.model import FORMAT_VERSION, TaggerModel
from classifiers.model_schema import ModelError, check_heads, parse_document
from classifiers.scorers import CategoryScorer, LightGBMScores, LinearScores, TagScorer
from embed.output import check_folder
from vinted_tagger.files import file_sha256, write_bytes
# The packaged default model, and $VINTED_TAGGER_MODEL else it (re-exported: what classify and the service use).
from vinted_tagger.settings import DEFAULT_MODEL_DIR
from vinted_tagger.settings import model_dir as default_model_dir

MODEL_FILE = "model.json"
TRAINING_FILE = "training.json"
FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # zip entries get this date so that the same arrays give the same bytes


def save_model(model: TaggerModel, model_dir: str | Path = DEFAULT_MODEL_DIR) -> Path:
    """Write the model to ``model_dir`` (created, or replaced whole); returns the path of model.json."""
    target = Path(model_dir)
    check_model_target(target)
    staging = target.with_name(f".{target.name}.saving-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        write_model_files(model, staging)
        document = parse_document(staging / MODEL_FILE)  # what load_model would refuse is never put in place
        check_heads(document, _read_heads(staging, document))
        swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # the new files on failure, the old model after a swap
    return target / MODEL_FILE


def check_model_target(target: Path) -> None:
    """The target is new, empty or a model folder: replacing anything else would delete a user's files."""
    if target.exists() and target.is_dir():
        others = sorted(p.name for p in target.iterdir() if not _is_model_file(p.name))
        if others:
            raise ModelError(f"{target} is not a model folder (it holds {', '.join(others[:3])}"
                             f"{' ...' if len(others) > 3 else ''}); choose a new or empty folder")
    check_folder(target.parent if str(target.parent) else Path("."), "the folder of the model")
    if target.exists() and not target.is_dir():
        raise ModelError(f"model folder {target} is a file, not a folder")


def _is_model_file(name: str) -> bool:
    return name in (MODEL_FILE, TRAINING_FILE) or re.fullmatch(r"(category|tag-.+)\.(npz|lgb\.txt)", name) is not None


def write_model_files(model: TaggerModel, folder: Path) -> None:
    category_file = _save_scores(folder, "category", model.category.scores)
    tags = []
    for name, head in model.tags.items():
        file = _save_scores(folder, f"tag-{slug(name)}", head.scores)
        entry = {"name": name, "threshold": head.threshold, "file": file, "sha256": file_sha256(folder / file)}
        if head.columns is not None:
            entry["columns"] = [list(columns) for columns in head.columns]
        tags.append(entry)
    document = {
        "format_version": FORMAT_VERSION,
        "encoder": model.encoder,
        "category": {"classes": model.category.classes, "temperature": model.category.temperature,
                     "file": category_file, "sha256": file_sha256(folder / category_file)},
        "tags": tags,
        "training": model.info,
    }
    timing = {**model.timing, "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_bytes(folder / TRAINING_FILE, _json_bytes(timing))
    write_bytes(folder / MODEL_FILE, _json_bytes(document))


def swap_in(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; the old target (if any) ends up at ``staging``, to be deleted."""
    if not target.exists():
        os.rename(staging, target)
        return
    if _exchange(staging, target):
        return
    # No atomic exchange here: two renames, with the old model kept beside until the new one is in place.
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.rename(target, old)
    os.rename(staging, target)
    os.rename(old, staging)


def _exchange(a: Path, b: Path) -> bool:
    """renameat2(RENAME_EXCHANGE): swap two paths in one atomic step (Linux); False where unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def model_id(model_dir: str | Path) -> str:
    """A short id of a saved model: the hash of its model.json, which names the training data (fingerprint),
    the encoder, the head choices and the thresholds. Clients of the service can tell which model answered."""
    return hashlib.sha256((Path(model_dir) / MODEL_FILE).read_bytes()).hexdigest()[:12]


def load_model(model_dir: str | Path = DEFAULT_MODEL_DIR) -> TaggerModel:
    """Read a model folder written by :func:`save_model`; anything inconsistent raises ModelError."""
    folder = Path(model_dir)
    path = folder / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no model at {folder} ({MODEL_FILE} missing); train one with `classify train`")
    document = parse_document(path)
    heads = _read_heads(folder, document)
    check_heads(document, heads)
    category = document.category
    category_head = CategoryScorer(list(category.classes), heads[category.file], category.temperature)
    tags = {tag.name: TagScorer(tag.name, heads[tag.file], tag.threshold, _columns(tag.columns))
            for tag in document.tags}
    timing_path = folder / TRAINING_FILE
    timing = _read_json(timing_path) if timing_path.is_file() else {}
    return TaggerModel(category_head, tags, dict(document.encoder), dict(document.training), timing)


def _read_heads(folder: Path, document) -> dict[str, LinearScores | LightGBMScores]:
    """Each head file, after checking it is the one model.json recorded (sha256)."""
    heads = {}
    for field, entry in [("category", document.category),
                         *((f"tags[{i}]", tag) for i, tag in enumerate(document.tags))]:
        path = folder / entry.file
        if not path.is_file():
            raise ModelError(f"{folder / MODEL_FILE}: {field}.file: {entry.file} is missing")
        if file_sha256(path) != entry.sha256:
            raise ModelError(f"{folder / MODEL_FILE}: {field}.sha256: {entry.file} is not the file this model was "
                             "saved with (changed, swapped or damaged); re-train or restore the folder")
        try:
            heads[entry.file] = _load_scores(folder, entry.file)
        except Exception as error:  # noqa: BLE001 - numpy, zipfile and LightGBM each raise their own kinds
            raise ModelError(f"{path}: unreadable head file: {error}") from None
    return heads


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: not readable JSON: {error}") from None
    return value if isinstance(value, dict) else {}



def _columns(ranges: list | None) -> tuple[tuple[int, int], ...] | None:
    return None if ranges is None else tuple((int(start), int(stop)) for start, stop in ranges)


def slug(name: str) -> str:
    """A file-name-safe form of a tag name ("polka dot" -> "polka-dot")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-").lower() or "tag"


def _save_scores(folder: Path, stem: str, scores: LinearScores | LightGBMScores) -> str:
    if isinstance(scores, LinearScores):
        name = f"{stem}.npz"
        write_bytes(folder / name, npz_bytes(scores.arrays()))
    else:
        name = f"{stem}.lgb.txt"
        write_bytes(folder / name, scores.model_text.encode())
    return name


def _load_scores(folder: Path, name: str) -> LinearScores | LightGBMScores:
    path = folder / name
    if name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as arrays:
            return LinearScores(arrays["mean"], arrays["scale"], arrays["coef"], arrays["intercept"])
    if name.endswith(".lgb.txt"):
        return LightGBMScores(path.read_text())
    raise ValueError(f"unknown head file type: {path}")


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive (readable by np.load) whose bytes depend only on the arrays: np.savez stamps the time."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for key in sorted(arrays):
            array_bytes = io.BytesIO()
            np.lib.format.write_array(array_bytes, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=FIXED_DATE), array_bytes.getvalue())
    return buffer.getvalue()


def _json_bytes(document: dict) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True, default=_json_default) + "\n").encode()


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
