"""The recipe's settings and its optimisation pieces: layer-wise learning-rate decay, warm-up then cosine,
and an exponential moving average of the weights (``torch.optim.swa_utils.AveragedModel``)."""

from __future__ import annotations

import math
import torch
from torch.optim.swa_utils import AveragedModel

from training.config import Config
from training.model import MultiTaskNet


def network_levels(model: MultiTaskNet) -> list[list[torch.nn.Parameter]]:
    """The network's parameters from the top (head convolution with the last block) down to the stem."""
    net = model.net
    levels = [[*net.conv_head.parameters(), *net.bn2.parameters(), *net.blocks[-1].parameters()]]
    levels += [list(block.parameters()) for block in reversed(net.blocks[:-1])]
    levels.append([*net.conv_stem.parameters(), *net.bn1.parameters()])
    return levels


def param_groups(model: MultiTaskNet, config: Config) -> list[dict]:
    """The heads at ``lr``; each trainable level of the network ``layer_decay`` times slower than the one
    above it (the top at ``lr * backbone_lr_scale``): low blocks hold general features worth keeping."""
    heads = {"params": [*model.category.parameters(), *model.tags.parameters()], "lr": config.lr, "name": "heads"}
    groups = [heads]
    top = config.lr * config.backbone_lr_scale
    for depth, params in enumerate(network_levels(model)):
        trainable = [p for p in params if p.requires_grad]
        if trainable:
            groups.append({"params": trainable, "lr": top * config.layer_decay ** depth, "name": f"level{depth}"})
    return groups


def warmup_cosine(step: int, start: int, warmup: int, total: int) -> float:
    """0 before ``start``, then linear warm-up over ``warmup`` steps and cosine decay to 0 at ``total``."""
    if step < start:
        return 0.0
    step -= start
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - start - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def scheduler(optimizer: torch.optim.Optimizer, config: Config, steps_per_epoch: int):
    """One factor per group: during LP-FT's probe the heads learn at full rate and the network not at all;
    then every group warms up and decays on one cosine to the last planned step."""
    probe, total = config.probe_epochs * steps_per_epoch, config.epochs * steps_per_epoch

    def heads(step: int) -> float:
        return 1.0 if step < probe else warmup_cosine(step, probe, config.warmup_steps, total)

    def network(step: int) -> float:
        return warmup_cosine(step, probe, config.warmup_steps, total)

    lambdas = [heads if group["name"] == "heads" else network for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


def weight_average(model: MultiTaskNet, decay: float) -> AveragedModel:
    """An exponential moving average of the weights and batch-norm statistics; its decay ramps up from 0
    over the first steps (as timm's ModelEmaV3 does) so that it does not keep the random heads for long."""
    def ema(averaged: torch.Tensor, current: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        rate = min(decay, (1.0 + float(count)) / (10.0 + float(count)))
        return averaged * rate + current * (1.0 - rate)

    return AveragedModel(model, avg_fn=ema, use_buffers=True)
