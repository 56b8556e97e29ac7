"""The resumable training loop: one checkpoint per epoch, the run stops when the held-out score is flat.

DIR receives ``checkpoint.pt`` after every epoch (atomic; a stopped run continues from it with the same
command), ``curves.json`` (train and held-out scores per epoch), ``split.json`` (held-out and training uuids),
``best.pt`` (the weight average at its best held-out epoch) and, when the run is finished,
``encoder.safetensors`` and ``heads.safetensors`` (``training.weights``). A finished run is not run again.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from classifiers.labels import read_labels
from training.data import Photos, loader, read_blobs
from training.evaluate import predict, scores, selection_score
from training.labels import heldout_mask, task_labels
from training.model import BASE, build_model, multitask_loss
from training.config import Config
from training.recipe import param_groups, scheduler, weight_average
from training.weights import write_weights
from vinted_tagger.files import atomic_path, write_json

EVAL_BATCH = 64
EXTENDABLE = ("epochs", "patience")  # a checkpoint continues a run asked for more of these, nothing else


def save_atomic(obj, path: Path) -> None:
    with atomic_path(path) as temp:
        torch.save(obj, temp)


def same_config(saved: dict, config: Config) -> bool:
    """Whether a checkpoint's config is this one, ``EXTENDABLE`` aside; a setting added to the recipe since
    counts as its default (so that old checkpoints still resume)."""
    saved = {**asdict(Config()), **saved}
    return {k: v for k, v in saved.items() if k not in EXTENDABLE} == \
        {k: v for k, v in asdict(config).items() if k not in EXTENDABLE}


def finished(state: dict, config: Config) -> bool:
    return state["epoch"] >= config.epochs or state["epoch"] - state["best_epoch"] >= config.patience


class Run:
    """The data, network, optimiser and state of one variant's run in folder ``out``."""

    def __init__(self, data, images, out: Path, config: Config, workers: int, progress: bool):
        self.out, self.config, self.workers, self.progress = out, config, workers, progress
        labels = read_labels(data)
        held = heldout_mask(labels, config.seed)
        self.classes, self.tags, self.y_cat, self.y_tag = task_labels(labels)
        self.uuids = labels["uuid"].astype(str).tolist()
        blobs = read_blobs(images, set(self.uuids))
        readable = np.array([u in blobs for u in self.uuids])
        self.train_rows = np.flatnonzero(~held & readable)
        if config.limit:
            rng = np.random.default_rng(config.seed)
            self.train_rows = np.sort(rng.permutation(self.train_rows)[: config.limit])
        held_rows = np.flatnonzero(held & readable)
        if not len(self.train_rows) or not len(held_rows):
            raise ValueError(f"need images for both training and held-out rows; {len(blobs)} of "
                             f"{len(self.uuids)} read from {images}")
        write_json(out / "split.json", {"heldout": [self.uuids[i] for i in held_rows],
                                        "train": [self.uuids[i] for i in self.train_rows]})
        size = BASE.input_size
        self.train_set = Photos(blobs, self.uuids, self.train_rows, size, True, config.min_scale, config.seed)
        self.held_set = Photos(blobs, self.uuids, held_rows, size)
        self.model = build_model(len(self.classes), len(self.tags), config.freeze)
        self.ema = weight_average(self.model, config.ema_decay)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, config), weight_decay=config.weight_decay)
        self.steps_per_epoch = math.ceil(len(self.train_rows) / config.batch_size)
        self.scheduler = scheduler(self.optimizer, config, self.steps_per_epoch)
        self.state = {"epoch": 0, "curves": [], "best_score": -1.0, "best_epoch": 0, "seen": [], "seconds": 0.0}

    def resume(self) -> None:
        """Continue from ``checkpoint.pt`` when there is one of the same configuration and labels."""
        path = self.out / "checkpoint.pt"
        if not path.exists():
            return
        saved = torch.load(path, map_location="cpu", weights_only=False)
        labels_differ = saved["classes"] != self.classes or saved["tags"] != self.tags
        if not same_config(saved["config"], self.config) or labels_differ:
            raise ValueError(f"{path} was made with another configuration or label set; use a new --out")
        self.model.load_state_dict(saved["model"])
        self.ema.load_state_dict(saved["ema"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.state = saved["state"]
        print(f"finetune: {self.out.name}: resuming after epoch {self.state['epoch']}", file=sys.stderr)

    def train_epoch(self, epoch: int) -> dict:
        config, model = self.config, self.model
        model.probing = epoch <= config.probe_epochs
        model.train()
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        self.train_set.epoch = epoch
        order = torch.randperm(len(self.train_rows), generator=generator).numpy()
        totals = {"loss": 0.0, "category": 0.0, "tags": 0.0, "rows": 0}
        seen = set(self.state["seen"])
        batches = loader(self.train_set, config.batch_size, self.workers, order)
        bar = tqdm(batches, desc=f"finetune {self.out.name} epoch {epoch}/{config.epochs}", unit="step",
                   disable=not self.progress, file=sys.stderr)
        for pixels, rows in bar:
            if pixels is None:
                continue
            rows = rows.numpy()
            cat_logits, tag_logits = model(pixels)
            loss, parts = multitask_loss(cat_logits, tag_logits, torch.from_numpy(self.y_cat[rows]),
                                         torch.from_numpy(self.y_tag[rows]), config.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            self.ema.update_parameters(model)
            seen.update(self.uuids[i] for i in rows)
            totals["rows"] += len(rows)
            for key, value in (("loss", loss.item()), *parts.items()):
                totals[key] += value * len(rows)
            bar.set_postfix(loss=f"{totals['loss'] / totals['rows']:.3f}")
        bar.close()
        self.state["seen"] = sorted(seen)
        return {f"train_{k}": totals[k] / max(1, totals["rows"]) for k in ("loss", "category", "tags")}

    def heldout(self) -> dict:
        """The weight average's own heads on the held-out groups (the product's preprocessing)."""
        batches = loader(self.held_set, EVAL_BATCH, self.workers)
        return scores(predict(self.ema.module, batches, self.y_cat, self.y_tag), self.tags)

    def epoch(self) -> dict:
        epoch = self.state["epoch"] + 1
        started = time.perf_counter()
        train = self.train_epoch(epoch)
        train_seconds = time.perf_counter() - started
        held = self.heldout()
        row = {"epoch": epoch, "lr": self.optimizer.param_groups[-1]["lr"], "seconds": round(train_seconds, 1),
               "eval_seconds": round(time.perf_counter() - started - train_seconds, 1), **train,
               **{f"heldout_{k}": v for k, v in held.items()}}
        state = self.state
        state["curves"].append(row)
        state["epoch"], state["seconds"] = epoch, state["seconds"] + train_seconds
        if selection_score(held) > state["best_score"]:
            state["best_score"], state["best_epoch"] = selection_score(held), epoch
            save_atomic(self.ema.module.state_dict(), self.out / "best.pt")
        save_atomic({"config": asdict(self.config), "classes": self.classes, "tags": self.tags,
                     "model": self.model.state_dict(), "ema": self.ema.state_dict(),
                     "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "state": state}, self.out / "checkpoint.pt")
        self.write_curves()
        print(f"finetune: {self.out.name} epoch {epoch}: train loss {row['train_loss']:.3f}, held-out loss "
              f"{row['heldout_loss']:.3f} top-1 {held.get('top1', float('nan')):.3f} tag F1 "
              f"{held['tag_f1_macro']:.3f} ({train_seconds:.0f} s)", file=sys.stderr)
        return row

    def write_curves(self, **extra) -> dict:
        state = self.state
        record = {"config": asdict(self.config), "classes": self.classes, "tags": self.tags,
                  "train_rows": len(self.train_rows), "heldout_rows": len(self.held_set),
                  "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
                  "finished": finished(state, self.config), "train_minutes": round(state["seconds"] / 60, 2),
                  "selection": "held-out top-1 + macro tag F1 of the weight average's own heads",
                  "curves": state["curves"], **extra}
        write_json(self.out / "curves.json", record)
        return record


def already_finished(out: Path, config: Config) -> dict | None:
    """The summary of a finished run of this configuration in ``out`` (weights written), else None."""
    if not (out / "encoder.safetensors").exists() or not (out / "curves.json").exists():
        return None
    record = json.loads((out / "curves.json").read_text())
    if not same_config(record["config"], config):
        return None  # the resume check refuses it with a clear message
    state = {"epoch": record["epochs_run"], "best_epoch": record["best_epoch"]}
    return record if finished(state, config) else None


def finetune(data: str | Path, images: str | Path, out: str | Path, config: Config = Config(),
             progress: bool = True, workers: int = 1) -> dict:
    """Train (or continue) the variant in ``out`` until it is finished; returns its summary (curves.json)."""
    started = time.perf_counter()
    out = Path(out)
    done = already_finished(out, config)
    if done is not None:
        print(f"finetune: {out.name} is finished (epoch {done['epochs_run']}, best {done['best_epoch']}); "
              "skipped", file=sys.stderr)
        return done
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    run = Run(data, images, out, config, workers, progress)
    run.resume()
    while not finished(run.state, config):
        run.epoch()
    if not (out / "encoder.safetensors").exists() or (out / "best.pt").stat().st_mtime > \
            (out / "encoder.safetensors").stat().st_mtime:
        run.model.load_state_dict(torch.load(out / "best.pt", map_location="cpu", weights_only=True))
        write_weights(run.model, out, run.classes, run.tags)
    return run.write_curves(wall_seconds=round(time.perf_counter() - started, 1))
