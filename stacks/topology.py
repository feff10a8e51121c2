"""Where an environment's neighbours are: the one Model Registry, the previous and next environments, the CI/CD.

There is ONE Model Registry (model package group), held by the first environment of the promotion chain (dev)
in its Storage stack. Every environment's training pipeline registers into it, and every environment's approval
workflow reads and updates its versions, by ARN; when environments live in other accounts the group's resource
policy (`registry_sharing_policy`) lets them. Approval metadata per environment (dev/test/uat/prod keys) on
each version is what makes one registry enough.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelgate.approval.events import promotion_bus_name
from modelgate.config import Environment, ModelGateConfig
from modelgate.environments import ENVIRONMENTS, next_environment, previous_environment

REGISTRY_ENVIRONMENT = ENVIRONMENTS[0]


@dataclass(frozen=True)
class Topology:
    registry_account: str
    registry_region: str
    previous_account: str | None = None  # may put promotion requests on this environment's bus
    next_event_bus: str | None = None  # the next environment's ModelGate (promotion) event bus (ARN)
    cicd_account: str | None = None
    sharing_accounts: tuple[str, ...] = ()  # other accounts that use the registry (set on the registry's group)
    # Accounts of the other environments (this one's too if another environment shares it): where versions this
    # environment may serve can be stored (stacks/model_artifacts.py).
    other_accounts: tuple[str, ...] = ()
    # Sets API Gateway's account-level CloudWatch role: the first environment in its account and region only.
    owns_api_gateway_account: bool = True

    @classmethod
    def from_config(cls, config: ModelGateConfig, environment: str) -> Topology:
        registry = config.environments[REGISTRY_ENVIRONMENT]
        previous, following = previous_environment(environment), next_environment(environment)
        nxt = config.environments[following] if following else None
        return cls(
            registry_account=registry.account,
            registry_region=registry.region,
            previous_account=config.environments[previous].account if previous else None,
            next_event_bus=(
                f"arn:aws:events:{nxt.region}:{nxt.account}:event-bus/"
                f"{promotion_bus_name(config.project.name, following)}"
                if nxt
                else None
            ),
            cicd_account=config.cicd.account if config.cicd else None,
            sharing_accounts=tuple(sorted({env.account for env in config.environments.values()} - {registry.account})),
            other_accounts=tuple(
                sorted({env.account for env in config.environments.values() if env.name != environment})
            ),
            owns_api_gateway_account=api_gateway_account_owner(config, environment) == environment,
        )

    @classmethod
    def standalone(cls, environment: Environment) -> Topology:
        """One environment on its own (e.g. `-c env=test`): it holds its own registry."""
        return cls(environment.account, environment.region)

    def holds_registry(self, environment: Environment) -> bool:
        """Only one stage creates the group, even when several environments share an account."""
        standalone = (self.registry_account, self.registry_region) == (environment.account, environment.region)
        return environment.name == REGISTRY_ENVIRONMENT or (standalone and self.previous_account is None)

    def group_arn(self, group: str) -> str:
        return f"arn:aws:sagemaker:{self.registry_region}:{self.registry_account}:model-package-group/{group}"

    def packages_arn(self, group: str) -> str:
        """ARN pattern of the group's model versions (IAM lower-cases the group name in package ARNs)."""
        return f"arn:aws:sagemaker:{self.registry_region}:{self.registry_account}:model-package/{group.lower()}/*"


def api_gateway_account_owner(config: ModelGateConfig, environment: str) -> str:
    """The environment whose stage sets API Gateway's account settings (CloudWatch role) in `environment`'s
    account and region: the first of the promotion chain there. Decided from the whole config, so a stage's
    templates do not depend on which environments `-c env=` selected."""
    this = config.environment(environment)
    in_order = [config.environments[name] for name in ENVIRONMENTS if name in config.environments]
    return next(env.name for env in in_order if (env.account, env.region) == (this.account, this.region))


def registry_sharing_policy(group_arn: str, accounts: list[str] | tuple[str, ...]) -> dict:
    """Resource policy of the model package group: later environments' accounts register versions (their
    training pipelines), read them and record their approval decisions."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ModelGateEnvironments",
                "Effect": "Allow",
                "Principal": {"AWS": [f"arn:aws:iam::{account}:root" for account in sorted(set(accounts))]},
                "Action": [
                    "sagemaker:CreateModelPackage",
                    "sagemaker:DescribeModelPackageGroup",
                    "sagemaker:DescribeModelPackage",
                    "sagemaker:ListModelPackages",
                    "sagemaker:UpdateModelPackage",
                ],
                "Resource": [group_arn, group_arn.replace(":model-package-group/", ":model-package/").lower() + "/*"],
            }
        ],
    }
