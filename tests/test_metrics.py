"""The one metrics module (classifiers/metrics.py): its tie rule, its 0/0 rule, the best-F1 threshold, and that
training, evaluation, prediction, fine-tuning and the notebook's helpers all go through it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from classifiers import metrics
from classifiers.metrics import best_f1_threshold, mean_defined, precision_recall_f1, top_k, top_k_accuracy

ROOT = Path(__file__).resolve().parents[1]

# 17 classes, columns 9 and 10 tied at the top. NumPy 2.4's default argsort (quicksort, AVX-512 sort here) ranks
# column 10 first and 9 second; the stable rule says 9 (the earlier column of classes_) then 10.
TIED = np.array([[0.5, 0.3, 0.4, 0.0, 0.1, 0.7, 0.6, 0.6, 0.4, 1.0, 1.0, 0.7, 0.7, 0.7, 0.4, 0.1, 0.7]])
EARLIER, LATER = 9, 10


def test_ties_rank_the_earlier_column_first() -> None:
    assert top_k(TIED, 2).tolist() == [[EARLIER, LATER]]
    assert top_k(TIED[0]).tolist()[:3] == [EARLIER, LATER, 5]  # 1-D: the whole ranking; 5 is the first 0.7
    assert top_k_accuracy(TIED, np.array([EARLIER]), 1) == 1.0
    assert top_k_accuracy(TIED, np.array([LATER]), 1) == 0.0
    assert top_k_accuracy(TIED, np.array([LATER]), 2) == 1.0
    # Many ties (where even an introsort's partitioning reorders): the earlier columns still come first.
    flat = np.zeros((1, 257))
    flat[0, ::2] = 0.5
    assert top_k(flat, 3).tolist() == [[0, 2, 4]]


def test_zero_over_zero_is_undefined_and_a_found_nothing_is_zero() -> None:
    nothing = precision_recall_f1(0, 0, 0)  # no positive, nothing predicted
    assert all(np.isnan(v) for v in nothing.values())
    missed = precision_recall_f1(0, 0, 3)  # positives, nothing predicted: precision 0/0, recall and F1 0
    assert np.isnan(missed["precision"]) and missed["recall"] == 0.0 and missed["f1"] == 0.0
    wrong = precision_recall_f1(0, 2, 0)  # predicted, no positive: recall 0/0, precision and F1 0
    assert wrong["precision"] == 0.0 and np.isnan(wrong["recall"]) and wrong["f1"] == 0.0
    both = precision_recall_f1(np.array([2, 0]), np.array([2, 0]), np.array([0, 0]))  # arrays, element-wise
    assert both["precision"][0] == 0.5 and np.isnan(both["precision"][1])
    assert mean_defined([np.nan, 0.5, None, 1.0]) == 0.75
    assert np.isnan(mean_defined([np.nan, None]))


def test_evaluate_reports_an_undefined_metric_as_none_and_skips_it_in_the_macro() -> None:
    from classifiers.evaluate import macro, tag_metrics

    never_predicted = tag_metrics(np.array([1.0, 0.0, 1.0, np.nan]), np.array([0, 0, 0, 1]))
    assert never_predicted["precision"] is None and never_predicted["recall"] == 0.0 and never_predicted["f1"] == 0.0
    assert never_predicted["rows"] == 3  # the unknown label is not scored
    found = tag_metrics(np.array([1.0, 0.0]), np.array([1, 1]))
    assert (found["precision"], found["recall"], found["f1"]) == (0.5, 1.0, pytest.approx(2 / 3))
    assert macro({"a": never_predicted, "b": found})["precision"] == 0.5  # None skipped, not read as 0


def test_threshold_curve_of_the_notebook_follows_the_same_rule() -> None:
    from devtools.analysis import threshold_curve

    curve = threshold_curve(np.array([1, 0, 1]), np.array([0.9, 0.2, 0.4]), np.array([0.3, 0.95]))
    assert curve["precision"][0] == 1.0 and curve["recall"][0] == 1.0
    assert np.isnan(curve["precision"][1])  # above every score nothing is predicted: undefined, not 1
    assert curve["f1"][1] == 0.0 and curve["recall"][1] == 0.0


def test_best_f1_threshold_takes_the_best_and_the_lowest_of_equals() -> None:
    best = best_f1_threshold(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.3, 0.1]))
    assert best["threshold"] == 0.3 and best["f1"] == pytest.approx(0.8)
    assert (best["precision"], best["recall"]) == (pytest.approx(2 / 3), 1.0)
    # 0.9 (one found, none wrong) and 0.1 (both found, two wrong) both give F1 2/3, the best: the lower one wins.
    y, score = np.array([1, 0, 0, 1]), np.array([0.9, 0.8, 0.7, 0.1])
    tie = best_f1_threshold(y, score)
    assert tie["threshold"] == 0.1 and tie["f1"] == pytest.approx(2 / 3)
    for t in (0.1, 0.9):  # the curve's F1 is the F1 of the counts at the threshold
        assert precision_recall_f1(*metrics.counts(y, score >= t))["f1"] == pytest.approx(tie["f1"])


def test_training_evaluation_prediction_and_finetuning_share_the_tie_rule() -> None:
    """The same tied scores give the same top-1/top-2 whichever step scores them."""
    from classifiers import heads, train
    from classifiers.evaluate import evaluate
    from classifiers.predict import top_two
    from devtools.analysis import worst_category_mistakes

    y = np.array([LATER])
    expected = {"top1": top_k_accuracy(TIED, y, 1), "top2": top_k_accuracy(TIED, y, 2)}
    assert expected == {"top1": 0.0, "top2": 1.0}

    assert train.top_k_accuracy is metrics.top_k_accuracy and heads.top_k_accuracy is metrics.top_k_accuracy
    cv = heads.category_cv(10 * TIED, y)  # training's out-of-fold scores (temperature keeps the tie)
    assert {k: cv[k] for k in expected} == expected

    classes = [f"c{i:02d}" for i in range(TIED.shape[1])]  # evaluation scores what prediction ranked
    first, second = top_two(TIED)[0]
    predictions = pd.DataFrame({"uuid": ["u"], "category1": [classes[first]], "category2": [classes[second]],
                                "polka dot": [0], "floral": [0], "checker": [0]})
    labels = pd.DataFrame({"uuid": ["u"], "cc3": [classes[LATER]], "polka dot": [0], "floral": [0], "checker": [0]})
    result = evaluate(predictions, labels)["category"]
    assert {k: result[k] for k in expected} == expected

    worst = worst_category_mistakes(["u"], TIED, classes, [classes[LATER]])  # not a top-2 miss: nothing listed
    assert worst.empty

    pytest.importorskip("torch", reason="fine-tuning needs PyTorch (the export extra)")
    from training.evaluate import scores

    tuned = scores({"cat": TIED, "y_cat": y, "tag": np.zeros((1, 0)), "y_tag": np.zeros((1, 0)), "loss": 0.0}, [])
    assert {k: tuned[k] for k in expected} == expected


def test_the_tag_vocabulary_is_written_once() -> None:
    """The assignment's three tags appear as a literal only in classifiers/labels.py (tests aside)."""
    literal = re.compile(r"""\(\s*["']polka dot["']\s*,\s*["']floral["']\s*,\s*["']checker["']\s*\)""")
    found = [str(path.relative_to(ROOT)) for folder in ("embed", "classifiers", "service", "devtools", "bench")
             for path in sorted((ROOT / folder).rglob("*.py")) if literal.search(path.read_text())]
    assert found == ["classifiers/labels.py"]
