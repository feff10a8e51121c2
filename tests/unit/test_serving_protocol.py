"""modelgate.serving.protocol: which bodies and content types reach the endpoint, and how."""

from __future__ import annotations

import json
import math

import pytest

from modelgate.serving.protocol import (
    JSON,
    MAX_BODY_BYTES,
    TRITON_BINARY_JSON,
    InvalidRequest,
    parse_content_type,
    validate_request,
)


def tensor(**overrides) -> dict:
    return {"name": "READINGS", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0], **overrides}


def body(*tensors: dict) -> bytes:
    return json.dumps({"inputs": list(tensors)}).encode()


def test_a_well_formed_json_request_is_passed_on_unchanged():
    request = body(tensor())
    assert validate_request(request, parse_content_type("application/json; charset=utf-8")) == request


def test_nulls_in_float_data_become_nan_for_triton():
    sent = validate_request(body(tensor(data=[[1.0, None, 3.0]])), parse_content_type(JSON))
    data = json.loads(sent)["inputs"][0]["data"]  # Python reads the NaN literal, as Triton does
    assert data[0][0] == 1.0
    assert math.isnan(data[0][1])
    assert b"NaN" in sent


def test_binary_json_requests_are_checked_against_their_header_size():
    header = json.dumps({"inputs": [tensor(data=None, parameters={"binary_data_size": 12})]}).encode()
    header = header.replace(b', "data": null', b"")
    content_type = parse_content_type(f"{TRITON_BINARY_JSON};json-header-size={len(header)}")
    assert content_type.header == f"{TRITON_BINARY_JSON};json-header-size={len(header)}"
    assert validate_request(header + bytes(12), content_type) == header + bytes(12)
    with pytest.raises(InvalidRequest, match="declare 12 bytes of binary data, the body carries 8"):
        validate_request(header + bytes(8), content_type)
    with pytest.raises(InvalidRequest, match="json-header-size is"):
        validate_request(header[:10], content_type)


@pytest.mark.parametrize(
    ("content_type", "fragment"),
    [
        (None, "missing Content-Type"),
        ("text/plain", "unsupported Content-Type"),
        (TRITON_BINARY_JSON, "json-header-size"),
        (f"{TRITON_BINARY_JSON};json-header-size=abc", "json-header-size"),
    ],
)
def test_other_content_types_are_415(content_type, fragment):
    with pytest.raises(InvalidRequest, match=fragment) as refused:
        parse_content_type(content_type)
    assert refused.value.status == 415


@pytest.mark.parametrize(
    ("request_body", "fragment"),
    [
        (b"", "empty request body"),
        (b"[1, 2]", "must be a JSON object"),
        (body(), "non-empty 'inputs'"),
        (body(tensor(name="bad name!")), "tensor name"),
        (body(tensor(shape=[1, -3])), "must not be negative"),
        (body(tensor(shape=[1, True])), "list of integers"),
        (body(tensor(datatype="FLOAT")), "datatype must be one of"),
        (body(tensor(data=["1", "2", "3"])), "needs numbers"),
        (body(tensor(datatype="BYTES", data=[1, 2])), "needs strings"),
        (body(tensor(datatype="INT32", data=[1, None])), "NoneType"),
        (body({"name": "READINGS", "shape": [1], "datatype": "FP32"}), "neither 'data'"),
        (body(tensor(parameters={"binary_data_size": 4})), "binary_data_size in a application/json request"),
    ],
)
def test_malformed_requests_are_400_with_a_specific_message(request_body, fragment):
    with pytest.raises(InvalidRequest, match=fragment) as refused:
        validate_request(request_body, parse_content_type(JSON))
    assert refused.value.status == 400


def test_oversized_requests_are_413():
    with pytest.raises(InvalidRequest) as refused:
        validate_request(b" " * (MAX_BODY_BYTES + 1), parse_content_type(JSON))
    assert refused.value.status == 413


@pytest.mark.parametrize(
    ("data", "shape", "fragment"),
    [
        ([1.0] * 5, [2, 3], "holds 5 values; shape \\[2, 3\\] needs 6"),  # Triton answered 500 (the API 502)
        ([[1.0, 2.0, 3.0], [1.0, 2.0]], [2, 3], "holds 5 values"),  # a short row
        ([1.0] * 7, [2, 3], "holds 7 values"),
        ([], [1, 3], "holds 0 values"),
    ],
)
def test_data_that_does_not_fill_its_shape_is_400_not_a_model_failure(data, shape, fragment):
    """KServe v2 (Triton's HTTP/REST protocol): a tensor's data holds one value per element of its shape."""
    with pytest.raises(InvalidRequest, match=fragment) as refused:
        validate_request(body(tensor(data=data, shape=shape)), parse_content_type(JSON))
    assert refused.value.status == 400


def binary_request(values: list[float], shape: list[int], size: int | None = None) -> tuple[bytes, object]:
    import struct

    payload = struct.pack(f"<{len(values)}f", *values)
    declared = {"binary_data_size": len(payload) if size is None else size}
    header = json.dumps({"inputs": [{"name": "READINGS", "shape": shape, "datatype": "FP32", "parameters": declared}]})
    content_type = parse_content_type(f"{TRITON_BINARY_JSON};json-header-size={len(header)}")
    return header.encode() + payload, content_type


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ([1.0, 2.0, 3.0, math.nan, math.nan, math.nan], "window 1 holds no reading at all"),
        ([1.0, math.inf, 3.0, 4.0, 5.0, 6.0], "must be finite"),
        ([1.0, 2.0, 3.0, -math.inf, math.nan, 6.0], "must be finite"),
    ],
)
def test_readings_rows_the_model_cannot_forecast_from_are_400_in_json_and_binary(values, fragment):
    """The served ONNX graph answers NaN for such rows; the API refuses them with the reason, in both formats."""
    as_json = [None if math.isnan(v) else v for v in values]
    # JSON has no infinity, but Python's parser (like Triton's) reads the Infinity literal.
    request = json.dumps({"inputs": [tensor(shape=[2, 3], data=as_json)]}).encode()
    with pytest.raises(InvalidRequest, match=fragment) as refused:
        validate_request(request, parse_content_type(JSON))
    assert refused.value.status == 400
    request, content_type = binary_request(values, [2, 3])
    with pytest.raises(InvalidRequest, match=fragment) as refused:
        validate_request(request, content_type)
    assert refused.value.status == 400


def test_readings_with_gaps_in_every_row_pass_in_both_formats():
    values = [math.nan, 2.0, math.nan, 4.0, math.nan, math.nan]
    request, content_type = binary_request(values, [2, 3])
    assert validate_request(request, content_type) == request
    as_json = body(tensor(shape=[2, 3], data=[[None, 2.0, None], [4.0, None, None]]))
    assert b"NaN" in validate_request(as_json, parse_content_type(JSON))


def test_binary_data_size_must_match_the_shape_and_datatype():
    request, content_type = binary_request([1.0] * 5, [2, 3])
    with pytest.raises(
        InvalidRequest, match=r"binary_data_size is 20 bytes; shape \[2, 3\] of FP32 needs 24"
    ) as refused:
        validate_request(request, content_type)
    assert refused.value.status == 400
