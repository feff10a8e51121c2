"""Issue 12, problem 9 (and the GPU quota prerequisite): `make deploy` warns about what CloudFormation cannot fix.

SES sandbox: "you can only send mail to verified email addresses and domains" (SES developer guide); new
accounts have a quota of 0 GPU instances for SageMaker endpoints and training jobs.
"""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from infra.config import load_config
from infra.preflight import quota_checks, quota_needs, ses_checks


class Account:
    def __init__(self, production: bool) -> None:
        self.production = production

    def get_account(self) -> dict:
        return {"ProductionAccessEnabled": self.production}


class Quotas:
    def __init__(self, values: dict[str, float]) -> None:
        self.values = values

    def get_paginator(self, name: str):
        assert name == "list_service_quotas"
        values = self.values

        class Pages:
            def paginate(self, ServiceCode: str):
                assert ServiceCode == "sagemaker"
                yield {"Quotas": [{"QuotaName": k, "Value": v} for k, v in values.items()]}

        return Pages()


@pytest.fixture
def ses():
    with mock_aws():
        yield boto3.client("ses", region_name="eu-west-1")


def test_an_unverified_sender_is_a_warning_that_says_what_to_do(ses):
    (sender, _) = ses_checks(ses, Account(production=True), "modelgate@example.com", ["a@example.com"])
    assert not sender.ok
    assert "verification e-mail" in sender.message


def test_in_the_sandbox_unverified_recipients_are_named(ses):
    ses.verify_email_identity(EmailAddress="modelgate@example.com")  # moto verifies at once
    ses.verify_email_identity(EmailAddress="known@example.org")
    sender, sandbox = ses_checks(
        ses, Account(production=False), "modelgate@example.com", ["known@example.org", "new@example.net"]
    )
    assert sender.ok
    assert not sandbox.ok
    assert "not verified: new@example.net" in sandbox.message
    assert "production access" in sandbox.message


def test_a_verified_domain_covers_its_addresses_and_production_access_needs_nothing_more(ses):
    ses.verify_domain_identity(Domain="example.com")
    checks = ses_checks(ses, Account(production=True), "modelgate@example.com", ["x@example.net"])
    assert all(check.ok for check in checks), checks


def test_gpu_quotas_at_their_default_of_zero_are_warnings():
    prod = load_config().environments["prod"]
    checks = quota_checks(Quotas({}), prod)
    assert [check.ok for check in checks] == [False] * len(quota_needs(prod))
    assert any(
        f"'{prod.serving.instance_type} for endpoint usage' is 0, needs {prod.serving.max_instances}" in c.message
        for c in checks
    )


def test_enough_quota_passes():
    prod = load_config().environments["prod"]
    checks = quota_checks(Quotas(dict.fromkeys(quota_needs(prod), 100)), prod)
    assert all(check.ok for check in checks)


def test_each_model_has_its_own_endpoint_and_pipeline_so_quota_needs_add_up():
    """Two models in one environment: two endpoints and two pipelines of the same instance types."""
    config = load_config("config/examples/many-models.yaml")
    prod = [model.environments["prod"] for model in config.models]
    one, both = quota_needs(prod[0]), quota_needs(*prod)
    serving = f"{prod[0].serving.instance_type} for endpoint usage"
    assert both[serving] == 2 * one[serving] == 2 * prod[0].serving.max_instances
