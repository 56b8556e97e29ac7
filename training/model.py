"""The multi-task network: EfficientNet-Lite2 (built by ``embed.export``) with a softmax over the categories
and one sigmoid per tag on its pooled head features, and the masked multi-task loss."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from embed.encoders import ENCODERS, EncoderSpec
from embed.export import Normalise, lite_classifier

BASE = ENCODERS["efficientnet-lite2"]


class MultiTaskNet(nn.Module):
    """uint8 NHWC pixels -> (category logits, tag logits).

    ``freeze``: the stem and blocks 0..freeze keep ImageNet's weights and batch-norm statistics, and run
    without autograd (most of a step's saving); -1 trains the whole network. ``probing`` (LP-FT's first phase)
    freezes the whole network: only the heads learn.
    """

    def __init__(self, net: nn.Module, n_classes: int, n_tags: int, freeze: int, spec: EncoderSpec = BASE):
        super().__init__()
        if not -1 <= freeze < len(net.blocks):
            raise ValueError(f"freeze must be -1 (whole network) or a block index 0-{len(net.blocks) - 1}, "
                             f"got {freeze}")
        self.normalise = Normalise(spec.mean, spec.std)
        self.net = net
        self.dropout = nn.Dropout(0.2)
        self.category = nn.Linear(net.num_features, n_classes)
        self.tags = nn.Linear(net.num_features, n_tags)
        self.freeze = freeze
        self.probing = False
        for module in self.frozen_modules():
            module.requires_grad_(False)

    def frozen_modules(self) -> list[nn.Module]:
        if self.freeze < 0:
            return []
        return [self.net.conv_stem, self.net.bn1, *self.net.blocks[: self.freeze + 1]]

    def train(self, mode: bool = True) -> MultiTaskNet:
        super().train(mode)
        for module in [self.net] if self.probing else self.frozen_modules():
            module.eval()  # frozen means frozen batch-norm statistics too
        return self

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pooled head features (N, 1280): the frozen part runs without autograd."""
        net, grad = self.net, torch.is_grad_enabled()
        x = self.normalise(pixels).contiguous(memory_format=torch.channels_last)
        with torch.set_grad_enabled(grad and self.freeze < 0 and not self.probing):
            x = net.bn1(net.conv_stem(x))
        for index, block in enumerate(net.blocks):
            with torch.set_grad_enabled(grad and index > self.freeze and not self.probing):
                x = block(x)
        with torch.set_grad_enabled(grad and not self.probing):
            return net.forward_head(net.bn2(net.conv_head(x)), pre_logits=True)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.dropout(self.features(pixels))
        return self.category(features), self.tags(features)


def build_model(n_classes: int, n_tags: int, freeze: int, spec: EncoderSpec = BASE) -> MultiTaskNet:
    """ImageNet weights (checksum verified by ``embed.export``) or the spec's fine-tuned ones."""
    model = MultiTaskNet(lite_classifier(spec), n_classes, n_tags, freeze, spec)
    return model.to(memory_format=torch.channels_last)


def multitask_loss(cat_logits: torch.Tensor, tag_logits: torch.Tensor, y_cat: torch.Tensor, y_tag: torch.Tensor,
                   label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Mean cross-entropy over the rows with a category plus mean BCE over the known tag entries.

    Unknown labels (-1, NaN) are selected out, not multiplied by zero: NaN * 0 is NaN, and a row with no
    label must contribute exactly no gradient. Each task is the mean over its own labelled entries, so a
    task weighs the same whatever its share of the batch.
    """
    zero = (cat_logits.sum() + tag_logits.sum()) * 0.0  # keeps both in the graph: zero gradient, not None
    known_cat = y_cat >= 0
    cat = F.cross_entropy(cat_logits[known_cat], y_cat[known_cat], label_smoothing=label_smoothing) \
        if known_cat.any() else zero
    known_tag = ~torch.isnan(y_tag)
    tag = F.binary_cross_entropy_with_logits(tag_logits[known_tag], y_tag[known_tag]) if known_tag.any() else zero
    return cat + tag, {"category": float(cat.detach()), "tags": float(tag.detach())}
