"""Weight files of a fine-tuned network: the encoder (fp16 safetensors with timm's names, an encoder of the
table as ``efficientnet-lite2:<file>``) and its own heads; loading both back (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from embed.encoders import LITE2_WEIGHTS_PREFIX, get_encoder
from training.model import MultiTaskNet, build_model
from vinted_tagger.files import atomic_path, file_sha256


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as temp:
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(temp), metadata=metadata)


def write_encoder(state: dict[str, torch.Tensor], path: Path) -> dict:
    """A network state dict as an encoder weight file (fp16: half the size, and what the table loads)."""
    save_tensors({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, path)
    return {"encoder_file": path.name, "encoder_sha256": file_sha256(path), "encoder_bytes": path.stat().st_size}


def write_weights(model: MultiTaskNet, out: Path, classes: list[str], tags: list[str]) -> dict:
    """``out/encoder.safetensors`` (the network) and ``out/heads.safetensors`` (its own heads)."""
    heads = {"category.weight": model.category.weight, "category.bias": model.category.bias,
             "tags.weight": model.tags.weight, "tags.bias": model.tags.bias}
    save_tensors(heads, out / "heads.safetensors", {"classes": json.dumps(classes), "tags": json.dumps(tags)})
    return write_encoder(model.net.state_dict(), out / "encoder.safetensors")


def load_finetuned(folder: str | Path, encoder: str | Path | None = None) -> MultiTaskNet:
    """The fine-tuned network with its own heads, from a run folder; ``encoder``: another weight file for
    the network (a WiSE-FT interpolation) under the same heads. Weights are checked by ``embed.export``."""
    from safetensors import safe_open

    folder = Path(folder)
    with safe_open(str(folder / "heads.safetensors"), "pt") as handle:
        meta = handle.metadata()
        heads = {k: handle.get_tensor(k) for k in handle.keys()}
    classes, tags = json.loads(meta["classes"]), json.loads(meta["tags"])
    spec = get_encoder(f"{LITE2_WEIGHTS_PREFIX}{encoder or folder / 'encoder.safetensors'}")
    model = build_model(len(classes), len(tags), freeze=-1, spec=spec)
    model.category.load_state_dict({"weight": heads["category.weight"], "bias": heads["category.bias"]})
    model.tags.load_state_dict({"weight": heads["tags.weight"], "bias": heads["tags.bias"]})
    model.classes, model.tag_names = classes, tags
    return model.eval()
