"""Prometheus metrics for GET /metrics (prometheus-client): traffic, latency, batching, failures, the model,
and what it predicts (the first sign that incoming photos drift from the training photos).

Each app has its own registry (tests build several apps in one process). The service is one process: the
encoder workers are threads, so the counters need no multiprocess mode. Gauges are read from the batcher when
scraped, so a scrape costs a text rendering of a few dozen series and nothing on the request path.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics, generate_latest

# No ``*_created`` series (each counter's creation time): Prometheus does not need them, and they double the scrape.
disable_created_metrics()

NAMESPACE = "vinted_tagger"
UNMATCHED = "unmatched"  # the route label of requests no route took (404s): one series, whatever the path
# Seconds: from a lone image's few milliseconds to the shutdown timeout.
LATENCY_BUCKETS = (0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
PROBABILITY_BUCKETS = tuple(round(0.1 * k, 1) for k in range(1, 11))


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("http_requests", "HTTP requests answered, by route template, method and status",
                                ["route", "method", "status"], namespace=NAMESPACE, registry=registry)
        self.latency = Histogram("http_request_duration_seconds", "Time from request to response, by route",
                                 ["route"], namespace=NAMESPACE, buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_images = Histogram("encoder_batch_images", "Images per encoder call (micro-batch size)",
                                      namespace=NAMESPACE, buckets=BATCH_BUCKETS, registry=registry)
        self.batch_seconds = Histogram("encoder_batch_duration_seconds", "Time of one encoder call and its heads",
                                       namespace=NAMESPACE, buckets=LATENCY_BUCKETS, registry=registry)
        self.queue_depth = Gauge("queue_depth_images", "Images decoded and waiting for an encoder call",
                                 namespace=NAMESPACE, registry=registry)
        self.in_flight = Gauge("images_in_flight", "Images admitted and not answered yet (decoding, queued, "
                               "encoding)", namespace=NAMESPACE, registry=registry)
        self.decode_failures = Counter("decode_failures", "Uploads refused as images, by reason (error code)",
                                       ["reason"], namespace=NAMESPACE, registry=registry)
        self.model = Info("model", "The model served: id, encoder, runtime variant and batching limits",
                          namespace=NAMESPACE, registry=registry)
        self.top1 = Counter("predictions", "Images answered, by top-1 category", ["category"],
                            namespace=NAMESPACE, registry=registry)
        self.tags = Counter("tag_present", "Images answered with the tag present, by tag", ["tag"],
                            namespace=NAMESPACE, registry=registry)
        self.top1_probability = Histogram("top1_probability", "Probability of the top-1 category",
                                          namespace=NAMESPACE, buckets=PROBABILITY_BUCKETS, registry=registry)

    def start(self, batcher, info: dict[str, str], classes: list[str], tags: list[str]) -> None:
        """Bind the gauges to the batcher and state the model; every category and tag starts at 0 (a series
        that appears late breaks rate() and hides a category the model never predicts)."""
        self.queue_depth.set_function(lambda: batcher.queued)
        self.in_flight.set_function(lambda: batcher.pending)
        self.model.info(info)
        for name in classes:
            self.top1.labels(name)
        for name in tags:
            self.tags.labels(name)

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def batch(self, images: int, seconds: float) -> None:
        self.batch_images.observe(images)
        self.batch_seconds.observe(seconds)

    def prediction(self, described: dict) -> None:
        """One image's answer (classifiers.predict.Tagger.describe)."""
        self.top1.labels(described["category1"]).inc()
        self.top1_probability.observe(described["categories"][described["category1"]])
        for tag, decision in described["tags"].items():
            if decision["present"]:
                self.tags.labels(tag).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_of(scope) -> str:
    """The route template a request matched (``/v1/predict``, ``/static``), never the raw path: bounded labels."""
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED
