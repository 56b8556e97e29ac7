"""The PyTorch side (embed/export.py): weight mapping checked on ImageNet, ONNX export checked against torch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from embed.encoders import get_encoder
from embed.export import build_embedder, grid_means, lite_classifier
from embed.images import resize_shorter_crop
from embed.runtime import graph_dir

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def real_images() -> list[Image.Image]:
    """Real photos and crops of them (different aspect ratios, so the shorter-side resize matters)."""
    chelsea, coffee = data.chelsea(), data.coffee()  # 300 x 451, 400 x 600
    return [
        Image.fromarray(chelsea),
        Image.fromarray(coffee),
        Image.fromarray(chelsea[40:260, 120:330]),
        Image.fromarray(coffee[50:380, 80:300]),
    ]


def torch_embed(module: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(np.array(pixels))).numpy()


def assert_rows_agree(onnx_rows: np.ndarray, torch_rows: np.ndarray) -> None:
    assert onnx_rows.shape == torch_rows.shape
    cosine = (onnx_rows * torch_rows).sum(1) / (
        np.linalg.norm(onnx_rows, axis=1) * np.linalg.norm(torch_rows, axis=1)
    )
    assert cosine.min() > 0.9999, cosine
    assert np.abs(onnx_rows - torch_rows).max() < 1e-4


@pytest.fixture(scope="module")
def lite2_classifier() -> torch.nn.Module:
    return lite_classifier(get_encoder("efficientnet-lite2"))


def table_preprocess(images: list[Image.Image]) -> tuple[np.ndarray, torch.Tensor]:
    """The table's preprocessing written out by hand: shorter side to 260 + centre crop, (x/255-0.5)/0.5."""
    pixels = np.stack([resize_shorter_crop(image, 260) for image in images])
    return pixels, (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5


def test_lite2_imagenet_top5(lite2_classifier) -> None:
    """The positional weight mapping is right only if the full classifier still recognises ImageNet classes."""
    pixels, x = table_preprocess([Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())])
    assert pixels.shape == (2, 260, 260, 3)
    with torch.inference_mode():
        top5 = lite2_classifier(x).topk(5, dim=1).indices.tolist()
    assert CAT_CLASSES & set(top5[0]), f"chelsea top 5: {top5[0]}"
    assert ESPRESSO in top5[1], f"coffee top 5: {top5[1]}"


def test_lite2_onnx_matches_torch(lite2_encoder) -> None:
    spec = lite2_encoder.spec
    module, resolved = build_embedder(get_encoder("efficientnet-lite2"))
    assert resolved.sha256 == spec.sha256
    pixels = np.stack([lite2_encoder.pixels(image) for image in real_images()])
    assert pixels.shape == (4, 260, 260, 3) and pixels.dtype == np.uint8
    onnx_rows = lite2_encoder.encode(pixels)
    assert onnx_rows.shape == (4, spec.dim) and onnx_rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(onnx_rows, axis=1), 1.0, atol=1e-5)
    assert_rows_agree(onnx_rows, torch_embed(module, pixels))
    # Different photos must give different embeddings (the pooling did not collapse).
    assert (onnx_rows[0] @ onnx_rows[1]) < 0.95


def test_lite2_embedding_head_is_the_classifier_feature(lite2_classifier, lite2_encoder) -> None:
    """The ONNX graph (normalisation inside) gives, as its first part, the pooled features of the ImageNet-checked
    classifier fed by hand-normalised pixels: ties the exported embedding to the table's mean/std."""
    pixels, x = table_preprocess(real_images())
    with torch.inference_mode():
        features = lite2_classifier.forward_head(lite2_classifier.forward_features(x), pre_logits=True).numpy()
    assert features.shape == (4, 1280)
    expected = features / np.linalg.norm(features, axis=1, keepdims=True)
    head = lite2_encoder.encode(pixels)[:, :1280] * 3.0  # 9 unit-norm parts, concatenated, divided by sqrt(9)
    np.testing.assert_allclose(head, expected, atol=1e-4)


@pytest.mark.parametrize("size", [(17, 17), (8, 8), (9, 14)])
def test_grid_means_are_adaptive_average_pooling(size) -> None:
    x = torch.randn(2, 5, *size)
    expected = torch.nn.functional.adaptive_avg_pool2d(x, 2)  # (N, C, 2, 2)
    got = grid_means(x, 2).view(2, 4, 5).permute(0, 2, 1).reshape(2, 5, 2, 2)  # cell by cell -> (N, C, 2, 2)
    torch.testing.assert_close(got, expected)


def test_lite2_grid_part_keeps_position(lite2_encoder) -> None:
    """Block 5's grid part changes when a photo is mirrored, while the whole-image statistics do not:
    the grid is what carries where things are."""
    from devtools.analysis import embedding_parts

    image = real_images()[0]
    pixels = lite2_encoder.pixels(image)
    rows = lite2_encoder.encode(np.stack([pixels, pixels[:, ::-1]]))
    parts = embedding_parts(lite2_encoder.spec.to_dict())
    mirrored_cos = {name: float(rows[0, part] @ rows[1, part] / (np.linalg.norm(rows[0, part]) * np.linalg.norm(rows[1, part])))
                    for name, part in parts.items()}
    assert mirrored_cos["mean6"] > 0.98 and mirrored_cos["std5"] > 0.98
    assert mirrored_cos["grid5"] < mirrored_cos["std5"] - 0.05


def test_lite2_export_record(lite2_encoder) -> None:
    folder = graph_dir(lite2_encoder.spec)  # the user's export, else the packaged one
    record = json.loads((folder / "spec.json").read_text())
    assert record["spec"]["sha256"] == get_encoder("efficientnet-lite2").sha256
    assert len(record["onnx_sha256"]) == 64 and "onnxruntime" in record["versions"]
    assert lite2_encoder.onnx_path == folder / "model.onnx"


def test_tiny_open_clip_onnx_matches_torch(tiny_clip, tiny_encoder) -> None:
    module, resolved = build_embedder(get_encoder(tiny_clip.name))
    assert resolved.sha256 == tiny_clip.sha256
    pixels = np.stack([tiny_encoder.pixels(image) for image in real_images()])
    assert pixels.shape == (4, 64, 64, 3)
    onnx_rows = tiny_encoder.encode(pixels)
    assert onnx_rows.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(onnx_rows, axis=1), 1.0, atol=1e-5)
    assert_rows_agree(onnx_rows, torch_embed(module, pixels))


def test_tiny_open_clip_matches_open_clip_preprocessing(tiny_clip, tiny_encoder) -> None:
    """Same pixels through open_clip's own model and mean/std for this checkpoint give the same embedding."""
    import open_clip

    model = open_clip.create_model("tiny-test", pretrained=str(tiny_clip.checkpoint)).eval()
    mean, std = model.visual.preprocess_cfg["mean"], model.visual.preprocess_cfg["std"]
    assert tiny_encoder.spec.mean == pytest.approx(mean) and tiny_encoder.spec.std == pytest.approx(std)
    pixels = np.stack([tiny_encoder.pixels(image) for image in real_images()])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.inference_mode():
        expected = model.encode_image(x, normalize=True).numpy()
    np.testing.assert_allclose(tiny_encoder.encode(pixels), expected, atol=1e-4)


def test_checkpoint_weights_are_loaded(tiny_clip, tiny_encoder, tmp_path) -> None:
    """Another checkpoint of the same architecture is a different encoder (new sha256, new embeddings)."""
    import open_clip

    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    torch.save(open_clip.create_model("tiny-test").state_dict(), other)
    other_spec = get_encoder(f"open_clip:tiny-test:{other}")
    assert other_spec.sha256 != tiny_clip.sha256
    module, _ = build_embedder(other_spec)
    pixels = np.stack([tiny_encoder.pixels(image) for image in real_images()[:2]])
    assert not np.allclose(torch_embed(module, pixels), tiny_encoder.encode(pixels), atol=1e-3)


@pytest.mark.parametrize("batch", [1, 3])
def test_dynamic_batch_axis(tiny_encoder, batch: int) -> None:
    pixels = np.stack([tiny_encoder.pixels(image) for image in real_images()[:batch]])
    rows = tiny_encoder.encode(pixels)
    assert rows.shape == (batch, 32)
    np.testing.assert_allclose(rows[0], tiny_encoder.encode(pixels[:1])[0], atol=1e-5)
