"""Where an environment's neighbours are: the Model Registry, the previous and next environments, the CI/CD.

The first environment of the promotion chain (config `environments:`, in order) holds the Model Registry: one
model package group per model (config `models:`), in its Storage stack. Every environment's training pipelines
register into those groups, and every environment's approval workflow reads and updates their versions, by ARN;
when environments live in other accounts each group's resource policy (`registry_sharing_policy`, set on the
groups by stacks/storage_stack.py) lets them. Approval metadata per environment (one key per chain environment)
on each version is what makes one registry enough.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.config import Environment, ModelGateConfig
from modelgate.approval.events import promotion_bus_name
from modelgate.chain import Chain


@dataclass(frozen=True)
class Topology:
    chain: Chain
    registry_account: str
    registry_region: str
    previous_account: str | None = None  # may put promotion requests on this environment's bus
    next_event_bus: str | None = None  # the next environment's ModelGate (promotion) event bus (ARN)
    cicd_account: str | None = None
    sharing_accounts: tuple[str, ...] = ()  # other accounts that use the registry (set on the registry's groups)
    # Accounts of the other environments (this one's too if another environment shares it): where versions this
    # environment may serve can be stored (infra/constructs/model_artifacts.py).
    other_accounts: tuple[str, ...] = ()
    # Sets API Gateway's account-level CloudWatch role: the first environment in its account and region only.
    owns_api_gateway_account: bool = True

    @classmethod
    def from_config(cls, config: ModelGateConfig, environment: str) -> Topology:
        chain = config.chain
        config.environment(environment)  # a ConfigError naming the chain for any other name
        registry = config.environments[chain.first]
        previous, following = chain.previous(environment), chain.next(environment)
        nxt = config.environments[following] if following else None
        return cls(
            chain=chain,
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
        """One environment on its own (a chain of one): it holds its own registry."""
        return cls(Chain((environment.name,)), environment.account, environment.region)

    def holds_registry(self, environment: Environment) -> bool:
        """Only the first environment of the chain creates the groups, even when several share an account."""
        return environment.name == self.chain.first

    def receives_versions(self, environment: str) -> bool:
        """Versions arrive (from the registry) in the first environment; later ones get promotion requests."""
        return environment == self.chain.first

    def protected(self, environment: str) -> bool:
        """Termination protection of the stateful stack: every environment after the first of the chain. The
        first is where models are tried out and may be torn down; anything later has been promoted into."""
        return environment != self.chain.first

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
    return next(
        env.name for env in config.environments.values() if (env.account, env.region) == (this.account, this.region)
    )


def registry_sharing_policy(group_arn: str, accounts: list[str] | tuple[str, ...]) -> dict:
    """Resource policy of a model package group: later environments' accounts register versions (their
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
