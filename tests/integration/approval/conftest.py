"""One moto account holding the registry and four environments' approval resources, a local IdP with people,
and each environment's approval API (the real handler routing) behind a local API Gateway
(sandbox.approval_workflow.LocalApprovalWorkflow, which the demo uses too)."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from modelgate.environments import ENVIRONMENTS
from modelgate.evaluation_report import CustomerMetrics, EvaluationReport
from sandbox.approval_workflow import LocalApprovalWorkflow

ACCOUNT, REGION = "123456789012", "eu-west-1"
PROJECT, GROUP = "modelgate", "energy-forecast"
APPROVERS = {env: (f"approvers-{env}@example.com",) for env in ENVIRONMENTS}
GROUPS = {**dict.fromkeys(ENVIRONMENTS, "modelgate-approvers"), "prod": "modelgate-approvers-prod"}
PEOPLE = (
    ("alice", "alice@example.com", ("modelgate-approvers",)),
    ("bob", "bob@example.com", ("modelgate-approvers",)),  # registers the models
    ("carol", "carol@example.com", ("data-scientists",)),  # not an approver
    ("dave", "dave@example.com", ("modelgate-approvers-prod", "modelgate-approvers")),
)
EVALUATION = EvaluationReport.from_customers(
    model_package_group=GROUP,
    window=168,
    horizon=24,
    holdout_hours=168,
    per_customer=[
        CustomerMetrics(
            "c0001", mape=0.071, rmse=1.2, baseline_mape=0.1, baseline_rmse=1.9, mape_ratio=0.71, points=168
        ),
        CustomerMetrics(
            "c0002", mape=0.091, rmse=2.2, baseline_mape=0.12, baseline_rmse=2.8, mape_ratio=0.76, points=168
        ),
    ],
).to_json()  # the training pipeline's evaluation report (modelgate.evaluation_report): mean MAPE 0.081


class World(LocalApprovalWorkflow):
    def register(self, registered_by: str | None = "bob@example.com", evaluation=EVALUATION) -> str:
        return super().register(registered_by, evaluation)


@pytest.fixture
def world():
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        with World(
            session,
            account=ACCOUNT,
            region=REGION,
            project=PROJECT,
            group=GROUP,
            approver_emails=APPROVERS,
            approver_groups=GROUPS,
            people=PEOPLE,
        ) as workflow:
            yield workflow
