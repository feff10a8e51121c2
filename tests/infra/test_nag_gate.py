"""The nag gate itself: a new insecure resource must fail synthesis, and a warning must be reported."""

from __future__ import annotations

import pytest
from aws_cdk import App, RemovalPolicy, Stack, Stage
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3

from infra.build.nag import apply_nag
from infra.build.synth_report import NagViolations, synthesize_app
from stacks.app_builder import feature_flags


def _app_with(tmp_path, build):
    app = App(context=feature_flags(), outdir=str(tmp_path))
    stage = Stage(app, "probe-dev")
    build(Stack(stage, "Probe"))
    apply_nag(stage)
    return app


def test_an_unlogged_unencrypted_bucket_fails_synth_with_its_path(tmp_path):
    app = _app_with(tmp_path, lambda stack: s3.Bucket(stack, "Leaky"))
    with pytest.raises(NagViolations) as caught:
        synthesize_app(app, tmp_path)
    rules = {(f.rule, f.path) for f in caught.value.findings}
    assert ("AwsSolutions-S1", "probe-dev/Probe/Leaky/Resource") in rules
    assert ("AwsSolutions-S10", "probe-dev/Probe/Leaky/Resource") in rules


def test_nag_warnings_do_not_fail_synth_but_are_reported(tmp_path):
    # A table without point-in-time recovery is an AwsSolutions *warning* (DDB3): synth succeeds, the
    # finding must still reach SynthResult.findings (which the zero-findings test asserts is empty).
    def table(stack):
        dynamodb.Table(
            stack,
            "NoBackups",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            removal_policy=RemovalPolicy.DESTROY,
        )

    result = synthesize_app(_app_with(tmp_path, table), tmp_path)
    assert [(f.level, f.rule) for f in result.findings] == [("warning", "AwsSolutions-DDB3")]
