"""The local CloudFormation keeps each stack's name whatever resources it creates first."""

from __future__ import annotations

from sandbox.aws import LocalAws
from sandbox.cloudformation import deploy_stack

TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def test_a_sagemaker_model_before_an_emulated_resource_does_not_rename_the_stack():
    template = {
        "Resources": {
            "Role": {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": TRUST}},
            # Deferred (created after the stack) and listed before an emulated resource: the case that renamed it.
            "Model": {
                "Type": "AWS::SageMaker::Model",
                "Properties": {
                    "ExecutionRoleArn": {"Fn::GetAtt": ["Role", "Arn"]},
                    "PrimaryContainer": {"Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/triton:1"},
                },
            },
            "Key": {"Type": "AWS::KMS::Key", "Properties": {"KeyPolicy": {"Version": "2012-10-17", "Statement": []}}},
        }
    }
    with LocalAws("eu-west-1") as aws:
        account = aws.account("222222222222")
        deployed = deploy_stack(account, "probe-stack", template)
        stacks = account.client("cloudformation").describe_stacks()["Stacks"]
    assert [stack["StackName"] for stack in stacks] == ["probe-stack"]
    assert deployed.name == "probe-stack"
    assert deployed.physical_id("Model").rsplit("/", 1)[-1].startswith("model-")
