"""Pixel-space augmentation that makes a flat-lay photo look like a seller's phone photo of a worn garment.

torchvision's transforms v2 on uint8 CHW tensors, applied to every training image at the encoder's input
size: the network sees a new view of each photo every epoch. What each step imitates:

- random resized crop (at least ``min_scale`` of the area, near-square): a garment framed closer or
  looser, never so close that a polka dot or a check is larger than the crop (patterns stay readable);
- horizontal flip; small rotation and perspective: a hand-held phone, a body that is not flat;
- colour jitter: indoor light, white balance, phone colour processing;
- blur and JPEG re-encoding: focus, motion, and the phone's and the platform's compression;
- random erasing: an arm, a bag or hair hiding part of the garment.

Each image's randomness comes from (seed, epoch, row): the same seed gives the same batch whatever the
number of DataLoader workers, and a resumed run sees the views it would have seen.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

RNG_STRIDE = 1_000_003  # seeds of (seed, epoch, row) never collide for fewer rows than this


def phone_photo(size: int, min_scale: float = 0.35) -> v2.Compose:
    """uint8 CHW image (any size) -> uint8 CHW ``size`` x ``size``, randomly."""
    return v2.Compose([
        v2.RandomApply([v2.RandomRotation(8)], p=0.4),
        v2.RandomPerspective(distortion_scale=0.15, p=0.3),
        v2.RandomResizedCrop(size, scale=(min_scale, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.25, hue=0.03),
        v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.25),
        v2.RandomApply([v2.JPEG((40, 95))], p=0.5),
        v2.RandomErasing(p=0.25, scale=(0.02, 0.12), value=0),
    ])


def view_seed(seed: int, epoch: int, row: int) -> int:
    return (seed * RNG_STRIDE + epoch) * RNG_STRIDE + row


def augmented(transform: v2.Transform, image: torch.Tensor, seed: int) -> torch.Tensor:
    """``transform(image)`` drawn from its own seed, leaving the global random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)
