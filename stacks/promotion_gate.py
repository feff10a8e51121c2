"""The CI/CD promotion gate: before the pipeline deploys an environment, the model approved for it must exist.

A CodeBuild step in the tooling account assumes the environment's `<project>-<env>-promotion-gate` role (created
by that environment's approval stack, trusted by the CI/CD account, allowed only ssm:GetParameter on that
environment's approved-model parameter) and runs `modelgate approved <group> --env <env>`, which prints the
record and fails with a clear message when nothing is approved. dev has no gate: its models are approved after
the pipeline has deployed it (dev trains and registers). The first deployment of test, uat and prod, before their
approval stacks exist, is done by hand (`make deploy ENV=...`), as the README says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aws_cdk import aws_iam as iam
from aws_cdk import pipelines

from modelgate.config import ModelGateConfig
from modelgate.environments import ENVIRONMENTS
from stacks.approval_stack import promotion_gate_role_name

BOTO3_PIN = "boto3==1.44.5"  # as in requirements.txt: the CLI's only dependency with --project given


def promotion_gates(config: ModelGateConfig) -> Callable[[str, pipelines.IFileSetProducer], Sequence[pipelines.Step]]:
    def gates(environment: str, source: pipelines.IFileSetProducer) -> Sequence[pipelines.Step]:
        if environment == ENVIRONMENTS[0]:
            return []
        target = config.environments[environment]
        role_arn = f"arn:aws:iam::{target.account}:role/{promotion_gate_role_name(config.project.name, environment)}"
        return [
            pipelines.CodeBuildStep(
                f"ModelGate-{environment}",
                input=source,
                install_commands=[f"pip install --quiet {BOTO3_PIN}"],
                commands=[
                    f"python -m modelgate approved {config.project.model_package_group} --env {environment} "
                    f"--project {config.project.name} --region {target.region} --role-arn {role_arn}"
                ],
                role_policy_statements=[iam.PolicyStatement(actions=["sts:AssumeRole"], resources=[role_arn])],
            )
        ]

    return gates
