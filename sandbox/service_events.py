"""The EventBridge events AWS services emit on their own, which moto does not: emitted from state changes.

`poll()` compares the local AWS with what it saw last time and puts, on the default bus, the events AWS would
have put for each change:
- SageMaker `SageMaker Model Package State Change` when a model package appears or its approval status changes
  (the registry rule of the approval stack starts the workflow from it);
- Systems Manager `Parameter Store Change` (Create / Update) when a parameter under `prefix` is written (the
  serving stack's deployment rule reacts to the approved-model parameter).
Shapes follow the AWS documentation of those events; only the fields our rules and handlers read matter.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sandbox.aws import LocalAccount


def _event(account: LocalAccount, source: str, detail_type: str, resources: list[str], detail: dict) -> dict:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": account.account,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": account.region,
        "resources": resources,
        "detail": detail,
    }


@dataclass
class ServiceEvents:
    account: LocalAccount
    put: Callable[[dict], None]  # e.g. LocalEventBridge.put
    parameter_prefix: str = "/"
    _packages: dict[str, str] = field(default_factory=dict)  # model package ARN -> approval status
    _parameters: dict[str, int] = field(default_factory=dict)  # name -> version

    def baseline(self) -> None:
        """Remember the current state without emitting anything (what existed before the watch began)."""
        self._model_packages()
        self._parameter_changes()

    def poll(self) -> list[dict]:
        emitted = self._model_packages() + self._parameter_changes()
        for event in emitted:
            self.put(event)
        return emitted

    def _model_packages(self) -> list[dict]:
        sagemaker = self.account.client("sagemaker")
        emitted = []
        for group in sagemaker.list_model_package_groups()["ModelPackageGroupSummaryList"]:
            name = group["ModelPackageGroupName"]
            summaries = sagemaker.list_model_packages(ModelPackageGroupName=name)["ModelPackageSummaryList"]
            for summary in summaries:
                arn, status = summary["ModelPackageArn"], summary["ModelApprovalStatus"]
                if self._packages.get(arn) == status:
                    continue
                self._packages[arn] = status
                detail = {
                    "ModelPackageGroupName": name,
                    "ModelPackageVersion": summary.get("ModelPackageVersion"),
                    "ModelPackageArn": arn,
                    "ModelApprovalStatus": status,
                    "ModelPackageStatus": summary.get("ModelPackageStatus", "Completed"),
                }
                emitted.append(
                    _event(self.account, "aws.sagemaker", "SageMaker Model Package State Change", [arn], detail)
                )
        return emitted

    def _parameter_changes(self) -> list[dict]:
        ssm = self.account.client("ssm")
        emitted = []
        for page in ssm.get_paginator("describe_parameters").paginate():
            for parameter in page["Parameters"]:
                name, version = parameter["Name"], parameter["Version"]
                if not name.startswith(self.parameter_prefix) or self._parameters.get(name) == version:
                    continue
                operation = "Create" if name not in self._parameters else "Update"
                self._parameters[name] = version
                arn = f"arn:aws:ssm:{self.account.region}:{self.account.account}:parameter{name}"
                detail = {"operation": operation, "name": name, "type": parameter["Type"], "description": ""}
                emitted.append(_event(self.account, "aws.ssm", "Parameter Store Change", [arn], detail))
        return emitted
