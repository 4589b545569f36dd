"""Prometheus metrics, one registry per app (so tests can build several apps in a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("seqserve_requests", "HTTP requests", ["endpoint", "status"], registry=r)
        self.request_seconds = Histogram("seqserve_request_duration_seconds", "HTTP request latency",
                                         ["endpoint", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("seqserve_in_flight_requests", "HTTP requests being served", registry=r)
        self.queue_wait_seconds = Histogram("seqserve_queue_wait_seconds", "time an item waited for its batch",
                                            ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("seqserve_queue_depth", "items waiting for a batch", ["model"], registry=r)
        self.batch_size = Histogram("seqserve_batch_size", "items per model run", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.inference_seconds = Histogram("seqserve_inference_seconds", "one batch: encode, run, decode",
                                           ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.rejected = Counter("seqserve_rejected", "items refused at admission", ["model"], registry=r)
        self.refused = Counter("seqserve_refused_requests", "requests refused at admission, by reason "
                               "(queue_full, client_limit, would_time_out, too_much_work)", ["model", "reason"],
                               registry=r)
        self.music21_calls = Counter("seqserve_music21_calls", "music21 calls in worker processes, by outcome "
                                     "(ok, error, timeout, cancelled)", ["call", "outcome"], registry=r)
        self.model_ready = Gauge("seqserve_model_ready", "1 when the model is loaded and warmed up", ["model"],
                                 registry=r)
