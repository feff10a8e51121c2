"""IAM enforced in the local AWS (moto's server): every request is allowed only if the caller's identity policies
allow it, evaluated the way AWS does for a same-account request.

moto 5.2.5 can enforce IAM (`INITIAL_NO_AUTH_ACTION_COUNT`), but what it evaluates is too lenient and too crude
to stand in for AWS (moto/iam/access_control.py, moto/core/authorization.py):
- the resource is "*" for every service but S3, SQS, IAM and STS, so a grant scoped to a table, parameter, key or
  model package can never match (moto refuses every least-privilege policy), while `Resource: "*"` always does;
- conditions only see request parameters (no s3:prefix, no kms:ViaService), and a statement whose condition fails
  counts as an explicit Deny, refusing what another statement allows;
- S3 never asks KMS: SSE-KMS objects are read and written without kms:Decrypt / kms:GenerateDataKey on the key,
  and CopyObject never needs s3:GetObject on its source;
- DynamoDB's TransactWriteItems is checked as an action of its own, which IAM does not have (AWS checks PutItem,
  UpdateItem, DeleteItem, ConditionCheckItem per item and table).
So `install()` replaces moto's check with this module's: the request's action(s) and resource ARN(s) are derived
from its parameters (`_checks`), conditions are evaluated with the keys AWS sets (`_context`), explicit Deny wins,
an Allow is needed; the implied checks above are added. Key policies and bucket policies are not evaluated
(CDK's key policy delegates to IAM in the key's account; bucket policies here only deny non-TLS or other
accounts); requests moto cannot route to a resource (`UNRESOLVED`) are allowed on the action alone and counted.

Every refusal is recorded in `DENIALS` (who, what, on which resource) so a test or the demo can say which grant
is missing.
"""

from __future__ import annotations

import base64
import email
import email.utils
import json
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

ADMIN_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


@dataclass(frozen=True)
class Denial:
    principal: str
    action: str
    resource: str

    def __str__(self) -> str:
        return f"{self.principal} may not {self.action} on {self.resource}"


DENIALS: list[Denial] = []
UNRESOLVED: set[str] = set()  # actions allowed on the action alone: this module cannot name their resource
_lock = threading.Lock()


# -- policy evaluation ------------------------------------------------------------------------------------------
def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _wildcard(pattern: str, value: str, *, case: bool = True) -> bool:
    """IAM's `*` and `?` (no character classes, unlike fnmatch's `[`)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def _action_matches(statement: dict, action: str) -> bool:
    if "NotAction" in statement:
        return not any(_wildcard(p, action, case=False) for p in _as_list(statement["NotAction"]))
    return any(_wildcard(p, action, case=False) for p in _as_list(statement.get("Action", [])))


def _resource_matches(statement: dict, resource: str | None) -> bool:
    if resource is None:  # unresolved: judged on the action alone
        return True
    if "NotResource" in statement:
        return not any(_wildcard(p, resource) for p in _as_list(statement["NotResource"]))
    return any(_wildcard(p, resource) for p in _as_list(statement.get("Resource", [])))


def _compare(operator: str, expected: str, actual: str) -> bool:
    if operator in ("StringEquals", "ArnEquals"):
        return actual == expected
    if operator == "StringEqualsIgnoreCase":
        return actual.lower() == expected.lower()
    if operator in ("StringLike", "ArnLike"):
        return _wildcard(expected, actual)
    if operator == "Bool":
        return actual.lower() == str(expected).lower()
    if operator.startswith("Numeric"):
        a, e = float(actual), float(expected)
        return {
            "NumericEquals": a == e,
            "NumericLessThan": a < e,
            "NumericLessThanEquals": a <= e,
            "NumericGreaterThan": a > e,
            "NumericGreaterThanEquals": a >= e,
        }[operator]
    raise ValueError(f"condition operator {operator} is not evaluated locally")


def _condition_holds(operator: str, key: str, expected: Any, context: dict[str, Any]) -> bool:
    qualifier, _, operator = operator.rpartition(":")
    if_exists = operator.endswith("IfExists")
    operator = operator.removesuffix("IfExists")
    present = key in context
    negated = operator.startswith(("StringNot", "ArnNot", "NumericNot"))
    if operator == "Null":
        return (not present) == (str(expected).lower() == "true")
    if not present:  # AWS: a missing key fails a condition, except a negated one, ...IfExists, ForAllValues
        return if_exists or negated or qualifier == "ForAllValues"
    actual = [str(v) for v in _as_list(context[key])]
    expected = [str(v) for v in _as_list(expected)]
    base = operator.replace("Not", "", 1) if negated else operator

    def one(value: str) -> bool:
        matched = any(_compare(base, e, value) for e in expected)
        return not matched if negated else matched

    if qualifier == "ForAllValues":
        return all(one(v) for v in actual)
    return any(one(v) for v in actual)


def _conditions_hold(statement: dict, context: dict[str, Any]) -> bool:
    for operator, keys in (statement.get("Condition") or {}).items():
        for key, expected in keys.items():
            context_key = next((k for k in context if k.lower() == key.lower()), key)
            if not _condition_holds(operator, context_key, expected, context):
                return False
    return True


def is_allowed(policies: list[dict], action: str, resource: str | None, context: dict[str, Any]) -> bool:
    """AWS's evaluation of identity policies for one action on one resource: an applicable explicit Deny refuses,
    otherwise an applicable Allow is needed."""
    allowed = False
    for policy in policies:
        for statement in _as_list(policy.get("Statement", [])):
            if not (_action_matches(statement, action) and _resource_matches(statement, resource)):
                continue
            if not _conditions_hold(statement, context):
                continue
            if statement.get("Effect") == "Deny":
                return False
            allowed = True
    return allowed


# -- what a request asks for -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    service: str  # the SigV4 signing name
    action: str  # the operation, as moto names it (for S3: the IAM action)
    region: str
    account: str
    params: dict[str, Any]
    method: str
    path: str
    headers: Any
    moto_resource: str


def _arn(service: str, request: Request, resource: str, *, region: bool = True, account: bool = True) -> str:
    return f"arn:aws:{service}:{request.region if region else ''}:{request.account if account else ''}:{resource}"


def _ssm_parameter(request: Request, name: str) -> str:
    return name if name.startswith("arn:") else _arn("ssm", request, "parameter/" + name.lstrip("/"))


def _dynamodb_table(request: Request, table: str, index: str | None = None) -> str:
    arn = table if table.startswith("arn:") else _arn("dynamodb", request, f"table/{table}")
    return f"{arn}/index/{index}" if index else arn


def _sagemaker(request: Request, kind: str, name: str) -> str:
    # SageMaker ARNs are lower case, whatever the case of the name.
    return (name if name.startswith("arn:") else _arn("sagemaker", request, f"{kind}/{name}")).lower()


def _kms_key(request: Request, key_id: str) -> str | None:
    from moto.kms.models import kms_backends

    try:
        return kms_backends[request.account][request.region].describe_key(key_id).arn
    except Exception:  # another account's key by ARN, or an unknown one (KMS answers NotFound itself)
        return key_id if key_id.startswith("arn:") else None


def _email_identities(request: Request) -> list[str]:
    source = request.params.get("Source")
    if not source and request.params.get("RawMessage.Data"):
        message = email.message_from_bytes(base64.b64decode(request.params["RawMessage.Data"]))
        source = message.get("From", "")
    address = email.utils.parseaddr(source or "")[1]
    if not address:
        return []
    domain = address.rpartition("@")[2]
    return [_arn("ses", request, f"identity/{address}"), _arn("ses", request, f"identity/{domain}")]


Check = tuple[str, list[str | None]]  # (IAM action, resources any of which may be allowed)


def _checks(request: Request) -> list[Check]:
    """The (action, resources) pairs AWS authorizes for this request; resource None when not derivable here."""
    service, action, p = request.service, request.action, request.params
    iam_action = f"{service}:{action}"
    if service == "s3":
        checks: list[Check] = [(iam_action, [request.moto_resource])]
        copy_source = request.headers.get("x-amz-copy-source")
        if copy_source and request.method == "PUT":
            source = unquote(copy_source.split("?")[0]).lstrip("/")
            checks.append(("s3:GetObject", [f"arn:aws:s3:::{source}"]))
        return checks
    if service == "dynamodb":
        if action in ("TransactWriteItems", "TransactGetItems"):
            per_item = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                        "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}  # fmt: skip
            return [
                (f"dynamodb:{per_item[kind]}", [_dynamodb_table(request, body["TableName"])])
                for item in p.get("TransactItems", [])
                for kind, body in item.items()
            ]
        if action in ("BatchGetItem", "BatchWriteItem"):
            return [(iam_action, [_dynamodb_table(request, table)]) for table in p.get("RequestItems", {})]
        if "TableName" in p:
            return [(iam_action, [_dynamodb_table(request, p["TableName"], p.get("IndexName"))])]
    if service == "ssm":
        names = _as_list(p.get("Names") or p.get("Name") or p.get("Path") or [])
        if names:
            return [(iam_action, [_ssm_parameter(request, name)]) for name in names]
        if action == "DescribeParameters":
            return [(iam_action, ["*"])]
    if service == "sagemaker":
        package = p.get("ModelPackageName") or p.get("ModelPackageArn")
        if package:
            return [(iam_action, [_sagemaker(request, "model-package", package)])]
        if p.get("ModelPackageGroupName") and action != "ListModelPackages":
            return [(iam_action, [_sagemaker(request, "model-package-group", p["ModelPackageGroupName"])])]
        if p.get("EndpointName"):
            return [(iam_action, [_sagemaker(request, "endpoint", p["EndpointName"])])]
    if service == "kms" and p.get("KeyId"):
        return [(iam_action, [_kms_key(request, p["KeyId"])])]
    if service == "ses" and action in ("SendEmail", "SendRawEmail"):
        identities = _email_identities(request)
        if identities:
            return [(iam_action, identities)]
    if service == "events" and action == "PutEvents":
        buses = {entry.get("EventBusName") or "default" for entry in p.get("Entries", [])}
        return [
            (iam_action, [bus if bus.startswith("arn:") else _arn("events", request, f"event-bus/{bus}")])
            for bus in sorted(buses)
        ]
    if service == "apigateway":  # IAM authorizes API Gateway's management API by HTTP method and path
        path = urlparse(request.path).path
        return [(f"apigateway:{request.method}", [f"arn:aws:apigateway:{request.region}::{path}"])]
    if service == "glue" and p.get("JobName"):
        return [(iam_action, [_arn("glue", request, f"job/{p['JobName']}")])]
    if service == "sts" and action == "AssumeRole":
        return [(iam_action, [p.get("RoleArn")])]
    if service in ("sqs", "iam") and request.moto_resource != "*":
        return [(iam_action, [request.moto_resource])]
    with _lock:
        UNRESOLVED.add(iam_action)
    return [(iam_action, [None])]


def _implied_kms_checks(request: Request) -> list[Check]:
    """S3 asks KMS on the caller's behalf for SSE-KMS objects: kms:GenerateDataKey to write, kms:Decrypt to read."""
    if request.service != "s3" or request.method not in ("GET", "PUT", "POST"):
        return []
    resource = request.moto_resource.removeprefix("arn:aws:s3:::")
    bucket, _, key = resource.partition("/")
    if not key:
        return []
    from moto.s3.models import s3_backends

    backend = s3_backends[request.account]["aws"]
    try:
        stored = backend.get_bucket(bucket)
    except Exception:
        return []
    kms_key = None
    rules = (stored.encryption or {}).get("Rule", {})
    default = rules.get("ApplyServerSideEncryptionByDefault", {}) if isinstance(rules, dict) else {}
    if default.get("SSEAlgorithm") == "aws:kms":
        kms_key = default.get("KMSMasterKeyID")
    if request.method == "GET":
        obj = stored.keys.get(key)
        kms_key = getattr(obj, "kms_key_id", None) or kms_key
        action = "kms:Decrypt"
    else:
        kms_key = request.headers.get("x-amz-server-side-encryption-aws-kms-key-id") or kms_key
        action = "kms:GenerateDataKey"
    if not kms_key:
        return []
    return [(action, [_kms_key(request, kms_key) or kms_key])]


def _bucket_owner(request: Request) -> str | None:
    from moto.s3.models import s3_backends

    bucket = request.moto_resource.removeprefix("arn:aws:s3:::").partition("/")[0]
    try:
        return s3_backends[request.account]["aws"].get_bucket(bucket).account_id
    except Exception:  # no such bucket: S3 answers NoSuchBucket itself
        return None


def _context(request: Request, principal_arn: str) -> dict[str, Any]:
    context: dict[str, Any] = {
        "aws:PrincipalArn": principal_arn,
        "aws:PrincipalAccount": request.account,
        "aws:RequestedRegion": request.region,
    }
    if request.service == "s3":
        query = parse_qs(urlparse(request.path).query)
        if "prefix" in query:
            context["s3:prefix"] = query["prefix"][0]
        owner = _bucket_owner(request)
        if owner:
            context["s3:ResourceAccount"] = context["aws:ResourceAccount"] = owner
    if request.service == "kms":
        context["kms:CallerAccount"] = request.account
        for name, value in (request.params.get("EncryptionContext") or {}).items():
            context[f"kms:EncryptionContext:{name}"] = value
        if "MacAlgorithm" in request.params:
            context["kms:MacAlgorithm"] = request.params["MacAlgorithm"]
    if request.service == "ssm" and "Recursive" in request.params:
        context["ssm:Recursive"] = str(request.params["Recursive"]).lower()
    if request.service == "events":
        entries = request.params.get("Entries", [])
        context["events:source"] = [e.get("Source", "") for e in entries]
        context["events:detail-type"] = [e.get("DetailType", "") for e in entries]
    if request.service == "sagemaker" and "ModelApprovalStatus" in request.params:
        context["sagemaker:ModelApprovalStatus"] = request.params["ModelApprovalStatus"]
    return context


def authorize(policies: list[dict], request: Request, principal_arn: str) -> Denial | None:
    """The first check AWS would refuse, or None."""
    if request.service == "sts" and request.action == "GetCallerIdentity":
        return None  # always allowed, whatever the policies say (as in AWS)
    context = _context(request, principal_arn)
    for action, resources in _checks(request):
        if not any(is_allowed(policies, action, resource, context) for resource in resources):
            return Denial(principal_arn, action, resources[0] or "*")
    via_s3 = {**context, "kms:ViaService": f"s3.{request.region}.amazonaws.com", "kms:CallerAccount": request.account}
    for action, resources in _implied_kms_checks(request):
        if not any(is_allowed(policies, action, resource, via_s3) for resource in resources):
            return Denial(principal_arn, f"{action} (S3 {request.action} of an SSE-KMS object)", resources[0] or "*")
    return None


# -- moto hook ---------------------------------------------------------------------------------------------------
def _params(moto_request: Any) -> dict[str, Any]:
    body = moto_request._body
    if isinstance(body, bytes):
        try:
            body = body.decode()
        except UnicodeDecodeError:
            body = ""
    if body and body.lstrip().startswith("{"):
        try:
            return json.loads(body)
        except ValueError:
            pass
    return {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in (moto_request._data or {}).items()}


def _policy_documents(access_key: Any) -> list[dict]:
    from moto.iam.access_control import IAMPolicy

    return [IAMPolicy(policy)._policy_json for policy in access_key.collect_policies()]


def _check_action_permitted(self: Any, resource: str) -> None:
    from moto.core.exceptions import AccessDeniedError

    service, _, action = self._action.partition(":")
    request = Request(
        service=service,
        action=action,
        region=self._region,
        account=self.account_id,
        params=_params(self),
        method=self._method,
        path=self._path,
        headers=self._headers,
        moto_resource=resource,
    )
    principal = self._access_key.arn
    denial = authorize(_policy_documents(self._access_key), request, principal)
    if denial is None:
        return
    with _lock:
        DENIALS.append(denial)
    if service == "s3":
        self._raise_access_denied()  # S3's own AccessDenied XML
    raise AccessDeniedError(user_arn=principal, action=f"{denial.action} on resource: {denial.resource}")


def authorize_signed(headers: Any, region: str, action: str, resource: str) -> Denial | None:
    """For stand-ins outside moto (the endpoint's InvokeEndpoint): authorize a SigV4-signed request's caller, as
    known to the local IAM, for one action on one resource. A request without known credentials is refused."""
    from moto.iam.access_control import CreateAccessKeyFailure, create_access_key
    from moto.iam.models import get_account_id_from

    found = re.search(r"Credential=([^/]+)/", headers.get("Authorization") or "")
    if not found:
        return Denial("anonymous", action, resource)
    key_id = found[1]
    account = get_account_id_from(key_id)
    try:
        caller = create_access_key(account, "aws", key_id, dict(headers.items()))
    except CreateAccessKeyFailure:
        return Denial(f"unknown key {key_id}", action, resource)
    service, _, operation = action.partition(":")
    request = Request(service, operation, region, account, {}, "POST", "/", headers, resource)
    context = _context(request, caller.arn)
    if is_allowed(_policy_documents(caller), action, resource, context):
        return None
    denial = Denial(caller.arn, action, resource)
    with _lock:
        DENIALS.append(denial)
    return denial


def install() -> None:
    """Route moto's IAM check through this module (idempotent; moto only checks while enforcing)."""
    from moto.iam.access_control import IAMRequestBase

    if getattr(IAMRequestBase.check_action_permitted, "modelgate", False):
        return
    _check_action_permitted.modelgate = True  # type: ignore[attr-defined]
    IAMRequestBase.check_action_permitted = _check_action_permitted
    # The access key (and session token) must exist, which moto checks when it builds the request; its own
    # signature computation disagrees with botocore on some REST paths (Lambda's), and the local keys are no
    # secret: signatures are not what is being tested.
    IAMRequestBase.check_signature = lambda self: None


class Enforcing:
    """While active, moto authenticates and authorizes every request (it keeps this switch per process)."""

    def __enter__(self) -> Enforcing:
        from moto import settings
        from moto.core.authorization import ActionAuthenticatorMixin

        install()
        self._saved = (settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count)
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        ActionAuthenticatorMixin.request_count = 0
        return self

    def __exit__(self, *exc: object) -> None:
        from moto import settings
        from moto.core.authorization import ActionAuthenticatorMixin

        settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = self._saved


def trusts(trust_policy: dict | str, service: str) -> bool:
    """Whether a role's trust policy lets `service` (e.g. lambda.amazonaws.com) assume it."""
    document = json.loads(trust_policy) if isinstance(trust_policy, str) else trust_policy
    for statement in _as_list(document.get("Statement", [])):
        if statement.get("Effect") != "Allow":
            continue
        if not any(_wildcard(a, "sts:AssumeRole", case=False) for a in _as_list(statement.get("Action", []))):
            continue
        principals = statement.get("Principal", {})
        services = _as_list(principals.get("Service", [])) if isinstance(principals, dict) else []
        if service in services or principals == "*":
            return True
    return False
