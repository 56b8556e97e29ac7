"""Robust fine-tuning by weight-space interpolation (WiSE-FT, Wortsman et al. 2022).

A fine-tuned network gains on the photos it was tuned on and can lose the general features other photos
(worn garments, street light) need; mixing its weights with ImageNet's, ``(1 - alpha) * imagenet + alpha *
tuned``, keeps most of the gain and much of the generality, with no retraining. ``alpha`` is chosen on the
held-out groups (category top-1 plus tag F1 on the photos of worn dresses), never on the test split.
"""

from __future__ import annotations

from pathlib import Path

import torch

from embed.export import lite_classifier
from training.model import BASE
from training.weights import write_encoder

ALPHAS = (0.25, 0.5, 0.75)  # 1.0 is the fine-tuned network itself
TIE = 0.002  # held-out scores closer than this to the best tie


def interpolate(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float) -> dict:
    """``(1 - alpha) * base + alpha * tuned`` for every float tensor (weights and batch-norm statistics, in
    fp32); integer tensors (batch counters) are the tuned network's."""
    if set(base) != set(tuned):
        raise ValueError(f"the two networks differ: {sorted(set(base) ^ set(tuned))[:3]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    mixed = {}
    for name, weight in tuned.items():
        if weight.is_floating_point():
            mixed[name] = torch.lerp(base[name].float(), weight.float(), alpha)
        else:
            mixed[name] = weight
    return mixed


def wise_encoder(tuned_file: Path, alpha: float, out: Path) -> dict:
    """Write the interpolation of a fine-tuned encoder weight file with ImageNet's to ``out`` (fp16)."""
    from safetensors.torch import load_file

    out.parent.mkdir(parents=True, exist_ok=True)
    base = lite_classifier(BASE).state_dict()
    return write_encoder(interpolate(base, load_file(str(tuned_file)), alpha), out)


def choose_alpha(scores: dict[float, float], tie: float = TIE) -> float:
    """The alpha with the best held-out score; among those within ``tie`` of it, the middle one (of an even
    number, the middle one nearer 0.5): no edge of the range is chosen on noise."""
    if not scores:
        raise ValueError("no alpha was scored")
    best = max(scores.values())
    tied = sorted(alpha for alpha, score in scores.items() if score >= best - tie)
    middle = tied[(len(tied) - 1) // 2 : len(tied) // 2 + 1]
    return min(middle, key=lambda alpha: (abs(alpha - 0.5), alpha))
