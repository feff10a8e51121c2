"""Deploying synthesized Stages into the local AWS stand-in, through the one local world (sandbox.world) that the
demo and the approval tests stand on: each environment in its own account, as the shipped config declares."""

from __future__ import annotations

import pytest

from sandbox.world import LocalWorld


@pytest.fixture(scope="module")
def world(synth, config):
    """The shipped config's first two environments, Storage only (the buckets are what this test reads)."""
    with LocalWorld(synth.outdir, config, stacks=("Storage",), environments=config.chain.names[:2]) as world:
        yield world


def test_each_environment_lands_in_its_own_account_with_the_declared_buckets(world, config):
    for env in config.chain.names[:2]:
        deployed = world.envs[env]
        account, stacks = deployed.account, deployed.stacks
        s3 = account.client("s3")
        raw = stacks["Storage"].physical_id("RawData")
        encryption = s3.get_bucket_encryption(Bucket=raw)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert encryption["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        assert account.client("sts").get_caller_identity()["Account"] == config.environments[env].account
        assert "AWS::S3::BucketPolicy" in stacks["Storage"].skipped.values(), "skips are reported, not hidden"
