"""Prediction: category top-2 and pattern tags from embeddings, from a cache, or from images.

    tagger = Tagger.load()                       # the default model (vinted_tagger's model folder)
    tagger.predict_vectors(vectors)              # DataFrame: category1, category2, <tags...>
    tagger.predict_images([jpeg_bytes, ...])     # list of dicts (or {"error": ...} for a failed image)
    predict_cache(tagger, "CACHE", ids)          # (DataFrame with uuid first, uuids without embedding)
    predict_cache_to(tagger, "CACHE", "out.parquet", ids)  # the same, streamed part by part into row groups

``Tagger`` is THE model object of prediction, for ``classify predict`` and for the service alike: the heads,
the model's own image encoder, the identity checks between them, and the decisions. Only numpy is needed for
logistic heads (plus lightgbm for LightGBM heads, onnxruntime or openvino for images); never torch.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from classifiers.artifacts import default_model_dir, load_model, model_id
from classifiers.metrics import top_k
from classifiers.model import TaggerModel
from embed.cache import cache_runtimes, iter_batches, read_manifest, vectors_of
from embed.encoders import check_same_encoder
from embed.variants import check_same_decisions, variant_of
from vinted_tagger.files import atomic_path


class Tagger:
    """A trained model ready to predict. Its image encoder is loaded once (``load_encoder``, or on first use
    of ``predict_images``) from the ONNX file its recorded encoder identity names, as a pool of one or more
    runtime sessions (embed.sessions.EncoderPool): each caller borrows a session of its own."""

    def __init__(self, model: TaggerModel, model_dir: str | Path | None = None):
        self.model = model
        self.model_dir = None if model_dir is None else Path(model_dir)
        self._pool = None  # embed.sessions.EncoderPool, made on first use (only image prediction imports it)
        self._pool_lock = threading.Lock()

    @property
    def sessions(self) -> int:
        """Encoder sessions loaded."""
        return 0 if self._pool is None else self._pool.sessions

    @classmethod
    def load(cls, model_dir: str | Path | None = None) -> Tagger:
        folder = default_model_dir() if model_dir is None else Path(model_dir)
        tagger = cls(load_model(folder), folder)
        tagger.model_id  # noqa: B018 - read now, beside the files just loaded (cached: the id of what was loaded)
        return tagger

    @functools.cached_property
    def model_id(self) -> str | None:
        """The short id of the model folder this tagger was loaded from (None for a model in memory), read once:
        the id of what was loaded, whatever the folder holds later."""
        return None if self.model_dir is None else model_id(self.model_dir)

    @property
    def classes(self) -> list[str]:
        return self.model.classes

    @property
    def tags(self) -> list[str]:
        return self.model.tag_names

    @property
    def encoder_spec(self) -> dict:
        return self.model.encoder

    @property
    def runtime(self) -> dict:
        """The runtime record of the embeddings the heads were trained on (embed.runtime.Encoder.record)."""
        return self.model.info.get("runtime", {})

    def scores(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(category probabilities (n, C) in ``classes`` order, tag probabilities (n, T) in ``tags`` order)."""
        return self.model.scores(vectors)

    def predict_vectors(self, vectors: np.ndarray) -> pd.DataFrame:
        """The assignment's columns: category1, category2, then one 0/1 int64 column per tag."""
        category, tags = self.scores(vectors)
        return self.table(category, tags)

    def table(self, category: np.ndarray, tags: np.ndarray) -> pd.DataFrame:
        """Scores -> the assignment's columns (top-2 category names, 0/1 tags at their thresholds)."""
        top = top_two(category)
        classes = np.asarray(self.classes, dtype=object)
        frame = pd.DataFrame({"category1": classes[top[:, 0]], "category2": classes[top[:, 1]]})
        present = tags >= self.model.thresholds()
        for j, name in enumerate(self.tags):
            frame[name] = present[:, j].astype(np.int64)
        return frame

    def predict_images(self, images: Sequence[bytes | object]) -> list[dict]:
        """One dict per image; an image that cannot be read gives {"error": reason}, never a guess."""
        with self._session() as encoder:
            vectors, errors = encoder.embed_images(list(images))
        ok = [i for i, error in enumerate(errors) if error is None and np.isfinite(vectors[i]).all()]
        results: list[dict] = [{"error": errors[i] or "the encoder returned no embedding"} for i in range(len(images))]
        if ok:
            category, tags = self.scores(vectors[ok])
            for row, i in enumerate(ok):
                results[i] = self.describe(category[row], tags[row])
        return results

    def describe(self, category: np.ndarray, tags: np.ndarray) -> dict:
        """One image's scores -> top-2, every class by probability, and each tag's score/threshold/decision."""
        order = top_k(category)
        thresholds = self.model.thresholds()
        return {
            "category1": self.classes[order[0]],
            "category2": self.classes[order[1]],
            "categories": {self.classes[j]: float(category[j]) for j in order},
            "tags": {name: {"score": float(tags[j]), "threshold": float(thresholds[j]),
                            "present": bool(tags[j] >= thresholds[j])} for j, name in enumerate(self.tags)},
        }

    # --- the image encoder -----------------------------------------------------------------------------

    def load_encoder(self, runtime: str = "auto", precision: str = "auto", sessions: int = 1,
                     threads: int | None = None, batches: tuple[int, ...] = (1, 16)):
        """The model's image encoder (embed.runtime.Encoder), loaded once: ``sessions`` sessions of the variant
        ``runtime``/``precision`` name (auto: the fastest here interchangeable with the heads' own), compiled
        for the batch sizes ``batches``. Loaded from the exported ONNX file the model's recorded encoder
        identity names, never by the encoder's name and never exported here: no torch, timm or open_clip
        import. Later calls return the loaded encoder whatever their options."""
        with self._pool_lock:
            if self._pool is None:
                from embed.sessions import EncoderPool  # onnxruntime: only image prediction pays for it

                self._pool = EncoderPool()
        return self._pool.load(self.encoder_spec, runtime, precision, sessions, threads, batches, self.runtime)

    def check_encoder(self) -> None:
        """Raise now if the model's encoder is not built here (or its file is damaged), without loading it."""
        from embed.encoders import EncoderSpec
        from embed.runtime import ensure_onnx

        ensure_onnx(EncoderSpec.from_dict(self.encoder_spec), export=False)

    def encoder(self):
        """The model's image encoder (for its spec, variant and decoding), loaded with defaults if not yet."""
        first = None if self._pool is None else self._pool.first
        return first if first is not None else self.load_encoder()

    @property
    def ran(self) -> dict | None:
        """The runtime record of the encoder that runs (None before it is loaded): its variant, precision..."""
        first = None if self._pool is None else self._pool.first
        return None if first is None else first.record

    def pixels(self, image: bytes) -> np.ndarray:
        """One encoded image -> the encoder's input; raises embed.images.ImageError."""
        return self.encoder().pixels(image)

    def score_pixels(self, pixels: np.ndarray, lane: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (n, S, S, 3) -> (category probabilities, tag scores) as float64, on a session of its own, or
        on one lane of the first session (embed.runtime.Encoder.encode_on: lanes run at once)."""
        if lane is not None:
            vectors = self.encoder().encode_on(lane, pixels)
        else:
            with self._session() as encoder:
                vectors = encoder.encode(pixels)
        proba, tags = self.scores(vectors)
        return np.asarray(proba, np.float64), np.asarray(tags, np.float64)

    @contextlib.contextmanager
    def _session(self):
        """An encoder session to use alone (the encoder loaded with defaults if not yet)."""
        self.encoder()
        with self._pool.borrow() as encoder:
            yield encoder

    def warm(self) -> None:
        """Every compiled shape of every session once, and the heads: buffers are allocated now, not on the
        first request."""
        size = self.encoder().spec.input_size
        with self._pool.borrow_all() as encoders:
            for encoder in encoders:
                encoder.warm()
                self.scores(encoder.encode(np.zeros((1, size, size, 3), np.uint8)))


def top_two(proba: np.ndarray) -> np.ndarray:
    """Column indices of the two most likely classes per row (ties: the earlier class first)."""
    return top_k(proba, 2)


BATCH_ROWS = 4096  # cache rows scored at a time: memory stays flat whatever the cache's size
READERS = 2  # parts decoded at once, in threads, while this thread scores: reading is the bottleneck


def predict_cache(tagger: Tagger, cache_folder: str | Path, ids: Sequence[str] | None = None,
                  with_scores: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Predictions for ``ids`` (default: every uuid of the cache), in that order, with ``uuid`` first.

    Returns (predictions, uuids without an embedding); those uuids are left out of the predictions.
    A cache made by another encoder than the model's raises EncoderMismatch.
    """
    missing: list[str] = []
    frames = list(iter_predictions(tagger, cache_folder, ids, with_scores, missing))
    return pd.concat(frames, ignore_index=True), missing


def predict_cache_to(tagger: Tagger, cache_folder: str | Path, out: str | Path, ids: Sequence[str] | None = None,
                     with_scores: bool = False) -> tuple[int, list[str]]:
    """``predict_cache`` written to the Parquet file ``out`` one row group per batch (atomically): without
    ``ids`` memory holds one batch of embeddings; with ``ids`` also their predictions, to keep ids' order.
    Returns (rows written, uuids without an embedding)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    missing: list[str] = []
    rows = 0
    ran = cache_runtimes(read_manifest(Path(cache_folder)))
    schema = _schema(tagger, with_scores).with_metadata(ran_metadata(tagger, ran))
    with atomic_path(out) as temp, pq.ParquetWriter(temp, schema) as writer:
        if ids is None:  # cache order: the uuids stay Arrow strings from the part to the output
            decisions = pa.schema([field for field in schema if field.name != "uuid"])
            for uuids, frame in _scored_batches(tagger, cache_folder, None, with_scores, missing):
                table = pa.Table.from_pandas(frame, schema=decisions, preserve_index=False)
                writer.write_table(table.add_column(0, schema.field("uuid"), uuids))
                rows += len(frame)
        else:
            for frame in iter_predictions(tagger, cache_folder, ids, with_scores, missing):
                writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
                rows += len(frame)
    return rows, missing


def iter_predictions(tagger: Tagger, cache_folder: str | Path, ids: Sequence[str] | None, with_scores: bool,
                     missing: list[str]) -> Iterator[pd.DataFrame]:
    """Prediction frames batch by batch (in cache order, or in ``ids`` order as one frame at the end);
    appends to ``missing`` the uuids without a usable embedding."""
    wanted = None if ids is None else [str(u) for u in ids]
    done: list[pd.DataFrame] = []
    for uuids, frame in _scored_batches(tagger, cache_folder, wanted, with_scores, missing):
        frame.insert(0, "uuid", pd.Series(uuids.to_pylist(), dtype=object))
        if wanted is None:
            yield frame
        else:
            done.append(frame)
    if wanted is not None:
        dim = tagger.encoder_spec["dim"]
        frame = pd.concat([_frame(tagger, np.array([], dtype=object), np.zeros((0, dim), np.float32), with_scores),
                           *done], ignore_index=True)
        order = {u: i for i, u in enumerate(frame["uuid"])}
        missing[:] = [u for u in wanted if u not in order]  # NaN rows are not in ``order`` either
        yield frame.iloc[[order[u] for u in wanted if u in order]].reset_index(drop=True)


def _scored_batches(tagger: Tagger, cache_folder: str | Path, wanted: list[str] | None, with_scores: bool,
                    missing: list[str]) -> Iterator[tuple[object, pd.DataFrame]]:
    """(uuids as an Arrow array, their decisions without the uuid column), about ``BATCH_ROWS`` rows at a
    time in cache order; appends to ``missing`` the uuids whose embedding is not finite."""
    import pyarrow as pa

    manifest = read_manifest(Path(cache_folder))
    check_same_encoder(tagger.encoder_spec, manifest["encoder"], f"cache {cache_folder}")
    for record in cache_runtimes(manifest):
        check_same_decisions(tagger.runtime, record, f"cache {cache_folder}")
    dim = manifest["encoder"]["dim"]
    batches = iter_batches(cache_folder, ["uuid", "embedding"], wanted, BATCH_ROWS, readers=READERS)
    for group in _gathered(batches, BATCH_ROWS):
        uuids, category, tags = [], [], []
        for batch in group:  # each batch scored where it lies (no copy of its vectors), decided together
            names, vectors = batch.column("uuid"), vectors_of(batch, dim)
            # NaN rows would be a failed embedding written by mistake: report them as missing, predict nothing.
            # (A row's sum is finite only when all its values are: one pass, no (rows, dim) mask.)
            finite = np.isfinite(vectors.sum(axis=1))
            if not finite.all():
                missing.extend(names.filter(pa.array(~finite)).to_pylist())
                names, vectors = names.filter(pa.array(finite)), vectors[finite]
            scores = _scores(tagger, vectors)
            uuids.append(names)
            category.append(scores[0])
            tags.append(scores[1])
        yield (pa.chunked_array(uuids, type=pa.string()),
               _decisions(tagger, np.concatenate(category), np.concatenate(tags), with_scores))


def _gathered(batches: Iterator, rows: int) -> Iterator[list]:
    """The record batches re-cut into groups of exactly ``rows`` rows (the last one: what is left), without
    copying: deciding and writing cost a fixed amount per call, which parts of 1,024 rows would pay four
    times as often as batches of 4,096."""
    held, count = [], 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - count, batch.num_rows)
            held.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == rows:
                yield held
                held, count = [], 0
    if held:
        yield held


def _scores(tagger: Tagger, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(vectors):
        return tagger.scores(vectors)
    return np.zeros((0, len(tagger.classes))), np.zeros((0, len(tagger.tags)))


def _decisions(tagger: Tagger, category: np.ndarray, tags: np.ndarray, with_scores: bool) -> pd.DataFrame:
    frame = tagger.table(category, tags)
    return pd.concat([frame, score_columns(tagger, category, tags)], axis=1) if with_scores else frame


def _frame(tagger: Tagger, uuids: np.ndarray, vectors: np.ndarray, with_scores: bool) -> pd.DataFrame:
    """Decisions (and scores) for ``vectors``, with their ``uuids`` first."""
    frame = _decisions(tagger, *_scores(tagger, vectors), with_scores)
    frame.insert(0, "uuid", pd.Series(list(uuids), dtype=object))
    return frame


def _schema(tagger: Tagger, with_scores: bool):
    import pyarrow as pa

    empty = _frame(tagger, np.array([], dtype=object), np.zeros((0, 1), np.float32), with_scores)
    fields = [pa.field(name, pa.string() if name in ("uuid", "category1", "category2") else
                       (pa.int64() if name in tagger.tags else pa.float64())) for name in empty.columns]
    return pa.schema(fields)


RAN_KEY = b"vinted_tagger.encoder"  # the predictions file's metadata key: which encoder variant ran


def ran_metadata(tagger: Tagger, ran: list[dict]) -> dict[bytes, bytes]:
    """A predictions file's metadata: the variant the model's heads were trained on and the runtime records
    of the encoder variants that made the embeddings predicted from (embed.runtime.Encoder.record)."""
    record = {"encoder": tagger.encoder_spec.get("name"), "model_variant": variant_of(tagger.runtime), "ran": ran}
    return {RAN_KEY: json.dumps(record, sort_keys=True).encode()}


def score_columns(tagger: Tagger, category: np.ndarray, tags: np.ndarray) -> pd.DataFrame:
    """``p_<class>`` per class and ``score_<tag>`` per tag."""
    columns = {f"p_{name}": category[:, j] for j, name in enumerate(tagger.classes)}
    columns.update({f"score_{name}": tags[:, j] for j, name in enumerate(tagger.tags)})
    return pd.DataFrame(columns)
