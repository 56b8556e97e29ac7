"""The fine-tuning comparison (``bench/results/finetune.json``) as one flat table, its learning curves and its
adoption decision in words: what the notebook plots and the docs' table renders (bench/render_docs.py).

Tolerant of the file's shapes: the variants as a mapping (``{"variants": {name: entry}}``) or a list of entries
with a ``variant`` field; tag F1 per tag (a mapping) or as one macro figure; a variant's learning curve inline
(``curves``: a list of epochs), in a file the entry names (``curve_file``), or in
``finetune_curves_<variant>.json`` beside the results.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from classifiers.labels import DEFAULT_TAGS

TAGS = DEFAULT_TAGS
FROZEN = ("imagenet-frozen", "imagenet", "frozen")  # names the frozen ImageNet encoder's entry goes by
SCORES = ("heldout_top1", "heldout_top2", "heldout_tag_f1", "test_top1", "test_top2", "test_tag_f1",
          "train_minutes", "encode_ms", "epochs")


def entries(data) -> list[dict]:
    """Every per-variant entry (a mapping with ``test_top1``), each with its name under ``variant``."""
    if isinstance(data, dict):
        values = list(data.values())
        if values and all(isinstance(v, dict) for v in values) and any("test_top1" in v for v in values):
            return [{"variant": k, **v} for k, v in data.items() if isinstance(v, dict) and "test_top1" in v]
        return [e for v in values for e in entries(v)]
    if isinstance(data, list):
        if any(isinstance(v, dict) and "test_top1" in v for v in data):
            return [v for v in data if isinstance(v, dict)]
        return [e for v in data for e in entries(v)]
    return []


def macro(value) -> float:
    """Macro tag F1 from a per-tag mapping or a single figure (NaN when absent)."""
    if isinstance(value, dict):
        figures = [float(v) for v in value.values() if v is not None]
        return sum(figures) / len(figures) if figures else math.nan
    return math.nan if value is None else float(value)


def frozen_of(data) -> str | None:
    """The frozen ImageNet encoder's entry, by its name. Never ``default_encoder``: after an adoption that names
    the adopted, fine-tuned one."""
    return next((e["variant"] for e in entries(data) if e.get("variant") in FROZEN), None)


def _row(entry: dict, heads: str, frozen: str | None) -> dict:
    variant = str(entry.get("variant"))
    name = "ImageNet, frozen" if variant == frozen else f"fine-tuned `{variant}`"
    row = {"label": f"{name} ({heads})", "variant": variant, "heads": heads}
    for split in ("heldout", "test"):
        for k in ("top1", "top2"):
            row[f"{split}_{k}"] = float(entry.get(f"{split}_{k}", math.nan))
        f1 = entry.get(f"{split}_tag_f1")
        for tag in TAGS:
            row[f"{split}_f1 {tag}"] = float(f1.get(tag, math.nan)) if isinstance(f1, dict) else math.nan
        row[f"{split}_macro_tag_f1"] = float(entry.get(f"{split}_macro_tag_f1", macro(f1)))
    row["heldout_worn_macro_tag_f1"] = float(entry.get("heldout_worn_macro_tag_f1", math.nan))
    for key in ("train_minutes", "encode_ms", "epochs"):
        row[key] = float(entry.get(key, math.nan)) if entry.get(key) is not None else math.nan
    return row


def comparison(data: dict) -> pd.DataFrame:
    """One row per encoder and heads (logistic heads on its embedding; the network's own heads where recorded)."""
    frozen = frozen_of(data)
    rows = []
    for entry in entries(data):
        rows.append(_row(entry, "logistic heads", frozen))
        own = entry.get("own_heads")
        if isinstance(own, dict) and "test_top1" in own:
            rows.append(_row({**entry, **own, "variant": entry.get("variant")}, "the network's own heads", frozen))
    return pd.DataFrame(rows)


def curves(data: dict, results: Path) -> pd.DataFrame:
    """Per variant and epoch: held-out top-1, top-2, macro tag F1 and the losses that were recorded."""
    frames = []
    for entry in entries(data):
        epochs = _curve_epochs(entry, results)
        if not epochs:
            continue
        frame = pd.DataFrame([{
            "variant": entry["variant"], "epoch": e.get("epoch"), "heldout_top1": e.get("heldout_top1"),
            "heldout_top2": e.get("heldout_top2"),
            "heldout_macro_tag_f1": e.get("heldout_tag_f1_macro", macro(e.get("heldout_tag_f1"))),
            "train_loss": e.get("train_loss"), "heldout_loss": e.get("heldout_loss")} for e in epochs])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _curve_epochs(entry: dict, results: Path) -> list[dict]:
    inline = entry.get("curves")
    if isinstance(inline, list):
        return inline
    named = entry.get("curve_file") or entry.get("curves_file") or (inline if isinstance(inline, str) else None)
    candidates = [results / Path(named).name, results.parent.parent / named] if named else []
    candidates.append(results / f"finetune_curves_{entry['variant']}.json")
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text()).get("curves") or []
    return []


def decision(data: dict) -> str:
    """The adoption decision in words, from the file's own fields and figures (no figure typed by hand)."""
    table = comparison(data)
    logistic = table[table["heads"] == "logistic heads"].set_index("variant")
    frozen = frozen_of(data)
    candidate = data.get("candidate")
    if frozen is None or candidate not in logistic.index:
        return f"Adopted: {'yes' if data.get('adopted') else 'no'} (the file names no candidate to compare)."
    gains = {f"{split} {label}": logistic.loc[candidate, f"{split}_{key}"] - logistic.loc[frozen, f"{split}_{key}"]
             for split in ("heldout", "test") for key, label in (("top1", "top-1"), ("macro_tag_f1", "macro tag F1"))}
    said = ", ".join(f"{name.replace('heldout', 'held-out')} {gain:+.3f}" for name, gain in gains.items())
    verdict = "adopted" if data.get("adopted") else "not adopted: the frozen ImageNet encoder stays the default"
    return (f"The candidate `{candidate}` (best on the held-out groups) against the frozen encoder: {said}. "
            f"Rule: {data.get('rule', 'not recorded')}. Decision: **{verdict}**.")


def plot(table: pd.DataFrame, curve: pd.DataFrame) -> None:
    """The comparison as grouped bars (held-out and test, top-1 and macro tag F1) and the held-out curves."""
    import matplotlib.pyplot as plt

    columns = ["heldout_top1", "test_top1", "heldout_macro_tag_f1", "test_macro_tag_f1"]
    fig, axes = plt.subplots(1, 3 if len(curve) else 1, figsize=(16 if len(curve) else 7, 4.2), squeeze=False)
    table.set_index("label")[columns].plot.barh(ax=axes[0][0])
    low = float(table[columns].min().min())
    axes[0][0].set(xlim=(max(0.0, low - 0.05), 1.0), title="fine-tuning: held-out and test scores", xlabel="score",
                   ylabel="")
    axes[0][0].legend(fontsize=8, loc="lower right")
    if len(curve):
        for variant, part in curve.groupby("variant", sort=False):
            axes[0][1].plot(part["epoch"], part["heldout_top1"], "o-", label=variant)
            axes[0][2].plot(part["epoch"], part["heldout_macro_tag_f1"], "o-", label=variant)
        axes[0][1].set(title="held-out top-1 per epoch", xlabel="epoch", ylabel="top-1")
        axes[0][2].set(title="held-out macro tag F1 per epoch", xlabel="epoch", ylabel="macro F1")
        for ax in axes[0][1:]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
