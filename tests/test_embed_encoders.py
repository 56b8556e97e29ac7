"""The encoder table (embed/encoders.py), open_clip name resolution and the offline hub-tag error."""

from __future__ import annotations

import time

import pytest

from embed import cli, export
from embed.encoders import ENCODERS, EncoderSpec, get_encoder
from embed.runtime import Encoder


def test_efficientnet_lite2_entry() -> None:
    spec = get_encoder("efficientnet-lite2")
    assert spec.name == "efficientnet-lite2"
    assert spec.family == "efficientnet-lite" and spec.arch == "tf_efficientnet_lite2"
    assert spec.input_size == 260 and spec.resize == "shorter-crop"
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.5, 0.5, 0.5)
    # head (1280) + mean and std of blocks 3, 4, 6 (88, 120, 352 channels) + block 5 (208): 3x3 grid and std
    assert spec.dim == 1280 + 2 * (88 + 120 + 352) + 9 * 208 + 208 == 4480
    assert sum(part.width for part in spec.parts) == spec.dim and spec.parts[0].record() == ["head", 1280]
    assert [part.role for part in spec.parts][:3] == ["shape", "texture", "texture"]
    assert len(spec.sha256) == 64


def test_spec_round_trips_through_dict() -> None:
    spec = get_encoder("efficientnet-lite2")
    assert EncoderSpec.from_dict({**spec.to_dict(), "unrelated": 1}) == spec


def test_unknown_encoder_lists_valid_names() -> None:
    with pytest.raises(ValueError) as error:
        get_encoder("resnet-9000")
    message = str(error.value)
    assert "resnet-9000" in message
    for name in ENCODERS:
        assert name in message
    assert "open_clip:<arch>:" in message


def test_list_encoders_prints_the_table(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["--list-encoders"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:6] == ["name", "input", "resize", "mean", "std", "dim"]
    row = next(line for line in lines if line.startswith("efficientnet-lite2 "))
    assert row.split()[:6] == ["efficientnet-lite2", "260", "shorter-crop", "[0.5,", "0.5,", "0.5]"]
    assert " 4480 " in row
    assert any(line.startswith("open_clip:<arch>:<pretrained>") for line in lines)


def test_open_clip_local_checkpoint_spec(tiny_clip) -> None:
    spec = get_encoder(tiny_clip.name)
    assert spec.family == "open_clip" and spec.arch == "tiny-test"
    assert spec.input_size == 64 and spec.dim == 32
    assert spec.sha256 == tiny_clip.sha256
    assert spec.weights == str(tiny_clip.checkpoint.resolve())
    assert len(spec.mean) == len(spec.std) == 3


def test_open_clip_unknown_arch_lists_valid_ones() -> None:
    with pytest.raises(ValueError) as error:
        get_encoder("open_clip:No-Such-Arch:openai")
    message = str(error.value)
    assert "No-Such-Arch" in message and "ViT-B-32" in message


def test_open_clip_unknown_tag_lists_valid_tags() -> None:
    with pytest.raises(ValueError) as error:
        get_encoder("open_clip:ViT-B-32:/no/such/checkpoint.pt")
    assert "openai" in str(error.value)


@pytest.mark.parametrize("name", ["open_clip:ViT-B-32", "open_clip::openai", "open_clip:ViT-B-32:"])
def test_open_clip_malformed_name(name: str) -> None:
    with pytest.raises(ValueError, match="open_clip:<arch>:<pretrained>"):
        get_encoder(name)


def test_open_clip_hub_tag_offline_fails_fast(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    # Deterministic everywhere: a connected CI machine must not start a 350 MB download here.
    hosts = []
    monkeypatch.setattr(export, "_reachable", lambda host: hosts.append(host) or False)
    name = "open_clip:ViT-B-32:openai"
    spec = get_encoder(name)
    assert spec.sha256 is None and spec.dim == 512

    start = time.perf_counter()
    with pytest.raises(RuntimeError) as error:
        Encoder.load(spec)
    assert time.perf_counter() - start < 15
    assert hosts, "the network check was never made"
    message = str(error.value)
    assert "cannot be reached" in message and "open_clip:ViT-B-32:/path/to/checkpoint" in message

    assert cli.main(["--export-only", "--encoder", name]) == 2
    err = capsys.readouterr().err
    assert "embed: error:" in err and "/path/to/checkpoint" in err


def test_local_checkpoint_takes_the_archs_published_preprocessing(tmp_path) -> None:
    # A SigLIP checkpoint file must be normalised with SigLIP's 0.5/0.5, not OpenAI's CLIP statistics.
    checkpoint = tmp_path / "siglip.pt"
    checkpoint.write_bytes(b"weights")
    siglip = get_encoder(f"open_clip:ViT-B-16-SigLIP:{checkpoint}")
    clip = get_encoder(f"open_clip:ViT-B-32:{checkpoint}")
    assert siglip.mean == (0.5, 0.5, 0.5) and siglip.std == (0.5, 0.5, 0.5)
    assert clip.mean[0] == pytest.approx(0.48145466)
