"""One ModelGate environment of the promotion chain: a CDK Stage deployed to its own account and region.

It composes, for every model of the config: Storage (shared; in the first environment of the chain it holds one
Model Registry group per model), one Pipeline stack per model, the Approval stack (one per environment for all
models), one Serving-<model> stack per model (its endpoint and deploy step) and the Serving stack (the
environment's inference API over every model's endpoint, deployed after them). No stack grows with the models.
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
from stacks.serving_stack import ModelServingStack, ServingStack, model_serving_stack_id
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
        self.model_serving = {
            model.name: ModelServingStack(
                self,
                model_serving_stack_id(model),
                project=project,
                environment=environment,
                model=model,
                storage=self.storage,
                topology=topology,
            )
            for model in self.models
        }
        self.serving = ServingStack(
            self,
            "Serving",
            environment=environment,
            served=[stack.served for stack in self.model_serving.values()],
            storage=self.storage,
            topology=topology,
        )
        # The API names the endpoints (no references): it is updated once they exist. On an upgrade from the one
        # Serving stack of earlier releases, the model stacks create new endpoints (new names) first; the Serving
        # update then routes to them and deletes the old ones.
        for stack in self.model_serving.values():
            self.serving.add_stack_dependency(stack, "the inference API routes to the model's endpoint by name")
        # REST API stages with logging fail to deploy before API Gateway's account has its CloudWatch role (set
        # by Storage, or by an earlier environment's Storage in the same account and region).
        for api_stack in (self.approval, self.serving):
            api_stack.add_stack_dependency(self.storage, "API Gateway's account-level CloudWatch role")

        Tags.of(self).add("modelgate:project", project.name)
        Tags.of(self).add("modelgate:environment", environment.name)
        apply_nag(self)
