"""ONNX Runtime sessions on the device the settings ask for, and the truth about where they run.

onnxruntime-gpu on a host without CUDA only logs an error and quietly runs on the CPU, so the
provider in use is always read back from the session, never assumed from configuration.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path

import onnxruntime as ort

from seqserve.manifest import Manifest
from service.config import Settings
from service.errors import DeviceUnavailable

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def requested_providers(settings: Settings) -> list:
    cpu = [CPU]
    if settings.device == "cpu":
        return cpu
    if settings.device == "auto" and CUDA not in ort.get_available_providers():
        return cpu
    return [(CUDA, cuda_options(settings))] + cpu


def planned_device(settings: Settings) -> str:
    """"cuda" or "cpu": where sessions will be asked to run (a failed CUDA load still ends on the CPU)."""
    return "cuda" if requested_providers(settings)[0] != CPU else "cpu"


def choose_precision(manifest: Manifest, requested: str, device: str) -> tuple[str, str]:
    """The precision to serve `manifest`'s version in, and why. A variant is served only where
    the manifest says its test-split quality is within tolerance of fp32."""
    if requested == "fp32":
        return "fp32", "asked for fp32"
    wanted = requested if requested != "auto" else ("fp16" if device == "cuda" else "int8")
    variant = manifest.precisions.get(wanted)
    if variant is None:
        return "fp32", f"{manifest.id} has no {wanted} graphs"
    if not variant.servable:
        return "fp32", f"{wanted} {variant.reason}"
    if variant.device != device:
        if requested == "auto":
            return "fp32", f"{wanted} graphs are for {variant.device}, this is {device}"
        return wanted, f"asked for {wanted} (its graphs are meant for {variant.device}, this is {device})"
    return wanted, f"{'asked for' if requested != 'auto' else 'auto:'} {wanted}: {variant.reason}"


def cuda_options(settings: Settings) -> dict[str, str]:
    options = {"device_id": str(settings.cuda_device_id),
               "arena_extend_strategy": settings.cuda_arena_extend_strategy,
               "cudnn_conv_algo_search": settings.cudnn_conv_algo_search}
    if settings.cuda_mem_limit_bytes:
        options["gpu_mem_limit"] = str(settings.cuda_mem_limit_bytes)
    return options


@functools.cache
def preload_cuda_libraries() -> None:
    """Load the CUDA and cuDNN libraries of NVIDIA's pip wheels (the `cuda` extra, as in the
    image) so the CUDA provider finds them without LD_LIBRARY_PATH; a no-op without them."""
    if importlib.util.find_spec("nvidia") is not None and hasattr(ort, "preload_dlls"):
        ort.preload_dlls(directory="")


# ONNX Runtime logs from C++ straight to stderr, coloured, outside the JSON log: below
# SEQSERVE_LOG_LEVEL=debug only its errors get through (0 verbose ... 3 error, 4 fatal).
ORT_SEVERITY = {"debug": 1}
ERRORS_ONLY, FATAL_ONLY = 3, 4


def create_session(path: Path, settings: Settings, threads: int = 0) -> ort.InferenceSession:
    """A session for `path`; `threads` (if set) overrides INTRA_OP_THREADS."""
    debug = settings.log_level.lower() == "debug"
    ort.set_default_logger_severity(ORT_SEVERITY.get(settings.log_level.lower(), ERRORS_ONLY))
    if settings.device != "cpu":
        preload_cuda_libraries()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads or settings.intra_op_threads:
        options.intra_op_num_threads = threads or settings.intra_op_threads
    # Spinning threads wait for the next run at full speed: a win when the cores are ONNX
    # Runtime's alone, a loss here, where the event loop and tokenisation need them too.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.intra_op_spinning else "0")
    options.log_severity_level = ORT_SEVERITY.get(settings.log_level.lower(), ERRORS_ONLY)
    if settings.device == "auto" and not debug:
        # Trying CUDA on a host without it is expected here, not an error: ONNX Runtime's own
        # lines about it are silenced, and the warning below says what happened.
        ort.set_default_logger_severity(FATAL_ONLY)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=requested_providers(settings))
    finally:
        ort.set_default_logger_severity(ORT_SEVERITY.get(settings.log_level.lower(), ERRORS_ONLY))
    in_use = session.get_providers()
    if settings.device == "cuda" and in_use[0] != CUDA:
        raise DeviceUnavailable(f"device=cuda, but ONNX Runtime runs {path.name} on {in_use[0]} "
                                f"(available: {', '.join(ort.get_available_providers())})")
    if settings.device == "auto" and in_use[0] != CUDA and CUDA in ort.get_available_providers():
        # onnxruntime-gpu on a host without a GPU or without the CUDA 13 / cuDNN 9 libraries.
        log.warning("CUDA provider could not be loaded for %s (no GPU, or no CUDA 13 / cuDNN 9 libraries); "
                    "running on the CPU. SEQSERVE_LOG_LEVEL=debug shows ONNX Runtime's own messages", path.name)
    log.info("session %s on %s", path, in_use[0])
    return session
