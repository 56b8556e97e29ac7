"""What shapes a fine-tuning run (plain data: the command line reads it without importing PyTorch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Config:
    """What shapes a run; a checkpoint made with another config is refused on resume (``epochs`` and
    ``patience`` aside: a run may be given more)."""

    freeze: int = 2  # stem and blocks 0..freeze stay ImageNet's; -1 trains the whole network
    epochs: int = 8  # at most (the cosine ends there); stops earlier once held-out is flat for ``patience``
    patience: int = 2
    probe_epochs: int = 0  # LP-FT: epochs that train only the heads (network frozen) before fine-tuning
    batch_size: int = 32
    lr: float = 1e-3  # the heads; the top of the network gets lr * backbone_lr_scale
    backbone_lr_scale: float = 0.3
    layer_decay: float = 0.7  # each block further down learns this much slower than the one above
    weight_decay: float = 0.01
    warmup_steps: int = 150
    label_smoothing: float = 0.1
    ema_decay: float = 0.998
    min_scale: float = 0.35  # smallest random-resized-crop area (patterns stay readable)
    seed: int = 0
    limit: int = 0  # train on at most this many rows (smoke runs); 0 = all
