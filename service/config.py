"""Settings, from arguments or `SEQSERVE_*` environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    # An empty variable (compose passes `${X:-}` through) means "use the default".
    model_config = SettingsConfigDict(env_prefix="SEQSERVE_", extra="ignore", env_ignore_empty=True)

    models_dir: Path = Field(REPO_ROOT / "models", description="holds <task>/<version>/manifest.json")
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="auto: CUDA if ONNX Runtime can use it, else CPU; cuda: CUDA or not ready")
    cuda_device_id: int = 0
    # CUDA execution provider options (ignored on the CPU).
    cuda_arena_extend_strategy: Literal["kNextPowerOfTwo", "kSameAsRequested"] = Field(
        "kSameAsRequested", description="how the GPU memory arena grows; kSameAsRequested wastes least")
    cuda_mem_limit_bytes: int = Field(0, ge=0, description="GPU memory arena cap; 0: no cap")
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = "HEURISTIC"
    host: str = "127.0.0.1"
    port: int = 8000

    # Batching, per task (defaults chosen with `python -m benchmarks.tuning` on a 2-core CPU).
    # Sentiment is micro-batched: a batch runs when it is full or its first item has waited.
    sentiment_max_batch_size: int = Field(32, ge=1, le=1024, description="texts per classifier run")
    sentiment_max_wait_ms: float = Field(5.0, ge=0, description="how long a batch's first text waits for company")
    # Generation and translation are batched continuously: requests join a running batch
    # between hops of a few steps and leave when done.
    music_max_active: int = Field(64, ge=1, le=1024, description="streams advanced by one step-graph run")
    music_steps_per_hop: int = Field(8, ge=1, le=64, description="steps between admissions of new streams")
    translate_max_active: int = Field(64, ge=1, le=1024, description="sentences (each with its beams) per decoder step")
    translate_steps_per_hop: int = Field(4, ge=1, le=64, description="decoder steps between admissions")
    max_queue_size: int = Field(512, ge=1, description="items in progress or waiting per model; beyond it: 503")
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with 503 answers")

    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="larger request bodies get 413")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads per session; 0: its default")
    intra_op_spinning: bool = Field(
        False, description="let ONNX Runtime's threads spin between runs (steals CPU from the event loop on small hosts)")
    graceful_shutdown_s: float = Field(30.0, ge=0)
    request_timeout_s: float = Field(60.0, ge=0, description="a request still unanswered after this gets 503; 0: none")

    # Access control: off unless keys are set. Comma-separated in the environment.
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="accepted keys (Authorization: Bearer <key> or X-API-Key); empty: open")
    metrics_open: bool = Field(True, description="/metrics without a key (for a Prometheus scraper)")
    rate_limit_per_minute: int = Field(0, ge=0, description="per key (per client address without keys); 0: off")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list, description="allowed origins; empty: CORS off")

    log_level: str = "info"
    log_format: Literal["json", "text"] = Field("json", description="json: one JSON object per line")

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def comma_separated(cls, value):
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
