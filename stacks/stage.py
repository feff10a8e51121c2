"""One ModelGate environment of the promotion chain: a CDK Stage deployed to its own account and region.

It composes, for every model of the config: Storage (shared; in the first environment of the chain it holds one
Model Registry group per model), one Pipeline stack per model, the Approval stack (one per environment for all
models) and the Serving stack (every model's endpoint and the environment's inference API).
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Environment as CdkEnvironment
from aws_cdk import Stage, Tags
from constructs import Construct

from infra.build.nag import apply_nag
from infra.config import Environment, ModelProject, Project
from stacks.approval_stack import ApprovalStack
from stacks.pipeline_stack import PipelineStack
from stacks.serving_stack import ServingStack
from stacks.storage_stack import StorageStack
from stacks.topology import Topology


def pipeline_stack_id(model: ModelProject) -> str:
    return f"Pipeline-{model.name}"


class ModelGateStage(Stage):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        project: Project,
        environment: Environment,
        models: Sequence[ModelProject],
        topology: Topology | None = None,
    ) -> None:
        """`environment`: the environment-level settings; each model's own are `model.environments[name]`."""
        super().__init__(
            scope,
            construct_id,
            env=CdkEnvironment(account=environment.account, region=environment.region),
        )
        self.settings = environment
        self.models = tuple(models)
        topology = topology or Topology.standalone(environment)
        self.storage = StorageStack(
            self,
            "Storage",
            model_package_groups=(
                [model.model_package_group for model in self.models] if topology.holds_registry(environment) else []
            ),
            registry_sharing=topology.sharing_accounts,
            api_gateway_account=topology.owns_api_gateway_account,
            # Stateful stacks of environments something was promoted into may not be deleted by accident.
            termination_protection=topology.protected(environment.name),
        )
        self.pipelines = {
            model.name: PipelineStack(
                self,
                pipeline_stack_id(model),
                project=project,
                model=model,
                environment=environment.name,
                storage=self.storage,
                model_package_group_arn=topology.group_arn(model.model_package_group),
            )
            for model in self.models
        }
        self.approval = ApprovalStack(
            self,
            "Approval",
            project=project,
            environment=environment,
            models=self.models,
            storage=self.storage,
            topology=topology,
        )
        self.serving = ServingStack(
            self,
            "Serving",
            project=project,
            environment=environment,
            models=self.models,
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
