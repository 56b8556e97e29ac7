"""Display helpers of the notebook (figures, tables, cached comparisons, timings). The product never imports this.

The analysis itself lives in ``devtools.analysis`` and the product packages (``classifiers.evaluate``, ...);
this module only draws, formats and stores what the notebook shows, so that its cells stay short.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Image as IPImage
from IPython.display import display

DPI = 110  # every figure: >= 110 dpi, labels >= 9 pt
STYLE = {"figure.dpi": DPI, "savefig.dpi": DPI, "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 9, "axes.grid": True, "grid.alpha": 0.3}
plt.rcParams.update(STYLE)


def rel(path) -> str:
    """A path as seen from the notebook's folder: short in outputs, and valid as a CLI argument here."""
    return os.path.relpath(path)


def show_jpeg(fig, quality: int = 80) -> None:
    """A figure of photos as JPEG (a quarter of the PNG size), at the notebook's dpi."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="jpeg", dpi=DPI, bbox_inches="tight", pil_kwargs={"quality": quality, "dpi": (DPI, DPI)})
    plt.close(fig)
    display(IPImage(buffer.getvalue()))


def grid(images, uuids, captions=None, ncols=8, size=1.6, title=None, row_labels=None) -> None:
    """Thumbnails by uuid (None leaves a cell empty) from an image source, in rows of ``ncols``."""
    from devtools import image_stats

    uuids = list(uuids)
    thumbs = image_stats.thumbnails(images, [u for u in uuids if u], 160)
    nrows = max(1, -(-len(uuids) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 1.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, uuid in enumerate(uuids):
        if uuid in thumbs:
            axes.flat[i].imshow(thumbs[uuid])
        if captions is not None and captions[i]:
            axes.flat[i].set_title(captions[i], fontsize=9)
    for r, label in enumerate(row_labels or []):
        axes[r, 0].text(-0.08, 0.5, label, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    show_jpeg(fig)


def styled(frame, digits=3, ints=(), caption=None):
    """A table with numbers at ``digits`` decimals, ``ints`` columns as integers and blanks for missing values."""
    formats = {c: ("{:,.0f}" if c in ints else f"{{:.{digits}f}}") for c in frame.columns
               if pd.api.types.is_numeric_dtype(frame[c])}
    style = frame.style.format(formats, na_rep="")
    return style.set_caption(caption) if caption else style


def heatmap(table, title, xlabel, ylabel, fmt="{:.2f}", figsize=None, colorbar_label="share") -> None:
    """A labelled heatmap of a DataFrame with the values written in the cells."""
    values = table.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=figsize or (1.5 + 0.85 * values.shape[1], 1.2 + 0.5 * values.shape[0]))
    image = ax.imshow(values, cmap="Blues", aspect="auto")
    ax.set_xticks(range(values.shape[1]), [str(c) for c in table.columns], rotation=45, ha="right")
    ax.set_yticks(range(values.shape[0]), [str(i) for i in table.index])
    ax.grid(False)
    top = np.nanmax(values) if values.size else 1
    for (r, c), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=9, color="white" if v > 0.6 * top else "black")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fig.colorbar(image, ax=ax, label=colorbar_label, fraction=0.04)
    fig.tight_layout()
    plt.show()


def scatter_by(ax, points: pd.DataFrame, column: str, title: str, size: float = 3) -> None:
    """UMAP points coloured by ``column`` (grey for unknown), legend outside with counts."""
    order = points[column].value_counts().index.tolist()
    cmap = plt.get_cmap("tab10")
    for i, value in enumerate(order):
        part = points[points[column] == value]
        colour = "lightgrey" if str(value).startswith("(") or value == "unknown" else cmap(i % 10)
        ax.scatter(part["x"], part["y"], s=size, alpha=0.5, color=colour, label=f"{value} ({len(part):,})")
    ax.set(title=title, xlabel="UMAP 1", ylabel="UMAP 2")
    ax.legend(markerscale=4, loc="upper left", bbox_to_anchor=(1, 1), frameon=False)


def write_umap_html(points: pd.DataFrame, path: Path) -> Path:
    """The 17-class UMAP as one interactive HTML file (hover: uuid, class, tag); plotly.js is written once
    beside it (``plotly.min.js``, offline), so the notebook itself carries no JavaScript."""
    import plotly.express as px

    order = points["category"].value_counts().index.tolist()
    fig = px.scatter(points, x="x", y="y", color="category", hover_name="uuid",
                     hover_data={"x": False, "y": False, "tag": True, "source": True}, category_orders={"category": order},
                     render_mode="webgl", opacity=0.6, title="UMAP of the embeddings by category (17 classes; click the legend to hide one)",
                     color_discrete_map={"(no category label)": "lightgrey"}, width=1000, height=650,
                     color_discrete_sequence=px.colors.qualitative.Dark24)
    fig.update_traces(marker={"size": 4})
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fixed div id keeps the file identical between runs with the same points.
    fig.write_html(path, include_plotlyjs="directory", include_mathjax=False, full_html=True, div_id="umap",
                   config={"displaylogo": False})
    return path


def cached_json(path: Path, key: dict, compute, label: str):
    """``compute()``'s JSON-able result, stored at ``path`` with ``key``; reused while the key is unchanged
    (``VINTED_TAGGER_RECOMPUTE=1`` forces a recompute)."""
    stored = json.loads(path.read_text()) if path.exists() else {}
    if stored.get("key") == key and not os.environ.get("VINTED_TAGGER_RECOMPUTE"):
        print(f"{label}: loaded from {rel(path)} (computed {stored['computed_at']})")
        return stored["rows"]
    rows = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "computed_at": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1) + "\n")
    print(f"{label}: computed and stored in {rel(path)}")
    return rows


def code_sha256(*modules) -> str:
    """sha256 of the modules' code without docstrings and comments: a reworded comment keeps a cached result."""
    import ast

    dumps = []
    for module in modules:
        tree = ast.parse(Path(module.__file__).read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        dumps.append(ast.dump(tree))
    return hashlib.sha256("\n".join(dumps).encode()).hexdigest()


def head_comparison(X_cat, y_cat, g_cat, tag_data: dict, tag_columns=None) -> list[dict]:
    """Logistic regression vs LightGBM per head, with the training code's fit functions and folds (the tag
    heads read ``tag_columns`` of the embeddings, as in training)."""
    from classifiers import heads

    rows = []
    for kind in ["logreg", "lightgbm"]:
        started = time.perf_counter()
        head, _ = heads.fit_category_head(kind, X_cat, y_cat, g_cat)
        rows.append({"head": "category", "kind": kind, "seconds": time.perf_counter() - started,
                     "CV top-1": head.cv_["top1"], "CV top-2": head.cv_["top2"], "CV log-loss": head.cv_["logloss"]})
        for tag, (X, y, g) in tag_data.items():
            started = time.perf_counter()
            head, _ = heads.fit_tag_head(kind, tag, X, y, g, columns=tag_columns)
            rows.append({"head": f"tag: {tag}", "kind": kind, "seconds": time.perf_counter() - started,
                         "CV F1": head.cv_["f1"], "CV AP": head.cv_["average_precision"]})
    return rows


def ablation(variants: dict, fresh, cache, train_file, test_labels, tags) -> pd.DataFrame:
    """Heads retrained on subsets of the embedding's parts (same code, folds and head kind)."""
    from classifiers.evaluate import evaluate
    from classifiers.predict import Tagger
    from classifiers.train import train
    from devtools import analysis

    out = []
    for name, parts in variants.items():
        started = time.perf_counter()
        full = len(parts) == len(analysis.embedding_parts(cache.encoder))
        variant_cache = cache if full else analysis.sliced_embeddings(cache, parts)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            variant = fresh if full else train(train_file, variant_cache, head=fresh.info["head"])
        row = {"embedding": name, "train s": fresh.timing["total_seconds"] if full else time.perf_counter() - started,
               "CV top-1": variant.info["category"]["cv"]["top1"], "CV top-2": variant.info["category"]["cv"]["top2"],
               **{f"CV F1 {t}": variant.info["tags"][t]["cv"]["f1"] for t in tags}}
        if test_labels is not None:
            ids = test_labels["uuid"]
            result = evaluate(Tagger(variant).predict_vectors(variant_cache.take(ids)[0]).assign(uuid=ids.to_numpy()),
                              test_labels)
            row.update({"test top-1": result["category"]["top1"], "test top-2": result["category"]["top2"],
                        **{f"test F1 {t}": result["tags"][t]["f1"] for t in tags}})
        out.append(row)
    return pd.DataFrame(out).set_index("embedding")


def inference_costs(tagger, images: list[bytes], rounds: int = 3) -> pd.DataFrame:
    """Median ms per image of each stage and of the whole call, measured interleaved image by image with the
    tagger's own encoder session, so that machine load hits every row alike (end to end >= its parts)."""
    from embed.images import load_pixels

    encoder, size = tagger.encoder(), tagger.encoder_spec["input_size"]
    tagger.predict_images(images[:2])  # warm-up
    times = {k: [] for k in ["decode + resize/crop", "encoder, batch of 1", "heads, batch of 1",
                             "end to end, one image (Tagger.predict_images)"]}
    for _ in range(rounds):
        for data in images:
            t0 = time.perf_counter()
            pixels = load_pixels(data, size)
            t1 = time.perf_counter()
            vector = encoder.encode(pixels[None])
            t2 = time.perf_counter()
            tagger.scores(vector)
            t3 = time.perf_counter()
            tagger.predict_images([data])
            t4 = time.perf_counter()
            for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[key].append(1000 * seconds)
    batch = np.stack([load_pixels(b, size) for b in images[:32]])
    started = time.perf_counter()
    encoder.encode(batch)
    times["encoder, batch of 32 (per image)"] = [1000 * (time.perf_counter() - started) / len(batch)]
    return pd.DataFrame({"median ms per image": {k: float(np.median(v)) for k, v in times.items()},
                         "p90 ms": {k: float(np.percentile(v, 90)) for k, v in times.items()}})


def with_intervals(point: dict, intervals: dict) -> pd.DataFrame:
    """Test metrics next to their bootstrap 95% intervals, one row per metric."""
    rows = {"top-1": (point["category"]["top1"], intervals["category"].get("top1")),
            "top-2": (point["category"]["top2"], intervals["category"].get("top2"))}
    for tag, m in point["tags"].items():
        for key in ("precision", "recall", "f1"):
            rows[f"{tag} {key}"] = (m[key], intervals["tags"][tag][key])
    rows["macro tag F1"] = (point["tags_macro"]["f1"], intervals.get("tags_macro", {}).get("f1"))
    return pd.DataFrame([{"metric": k, "test": v, "95% low": (ci or [np.nan])[0], "95% high": (ci or [np.nan, np.nan])[1]}
                         for k, (v, ci) in rows.items()]).set_index("metric")
