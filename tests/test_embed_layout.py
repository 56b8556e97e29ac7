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
    "efficientnet-lite2-clothing": "efficientnet-lite2-clothing-tf_efficientnet_lite2-b7e24c36c910-8698aefc",
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


# --- parts as data -------------------------------------------------------------------------------------


def test_part_records_round_trip() -> None:
    from embed.encoders import Part, lite2_tap

    parts = [lite2_tap("head"), lite2_tap("mean", 3), lite2_tap("std", 6), lite2_tap("grid", 5),
             lite2_tap("grid", 4, cells=2)]
    assert [p.record() for p in parts] == [["head", 1280], ["mean3", 88], ["std6", 352], ["grid5", 9 * 208],
                                           ["grid4x2", 4 * 120]]
    assert [p.role for p in parts] == ["shape", "texture", "texture", "layout", "layout"]
    assert [Part.from_record(*p.record()) for p in parts] == parts
    assert (parts[3].block, parts[3].cells, parts[4].cells) == (5, 3, 2)
    with pytest.raises(ValueError, match="unknown embedding part 'max3'.*valid names"):
        Part.from_record("max3", 88)
    with pytest.raises(ValueError, match="blocks 0-6"):
        lite2_tap("mean", 7)


def test_spec_refuses_inconsistent_layouts() -> None:
    spec = get_encoder("efficientnet-lite2")
    with pytest.raises(ValueError, match="parts add up to 4480 columns, dim says 4481"):
        dataclasses.replace(spec, dim=4481)
    with pytest.raises(ValueError, match="unknown resize rule 'squash'; valid: shorter-crop"):
        dataclasses.replace(spec, resize="squash")
    with pytest.raises(ValueError, match="same name"):
        dataclasses.replace(spec, parts=spec.parts + spec.parts[:1], dim=spec.dim + 1280)


def test_columns_by_role() -> None:
    spec = get_encoder("efficientnet-lite2")
    assert spec.columns({"texture"}) == ((1280, 1696), (3568, 4480))
    assert spec.columns({"shape"}) == ((0, 1280),) and spec.columns({"layout"}) == ((1696, 3568),)
    assert spec.columns({"shape", "texture", "layout"}) is None  # every column
    assert dataclasses.replace(spec, parts=(), dim=8).columns({"texture"}) is None  # one part: read it whole


# --- one identity -------------------------------------------------------------------------------------


def test_identity_refuses_a_changed_layout() -> None:
    from embed.encoders import EncoderMismatch, check_same_encoder, identity

    spec = get_encoder("efficientnet-lite2")
    record = spec.to_dict()
    check_same_encoder(record, json.loads(json.dumps(record)), "the cache")  # as read back from a manifest
    # Same weights, same size, same pooling text: only the order of two parts differs. The old check
    # (dim + pooling) let it through; the identity does not.
    swapped = {**record, "parts": [record["parts"][0], record["parts"][2], record["parts"][1], *record["parts"][3:]]}
    assert identity(swapped)[0] == identity(record)[0] and identity(swapped)[1] != identity(record)[1]
    with pytest.raises(EncoderMismatch, match="another embedding layout.*re-embed"):
        check_same_encoder(record, swapped, "the cache")
    with pytest.raises(EncoderMismatch, match="another embedding layout"):
        check_same_encoder(record, {**record, "input_size": 224}, "the model")
    with pytest.raises(EncoderMismatch, match="weights 000000000000"):
        check_same_encoder(record, {**record, "sha256": "0" * 64}, "the model")
    # The runtime folder is named by the same identity.
    assert spec.slug.endswith(f"-{identity(spec)[0][:12]}-{identity(spec)[1]}")


def test_runtime_refuses_an_export_of_another_layout(monkeypatch, tmp_path) -> None:
    from embed import runtime

    spec = get_encoder("efficientnet-lite2")
    other = dataclasses.replace(spec, pooling="another pooling")
    monkeypatch.setattr(runtime, "ensure_onnx", lambda wanted, *args: (tmp_path / "model.onnx", other))
    with pytest.raises(RuntimeError, match="other weights or another layout"):
        runtime.Encoder.load(spec)


# --- the exporter builds what the parts say --------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter, chosen on purpose
def test_a_spec_with_other_taps_exports_and_runs(tmp_path) -> None:
    """Block 4 mean only plus a 2x2 grid on block 2: the graph computes exactly these parts, in this order."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from embed.encoders import lite2_tap
    from embed.export import build_embedder, export_onnx, grid_means

    parts = (lite2_tap("mean", 4), lite2_tap("grid", 2, cells=2))
    spec = dataclasses.replace(get_encoder("efficientnet-lite2"), name="lite2-taps", parts=parts,
                               dim=sum(p.width for p in parts), pooling="block 4 mean + block 2 2x2 grid")
    assert spec.dim == 120 + 4 * 48 and spec.layout != get_encoder("efficientnet-lite2").layout
    module, _ = build_embedder(spec)
    assert module.last_block == 4  # blocks 5 and 6 and the head are not in the graph
    path = tmp_path / "taps.onnx"
    export_onnx(module, spec, path)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 260, 260, 3), dtype=np.uint8)
    rows = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"pixels": pixels})[0]
    assert rows.shape == (3, spec.dim)
    # The same parts written out by hand on the network.
    net = module.net
    with torch.inference_mode():
        x = net.bn1(net.conv_stem(module.normalise(torch.from_numpy(pixels))))
        for index in range(5):
            x = net.blocks[index](x)
            if index == 2:
                grid = grid_means(x, 2)
        mean4 = x.mean((2, 3))
    unit = [(p / p.norm(dim=1, keepdim=True)).numpy() for p in (mean4, grid)]
    expected = np.concatenate(unit, axis=1) / np.sqrt(2)
    np.testing.assert_allclose(rows, expected, atol=1e-5)


def test_export_checks_declared_widths() -> None:
    from embed.encoders import Part
    from embed.export import build_embedder

    spec = dataclasses.replace(get_encoder("efficientnet-lite2"), parts=(Part("mean", 4, 121),), dim=121)
    with pytest.raises(RuntimeError, match="part mean4 of the network has 120 columns, the encoder spec says 121"):
        build_embedder(spec)


def test_existing_exports_keep_their_folders() -> None:
    """Every export already on this machine (the real home, read only) is still found under its folder name."""
    from pathlib import Path

    from embed.encoders import EncoderSpec

    records = sorted((Path.home() / ".cache" / "vinted-tagger" / "encoders").glob("*/spec.json"))
    if not records:
        pytest.skip("no exported encoder in ~/.cache/vinted-tagger/encoders")
    for path in records:
        spec = EncoderSpec.from_dict(json.loads(path.read_text())["spec"])
        assert spec.slug == path.parent.name
