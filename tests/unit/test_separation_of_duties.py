"""Separation of duties fails closed: who registered a version, who is deciding, and how they are compared."""

from __future__ import annotations

import pytest

from modelgate.approval.registrant import Registrant, RegistrantUnknown, canonical, principal_names, record_principals
from modelgate.approval.rules import NotEligible, check_eligible
from modelgate.approval.signin import approver_from_claims
from modelgate.chain import Chain
from tests.unit.test_approval_logic import version

EXECUTION = "arn:aws:sagemaker:eu-west-1:222222222222:pipeline/modelgate-training/execution/abc123"
BOB_SSO = "arn:aws:sts::222222222222:assumed-role/AWSReservedSSO_DataScientist_1a2b/bob@example.com"


def test_oidc_email_verified_must_be_true_for_the_email_to_identify_anyone():
    """OIDC Core 5.1: `email_verified` false, absent, or anything but true leaves the decider without an e-mail."""
    for claims in ({"email_verified": False}, {}, {"email_verified": "false"}, {"email_verified": 1}):
        approver = approver_from_claims({"sub": "s", "email": "Bob@Example.com", **claims}, "g")
        assert approver.email == ""
        assert "bob@example.com" in approver.identities  # still compared with the registrant
    for flag in (True, "true"):
        assert approver_from_claims({"sub": "s", "email": "a@b.c", "email_verified": flag}, "g").email == "a@b.c"


def test_identities_are_compared_canonically():
    registrant = Registrant.of({"registered_by": " BOB@Example.COM "})
    assert registrant.includes(["bob@example.com"])
    assert registrant.includes(["ｂｏｂ@example.com"])  # fullwidth letters: NFKC folds them
    assert not registrant.includes(["alice@example.com", "", "  "])
    assert canonical("Straße") == canonical("STRASSE")


def test_an_unknown_registrant_makes_a_version_ineligible():
    """Separation of duties fails closed: no typed registrant, or no recorded principal, is never 'nobody'."""
    with pytest.raises(RegistrantUnknown, match="set-registrant"):
        Registrant.of({}).check_known("v1")
    with pytest.raises(RegistrantUnknown, match="principal"):
        Registrant.of({"registered_by": "bob@example.com"}).check_known("v1")
    unrecorded = version()
    unrecorded = unrecorded.__class__(**{**unrecorded.__dict__, "metadata": {"registered_by": "bob@example.com"}})
    with pytest.raises(NotEligible, match="principal"):
        check_eligible(unrecorded, "dev", Chain(("dev", "prod")))


def test_principal_names_are_what_a_person_signs_in_as():
    display, names = principal_names({"IamIdentity": {"Arn": BOB_SSO, "SourceIdentity": "Bob"}})
    assert {"bob@example.com", "bob", canonical(BOB_SSO)} <= names
    assert display.startswith(BOB_SSO)
    assert "source identity Bob" in display
    assert principal_names({"UserProfileName": "bob-studio", "UserProfileArn": "arn:p"}) == ("arn:p", {"bob-studio"})
    assert principal_names({"IamIdentity": {"Arn": "arn:aws:iam::1:user/team/Carol"}})[1] >= {"carol"}


class StubSageMaker:
    class exceptions:
        from botocore.exceptions import ClientError

    def __init__(self, executions):
        self.executions = executions

    def describe_pipeline_execution(self, PipelineExecutionArn):
        if PipelineExecutionArn not in self.executions:
            raise self.exceptions.ClientError({"Error": {"Code": "ResourceNotFound"}}, "DescribePipelineExecution")
        return {"CreatedBy": self.executions[PipelineExecutionArn]}


def test_the_principal_that_started_the_run_is_refused_whatever_was_typed():
    """Separation of duties: bob starts the run typing alice's e-mail; the run's CreatedBy still names bob."""
    sagemaker = StubSageMaker({EXECUTION: {"IamIdentity": {"Arn": BOB_SSO}}})
    pipeline_role = "arn:aws:sts::222222222222:assumed-role/modelgate-pipeline/SageMaker"
    described = {
        "CustomerMetadataProperties": {"registered_by": "alice@example.com", "pipeline_execution_arn": EXECUTION},
        "CreatedBy": {"IamIdentity": {"Arn": pipeline_role}},
    }
    recorded = record_principals(sagemaker, described, account="222222222222", region="eu-west-1")
    assert recorded["started_by"] == BOB_SSO
    registrant = Registrant.of({**described["CustomerMetadataProperties"], **recorded})
    bob = approver_from_claims(
        {"sub": "s-bob", "email": "bob@example.com", "email_verified": True, "cognito:username": "bob"}, "g"
    )
    assert registrant.includes(bob.identities)
    assert registrant.includes(["alice@example.com"])  # and the typed one, of course
    registrant.check_known("v1")


@pytest.mark.parametrize(
    "execution",
    [EXECUTION.replace("222222222222", "333333333333"), EXECUTION[:-3] + "999", "not-an-arn"],
)
def test_a_run_that_cannot_be_traced_leaves_the_registrant_unknown(execution):
    sagemaker = StubSageMaker({EXECUTION: {"IamIdentity": {"Arn": BOB_SSO}}})
    described = {"CustomerMetadataProperties": {"pipeline_execution_arn": execution}, "CreatedBy": {}}
    with pytest.raises(RegistrantUnknown):
        record_principals(sagemaker, described, account="222222222222", region="eu-west-1")
