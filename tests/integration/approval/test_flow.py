"""The whole approval and promotion flow, dev -> test -> uat -> prod, through the real handlers: registry
event -> e-mail (read back from SES, links parsed from the body) -> GET (changes nothing) -> sign-in -> POST
-> registry + Parameter Store + history -> post-inference -> promotion e-mail -> ... -> prod."""

from __future__ import annotations

import pytest

from modelgate.approval.history import read_history
from modelgate.registry import APPROVED, PENDING, REGISTERED_BY_KEY
from sandbox.approval import ApproverBrowser
from tests.integration.approval.conftest import APPROVERS, CHAIN, GROUP, PROJECT

# The tests of one deployed world run together on one pytest-xdist worker (pyproject: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("approval-world-a")


def inference_completed(env: str, arn: str, run: str) -> dict:
    return {
        "id": f"evt-{run}",
        "source": "modelgate.inference",
        "detail-type": "ModelGate Inference Completed",
        "detail": {
            "run_id": run,
            "environment": env,
            "model_package_arn": arn,
            "metrics": {"customers_scored": 1200, "p95_latency_ms": 41.5},
        },
    }


def approve_from_email(world, env: str, username: str) -> tuple:
    (mail,) = [m for m in world.emails() if APPROVERS[env][0] in m.recipients][-1:]
    browser = ApproverBrowser(username)
    page = browser.open(mail.links()["approve"])
    return mail, browser, page


def test_a_version_travels_from_registration_to_prod_with_one_human_decision_per_environment(world):
    arn = world.register(registered_by="bob@example.com")
    world.request("dev", world.registry_event(arn))

    for env in CHAIN.names:
        mails = [m for m in world.emails() if APPROVERS[env][0] in m.recipients]
        assert len(mails) == 1, f"exactly one e-mail to the {env} approvers"
        mail = mails[0]
        assert f"{GROUP} v1" in mail.subject
        assert env in mail.subject
        assert "MAPE: 8.1\u00a0% (baseline 11.0\u00a0%" in mail.text, "evaluation metrics from the registry's report"
        assert "Worse than baseline: 0 of 2" in mail.text
        assert "bob@example.com" in mail.text, "who registered it"
        assert mail.links().keys() == {"approve", "reject"}
        assert mail.links()["approve"] in mail.html.replace("&amp;", "&")
        if env != "dev":
            assert "customers_scored: 1200" in mail.text, "the inference run's metrics"

        before = world.snapshot(arn)
        approver = "dave" if env == "prod" else "alice"
        browser = ApproverBrowser(approver)
        page = browser.open(mail.links()["approve"])
        assert page.status == 200, page.text()
        assert f"Approve {GROUP} version 1 for {env}?" in page.text()
        assert "bob@example.com" in page.text()
        assert "MAPE 8.1 % baseline 11.0 %" in page.text()
        assert any("/oauth2/authorize" in url for _, url, _ in browser.requests), "signed in at the IdP"
        if env != "dev":
            assert "customers_scored 1200" in page.text(), "the page shows the run's metrics too"
        assert world.snapshot(arn) == before, "GET (and sign-in) changed nothing"

        result = browser.submit(page)
        assert result.status == 200, result.text()
        assert f"{GROUP} version 1 approved for {env}" in result.text()

        described = world.describe(arn)
        metadata = described["CustomerMetadataProperties"]
        assert described["ModelApprovalStatus"] == APPROVED
        assert metadata[env] == APPROVED
        assert metadata[f"{env}.decided_by"] == f"{approver}@example.com"
        assert metadata[REGISTERED_BY_KEY] == "bob@example.com", "the registrant survives every update"
        for later in CHAIN.names[CHAIN.names.index(env) + 1 :]:
            assert metadata[later] == PENDING
        parameter = world.parameter(env)
        assert parameter["model_version"] == 1
        assert parameter["model_package_arn"] == arn
        assert parameter["approved_by"] == f"{approver}@example.com"
        assert parameter["source_environment"] == CHAIN.previous(env)
        assert parameter["model_data_url"].endswith(f"/models/{GROUP}/v1/")  # the version's prefix
        (entry,) = world.history(env)
        assert (entry.to_environment, entry.state, entry.decided_by) == (env, APPROVED, f"{approver}@example.com")

        # Batch inference ran with the approved version: ask the next environment.
        target = CHAIN.next(env)
        if target is None:
            assert world.envs[env].post_inference_services is None, "the last environment has nobody to ask"
            continue
        outcome = world.post_inference(env, inference_completed(env, arn, run=f"run-{env}"))
        assert outcome["requested"] is True, outcome
        for event in world.promotion_events():
            assert event["detail"]["target_environment"] == target
            world.request(target, event)

    assert {world.parameter(env)["model_version"] for env in CHAIN.names} == {1}
    assert [len(world.history(env)) for env in CHAIN.names] == [1, 1, 1, 1]
    assert len(world.emails()) == 4


def test_a_rejection_needs_a_reason_is_recorded_and_leaves_parameter_store_alone(world):
    first = world.register()
    world.request("dev", world.registry_event(first))
    mail, browser, page = approve_from_email(world, "dev", "alice")
    browser.submit(page)
    second = world.register()
    world.request("dev", world.registry_event(second))
    mail = next(m for m in world.emails() if "v2" in m.subject)

    browser = ApproverBrowser("alice")
    page = browser.open(mail.links()["reject"])
    assert page.status == 200
    assert "Reject" in page.text()
    without_reason = browser.submit(page, {"reason": "  "})
    assert without_reason.status == 400
    assert "reason" in without_reason.text().lower()
    assert world.describe(second)["ModelApprovalStatus"] == "PendingManualApproval"

    page = browser.open(mail.links()["reject"])
    result = browser.submit(page, {"reason": "MAPE regressed on the holiday week"})
    assert result.status == 200
    assert "rejected" in result.text()
    described = world.describe(second)
    assert described["ModelApprovalStatus"] == "Rejected"
    assert described["CustomerMetadataProperties"]["dev"] == "Rejected"
    assert "holiday week" in described["ApprovalDescription"]
    assert world.parameter("dev")["model_version"] == 1, "a rejection does not replace the approved model"
    entries = world.history("dev")
    assert [e.state for e in entries] == ["Approved", "Rejected"]
    assert entries[1].reason == "MAPE regressed on the holiday week"


def test_duplicate_registry_events_and_eventbridge_retries_send_one_email(world):
    arn = world.register()
    event = world.registry_event(arn)
    first = world.request("dev", event)
    retry = world.request("dev", event)
    duplicate = world.request("dev", {**event, "id": "another-state-change"})
    assert first["sent"] == list(APPROVERS["dev"])
    assert retry["sent"] == duplicate["sent"] == []
    assert retry["already_sent"] == list(APPROVERS["dev"])
    assert len(world.emails()) == 1


def test_promotion_never_skips_an_environment(world):
    arn = world.register()
    world.request("dev", world.registry_event(arn))
    # Inference in dev with a version dev has not approved: nothing to promote.
    outcome = world.post_inference("dev", inference_completed("dev", arn, run="too-early"))
    assert outcome["requested"] is False
    assert "not approved" in outcome["note"]
    assert world.promotion_events() == []
    # A forged promotion request straight to uat is refused by uat's request Lambda: nothing is sent.
    import pytest

    from modelgate.approval.request_emails import RequestRefused

    forged = {
        "id": "x",
        "source": "modelgate.promotion",
        "detail-type": "ModelGate Promotion Requested",
        "detail": {
            "model_package_arn": arn,
            "target_environment": "uat",
            "source_environment": "test",
            "request_id": "r",
        },
    }
    with pytest.raises(RequestRefused, match="not approved for test"):
        world.request("uat", forged)
    skipping = {**forged, "detail": {**forged["detail"], "source_environment": "dev"}}
    with pytest.raises(RequestRefused, match="must come from test"):
        world.request("uat", skipping)
    assert len(world.emails()) == 1


def test_history_is_kept_per_environment_and_by_version(world):
    arn = world.register()
    world.request("dev", world.registry_event(arn))
    _mail, browser, page = approve_from_email(world, "dev", "alice")
    browser.submit(page)
    table = world.envs["dev"].settings.history_table
    dynamodb = world.session.client("dynamodb")
    assert [d.model_version for d in read_history(dynamodb, table, GROUP, version=1)] == [1]
    assert read_history(dynamodb, table, GROUP, version=2) == []
    assert world.parameter("test") is None
    assert PROJECT == "modelgate"


def test_an_email_claimed_by_a_crashed_attempt_is_retried_not_lost(world):
    import pytest

    from modelgate.approval import state
    from modelgate.approval.events import parse_request_event
    from modelgate.approval.request_emails import request_key

    arn = world.register()
    event = world.registry_event(arn)
    services = world.envs["dev"].request_services  # the request-approval function's
    key, recipient = request_key(parse_request_event(event, CHAIN), services.settings.models[0]), APPROVERS["dev"][0]
    # An attempt claimed the e-mail and died before sending it.
    assert state.claim_email(services.dynamodb, services.settings.state_table, key, recipient, services.epoch())
    with pytest.raises(state.EmailInFlight):
        world.request("dev", event)  # an EventBridge retry within the lease: fails, so Lambda retries again
    assert world.emails() == []

    real = services.clock
    from datetime import timedelta

    services.clock = lambda: real() + timedelta(seconds=state.EMAIL_LEASE_SECONDS + 1)
    assert world.request("dev", event)["sent"] == [recipient]  # a later retry takes the abandoned claim over
    assert len(world.emails()) == 1
    assert world.request("dev", event)["already_sent"] == [recipient]


def test_the_registrant_is_not_mailed_a_link_they_could_not_use(world):
    """Only people who can decide are e-mailed: the registrant may not approve their own version (issue 14)."""
    arn = world.register(registered_by="approvers-dev@example.com")  # the registrant is on the dev list
    answer = world.request("dev", world.registry_event(arn))
    assert answer["not_mailed"] == ["approvers-dev@example.com"]
    assert answer["sent"] == []
    assert world.emails() == []
