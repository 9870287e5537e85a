"""Prometheus metrics of the HTTP server (its own registry, so several servers can live in one process)."""
from typing import Tuple

__all__ = ["ServerMetrics"]


class ServerMetrics:
    """The Prometheus metrics of one server: requests and errors per endpoint and status, latency,
    batch sizes, images classified; :meth:`render` gives the text format."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("stn_requests", "HTTP requests answered", ["endpoint", "code"], registry=self.registry)
        self.errors = Counter("stn_request_errors", "Requests answered with an error", ["endpoint", "code"],
                              registry=self.registry)
        self.latency = Histogram("stn_request_latency_seconds", "Time to answer /v1/predict", registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.batch = Histogram("stn_batch_size", "Images per inference batch", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.images = Counter("stn_images", "Images classified", registry=self.registry)

    def render(self) -> Tuple[bytes, str]:
        """(body, content type) of ``GET /metrics``."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
