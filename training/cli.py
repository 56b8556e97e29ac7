"""``finetune-encoder`` (= python -m training): fine-tune EfficientNet-Lite2 on labelled photos, resumably."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

from training.config import Config
from vinted_tagger.errors import MissingExtra, run_command


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="finetune-encoder",
                                description="Fine-tune EfficientNet-Lite2 as a multi-task encoder (CPU or GPU).")
    p.add_argument("--data", required=True, help="label Parquet (uuid, cc3, tag columns, group)")
    p.add_argument("--images", required=True, help="zip archive or folder of <uuid>.jpg")
    p.add_argument("--out", required=True, help="the variant's folder (resumed when it holds a checkpoint; "
                                                "a finished variant is not trained again)")
    for name, value in asdict(Config()).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--workers", type=int, default=1, help="decoding processes (DataLoader workers)")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config = Config(**{name: getattr(args, name) for name in asdict(Config())})
    resume = "run the same command again to continue from the last finished epoch"
    return run_command("finetune-encoder", lambda: run(args, config), resume)


def run(args: argparse.Namespace, config: Config) -> int:
    try:
        import torch
        import torchvision  # noqa: F401  (the augmentation)
    except ImportError:
        raise MissingExtra("fine-tuning needs PyTorch and torchvision: pip install 'vinted-tagger[train]'") from None
    from training.loop import finetune

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    for path in (args.data, args.images):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} does not exist")
    summary = finetune(args.data, args.images, args.out, config, not args.quiet, args.workers)
    best = summary["curves"][summary["best_epoch"] - 1]
    trained, train_s = summary["train_rows"] * summary["epochs_run"], summary["train_minutes"] * 60
    print(f"finetune-encoder: {summary['epochs_run']} epochs of {summary['train_rows']} images ({trained} in "
          f"{train_s:.0f} s, {trained / max(train_s, 1e-9):.1f} img/s), best epoch {summary['best_epoch']} "
          f"(held-out top-1 {best.get('heldout_top1', float('nan')):.3f}, tag F1 "
          f"{best['heldout_tag_f1_macro']:.3f}), {time.perf_counter() - started:.0f} s in all -> "
          f"{Path(args.out) / 'encoder.safetensors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
