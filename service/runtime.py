"""ONNX Runtime sessions on the device the settings ask for, and the truth about where they run.

onnxruntime-gpu on a host without CUDA only logs an error and quietly runs on the CPU, so the
provider in use is always read back from the session, never assumed from configuration.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort

from service.config import Settings

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class DeviceUnavailable(RuntimeError):
    """`device=cuda` was asked for, but the session did not come up on CUDA."""


def requested_providers(settings: Settings) -> list:
    cpu = [CPU]
    if settings.device == "cpu":
        return cpu
    if settings.device == "auto" and CUDA not in ort.get_available_providers():
        return cpu
    return [(CUDA, {"device_id": settings.cuda_device_id})] + cpu


def create_session(path: Path, settings: Settings) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if settings.intra_op_threads:
        options.intra_op_num_threads = settings.intra_op_threads
    session = ort.InferenceSession(str(path), sess_options=options, providers=requested_providers(settings))
    in_use = session.get_providers()
    if settings.device == "cuda" and in_use[0] != CUDA:
        raise DeviceUnavailable(f"device=cuda, but ONNX Runtime runs {path.name} on {in_use[0]} "
                                f"(available: {', '.join(ort.get_available_providers())})")
    if settings.device == "auto" and in_use[0] != CUDA and CUDA in ort.get_available_providers():
        # onnxruntime-gpu on a host without CUDA libraries: its own error lines above say why.
        log.warning("CUDA provider could not be loaded for %s; running on the CPU", path.name)
    log.info("session %s on %s", path, in_use[0])
    return session
