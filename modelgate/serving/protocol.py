"""The inference request formats the API accepts: what SageMaker's Triton container accepts, checked early.

- `application/json`: a KServe v2 inference request, `{"inputs": [{"name", "shape", "datatype", "data"}], ...}`.
  JSON has no NaN, so `null` in floating-point data marks a missing value: it is sent on to Triton as NaN
  (Triton's parser reads the NaN literal; API Gateway's validator would refuse it).
- `application/vnd.sagemaker-triton.binary+json;json-header-size=<n>`: Triton's binary tensor extension as
  SageMaker carries it: a JSON header of n bytes, then the raw tensor bytes (`binary_data_size` per input).

Anything else is refused with a specific message before SageMaker is called (and billed): a tensor whose data
does not fill its shape (Triton would answer 500), and READINGS rows the forecaster cannot use: a row without any
reading, or with an infinite value (the served ONNX graph answers NaN for those; this API says why, with 400).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from modelgate.model_repository import ENSEMBLE_INPUT

JSON = "application/json"
TRITON_BINARY_JSON = "application/vnd.sagemaker-triton.binary+json"
ACCEPTED_CONTENT_TYPES = (JSON, TRITON_BINARY_JSON)
# Lambda's synchronous payload limit is 6 MB and API Gateway base64-encodes binary bodies (x 4/3): 4 MiB of
# request still fits. SageMaker real-time endpoints accept up to 25 MB, so this API is the tighter bound.
MAX_BODY_BYTES = 4 * 1024 * 1024
DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"}
)
_HEADER_SIZE = re.compile(r"(?:^|;)\s*json-header-size\s*=\s*(\d{1,10})\s*(?:;|$)")
_FLOATS = frozenset({"FP16", "FP32", "FP64"})
_ITEM_BYTES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "UINT32": 4, "INT32": 4,
               "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}  # fmt: skip
_TENSOR_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class InvalidRequest(ValueError):
    """The body or its content type is not an inference request this API accepts (HTTP 400 / 413 / 415).
    `code`: invalid_request for the format, invalid_inference_request for tensors the model would refuse (the
    code Triton's own refusals get, modelgate.serving.invoke)."""

    def __init__(self, status: int, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _refused_tensor(message: str) -> InvalidRequest:
    return InvalidRequest(400, message, "invalid_inference_request")


@dataclass(frozen=True)
class ContentType:
    media_type: str
    json_header_size: int | None  # binary+json only

    @property
    def header(self) -> str:
        """The Content-Type to send to SageMaker."""
        if self.json_header_size is None:
            return self.media_type
        return f"{self.media_type};json-header-size={self.json_header_size}"


def parse_content_type(value: str | None) -> ContentType:
    if not value:
        raise InvalidRequest(415, f"missing Content-Type; use {JSON} or {TRITON_BINARY_JSON};json-header-size=<n>")
    media_type, _, parameters = value.partition(";")
    media_type = media_type.strip().lower()
    if media_type == JSON:
        return ContentType(JSON, None)
    if media_type == TRITON_BINARY_JSON:
        found = _HEADER_SIZE.search(";" + parameters)
        if not found:
            raise InvalidRequest(415, f"{TRITON_BINARY_JSON} needs a json-header-size=<bytes> parameter")
        return ContentType(TRITON_BINARY_JSON, int(found.group(1)))
    raise InvalidRequest(415, f"unsupported Content-Type {media_type!r}; use {JSON} or {TRITON_BINARY_JSON}")


def _check_data(data: object, datatype: str, where: str) -> tuple[bool, int]:
    """`data` is a (nested) list of values of the datatype: numbers, booleans or strings. Whether it holds
    nulls (missing floating-point values), and how many values it holds."""
    kinds = (str,) if datatype == "BYTES" else (bool,) if datatype == "BOOL" else (int, float)
    pending, nulls, count = [data], False, 0
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
            continue
        count += 1
        if item is None and datatype in _FLOATS:
            nulls = True
        elif not isinstance(item, kinds) or (kinds == (int, float) and isinstance(item, bool)):
            expected = {"BYTES": "strings", "BOOL": "booleans"}.get(datatype, "numbers")
            raise InvalidRequest(400, f"{where}.data holds {type(item).__name__} values; {datatype} needs {expected}")
    return nulls, count


def _flat(data: object) -> list:
    if not isinstance(data, list) or not any(isinstance(item, list) for item in data):
        return data if isinstance(data, list) else [data]
    return [value for item in data for value in _flat(item)]


def _check_readings(values: Sequence[float | None], shape: list[int], where: str) -> None:
    """Each row of READINGS [n, WINDOW] must hold a reading, and every value be finite or a gap (NaN/null)."""
    if any(value is not None and math.isinf(value) for value in values):
        raise _refused_tensor(f"{where}: READINGS must be finite numbers (NaN or null marks a missing hour)")
    width = shape[-1]
    for row in range(shape[0] if width else 0):
        if all(value is None or value != value for value in values[row * width : (row + 1) * width]):
            message = f"{where}: window {row} holds no reading at all: nothing to forecast from; send at least one"
            raise _refused_tensor(message)


def _nan_for_null(data: object) -> object:
    if isinstance(data, list):
        return [_nan_for_null(item) for item in data]
    return math.nan if data is None else data


def _elements(shape: list[int]) -> int:
    return math.prod(shape)


def _is_readings(tensor: dict) -> bool:
    return tensor["name"] == ENSEMBLE_INPUT and tensor["datatype"] == "FP32" and len(tensor["shape"]) == 2


def _check_inputs(header: object, binary: memoryview | None) -> bool:
    """Raise InvalidRequest for anything malformed; True if float data holds nulls. `binary`: the bytes after a
    binary+json header (the inputs' tensors, in order)."""
    binary_bytes = None if binary is None else len(binary)
    if not isinstance(header, dict):
        raise InvalidRequest(400, "the inference request must be a JSON object")
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequest(400, "the inference request needs a non-empty 'inputs' list")
    declared_binary, nulls = 0, False
    for index, tensor in enumerate(inputs):
        where = f"inputs[{index}]"
        if not isinstance(tensor, dict):
            raise InvalidRequest(400, f"{where} must be an object")
        name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
        if not isinstance(name, str) or not _TENSOR_NAME.match(name):
            raise InvalidRequest(400, f"{where}.name must be a tensor name")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise InvalidRequest(400, f"{where}.shape must be a list of integers")
        if any(d < 0 for d in shape):
            raise InvalidRequest(400, f"{where}.shape must not be negative")
        if datatype not in DATATYPES:
            raise InvalidRequest(400, f"{where}.datatype must be one of {', '.join(sorted(DATATYPES))}")
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if binary_bytes is None:
                raise InvalidRequest(400, f"{where} declares binary_data_size in a {JSON} request")
            if not isinstance(size, int) or size < 0:
                raise InvalidRequest(400, f"{where}.parameters.binary_data_size must be a byte count")
            needed = _elements(shape) * _ITEM_BYTES.get(datatype, 0)
            if datatype in _ITEM_BYTES and size != needed:
                raise _refused_tensor(
                    f"{where}.parameters.binary_data_size is {size} bytes; shape {shape} of {datatype} needs {needed}"
                )
            if _is_readings(tensor) and declared_binary + size <= binary_bytes:
                # Triton's binary tensors are little-endian, as Lambda's x86_64 and arm64 are: cast in place.
                _check_readings(binary[declared_binary : declared_binary + size].cast("f"), shape, where)
            declared_binary += size
        elif "data" not in tensor:
            raise InvalidRequest(400, f"{where} has neither 'data' nor parameters.binary_data_size")
        else:
            has_nulls, count = _check_data(tensor["data"], datatype, where)
            if count != _elements(shape):
                raise _refused_tensor(
                    f"{where}.data holds {count} values; shape {shape} needs {_elements(shape)}: send one per element"
                )
            if _is_readings(tensor):
                _check_readings(_flat(tensor["data"]), shape, where)
            nulls = nulls or has_nulls
    if binary_bytes is not None and declared_binary != binary_bytes:
        raise InvalidRequest(
            400, f"the inputs declare {declared_binary} bytes of binary data, the body carries {binary_bytes}"
        )
    return nulls


def validate_request(body: bytes, content_type: ContentType) -> bytes:
    """The body to send to the endpoint; InvalidRequest unless `body` is a well-formed inference request of
    `content_type`. Returned unchanged, except that nulls in JSON float data become NaN."""
    if len(body) > MAX_BODY_BYTES:
        raise InvalidRequest(413, f"request body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    if not body:
        raise InvalidRequest(400, "empty request body")
    if content_type.json_header_size is None:
        header_bytes, binary = body, None
    else:
        if content_type.json_header_size > len(body):
            raise InvalidRequest(
                400, f"json-header-size is {content_type.json_header_size} but the body has {len(body)} bytes"
            )
        header_bytes = body[: content_type.json_header_size]
        binary = memoryview(body)[content_type.json_header_size :]
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidRequest(400, f"the inference request is not valid JSON: {error}") from None
    if not _check_inputs(header, binary):
        return body
    if binary is not None:
        raise InvalidRequest(400, "null values are only accepted in application/json requests")
    for tensor in header["inputs"]:
        if tensor["datatype"] in _FLOATS:
            tensor["data"] = _nan_for_null(tensor["data"])
    return json.dumps(header).encode()
