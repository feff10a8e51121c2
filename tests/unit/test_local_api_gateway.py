"""The API Gateway stand-in behaves like API Gateway where handlers can tell the difference."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from sandbox.api_gateway import Authorizer, LocalApiGateway, Route


def echo(event, context):
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
        "body": json.dumps(
            {
                "path": event["pathParameters"],
                "query": event["queryStringParameters"],
                "body": event["body"],
                "auth": event["requestContext"].get("authorizer"),
            }
        ),
    }


def token_authorizer(event, context):
    if event["authorizationToken"] == "Bearer good":
        return {
            "principalId": "app",
            "policyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": event["methodArn"]}],
            },
            "context": {"scope": "models:read"},
        }
    if event["authorizationToken"] == "Bearer denied":
        return {"principalId": "app", "policyDocument": {"Statement": [{"Effect": "Deny", "Resource": "*"}]}}
    raise Exception("Unauthorized")


@pytest.fixture(scope="module")
def api():
    routes = [
        Route("POST", "/models/{model}/invoke", echo, Authorizer(token_authorizer)),
        Route("GET", "/open", echo),
    ]
    with LocalApiGateway(routes) as running:
        yield running


def call(api, method, path, body=None, headers=None):
    request = urllib.request.Request(api.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_authorized_request_reaches_handler_with_path_params_and_authorizer_context(api):
    status, headers, body = call(
        api, "POST", "/models/cust-1/invoke?x=1", b'{"a": 1}', {"Authorization": "Bearer good"}
    )
    assert status == 200
    data = json.loads(body)
    assert data["path"] == {"model": "cust-1"}
    assert data["query"] == {"x": "1"}
    assert data["body"] == '{"a": 1}'
    assert data["auth"] == {"scope": "models:read", "principalId": "app"}
    assert headers.get_all("Set-Cookie") == ["a=1", "b=2"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer bad"}, 401), ({"Authorization": "Bearer denied"}, 403)],
)
def test_authorizer_outcomes_map_to_api_gateway_statuses(api, headers, status):
    assert call(api, "POST", "/models/cust-1/invoke", b"{}", headers)[0] == status


def test_unknown_route_and_wrong_method(api):
    assert call(api, "GET", "/nope")[0] == 403
    assert call(api, "DELETE", "/open")[0] == 405
    assert call(api, "GET", "/open")[0] == 200
