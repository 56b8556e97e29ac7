"""Training targets from a label table, and the held-out uploader groups (never trained on)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from classifiers.labels import category_values, groups_of, tag_columns, tag_values

HELDOUT_SPLITS = 7  # one of 7 stratified group folds: about 15% of the groups


def task_labels(labels: pd.DataFrame, classes: list[str] | None = None
                ) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(classes, tags, category index per row with -1 where unknown, tag matrix with NaN where unknown).

    ``classes``: a fixed class list (a trained network's); categories outside it count as unknown."""
    category = category_values(labels)
    classes = sorted(category.dropna().unique()) if classes is None else classes
    index = {name: i for i, name in enumerate(classes)}
    y_cat = np.array([index.get(c, -1) if c is not None else -1 for c in category], dtype=np.int64)
    tags = tag_columns(labels)
    y_tag = np.column_stack([tag_values(labels, t) for t in tags]).astype(np.float32) if tags else \
        np.zeros((len(labels), 0), np.float32)
    return classes, tags, y_cat, y_tag


def heldout_mask(labels: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """True for the rows of one fold of a seeded 7-fold StratifiedGroupKFold on the uploader groups (about
    15% of them), stratified by category (or tag pattern): a group lies on one side only."""
    from sklearn.model_selection import StratifiedGroupKFold

    _, _, y_cat, y_tag = task_labels(labels)
    strata = [f"c{c}" if c >= 0 else "t" + "".join("?" if np.isnan(v) else str(int(v)) for v in row)
              for c, row in zip(y_cat, y_tag)]
    groups = groups_of(labels)
    groups = np.arange(len(labels)) if groups is None else groups
    splitter = StratifiedGroupKFold(HELDOUT_SPLITS, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # rare strata (fewer members than folds) are expected
        warnings.filterwarnings("ignore", message="The least populated class")
        _, held = next(splitter.split(np.zeros(len(labels)), strata, groups))
    mask = np.zeros(len(labels), dtype=bool)
    mask[held] = True
    return mask
