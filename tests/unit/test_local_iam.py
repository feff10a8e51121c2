"""The local AWS's IAM evaluation (sandbox/iam.py): what AWS's policy evaluation logic decides for identity
policies, so a grant missing from a template is AccessDenied locally too, and nothing AWS refuses is allowed."""

from __future__ import annotations

import pytest

from sandbox.iam import Request, authorize, is_allowed, trusts

ACCOUNT, REGION = "111111111111", "eu-west-1"


def policy(*statements: dict) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action, resource, **extra) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def request(service: str, action: str, params: dict | None = None, **fields) -> Request:
    defaults = {"method": "POST", "path": "/", "headers": {}, "moto_resource": "*"}
    return Request(service, action, REGION, ACCOUNT, params or {}, **{**defaults, **fields})


def test_iam_evaluation_an_allow_is_needed_and_an_explicit_deny_wins():
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/state"
    assert not is_allowed([], "dynamodb:GetItem", table, {})
    granted = policy(allow(["dynamodb:GetItem", "dynamodb:Query"], table))
    assert is_allowed([granted], "dynamodb:getitem", table, {}), "actions are case-insensitive"
    assert not is_allowed([granted], "dynamodb:GetItem", table + "-other", {})
    denied = policy({"Effect": "Deny", "Action": "dynamodb:*", "Resource": "*"})
    assert not is_allowed([granted, denied], "dynamodb:GetItem", table, {})


def test_a_grant_scoped_to_one_resource_is_honoured_where_moto_alone_refuses_it():
    """moto 5.2.5 evaluates every non-S3 request against resource "*": the request's own ARN is used here."""
    parameter = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/modelgate/energy/dev"
    grant = policy(allow("ssm:GetParameter", parameter))
    asked = request("ssm", "GetParameter", {"Name": "/modelgate/energy/dev"})
    assert authorize([grant], asked, "role") is None
    other = request("ssm", "GetParameter", {"Name": "/modelgate/energy/prod"})
    denial = authorize([grant], other, "role")
    assert denial is not None
    assert denial.resource.endswith("parameter/modelgate/energy/prod")


def test_s3_prefix_condition_scopes_listing_and_a_missing_key_fails_the_condition():
    """IAM: a condition on a key absent from the request is false (ListObjectsV2 without Prefix)."""
    listing = policy(
        allow("s3:ListBucket", "arn:aws:s3:::assets", Condition={"StringEquals": {"s3:prefix": "code.tar.gz"}})
    )
    base = {"method": "GET", "moto_resource": "arn:aws:s3:::assets"}
    assert (
        authorize([listing], request("s3", "ListBucket", path="/?list-type=2&prefix=code.tar.gz", **base), "r") is None
    )
    assert authorize([listing], request("s3", "ListBucket", path="/?list-type=2&prefix=other", **base), "r")
    assert authorize([listing], request("s3", "ListBucket", path="/?list-type=2", **base), "r")


def test_negated_operators_and_ifexists_hold_when_the_key_is_absent():
    statement = allow("kms:CreateGrant", "*", Condition={"StringNotEquals": {"kms:ViaService": "s3.x"}})
    assert is_allowed([policy(statement)], "kms:CreateGrant", "k", {})
    exists = allow("kms:CreateGrant", "*", Condition={"BoolIfExists": {"kms:GrantIsForAWSResource": "true"}})
    assert is_allowed([policy(exists)], "kms:CreateGrant", "k", {})
    strict = allow("kms:CreateGrant", "*", Condition={"Bool": {"kms:GrantIsForAWSResource": "true"}})
    assert not is_allowed([policy(strict)], "kms:CreateGrant", "k", {})
    assert is_allowed([policy(strict)], "kms:CreateGrant", "k", {"kms:GrantIsForAWSResource": "true"})


def test_a_failed_condition_only_means_the_statement_does_not_apply():
    """moto counts a failed condition as an explicit Deny; AWS just skips the statement."""
    conditional = allow("s3:ListBucket", "arn:aws:s3:::b", Condition={"StringLike": {"s3:prefix": "a/*"}})
    plain = allow("s3:ListBucket", "arn:aws:s3:::b")
    assert is_allowed([policy(conditional, plain)], "s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "z"})


def test_dynamodb_transactions_need_the_item_actions_on_every_table():
    """IAM has no dynamodb:TransactWriteItems action: each item's Put/Update/ConditionCheck is authorized."""
    state = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/state"
    history = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/history"
    transaction = request(
        "dynamodb",
        "TransactWriteItems",
        {"TransactItems": [{"Update": {"TableName": "state"}}, {"Put": {"TableName": "history"}}]},
    )
    partial = policy(allow(["dynamodb:UpdateItem", "dynamodb:PutItem"], state))
    denial = authorize([partial], transaction, "role")
    assert denial is not None
    assert (denial.action, denial.resource) == ("dynamodb:PutItem", history)
    assert (
        authorize([policy(allow(["dynamodb:UpdateItem", "dynamodb:PutItem"], [state, history]))], transaction, "r")
        is None
    )


def test_sagemaker_arns_are_lower_case_whatever_the_name():
    grant = policy(
        allow("sagemaker:DescribeModelPackage", f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/energy-forecast/*")
    )
    asked = request("sagemaker", "DescribeModelPackage", {"ModelPackageName": "Energy-Forecast/3"})
    assert authorize([grant], asked, "role") is None


def test_sending_mail_needs_the_sender_identity_from_the_raw_message():
    import base64

    raw = base64.b64encode(b"From: ModelGate <approvals@example.com>\r\nTo: a@example.com\r\n\r\nhi").decode()
    asked = request("ses", "SendRawEmail", {"RawMessage.Data": raw})
    identity = f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/approvals@example.com"
    assert authorize([policy(allow("ses:SendRawEmail", identity))], asked, "role") is None
    assert authorize([policy(allow("ses:SendRawEmail", identity.replace("approvals", "other")))], asked, "role")


def test_copy_object_needs_get_object_on_its_source():
    copy = request(
        "s3",
        "PutObject",
        method="PUT",
        headers={"x-amz-copy-source": "/src-bucket/models/a.tar.gz"},
        moto_resource="arn:aws:s3:::dst/models/a.tar.gz",
    )
    put_only = policy(allow("s3:PutObject", "arn:aws:s3:::dst/*"))
    denial = authorize([put_only], copy, "role")
    assert denial is not None
    assert denial.resource == "arn:aws:s3:::src-bucket/models/a.tar.gz"


@pytest.mark.parametrize(
    ("principal", "expected"),
    [({"Service": "lambda.amazonaws.com"}, True), ({"Service": ["sagemaker.amazonaws.com"]}, False)],
)
def test_a_service_runs_code_only_with_roles_that_trust_it(principal, expected):
    trust = {"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": principal}]}
    assert trusts(trust, "lambda.amazonaws.com") is expected


def test_api_gateway_management_calls_are_authorized_by_method_and_path_without_the_query():
    key = f"arn:aws:apigateway:{REGION}::/apikeys/abc123"
    asked = request("apigateway", "GetApiKey", method="GET", path="/apikeys/abc123?includeValue=true")
    assert authorize([policy(allow("apigateway:GET", key))], asked, "role") is None
    assert authorize([policy(allow("apigateway:GET", key + "x"))], asked, "role") is not None
