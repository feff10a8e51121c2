"""Quorum: N distinct approvers before a version moves into an environment, exactly once however they race; and
a presented link is verified once per request (one KMS VerifyMac per page view)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from modelgate.registry import APPROVED, PENDING
from sandbox.approval import ApproverBrowser
from tests.integration.approval.conftest import CHAIN, PROJECT, QUORUM, World

# The tests of one deployed world run together on one pytest-xdist worker (pyproject: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("approval-world-a")

FIRST = CHAIN.first
RECIPIENTS = QUORUM.environments[FIRST].approvers.emails  # four addresses


class QuorumWorld(World):
    @property
    def group(self) -> str:
        return QUORUM.model_package_group


@pytest.fixture
def quorum_world(world):
    """The tests' world, for its model with a quorum of 2 in the chain's first environment (four addresses)."""
    assert QUORUM.environments[FIRST].approvers.quorum == 2
    assert len(RECIPIENTS) == 4
    return QuorumWorld(world.world)


def links_by_recipient(world) -> dict[str, dict[str, str]]:
    return {mail.recipients[0]: mail.links() for mail in world.emails()}


def test_concurrent_approvals_by_distinct_people_make_one_transition_at_the_quorum(quorum_world):
    """Five browsers race (alice on two links, dave, erin, frank), each submitting three times at once: two
    approvals are counted, the second moves the version, Parameter Store is written once, alice counts once."""
    world = quorum_world
    arn = world.register()
    world.request(FIRST, world.registry_event(arn))
    urls = links_by_recipient(world)
    assert set(urls) == set(RECIPIENTS)
    people = [("alice", RECIPIENTS[0]), ("alice", RECIPIENTS[1]), ("dave", RECIPIENTS[2]), ("erin", RECIPIENTS[3])]
    people.append(("frank", RECIPIENTS[3]))  # the same link as erin: a forwarded mail
    browsers = [ApproverBrowser(name) for name, _ in people]
    pages = [browser.open(urls[recipient]["approve"]) for browser, (_, recipient) in zip(browsers, people, strict=True)]
    assert all(page.status == 200 for page in pages), [page.text() for page in pages]

    def post(i: int) -> tuple[int, int, str]:
        index = i % len(browsers)
        result = browsers[index].submit(pages[index])
        return index, result.status, result.text()

    with ThreadPoolExecutor(15) as pool:
        results = list(pool.map(post, range(15)))

    assert {status for _, status, _ in results} <= {200, 409}, results
    entries = world.history(FIRST)
    assert [entry.progress for entry in entries] == ["1 of 2", "2 of 2"]
    assert [entry.state for entry in entries] == [PENDING, APPROVED]
    assert len({entry.decided_by_subject for entry in entries}) == 2, "two distinct people"
    metadata = world.describe(arn)["CustomerMetadataProperties"]
    assert metadata[FIRST] == APPROVED
    assert world.describe(arn)["ModelApprovalStatus"] == APPROVED
    ssm = world.session.client("ssm")
    versions = ssm.get_parameter_history(Name=f"/{PROJECT}/{world.group}/{FIRST}")["Parameters"]
    assert len(versions) == 1, "Parameter Store written once"
    assert world.parameter(FIRST)["approved_by"] == ", ".join(entry.decided_by for entry in entries)
    # Nobody else's approval was counted after the transition, and alice at most once.
    assert sum(entry.decided_by == "alice@example.com" for entry in entries) <= 1


def test_one_approval_of_two_moves_nothing_and_the_same_person_is_refused_a_second_time(quorum_world):
    world = quorum_world
    arn = world.register()
    world.request(FIRST, world.registry_event(arn))
    urls = links_by_recipient(world)
    alice = ApproverBrowser("alice")
    counted = alice.submit(alice.open(urls[RECIPIENTS[0]]["approve"]))
    assert counted.status == 200
    assert "1 of 2 approvals: alice@example.com" in counted.text()
    assert world.parameter(FIRST) is None
    assert world.describe(arn)["ModelApprovalStatus"] == PENDING
    assert world.post_inference(FIRST, {
        "source": "modelgate.inference", "detail-type": "ModelGate Inference Completed",
        "detail": {"run_id": "r", "environment": FIRST, "model_package_arn": arn},
    })["requested"] is False, "no promotion request before the quorum"  # fmt: skip

    before = world.snapshot(arn)
    again = ApproverBrowser("alice")
    page = again.open(urls[RECIPIENTS[1]]["approve"])
    assert page.status == 409
    assert f"already approved {world.group} version 1 for {FIRST}; 1 more approver needed" in page.text()
    assert "Nothing was changed." in page.text()
    assert world.snapshot(arn) == before


def test_one_rejection_rejects_whatever_the_count(quorum_world):
    world = quorum_world
    arn = world.register()
    world.request(FIRST, world.registry_event(arn))
    urls = links_by_recipient(world)
    alice = ApproverBrowser("alice")
    alice.submit(alice.open(urls[RECIPIENTS[0]]["approve"]))
    dave = ApproverBrowser("dave")
    rejected = dave.submit(dave.open(urls[RECIPIENTS[1]]["reject"]), {"reason": "holiday week regressed"})
    assert rejected.status == 200, rejected.text()
    assert world.describe(arn)["ModelApprovalStatus"] == "Rejected"
    erin = ApproverBrowser("erin")
    late = erin.open(urls[RECIPIENTS[2]]["approve"])
    assert late.status == 409
    assert "already rejected" in late.text()
    assert [entry.state for entry in world.history(FIRST)] == [PENDING, "Rejected"]


class CountingSigner:
    """The environment's KMS signer, counting what it is asked (each call is one KMS request)."""

    def __init__(self, signer) -> None:
        self.signer, self.verified, self.signed = signer, 0, 0

    def sign(self, message: bytes) -> bytes:
        self.signed += 1
        return self.signer.sign(message)

    def verify(self, message: bytes, mac: bytes) -> bool:
        self.verified += 1
        return self.signer.verify(message, mac)

    def take(self) -> tuple[int, int]:
        counts, self.verified, self.signed = (self.verified, self.signed), 0, 0
        return counts


def test_a_presented_link_is_verified_once_per_page_view_and_decision(world):
    """One KMS VerifyMac for the link per request; the confirmation page also signs its CSRF token, and the
    decision verifies it: (verify, sign) = (1, 1) per page view, (2, 0) per decision, (1, 0) per result page."""
    arn = world.register()
    world.request(FIRST, world.registry_event(arn))
    (mail,) = world.emails()
    services = world.envs[FIRST].services
    counting = services.signer = CountingSigner(services.signer)
    browser = ApproverBrowser("alice")
    page = browser.open(mail.links()["approve"])  # sign-in first (its state is sealed too), then the page
    assert page.status == 200
    counting.take()
    page = browser.open(mail.links()["approve"])  # signed in: the page view alone
    assert page.status == 200
    assert counting.take() == (1, 1)
    result = browser.submit(page)  # the POST, then the GET it redirects to (the result page)
    assert result.status == 200, result.text()
    assert counting.take() == (2 + 1, 0)
    assert browser.open(mail.links()["approve"]).status == 200
    assert counting.take() == (1, 0)
