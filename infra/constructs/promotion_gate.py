"""The CI/CD promotion gate: before the pipeline deploys an environment, every model must have an approved version.

Both sides live here:
- `PromotionGate` (in each environment's approval stack): the `<project>-<env>-promotion-gate` role, trusted by
  the CI/CD account, allowed only ssm:GetParameter on the approved-model parameters of this environment (one per
  model);
- `promotion_gates` (the CI/CD pipeline): for every environment after the first of the chain, one CodeBuild step
  per model that assumes that role and runs `modelgate approved <group> --env <env>`, which prints the record and
  fails with a clear message when nothing is approved. The first environment has no gate: its versions are
  approved after the pipeline has deployed it (it trains and registers). The first deployment of every later
  environment, before its approval stack exists, is done by hand (`make deploy ENV=...`), as the README says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aws_cdk import Duration, Stack, pipelines
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.config import ModelGateConfig
from modelgate.parameters import parameter_name

BOTO3_PIN = "boto3==1.44.5"  # as in requirements.txt: the CLI's only dependency with --project given


def promotion_gate_role_name(project: str, environment: str) -> str:
    """The role the CI/CD pipeline (another account) assumes: a name both sides derive, since CDK cannot pass
    references between stages of different accounts."""
    return f"{project}-{environment}-promotion-gate"


def parameter_arn(stack: Stack, project: str, group: str, environment: str) -> str:
    return f"arn:aws:ssm:{stack.region}:{stack.account}:parameter{parameter_name(project, group, environment)}"


class PromotionGate(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, project: str, environment: str, groups: Sequence[str], cicd: str
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        # A named role, the construct's default child ("Default" is left out of logical ids): its logical id stays
        # the one it had as the stack's own "PromotionGate" role (a new id would create a second role of the same
        # name, which fails).
        self.role = iam.Role(
            self,
            "Default",
            role_name=promotion_gate_role_name(project, environment),
            assumed_by=iam.AccountPrincipal(cicd),
            description=f"CI/CD reads the models approved for {environment} before deploying it",
            max_session_duration=Duration.hours(1),
        )
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["ssm:GetParameter"],
                resources=[parameter_arn(stack, project, group, environment) for group in groups],
            )
        )


def gate_step_id(environment: str, model: str) -> str:
    return f"ModelGate-{environment}-{model}"


def promotion_gates(config: ModelGateConfig) -> Callable[[str, pipelines.IFileSetProducer], Sequence[pipelines.Step]]:
    def gates(environment: str, source: pipelines.IFileSetProducer) -> Sequence[pipelines.Step]:
        if environment == config.chain.first:
            return []
        target = config.environments[environment]
        role_arn = f"arn:aws:iam::{target.account}:role/{promotion_gate_role_name(config.project.name, environment)}"
        return [
            pipelines.CodeBuildStep(
                gate_step_id(environment, model.name),
                input=source,
                install_commands=[f"pip install --quiet {BOTO3_PIN}"],
                commands=[
                    f"python -m modelgate approved {model.model_package_group} --env {environment} "
                    f"--project {config.project.name} --region {target.region} --role-arn {role_arn}"
                ],
                role_policy_statements=[iam.PolicyStatement(actions=["sts:AssumeRole"], resources=[role_arn])],
            )
            for model in config.models
        ]

    return gates
