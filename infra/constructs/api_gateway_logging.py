"""API Gateway's account-level CloudWatch Logs role: the one setting (AWS::ApiGateway::Account) that lets every
REST API of an account and region write execution and access logs.

It is a singleton per account and region, so exactly one stack may own it (stacks/topology.py decides which):
two stacks setting it would overwrite each other, and deleting either would take logging away from the other's
APIs. Its owner is the Storage stack of the first environment in that account and region (stateful, deployed
before the stacks with APIs); role and setting are retained, so logging outlives even that stack.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.build.nag import regex, suppress

MANAGED_POLICY = "service-role/AmazonAPIGatewayPushToCloudWatchLogs"


class ApiGatewayAccountLogging(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
            description="API Gateway writes the execution and access logs of this account's REST APIs",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(MANAGED_POLICY)],
        )
        self.role.apply_removal_policy(RemovalPolicy.RETAIN)
        self.account = apigateway.CfnAccount(self, "Account", cloud_watch_role_arn=self.role.role_arn)
        self.account.apply_removal_policy(RemovalPolicy.RETAIN)

        suppress(
            self,
            "Role/Resource",
            {
                "AwsSolutions-IAM4": "API Gateway's account-level logging role: AWS documents the managed policy "
                "AmazonAPIGatewayPushToCloudWatchLogs for it and keeps it in step with what API Gateway writes; "
                "only apigateway.amazonaws.com can assume the role."
            },
            {
                "AwsSolutions-IAM4": [
                    regex(
                        r"Policy::arn:<AWS::Partition>:iam::aws:policy\/service-role\/AmazonAPIGatewayPushToCloudWatchLogs"
                    )
                ]
            },
        )
