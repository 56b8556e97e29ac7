"""The embedding layout as data (embed/encoders.py): pinned identities, parts, and the identity check."""

from __future__ import annotations

import dataclasses
import json

import pytest

from embed.encoders import get_encoder

# Today's layout digests and folder names: caches, exported ONNX files and model.json are found by these, so a
# refactoring that changed one would orphan every existing cache (they must never change for these encoders).
PINNED = {
    "efficientnet-lite2": "efficientnet-lite2-tf_efficientnet_lite2-9656183eaeaf-8698aefc",
    "efficientnet-lite2-clothing": "efficientnet-lite2-clothing-tf_efficientnet_lite2-d1c2ce1fed14-8698aefc",
    "open_clip:ViT-B-32:openai": "open_clip-ViT-B-32-7d3194f79e64-5f12c2dd",
    "open_clip:ViT-B-16:laion2b_s34b_b88k": "open_clip-ViT-B-16-1f6950f53d47-5f12c2dd",
    "open_clip:ViT-B-16-SigLIP:webli": "open_clip-ViT-B-16-SigLIP-8d8a5fd1ba94-314fb0ef",
}
LITE2_RECORD_PARTS = [["head", 1280], ["mean3", 88], ["std3", 88], ["mean4", 120], ["std4", 120], ["grid5", 1872],
                      ["std5", 208], ["mean6", 352], ["std6", 352]]


@pytest.mark.parametrize("name", PINNED)
def test_layout_digests_and_folder_names_are_pinned(name) -> None:
    spec = get_encoder(name)
    assert spec.slug == PINNED[name]
    assert spec.layout == PINNED[name].rsplit("-", 1)[1]


def test_lite2_record_is_unchanged() -> None:
    # What manifests and model.json hold: the same keys and the parts as [name, width], in column order.
    record = get_encoder("efficientnet-lite2").to_dict()
    assert sorted(record) == ["arch", "dim", "family", "input_size", "mean", "name", "parts", "pooling", "resize",
                              "sha256", "std", "weights"]
    assert json.loads(json.dumps(record["parts"])) == LITE2_RECORD_PARTS and record["dim"] == 4480
