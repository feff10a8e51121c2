"""Promotion requests out of one environment (all but the last of the chain): a finished transform job or
inference run of any model -> the post-inference Lambda -> a promotion request on the next environment's bus.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Stack, Tags
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.constructs.approval_requests import route
from infra.constructs.modelgate_function import ModelGateFunction
from modelgate.approval import events as approval_events


class Promotions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        project: str,
        environment: str,
        next_event_bus: str,
        packages_arns: Sequence[str],
        artifacts: s3.IBucket,
        environ: dict[str, str],
        files: Mapping[str, str],  # the functions' settings files (ApprovalSettings.bundled_files)
        layer: lambda_.ILayerVersion,
        failures: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        # The function is this construct's default child ("Default" is left out of logical ids), so its
        # resources keep the logical ids they had as the stack's own "PostInference" function.
        self.function = ModelGateFunction(
            self,
            "Default",
            handler="lambdas.post_inference.handler",
            description=f"ModelGate: request promotion after inference ({environment})",
            environment=environ,
            files=files,
            layer=layer,
            timeout_seconds=60,
            on_failure=failures,
        )
        role = self.function.role
        Tags.of(role).add(approval_events.PROMOTER_TAG, project)  # admitted by the next bus's policy
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["sagemaker:DescribeTransformJob", "sagemaker:ListTags"],
                resources=[f"arn:aws:sagemaker:{stack.region}:{stack.account}:transform-job/*"],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["sagemaker:DescribeModel"],
                resources=[f"arn:aws:sagemaker:{stack.region}:{stack.account}:model/*"],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["sagemaker:DescribeModelPackage"], resources=list(packages_arns))
        )
        role.add_to_principal_policy(iam.PolicyStatement(actions=["events:PutEvents"], resources=[next_event_bus]))
        artifacts.grant_read(role)  # the run's own metrics.json next to its outputs
        route(
            self,
            "TransformJobCompleted",
            events.EventPattern(
                source=[approval_events.REGISTRY_SOURCE],
                detail_type=[approval_events.TRANSFORM_DETAIL_TYPE],
                detail={"TransformJobStatus": ["Completed"]},
            ),
            self.function,
            f"Completed transform jobs in {environment} -> promotion request",
            dead_letters=failures,
        )
        route(
            self,
            "InferenceCompleted",
            events.EventPattern(
                source=[approval_events.INFERENCE_SOURCE],
                detail_type=[approval_events.INFERENCE_DETAIL_TYPE],
                detail={"environment": [environment]},
            ),
            self.function,
            f"Completed inference runs in {environment} -> promotion request",
            dead_letters=failures,
        )
