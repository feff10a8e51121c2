"""`cdk deploy` of one synthesized Stage into the local AWS stand-in (moto's CloudFormation).

What the templates declare is what gets created: the Stage's file assets are published to a local bootstrap
bucket, the stacks are created in dependency order by moto's CloudFormation, and resource types moto's
CloudFormation does not implement but the runtime needs (model package group, SES identity, Cognito pool...)
are created through their APIs from the same template properties, with references to them rewritten. Types
that only matter in AWS (alarms, bucket policies, autoscaling, WAF...) are skipped and reported.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import secrets
import zipfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelgate.function_settings import TASK_ROOT
from sandbox.aws import LocalAccount

BOOTSTRAP_QUALIFIER = "hnb659fds"


@dataclass
class LocalFunctionSpec:
    logical_id: str
    name: str
    handler: str
    environment: dict[str, str]
    role: str = ""  # the execution role's ARN: the function runs with its credentials (sandbox.aws.assume)


@dataclass
class DeployedStack:
    name: str
    template: dict
    physical_ids: dict[str, str] = field(default_factory=dict)  # logical id -> physical id
    functions: dict[str, LocalFunctionSpec] = field(default_factory=dict)  # logical id -> spec
    skipped: dict[str, str] = field(default_factory=dict)  # logical id -> type

    def physical_id(self, prefix: str) -> str:
        """Physical id of the one resource whose logical id starts with `prefix` (CDK appends a hash)."""
        found = [pid for logical, pid in self.physical_ids.items() if logical.startswith(prefix)]
        if len(found) != 1:
            raise KeyError(f"{self.name}: {len(found)} resources match {prefix!r}: {sorted(self.physical_ids)}")
        return found[0]

    def function(self, prefix: str) -> LocalFunctionSpec:
        found = [spec for logical, spec in self.functions.items() if logical.startswith(prefix)]
        if len(found) != 1:
            raise KeyError(f"{self.name}: {len(found)} functions match {prefix!r}: {sorted(self.functions)}")
        return found[0]


class UnsupportedTemplate(Exception):
    pass


# -- resources moto's CloudFormation lacks, created through their APIs ------------------------------------------
# Each returns (physical id, {attribute: value}) for Ref / Fn::GetAtt rewriting.
Emulator = Callable[[LocalAccount, str, str, dict], tuple[str, dict[str, str]]]


def _model_package_group(aws: LocalAccount, stack: str, logical: str, props: dict) -> tuple[str, dict[str, str]]:
    name = props["ModelPackageGroupName"]
    client = aws.client("sagemaker")
    arn = client.create_model_package_group(
        ModelPackageGroupName=name, ModelPackageGroupDescription=props.get("ModelPackageGroupDescription", "")
    )["ModelPackageGroupArn"]
    return arn, {"ModelPackageGroupArn": arn}


def _ses_identity(aws: LocalAccount, stack: str, logical: str, props: dict) -> tuple[str, dict[str, str]]:
    identity = props["EmailIdentity"]
    aws.client("ses").verify_email_identity(EmailAddress=identity)
    return identity, {}


def _secret(aws: LocalAccount, stack: str, logical: str, props: dict) -> tuple[str, dict[str, str]]:
    name = props.get("Name") or f"{stack}-{logical}-{secrets.token_hex(3)}"
    value = props.get("SecretString") or secrets.token_urlsafe(48)
    arn = aws.client("secretsmanager").create_secret(Name=name, SecretString=value)["ARN"]
    return arn, {"Id": arn}


def _user_pool(aws: LocalAccount, stack: str, logical: str, props: dict) -> tuple[str, dict[str, str]]:
    name = props.get("UserPoolName") or f"{stack}-{logical}"
    pool = aws.client("cognito-idp").create_user_pool(PoolName=name)["UserPool"]
    url = f"https://cognito-idp.{aws.region}.amazonaws.com/{pool['Id']}"
    return pool["Id"], {"Arn": pool["Arn"], "ProviderName": url.removeprefix("https://"), "ProviderURL": url}


def _global_table(aws: LocalAccount, stack: str, logical: str, props: dict) -> tuple[str, dict[str, str]]:
    name = props.get("TableName") or f"{stack}-{logical}-{secrets.token_hex(4)}"
    args: dict[str, Any] = {
        "TableName": name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if props.get("GlobalSecondaryIndexes"):
        args["GlobalSecondaryIndexes"] = [
            {key: value for key, value in index.items() if key in ("IndexName", "KeySchema", "Projection")}
            for index in props["GlobalSecondaryIndexes"]
        ]
    if props.get("StreamSpecification"):
        args["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
    table = aws.client("dynamodb").create_table(**args)["TableDescription"]
    return name, {"Arn": table["TableArn"], "StreamArn": table.get("LatestStreamArn", "")}


def _kms_key(aws: LocalAccount, stack: str, logical: str, props: dict) -> tuple[str, dict[str, str]]:
    # moto's CloudFormation keeps a key's policy as a dict, after which every KMS call on the key fails, and it
    # ignores KeySpec/KeyUsage (HMAC keys for approval links). The key policy itself is not enforced locally.
    args = {"Description": props.get("Description", f"{stack}/{logical}")}
    for name in ("KeySpec", "KeyUsage"):
        if props.get(name):
            args[name] = props[name]
    key = aws.client("kms").create_key(**args)["KeyMetadata"]
    return key["KeyId"], {"Arn": key["Arn"], "KeyId": key["KeyId"]}


def _event_bus(aws: LocalAccount, stack: str, logical: str, props: dict) -> tuple[str, dict[str, str]]:
    # A custom bus (ModelGate's promotion bus): rules on it must exist before moto's stack creates them.
    name = props["Name"]
    arn = aws.client("events").create_event_bus(Name=name)["EventBusArn"]
    return name, {"Arn": arn, "Name": name}


def _glue_job(aws: LocalAccount, stack: str, logical: str, props: dict) -> tuple[str, dict[str, str]]:
    # moto's CloudFormation has no Glue; the job's runs are what the pipeline's callback functions use. Emulated
    # resources are created before the stack's own, so references to its role or assets stay unresolved here.
    name = props.get("Name") or f"{stack}-{logical}-{secrets.token_hex(4)}"
    role = props["Role"] if isinstance(props.get("Role"), str) else f"arn:aws:iam::{aws.account}:role/{logical}"
    arguments = {k: v for k, v in (props.get("DefaultArguments") or {}).items() if isinstance(v, str)}
    aws.client("glue").create_job(
        Name=name, Role=role, Command={"Name": props["Command"]["Name"]}, DefaultArguments=arguments
    )
    return name, {}


def _api_key(aws: LocalAccount, stack: str, logical: str, props: dict) -> tuple[str, dict[str, str]]:
    # The inference authorizer reads this key's value (GetApiKey) to meter JWT callers with the usage plan.
    key = aws.client("apigateway").create_api_key(
        name=props.get("Name", f"{stack}-{logical}"),
        description=props.get("Description", ""),
        enabled=props.get("Enabled", False),
    )
    return key["id"], {"APIKeyId": key["id"]}


# -- SageMaker hosting: named up front (other resources reference them), created once the stack's role exists --
@dataclass(frozen=True)
class _Deferred:
    arn_kind: str  # model | endpoint-config | endpoint
    name_attribute: str
    create: Callable[[Any, str, dict], Any]


DEFERRED: dict[str, _Deferred] = {
    "AWS::SageMaker::Model": _Deferred(
        "model",
        "ModelName",
        lambda sm, name, p: sm.create_model(
            ModelName=name,
            ExecutionRoleArn=p["ExecutionRoleArn"],
            **{key: p[key] for key in ("PrimaryContainer", "Containers", "VpcConfig") if key in p},
        ),
    ),
    "AWS::SageMaker::EndpointConfig": _Deferred(
        "endpoint-config",
        "EndpointConfigName",
        lambda sm, name, p: sm.create_endpoint_config(
            EndpointConfigName=name, ProductionVariants=p["ProductionVariants"]
        ),
    ),
    # The endpoint record only (DescribeEndpoint for health): the Triton behind it is sandbox.multi_model_endpoint.
    "AWS::SageMaker::Endpoint": _Deferred(
        "endpoint",
        "EndpointName",
        lambda sm, name, p: sm.create_endpoint(EndpointName=name, EndpointConfigName=p["EndpointConfigName"]),
    ),
}


def _literal(node: Any, aws: LocalAccount, physical_ids: dict[str, str]) -> Any:
    """Resolve Ref / Fn::GetAtt (an IAM role's Arn) / Fn::Join against the created stack, for deferred resources."""
    if isinstance(node, list):
        return [_literal(item, aws, physical_ids) for item in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Ref"}:
        return physical_ids[node["Ref"]]
    if set(node) == {"Fn::GetAtt"}:
        logical, attribute = node["Fn::GetAtt"]
        if attribute != "Arn":
            raise UnsupportedTemplate(f"Fn::GetAtt {logical}.{attribute} in a deferred resource")
        return aws.client("iam").get_role(RoleName=physical_ids[logical])["Role"]["Arn"]
    if set(node) == {"Fn::Join"}:
        separator, parts = node["Fn::Join"]
        return separator.join(str(_literal(part, aws, physical_ids)) for part in parts)
    return {key: _literal(value, aws, physical_ids) for key, value in node.items()}


EMULATED: dict[str, Emulator] = {
    "AWS::ApiGateway::ApiKey": _api_key,
    "AWS::KMS::Key": _kms_key,
    "AWS::SageMaker::ModelPackageGroup": _model_package_group,
    "AWS::Glue::Job": _glue_job,
    "AWS::SES::EmailIdentity": _ses_identity,
    "AWS::SecretsManager::Secret": _secret,
    "AWS::Cognito::UserPool": _user_pool,
    "AWS::DynamoDB::GlobalTable": _global_table,
    "AWS::Events::EventBus": _event_bus,
}

# Types moto's CloudFormation creates and the local runtime uses.
NATIVE = {
    "AWS::S3::Bucket", "AWS::KMS::Alias", "AWS::DynamoDB::Table", "AWS::SQS::Queue",
    "AWS::SSM::Parameter", "AWS::Lambda::Function", "AWS::Lambda::LayerVersion", "AWS::IAM::Role",
    "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::Events::Rule", "AWS::Logs::LogGroup", "AWS::SNS::Topic",
}  # fmt: skip


# -- template rewriting ---------------------------------------------------------------------------------------
def _replace_refs(node: Any, values: dict[str, tuple[str, dict[str, str]]]) -> Any:
    """Rewrite Ref / Fn::GetAtt of emulated or skipped resources into literal values."""
    if isinstance(node, dict):
        if set(node) == {"Ref"} and node["Ref"] in values:
            return values[node["Ref"]][0]
        if set(node) == {"Fn::GetAtt"}:
            target, attribute = (
                node["Fn::GetAtt"] if isinstance(node["Fn::GetAtt"], list) else node["Fn::GetAtt"].split(".", 1)
            )
            if target in values:
                return values[target][1].get(attribute, f"{values[target][0]}#{attribute}")
        if set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
            text = node["Fn::Sub"]
            for logical, (physical, attributes) in values.items():
                text = text.replace("${" + logical + "}", physical)
                for attribute, value in attributes.items():
                    text = text.replace("${" + f"{logical}.{attribute}" + "}", value)
            return {"Fn::Sub": text}
        return {key: _replace_refs(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_replace_refs(item, values) for item in node]
    return node


def _strip_for_moto(template: dict) -> dict:
    template = copy.deepcopy(template)
    template.pop("Rules", None)  # CDK's bootstrap-version check reads an SSM parameter of the real bootstrap
    template.get("Parameters", {}).pop("BootstrapVersion", None)
    for resource in template.get("Resources", {}).values():
        # moto's KMS CloudFormation expects TagKey/TagValue; tags change nothing locally.
        resource.get("Properties", {}).pop("Tags", None)
        resource.pop("Metadata", None)
    return template


def _resolve_literal(node: Any, aws: LocalAccount) -> Any:
    """Resolve the pseudo parameters an emulated resource's own properties may use."""
    text = json.dumps(node)
    for name, value in {"AWS::Region": aws.region, "AWS::AccountId": aws.account, "AWS::Partition": "aws"}.items():
        text = text.replace("${" + name + "}", value).replace(json.dumps({"Ref": name}), json.dumps(value))
    return json.loads(text)


# -- assets ----------------------------------------------------------------------------------------------------
@functools.cache
def _zip_directory(directory: Path) -> bytes:  # each stage of an app ships the same code assets
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(directory))
    return buffer.getvalue()


def _publish_assets(aws: LocalAccount, assembly: Path, assets_file: Path) -> dict[str, Path]:
    """Put the stack's file assets into the local bootstrap bucket; {object key: the folder zipped into it}."""
    s3 = aws.client("s3")
    manifest = json.loads(assets_file.read_text())
    published = {}
    for asset in manifest.get("files", {}).values():
        source = assembly / asset["source"]["path"]
        for destination in asset["destinations"].values():
            bucket, key = _substitute(destination["bucketName"], aws), _substitute(destination["objectKey"], aws)
            if source.is_dir():
                published[key] = source
            _ensure_bucket(s3, bucket, aws.region)
            if _exists(s3, bucket, key):  # keys are content hashes: another stage published it already
                continue
            zipped = asset["source"].get("packaging") == "zip"
            s3.put_object(Bucket=bucket, Key=key, Body=_zip_directory(source) if zipped else source.read_bytes())
    return published


def _exists(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError:
        return False
    return True


def _substitute(text: str, aws: LocalAccount) -> str:
    return (
        text.replace("${AWS::AccountId}", aws.account)
        .replace("${AWS::Region}", aws.region)
        .replace("${AWS::Partition}", "aws")
    )


def _ensure_bucket(s3, bucket: str, region: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
    except s3.exceptions.ClientError:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})


# -- deployment ------------------------------------------------------------------------------------------------
def stage_stacks(assembly_dir: Path) -> list[tuple[str, Path, Path | None]]:
    """(stack name, template path, assets manifest path) in deployment order (dependencies first)."""
    manifest = json.loads((assembly_dir / "manifest.json").read_text())
    artifacts = manifest["artifacts"]
    stacks = {name: art for name, art in artifacts.items() if art["type"] == "aws:cloudformation:stack"}
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name in ordered:
            return
        for dependency in stacks[name].get("dependencies", []):
            if dependency in stacks:
                visit(dependency)
            elif artifacts.get(dependency, {}).get("type") == "cdk:asset-manifest":
                continue
        ordered.append(name)

    for name in stacks:
        visit(name)
    result = []
    for name in ordered:
        props = stacks[name]["properties"]
        assets = next(
            (
                assembly_dir / artifacts[dep]["properties"]["file"]
                for dep in stacks[name].get("dependencies", [])
                if artifacts.get(dep, {}).get("type") == "cdk:asset-manifest"
            ),
            None,
        )
        result.append((props.get("stackName", name), assembly_dir / props["templateFile"], assets))
    return result


def _resolve_stack_outputs(node: Any, aws: LocalAccount, cache: dict[str, dict[str, str]]) -> Any:
    """Replace `Fn::GetStackOutput` (CDK's weak cross-stack references, cdk.json defaultCrossStackReferences)
    with the producing stack's output value: moto's CloudFormation does not implement that intrinsic."""
    if isinstance(node, dict):
        if set(node) == {"Fn::GetStackOutput"}:
            spec = node["Fn::GetStackOutput"]
            stack = spec["StackName"]
            if stack not in cache:
                described = aws.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
                cache[stack] = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
            return cache[stack][spec["OutputName"]]
        return {key: _resolve_stack_outputs(value, aws, cache) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve_stack_outputs(item, aws, cache) for item in node]
    return node


def deploy_stack(aws: LocalAccount, name: str, template: dict, code: Mapping[str, Path] | None = None) -> DeployedStack:
    """`code`: {asset object key: its folder}, from publishing the stage's assets. A function whose code package is
    one of them runs with LAMBDA_TASK_ROOT at that folder, as Lambda runs it from its unpacked package: the files
    the stack ships in the package (e.g. the model lists) are read from what was deployed."""
    template = _resolve_stack_outputs(template, aws, {})
    deployed = DeployedStack(name=name, template=template)
    values: dict[str, tuple[str, dict[str, str]]] = {}
    resources = template.get("Resources", {})
    deferred: list[tuple[str, str]] = []
    for logical, resource in resources.items():
        kind = resource["Type"]
        if kind in DEFERRED:
            given = resource.get("Properties", {}).get(DEFERRED[kind].name_attribute)
            physical = given if isinstance(given, str) else f"{logical[:40]}-{secrets.token_hex(4)}"
            arn = f"arn:aws:sagemaker:{aws.region}:{aws.account}:{DEFERRED[kind].arn_kind}/{physical.lower()}"
            values[logical] = (arn, {DEFERRED[kind].name_attribute: physical})
            deployed.physical_ids[logical] = arn
            deferred.append((logical, physical))
        elif kind in EMULATED:
            props = _resolve_literal(_replace_refs(resource.get("Properties", {}), values), aws)
            values[logical] = EMULATED[kind](aws, name, logical, props)
            deployed.physical_ids[logical] = values[logical][0]
        elif kind not in NATIVE:
            deployed.skipped[logical] = kind
            # ARN-shaped, so IAM policies naming a skipped resource (e.g. an endpoint) stay valid for moto.
            values[logical] = (f"arn:aws:cloudformation:{aws.region}:{aws.account}:not-emulated/{logical}", {})
    body = _strip_for_moto(template)
    body["Resources"] = {
        logical: _replace_refs(resource, values)
        for logical, resource in body["Resources"].items()
        if logical not in values
    }
    body["Outputs"] = _replace_refs(body.get("Outputs", {}), values)
    if not body["Resources"]:
        return deployed
    cfn = aws.client("cloudformation")
    cfn.create_stack(StackName=name, TemplateBody=json.dumps(body), Capabilities=["CAPABILITY_NAMED_IAM"])
    status = cfn.describe_stacks(StackName=name)["Stacks"][0]
    if status["StackStatus"] != "CREATE_COMPLETE":
        raise UnsupportedTemplate(f"{name}: {status['StackStatus']} {status.get('StackStatusReason', '')}")
    for resource in cfn.describe_stack_resources(StackName=name)["StackResources"]:
        if "LogicalResourceId" in resource and resource.get("PhysicalResourceId"):
            deployed.physical_ids[resource["LogicalResourceId"]] = resource["PhysicalResourceId"]
    sagemaker = aws.client("sagemaker")
    for logical, name in deferred:
        props = _replace_refs(resources[logical].get("Properties", {}), values)
        DEFERRED[resources[logical]["Type"]].create(sagemaker, name, _literal(props, aws, deployed.physical_ids))
    functions = aws.client("lambda")
    for logical, resource in body["Resources"].items():
        if resource["Type"] == "AWS::Lambda::Function" and logical in deployed.physical_ids:
            config = functions.get_function_configuration(FunctionName=deployed.physical_ids[logical])
            environment = dict(config.get("Environment", {}).get("Variables", {}))
            package = (code or {}).get(resource.get("Properties", {}).get("Code", {}).get("S3Key"))
            if package is not None:
                environment[TASK_ROOT] = str(package)  # Lambda's own variable: never one of the template's
            deployed.functions[logical] = LocalFunctionSpec(
                logical_id=logical,
                name=config["FunctionName"],
                handler=config["Handler"],
                environment=environment,
                role=config["Role"],
            )
    return deployed


def deploy_stage(
    aws: LocalAccount,
    assembly_dir: str | Path,
    edit: Callable[[str, dict], dict] | None = None,
    only: Collection[str] | None = None,
) -> dict[str, DeployedStack]:
    """Deploy every stack of a synthesized Stage (`cdk.out/assembly-<stage>`), in order. Keyed by stack id.
    `edit(stack id, template) -> template` changes a template before it is deployed (tests: remove one grant);
    `only` deploys just those stack ids (e.g. Storage and Approval: what the approval tests need)."""
    assembly_dir = Path(assembly_dir)
    _ensure_bucket(aws.client("s3"), f"cdk-{BOOTSTRAP_QUALIFIER}-assets-{aws.account}-{aws.region}", aws.region)
    deployed = {}
    code: dict[str, Path] = {}
    stage = assembly_dir.name.removeprefix("assembly-")
    for name, template_path, assets in stage_stacks(assembly_dir):
        stack_id = name.removeprefix(f"{stage}-")  # e.g. Pipeline-energy-forecast (model names have '-' too)
        if only is not None and stack_id not in only:
            continue
        if assets is not None:
            code.update(_publish_assets(aws, assembly_dir, assets))
        template = json.loads(template_path.read_text())
        if edit is not None:
            template = edit(stack_id, template)
        deployed[stack_id] = deploy_stack(aws, name, template, code)
    return deployed
