"""The stateful stack of every environment: what a security review and an accidental `cdk destroy` need."""

from __future__ import annotations

import json

import pytest

from infra.config import load_config

CHAIN = load_config().chain  # the shipped config's promotion chain
ENVIRONMENTS = CHAIN.names

DATA_BUCKETS = 4  # raw, curated, artifacts, model repository (+1 access-log bucket)


def resources(template, kind):
    return template.find_resources(kind)


def data_key(template) -> str:
    """The logical id of the storage key (the other key is the approval links' HMAC key)."""
    (key,) = [k for k, r in resources(template, "AWS::KMS::Key").items() if "KeySpec" not in r["Properties"]]
    return key


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_data_buckets_are_kms_encrypted_versioned_private_and_logged(template, env):
    storage = template(env, "Storage")
    buckets = resources(storage, "AWS::S3::Bucket")
    assert len(buckets) == DATA_BUCKETS + 1
    key = data_key(storage)
    kms_buckets = {
        logical: bucket
        for logical, bucket in buckets.items()
        if bucket["Properties"]
        .get("BucketEncryption", {})
        .get("ServerSideEncryptionConfiguration", [{}])[0]
        .get("ServerSideEncryptionByDefault", {})
        .get("SSEAlgorithm")
        == "aws:kms"
    }
    assert len(kms_buckets) == DATA_BUCKETS, "every data bucket must use the environment's KMS key"
    (log_bucket,) = set(buckets) - set(kms_buckets)
    for logical, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}, logical
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, logical
        if logical != log_bucket:
            assert props["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": log_bucket}, logical
            sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
            assert sse["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == {"Fn::GetAtt": [key, "Arn"]}, logical
            assert sse["BucketKeyEnabled"] is True, logical


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_bucket_policy_denies_plain_http_and_old_tls(template, env):
    storage = template(env, "Storage")
    policies = resources(storage, "AWS::S3::BucketPolicy")
    assert len(policies) == DATA_BUCKETS + 1
    for logical, policy in policies.items():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        denies = [s for s in statements if s["Effect"] == "Deny"]
        assert any(
            s["Condition"].get("Bool", {}).get("aws:SecureTransport") == "false" and s["Action"] == "s3:*"
            for s in denies
        ), f"{logical} must deny requests without TLS"
        assert any(s["Condition"].get("NumericLessThan", {}).get("s3:TlsVersion") == 1.2 for s in denies), (
            f"{logical} must deny TLS < 1.2"
        )


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_key_rotates_and_stateful_resources_survive_stack_deletion(template, env):
    storage = template(env, "Storage")
    key = resources(storage, "AWS::KMS::Key")[data_key(storage)]
    assert key["Properties"]["EnableKeyRotation"] is True
    for kind in ("AWS::KMS::Key", "AWS::S3::Bucket", "AWS::DynamoDB::Table"):
        for logical, resource in resources(storage, kind).items():
            assert resource["DeletionPolicy"] == "Retain", logical
            assert resource["UpdateReplacePolicy"] == "Retain", logical


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_no_physical_names_are_hard_coded(template, env):
    """CDK generates names, so two environments (or two deployments) in one account never collide."""
    storage = template(env, "Storage")
    for logical, bucket in resources(storage, "AWS::S3::Bucket").items():
        assert "BucketName" not in bucket["Properties"], logical
    storage.resource_properties_count_is("AWS::KMS::Alias", {}, 0)


def test_stages_deploy_to_the_configured_account_and_region(synth, config):
    for env in ENVIRONMENTS:
        stack = synth.stack(f"{config.project.name}-{env}", "Storage")
        assert (stack.account, stack.region) == (config.environments[env].account, config.environments[env].region)


def test_every_environment_after_the_first_of_the_chain_protects_its_stateful_stack(synth, config):
    """Termination protection is data: the chain's first environment (where models are tried) may be torn down;
    anything promoted into may not be deleted by accident."""
    manifest_protection = {}
    for env in ENVIRONMENTS:
        stage_dir = synth.outdir / f"assembly-{config.project.name}-{env}"
        manifest = json.loads((stage_dir / "manifest.json").read_text())
        storage = next(a for a in manifest["artifacts"].values() if a.get("displayName", "").endswith("/Storage"))
        manifest_protection[env] = storage["properties"].get("terminationProtection", False)
    assert manifest_protection == {"dev": False, "test": True, "uat": True, "prod": True}
    assert {
        env: synth.stack(f"{config.project.name}-{env}", "Storage").termination_protection for env in ENVIRONMENTS
    } == (manifest_protection)
