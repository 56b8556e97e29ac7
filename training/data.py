"""Decoding photos for training (augmented views) and evaluation (exactly as the product embeds them)."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from embed.images import ImageError, decode, load_pixels
from embed.sources import list_images
from training.augment import augmented, phone_photo, view_seed


def read_blobs(images: str | Path, uuids: set[str]) -> dict[str, bytes]:
    """The encoded bytes of the wanted images (a few hundred MB at most: JPEGs, not pixels)."""
    blobs = {}
    for ref in list_images([images]):
        if ref.uuid not in uuids:
            continue
        try:
            blobs[ref.uuid] = ref.read()
        except (OSError, zipfile.BadZipFile) as error:
            print(f"finetune: cannot read {ref.uuid} ({ref.origin}): {error}; left out", file=sys.stderr)
    return blobs


class Photos(torch.utils.data.Dataset):
    """Rows of a label table as (uint8 HWC pixels at ``size``, row index); (None, row) for an unreadable image.

    ``augment``: a training view (``training.augment.phone_photo``) drawn from (seed, epoch, row); else the
    product's own preprocessing (shorter side to ``size``, centre crop), so evaluation sees what is embedded.
    Set ``epoch`` before iterating: workers copy the dataset when an iteration starts.
    """

    def __init__(self, blobs: dict[str, bytes], uuids: list[str], rows: np.ndarray, size: int,
                 augment: bool = False, min_scale: float = 0.35, seed: int = 0):
        self.blobs, self.uuids, self.rows, self.size = blobs, uuids, np.asarray(rows), size
        self.transform = phone_photo(size, min_scale) if augment else None
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int):
        row = int(self.rows[k])
        data = self.blobs.get(self.uuids[row])
        if data is None:
            return None, row
        try:
            if self.transform is None:
                return torch.from_numpy(load_pixels(data, self.size).copy()), row
            image = v2.functional.pil_to_tensor(decode(data))
        except ImageError:
            return None, row
        view = augmented(self.transform, image, view_seed(self.seed, self.epoch, row))
        return view.permute(1, 2, 0).contiguous(), row


def collate(items) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(pixels of the readable images, their row indices); unreadable images are dropped."""
    good = [(pixels, row) for pixels, row in items if pixels is not None]
    if not good:
        return None, torch.zeros(0, dtype=torch.long)
    return torch.stack([p for p, _ in good]), torch.as_tensor([r for _, r in good])


def loader(dataset: Photos, batch_size: int, workers: int, order: np.ndarray | None = None):
    """Batches in ``order`` (positions in the dataset; default: as stored), decoded by ``workers`` processes."""
    sampler = None if order is None else [int(i) for i in order]
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                       collate_fn=collate, prefetch_factor=4 if workers else None)
