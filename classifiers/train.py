"""Train every head of a tagger from a label table and an embedding cache.

    model = train("data.parquet", "CACHE", head="logreg")
    save_model(model, "artifacts/model")

The categories are whatever strings ``cc3`` holds; the tags are declared (``tags``, default the assignment's
three) and each must be a column of 0, 1 or null.
Each head trains only on the rows where its label is known. Rows whose uuid has no embedding are dropped
with a warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import platform
import sys
import time
import warnings
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from classifiers import heads as heads_module
from classifiers.heads import check_head_kind, fit_category_head, fit_tag_head, fit_temperature
from classifiers.labels import category_values, fingerprint, groups_of, read_labels, tag_columns, tag_values
from classifiers.metrics import best_f1_threshold, log_loss, top_k_accuracy
from classifiers.model import FORMAT_VERSION, TaggerModel
from classifiers.scorers import CategoryScorer, TagScorer, column_index
from embed.cache import Embeddings, read_cache
from embed.encoders import role_columns
from embed.variants import REFERENCE_VARIANT

TAG_ROLES = ("texture",)  # roles (embed.encoders.ROLES) of the embedding parts the tag heads read


def train(data: pd.DataFrame | str | Path, cache: Embeddings | str | Path, head: str = "logreg",
          seed: int = heads_module.SEED, n_jobs: int = 2, tags: list[str] | None = None,
          calibrate_on: Collection[str] | None = None, progress: bool = False) -> TaggerModel:
    """Train the category head and one head per declared tag; ``head`` is logreg, lightgbm or auto.

    ``progress``: a progress bar on stderr, one step per fold and all-rows fit of every candidate head.

    ``calibrate_on``: uuids of held-out rows (e.g. the groups a fine-tuned encoder never trained on). They
    are left out of the fit, and the temperature and thresholds are tuned on them instead of out of fold:
    the encoder has seen the other rows' labels, so their out-of-fold scores are optimistic.
    """
    check_head_kind(head)
    started = time.perf_counter()
    labels = read_labels(data)
    tag_names = tag_columns(labels, tags)  # before reading the cache: a wrong tag column fails at once
    category_values(labels)
    # Only the labelled rows are read from a cache folder (a filtered scan), not the whole cache.
    embeddings = cache if isinstance(cache, Embeddings) else read_cache(cache, uuids=labels["uuid"].astype(str))
    labels, vectors = _join(labels, embeddings)
    held_labels = held_vectors = None
    if calibrate_on is not None:
        held = labels["uuid"].astype(str).isin(set(map(str, calibrate_on))).to_numpy()
        if not held.any() or held.all():
            raise ValueError(f"calibrate_on must name some but not all labelled rows; it names {int(held.sum())}")
        held_labels, held_vectors = labels[held].reset_index(drop=True), vectors[held]
        labels, vectors = labels[~held].reset_index(drop=True), vectors[~held]
    groups = groups_of(labels)
    info: dict = {"format_version": FORMAT_VERSION, "head": head, "seed": seed, "group_aware_cv": groups is not None,
                  "rows": {"labelled": len(labels)}, "versions": library_versions(), "tags": {},
                  "protocol": {"calibration": "out-of-fold"}}
    timing: dict = {}

    with search_progress(head, ["category", *tag_names], progress) as show:
        head_started = time.perf_counter()
        show("category")
        category, info["category"] = _train_category(labels, vectors, groups, head, seed, n_jobs)
        timing["category_seconds"] = _seconds_since(head_started)
        tags = {}
        texture = texture_columns(embeddings.encoder, vectors.shape[1])
        for name in tag_names:
            head_started = time.perf_counter()
            show(f"tag {name!r}")
            tags[name], info["tags"][name] = _train_tag(name, labels, vectors, texture, groups, head, seed, n_jobs)
            timing[f"tag_seconds/{name}"] = _seconds_since(head_started)
    if held_labels is not None:
        category, tags = _calibrate(category, tags, held_labels, held_vectors, info)
    info["data_fingerprint"] = fingerprint(labels, list(tags))
    # What made the embeddings (runtime, precision, decoder): prediction refuses embeddings whose decisions
    # are not measured to match (embed.variants). An old cache without it ran ONNX Runtime fp32.
    info["runtime"] = embeddings.manifest.get("runtime", {"variant": REFERENCE_VARIANT})
    timing["total_seconds"] = _seconds_since(started)
    return TaggerModel(category, tags, dict(embeddings.encoder), info, timing)


@contextlib.contextmanager
def search_progress(head: str, heads: list[str], enabled: bool):
    """A tqdm bar over every fit of the search: per head, each candidate kind's folds and its all-rows fit.
    Yields ``show(head_name)``, to call as each head starts."""
    kinds = heads_module.HEAD_KINDS[:2] if head == "auto" else (head,)
    steps = len(heads) * len(kinds) * (heads_module.N_SPLITS + 1)
    with tqdm(total=steps, desc="head search", unit="fit", disable=not enabled, file=sys.stderr,
              mininterval=0.5 if sys.stderr.isatty() else 10.0) as bar:
        current = {"head": ""}

        def on_fit(kind: str) -> None:
            bar.set_postfix_str(f"{current['head']}: {kind}", refresh=False)
            bar.update()

        def show(name: str) -> None:
            current["head"] = name
            bar.set_postfix_str(name)

        with heads_module.fold_progress(on_fit):
            yield show


def _calibrate(category: CategoryScorer, tags: dict, labels: pd.DataFrame, vectors: np.ndarray, info: dict):
    """Temperature and thresholds tuned on held-out rows (their scores replace the out-of-fold ones)."""
    uuids = sorted(labels["uuid"].astype(str))
    info["protocol"] = {"calibration": "held-out", "heldout_rows": len(labels),
                        "heldout_uuids_sha256": hashlib.sha256("\n".join(uuids).encode()).hexdigest()}
    names = category_values(labels)
    known = names.isin(category.classes).to_numpy()
    if known.any():
        y = np.array([category.classes.index(c) for c in names[known]])
        logits = np.asarray(category.scores.raw(vectors[known]), dtype=np.float64)
        temperature = fit_temperature(logits, y)
        category = dataclasses.replace(category, temperature=temperature)
        proba = category.proba(vectors[known])
        info["category"]["heldout"] = {"rows": int(known.sum()), "temperature": temperature,
                                       "top1": top_k_accuracy(proba, y, 1), "top2": top_k_accuracy(proba, y, 2),
                                       "logloss": log_loss(proba, y)}
    for name, scorer in list(tags.items()):
        y = tag_values(labels, name)
        ok = ~np.isnan(y)
        if ok.any() and 0 < y[ok].sum() < ok.sum():
            best = best_f1_threshold(y[ok].astype(int), scorer.proba(vectors[ok]))
            tags[name] = dataclasses.replace(scorer, threshold=best["threshold"])
            info["tags"][name]["threshold"] = best["threshold"]
            info["tags"][name]["heldout"] = {"rows": int(ok.sum()), **best}
    return category, tags


def _join(labels: pd.DataFrame, embeddings: Embeddings) -> tuple[pd.DataFrame, np.ndarray]:
    """Label rows that have an embedding, and their vectors; the others are reported and dropped."""
    vectors, found = embeddings.take(labels["uuid"].astype(str).tolist())
    missing = int((~found).sum())
    if missing:
        examples = ", ".join(labels["uuid"][~found].astype(str).head(3))
        warnings.warn(f"{missing} of {len(labels)} labelled rows have no embedding in the cache and are "
                      f"left out of training (e.g. {examples})", stacklevel=3)
    if not found.any():
        raise ValueError("no labelled row has an embedding in the cache; was it built from these images?")
    return labels[found].reset_index(drop=True), vectors


def _train_category(labels, vectors, groups, head, seed, n_jobs) -> tuple[CategoryScorer, dict]:
    category = category_values(labels)
    known = category.notna().to_numpy()  # a null category is unknown: not a class of its own
    fitted, choice = fit_category_head(head, vectors[known], category[known].to_numpy(),
                                       None if groups is None else groups[known], seed, n_jobs)
    counts = category[known].value_counts().sort_index()
    record = {"rows": int(known.sum()), "classes": list(fitted.classes_),
              "class_counts": {str(k): int(v) for k, v in counts.items()}, **_record(fitted, choice)}
    return fitted.scorer_, record


def _train_tag(name, labels, vectors, columns, groups, head, seed, n_jobs) -> tuple[TagScorer, dict]:
    fitted, choice, y = fit_tag(name, labels, vectors, columns, groups, head, seed, n_jobs)
    record = {"rows": len(y), "positives": int(y.sum()), "threshold": fitted.threshold_,
              "features": vectors.shape[1] if columns is None else len(column_index(columns)), **_record(fitted, choice)}
    return fitted.scorer_, record


def fit_tag(name, labels, vectors, columns, groups, head="logreg", seed=heads_module.SEED, n_jobs=2) -> tuple:
    """One tag head on the rows where its label is known, reading the given columns, as ``train`` fits it.

    Returns (fitted head, why this kind, its labels); the head takes whole embeddings (it selects its
    columns) and keeps its out-of-fold scores (``oof_``), which its threshold (``threshold_``) was chosen on:
    what the notebook's threshold curves plot."""
    y = tag_values(labels, name)
    known = ~np.isnan(y)  # unknown is not absent: those rows are left out of this head
    fitted, choice = fit_tag_head(head, name, vectors[known], y[known], None if groups is None else groups[known],
                                  seed, n_jobs, columns)
    return fitted, choice, y[known]


def texture_columns(encoder: dict, dim: int) -> tuple[tuple[int, int], ...] | None:
    """[start, stop) ranges of the parts whose role is one of ``TAG_ROLES`` in an encoder record (a cache's or a
    model's), or None (all columns) when the encoder has no such parts or nothing else.

    Tags are texture: a floral print is floral on any garment and wherever it sits. So the tag heads read
    neither the pooled head (what the object is) nor the grid (where things are): that scored higher out of
    fold on the stand-in train split, in a third of the time (bench/embedding_variants.py).
    """
    total = sum(int(width) for _, width in encoder.get("parts") or ())
    if total and total != dim:
        raise ValueError(f"the encoder's parts add up to {total}, the embedding has {dim} columns")
    return role_columns(encoder, TAG_ROLES)


def _record(fitted, choice: dict) -> dict:
    """CV scores, hyper-parameters and why this kind of head; folds are index arrays, so only their count."""
    params = fitted.get_params()
    params.pop("columns", None)  # recorded as the tag's columns (model.json tags[].columns) and its "features"
    if not isinstance(params.get("cv"), int):
        params["cv"] = len(params["cv"])
    if "Cs" in params:
        params["Cs"] = list(params["Cs"])
    return {"cv": fitted.cv_, "params": params, **choice}


def _seconds_since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


def library_versions() -> dict:
    import lightgbm
    import sklearn

    return {"python": platform.python_version(), "numpy": np.__version__, "pandas": pd.__version__,
            "scikit-learn": sklearn.__version__, "lightgbm": lightgbm.__version__}
