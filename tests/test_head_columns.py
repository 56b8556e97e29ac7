"""A tag head owns its column selection: fitted on whole embeddings, saved, loaded, it reads the same columns."""

from __future__ import annotations

import numpy as np
import pytest

from classifiers.artifacts import load_model, save_model
from classifiers.heads import CategoryLogReg, TagLightGBM, TagLogReg
from classifiers.model import TaggerModel

DIM = 12
COLUMNS = ((2, 5), (8, 11))


def data(n: int = 240, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    X = rng.normal(size=(n, DIM)).astype(np.float32)
    X[:, 3] += 1.5 * y  # the tag shows in a selected column ...
    X[:, 0] += 3.0 * y  # ... and more strongly in one the head must not read
    classes = np.where(rng.random(n) < 0.5, "A", "B")
    return X, y, classes


@pytest.mark.parametrize("head", [TagLogReg, TagLightGBM])
def test_column_selection_round_trips(head, tmp_path) -> None:
    X, y, classes = data()
    tag = head("floral", cv=3, columns=COLUMNS).fit(X, y)  # whole embeddings in
    proba = tag.predict_proba(X)  # whole embeddings in, too
    assert proba.shape == (len(X),) and tag.scorer_.columns == COLUMNS
    # Exactly the head fitted on the selected columns by hand (what training did before): same numbers.
    by_hand = head("floral", cv=3).fit(np.hstack([X[:, 2:5], X[:, 8:11]]), y)
    np.testing.assert_array_equal(proba, by_hand.predict_proba(np.hstack([X[:, 2:5], X[:, 8:11]])))
    assert tag.threshold_ == by_hand.threshold_
    # The unread column does not matter to it.
    moved = X.copy()
    moved[:, 0] += 100.0
    np.testing.assert_array_equal(tag.predict_proba(moved), proba)

    category = CategoryLogReg(cv=3).fit(X, classes)
    model = TaggerModel(category.scorer_, {"floral": tag.scorer_}, {"name": "fake", "dim": DIM})
    save_model(model, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert loaded.tags["floral"].columns == COLUMNS
    np.testing.assert_allclose(loaded.tags["floral"].proba(X), proba, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(loaded.scores(X)[1][:, 0], proba, rtol=1e-5, atol=1e-6)


def test_columns_is_a_hyper_parameter() -> None:
    head = TagLogReg("floral", columns=COLUMNS)
    assert head.get_params()["columns"] == COLUMNS
    from sklearn.base import clone

    assert clone(head).columns == COLUMNS
