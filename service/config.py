"""Settings, from arguments or `SEQSERVE_*` environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
TASK_NAMES = ("sentiment", "translate", "music")


class Settings(BaseSettings):
    # An empty variable (compose passes `${X:-}` through) means "use the default".
    model_config = SettingsConfigDict(env_prefix="SEQSERVE_", extra="ignore", env_ignore_empty=True)

    models_dir: Path = Field(REPO_ROOT / "models", description="holds <task>/<version>/manifest.json")
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="auto: CUDA if ONNX Runtime can use it, else CPU; cuda: CUDA or not ready")
    precision: Literal["auto", "fp32", "int8", "fp16"] = Field(
        "auto", description="graphs to serve: auto: int8 on the CPU, fp16 on CUDA, each where the version has them "
                            "and their test-split quality is within tolerance of fp32 (else fp32); the others ask "
                            "for that precision (fp32 where the version has none that may be served)")
    cuda_device_id: int = Field(0, ge=0, description="GPU index for the CUDA provider")
    # CUDA execution provider options (ignored on the CPU).
    cuda_arena_extend_strategy: Literal["kNextPowerOfTwo", "kSameAsRequested"] = Field(
        "kSameAsRequested", description="how the GPU memory arena grows; kSameAsRequested wastes least")
    cuda_mem_limit_bytes: int = Field(0, ge=0, description="GPU memory arena cap; 0: no cap")
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = Field(
        "HEURISTIC", description="how cuDNN picks convolution algorithms (CUDA provider option)")
    # Off: on an H200 (scripts/gpu_check, 2026-11-30) TF32 moved music/6's logits 3.0e-3 from the
    # CPU's over 100 chained steps (8e-6 without it) and was no faster for these small LSTMs.
    cuda_tf32: bool = Field(False, description="let the CUDA provider use TensorFloat-32 in matrix products "
                                               "(faster on large ones, about 3 decimal digits)")
    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0: every interface)")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")

    # Batching, per task (defaults chosen with `python -m benchmarks.tuning` on a 2-core CPU).
    # Sentiment is micro-batched: a batch runs when it is full or its first item has waited.
    sentiment_max_batch_size: int = Field(32, ge=1, le=1024, description="texts per classifier run")
    sentiment_lanes: int = Field(
        0, ge=0, le=16, description="classifier batches run at once, each on its own session with its share of the "
                                    "cores; 0: auto (one per core up to 2 on the CPU, 1 on CUDA)")
    sentiment_max_wait_ms: float = Field(5.0, ge=0, description="how long a batch's first text waits for company")
    # Generation and translation are batched continuously: requests join a running batch
    # between hops of a few steps and leave when done.
    music_max_active: int = Field(64, ge=1, le=1024, description="streams advanced by one step-graph run")
    music_steps_per_hop: int = Field(8, ge=1, le=64, description="steps between admissions of new streams")
    translate_max_active: int = Field(64, ge=1, le=1024, description="sentences (each with its beams) per decoder step")
    translate_steps_per_hop: int = Field(4, ge=1, le=64, description="decoder steps between admissions")
    # 128: translate/2's step is as fast per sentence at 27 sentences of beam 4 as at 40, and each
    # hypothesis carries both members' encoder memory (1,024 wide), so 256 only cost memory
    # (measured 2026-11-29: 129 vs 122 req/s at concurrency 64, 1,112 vs 1,583 MiB resident).
    translate_max_rows: int = Field(
        128, ge=8, le=4096, description="hypotheses (sentences x beams) per decoder step; with fair overflow at "
                                        "most twice this")
    # Each hypothesis carries its sentence's encoder memory and keys (2 x 1,024 floats a source
    # token for translate/2), padded to the batch's longest source: the step's memory grows
    # with hypotheses x that length, as TGI's max_batch_total_tokens counts. 4,096 is 128
    # hypotheses over sources of 32 subwords; Tatoeba's test sentences have 9 subwords on
    # average, and of 32 drawn at random the longest is past 32 in one draw of 80.
    translate_max_batch_tokens: int = Field(
        4096, ge=1024, le=1_048_576,
        description="hypotheses x the batch's longest source (subword tokens) per decoder step; with fair "
                    "overflow at most twice this: bounds the batch's memory (a sentence alone always runs)")
    max_queue_size: int = Field(512, ge=1, description="items in progress or waiting per model; beyond it: 503")
    client_max_queue_size: int = Field(
        256, ge=1, description="items (texts, sentences, streams) one client may have in progress or waiting per "
                               "model; beyond it: 503. A client is its API key, or its address without keys")
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with 503 answers")

    expected_models: Annotated[list[str], NoDecode] = Field(
        default=["sentiment", "translate", "music"],
        description="tasks that must be loaded and warm before /readyz answers 200 (comma-separated)")

    # music21 (tune checks, MIDI) runs in worker processes: a call past its time limit, or whose
    # client left, kills its worker, and none of it can hold the server past shutdown.
    music21_workers: int = Field(1, ge=1, le=32, description="worker processes for music21 calls")
    music21_timeout_s: float = Field(5.0, gt=0, description="time limit of one music21 call")

    # Connections (the HTTP server's own limits; see service/http.py).
    max_connections: int = Field(
        1000, ge=1, description="open connections at most (kept below the file-descriptor limit); more are closed")
    header_timeout_s: float = Field(10.0, gt=0, description="time to send a request's headers; then the connection closes")
    body_timeout_s: float = Field(30.0, gt=0, description="longest wait for the next piece of a request body; then 408")
    keep_alive_timeout_s: float = Field(5.0, gt=0, description="an idle keep-alive connection closes after this")
    max_header_bytes: int = Field(16 * 1024, ge=1024, description="request line and headers at most; larger: 431")
    forwarded_allow_ips: str = Field(
        "", description="proxies trusted to set the client address (X-Forwarded-For), comma-separated; "
                        "empty: none, the peer address is the client")

    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="larger request bodies get 413")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads per session; 0: its default")
    intra_op_spinning: bool = Field(
        False, description="let ONNX Runtime's threads spin between runs (steals CPU from the event loop on small hosts)")
    graceful_shutdown_s: float = Field(
        30.0, ge=0, description="on SIGTERM: how long requests in flight may finish (then they are cut), then exit 0")
    request_timeout_s: float = Field(60.0, ge=0, description="a request still unanswered after this gets 503; 0: none")

    # Access control: off unless keys are set. Comma-separated in the environment.
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="accepted keys (Authorization: Bearer <key> or X-API-Key); empty: open")
    metrics_open: bool = Field(True, description="/metrics without a key (for a Prometheus scraper)")
    rate_limit_per_minute: int = Field(0, ge=0, description="per key (per client address without keys); 0: off")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list, description="allowed origins; empty: CORS off")

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="debug also shows ONNX Runtime's own messages")
    log_format: Literal["json", "text"] = Field("json", description="json: one JSON object per line")

    @field_validator("log_level", mode="before")
    @classmethod
    def lower_case(cls, value):
        return value.lower() if isinstance(value, str) else value

    @field_validator("api_keys", "cors_origins", "expected_models", mode="before")
    @classmethod
    def comma_separated(cls, value):
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("expected_models")
    @classmethod
    def known_tasks(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(TASK_NAMES))
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASK_NAMES)}")
        return value

    @model_validator(mode="after")
    def consistent(self) -> "Settings":
        """Settings that cannot work together are refused here, at start-up, by name."""
        if self.client_max_queue_size > self.max_queue_size:
            if "client_max_queue_size" not in self.model_fields_set:  # the default follows a smaller queue
                self.client_max_queue_size = self.max_queue_size
                return self
            raise ValueError(f"client_max_queue_size ({self.client_max_queue_size}) is larger than "
                             f"max_queue_size ({self.max_queue_size})")
        return self
