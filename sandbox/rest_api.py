"""The routes of a REST API as its template declares them, for sandbox.api_gateway.LocalApiGateway.

Resource paths are rebuilt from the AWS::ApiGateway::Resource tree, each method's Lambda proxy integration and
custom authorizer are resolved to the functions their URIs name, and its RequestValidator, required request
parameters and request models are applied as API Gateway applies them (400 before the function runs), so the
local API serves exactly what deploys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.api_gateway import Authorizer, Route, Validation
from sandbox.cloudformation import DeployedStack


def _function_in(node: Any) -> str | None:
    """The logical id of the Lambda function a URI expression names through Fn::GetAtt [id, Arn]."""
    if isinstance(node, dict):
        if "Fn::GetAtt" in node and node["Fn::GetAtt"][1] == "Arn":
            return node["Fn::GetAtt"][0]
        for value in node.values():
            if found := _function_in(value):
                return found
    if isinstance(node, list):
        for value in node:
            if found := _function_in(value):
                return found
    return None


def _path(resources: dict, reference: Any) -> str:
    if isinstance(reference, dict) and "Fn::GetAtt" in reference:  # the RestApi's RootResourceId
        return ""
    logical = reference["Ref"]
    props = resources[logical]["Properties"]
    return _path(resources, props["ParentId"]) + "/" + props["PathPart"]


def _validation(resources: dict, props: dict) -> Validation | None:
    if "RequestValidatorId" not in props:
        return None
    validator = resources[props["RequestValidatorId"]["Ref"]]["Properties"]
    required = tuple(
        name.removeprefix("method.request.")
        for name, is_required in (props.get("RequestParameters") or {}).items()
        if is_required is True or str(is_required).lower() == "true"
    )
    models = {
        content_type: resources[model["Ref"]]["Properties"]["Schema"]
        for content_type, model in (props.get("RequestModels") or {}).items()
        if isinstance(model, dict) and "Ref" in model
    }
    return Validation(
        parameters=required,
        models={content_type.lower(): schema for content_type, schema in models.items()},
        validate_parameters=bool(validator.get("ValidateRequestParameters")),
        validate_body=bool(validator.get("ValidateRequestBody")),
    )


def routes_from_template(stack: DeployedStack, handler: Callable[[str], Callable]) -> list[Route]:
    """Routes of every Lambda-proxy method of `stack`; `handler(logical id)` gives the callable for a function."""
    resources = stack.template["Resources"]
    routes = []
    for resource in resources.values():
        props = resource.get("Properties", {})
        if resource["Type"] != "AWS::ApiGateway::Method" or props.get("HttpMethod") == "OPTIONS":
            continue
        integration = props.get("Integration", {})
        if integration.get("Type") != "AWS_PROXY" or not (function := _function_in(integration.get("Uri"))):
            raise ValueError(f"{stack.name}: method {props.get('HttpMethod')} is not a Lambda proxy integration")
        authorizer = None
        if props.get("AuthorizationType") == "CUSTOM":
            declared = resources[props["AuthorizerId"]["Ref"]]["Properties"]
            kind = declared.get("Type", "TOKEN")
            header = declared.get("IdentitySource", "method.request.header.Authorization").rsplit(".", 1)[-1]
            authorizer = Authorizer(handler(_function_in(declared["AuthorizerUri"])), kind, header)
        path = _path(resources, props["ResourceId"]) or "/"
        routes.append(Route(props["HttpMethod"], path, handler(function), authorizer, _validation(resources, props)))
    return routes
