"""One ModelGate environment (dev, test, uat or prod): a CDK Stage deployed to its own account and region."""

from __future__ import annotations

from aws_cdk import Environment as CdkEnvironment
from aws_cdk import Stage, Tags
from constructs import Construct

from modelgate.config import Environment, Project
from stacks.nag import apply_nag
from stacks.serving_stack import ServingStack, ServingTopology
from stacks.storage_stack import StorageStack


class ModelGateStage(Stage):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        project: Project,
        environment: Environment,
        serving: ServingTopology | None = None,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            env=CdkEnvironment(account=environment.account, region=environment.region),
        )
        self.settings = environment
        # Stateful stacks of later environments may not be deleted by accident.
        protect = environment.name in ("uat", "prod")
        self.storage = StorageStack(self, "Storage", termination_protection=protect)
        self.serving = ServingStack(
            self, "Serving", project=project, environment=environment, storage=self.storage, topology=serving
        )

        Tags.of(self).add("modelgate:project", project.name)
        Tags.of(self).add("modelgate:environment", environment.name)
        apply_nag(self)
