"""Scores of a predictions file against labels: top-1/top-2 category accuracy and per-tag precision/recall/F1.

Each task is scored only on rows where its label is known: a NaN tag or a null category is "not labelled",
so it counts neither as a miss nor as a hit. Labelled rows with no prediction (an image that failed to
embed) are counted and reported, not scored. A predictions file that repeats a uuid, lacks a declared tag
column or has a null prediction is refused with a message that says which (it would be scored wrongly).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from classifiers.labels import category_values, check_binary, read_labels, tag_columns, tag_values
from classifiers.metrics import counts, mean_defined, or_none, precision_recall_f1, ratio

PREDICTION_COLUMNS = ("uuid", "category1", "category2")
SHOWN = 3


def evaluate(predictions: pd.DataFrame, labels: pd.DataFrame, tags: list[str] | None = None) -> dict:
    """Metrics of ``predictions`` (uuid, category1, category2, tag columns) against ``labels``, for the
    declared ``tags`` (default: the assignment's three)."""
    labels = read_labels(labels)
    tags = tag_columns(labels, tags)
    check_predictions(predictions, tags)
    joined = labels.merge(predictions, on="uuid", how="inner", suffixes=("", "__predicted"))
    result = {
        "rows": {"predictions": len(predictions), "labels": len(labels), "matched": len(joined),
                 "labels_without_prediction": int((~labels["uuid"].isin(predictions["uuid"])).sum())},
        "category": category_metrics(joined),
        "tags": {},
    }
    for tag in tags:
        result["tags"][tag] = tag_metrics(tag_values(joined, tag), joined[f"{tag}__predicted"].to_numpy())
    result["tags_macro"] = macro(result["tags"])
    return result


def check_predictions(predictions: pd.DataFrame, tags: list[str]) -> None:
    """One row per uuid, every column present and no null prediction; else ValueError saying which."""
    missing = [c for c in (*PREDICTION_COLUMNS, *tags) if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions lack column(s) {', '.join(map(repr, missing))} "
                         f"(columns: {', '.join(map(str, predictions.columns))})")
    repeated = predictions["uuid"][predictions["uuid"].duplicated()]
    if len(repeated):
        raise ValueError(f"predictions repeat {repeated.nunique()} uuid(s), e.g. {_examples(repeated)}; "
                         "each image must be predicted once")
    for column in PREDICTION_COLUMNS:
        empty = predictions[column].isna()
        if empty.any():
            raise ValueError(f"predictions have {int(empty.sum())} row(s) with a null {column!r}, e.g. uuid "
                             f"{_examples(predictions['uuid'][empty])}")
    for tag in tags:
        if predictions[tag].isna().any():
            raise ValueError(f"predictions have null values in tag column {tag!r}")
        check_binary(predictions[tag], tag)


def _examples(values: pd.Series) -> str:
    return ", ".join(repr(v) for v in values.astype(object).head(SHOWN))


def category_metrics(joined: pd.DataFrame) -> dict:
    truth = category_values(joined)
    known = truth.notna().to_numpy()
    truth = truth[known].to_numpy(dtype=object)
    first = joined["category1"].astype(str).to_numpy(dtype=object)[known]
    second = joined["category2"].astype(str).to_numpy(dtype=object)[known]
    classes = sorted(set(truth) | set(first))
    index = {name: i for i, name in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)  # rows: truth, columns: category1
    np.add.at(confusion, ([index[t] for t in truth], [index[p] for p in first]), 1)
    support = confusion.sum(axis=1)
    return {
        "rows": int(known.sum()),
        "top1": _ratio(np.sum(first == truth), len(truth)),
        "top2": _ratio(np.sum((first == truth) | (second == truth)), len(truth)),
        "classes": classes,
        "support": {name: int(support[i]) for i, name in enumerate(classes)},
        "per_class_recall": {name: _ratio(confusion[i, i], support[i]) for i, name in enumerate(classes)
                             if support[i]},
        "confusion": confusion.tolist(),
    }


def tag_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """Precision, recall and F1 of one tag over the rows whose label is known (truth not NaN)."""
    known = ~np.isnan(truth)
    truth, predicted = truth[known].astype(bool), np.asarray(predicted, dtype=np.float64)[known] >= 0.5
    tp, fp, fn = counts(truth, predicted)
    scores = {name: or_none(value) for name, value in precision_recall_f1(tp, fp, fn).items()}
    return {"rows": int(known.sum()), "positives": int(truth.sum()), "predicted_positive": int(predicted.sum()),
            "tp": tp, "fp": fp, "fn": fn, **scores}


def macro(per_tag: dict) -> dict:
    """Unweighted mean over tags of precision, recall and F1 (a tag without a defined value is skipped)."""
    return {key: or_none(mean_defined(m[key] for m in per_tag.values())) for key in ("precision", "recall", "f1")}


def _ratio(numerator, denominator) -> float | None:
    return or_none(ratio(numerator, denominator))  # undefined (0/0) is None: see classifiers.metrics


def format_report(result: dict) -> str:
    """The metrics as plain text."""
    lines = [f"rows: {result['rows']['matched']} predicted of {result['rows']['labels']} labelled "
             f"({result['rows']['labels_without_prediction']} labelled rows without a prediction)"]
    category = result["category"]
    lines.append(f"category ({category['rows']} rows): top-1 {_fmt(category['top1'])}  top-2 {_fmt(category['top2'])}")
    for name, recall in category["per_class_recall"].items():
        lines.append(f"  {name:<24} recall {_fmt(recall)}  (n={category['support'][name]})")
    for name, m in result["tags"].items():
        lines.append(f"tag {name!r} ({m['rows']} rows, {m['positives']} positive): precision {_fmt(m['precision'])}  "
                     f"recall {_fmt(m['recall'])}  F1 {_fmt(m['f1'])}")
    if result["tags"]:
        mean = result["tags_macro"]
        lines.append(f"tags macro: precision {_fmt(mean['precision'])}  recall {_fmt(mean['recall'])}  "
                     f"F1 {_fmt(mean['f1'])}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def bootstrap_intervals(predictions: pd.DataFrame, labels: pd.DataFrame, tags: list[str] | None = None,
                        n_resamples: int = 1000, level: float = 0.95, seed: int = 0, by_group: bool = True) -> dict:
    """Percentile bootstrap intervals for every metric of ``evaluate`` (same ``tags``), in the same nesting:
    ``{"category": {"top1": [low, high], "top2": ...}, "tags": {tag: {"precision", "recall", "f1"}},
    "tags_macro": {...}}``.

    With ``by_group`` and a ``group`` column in ``labels``, whole uploaders are resampled (a cluster
    bootstrap): photos of one uploader are not independent, so resampling rows would give intervals that
    are too narrow. Each task resamples its own labelled rows; a metric undefined in a resample is skipped.
    """
    labels = read_labels(labels)
    tags = tag_columns(labels, tags)
    check_predictions(predictions, tags)
    joined = labels.merge(predictions, on="uuid", how="inner", suffixes=("", "__predicted"))
    rng = np.random.default_rng(seed)
    quantiles = [(1 - level) / 2, 1 - (1 - level) / 2]
    groups = joined["group"] if by_group and "group" in joined else None
    out: dict = {"level": level, "resamples": n_resamples, "unit": "group" if groups is not None else "row",
                 "category": {}, "tags": {}}

    truth = category_values(joined)
    known = truth.notna().to_numpy()
    if known.any():
        first = joined["category1"].astype(str).to_numpy(dtype=object) == truth.to_numpy(dtype=object)
        second = joined["category2"].astype(str).to_numpy(dtype=object) == truth.to_numpy(dtype=object)
        weights = _resample_weights(rng, known, groups, n_resamples)
        for name, hits in (("top1", first), ("top2", first | second)):
            out["category"][name] = _interval(_weighted_ratio(weights, hits[known], np.ones(known.sum())), quantiles)

    per_tag = {}
    for tag in tags:
        y = tag_values(joined, tag)
        known = ~np.isnan(y)
        if not known.any():
            continue
        truth_t, predicted = y[known].astype(bool), joined[f"{tag}__predicted"].to_numpy(dtype=np.float64)[known] >= 0.5
        weights = _resample_weights(rng, known, groups, n_resamples)
        tp, fp, fn = (weights @ (truth_t & predicted), weights @ (~truth_t & predicted), weights @ (truth_t & ~predicted))
        per_tag[tag] = precision_recall_f1(tp, fp, fn)  # per resample; an undefined one (NaN) is skipped below
        out["tags"][tag] = {k: _interval(v, quantiles) for k, v in per_tag[tag].items()}
    if per_tag:  # the macro mean of each resample (tags resampled independently, as they are labelled apart)
        out["tags_macro"] = {k: _interval(np.mean([m[k] for m in per_tag.values()], axis=0), quantiles)
                             for k in ("precision", "recall", "f1")}
    return out


def _resample_weights(rng: np.random.Generator, known: np.ndarray, groups: pd.Series | None,
                      n_resamples: int) -> np.ndarray:
    """(n_resamples, known rows) counts: how often each row is drawn when rows (or whole groups) are resampled."""
    if groups is None:
        units = np.arange(int(known.sum()))
    else:
        units = pd.factorize(groups[known].astype(str))[0]
    n_units = units.max() + 1
    draws = rng.multinomial(n_units, np.full(n_units, 1 / n_units), size=n_resamples)  # (B, units)
    return draws[:, units].astype(np.float64)


def _weighted_ratio(weights: np.ndarray, hits: np.ndarray, totals: np.ndarray) -> np.ndarray:
    return ratio(weights @ hits.astype(np.float64), weights @ totals)


def _interval(values: np.ndarray, quantiles: list[float]) -> list[float] | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return [round(float(q), 4) for q in np.quantile(values, quantiles)] if len(values) else None
