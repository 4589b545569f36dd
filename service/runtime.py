"""ONNX Runtime sessions on the device the settings ask for, and the truth about where they run.

onnxruntime-gpu on a host without CUDA only logs an error and quietly runs on the CPU, so the
provider in use is always read back from the session, never assumed from configuration.
"""

from __future__ import annotations

import base64
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


# A one-node ONNX model (Identity on a float tensor, opset 13), kept as bytes so that asking
# ONNX Runtime whether CUDA really loads here needs no `onnx` package (tests/service/
# test_runtime.py builds it again with onnx.helper and compares).
PROBE_MODEL = base64.b64decode(
    "CAgSCHNlcXNlcnZlOjsKEAoBeBIBeSIISWRlbnRpdHkSBXByb2JlWg8KAXgSCgoICAESBAoCCAFiDwoBeRIKCggIARIECgIIAUIECgAQDQ==")


@functools.cache
def cuda_loads(device_id: int = 0, show_reasons: bool = False) -> bool:
    """Whether ONNX Runtime's CUDA provider really runs here: onnxruntime-gpu lists it as
    available on any host, and only a session says whether its libraries and a GPU are there.
    ONNX Runtime's own lines about a failed load are shown only with `show_reasons`."""
    if CUDA not in ort.get_available_providers():
        return False
    preload_cuda_libraries()
    ort.set_default_logger_severity(ORT_SEVERITY["debug"] if show_reasons else FATAL_ONLY)
    try:
        probe = ort.InferenceSession(PROBE_MODEL, providers=[(CUDA, {"device_id": str(device_id)}), CPU])
        in_use = probe.get_providers()
    except Exception as error:  # e.g. a device id the driver does not have
        log.warning("the CUDA provider's probe failed: %s", error)
        in_use = [CPU]
    finally:
        ort.set_default_logger_severity(ORT_SEVERITY["debug"] if show_reasons else ERRORS_ONLY)
    if in_use[0] == CUDA:
        return True
    log.warning("the CUDA provider cannot run here (no GPU, or no CUDA 13 / cuDNN 9 libraries): sessions "
                "run on the CPU; SEQSERVE_DEVICE=cpu says so up front, SEQSERVE_LOG_LEVEL=debug shows "
                "ONNX Runtime's reasons")
    return False


def requested_providers(settings: Settings) -> list:
    cpu = [CPU]
    if settings.device == "cpu":
        return cpu
    if settings.device == "auto" and not cuda_loads(settings.cuda_device_id, settings.log_level.lower() == "debug"):
        return cpu
    return [(CUDA, cuda_options(settings))] + cpu


def planned_device(settings: Settings) -> str:
    """"cuda" or "cpu": where sessions will run (with device=cuda, a failed CUDA load makes the
    model not ready rather than quietly slow)."""
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
               "cudnn_conv_algo_search": settings.cudnn_conv_algo_search,
               "use_tf32": "1" if settings.cuda_tf32 else "0"}
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
    providers = requested_providers(settings)
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    in_use = session.get_providers()
    if settings.device == "cuda" and in_use[0] != CUDA:
        raise DeviceUnavailable(f"device=cuda, but ONNX Runtime runs {path.name} on {in_use[0]} "
                                f"(available: {', '.join(ort.get_available_providers())})")
    if providers[0] != CPU and in_use[0] != CUDA:  # the probe passed, this graph did not
        log.warning("CUDA provider could not be loaded for %s; running it on the CPU", path.name)
    log.info("session %s on %s", path, in_use[0])
    return session
