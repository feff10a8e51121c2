"""The serving deploy step against moto: only the approved version's verified archives are served."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import boto3
import pytest
from moto import mock_aws

from lambdas.serving_deploy import UnexpectedEvent, trigger
from modelgate.model_repository import MANIFEST_NAME, target_model
from modelgate.parameters import ApprovedModel, parameter_name
from modelgate.serving.deploy import (
    ApprovedModelMismatch,
    ArtifactsUnavailable,
    ChecksumMismatch,
    ServingTarget,
    deploy_approved,
)
from modelgate.serving.deployment import Deployment, deployment_key, model_prefix
from sandbox.model_archives import manifest_for, publish_version

REGION = "eu-west-1"
GROUP = "energy-forecast"
PARAMETER = parameter_name("modelgate", GROUP, "test")
CUSTOMERS = ("acme", "globex", "initech")
MME_PREFIX = model_prefix(GROUP)  # this group's endpoint prefix: models/energy-forecast/
DEPLOYMENT_KEY = deployment_key(GROUP)


def clock():
    return datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def aws():
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in ("artifacts", "model-repository"):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield s3, boto3.client("ssm", region_name=REGION)


def archive(customer: str, version: int) -> bytes:
    """The deploy step moves and verifies bytes; what is inside an archive does not matter to it."""
    return hashlib.sha256(f"{customer}-{version}".encode()).digest() * 512


@pytest.fixture(scope="module")
def archives():
    # Version 2 keeps one customer's model, changes one, drops one and adds one.
    v1 = {customer: archive(customer, 1) for customer in CUSTOMERS}
    v2 = {"acme": v1["acme"], "globex": archive("globex", 2), "hooli": archive("hooli", 2)}
    return v1, v2


def approve(ssm, version: int, url: str, environment: str = "test", group: str = GROUP, parameter=PARAMETER) -> None:
    value = ApprovedModel(
        model_package_group=group,
        environment=environment,
        model_version=version,
        model_package_arn=f"arn:aws:sagemaker:{REGION}:222222222222:model-package/{group}/{version}",
        model_data_url=url,
        approved_by="approver@example.com",
        approved_at="2026-11-22T10:00:00+00:00",
        source_environment="dev",
    ).to_json()
    ssm.put_parameter(Name=parameter, Value=value, Type="String", Overwrite=True)


def served(s3, prefix: str = MME_PREFIX) -> dict[str, bytes]:
    listing = s3.list_objects_v2(Bucket="model-repository", Prefix=prefix).get("Contents", [])
    return {
        item["Key"].removeprefix(prefix): s3.get_object(Bucket="model-repository", Key=item["Key"])["Body"].read()
        for item in listing
    }


def record(s3, key: str = DEPLOYMENT_KEY) -> Deployment:
    return Deployment.from_json(s3.get_object(Bucket="model-repository", Key=key)["Body"].read())


TARGET = ServingTarget("model-repository", PARAMETER, GROUP, "test")


def deploy(aws):
    s3, ssm = aws
    return deploy_approved(ssm=ssm, s3=s3, target=TARGET, clock=clock)


def test_the_approved_version_is_copied_under_versioned_names_and_recorded(aws, archives):
    s3, ssm = aws
    v1, _ = archives
    approve(ssm, 1, publish_version(s3, "artifacts", "models/energy-forecast/v1", GROUP, v1))
    report = deploy(aws)
    assert served(s3) == {target_model(1, c): v1[c] for c in CUSTOMERS}, "byte-identical archives, versioned names"
    assert sorted(report.copied) == sorted(target_model(1, c) for c in CUSTOMERS)
    deployed = record(s3)
    assert (deployed.model_version, deployed.customers, deployed.environment) == (1, CUSTOMERS, "test")
    assert deployed.target("globex") == "v1/globex.tar.gz"


def test_a_new_approval_switches_versions_and_removes_what_is_no_longer_approved(aws, archives):
    s3, ssm = aws
    v1, v2 = archives
    approve(ssm, 1, publish_version(s3, "artifacts", "v1", GROUP, v1))
    deploy(aws)
    # Something nobody approved was dropped into the prefix by hand: it goes too.
    s3.put_object(Bucket="model-repository", Key=MME_PREFIX + "rogue.tar.gz", Body=b"unapproved")
    approve(ssm, 2, publish_version(s3, "artifacts", "v2", GROUP, v2))
    report = deploy(aws)
    assert served(s3) == {target_model(2, c): v2[c] for c in v2}
    assert MME_PREFIX + "rogue.tar.gz" in report.removed
    assert MME_PREFIX + target_model(1, "initech") in report.removed
    assert record(s3).model_version == 2
    assert record(s3).customers == ("acme", "globex", "hooli")


def test_a_second_run_changes_nothing(aws, archives):
    s3, ssm = aws
    approve(ssm, 1, publish_version(s3, "artifacts", "v1", GROUP, archives[0]))
    deploy(aws)
    before = s3.get_object(Bucket="model-repository", Key=DEPLOYMENT_KEY)["ETag"]
    again = deploy(aws)
    assert (again.copied, again.removed, again.record_written) == ([], [], False)
    assert len(again.unchanged) == len(CUSTOMERS)
    assert s3.get_object(Bucket="model-repository", Key=DEPLOYMENT_KEY)["ETag"] == before


def test_an_archive_whose_checksum_does_not_match_is_refused_and_the_old_version_keeps_serving(aws, archives):
    s3, ssm = aws
    v1, v2 = archives
    approve(ssm, 1, publish_version(s3, "artifacts", "v1", GROUP, v1))
    deploy(aws)
    url = publish_version(s3, "artifacts", "v2", GROUP, v2)
    s3.put_object(Bucket="artifacts", Key="v2/globex.tar.gz", Body=v2["globex"][:-10] + b"0123456789")  # tampered
    approve(ssm, 2, url)
    with pytest.raises(ChecksumMismatch, match=r"globex\.tar\.gz: SHA-256"):
        deploy(aws)
    assert record(s3).model_version == 1, "the switch never happened"
    assert {k for k in served(s3) if k.startswith("v1/")} == {target_model(1, c) for c in CUSTOMERS}
    assert target_model(2, "globex") not in served(s3), "the tampered bytes were never uploaded"


def test_an_archive_missing_from_the_version_is_refused(aws, archives):
    s3, ssm = aws
    url = publish_version(s3, "artifacts", "v1", GROUP, archives[0])
    s3.delete_object(Bucket="artifacts", Key="v1/initech.tar.gz")
    approve(ssm, 1, url)
    with pytest.raises(ArtifactsUnavailable, match=r"initech\.tar\.gz"):
        deploy(aws)
    # Archives verified before the missing one sit under v1/, unreferenced: no record names version 1 yet.
    assert set(served(s3)) == {target_model(1, "acme"), target_model(1, "globex")}
    assert "Contents" not in s3.list_objects_v2(Bucket="model-repository", Prefix=DEPLOYMENT_KEY)


@pytest.mark.parametrize(
    ("manifest", "error"),
    [
        (b"not json", "not a model manifest"),
        (json.dumps({"schema": 99, "model_package_group": GROUP, "archives": []}).encode(), "schema 99"),
        (manifest_for("someone-else", {"acme": b"x"}).to_json().encode(), "belongs to group 'someone-else'"),
        (manifest_for(GROUP, {}).to_json().encode(), "lists no archives"),
    ],
)
def test_a_bad_manifest_is_refused_and_changes_nothing(aws, archives, manifest, error):
    s3, ssm = aws
    approve(ssm, 1, publish_version(s3, "artifacts", "v1", GROUP, archives[0]))
    deploy(aws)
    before = served(s3)
    s3.put_object(Bucket="artifacts", Key=f"v2/{MANIFEST_NAME}", Body=manifest)
    approve(ssm, 2, "s3://artifacts/v2/")
    with pytest.raises((ArtifactsUnavailable, ApprovedModelMismatch), match=error):
        deploy(aws)
    assert served(s3) == before
    assert record(s3).model_version == 1


def test_an_approval_for_another_environment_or_group_is_refused(aws, archives):
    s3, ssm = aws
    url = publish_version(s3, "artifacts", "v1", GROUP, archives[0])
    approve(ssm, 1, url, environment="uat")
    with pytest.raises(ApprovedModelMismatch, match="for 'uat'"):
        deploy(aws)
    approve(ssm, 1, url, group="other-group")
    with pytest.raises(ApprovedModelMismatch, match="'other-group'"):
        deploy(aws)
    ssm.put_parameter(Name=PARAMETER, Value="{not json", Type="String", Overwrite=True)
    with pytest.raises(ApprovedModelMismatch, match="not JSON"):
        deploy(aws)
    assert served(s3) == {}


def test_without_an_approved_model_nothing_is_served(aws, archives):
    s3, ssm = aws
    approve(ssm, 1, publish_version(s3, "artifacts", "v1", GROUP, archives[0]))
    deploy(aws)
    ssm.delete_parameter(Name=PARAMETER)  # approval withdrawn
    report = deploy(aws)
    assert served(s3) == {}
    assert len(report.removed) == len(CUSTOMERS)
    assert record(s3).model_version is None
    assert record(s3).customers == ()


def test_model_data_url_may_name_the_manifest_itself(aws, archives):
    s3, ssm = aws
    url = publish_version(s3, "artifacts", "v1", GROUP, archives[0])
    approve(ssm, 1, url + MANIFEST_NAME)
    deploy(aws)
    assert record(s3).model_version == 1


def test_the_handler_acts_only_on_its_own_parameter_schedules_and_manual_runs():
    change = {"source": "aws.ssm", "detail-type": "Parameter Store Change", "detail": {"name": PARAMETER}}
    updated = {**change, "detail": {"name": PARAMETER, "operation": "Update"}}
    assert trigger(updated, PARAMETER, GROUP) == "parameter Update"
    assert trigger({"source": "aws.events", "detail-type": "Scheduled Event"}, PARAMETER, GROUP).startswith("sched")
    assert trigger({"action": "deploy", "reason": "demo"}, PARAMETER, GROUP) == "manual: demo"
    assert trigger({"action": "deploy", "group": GROUP}, PARAMETER, GROUP) == "manual: no reason given"
    for bad in (
        {**change, "detail": {"name": parameter_name("modelgate", "churn-scores", "test")}},  # another group's
        {**change, "detail": {"name": "/modelgate/energy-forecast/prod"}},  # another environment's parameter
        {"source": "aws.sagemaker", "detail-type": "SageMaker Model Package State Change", "detail": {}},
        {"action": "deploy", "bucket": "elsewhere"},  # no way to redirect the step
        ["not", "an", "object"],
        {},
    ):
        with pytest.raises(UnexpectedEvent):
            trigger(bad, PARAMETER, GROUP)


def test_a_manual_run_naming_another_group_is_refused_naming_the_group_it_deploys():
    with pytest.raises(UnexpectedEvent, match=r"deploys model group 'energy-forecast', not 'churn-scores'"):
        trigger({"action": "deploy", "group": "churn-scores"}, PARAMETER, GROUP)


def test_groups_deploy_side_by_side_in_one_bucket_and_never_touch_each_other(aws, archives):
    """Two groups of one environment share its model-repository bucket: a deploy of one (copy, record, clean-up)
    stays inside its own prefix and record, even for customer ids both groups have."""
    s3, ssm = aws
    v1, v2 = archives
    other = "energy-forecast-eu"  # shares a name prefix: `models/energy-forecast/` must not cover it
    other_parameter = parameter_name("modelgate", other, "test")
    other_target = ServingTarget("model-repository", other_parameter, other, "test")
    approve(ssm, 7, publish_version(s3, "artifacts", "eu/v7", other, v2), group=other, parameter=other_parameter)
    deploy_approved(ssm=ssm, s3=s3, target=other_target, clock=clock)
    theirs = served(s3, model_prefix(other)), s3.get_object(Bucket="model-repository", Key=deployment_key(other))

    approve(ssm, 1, publish_version(s3, "artifacts", "v1", GROUP, v1))
    assert sorted(deploy(aws).copied) == sorted(target_model(1, c) for c in CUSTOMERS)
    ssm.delete_parameter(Name=PARAMETER)  # this group's approval withdrawn: everything of it goes, nothing else
    report = deploy(aws)
    assert sorted(report.removed) == sorted(MME_PREFIX + target_model(1, c) for c in CUSTOMERS)

    assert served(s3, model_prefix(other)) == theirs[0] == {target_model(7, c): v2[c] for c in v2}
    assert s3.get_object(Bucket="model-repository", Key=deployment_key(other))["ETag"] == theirs[1]["ETag"]
    assert record(s3, deployment_key(other)).model_version == 7
