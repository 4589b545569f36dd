"""Settings, from arguments or `SEQSERVE_*` environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEQSERVE_", extra="ignore")

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

    # Micro-batching: a batch runs when it is full or when its first item has waited max_wait_ms.
    max_batch_size: int = Field(32, ge=1, le=1024)
    max_wait_ms: float = Field(5.0, ge=0)
    max_queue_size: int = Field(512, ge=1, description="items waiting per model; beyond it: 503")
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with 503 answers")

    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="larger request bodies get 413")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads per session; 0: its default")
    graceful_shutdown_s: float = Field(30.0, ge=0)
    log_level: str = "info"
