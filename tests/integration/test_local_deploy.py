"""Deploying synthesized Stages into the local AWS stand-in: what the demo stands on."""

from __future__ import annotations

import pytest

from sandbox.aws import LocalAws
from sandbox.cloudformation import deploy_stage


@pytest.fixture(scope="module")
def local_aws(config):
    with LocalAws(config.environments["dev"].region) as aws:
        yield aws


def test_each_environment_lands_in_its_own_account_with_the_declared_buckets(local_aws, synth, config):
    for env in ("dev", "test"):
        account = local_aws.account(config.environments[env].account)
        stacks = deploy_stage(account, synth.outdir / f"assembly-{config.project.name}-{env}")
        s3 = account.client("s3")
        raw = stacks["Storage"].physical_id("RawData")
        encryption = s3.get_bucket_encryption(Bucket=raw)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert encryption["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        assert account.client("sts").get_caller_identity()["Account"] == config.environments[env].account
        assert "AWS::S3::BucketPolicy" in stacks["Storage"].skipped.values(), "skips are reported, not hidden"
