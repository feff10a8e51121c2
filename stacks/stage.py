"""One ModelGate environment (dev, test, uat or prod): a CDK Stage deployed to its own account and region."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Environment as CdkEnvironment
from aws_cdk import Stage, Tags
from constructs import Construct

from modelgate.config import Environment, ModelProject, Project
from stacks.approval_stack import ApprovalStack
from stacks.nag import apply_nag
from stacks.pipeline_stack import PipelineStack
from stacks.serving_stack import ServingStack
from stacks.storage_stack import StorageStack
from stacks.topology import Topology


class ModelGateStage(Stage):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        project: Project,
        environment: Environment,
        models: Sequence[ModelProject] = (),
        topology: Topology | None = None,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            env=CdkEnvironment(account=environment.account, region=environment.region),
        )
        self.settings = environment
        # Stateful stacks of later environments may not be deleted by accident.
        protect = environment.name in ("uat", "prod")
        topology = topology or Topology.standalone(environment)
        group = project.model_package_group
        self.storage = StorageStack(
            self,
            "Storage",
            model_package_group=group if topology.holds_registry(environment) else None,
            registry_sharing=topology.sharing_accounts,
            api_gateway_account=topology.owns_api_gateway_account,
            termination_protection=protect,
        )
        self.pipeline = PipelineStack(
            self,
            "Pipeline",
            project=project,
            environment=environment,
            storage=self.storage,
            model_package_group_arn=topology.group_arn(group),
        )
        self.approval = ApprovalStack(
            self, "Approval", project=project, environment=environment, storage=self.storage, topology=topology
        )
        self.serving = ServingStack(
            self,
            "Serving",
            project=project,
            environment=environment,
            models=models,
            storage=self.storage,
            topology=topology,
        )
        # REST API stages with logging fail to deploy before API Gateway's account has its CloudWatch role (set
        # by Storage, or by an earlier environment's Storage in the same account and region).
        for api_stack in (self.approval, self.serving):
            api_stack.add_stack_dependency(self.storage, "API Gateway's account-level CloudWatch role")

        Tags.of(self).add("modelgate:project", project.name)
        Tags.of(self).add("modelgate:environment", environment.name)
        apply_nag(self)
