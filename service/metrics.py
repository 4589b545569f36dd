"""Prometheus metrics, one registry per app (so tests can build several apps in a process).

Conventions (the Prometheus naming guide): base units (seconds, bytes), `_total` counters,
no `_created` series, the process collector (`process_*`: CPU, memory, file descriptors).
Every model metric carries `model` and `version`. One meaning for every model:
- `seqserve_batch_size`: items advanced by ONE graph run — texts of a sentiment batch,
  sentences of a translation decoder step, streams of a music step;
- `seqserve_inference_seconds`: that one run, with what runs around it in the batcher's thread
  (tokenising and decoding for sentiment, sampling and the bar clock for music, the beam
  bookkeeping for translation);
- warm-up is not counted (a model records once it is ready).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, disable_created_metrics

disable_created_metrics()  # the `_created` twin of every counter and histogram: noise for every scraper

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MODEL = ["model", "version"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.requests = Counter("seqserve_requests", "HTTP requests, by endpoint, status and outcome (ok, or the "
                                "error code of the answer: validation_error, overloaded, timeout, ...)",
                                ["endpoint", "status", "outcome"], registry=r)
        self.request_seconds = Histogram("seqserve_request_duration_seconds", "HTTP request latency",
                                         ["endpoint", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("seqserve_in_flight_requests", "HTTP requests being served", registry=r)
        self.queue_wait_seconds = Histogram("seqserve_queue_wait_seconds", "time an item waited to join a batch",
                                            MODEL, buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("seqserve_queue_depth", "items waiting to join a batch", MODEL, registry=r)
        self.batch_size = Histogram("seqserve_batch_size", "items advanced by one graph run", MODEL,
                                    buckets=BATCH_BUCKETS, registry=r)
        self.inference_seconds = Histogram("seqserve_inference_seconds", "one graph run with its batch's "
                                           "pre- and post-processing", MODEL, buckets=LATENCY_BUCKETS, registry=r)
        self.refused = Counter("seqserve_refused_requests", "requests refused at admission, by reason "
                               "(queue_full, client_limit, would_time_out, too_much_work)", MODEL + ["reason"],
                               registry=r)
        self.refused_items = Counter("seqserve_refused_items", "items (texts, sentences, streams) of refused "
                                     "requests", MODEL, registry=r)
        self.music21_calls = Counter("seqserve_music21_calls", "music21 calls in worker processes, by outcome "
                                     "(ok, error, timeout, cancelled)", ["call", "outcome"], registry=r)
        self.model_ready = Gauge("seqserve_model_ready", "1 when the model is loaded and warmed up", MODEL,
                                 registry=r)

    def model(self, name: str, version: str) -> "ModelMetrics":
        return ModelMetrics(self, name, version)


@dataclass(frozen=True)
class Totals:
    """Counts and cumulative times since start, for the protocol's statistics endpoint."""

    runs: int
    items: int
    run_seconds: float
    waits: int
    wait_seconds: float
    failed_runs: int
    last_run_at: float  # seconds since the epoch; 0: none yet


class ModelMetrics:
    """One model's series. Nothing is recorded until `recording` is set (after warm-up)."""

    def __init__(self, metrics: Metrics, name: str, version: str):
        self.name, self.version = name, version
        labels = (name, version)
        self._metrics = metrics
        self._queue_wait = metrics.queue_wait_seconds.labels(*labels)
        self._queue_depth = metrics.queue_depth.labels(*labels)
        self._batch_size = metrics.batch_size.labels(*labels)
        self._inference = metrics.inference_seconds.labels(*labels)
        self._refused_items = metrics.refused_items.labels(*labels)
        self._ready = metrics.model_ready.labels(*labels)
        self.recording = False
        self._failed_runs = 0
        self._last_run_at = 0.0

    def run(self, items: int, seconds: float) -> None:
        """One graph run: its batch size and its time."""
        if self.recording:
            self._batch_size.observe(items)
            self._inference.observe(seconds)
            self._last_run_at = time.time()

    def failed(self) -> None:
        """A graph run that failed (its requests got the error)."""
        if self.recording:
            self._failed_runs += 1

    def waited(self, seconds: float) -> None:
        if self.recording:
            self._queue_wait.observe(seconds)

    def totals(self) -> Totals:
        """Read back from the histograms themselves (their counts and sums)."""
        sample = self._metrics.registry.get_sample_value
        labels = {"model": self.name, "version": self.version}
        value = lambda name: sample(name, labels) or 0  # noqa: E731
        return Totals(int(value("seqserve_batch_size_count")), int(value("seqserve_batch_size_sum")),
                      value("seqserve_inference_seconds_sum"), int(value("seqserve_queue_wait_seconds_count")),
                      value("seqserve_queue_wait_seconds_sum"), self._failed_runs, self._last_run_at)

    def waiting(self, items: int) -> None:
        self._queue_depth.set(items)

    def refused(self, reason: str, items: int) -> None:
        self._metrics.refused.labels(self.name, self.version, reason).inc()
        self._refused_items.inc(items)

    def ready(self, ready: bool) -> None:
        self._ready.set(1 if ready else 0)
        self.recording = ready
