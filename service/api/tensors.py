"""Tensors as the Open Inference Protocol (KServe v2) carries them over REST: JSON `data`, or
the binary tensor data extension Triton's clients use by default.

A binary request starts with a JSON header of `Inference-Header-Content-Length` bytes; each
input with `parameters.binary_data_size` takes its bytes from what follows, in order. BYTES
elements are a 4-byte little-endian length, then the bytes; FP32 is little-endian IEEE.
Outputs go back in binary when the request asks (`binary_data` on an output, or
`binary_data_output` on the request), with the same header.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.api.middleware import MAX_JSON_STRINGS, json_strings

HEADER_LENGTH = "Inference-Header-Content-Length"
NUMPY_TYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_}


class ProtocolError(ValueError):
    """The request breaks the protocol (400), with a message for the client."""


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    values: list[Any]  # flat, row-major: str for BYTES (decoded UTF-8), numbers otherwise
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, Tensor]
    parameters: dict[str, Any]
    outputs: dict[str, bool] | None  # requested outputs -> binary?; None: all, as `binary_data_output` says
    binary_output: bool


def _decode_bytes_elements(raw: bytes, count: int, name: str) -> list[str]:
    values, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(raw):
            raise ProtocolError(f"input '{name}': binary data ends inside an element's length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise ProtocolError(f"input '{name}': binary data ends inside an element")
        values.append(_utf8(raw[offset:offset + length], name))
        offset += length
    if offset != len(raw):
        raise ProtocolError(f"input '{name}': {len(raw) - offset} bytes of binary data left over")
    return values


def _utf8(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"input '{name}': an element is not UTF-8 text") from None


def _element_count(shape: list[int], name: str) -> int:
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ProtocolError(f"input '{name}': shape must be a list of non-negative integers")
    return int(np.prod(shape)) if shape else 1


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [value for item in data for value in _flatten(item)]
    return [data]


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """The JSON header (all of the body without the extension) and the inputs it describes."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise ProtocolError(f"{HEADER_LENGTH} must be a byte count within the body")
        header_bytes, binary = body[:int(header_length)], body[int(header_length):]
    else:
        header_bytes, binary = body, b""
    if json_strings(header_bytes) > MAX_JSON_STRINGS:  # refused before parsing, as the typed endpoints do
        raise ProtocolError(f"the request header holds over {MAX_JSON_STRINGS:,} JSON strings; no request needs so many")
    try:
        header = json.loads(header_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProtocolError("the request header is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise ProtocolError("the request must be an object with an 'inputs' list")
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("'parameters' must be an object")
    inputs, offset = {}, 0
    for item in header["inputs"]:
        if not isinstance(item, dict) or not {"name", "shape", "datatype"} <= item.keys():
            raise ProtocolError("each input needs 'name', 'shape' and 'datatype'")
        name, datatype, shape = item["name"], item["datatype"], item["shape"]
        count = _element_count(shape, name)
        input_parameters = item.get("parameters") or {}
        size = input_parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise ProtocolError(f"input '{name}': binary_data_size beyond the binary data")
            raw, offset = binary[offset:offset + size], offset + size
            if datatype == "BYTES":
                values = _decode_bytes_elements(raw, count, name)
            elif datatype in NUMPY_TYPES:
                dtype = np.dtype(NUMPY_TYPES[datatype]).newbyteorder("<")
                if len(raw) != count * dtype.itemsize:
                    raise ProtocolError(f"input '{name}': {len(raw)} bytes for {count} {datatype} elements")
                values = np.frombuffer(raw, dtype=dtype).tolist()
            else:
                raise ProtocolError(f"input '{name}': datatype {datatype} is not supported")
        else:
            if "data" not in item:
                raise ProtocolError(f"input '{name}': neither 'data' nor binary_data_size")
            values = _flatten(item["data"])
            if len(values) != count:
                raise ProtocolError(f"input '{name}': {len(values)} elements for shape {shape}")
            if datatype == "BYTES" and not all(isinstance(v, str) for v in values):
                raise ProtocolError(f"input '{name}': BYTES elements in JSON must be strings")
        inputs[name] = Tensor(name, datatype, shape, values, input_parameters)
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes of binary data belong to no input")
    requested = header.get("outputs")
    outputs = None
    if requested is not None:
        if not isinstance(requested, list) or not all(isinstance(o, dict) and "name" in o for o in requested):
            raise ProtocolError("'outputs' must be a list of objects with a 'name'")
        outputs = {o["name"]: bool((o.get("parameters") or {}).get("binary_data", False)) for o in requested}
    request_id = header.get("id")
    return InferRequest(str(request_id) if request_id is not None else None, inputs, parameters, outputs,
                        bool(parameters.get("binary_data_output", False)))


def _encode_bytes_elements(values: list[str]) -> bytes:
    parts = []
    for value in values:
        raw = value.encode("utf-8")
        parts.append(struct.pack("<I", len(raw)) + raw)
    return b"".join(parts)


def encode_response(header: dict[str, Any], outputs: list[Tensor], binary: dict[str, bool]) -> tuple[bytes, dict]:
    """The response body and its headers: outputs named in `binary` as True go after the
    JSON header as binary data, the others inline as JSON `data`."""
    described, chunks = [], []
    for tensor in outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if binary.get(tensor.name):
            if tensor.datatype == "BYTES":
                raw = _encode_bytes_elements(tensor.values)
            else:
                raw = np.asarray(tensor.values, dtype=np.dtype(NUMPY_TYPES[tensor.datatype]).newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = tensor.values
        described.append(entry)
    head = json.dumps(header | {"outputs": described}, ensure_ascii=False).encode()
    if not chunks:
        return head, {"content-type": "application/json"}
    return head + b"".join(chunks), {"content-type": "application/octet-stream", HEADER_LENGTH.lower(): str(len(head))}
