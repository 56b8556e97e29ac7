"""The network's own heads on labelled rows: probabilities, and top-1/top-2 and tag F1 from them."""

from __future__ import annotations

import math

import numpy as np
import torch

from classifiers.metrics import best_f1_threshold, mean_defined, top_k_accuracy
from training.model import MultiTaskNet, multitask_loss


@torch.inference_mode()
def predict(model: torch.nn.Module, batches, y_cat: np.ndarray, y_tag: np.ndarray) -> dict:
    """Category and tag probabilities for the rows ``batches`` yields ((pixels, rows) pairs), the labels of
    those rows (indices into ``y_cat``/``y_tag``) and the mean loss over them."""
    model.eval()
    cat, tag, rows, loss = [], [], [], 0.0
    for pixels, index in batches:
        if pixels is None:
            continue
        cat_logits, tag_logits = model(pixels)
        value, _ = multitask_loss(cat_logits, tag_logits, torch.from_numpy(y_cat[index.numpy()]),
                                  torch.from_numpy(y_tag[index.numpy()]))
        loss += float(value) * len(index)
        cat.append(torch.softmax(cat_logits, 1).numpy())
        tag.append(torch.sigmoid(tag_logits).numpy())
        rows.append(index.numpy())
    rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    return {"cat": np.concatenate(cat) if cat else np.zeros((0, 0)), "tag": np.concatenate(tag) if tag else
            np.zeros((0, y_tag.shape[1])), "y_cat": y_cat[rows], "y_tag": y_tag[rows], "rows": rows,
            "loss": loss / max(1, len(rows))}


def scores(pred: dict, tags: list[str]) -> dict:
    """Top-1, top-2 and each tag's best F1 (the heads tune their threshold the same way) on known labels."""
    known = pred["y_cat"] >= 0
    result = {"loss": pred["loss"]}
    if known.any():
        result["top1"] = top_k_accuracy(pred["cat"][known], pred["y_cat"][known], 1)
        result["top2"] = top_k_accuracy(pred["cat"][known], pred["y_cat"][known], 2)
    f1 = {}
    for j, tag in enumerate(tags):
        y = pred["y_tag"][:, j]
        ok = ~np.isnan(y)
        if ok.any() and 0 < y[ok].sum() < ok.sum():
            f1[tag] = best_f1_threshold(y[ok].astype(int), pred["tag"][ok, j])["f1"]
    result["tag_f1"] = f1
    result["tag_f1_macro"] = mean_defined(f1.values())
    return result


def selection_score(s: dict) -> float:
    """What early stopping maximises on the held-out groups: top-1 plus macro tag F1 (both tasks count; the
    tag rows are the photos of worn dresses)."""
    return s.get("top1", 0.0) + (0.0 if math.isnan(s["tag_f1_macro"]) else s["tag_f1_macro"])

