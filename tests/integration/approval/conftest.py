"""One moto account holding the registry and every environment's approval resources (the shipped config's chain),
a local IdP with people, and each environment's approval API (the real handler routing) behind a local API
Gateway (sandbox.approval_workflow.LocalApprovalWorkflow, which the demo uses too).

The environments' names come from the shipped config's chain; the tests name them by position (FIRST, LAST,
CHAIN[i]), so no name is special to them."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from infra.config import load_config
from modelgate.approval.settings import ModelApproval
from modelgate.evaluation_report import CustomerMetrics, EvaluationReport
from sandbox.approval_workflow import LocalApprovalWorkflow

ACCOUNT, REGION = "123456789012", "eu-west-1"
PROJECT, GROUP = "modelgate", "energy-forecast"
CHAIN = load_config().chain  # the shipped config's promotion chain
FIRST, LAST = CHAIN.first, CHAIN.last
APPROVERS = {env: (f"approvers-{env}@example.com",) for env in CHAIN}
# The last environment has its own approvers group (as the shipped config has): alice may not decide there.
GROUPS = {**dict.fromkeys(CHAIN, "modelgate-approvers"), LAST: "modelgate-approvers-prod"}
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


def one_model(env: str, **changes) -> ModelApproval:
    """The model of these tests in `env` (a quorum of 1 unless changed)."""
    values = {
        "model": GROUP,
        "group": GROUP,
        "approver_emails": APPROVERS[env],
        "approvers_group": GROUPS[env],
        "metric_threshold": 1.0,  # config training.metric_threshold, as the stack passes it
        **changes,
    }
    return ModelApproval(**values)


class World(LocalApprovalWorkflow):
    def register(self, registered_by: str | None = "bob@example.com", evaluation=EVALUATION, group=None) -> str:
        return super().register(registered_by, evaluation, group)


@pytest.fixture
def world():
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        with World(
            session,
            account=ACCOUNT,
            region=REGION,
            chain=CHAIN,
            models={env: (one_model(env),) for env in CHAIN},
            project=PROJECT,
            people=PEOPLE,
        ) as workflow:
            yield workflow
