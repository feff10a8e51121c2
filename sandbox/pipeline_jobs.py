"""The deployed SageMaker Pipeline's jobs as SageMaker runs them, for the local runner (pipelines/local_runner.py).

SageMaker starts each step's job with the role the definition names, and downloads the job's `S3Prefix` inputs
before the container starts: it lists the prefix (s3:ListBucket, s3:prefix = the URI's key) and gets every
object found (s3:GetObject, and kms:Decrypt for SSE-KMS objects), all as the job role. `SageMakerJobs` does the
same for the `code` input of every step, from the definition deployed in the local AWS (with IAM enforced, a
role missing a grant fails here exactly as the job would fail on AWS), uploads a step's outputs as its role, and
registers the version as the pipeline's execution role (the RegisterModel step).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sandbox.aws import LocalAccount
from sandbox.cloudformation import DeployedStack

SAGEMAKER = "sagemaker.amazonaws.com"
CODE_INPUT = "code"


class JobInputError(Exception):
    """A job could not get its inputs (what SageMaker reports as ClientError: failed to download data)."""


def _resolve(node: Any, account: LocalAccount, stack: DeployedStack) -> Any:
    """A template value as CloudFormation would give it: Ref, Fn::GetAtt <role>.Arn, Fn::Join, Fn::Sub."""
    if isinstance(node, list):
        return [_resolve(item, account, stack) for item in node]
    if not isinstance(node, dict):
        return node
    pseudo = {"AWS::AccountId": account.account, "AWS::Region": account.region, "AWS::Partition": "aws"}
    if set(node) == {"Ref"}:
        return pseudo.get(node["Ref"]) or stack.physical_ids[node["Ref"]]
    if set(node) == {"Fn::GetAtt"}:
        logical, attribute = node["Fn::GetAtt"]
        if attribute != "Arn":
            raise JobInputError(f"{stack.name}: Fn::GetAtt {logical}.{attribute} is not resolved locally")
        return account.client("iam").get_role(RoleName=stack.physical_ids[logical])["Role"]["Arn"]
    if set(node) == {"Fn::Join"}:
        separator, parts = node["Fn::Join"]
        return separator.join(str(_resolve(part, account, stack)) for part in parts)
    if set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
        text = node["Fn::Sub"]
        for name, value in pseudo.items():
            text = text.replace("${" + name + "}", value)
        return text
    return {key: _resolve(value, account, stack) for key, value in node.items()}


def _flatten(steps: list[dict]) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for step in steps:
        found[step["Name"]] = step
        if step["Type"] == "Condition":
            found.update(_flatten(step["Arguments"].get("IfSteps", []) + step["Arguments"].get("ElseSteps", [])))
    return found


def _code_source(step: dict) -> dict:
    """The step's `code` input as an S3DataSource-like dict: S3Uri, S3DataType."""
    arguments = step["Arguments"]
    for item in arguments.get("ProcessingInputs", []):
        if item.get("InputName") == CODE_INPUT:
            return item["S3Input"]
    for channel in arguments.get("InputDataConfig", []):
        if channel.get("ChannelName") == CODE_INPUT:
            return channel["DataSource"]["S3DataSource"]
    raise JobInputError(f"step {step['Name']} has no {CODE_INPUT!r} input")


@dataclass
class SageMakerJobs:
    account: LocalAccount
    stack: DeployedStack  # the deployed Pipeline stack
    _definition: dict | None = field(default=None, repr=False)
    _as_role: dict[str, LocalAccount] = field(default_factory=dict, repr=False)

    def _pipeline(self) -> dict:
        (resource,) = [r for r in self.stack.template["Resources"].values() if r["Type"] == "AWS::SageMaker::Pipeline"]
        return resource["Properties"]

    @property
    def definition(self) -> dict:
        if self._definition is None:
            body = self._pipeline()["PipelineDefinition"]["PipelineDefinitionBody"]
            self._definition = json.loads(_resolve(body, self.account, self.stack))
        return self._definition

    def step(self, name: str) -> dict:
        steps = _flatten(self.definition["Steps"])
        if name not in steps:
            raise JobInputError(f"the deployed pipeline has no step {name!r} (it has {', '.join(steps)})")
        return steps[name]

    def _role(self, arn: str) -> LocalAccount:
        if arn not in self._as_role:
            self._as_role[arn] = self.account.assume(arn, SAGEMAKER, session_name="SageMaker")
        return self._as_role[arn]

    def job_account(self, step: str) -> LocalAccount:
        """The local AWS as the step's job role."""
        return self._role(self.step(step)["Arguments"]["RoleArn"])

    def execution_account(self) -> LocalAccount:
        """The local AWS as the pipeline's execution role (what runs RegisterModel)."""
        return self._role(_resolve(self._pipeline()["RoleArn"], self.account, self.stack))

    def download_code(self, step: str, into: Path) -> list[Path]:
        """The step's `code` input, downloaded as SageMaker does (File mode): list the prefix, get each object,
        as the job role. Returns the files written under `into`."""
        source = _code_source(self.step(step))
        if source.get("S3DataType") != "S3Prefix":
            raise JobInputError(f"step {step}: only S3Prefix inputs are played locally, got {source.get('S3DataType')}")
        uri = urlparse(source["S3Uri"])
        bucket, prefix = uri.netloc, uri.path.lstrip("/")
        s3 = self.job_account(step).client("s3")
        try:
            keys = [
                item["Key"]
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for item in page.get("Contents", [])
            ]
            if not keys:
                raise JobInputError(f"step {step}: no objects under {source['S3Uri']}")
            written = []
            for key in keys:
                # A prefix that is a whole key lands as its base name; deeper keys keep their relative path.
                relative = key[len(prefix) :].lstrip("/") or key.rsplit("/", 1)[-1]
                target = into / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
                written.append(target)
        except s3.exceptions.ClientError as error:
            raise JobInputError(
                f"step {step}: ClientError: failed to download {source['S3Uri']} as its role"
                f" ({error.response['Error'].get('Code')}: {error.response['Error'].get('Message')})"
            ) from None
        return written
