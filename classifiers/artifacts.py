"""Model files: ``model.json`` + one file per head, none of which can run code when loaded.

    MODEL_DIR/model.json            classes, tags, thresholds, the embedding columns each tag reads, encoder
                                    spec, CV scores, choices (deterministic)
    MODEL_DIR/training.json         seconds per head and when (changes every run, so kept apart)
    MODEL_DIR/category.npz          logistic head: mean, scale, coef, intercept   (or category.lgb.txt)
    MODEL_DIR/tag-<slug>.npz        one per tag                                    (or tag-<slug>.lgb.txt)

NPZ files are read with ``allow_pickle=False`` and LightGBM models are text, so a model folder from
elsewhere cannot execute anything. Every file is written to a temporary name and renamed; ``model.json`` is
written last, so a folder with a ``model.json`` is complete. The same model gives byte-identical files.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from classifiers.scorers import CategoryScorer, LightGBMScores, LinearScores, TagScorer
from classifiers.model import FORMAT_VERSION, TaggerModel
from embed.cache import atomic_write_bytes

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "artifacts" / "model"
MODEL_FILE = "model.json"
TRAINING_FILE = "training.json"
FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # zip entries get this date so that the same arrays give the same bytes


def save_model(model: TaggerModel, model_dir: str | Path = DEFAULT_MODEL_DIR) -> Path:
    """Write the model to ``model_dir`` (created if needed); returns the path of model.json."""
    folder = Path(model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    heads = {"category": _save_scores(folder, "category", model.category.scores)}
    tags = []
    for name, head in model.tags.items():
        entry = {"name": name, "threshold": head.threshold, "file": _save_scores(folder, f"tag-{slug(name)}", head.scores)}
        if head.columns is not None:
            entry["columns"] = [list(columns) for columns in head.columns]
        tags.append(entry)
    document = {
        "format_version": FORMAT_VERSION,
        "encoder": model.encoder,
        "category": {"classes": model.category.classes, "temperature": model.category.temperature,
                     "file": heads["category"]},
        "tags": tags,
        "training": model.info,
    }
    timing = {**model.timing, "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_bytes(folder / TRAINING_FILE, _json_bytes(timing))
    atomic_write_bytes(folder / MODEL_FILE, _json_bytes(document))
    _remove_stale_heads(folder, {heads["category"], *(tag["file"] for tag in tags)})
    return folder / MODEL_FILE


def _remove_stale_heads(folder: Path, keep: set[str]) -> None:
    # A folder retrained with another head kind or other tags would otherwise keep files nothing reads.
    for path in [*folder.glob("category.*"), *folder.glob("tag-*")]:
        if path.name not in keep and (path.suffix == ".npz" or path.name.endswith(".lgb.txt")):
            path.unlink()


def load_model(model_dir: str | Path = DEFAULT_MODEL_DIR) -> TaggerModel:
    """Read a model folder written by :func:`save_model`."""
    folder = Path(model_dir)
    path = folder / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"no model at {folder} ({MODEL_FILE} missing); train one with `classify train`")
    document = json.loads(path.read_text())
    if document.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format version {document.get('format_version')}, expected {FORMAT_VERSION}")
    category = document["category"]
    category_head = CategoryScorer(category["classes"], _load_scores(folder, category["file"]),
                                   float(category["temperature"]))
    tags = {tag["name"]: TagScorer(tag["name"], _load_scores(folder, tag["file"]), float(tag["threshold"]),
                                   _columns(tag.get("columns")))
            for tag in document["tags"]}
    timing_path = folder / TRAINING_FILE
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    return TaggerModel(category_head, tags, document["encoder"], document.get("training", {}), timing)


def _columns(ranges: list | None) -> tuple[tuple[int, int], ...] | None:
    return None if ranges is None else tuple((int(start), int(stop)) for start, stop in ranges)


def slug(name: str) -> str:
    """A file-name-safe form of a tag name ("polka dot" -> "polka-dot")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-").lower() or "tag"


def _save_scores(folder: Path, stem: str, scores: LinearScores | LightGBMScores) -> str:
    if isinstance(scores, LinearScores):
        name = f"{stem}.npz"
        atomic_write_bytes(folder / name, npz_bytes(scores.arrays()))
    else:
        name = f"{stem}.lgb.txt"
        atomic_write_bytes(folder / name, scores.model_text.encode())
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
