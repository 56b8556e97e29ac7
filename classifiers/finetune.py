"""Adapt EfficientNet-Lite2 to the clothing photos once, multi-task, then freeze it as an encoder of the table.

    python -m classifiers.finetune --data data.parquet --images images.zip --out DIR [--freeze 5] [--epochs 8]

One network, two kinds of heads on its pooled 1280-d features: a softmax over the categories and one
sigmoid per tag column. The two sources of the stand-in data each label one task, so every loss is masked
where its label is null (unknown is not 0) and each task's loss is the mean over its own labelled rows of
the batch: a task weighs the same whatever its share of the rows. About 15% of the uploader groups are held
out (stratified, seeded), never trained on, and serve for early stopping here and later for the heads'
temperature and thresholds (``classifiers.train(..., calibrate_on=...)``). The test split is never read.

The stem and blocks 0..4 stay ImageNet's; their output at the encoder's 260 px is computed once per image
(ONNX Runtime) and cached, and training runs only the blocks above ``--freeze`` and the heads, with
augmentation on the cached maps (random crop, flip). DIR receives ``checkpoint.pt`` after every epoch (a
killed run resumes from it), ``curves.json`` (loss, top-1 and tag F1 per epoch), ``split.json`` (the
held-out uuids and the training uuids), and at the end ``encoder.safetensors`` (the best epoch's network,
fp16, timm names: ``efficientnet-lite2:DIR/encoder.safetensors`` is then an encoder name) and
``heads.safetensors`` (the network's own heads). Torch-only: never imported at prediction or serving time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from classifiers.metrics import best_f1_threshold, mean_defined, top_k_accuracy
from embed.encoders import ENCODERS
from embed.export import Normalise, lite_classifier
from embed.images import ImageError, load_pixels
from embed.sources import list_images
from vinted_tagger.errors import run_command
from vinted_tagger.files import atomic_path, file_sha256, write_json

BASE = ENCODERS["efficientnet-lite2"]
HELDOUT_SPLITS = 7  # one of 7 stratified group folds: about 15% of the groups


@dataclass
class Config:
    """What shapes a run; a checkpoint made with another config is refused on resume."""

    freeze: int = 4  # stem and blocks 0..freeze stay ImageNet's (4 to 6)
    epochs: int = 6
    batch_size: int = 32
    lr: float = 1e-3  # new heads; the backbone gets lr * backbone_lr_scale
    backbone_lr_scale: float = 0.3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    label_smoothing: float = 0.1
    min_share: float = 0.75  # smallest crop side of a feature map (about 200 of 260 px): patterns stay readable
    patience: int = 2  # epochs without a better held-out score before stopping
    seed: int = 0
    limit: int = 0  # train on at most this many rows (smoke runs); 0 = all


# ------------------------------------------------------------------------------------------- labels


def task_labels(labels: pd.DataFrame) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(classes, tags, category index per row with -1 where unknown, tag matrix with NaN where unknown)."""
    from classifiers.labels import category_values, tag_columns, tag_values

    category = category_values(labels)
    classes = sorted(category.dropna().unique())
    index = {name: i for i, name in enumerate(classes)}
    y_cat = np.array([index[c] if c is not None else -1 for c in category], dtype=np.int64)
    tags = tag_columns(labels)
    y_tag = np.column_stack([tag_values(labels, t) for t in tags]).astype(np.float32) if tags else \
        np.zeros((len(labels), 0), np.float32)
    return classes, tags, y_cat, y_tag


def heldout_mask(labels: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """True for the rows of about 15% of the uploader groups, stratified by category (or tag pattern)."""
    from sklearn.model_selection import StratifiedGroupKFold

    from classifiers.labels import groups_of

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


# --------------------------------------------------------------------------------------------- loss


def multitask_loss(cat_logits: torch.Tensor, tag_logits: torch.Tensor, y_cat: torch.Tensor, y_tag: torch.Tensor,
                   label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Mean cross-entropy over the rows with a category plus mean BCE over the known tag entries.

    Unknown labels (-1, NaN) are selected out, not multiplied by zero: NaN * 0 is NaN, and a row with no
    label must contribute exactly no gradient.
    """
    zero = (cat_logits.sum() + tag_logits.sum()) * 0.0  # keeps both in the graph: zero gradient, not None
    known_cat = y_cat >= 0
    cat = F.cross_entropy(cat_logits[known_cat], y_cat[known_cat], label_smoothing=label_smoothing) \
        if known_cat.any() else zero
    known_tag = ~torch.isnan(y_tag)
    tag = F.binary_cross_entropy_with_logits(tag_logits[known_tag], y_tag[known_tag]) if known_tag.any() else zero
    return cat + tag, {"category": float(cat.detach()), "tags": float(tag.detach())}


# -------------------------------------------------------------------------------------------- model

TRUNK_BLOCK = 4  # the stem and blocks 0..4 are never trained: their output is computed once and cached


class MultiTaskNet(nn.Module):
    """uint8 NHWC pixels -> (category logits, tag logits) from the network's pooled features.

    ``forward`` runs the whole network (export, evaluation). Training splits it: ``forward_trunk`` (to block
    ``TRUNK_BLOCK``, shared by all variants) and ``forward_frozen_tail`` (the variant's other frozen blocks)
    run once per image, ``forward_top`` (the trained blocks and heads) once per step: on 2 CPU cores the
    frozen forward would otherwise be most of a step's cost.
    """

    def __init__(self, net: nn.Module, n_classes: int, n_tags: int, freeze: int):
        super().__init__()
        if freeze < TRUNK_BLOCK or freeze >= len(net.blocks):
            raise ValueError(f"freeze must be a block index from {TRUNK_BLOCK} to {len(net.blocks) - 1}, got {freeze}")
        self.normalise = Normalise(BASE.mean, BASE.std)
        self.net = net
        self.dropout = nn.Dropout(0.2)
        self.category = nn.Linear(net.num_features, n_classes)
        self.tags = nn.Linear(net.num_features, n_tags)
        self.freeze = freeze
        for module in self.frozen_modules():
            module.requires_grad_(False)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.net.conv_stem, self.net.bn1, *self.net.blocks[: self.freeze + 1]]

    def train(self, mode: bool = True) -> MultiTaskNet:
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()  # frozen means frozen batch-norm statistics too
        return self

    def forward_trunk(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.normalise(pixels).contiguous(memory_format=torch.channels_last)
        x = self.net.bn1(self.net.conv_stem(x))
        for stage in self.net.blocks[: TRUNK_BLOCK + 1]:
            x = stage(x)
        return x

    def forward_frozen_tail(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk maps -> the output of the last frozen block."""
        x = x.float().contiguous(memory_format=torch.channels_last)
        for stage in self.net.blocks[TRUNK_BLOCK + 1 : self.freeze + 1]:
            x = stage(x)
        return x

    def forward_top(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last frozen block's output -> (category logits, tag logits)."""
        x = x.float().contiguous(memory_format=torch.channels_last)
        for stage in self.net.blocks[self.freeze + 1 :]:
            x = stage(x)
        features = self.net.forward_head(self.net.bn2(self.net.conv_head(x)), pre_logits=True)
        features = self.dropout(features)
        return self.category(features), self.tags(features)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_top(self.forward_frozen_tail(self.forward_trunk(pixels)))


@torch.inference_mode()
def frozen_maps(model: MultiTaskNet, trunk: torch.Tensor, batch_size: int = 128,
                progress: bool = False) -> torch.Tensor:
    """The output of the variant's last frozen block for every trunk map, once (fp16)."""
    model.eval()
    if model.freeze == TRUNK_BLOCK:
        return trunk
    starts = tqdm(range(0, len(trunk), batch_size), desc="frozen blocks", unit="batch", disable=not progress,
                  file=sys.stderr)
    parts = [model.forward_frozen_tail(trunk[i : i + batch_size]).half().contiguous() for i in starts]
    return torch.cat(parts)


def build_model(n_classes: int, n_tags: int, freeze: int) -> MultiTaskNet:
    net = lite_classifier(BASE)  # ImageNet weights, checksum verified
    return MultiTaskNet(net, n_classes, n_tags, freeze).to(memory_format=torch.channels_last)


def augment(x: torch.Tensor, generator: torch.Generator, min_share: float) -> torch.Tensor:
    """Augmentation on cached feature maps (N, C, S, S; S = 17 after block 4 at 260 px): a random crop of
    the map, at least ``min_share`` of its side (a random resized crop of the photo: patterns stay readable,
    and the network sees them at the size it will embed them), and a horizontal flip per image."""
    size = x.shape[-1]
    side = int(torch.randint(max(1, round(min_share * size)), size + 1, (1,), generator=generator))
    top, left = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=generator))
    x = x[:, :, top : top + side, left : left + side]
    flip = torch.rand(len(x), generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


# --------------------------------------------------------------------------------------------- data


class Images(torch.utils.data.Dataset):
    """Rows of a label table as (uint8 HWC pixels at the encoder's input size, exactly as embedded, row index)."""

    def __init__(self, blobs: dict[str, bytes], uuids: list[str], size: int):
        self.blobs, self.uuids, self.size = blobs, uuids, size

    def __len__(self) -> int:
        return len(self.uuids)

    def __getitem__(self, i: int):
        try:
            return load_pixels(self.blobs[self.uuids[i]], self.size), i
        except ImageError:
            return None, i


def read_blobs(images: str | Path, uuids: set[str]) -> dict[str, bytes]:
    """The encoded bytes of the wanted images (a few hundred MB at most: JPEGs, not pixels)."""
    refs = [ref for ref in list_images([images]) if ref.uuid in uuids]
    blobs = {}
    for ref in refs:
        try:
            blobs[ref.uuid] = ref.read()
        except (OSError, zipfile.BadZipFile) as error:
            print(f"finetune: cannot read {ref.uuid} ({ref.origin}): {error}; left out", file=sys.stderr)
    return blobs


def _collate(items):
    pixels = [p for p, _ in items]
    ok = [p is not None for p in pixels]
    stacked = torch.from_numpy(np.stack([p for p in pixels if p is not None])) if any(ok) else None
    return stacked, torch.as_tensor(ok), torch.as_tensor([i for _, i in items])


class Trunk(nn.Module):
    def __init__(self, model: MultiTaskNet):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.forward_trunk(pixels)


def trunk_maps(model: MultiTaskNet, blobs: dict[str, bytes], uuids: list[str], progress: bool, workers: int,
               batch_size: int = 32) -> tuple[torch.Tensor | None, np.ndarray]:
    """The frozen trunk's output (fp16) for each uuid, and which images could be decoded.

    The trunk runs on ONNX Runtime (exported to a temporary file): on CPU it is several times faster than
    eager PyTorch, and this forward is the largest single cost of a fine-tuning run.
    """
    import tempfile

    import onnxruntime as ort

    from embed.runtime import session_options

    model.eval()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trunk.onnx"
        example = torch.zeros(2, BASE.input_size, BASE.input_size, 3, dtype=torch.uint8)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
            torch.onnx.export(Trunk(model), (example,), str(path), input_names=["pixels"], output_names=["maps"],
                              dynamic_axes={"pixels": {0: "batch"}, "maps": {0: "batch"}}, opset_version=17,
                              dynamo=False)
        session = ort.InferenceSession(str(path), session_options(torch.get_num_threads()),
                                       providers=["CPUExecutionProvider"])
    dataset = Images(blobs, uuids, BASE.input_size)
    batches = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=_collate)
    maps, ok = None, np.zeros(len(uuids), dtype=bool)
    for pixels, good, index in tqdm(batches, desc="trunk", unit="batch", disable=not progress, file=sys.stderr):
        if pixels is None:
            continue
        x = torch.from_numpy(session.run(None, {"pixels": pixels.numpy()})[0]).half()
        if maps is None:
            maps = torch.zeros((len(uuids), *x.shape[1:]), dtype=torch.float16)
        rows = index[good]
        maps[rows] = x
        ok[rows.numpy()] = True
    return maps, ok


def cached_trunk(path: Path, model: MultiTaskNet, images, uuids: list[str], progress: bool, workers: int):
    """Trunk maps from ``path`` when it was made for these uuids, else computed and saved (a resume skips it)."""
    key = hashlib.sha256(json.dumps([BASE.sha256, BASE.input_size, TRUNK_BLOCK, uuids]).encode()).hexdigest()
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved["key"] == key:
            return saved["maps"], saved["ok"].numpy(), float(saved.get("seconds", 0.0))
    started = time.perf_counter()
    blobs = read_blobs(images, set(uuids))
    maps, ok = trunk_maps(model, blobs, uuids, progress, workers)
    if maps is None:
        raise ValueError(f"none of the {len(uuids)} labelled images could be read from {images}")
    seconds = time.perf_counter() - started
    print(f"finetune: trunk of {int(ok.sum())} images in {seconds:.0f} s", file=sys.stderr)
    save_atomic({"key": key, "maps": maps, "ok": torch.from_numpy(ok), "seconds": seconds}, path)
    return maps, ok, seconds


# ------------------------------------------------------------------------------------------ metrics


@torch.inference_mode()
def predict(model: MultiTaskNet, maps: torch.Tensor, y_cat: np.ndarray, y_tag: np.ndarray,
            batch_size: int = 128) -> dict:
    """Category probabilities, tag probabilities and the mean loss over rows, from trunk maps."""
    model.eval()
    cat, tag, loss = [], [], 0.0
    for start in range(0, len(maps), batch_size):
        part = slice(start, start + batch_size)
        cat_logits, tag_logits = model.forward_top(maps[part])
        value, _ = multitask_loss(cat_logits, tag_logits, torch.from_numpy(y_cat[part]), torch.from_numpy(y_tag[part]))
        loss += float(value) * len(cat_logits)
        cat.append(torch.softmax(cat_logits, 1).numpy())
        tag.append(torch.sigmoid(tag_logits).numpy())
    return {"cat": np.concatenate(cat), "tag": np.concatenate(tag), "y_cat": y_cat, "y_tag": y_tag,
            "loss": loss / max(1, len(maps))}


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
    """What early stopping maximises on the held-out groups: top-1 plus macro tag F1 (both tasks count)."""
    return s.get("top1", 0.0) + (0.0 if math.isnan(s["tag_f1_macro"]) else s["tag_f1_macro"])


# ----------------------------------------------------------------------------------------- training


def param_groups(model: MultiTaskNet, config: Config) -> list[dict]:
    heads = [*model.category.parameters(), *model.tags.parameters()]
    backbone = [p for p in model.net.parameters() if p.requires_grad]
    return [{"params": heads, "lr": config.lr},
            {"params": backbone, "lr": config.lr * config.backbone_lr_scale}]


def schedule(config: Config, total_steps: int):
    """Linear warm-up, then cosine decay to zero at the last planned step."""
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def save_atomic(obj, path: Path) -> None:
    with atomic_path(path) as temp:
        torch.save(obj, temp)


def finetune(data: str | Path, images: str | Path, out: str | Path, config: Config = Config(),
             progress: bool = True, workers: int = 1, trunk: str | Path | None = None) -> dict:
    """Fine-tune, checkpointing every epoch; returns the run's summary (also in ``out/curves.json``).

    ``trunk``: where the frozen trunk's maps are cached (default ``out/trunk.pt``); variants that share it
    compute it once.
    """
    from classifiers.labels import read_labels

    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    labels = read_labels(data)
    held = heldout_mask(labels, config.seed)
    classes, tags, y_cat, y_tag = task_labels(labels)
    uuids = labels["uuid"].astype(str).tolist()
    model = build_model(len(classes), len(tags), config.freeze)
    maps, ok, trunk_seconds = cached_trunk(Path(trunk) if trunk else out / "trunk.pt", model, images, uuids,
                                           progress, workers)
    maps = frozen_maps(model, maps, progress=progress)
    train_rows = np.flatnonzero(~held & ok)
    if config.limit:
        train_rows = np.sort(np.random.default_rng(config.seed).permutation(train_rows)[: config.limit])
    held_rows = np.flatnonzero(held & ok)
    if not len(train_rows) or not len(held_rows):
        raise ValueError(f"need images for both training and held-out rows; {int(ok.sum())} of {len(uuids)} read")
    write_json(out / "split.json", {"heldout": [uuids[i] for i in held_rows],
                                           "train": [uuids[i] for i in train_rows]})
    optimizer = torch.optim.AdamW(param_groups(model, config), weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_rows) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(config, steps_per_epoch * config.epochs))
    state = {"epoch": 0, "curves": [], "best_score": -1.0, "best_epoch": 0, "seen": [], "seconds": 0.0}
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if not same_run(saved["config"], asdict(config)) or saved["classes"] != classes or saved["tags"] != tags:
            raise ValueError(f"{checkpoint} was made with another configuration or label set; use a new --out")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
        print(f"finetune: resuming after epoch {state['epoch']}", file=sys.stderr)
    seen = set(state["seen"])
    while state["epoch"] < config.epochs and state["epoch"] - state["best_epoch"] < config.patience:
        epoch = state["epoch"] + 1
        epoch_started = time.perf_counter()
        generator = torch.Generator().manual_seed(config.seed + epoch)
        order = train_rows[torch.randperm(len(train_rows), generator=generator).numpy()]
        model.train()
        totals = {"loss": 0.0, "category": 0.0, "tags": 0.0, "rows": 0}
        bar = tqdm(range(0, len(order), config.batch_size), desc=f"finetune epoch {epoch}/{config.epochs}",
                   unit="step", disable=not progress, file=sys.stderr)
        for start in bar:
            rows = order[start : start + config.batch_size]
            x = augment(maps[torch.from_numpy(rows)], generator, config.min_share)
            cat_logits, tag_logits = model.forward_top(x)
            loss, parts = multitask_loss(cat_logits, tag_logits, torch.from_numpy(y_cat[rows]),
                                         torch.from_numpy(y_tag[rows]), config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen.update(uuids[i] for i in rows)
            totals["rows"] += len(rows)
            for key, value in (("loss", loss.item()), *parts.items()):
                totals[key] += value * len(rows)
            bar.set_postfix(loss=f"{totals['loss'] / totals['rows']:.3f}")
        bar.close()
        held_scores = scores(predict(model, maps[torch.from_numpy(held_rows)], y_cat[held_rows], y_tag[held_rows]), tags)
        train_seconds = time.perf_counter() - epoch_started
        row = {"epoch": epoch, "lr": optimizer.param_groups[1]["lr"], "seconds": round(train_seconds, 1),
               **{f"train_{k}": totals[k] / totals["rows"] for k in ("loss", "category", "tags")},
               **{f"heldout_{k}": v for k, v in held_scores.items()}}
        state["curves"].append(row)
        state["epoch"], state["seen"], state["seconds"] = epoch, sorted(seen), state["seconds"] + train_seconds
        if selection_score(held_scores) > state["best_score"]:
            state["best_score"], state["best_epoch"] = selection_score(held_scores), epoch
            save_atomic(model.state_dict(), out / "best.pt")
        save_atomic({"config": asdict(config), "classes": classes, "tags": tags, "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "state": state},
                    checkpoint)
        write_curves(out, config, classes, tags, state, len(train_rows), len(held_rows))
        print(f"finetune: epoch {epoch}: train loss {row['train_loss']:.3f}, held-out loss {row['heldout_loss']:.3f} "
              f"top-1 {held_scores.get('top1', float('nan')):.3f} tag F1 {held_scores['tag_f1_macro']:.3f} "
              f"({train_seconds:.0f} s)", file=sys.stderr)
    model.load_state_dict(torch.load(out / "best.pt", map_location="cpu", weights_only=True))
    summary = write_weights(model, out, classes, tags)
    summary.update(write_curves(out, config, classes, tags, state, len(train_rows), len(held_rows)))
    summary["trunk_minutes"] = round(trunk_seconds / 60, 2)  # shared by the variants; each would pay it alone
    summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_json(out / "curves.json", summary)
    return summary


def same_run(saved: dict, wanted: dict) -> bool:
    """A checkpoint continues a run of the same configuration; only more epochs (or patience) may be asked."""
    extendable = ("epochs", "patience")
    return {k: v for k, v in saved.items() if k not in extendable} == \
        {k: v for k, v in wanted.items() if k not in extendable}


def write_curves(out: Path, config: Config, classes, tags, state: dict, n_train: int, n_held: int) -> dict:
    record = {"config": asdict(config), "classes": classes, "tags": tags, "train_rows": n_train,
              "heldout_rows": n_held, "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
              "train_minutes": round(state["seconds"] / 60, 2), "selection": "held-out top-1 + macro tag F1",
              "curves": state["curves"]}
    current = json.loads((out / "curves.json").read_text()) if (out / "curves.json").exists() else {}
    write_json(out / "curves.json", {**current, **record})
    return record


def write_weights(model: MultiTaskNet, out: Path, classes, tags) -> dict:
    """The network (fp16 safetensors, timm names: an encoder weight file) and the network's own heads."""
    from safetensors.torch import save_file

    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.net.state_dict().items()}
    with atomic_path(out / "encoder.safetensors") as temp:
        save_file(half, str(temp))
    heads = {"category.weight": model.category.weight, "category.bias": model.category.bias,
             "tags.weight": model.tags.weight, "tags.bias": model.tags.bias}
    with atomic_path(out / "heads.safetensors") as temp:
        save_file({k: v.detach().contiguous() for k, v in heads.items()}, str(temp),
                  metadata={"classes": json.dumps(classes), "tags": json.dumps(tags)})
    return {"encoder_file": "encoder.safetensors", "encoder_sha256": file_sha256(out / "encoder.safetensors"),
            "encoder_bytes": (out / "encoder.safetensors").stat().st_size}


def load_finetuned(folder: str | Path) -> MultiTaskNet:
    """The fine-tuned network with its own heads, from a finetune output folder (for the comparison)."""
    from safetensors import safe_open

    from embed.export import load_timm_state

    folder = Path(folder)
    with safe_open(str(folder / "heads.safetensors"), "pt") as handle:
        meta = handle.metadata()
        heads = {k: handle.get_tensor(k) for k in handle.keys()}
    classes, tags = json.loads(meta["classes"]), json.loads(meta["tags"])
    import timm

    net = timm.create_model(BASE.arch, pretrained=False)
    load_timm_state(net, folder / "encoder.safetensors")
    model = MultiTaskNet(net, len(classes), len(tags), freeze=len(net.blocks) - 1)
    model.category.load_state_dict({"weight": heads["category.weight"], "bias": heads["category.bias"]})
    model.tags.load_state_dict({"weight": heads["tags.weight"], "bias": heads["tags.bias"]})
    model.classes, model.tag_names = classes, tags
    return model.eval()


def own_head_predictions(folder: str | Path, labels: pd.DataFrame, images: str | Path, progress: bool = True,
                         workers: int = 1, trunk: str | Path | None = None,
                         rows: np.ndarray | None = None) -> tuple[dict, list[str], list[str]]:
    """The fine-tuned network's own heads on labelled rows (the embedding's centre crop, no augmentation):
    (predictions as ``predict`` returns them, tag names, uuids of the rows predicted). ``trunk``: a trunk
    cache file of all of ``labels`` to reuse or fill (the trunk is ImageNet's in every variant); ``rows``:
    predict only these rows of ``labels``."""
    from classifiers.labels import category_values, tag_values

    model = load_finetuned(folder)
    index = {name: i for i, name in enumerate(model.classes)}
    uuids = labels["uuid"].astype(str).tolist()
    if trunk is None:
        maps, ok = trunk_maps(model, read_blobs(images, set(uuids)), uuids, progress, workers)
    else:
        maps, ok, _ = cached_trunk(Path(trunk), model, images, uuids, progress, workers)
    y_cat = np.array([index.get(c, -1) if c is not None else -1 for c in category_values(labels)], dtype=np.int64)
    y_tag = np.column_stack([tag_values(labels, t) for t in model.tag_names]).astype(np.float32)
    if rows is not None:
        wanted = np.zeros(len(uuids), dtype=bool)
        wanted[rows] = True
        ok = ok & wanted
    chosen = torch.from_numpy(np.flatnonzero(ok))
    pred = predict(model, frozen_maps(model, maps[chosen], progress=progress), y_cat[ok], y_tag[ok])
    return pred, model.tag_names, [u for u, k in zip(uuids, ok) if k]


# ---------------------------------------------------------------------------------------------- CLI


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="embed-finetune", description="Fine-tune EfficientNet-Lite2, multi-task (CPU).")
    p.add_argument("--data", required=True, help="label Parquet (uuid, cc3, tag columns, group)")
    p.add_argument("--images", required=True, help="zip archive or folder of <uuid>.jpg")
    p.add_argument("--out", required=True, help="output folder (resumed when it holds a checkpoint)")
    defaults = Config()
    for name, value in asdict(defaults).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--workers", type=int, default=1, help="decoding processes")
    p.add_argument("--trunk", default=None, help="cache file of the frozen trunk's maps (default: OUT/trunk.pt)")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config = Config(**{name: getattr(args, name) for name in asdict(Config())})
    if args.threads:
        torch.set_num_threads(args.threads)
    resume = "run again with the same --out to resume from the last epoch"
    return run_command("finetune", lambda: run(args, config), resume)


def run(args: argparse.Namespace, config: Config) -> int:
    started = time.perf_counter()
    for path in (args.data, args.images):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} does not exist")
    summary = finetune(args.data, args.images, args.out, config, not args.quiet, args.workers, args.trunk)
    best = summary["curves"][summary["best_epoch"] - 1]
    trained, train_s = summary["train_rows"] * summary["epochs_run"], summary["train_minutes"] * 60
    print(f"finetune: {summary['epochs_run']} epochs of {summary['train_rows']} images ({trained} in "
          f"{train_s:.0f} s, {trained / max(train_s, 1e-9):.1f} img/s), best epoch {summary['best_epoch']} "
          f"(held-out top-1 {best.get('heldout_top1', float('nan')):.3f}, tag F1 {best['heldout_tag_f1_macro']:.3f}), "
          f"{time.perf_counter() - started:.0f} s in all -> {Path(args.out) / 'encoder.safetensors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
