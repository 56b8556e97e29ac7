"""Request and response models: they validate what the service sends and document it in /openapi.json;
``image_prediction`` and ``model_info_of`` put the model's own answers (classifiers.predict.Tagger) into them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable reason, e.g. not_an_image, file_too_large")
    message: str = Field(description="what went wrong, for a person")


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer has this shape."""

    error: ErrorDetail


class CategoryScore(BaseModel):
    category: str
    probability: float = Field(ge=0.0, le=1.0)


class TagDecision(BaseModel):
    score: float = Field(description="the tag head's score (probability-like, 0..1)")
    threshold: float = Field(description="the tuned decision threshold: present = score >= threshold")
    present: Literal[0, 1]


class ImagePrediction(BaseModel):
    index: int = Field(description="position of the image in the request")
    filename: str | None = None
    status: Literal["ok"] = "ok"
    category1: str
    category2: str
    categories: list[CategoryScore] = Field(description="the k most likely categories, most likely first")
    tags: dict[str, TagDecision]


class ImageFailure(BaseModel):
    index: int
    filename: str | None = None
    status: Literal["error"] = "error"
    error: ErrorDetail


ImageResult = Annotated[ImagePrediction | ImageFailure, Field(discriminator="status")]


class PredictResponse(BaseModel):
    model_id: str
    results: list[ImageResult] = Field(description="one entry per image, in request order")


class EncoderInfo(BaseModel):
    name: str
    input_size: int
    dim: int
    weights_sha256: str | None
    runtime: str | None = Field(default=None, description="what runs the encoder: onnxruntime or openvino")
    precision: str | None = Field(default=None, description="its arithmetic: fp32, bf16 or int8")
    variant: str | None = Field(default=None, description="the variant that runs (runtime-precision), as "
                                "`embed --list-variants` names it; auto takes the fastest interchangeable one here")


class ModelInfo(BaseModel):
    model_id: str
    model_dir: str
    encoder: EncoderInfo
    classes: list[str]
    tags: list[str]
    thresholds: dict[str, float]
    fingerprint: str | None = Field(description="sha256 of the labels the heads were trained on")
    training: dict = Field(description="how the heads were trained: head kind, seed, rows, library versions")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "loading"]
    model_id: str | None = None


class Stats(BaseModel):
    batches: int = Field(description="encoder calls since start")
    images: int = Field(description="images encoded since start")
    mean_batch: float
    pending: int = Field(description="images being decoded, queued or encoded now")


TRAINING_KEYS = ("head", "seed", "rows", "group_aware_cv", "versions")


def image_prediction(described: dict, k: int, index: int, filename: str | None) -> ImagePrediction:
    """``Tagger.describe``'s answer for one image (the decisions of `classify predict`), its top ``k``."""
    top = list(described["categories"].items())[:k]
    return ImagePrediction(
        index=index,
        filename=filename,
        category1=described["category1"],
        category2=described["category2"],
        categories=[CategoryScore(category=name, probability=p) for name, p in top],
        tags={tag: TagDecision(score=d["score"], threshold=d["threshold"], present=int(d["present"]))
              for tag, d in described["tags"].items()},
    )


def model_info_of(tagger) -> ModelInfo:
    """The facts of a loaded ``Tagger`` (its encoder loaded): ids, encoder and variant, classes, thresholds."""
    encoder, training = tagger.encoder(), tagger.model.info
    spec = encoder.spec
    return ModelInfo(
        model_id=tagger.model_id,
        model_dir=str(tagger.model_dir),
        encoder=EncoderInfo(name=spec.name, input_size=spec.input_size, dim=spec.dim, weights_sha256=spec.sha256,
                            runtime=encoder.variant.runtime, precision=encoder.variant.precision,
                            variant=encoder.variant.name),
        classes=list(tagger.classes),
        tags=list(tagger.tags),
        thresholds={tag: float(t) for tag, t in zip(tagger.tags, tagger.model.thresholds())},
        fingerprint=training.get("data_fingerprint"),
        training={key: training[key] for key in TRAINING_KEYS if key in training},
    )
