"""The Open Inference Protocol's tensors on the wire: a request decoded (JSON `data`, or the binary tensor
extension: the JSON header's length in `Inference-Header-Content-Length`, then each BYTES element as a 4-byte
little-endian length and its UTF-8 bytes) into named lists of texts, and outputs encoded back (JSON, or binary
where the request asks for it). Every malformed request is a 400 saying what is wrong."""

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from starlette.responses import Response

from gateway.contract import clip, valid_text
from gateway.errors import ApiError

_NUMPY_TYPES = {"FP32": "<f4", "INT64": "<i8"}


def bad(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, list[str]]
    parameters: dict[str, Any]
    outputs: list[str] | None      # requested output names, None: all
    binary_outputs: set[str]       # outputs to return in the binary extension


def _json_header(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    if header_length is None:
        header, binary = body, b""
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise bad(f"Inference-Header-Content-Length {clip(header_length)!r} is not a length within the body")
        header, binary = body[:int(header_length)], body[int(header_length):]
    try:
        document = orjson.loads(header)
    except orjson.JSONDecodeError as error:
        raise bad(f"the inference request is not valid JSON ({error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise bad("the inference request must be a JSON object with an `inputs` list")
    return document, binary


def _flat(data: Any) -> list:
    """The elements of a (nested) JSON list in row-major order; iterative, so no nesting depth can crash it."""
    elements, stack = [], [iter([data])]
    while stack:
        element = next(stack[-1], _END)
        if element is _END:
            stack.pop()
        elif isinstance(element, list):
            stack.append(iter(element))
        else:
            elements.append(element)
    return elements


_END = object()


def _binary_elements(raw: bytes, name: str) -> list[bytes]:
    """BYTES elements of the binary extension: each a 4-byte little-endian length, then its bytes."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise bad(f"input {name!r}: binary BYTES data ends inside an element's length")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise bad(f"input {name!r}: a binary BYTES element runs past binary_data_size")
        elements.append(raw[offset:offset + size])
        offset += size
    return elements


def _texts(entry: Any, binary: memoryview, offset: int) -> tuple[str, list[str], int]:
    """One input tensor's name and texts, and where the next input's binary data starts."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise bad("every input must be an object with a `name`")
    name, datatype, shape = entry["name"], entry.get("datatype"), entry.get("shape")
    if datatype != "BYTES":
        raise bad(f"input {clip(name)!r} has datatype {clip(str(datatype))!r}: texts are BYTES tensors")
    if not isinstance(shape, list) or not all(type(size) is int and size >= 0 for size in shape):
        raise bad(f"input {clip(name)!r}: `shape` must be a list of non-negative integers")
    parameters = entry.get("parameters") or {}
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise bad(f"input {clip(name)!r}: binary_data_size {size!r} runs past the body")
        raw = _binary_elements(bytes(binary[offset:offset + size]), name)
        offset += size
    elif "data" in entry:
        raw = _flat(entry["data"])
        if not all(isinstance(item, str) for item in raw):
            raise bad(f"input {clip(name)!r}: BYTES data in JSON must be strings")
    else:
        raise bad(f"input {clip(name)!r} has neither `data` nor binary_data_size")
    count = math.prod(shape)
    if count != len(raw):
        raise bad(f"input {clip(name)!r}: shape {shape} holds {count} elements but {len(raw)} were sent")
    if not raw:
        raise bad(f"input {clip(name)!r} is empty: send at least one text")
    texts = []
    for index, item in enumerate(raw):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError:
                raise bad(f"input {clip(name)!r}[{index}] is not UTF-8") from None
        if not item.strip():
            raise bad(f"input {clip(name)!r}[{index}] is blank: send a text")
        texts.append(valid_text(item))
    return name, texts, offset


def _outputs(document: dict) -> tuple[list[str] | None, set[str]]:
    parameters = document.get("parameters") or {}
    binary_default = bool(isinstance(parameters, dict) and parameters.get("binary_data_output"))
    requested = document.get("outputs")
    if requested is None:
        return None, {"*"} if binary_default else set()
    if not isinstance(requested, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) and isinstance(o.get("parameters") or {}, dict)
            for o in requested):
        raise bad("`outputs` must be a list of objects with a `name` (and optional `parameters`)")
    binary = {o["name"] for o in requested
              if (o.get("parameters") or {}).get("binary_data", binary_default)}
    return [o["name"] for o in requested], binary


def decode(body: bytes, header_length: str | None) -> InferRequest:
    document, binary = _json_header(body, header_length)
    view, offset, inputs = memoryview(binary), 0, {}
    for entry in document["inputs"]:
        name, texts, offset = _texts(entry, view, offset)
        if name in inputs:
            raise bad(f"input {clip(name)!r} is given twice")
        inputs[name] = texts
    if offset != len(binary):
        raise bad(f"{len(binary) - offset} bytes of binary data belong to no input")
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise bad("`parameters` must be an object")
    request_id = document.get("id")
    outputs, binary_outputs = _outputs(document)
    return InferRequest(str(request_id) if request_id is not None else None, inputs, parameters, outputs,
                        binary_outputs)


def encode(model: str, version: str | None, call: InferRequest, outputs: dict[str, np.ndarray]) -> Response:
    """The outputs asked for (all by default), each in JSON or, where asked, in the binary extension."""
    described, chunks = [], []
    for name in call.outputs if call.outputs is not None else list(outputs):
        array = outputs[name]
        entry = {"name": name, "datatype": "BYTES" if array.dtype == object else
                 next(k for k, v in _NUMPY_TYPES.items() if np.dtype(v) == array.dtype), "shape": list(array.shape)}
        if name in call.binary_outputs or "*" in call.binary_outputs:
            raw = (b"".join(struct.pack("<I", len(encoded)) + encoded
                            for encoded in (str(item).encode() for item in array.ravel()))
                   if array.dtype == object else array.tobytes())
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = [str(item) for item in array.ravel()] if array.dtype == object else array.ravel().tolist()
        described.append(entry)
    reply = {"model_name": model, **({"model_version": version} if version else {}),
             **({"id": call.id} if call.id is not None else {}), "outputs": described}
    header = orjson.dumps(reply)
    if not chunks:
        return Response(header, media_type="application/json")
    return Response(header + b"".join(chunks), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})
