"""Exactly one transition however many clicks race, and a history that loses nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from modelgate.approval import state
from modelgate.approval.history import Decision, history_put, read_history
from sandbox.approval import ApproverBrowser
from tests.integration.approval.conftest import GROUP, PROJECT

# The tests of one deployed world run together on one pytest-xdist worker (pyproject: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("approval-world-b")


def test_fifty_concurrent_posts_of_one_approval_make_one_transition(world):
    arn = world.register()
    world.request("dev", world.registry_event(arn))
    (mail,) = world.emails()
    # Two approvers opened the same e-mailed link (a double-click, a forwarded mail): 25 POSTs each, at once.
    browsers = [ApproverBrowser("alice"), ApproverBrowser("dave")]
    pages = [browser.open(mail.links()["approve"]) for browser in browsers]
    assert all(page.status == 200 for page in pages)

    def post(i: int) -> tuple[int, int, str]:
        browser, page = browsers[i % 2], pages[i % 2]
        result = browser.submit(page)
        return i % 2, result.status, result.text()

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(post, range(50)))

    statuses = [status for _, status, _ in results]
    assert set(statuses) <= {200, 409}, statuses
    entries = world.history("dev")
    assert len(entries) == 1
    # The winner's own repeated submits land on their result page (post-redirect-get); the other approver's
    # are refused: only one person ever sees "recorded".
    winners = {who for who, status, _ in results if status == 200}
    assert winners == {("alice", "dave").index(entries[0].decided_by.split("@")[0])}, results
    assert all("Your approval was recorded" in text for _, status, text in results if status == 200)
    metadata = world.describe(arn)["CustomerMetadataProperties"]
    assert metadata["dev"] == "Approved"
    assert metadata["dev.decided_by"] == entries[0].decided_by
    ssm = world.session.client("ssm")
    versions = ssm.get_parameter_history(Name=f"/{PROJECT}/{GROUP}/dev")["Parameters"]
    assert len(versions) == 1, "Parameter Store written once"


def test_a_thousand_decisions_are_all_readable_in_order(world):
    settings = world.envs["dev"].settings
    dynamodb = world.session.client("dynamodb")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    written = []
    for i in range(1000):
        decided_at = (start + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        decision = Decision(
            model_package_group=GROUP,
            decision_id=Decision.make_id(decided_at, f"token-{i:04d}"),
            model_version=i // 4 + 1,
            model_package_arn=f"arn:aws:sagemaker:eu-west-1:123456789012:model-package/{GROUP}/{i // 4 + 1}",
            action="approve",
            state="Approved",
            from_environment="registry",
            to_environment=["dev", "test", "uat", "prod"][i % 4],
            decided_by=f"approver-{i % 7}@example.com",
            decided_by_subject=f"sub-{i % 7}",
            decided_at=decided_at,
            reason="",
            request_id="r",
            link_token_id=f"token-{i:04d}",
            link_recipient="approvers@example.com",
        )
        dynamodb.put_item(**history_put(settings.history_table, decision))
        written.append(decision)
    read = read_history(dynamodb, settings.history_table, GROUP)
    assert read == written, "every decision, in time order, across DynamoDB pages"
    assert [d.model_version for d in read_history(dynamodb, settings.history_table, GROUP, version=7)] == [7] * 4


def test_a_decision_committed_but_not_applied_is_finished_by_the_same_link_not_refused(world, monkeypatch):
    arn = world.register()
    world.request("dev", world.registry_event(arn))
    (mail,) = world.emails()
    browser = ApproverBrowser("alice")
    page = browser.open(mail.links()["approve"])

    # The Lambda dies after the DynamoDB commit, before the registry / Parameter Store writes.
    from modelgate.approval import decisions

    real_apply = decisions.apply

    def crash(*args, **kwargs):
        raise TimeoutError("Lambda timed out")

    monkeypatch.setattr(decisions, "apply", crash)
    failed = browser.submit(page)
    assert failed.status == 500
    assert "is recorded, but updating the model registry or Parameter Store failed" in failed.text()
    recorded = state.get_decision(
        world.session.client("dynamodb"), world.envs["dev"].settings.state_table, GROUP, 1, "dev"
    )
    assert recorded.status == state.RECORDED
    assert world.parameter("dev") is None

    monkeypatch.setattr(decisions, "apply", real_apply)
    soon = browser.submit(page)  # pressed again at once: maybe another request is still applying it
    assert soon.status == 409
    assert "being recorded" in soon.text()
    assert world.parameter("dev") is None

    services = world.envs["dev"].services
    real_clock = services.clock
    services.clock = lambda: real_clock() + timedelta(seconds=decisions.RESUME_AFTER_SECONDS + 1)
    page = browser.open(mail.links()["approve"])  # a while later, from the e-mail again
    assert page.status == 200, page.text()
    retry = browser.submit(page)  # confirming finishes the abandoned decision
    assert retry.status == 200, retry.text()
    assert world.parameter("dev")["model_version"] == 1
    assert len(world.history("dev")) == 1
    assert (
        state.get_decision(
            world.session.client("dynamodb"), world.envs["dev"].settings.state_table, GROUP, 1, "dev"
        ).status
        == state.APPLIED
    )
