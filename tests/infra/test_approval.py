"""The approval stack of every environment: what a security review and an operator would check."""

from __future__ import annotations

import importlib
import json

import pytest

from infra.config import load_config
from modelgate.approval.settings import MODELS_FILE

CHAIN = load_config().chain  # the shipped config's promotion chain
ENVIRONMENTS = CHAIN.names

GROUP = "energy-forecast"


def of_type(template, kind) -> dict:
    return template.find_resources(kind)


def policies(template) -> list[dict]:
    """Every statement of every identity policy in the stack."""
    return [
        statement
        for policy in of_type(template, "AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def actions(statement) -> list[str]:
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]


def functions(template) -> dict[str, dict]:
    return {r["Properties"]["Handler"]: r for r in of_type(template, "AWS::Lambda::Function").values()}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_handlers_exist_and_are_wired_to_their_triggers(template, env):
    approval = template(env, "Approval")
    handlers = functions(approval)
    expected = {"lambdas.request_approval.handler", "lambdas.approval_api.handler"}
    if CHAIN.next(env):
        expected.add("lambdas.post_inference.handler")
    assert set(handlers) == expected, "post-inference everywhere but prod (nothing comes after prod)"
    for handler in handlers:
        module, _, name = handler.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name)), handler
        assert handlers[handler]["Properties"]["Runtime"] == "python3.14"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_approval_requests_come_from_the_registry_in_dev_and_from_promotions_later(template, env, config):
    approval = template(env, "Approval")
    patterns = [r["Properties"]["EventPattern"] for r in of_type(approval, "AWS::Events::Rule").values()]
    if env == "dev":
        assert {
            "source": ["aws.sagemaker"],
            "detail-type": ["SageMaker Model Package State Change"],
            "detail": {"ModelPackageGroupName": [GROUP], "ModelApprovalStatus": ["PendingManualApproval"]},
        } in patterns
    else:
        registry = config.environments["dev"]
        (promotion,) = [p for p in patterns if p["source"] == ["modelgate.promotion"]]
        assert promotion["detail"]["target_environment"] == [env], "only requests for this environment"
        # One prefix however many models (EventBridge caps a pattern at 2,048 characters); the function refuses
        # groups it does not serve.
        prefix = f"arn:aws:sagemaker:{registry.region}:{registry.account}:model-package/"
        assert promotion["detail"]["model_package_arn"] == [{"prefix": prefix}], "only versions of our registry"
        assert not any(p.get("detail-type") == ["SageMaker Model Package State Change"] for p in patterns)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_async_failures_land_in_an_alarmed_encrypted_queue(template, env):
    approval = template(env, "Approval")
    (queue_id,) = of_type(approval, "AWS::SQS::Queue")
    queue = of_type(approval, "AWS::SQS::Queue")[queue_id]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True
    queue_arn = {"Fn::GetAtt": [queue_id, "Arn"]}
    for rule in of_type(approval, "AWS::Events::Rule").values():
        for target in rule["Properties"]["Targets"]:
            assert target["DeadLetterConfig"] == {"Arn": queue_arn}, "delivery failures are kept"
            assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0
    configs = of_type(approval, "AWS::Lambda::EventInvokeConfig").values()
    assert len(configs) == (2 if CHAIN.next(env) else 1), "every async function"
    for config in configs:
        assert config["Properties"]["DestinationConfig"]["OnFailure"]["Destination"] == queue_arn
        assert config["Properties"]["MaximumRetryAttempts"] == 2
    (alarm,) = of_type(approval, "AWS::CloudWatch::Alarm").values()
    props = alarm["Properties"]
    assert props["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert props["Threshold"] == 1
    assert props["Dimensions"][0]["Value"] == {"Fn::GetAtt": [queue_id, "QueueName"]}
    assert props["AlarmActions"], "the alarm notifies someone"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_api_serves_the_link_pages_and_sign_in_behind_waf_with_access_logs(template, env):
    approval = template(env, "Approval")
    resources = {k: r["Properties"]["PathPart"] for k, r in of_type(approval, "AWS::ApiGateway::Resource").items()}
    routes = set()
    for method in of_type(approval, "AWS::ApiGateway::Method").values():
        props = method["Properties"]
        path = resources[props["ResourceId"]["Ref"]]
        parent = next(
            (
                r["Properties"]["PathPart"]
                for k, r in of_type(approval, "AWS::ApiGateway::Resource").items()
                if k == props["ResourceId"]["Ref"]
            ),
            "",
        )
        routes.add((props["HttpMethod"], parent or path))
        assert props["Integration"]["Type"] == "AWS_PROXY"
    assert routes == {("GET", "{action}"), ("HEAD", "{action}"), ("POST", "{action}"), ("GET", "callback")}
    (stage,) = of_type(approval, "AWS::ApiGateway::Stage").values()
    assert "AccessLogSetting" in stage["Properties"]
    assert stage["Properties"]["MethodSettings"][0]["DataTraceEnabled"] is False, "never log link tokens"
    (association,) = of_type(approval, "AWS::WAFv2::WebACLAssociation").values()
    assert association["Properties"]["ResourceArn"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_approvers_sign_in_with_the_cognito_pool_of_their_environment(template, synth, env, config):
    approval = template(env, "Approval")
    (group,) = of_type(approval, "AWS::Cognito::UserPoolGroup").values()
    assert group["Properties"]["GroupName"] == config.environments[env].approvers.group
    (pool,) = of_type(approval, "AWS::Cognito::UserPool").values()
    assert pool["Properties"]["MfaConfiguration"] == "ON"
    assert pool["Properties"]["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    (client,) = of_type(approval, "AWS::Cognito::UserPoolClient").values()
    assert client["Properties"]["GenerateSecret"] is False
    assert client["Properties"]["AllowedOAuthFlows"] == ["code"]
    # Who may decide rests on `email` and the groups: users must not change them with this client's tokens.
    # No SRP/password sign-in (whose access tokens carry aws.cognito.signin.user.admin, i.e. UpdateUserAttributes),
    # no such OAuth scope, and (without federation) no writable identity attribute at all.
    assert client["Properties"]["ExplicitAuthFlows"] == ["ALLOW_REFRESH_TOKEN_AUTH"]
    assert "aws.cognito.signin.user.admin" not in client["Properties"]["AllowedOAuthScopes"]
    writable = set(client["Properties"]["WriteAttributes"])
    assert not writable & {"email", "email_verified", "custom:groups", "preferred_username"}, writable
    (api_fn,) = [f for h, f in functions(approval).items() if h == "lambdas.approval_api.handler"]
    variables = api_fn["Properties"]["Environment"]["Variables"]
    assert "MODELGATE_MODELS" not in variables, "the models' list ships in the code package, not the 4 KB environment"
    (model,) = json.loads(synth.package_file(api_fn, MODELS_FILE))
    assert model["approvers_group"] == config.environments[env].approvers.group
    assert variables["MODELGATE_SIGNIN_GROUPS_CLAIM"] == "cognito:groups"
    # The pages show the training gate's threshold: the same number the pipeline's condition used.
    assert model["metric_threshold"] == config.environments[env].training.metric_threshold


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_least_privilege_parameter_store_registry_and_history(template, env, config):
    approval = template(env, "Approval")
    statements = policies(approval)
    ssm_writes = [s for s in statements if any(a.startswith("ssm:Put") for a in actions(s))]
    target = config.environments[env]
    assert [s["Resource"] for s in ssm_writes] == [
        f"arn:aws:ssm:{target.region}:{target.account}:parameter/modelgate/{GROUP}/{env}"
    ], "each environment writes only its own approved-model parameter"
    ssm_reads = [s for s in statements if any(a.startswith("ssm:Get") for a in actions(s))]
    assert ssm_reads, "the confirmation page says which version the environment serves now"
    assert {json.dumps(s["Resource"]) for s in ssm_reads} == {json.dumps(ssm_writes[0]["Resource"])}, (
        "and reads only that one parameter"
    )
    registry = config.environments["dev"]
    for statement in statements:
        if any(a.startswith("sagemaker:") and "ModelPackage" in a for a in actions(statement)):
            assert statement["Resource"] == (
                f"arn:aws:sagemaker:{registry.region}:{registry.account}:model-package/{GROUP}/*"
            ), "the registry lives in the dev account; only our group's versions"
        assert "*" not in actions(statement), statement
        assert not any(a in ("dynamodb:DeleteItem", "dynamodb:UpdateItem") for a in actions(statement)) or (
            "ApprovalState" in json.dumps(statement["Resource"])
        ), "history is append-only: no role may update or delete its items"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_promotion_requests_travel_on_modelgates_own_bus_that_only_modelgate_may_write(template, env, config):
    """Forged promotion requests (spam to approvers, fake run metrics on the page) need a bus any principal of the
    account can write to: ModelGate's requests travel on a bus of its own, whose policy denies every principal
    not tagged as a ModelGate promoter of this project, and admits the previous environment's account."""
    approval = template(env, "Approval")
    puts = [s for s in policies(approval) if "events:PutEvents" in actions(s)]
    following = CHAIN.next(env)
    if following:
        nxt = config.environments[following]
        assert [s["Resource"] for s in puts] == [
            f"arn:aws:events:{nxt.region}:{nxt.account}:event-bus/modelgate-{following}-promotions"
        ]
    else:
        assert puts == []
    if following:
        (role,) = [
            r["Properties"]
            for r in of_type(approval, "AWS::IAM::Role").values()
            if {"Key": "modelgate:promoter", "Value": "modelgate"} in r["Properties"].get("Tags", [])
        ]
        assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    previous = CHAIN.previous(env)
    if previous is None:  # dev's requests are the registry's own events (default bus); nothing is promoted to it
        assert of_type(approval, "AWS::Events::EventBus") == {}
        assert of_type(approval, "AWS::Events::EventBusPolicy") == {}
        return
    (bus,) = of_type(approval, "AWS::Events::EventBus").values()
    assert bus["Properties"]["Name"] == f"modelgate-{env}-promotions"
    rules = [r["Properties"] for r in of_type(approval, "AWS::Events::Rule").values()]
    for rule in rules:
        on_our_bus = "EventBusName" in rule
        assert on_our_bus == (rule["EventPattern"]["source"] == ["modelgate.promotion"]), rule
    statements = [p["Properties"]["Statement"] for p in of_type(approval, "AWS::Events::EventBusPolicy").values()]
    (deny,) = [s for s in statements if s["Effect"] == "Deny"]
    assert deny["Principal"] == "*"
    assert deny["Action"] == "events:PutEvents"
    assert deny["Condition"] == {"StringNotEquals": {"aws:PrincipalTag/modelgate:promoter": "modelgate"}}
    allows = [s for s in statements if s["Effect"] == "Allow"]
    if config.environments[previous].account != config.environments[env].account:
        (allow,) = allows
        assert allow["Principal"] == {"AWS": f"arn:aws:iam::{config.environments[previous].account}:root"}
        assert allow["Condition"] == {"StringEquals": {"events:source": "modelgate.promotion"}}
    else:
        assert allows == []


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_registry_approval_may_read_who_started_a_run_and_record_it(template, env, config):
    """Separation of duties: the dev request Lambda reads CreatedBy of the pipeline execution and writes it on the
    version; later environments only read the registry."""
    approval = template(env, "Approval")
    request_role = functions(approval)["lambdas.request_approval.handler"]["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = [
        statement
        for policy in of_type(approval, "AWS::IAM::Policy").values()
        if {"Ref": request_role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    granted = {action for statement in statements for action in actions(statement)}
    registry = config.environments["dev"]
    if env == "dev":
        assert {"sagemaker:DescribePipelineExecution", "sagemaker:UpdateModelPackage"} <= granted
        (describe,) = [s for s in statements if "sagemaker:DescribePipelineExecution" in actions(s)]
        assert describe["Resource"] == f"arn:aws:sagemaker:{registry.region}:{registry.account}:pipeline/*/execution/*"
    else:
        assert not granted & {"sagemaker:DescribePipelineExecution", "sagemaker:UpdateModelPackage"}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_cicd_account_may_only_read_this_environments_approved_model(template, env, config):
    approval = template(env, "Approval")
    roles = of_type(approval, "AWS::IAM::Role")
    ((gate_id, gate),) = [(k, r) for k, r in roles.items() if "RoleName" in r["Properties"]]
    assert gate["Properties"]["RoleName"] == f"modelgate-{env}-promotion-gate"
    trust = gate["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["AWS"]
    assert config.cicd.account in json.dumps(trust)
    gate_statements = [
        s
        for p in of_type(approval, "AWS::IAM::Policy").values()
        if p["Properties"]["Roles"] == [{"Ref": gate_id}]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    target = config.environments[env]
    assert gate_statements == [
        {
            "Action": "ssm:GetParameter",
            "Effect": "Allow",
            "Resource": f"arn:aws:ssm:{target.region}:{target.account}:parameter/modelgate/{GROUP}/{env}",
        }
    ]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_link_key_and_approval_tables_are_stateful_encrypted_and_recoverable(template, env):
    storage = template(env, "Storage")
    (hmac,) = [k for k in of_type(storage, "AWS::KMS::Key").values() if k["Properties"].get("KeySpec")]
    assert hmac["Properties"]["KeySpec"] == "HMAC_256"
    assert hmac["Properties"]["KeyUsage"] == "GENERATE_VERIFY_MAC"
    assert hmac["DeletionPolicy"] == "Retain"
    tables = of_type(storage, "AWS::DynamoDB::Table").values()
    assert len(tables) == 2
    for table in tables:
        props = table["Properties"]
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["SSESpecification"]["SSEType"] == "KMS"
        assert props["SSESpecification"]["KMSMasterKeyId"]
        assert props["DeletionProtectionEnabled"] is True
        assert table["DeletionPolicy"] == "Retain"


def test_the_pipeline_checks_the_approved_model_before_deploying_test_uat_and_prod(synth, config):
    stack = synth.stack(f"{config.project.name}-cicd", f"{config.project.name}-cicd")
    (pipeline,) = [r for r in stack.template["Resources"].values() if r["Type"] == "AWS::CodePipeline::Pipeline"]
    projects = {k: r for k, r in stack.template["Resources"].items() if r["Type"] == "AWS::CodeBuild::Project"}
    for stage in pipeline["Properties"]["Stages"]:
        env = stage["Name"].rsplit("-", 1)[-1]
        if env not in ENVIRONMENTS:
            continue
        gates = [a for a in stage["Actions"] if a["Name"].startswith("ModelGate")]
        if env == "dev":
            assert gates == [], "dev is approved after the pipeline deploys it"
            continue
        (gate,) = gates
        deploys = [a["RunOrder"] for a in stage["Actions"] if a["ActionTypeId"]["Category"] == "Deploy"]
        assert gate["RunOrder"] < min(deploys), f"the gate runs before {env} is deployed"
        spec = json.dumps(projects[gate["Configuration"]["ProjectName"]["Ref"]]["Properties"]["Source"]["BuildSpec"])
        role = f"arn:aws:iam::{config.environments[env].account}:role/{config.project.name}-{env}-promotion-gate"
        assert f"python -m modelgate approved {GROUP} --env {env}" in spec
        assert f"--role-arn {role}" in spec


@pytest.fixture(scope="module")
def federated_prod(tmp_path_factory):
    """A variant (prod only): approvers federated from the company directory."""
    import yaml

    from infra.build.synth_report import synthesize
    from infra.config import DEFAULT_CONFIG_PATH

    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    (prod,) = [environment for environment in raw["environments"] if environment["name"] == "prod"]
    prod["approvers"]["identity_provider"] = {
        "name": "CompanySSO",
        "issuer": "https://login.example.com",
        "client_id": "modelgate-approvals",
        "client_secret_name": "modelgate/company-sso",
        "groups_claim": "memberOf",
    }
    folder = tmp_path_factory.mktemp("federated")
    (folder / "modelgate.yaml").write_text(yaml.safe_dump(raw))
    result = synthesize(folder / "cdk.out", context={"config": str(folder / "modelgate.yaml"), "env": "prod"})
    assert result.findings == [], "nag stays clean with federation"
    return result.stack("modelgate-prod", "Approval").template


def test_the_company_directory_can_be_federated_with_its_groups_claim(federated_prod):
    resources = federated_prod["Resources"].values()
    (provider,) = [r["Properties"] for r in resources if r["Type"] == "AWS::Cognito::UserPoolIdentityProvider"]
    assert provider["ProviderType"] == "OIDC"
    assert provider["ProviderDetails"]["oidc_issuer"] == "https://login.example.com"
    assert provider["ProviderDetails"]["client_secret"] == (
        "{{resolve:secretsmanager:modelgate/company-sso:SecretString:::}}"
    ), "the client secret stays in Secrets Manager"
    assert provider["AttributeMapping"]["custom:groups"] == "memberOf"
    (client,) = [r["Properties"] for r in resources if r["Type"] == "AWS::Cognito::UserPoolClient"]
    assert client["SupportedIdentityProviders"] == ["COGNITO", "CompanySSO"]
    assert "custom:groups" in client["ReadAttributes"]
    # Separation of duties needs a verified e-mail: the directory's email_verified is mapped, and Cognito requires
    # mapped attributes to be writable by the client; no token this client issues can write them (see below).
    assert provider["AttributeMapping"]["email_verified"] == "email_verified"
    assert set(client["WriteAttributes"]) == {"email", "email_verified", "custom:groups"}
    assert client["ExplicitAuthFlows"] == ["ALLOW_REFRESH_TOKEN_AUTH"]
    (api,) = [
        r["Properties"]
        for r in resources
        if r["Type"] == "AWS::Lambda::Function" and "approval_api" in r["Properties"]["Handler"]
    ]
    assert api["Environment"]["Variables"]["MODELGATE_SIGNIN_GROUPS_CLAIM"] == "cognito:groups,custom:groups"


def _role_statements(template, role_prefix: str) -> list[dict]:
    return [
        statement
        for policy in of_type(template, "AWS::IAM::Policy").values()
        if any(role["Ref"].startswith(role_prefix) for role in policy["Properties"]["Roles"])
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


@pytest.mark.parametrize("env", ENVIRONMENTS[1:])
@pytest.mark.parametrize("role", ["RequestApprovalRole", "ApprovalApiRole"])
def test_later_environments_read_the_evaluation_reports_where_the_registry_keeps_them(template, config, env, role):
    """A version's ModelMetrics point at the evaluation report under the version's models/ prefix in the artifacts
    bucket of the environment that trained it (dev here): the e-mail and the confirmation page of every environment
    show those metrics, so every environment's approval functions may read registered versions in the registry's
    account (s3:ResourceAccount), decrypted only through S3. Found by the local IAM enforcement: test's functions
    were refused the report (same account: only its own bucket was granted)."""
    registry = config.environments[ENVIRONMENTS[0]].account
    found = _role_statements(template(env, "Approval"), role)
    (read,) = [s for s in found if s.get("Condition", {}).get("StringEquals", {}).get("s3:ResourceAccount")]
    assert actions(read) == ["s3:GetObject"]
    assert sorted(read["Resource"]) == ["arn:aws:s3:::*/*/models/*", "arn:aws:s3:::*/models/*"]
    assert registry in read["Condition"]["StringEquals"]["s3:ResourceAccount"]
    (decrypt,) = [s for s in found if s.get("Condition", {}).get("StringLike", {}).get("kms:ViaService")]
    assert actions(decrypt) == ["kms:Decrypt"]
    decrypt_keys = decrypt["Resource"] if isinstance(decrypt["Resource"], list) else [decrypt["Resource"]]
    assert f"arn:aws:kms:*:{registry}:key/*" in decrypt_keys
