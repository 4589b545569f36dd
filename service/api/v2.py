"""The Open Inference Protocol (KServe v2) over REST, beside the typed endpoints: Triton's
clients, perf_analyzer, KServe and MLServer speak it.

The routes only translate tensors to the tasks' calls and back: a request goes through the
same access control, body limits, schemas (their limits), admission, batchers, deadline and
metrics as the typed endpoints. Errors take the protocol's form `{"error": "<message>"}`:
400 for a request that breaks the protocol, 404 for an unknown model or version, and the
typed endpoints' statuses (413, 422, 429, 503 with Retry-After) for the same limits.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from service.api import schemas
from service.api.bounded import bounded
from service.api.errors import SERVICE_ERRORS, service_error
from service.api.tensors import HEADER_LENGTH, InferRequest, ProtocolError, Tensor, encode_response, parse_request
from service.registry import ModelRegistry
from service.tasks.base import ServedModel

class ProtocolErrorBody(BaseModel):
    """The protocol's error answer; tritonclient shows `error` as the message."""

    error: str


def _errors(*statuses: int) -> dict[int, dict]:
    meaning = {400: "the request breaks the protocol (tensor names, datatypes, shapes, JSON)",
               404: "unknown model or version", 413: "request body too large",
               422: "a limit of the model's inputs (as the typed endpoint's), or more work than the deadline allows",
               429: "this client has too much work in flight, or is over its rate limit; see Retry-After",
               503: "queue full, timeout, shutting down or model not ready; see Retry-After"}
    return {status: {"model": ProtocolErrorBody, "description": meaning[status]} for status in statuses}


router = APIRouter(prefix="/v2", tags=["open inference protocol"], responses=_errors(400, 404))
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


@dataclass(frozen=True)
class Signature:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_batch_size: int
    parameters: dict[str, str] = field(default_factory=dict)  # request parameter -> meaning
    optional_outputs: tuple[str, ...] = ()  # returned only when asked for


SIGNATURES = {
    "sentiment": Signature([TensorSpec("text", "BYTES", [-1])],
                           [TensorSpec("label", "BYTES", [-1]), TensorSpec("probabilities", "FP32", [-1, 2])],
                           schemas.MAX_SENTIMENT_TEXTS),
    "translate": Signature([TensorSpec("text", "BYTES", [-1])],
                           [TensorSpec("translation", "BYTES", [-1]), TensorSpec("attention", "FP32", [-1, -1, -1])],
                           schemas.MAX_TRANSLATE_TEXTS,
                           {"beam_size": "1 to 8 (default 4)", "max_length": "1 to 256 subwords (default 128)"},
                           optional_outputs=("attention",)),
    "music": Signature([TensorSpec("prompt", "BYTES", [1])], [TensorSpec("abc", "BYTES", [1])], 1,
                       {"max_length": "characters to write", "temperature": "(0, 2]", "top_k": "or none",
                        "seed": "the same seed and settings give the same tune"}),
}

def protocol_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def answering_errors(request: Request, call: Callable[[], Response | Awaitable[Response]]) -> Response:
    """Runs a route, answering every failure in the protocol's form."""
    try:
        answer = call()
        return await answer if inspect.isawaitable(answer) else answer
    except _NotFound as error:
        return protocol_error(404, str(error))
    except ProtocolError as error:
        return protocol_error(400, str(error))
    except ValidationError as error:  # a limit of the typed schema
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()[:5])
        return protocol_error(422, problems)
    except tuple(SERVICE_ERRORS) as error:  # the typed endpoints' statuses, in the protocol's form
        status, _, message, headers = service_error(error, request.app.state.settings.retry_after_s)
        return protocol_error(status, message, headers)


def _registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def _model(request: Request, name: str, version: str | None) -> ServedModel:
    model = _registry(request).get(name)
    if model is None or name not in SIGNATURES:
        known = ", ".join(sorted(m for m in _registry(request).models if m in SIGNATURES))
        raise _NotFound(f"unknown model '{name}'; known: {known}")
    if version is not None and version != model.manifest.version:
        raise _NotFound(f"model '{name}' has no version '{version}' (served: {model.manifest.version})")
    return model


class _NotFound(ProtocolError):
    pass


# -- server ------------------------------------------------------------------------------

@router.get("", operation_id="server_metadata", summary="Server name, version and protocol extensions")
async def server_metadata() -> dict:
    return {"name": "seqserve", "version": SERVER_VERSION, "extensions": EXTENSIONS}


@router.get("/health/live", operation_id="server_live", summary="200 while the process is alive")
async def server_live() -> dict:
    return {"live": True}


@router.get("/health/ready", operation_id="server_ready", summary="200 when every expected model is ready",
            responses=_errors(503))
async def server_ready(request: Request) -> Response:
    missing = _registry(request).not_ready()
    if missing or request.app.state.drain.draining:
        return protocol_error(503, "not ready: " + "; ".join(f"{k}: {v}" for k, v in missing.items()) if missing
                              else "shutting down")
    return JSONResponse({"ready": True})


@router.get("/models/stats", operation_id="models_statistics", summary="Inference statistics of every model")
async def all_statistics(request: Request) -> dict:
    return {"model_stats": [_statistics(m) for name, m in _registry(request).models.items() if name in SIGNATURES]}


# -- one model -----------------------------------------------------------------------------

def _metadata(model: ServedModel) -> dict[str, Any]:
    signature = SIGNATURES[model.task]
    return {"name": model.task, "versions": [model.manifest.version], "platform": "seqserve_onnxruntime",
            "inputs": [t.metadata() for t in signature.inputs], "outputs": [t.metadata() for t in signature.outputs],
            "parameters": signature.parameters}


def _config(model: ServedModel) -> dict[str, Any]:
    """Triton's model configuration, as perf_analyzer reads it: with batching, each tensor's
    dims leave out the batch dimension (a batch of texts is [batch], reshaped from [batch, 1])."""
    signature = SIGNATURES[model.task]

    def tensor(spec: TensorSpec) -> dict[str, Any]:
        dims = spec.shape[1:] if signature.max_batch_size > 1 else spec.shape
        entry = {"name": spec.name, "data_type": "TYPE_STRING" if spec.datatype == "BYTES" else f"TYPE_{spec.datatype}",
                 "dims": dims or [1]}
        return entry | ({"reshape": {"shape": []}} if not dims else {})

    return {"name": model.task, "platform": "seqserve_onnxruntime", "backend": "seqserve",
            "max_batch_size": signature.max_batch_size if signature.max_batch_size > 1 else 0,
            "input": [tensor(t) for t in signature.inputs], "output": [tensor(t) for t in signature.outputs],
            "version_policy": {"specific": {"versions": [int(model.manifest.version)] if model.manifest.version.isdigit()
                                            else []}}}


def _statistics(model: ServedModel) -> dict[str, Any]:
    """Triton's per-model statistics (counts and cumulative nanoseconds since start)."""
    stats = model.model_metrics.totals()
    ns = lambda seconds: int(seconds * 1e9)  # noqa: E731
    return {"name": model.task, "version": model.manifest.version,
            "last_inference": int(stats.last_run_at * 1000), "inference_count": stats.items,
            "execution_count": stats.runs,
            "inference_stats": {"success": {"count": stats.items, "ns": ns(stats.run_seconds + stats.wait_seconds)},
                                "fail": {"count": stats.failed_runs, "ns": 0},
                                "queue": {"count": stats.waits, "ns": ns(stats.wait_seconds)},
                                "compute_input": {"count": 0, "ns": 0},
                                "compute_infer": {"count": stats.runs, "ns": ns(stats.run_seconds)},
                                "compute_output": {"count": 0, "ns": 0}},
            "batch_stats": []}


def _model_routes(path: str, with_version: bool) -> None:
    """The per-model routes, at /models/{name} and /models/{name}/versions/{version}."""
    suffix = "_version" if with_version else ""

    @router.get(path, operation_id=f"model_metadata{suffix}", summary="Inputs, outputs and parameters of a model")
    async def metadata(request: Request, name: str, version: str | None = None) -> Response:
        return await answering_errors(request, lambda: _json(_metadata(_model(request, name, version))))

    @router.get(path + "/ready", operation_id=f"model_ready{suffix}", summary="200 when the model is ready, else 400")
    async def ready(request: Request, name: str, version: str | None = None) -> Response:
        def answer() -> Response:
            model = _model(request, name, version)
            return _json({"name": name, "ready": True}) if model.ready else \
                protocol_error(400, f"model '{name}' is not ready: {model.error}")
        return await answering_errors(request, answer)

    @router.get(path + "/config", operation_id=f"model_config{suffix}", summary="Triton-style model configuration")
    async def config(request: Request, name: str, version: str | None = None) -> Response:
        return await answering_errors(request, lambda: _json(_config(_model(request, name, version))))

    @router.get(path + "/stats", operation_id=f"model_statistics{suffix}", summary="Inference statistics")
    async def statistics(request: Request, name: str, version: str | None = None) -> Response:
        return await answering_errors(request, lambda: _json({"model_stats": [_statistics(_model(request, name, version))]}))

    @router.post(path + "/infer", operation_id=f"model_infer{suffix}", responses=_errors(413, 422, 429, 503),
                 summary="Inference: JSON tensors, or the binary tensor data extension",
                 openapi_extra={"requestBody": {"content": {
                     "application/json": {"schema": {"type": "object"}},
                     "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        return await answering_errors(request, lambda: _infer(request, _model(request, name, version)))


def _json(body: dict) -> Response:
    return JSONResponse(body)


_model_routes("/models/{name}", with_version=False)
_model_routes("/models/{name}/versions/{version}", with_version=True)


# -- inference -------------------------------------------------------------------------------

def _only_input(request: InferRequest, spec: TensorSpec) -> Tensor:
    unknown = sorted(set(request.inputs) - {spec.name})
    if unknown or spec.name not in request.inputs:
        raise ProtocolError(f"expected one input '{spec.name}' ({spec.datatype}), got {sorted(request.inputs)}")
    tensor = request.inputs[spec.name]
    if tensor.datatype != spec.datatype:
        raise ProtocolError(f"input '{spec.name}' must be {spec.datatype}, not {tensor.datatype}")
    if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
        raise ProtocolError(f"input '{spec.name}' must have shape [n] or [n, 1], not {tensor.shape}")
    return tensor


def _parameters(request: InferRequest, allowed: dict[str, str]) -> dict[str, Any]:
    given = {k: v for k, v in request.parameters.items() if k not in ("binary_data_output", "timeout")}
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ProtocolError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(allowed) or 'none'}")
    return given


async def _infer(request: Request, model: ServedModel) -> Response:
    body = await request.body()
    infer = parse_request(body, request.headers.get(HEADER_LENGTH))
    signature = SIGNATURES[model.task]
    names = {t.name for t in signature.outputs}
    if infer.outputs is not None and not set(infer.outputs) <= names:
        raise ProtocolError(f"unknown output(s) {sorted(set(infer.outputs) - names)}; known: {sorted(names)}")
    wanted = set(infer.outputs) if infer.outputs is not None else names - set(signature.optional_outputs)
    tensor = _only_input(infer, signature.inputs[0])
    parameters = _parameters(infer, signature.parameters)
    client, timeout = request.state.client, request.app.state.settings.request_timeout_s
    run = {"sentiment": _sentiment, "translate": _translate, "music": _music}[model.task]
    outputs = await bounded(request, run(model, tensor.values, parameters, wanted, client), timeout)
    binary = {t.name: infer.binary_output if infer.outputs is None else infer.outputs[t.name] for t in outputs}
    header = {"model_name": model.task, "model_version": model.manifest.version} | ({"id": infer.id} if infer.id else {})
    content, headers = encode_response(header, outputs, binary)
    return Response(content, headers=headers)


async def _sentiment(model, texts: list[str], parameters: dict, wanted: set[str], client: str) -> list[Tensor]:
    body = schemas.SentimentRequest.model_validate({"texts": texts} | parameters)
    predictions = await model.classify(body.texts, client)
    n = len(predictions)
    tensors = {"label": Tensor("label", "BYTES", [n], [p.label for p in predictions]),
               "probabilities": Tensor("probabilities", "FP32", [n, 2],
                                       [p.probabilities[label] for p in predictions for label in ("negative", "positive")])}
    return [tensors[name] for name in ("label", "probabilities") if name in wanted]


async def _translate(model, texts: list[str], parameters: dict, wanted: set[str], client: str) -> list[Tensor]:
    body = schemas.TranslateRequest.model_validate({"texts": texts} | parameters)
    results = await model.translate(body.texts, body.beam_size, body.max_length, client)
    outputs = []
    if "translation" in wanted:
        outputs.append(Tensor("translation", "BYTES", [len(results)], [r.translation for r in results]))
    if "attention" in wanted:  # ragged across texts: padded with zeros to the longest
        rows, cols = max(r.attention.shape[0] for r in results), max(r.attention.shape[1] for r in results)
        padded = np.zeros((len(results), rows, cols), dtype=np.float32)
        for i, r in enumerate(results):
            padded[i, :r.attention.shape[0], :r.attention.shape[1]] = r.attention
        outputs.append(Tensor("attention", "FP32", list(padded.shape), padded.ravel().tolist()))
    return outputs


async def _music(model, prompts: list[str], parameters: dict, wanted: set[str], client: str) -> list[Tensor]:
    if len(prompts) != 1:
        raise ProtocolError(f"input 'prompt' holds one prompt (shape [1]), not {len(prompts)}")
    body = schemas.MusicRequest.model_validate({"prompt": prompts[0] or None} | parameters)
    composition = model.compose(body.prompt, body.max_length, body.temperature, body.top_k, body.seed, client)
    abc = composition.prompt + "".join([chunk async for chunk in composition.chunks])
    return [Tensor("abc", "BYTES", [1], [abc])]

