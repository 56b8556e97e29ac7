"""Analysis helpers for the notebook: label EDA tables, near-duplicates, embedding parts, UMAP,
calibration, threshold curves and the selection of mistakes for error analysis.

Everything here is plain pandas/numpy on labels, embeddings and scores, so the notebook stays glue and
plots, and each function is unit-tested on small hand-made inputs (tests/test_analysis.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from classifiers.labels import DEFAULT_TAGS
from classifiers.metrics import precision_recall_f1, top_k
from embed.encoders import part_slices


# ----------------------------------------------------------------------------------------------- labels
def tag_columns(frame: pd.DataFrame) -> list[str]:
    """The assignment's tag columns present in ``frame``, in their usual order."""
    return [t for t in DEFAULT_TAGS if t in frame.columns]


def category_balance(frame: pd.DataFrame, column: str = "cc3") -> pd.DataFrame:
    """Count, share and the 'balanced' class weight (n / (k * count)) of each class; nulls left out."""
    counts = frame[column].dropna().value_counts()
    table = pd.DataFrame({"count": counts, "share": counts / counts.sum()})
    table["balanced_weight"] = counts.sum() / (len(counts) * counts)
    table.index.name = column
    return table


def tag_prevalence(frame: pd.DataFrame, tags: Sequence[str] | None = None) -> pd.DataFrame:
    """Per tag: rows where it is known, positives, prevalence, and two reference F1 scores.

    ``f1_all_positive`` is the F1 of answering 1 for every image (2p / (1 + p)) and ``f1_random`` the
    expected F1 of answering 1 at random with the tag's own rate (= p): the floors a tag head must beat.
    """
    tags = list(tags or tag_columns(frame))
    rows = []
    for tag in tags:
        known = frame[tag].dropna()
        positives = int((known == 1).sum())
        p = positives / len(known) if len(known) else np.nan
        rows.append({"tag": tag, "known": len(known), "positives": positives, "prevalence": p,
                     "f1_all_positive": 2 * p / (1 + p) if len(known) else np.nan, "f1_random": p})
    return pd.DataFrame(rows).set_index("tag")


def tags_per_item(frame: pd.DataFrame, tags: Sequence[str] | None = None) -> pd.DataFrame:
    """How many rows carry 0, 1, 2... tags, among rows where every tag is known."""
    tags = list(tags or tag_columns(frame))
    known = frame[tags].dropna()
    counts = known.sum(axis=1).astype(int).value_counts().sort_index()
    table = pd.DataFrame({"rows": counts, "share": counts / max(len(known), 1)})
    table.index.name = "tags on the item"
    return table


def tag_cooccurrence(frame: pd.DataFrame, tags: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows that carry both tags (diagonal: rows with the tag), among rows where both are known."""
    tags = list(tags or tag_columns(frame))
    table = pd.DataFrame(0, index=tags, columns=tags, dtype=int)
    for a in tags:
        for b in tags:
            both = frame[list(dict.fromkeys([a, b]))].dropna()
            table.loc[a, b] = int(((both[a] == 1) & (both[b] == 1)).sum())
    return table


def tag_by_category(frame: pd.DataFrame, tags: Sequence[str] | None = None, column: str = "cc3") -> pd.DataFrame:
    """Share of each category's items that carry each tag (plus 'none' and the category's row count)."""
    tags = list(tags or tag_columns(frame))
    known = frame.dropna(subset=[column, *tags])
    table = known.groupby(column)[tags].mean()
    table["none"] = (known[tags].sum(axis=1) == 0).groupby(known[column]).mean()
    table["rows"] = known.groupby(column).size()
    return table


def colour_by_category(frame: pd.DataFrame, column: str = "cc3", top: int | None = 12) -> pd.DataFrame:
    """Share of each colour within each category (rows sum to 1); rarer colours merged into 'other'."""
    known = frame.dropna(subset=[column, "color1"])
    colours = known["color1"]
    if top is not None:
        keep = colours.value_counts().index[:top]
        colours = colours.where(colours.isin(keep), "other")
    table = pd.crosstab(known[column], colours, normalize="index")
    order = [c for c in colours.value_counts().index if c != "other"] + (["other"] if "other" in table else [])
    return table[order]


def cramers_v(a: pd.Series, b: pd.Series) -> float:
    """Strength of association between two categorical columns (0 = independent, 1 = determined)."""
    table = pd.crosstab(a, b).to_numpy(dtype=float)
    if table.size == 0 or min(table.shape) < 2:
        return 0.0
    n = table.sum()
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / n
    chi2 = ((table - expected) ** 2 / expected).sum()
    return float(np.sqrt(chi2 / (n * (min(table.shape) - 1))))


def group_sizes(frame: pd.DataFrame, group: str = "group", by: str | None = "source") -> pd.DataFrame:
    """Per source: number of groups and the distribution of images per group."""
    if group not in frame:
        return pd.DataFrame()
    sizes = frame.groupby([by, group] if by and by in frame else [group]).size().rename("images")
    if by and by in frame:
        grouped = sizes.groupby(level=0)
        table = grouped.describe(percentiles=[0.5, 0.9])[["count", "mean", "50%", "90%", "max"]]
        table.columns = ["groups", "mean images", "median", "p90", "largest"]
        table["share in largest 10%"] = grouped.apply(_top_decile_share)
        return table
    return sizes.describe().to_frame().T


def _top_decile_share(sizes: pd.Series) -> float:
    ordered = np.sort(sizes.to_numpy())[::-1]
    return float(ordered[: max(1, len(ordered) // 10)].sum() / ordered.sum())


def split_overlap(train: pd.DataFrame, test: pd.DataFrame, key: str = "group") -> dict:
    """How many values of ``key`` (e.g. uploader groups) appear on both sides of a split."""
    if key not in train or key not in test:
        return {"key": key, "train": 0, "test": 0, "shared": 0}
    a, b = set(train[key].dropna()), set(test[key].dropna())
    return {"key": key, "train": len(a), "test": len(b), "shared": len(a & b)}


# ------------------------------------------------------------------------------------------- embeddings
def embedding_parts(encoder: dict) -> dict[str, slice]:
    """Column slices of an embedding by part name (``head``, ``mean3``, ``grid5``...), from the encoder record
    of its cache's manifest (``Embeddings.encoder``) or model."""
    return part_slices(encoder.get("parts") or ())


def select_parts(vectors: np.ndarray, names: Iterable[str], parts: dict[str, slice]) -> np.ndarray:
    """The chosen parts of each embedding, concatenated and rescaled to unit norm (as the full one is)."""
    chosen = np.concatenate([vectors[:, parts[n]] for n in names], axis=1)
    return unit_rows(chosen)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def near_duplicates(uuids: Sequence[str], vectors: np.ndarray, threshold: float = 0.95, block: int = 1024) -> pd.DataFrame:
    """All pairs (a, b) with cosine similarity >= ``threshold``, most similar first.

    Exact blockwise search (n^2 / 2 dot products in float32): 9k images take about a second.
    """
    uuids = np.asarray(uuids)
    unit = unit_rows(np.asarray(vectors, dtype=np.float32))
    found_a, found_b, found_s = [], [], []
    for start in range(0, len(unit), block):
        sims = unit[start : start + block] @ unit.T
        rows, cols = np.nonzero(sims >= threshold)
        keep = cols > rows + start  # each pair once, no self-pairs
        found_a.append(rows[keep] + start)
        found_b.append(cols[keep])
        found_s.append(sims[rows[keep], cols[keep]])
    a, b, s = (np.concatenate(x) if x else np.array([]) for x in (found_a, found_b, found_s))
    pairs = pd.DataFrame({"a": uuids[a.astype(int)], "b": uuids[b.astype(int)], "cosine": s.astype(float)})
    return pairs.sort_values("cosine", ascending=False, ignore_index=True)


def nearest_similarity(vectors: np.ndarray, block: int = 1024) -> np.ndarray:
    """Each row's cosine similarity to its nearest other row (the distribution shows where duplicates start)."""
    unit = unit_rows(np.asarray(vectors, dtype=np.float32))
    best = np.empty(len(unit), np.float32)
    for start in range(0, len(unit), block):
        sims = unit[start : start + block] @ unit.T
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        best[start : start + block] = sims.max(axis=1)
    return best


def annotate_pairs(pairs: pd.DataFrame, labels: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Add ``<column>_a`` / ``<column>_b`` from ``labels`` (indexed by uuid) and whether they agree."""
    out = pairs.copy()
    for column in columns:
        values = labels[column] if column in labels else pd.Series(dtype=object)
        out[f"{column}_a"] = out["a"].map(values)
        out[f"{column}_b"] = out["b"].map(values)
        out[f"same_{column}"] = out[f"{column}_a"].eq(out[f"{column}_b"]) | (
            out[f"{column}_a"].isna() & out[f"{column}_b"].isna()
        )
    return out


def umap_2d(vectors: np.ndarray, random_state: int = 42, n_neighbors: int = 30, min_dist: float = 0.1,
            pca: int | None = 64) -> np.ndarray:
    """2-D UMAP of the embeddings (cosine metric, fixed seed so the figure is reproducible).

    A PCA to ``pca`` dimensions first makes the neighbour search 4x faster with the same picture.
    """
    import umap  # notebook extra; imported here so the rest of the module needs only numpy/pandas
    from sklearn.decomposition import PCA

    vectors = np.asarray(vectors, dtype=np.float32)
    if pca and vectors.shape[1] > pca and len(vectors) > pca:
        vectors = PCA(pca, random_state=random_state).fit_transform(vectors)
    n_neighbors = max(2, min(n_neighbors, len(vectors) - 1))
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=min_dist, metric="cosine",
                        random_state=random_state, n_jobs=1)
    return reducer.fit_transform(vectors)


def knn_label_agreement(vectors: np.ndarray, labels: Sequence, k: int = 10, block: int = 1024) -> float:
    """Share of each labelled point's k nearest neighbours (cosine) with the same label: how clustered
    the classes are in the embedding, a number to go with the UMAP picture. Null labels are ignored."""
    labels = pd.Series(list(labels))
    known = labels.notna().to_numpy()
    unit = unit_rows(np.asarray(vectors, dtype=np.float32)[known])
    values = labels[known].to_numpy()
    k = min(k, len(unit) - 1)
    if k < 1:
        return float("nan")
    agree = 0
    for start in range(0, len(unit), block):
        sims = unit[start : start + block] @ unit.T
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        nearest = np.argpartition(-sims, k, axis=1)[:, :k]
        agree += int((values[nearest] == values[start : start + block, None]).sum())
    return agree / (len(unit) * k)


def knn_cv_accuracy(vectors: np.ndarray, y: Sequence, groups: Sequence | None = None, n_splits: int = 5,
                    seed: int = 0) -> float:
    """Cross-validated 1-nearest-neighbour (cosine) accuracy; with ``groups`` no group is on both sides.

    Comparing the two shows how much a split that ignores uploaders flatters a model: a photo's nearest
    neighbour is often another photo of the same uploader, same background and light.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    unit = unit_rows(np.asarray(vectors, dtype=np.float32))
    y = np.asarray(y)
    if groups is None:
        splits = StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(unit, y)
    else:
        splits = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed).split(unit, y, np.asarray(groups))
    correct = 0
    for train, val in splits:
        nearest = np.argmax(unit[val] @ unit[train].T, axis=1)
        correct += int((y[train][nearest] == y[val]).sum())
    return correct / len(y)


# -------------------------------------------------------------------------------------------- scores
def reliability_table(proba: np.ndarray, y_index: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Reliability diagram data for the top-1 prediction: per confidence bin, mean confidence, accuracy
    and count. Empty bins are dropped."""
    proba = np.asarray(proba)
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == np.asarray(y_index)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    frame = pd.DataFrame({"bin": which, "confidence": confidence, "correct": correct})
    table = frame.groupby("bin").agg(confidence=("confidence", "mean"), accuracy=("correct", "mean"),
                                     count=("correct", "size"))
    table["low"], table["high"] = edges[table.index], edges[table.index + 1]
    return table.reset_index(drop=True)


def expected_calibration_error(proba: np.ndarray, y_index: np.ndarray, bins: int = 10) -> float:
    """ECE: the count-weighted mean gap between confidence and accuracy over the bins."""
    table = reliability_table(proba, y_index, bins)
    return float((table["count"] * (table["confidence"] - table["accuracy"]).abs()).sum() / table["count"].sum())


def threshold_curve(y: np.ndarray, scores: np.ndarray, thresholds: np.ndarray | None = None) -> pd.DataFrame:
    """Precision, recall and F1 of ``scores >= t`` for each threshold t (default 0.01 ... 0.99); NaN where
    undefined (e.g. precision above the highest score: nothing predicted)."""
    y = np.asarray(y).astype(bool)
    scores = np.asarray(scores, dtype=float)
    thresholds = np.round(np.arange(0.01, 1.0, 0.01), 2) if thresholds is None else np.asarray(thresholds)
    predicted = scores[None, :] >= thresholds[:, None]
    tp = (predicted & y).sum(axis=1)
    fp = (predicted & ~y).sum(axis=1)
    fn = (~predicted & y).sum(axis=1)
    return pd.DataFrame({"threshold": thresholds, **precision_recall_f1(tp, fp, fn)})


def confused_pairs(y_true: Sequence[str], y_pred: Sequence[str], top: int = 10) -> pd.DataFrame:
    """The most frequent (true, predicted) mistakes, with their share of the true class."""
    frame = pd.DataFrame({"true": list(y_true), "predicted": list(y_pred)})
    totals = frame["true"].value_counts()
    wrong = frame[frame["true"] != frame["predicted"]]
    table = wrong.value_counts().rename("count").reset_index()
    table["share of true class"] = table["count"] / table["true"].map(totals).astype(float)
    return table.head(top)


def worst_category_mistakes(uuids: Sequence[str], proba: np.ndarray, classes: Sequence[str],
                            y_true: Sequence[str], n: int = 12) -> pd.DataFrame:
    """Top-2 misses ranked by how confident the model was in its wrong answer (most confident first)."""
    classes = list(classes)
    proba = np.asarray(proba)
    index = {c: i for i, c in enumerate(classes)}
    truth = np.array([index.get(c, -1) for c in y_true])
    order = top_k(proba, 2)
    rows = np.arange(len(proba))
    p_true = np.where(truth >= 0, proba[rows, np.maximum(truth, 0)], np.nan)
    frame = pd.DataFrame({
        "uuid": list(uuids), "true": list(y_true),
        "category1": np.asarray(classes)[order[:, 0]], "category2": np.asarray(classes)[order[:, 1]],
        "p_category1": proba[rows, order[:, 0]], "p_true": p_true,
    })
    missed = (truth >= 0) & (order[:, 0] != truth) & (order[:, 1] != truth)
    return frame[missed].sort_values("p_category1", ascending=False).head(n).reset_index(drop=True)


def worst_tag_mistakes(uuids: Sequence[str], y: Sequence[float], scores: Sequence[float], threshold: float,
                       n: int = 8) -> pd.DataFrame:
    """The most confident false positives and the most confidently missed positives of one tag."""
    frame = pd.DataFrame({"uuid": list(uuids), "label": list(y), "score": np.asarray(scores, dtype=float)})
    frame = frame.dropna(subset=["label"])
    fp = frame[(frame["label"] == 0) & (frame["score"] >= threshold)].nlargest(n, "score").assign(kind="false positive")
    fn = frame[(frame["label"] == 1) & (frame["score"] < threshold)].nsmallest(n, "score").assign(kind="missed")
    return pd.concat([fp, fn], ignore_index=True)


def mistake_profile(stats: pd.DataFrame, mistakes: Iterable[str], scored: Iterable[str],
                    columns: Sequence[str] = ("brightness", "contrast", "saturation", "white_share", "aspect")) -> pd.DataFrame:
    """Median image statistics of the mistakes next to all scored images: what the mistakes share."""
    stats = stats.set_index("uuid") if "uuid" in stats else stats
    columns = [c for c in columns if c in stats]
    mistakes, scored = [u for u in mistakes if u in stats.index], [u for u in scored if u in stats.index]
    return pd.DataFrame({
        "mistakes (median)": stats.loc[mistakes, columns].median(),
        "all scored (median)": stats.loc[scored, columns].median(),
    })


# -------------------------------------------------------------------------------------- dataset layout
IMAGE_SOURCES = ("images.zip", "data.zip", "images", "data")


def dataset_files(folder) -> dict:
    """The files of a dataset folder in either layout: the stand-in (``images.zip``, ``test_labels.parquet``)
    or the assignment's (``data.zip``; no test labels). Missing optional files are None."""
    folder = Path(folder)
    images = next((folder / n for n in IMAGE_SOURCES if (folder / n).exists()), None)
    optional = {n: folder / f"{n}.parquet" for n in ("test", "test_labels")}
    if not (folder / "data.parquet").exists():
        raise FileNotFoundError(f"{folder} has no data.parquet; expected the assignment's layout")
    if images is None:
        raise FileNotFoundError(f"{folder} has none of {', '.join(IMAGE_SOURCES)}")
    return {"folder": folder, "images": images, "train": folder / "data.parquet",
            **{n: (p if p.exists() else None) for n, p in optional.items()}}


def combined_labels(files: dict) -> pd.DataFrame:
    """Train and (when labelled) test rows in one frame with a ``split`` column; test uuids without labels
    get a row with unknown labels; ``source`` is 'all images' when the data has no such column."""
    parts = [pd.read_parquet(files["train"]).assign(split="train")]
    if files.get("test_labels") is not None:
        parts.append(pd.read_parquet(files["test_labels"]).assign(split="test"))
    elif files.get("test") is not None:
        parts.append(pd.read_parquet(files["test"], columns=["uuid"]).assign(split="test"))
    frame = pd.concat(parts, ignore_index=True)
    if "source" not in frame:
        frame["source"] = "all images"
    for tag in DEFAULT_TAGS:
        if tag in frame:
            frame[tag] = pd.to_numeric(frame[tag], errors="coerce").astype(float)
    return frame


def tag_state(frame: pd.DataFrame, tags: Sequence[str] | None = None) -> pd.Series:
    """One word per row: the tag it carries, 'several', 'no tag', or 'unknown' when its tags are unlabelled."""
    tags = list(tags or tag_columns(frame))
    values = frame[tags]
    known = values.notna().all(axis=1)
    count = values.fillna(0).sum(axis=1)
    state = pd.Series("no tag", index=frame.index, dtype=object)
    state[count == 1] = values[count == 1].fillna(0).idxmax(axis=1)
    state[count > 1] = "several"
    state[~known] = "unknown"
    return state


# ------------------------------------------------------------------------------------- model analysis
def oof_predict(make_head, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, n_splits: int = 5,
                seed: int = 0) -> np.ndarray:
    """Out-of-fold ``predict_proba`` of a head, on the same group-aware stratified folds training uses.

    ``make_head()`` returns an unfitted head (``fit(X, y, groups)``, ``predict_proba(X)``), e.g. a
    ``classifiers.heads.TagLogReg`` with its chosen C. Each fold's head is fitted on the other folds only,
    so the scores are honest estimates of the threshold-vs-F1 curve and of calibration.
    """
    from classifiers.heads import make_folds

    y = np.asarray(y)
    strata = np.unique(y, return_inverse=True)[1]
    out = None
    for train, val in make_folds(strata, groups, n_splits, seed):
        head = make_head().fit(X[train], y[train], None if groups is None else np.asarray(groups)[train])
        scores = np.asarray(head.predict_proba(X[val]))
        if out is None:
            out = np.zeros((len(y), *scores.shape[1:]))
        out[val] = scores
    return out


def sliced_embeddings(embeddings, names: Iterable[str]):
    """A copy of a cache (``embed.cache.Embeddings``) keeping only some embedding parts, rescaled to unit
    norm, with the manifest's dim updated: train on it exactly as on a real cache (for ablations)."""
    import copy

    from embed.cache import Embeddings

    names = list(names)
    parts = embedding_parts(embeddings.encoder)
    vectors = select_parts(embeddings.vectors, names, parts)
    manifest = copy.deepcopy(embeddings.manifest)
    manifest["encoder"]["dim"] = vectors.shape[1]
    sizes = {name: part.stop - part.start for name, part in parts.items()}
    manifest["encoder"]["parts"] = [[name, sizes[name]] for name in names]
    manifest["encoder"]["pooling"] = f"ablation: {' + '.join(names)}"
    return Embeddings(manifest, embeddings.uuids, vectors)


def deployed_tag_oof(data, embeddings, head: str = "logreg",
                     tags: list[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Per tag: (labels, out-of-fold scores, threshold) of the tag head exactly as ``classify train`` fits it
    (same rows, the texture columns it reads, same folds and C grid): the scores its threshold was chosen on."""
    from classifiers.labels import groups_of, read_labels, tag_columns as label_tags
    from classifiers.train import fit_tag, texture_columns

    labels = read_labels(data)
    vectors, found = embeddings.take(labels["uuid"].astype(str).tolist())
    labels, vectors = labels[found].reset_index(drop=True), vectors[found]
    columns = texture_columns(embeddings.encoder, vectors.shape[1])
    out = {}
    for tag in label_tags(labels, tags):
        fitted, _, y = fit_tag(tag, labels, vectors, columns, groups_of(labels), head)
        out[tag] = (y, np.asarray(fitted.oof_), float(fitted.threshold_))
    return out


def group_subsets(labels: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """The rows of a random ``fraction`` of the uploader groups (every row its own group without ``group``)."""
    from classifiers.labels import groups_of

    groups = groups_of(labels)
    groups = np.arange(len(labels)).astype(str) if groups is None else groups
    unique = np.unique(groups)
    keep = np.random.default_rng(seed).choice(unique, size=max(1, round(fraction * len(unique))), replace=False)
    return labels[np.isin(groups, keep)].reset_index(drop=True)


def learning_curve(data: pd.DataFrame, embeddings, test_labels: pd.DataFrame | None, fractions=(0.25, 0.5, 1.0),
                   seeds=(0, 1), head: str = "logreg") -> pd.DataFrame:
    """Heads trained (by ``classifiers.train``) on a share of the training groups, scored out of fold and on
    the test split; one row per (fraction, seed); the whole set is trained once."""
    import warnings

    from classifiers.evaluate import evaluate
    from classifiers.predict import Tagger
    from classifiers.train import train

    rows = []
    for fraction in fractions:
        for seed in (seeds if fraction < 1 else seeds[:1]):
            subset = group_subsets(data, fraction, seed) if fraction < 1 else data
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # rare classes with fewer rows than folds, expected here
                model = train(subset, embeddings, head=head)
            row = {"fraction": fraction, "seed": seed, "images": len(subset),
                   "CV top-1": model.info["category"]["cv"]["top1"],
                   "CV macro tag F1": float(np.mean([t["cv"]["f1"] for t in model.info["tags"].values()]))}
            if test_labels is not None:
                vectors, found = embeddings.take(test_labels["uuid"].astype(str).tolist())
                predicted = Tagger(model).predict_vectors(vectors[found]).assign(
                    uuid=test_labels["uuid"][found].to_numpy())
                result = evaluate(predicted, test_labels)
                row.update({"test top-1": result["category"]["top1"], "test top-2": result["category"]["top2"],
                            "test macro tag F1": result["tags_macro"]["f1"]})
            rows.append(row)
    return pd.DataFrame(rows)


# Garment families of the stand-in's 17 classes: a grouping a reader can tell apart in one picture.
GARMENT_FAMILY = {
    **dict.fromkeys(["T-Shirt", "Longsleeve", "Polo", "Undershirt", "Top", "Blouse", "Shirt", "Body"], "tops"),
    **dict.fromkeys(["Outwear", "Blazer", "Hoodie"], "outerwear"),
    **dict.fromkeys(["Dress", "Skirt"], "dresses & skirts"),
    **dict.fromkeys(["Pants", "Shorts"], "trousers & shorts"),
    **dict.fromkeys(["Shoes", "Hat"], "shoes & hats"),
}


def garment_family(categories: pd.Series, unknown: str = "(no category label)") -> pd.Series:
    """The family of each category; a class outside the table (e.g. the assignment's) stands for itself."""
    return categories.map(lambda c: unknown if pd.isna(c) else GARMENT_FAMILY.get(c, c))


def predicted_tags_without_labels(scored: pd.DataFrame, labels: pd.DataFrame, tags: Sequence[str]) -> pd.DataFrame:
    """Rows whose tags are unlabelled (e.g. the flat-lay photos) with their predicted tags and scores."""
    unlabelled = labels.loc[labels[list(tags)].isna().all(axis=1), "uuid"]
    return scored[scored["uuid"].isin(set(unlabelled))].reset_index(drop=True)


# --------------------------------------------------------------------------------------- CV against test
def cv_against_test(info: dict, result: dict, intervals: dict) -> pd.DataFrame:
    """Per score: the out-of-fold estimate on the training split (``model.json``'s ``training``), the test score
    and its bootstrap interval, and whether the estimate falls inside that interval: where CV is optimistic."""
    rows = []
    for key, label in (("top1", "top-1"), ("top2", "top-2")):
        rows.append((f"category {label}", info["category"]["cv"].get(key), result["category"][key],
                     intervals["category"].get(key)))
    for tag, record in info.get("tags", {}).items():
        for key in ("precision", "recall", "f1"):
            rows.append((f"{tag} {key}", record["cv"].get(key), result["tags"][tag][key],
                         intervals["tags"].get(tag, {}).get(key)))
    table = pd.DataFrame([(name, cv, test) for name, cv, test, _ in rows],
                         columns=["score", "CV (training split)", "test"]).set_index("score")
    table["test 95% low"] = [pair[0] if pair else np.nan for *_, pair in rows]
    table["test 95% high"] = [pair[1] if pair else np.nan for *_, pair in rows]
    cv = table["CV (training split)"]
    table["CV within the test interval"] = (cv >= table["test 95% low"]) & (cv <= table["test 95% high"])
    return table
