"""Shared test set-up: no AWS credentials or network endpoints are ever used by accident, and one synthesis
of the whole app per session (every stage, the pipeline, cdk-nag) shared by all tests that read templates."""

from __future__ import annotations

import os

import pytest

# Before anything imports boto3 or aws_cdk.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
    }
)
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def config():
    from infra.config import load_config

    return load_config()


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    from infra.build.synth_report import synthesize

    return synthesize(tmp_path_factory.mktemp("cdk.out"))
