"""GET /metrics (service/metrics.py): the scrape parses with prometheus-client's own parser, the counters
count what was sent (by route and status), batching shows under concurrency, and a batched image gets the
answer it gets alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="pip install 'vinted-tagger[serve]'")
from fastapi.testclient import TestClient  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402

FAMILIES = {
    "vinted_tagger_http_requests", "vinted_tagger_http_request_duration_seconds", "vinted_tagger_encoder_batch_images",
    "vinted_tagger_encoder_batch_duration_seconds", "vinted_tagger_queue_depth_images", "vinted_tagger_images_in_flight",
    "vinted_tagger_decode_failures", "vinted_tagger_model_info", "vinted_tagger_predictions", "vinted_tagger_tag_present",
    "vinted_tagger_top1_probability",
}


@pytest.fixture(scope="module")
def client(service_model: Path):
    # Batches up to 8 and a generous window, so that concurrent requests share encoder calls even on a busy CI box.
    settings = Settings(max_batch=8, batch_window_ms=20)
    with TestClient(create_app(service_model, settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def jpegs(picture, image_bytes) -> list[bytes]:
    return [image_bytes(picture(seed)) for seed in range(6)]


def scrape(client) -> dict:
    """{(sample name, sorted labels): value} from GET /metrics, parsed by prometheus-client."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str) -> float:
    return sum(v for (sample, _), v in samples.items() if sample == name)


def predict(client, data: bytes):
    return client.post("/v1/predict", files=[("files", ("a.jpg", data, "image/jpeg"))])


def test_scrape_parses_and_names_every_metric(client, service_model) -> None:
    response = client.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert FAMILIES <= set(families)
    (info,) = families["vinted_tagger_model_info"].samples
    assert info.labels["model_id"] == client.get("/readyz").json()["model_id"]
    assert info.labels["encoder"] == "efficientnet-lite2" and info.labels["variant"]
    assert int(info.labels["max_batch"]) == 8 and float(info.labels["batch_window_ms"]) == 20
    # Every category and tag is a series from the start (at 0), so rate() sees the first prediction.
    categories = {s.labels["category"] for s in families["vinted_tagger_predictions"].samples}
    assert categories == {"BLOUSES", "SHIRTS", "TANK_TOPS"}


def test_counters_count_requests_by_status(client, jpegs) -> None:
    before = scrape(client)
    for data in jpegs[:3]:
        assert predict(client, data).status_code == 200
    for data in (b"plain text, not a picture", jpegs[0][:300]):
        assert predict(client, data).status_code == 422
    assert client.post("/v1/predict", content=jpegs[0], headers={"content-type": "text/plain"}).status_code == 415
    client.get("/no-such-page")
    after = scrape(client)

    def grew(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    post = {"route": "/v1/predict", "method": "POST"}
    assert grew("vinted_tagger_http_requests_total", **post, status="200") == 3
    assert grew("vinted_tagger_http_requests_total", **post, status="422") == 2
    assert grew("vinted_tagger_http_requests_total", **post, status="415") == 1
    assert grew("vinted_tagger_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert grew("vinted_tagger_http_request_duration_seconds_count", route="/v1/predict") == 6
    assert grew("vinted_tagger_decode_failures_total", reason="not_an_image") == 1
    assert grew("vinted_tagger_decode_failures_total", reason="corrupt_image") == 1
    assert total(after, "vinted_tagger_predictions_total") - total(before, "vinted_tagger_predictions_total") == 3
    assert grew("vinted_tagger_top1_probability_count") == 3
    assert grew("vinted_tagger_encoder_batch_images_sum") == 3  # the images that reached the encoder
    assert value(after, "vinted_tagger_images_in_flight") == 0 and value(after, "vinted_tagger_queue_depth_images") == 0


def test_concurrent_requests_share_encoder_calls_and_keep_their_answers(client, jpegs) -> None:
    alone = [predict(client, data).json()["results"][0] for data in jpegs]
    before = scrape(client)
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: predict(client, jpegs[i % len(jpegs)]), range(32)))
    after = scrape(client)
    assert all(r.status_code == 200 for r in responses)
    calls = value(after, "vinted_tagger_encoder_batch_images_count") - value(before, "vinted_tagger_encoder_batch_images_count")
    images = value(after, "vinted_tagger_encoder_batch_images_sum") - value(before, "vinted_tagger_encoder_batch_images_sum")
    assert images == 32 and calls < 32  # some encoder calls carried several requests' images
    single = value(after, "vinted_tagger_encoder_batch_images_bucket", le="1.0") - value(
        before, "vinted_tagger_encoder_batch_images_bucket", le="1.0")
    assert single < calls  # at least one batch of more than one image
    for i, response in enumerate(responses):
        got, want = response.json()["results"][0], alone[i % len(jpegs)]
        assert (got["category1"], got["category2"]) == (want["category1"], want["category2"])
        assert [c["category"] for c in got["categories"]] == [c["category"] for c in want["categories"]]
        for a, b in zip(got["categories"], want["categories"]):
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)
        for tag, decision in got["tags"].items():
            assert decision["present"] == want["tags"][tag]["present"]
            assert decision["score"] == pytest.approx(want["tags"][tag]["score"], abs=1e-5)


def test_metrics_answer_before_the_model_is_ready(service_model) -> None:
    client = TestClient(create_app(service_model))  # no lifespan: the model is never loaded
    assert client.get("/readyz").status_code == 503
    samples = scrape(client)
    assert value(samples, "vinted_tagger_http_requests_total", route="/readyz", method="GET", status="503") == 1
