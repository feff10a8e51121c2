"""Links and people that must be refused: a clear page, the right status, and nothing changed anywhere."""

from __future__ import annotations

from datetime import timedelta

import pytest

from modelgate.approval.sealed import KmsMacSigner, seal, unseal
from sandbox.approval import ApproverBrowser

# The tests of one deployed world run together on one pytest-xdist worker (pyproject: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("approval-world-a")


@pytest.fixture
def pending(world):
    """A registered version, its dev e-mail sent; returns (arn, approve_url, reject_url)."""
    arn = world.register(registered_by="bob@example.com")
    world.request("dev", world.registry_event(arn))
    (mail,) = world.emails()
    return arn, mail.links()["approve"], mail.links()["reject"]


def token_of(url: str) -> str:
    return url.split("token=", 1)[1]


def refused(world, arn, url, username="alice", status=400, says=""):
    before = world.snapshot(arn)
    page = ApproverBrowser(username).open(url)
    assert page.status == status, page.text()
    assert 'id="refused"' in page.html
    assert says.lower() in page.text().lower(), page.text()
    assert world.snapshot(arn) == before
    return page


def test_tampered_link(world, pending):
    arn, approve, _ = pending
    token = token_of(approve)
    body, mac = token.split(".")
    tampered = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    refused(world, arn, approve.replace(token, f"{tampered}.{mac}"), says="not valid")
    refused(world, arn, approve.replace(token, token[:-5]), says="not valid")


def test_forged_link_signed_with_another_key(world, pending):
    arn, approve, _ = pending
    kms = world.session.client("kms")
    other = KmsMacSigner(kms, kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["Arn"])
    genuine = unseal("link", token_of(approve), world.envs["dev"].services.signer)
    forged = seal("link", {**genuine, "jti": "forged-1"}, other)
    refused(world, arn, approve.replace(token_of(approve), forged), says="not valid")


def test_expired_link(world, pending):
    arn, approve, _ = pending
    services = world.envs["dev"].services
    real = services.clock
    services.clock = lambda: real() + timedelta(hours=73)
    page = refused(world, arn, approve, status=410, says="expired")
    assert "modelgate request-promotion --model energy-forecast --version 1 --to dev" in page.text()


def test_replayed_link(world, pending):
    arn, approve, _ = pending
    browser = ApproverBrowser("alice")
    page = browser.open(approve)
    form = page.forms[0]
    assert browser.submit(page).status == 200
    refused(world, arn, approve, username="dave", status=409, says="used by alice@example.com")
    again = browser.post(form["action"], form["fields"], {"Origin": page.url.split("/links")[0]})
    assert again.status == 200, "the same approver submitting again is told what they decided, not refused"
    assert "Your approval was recorded at" in again.text()
    assert len(world.history("dev")) == 1


def test_wrong_action(world, pending):
    arn, approve, reject = pending
    refused(world, arn, approve.replace("/links/approve", "/links/reject"), says="is for 'approve', not 'reject'")
    refused(world, arn, reject.replace("/links/reject", "/links/approve"), says="is for 'reject', not 'approve'")


def test_wrong_environment(world, pending):
    arn, approve, _ = pending
    on_test = approve.replace(world.envs["dev"].settings.api_url, world.envs["test"].settings.api_url)
    refused(world, arn, on_test, says="for the dev environment")


def test_unknown_action_and_missing_token(world, pending):
    arn, approve, _ = pending
    refused(world, arn, approve.replace("/links/approve", "/links/delete"), status=404)
    # Without a token the deployed API's request validator answers before the function runs (API Gateway's 400).
    before = world.snapshot(arn)
    page = ApproverBrowser("alice").open(approve.split("?")[0])
    assert (page.status, page.text()) == (400, '{"message": "Missing required request parameters: [token]"}')
    assert world.snapshot(arn) == before


def test_non_member_of_the_approvers_group(world, pending):
    arn, approve, reject = pending
    refused(world, arn, approve, username="carol", status=403, says="not a member of the 'modelgate-approvers'")
    refused(world, arn, reject, username="carol", status=403, says="not a member")


def test_the_registrant_may_not_approve_their_own_model(world, pending):
    arn, approve, reject = pending
    refused(world, arn, approve, username="bob", status=403, says="bob@example.com registered energy-forecast v1")
    # Withdrawing (rejecting) one's own model needs no second person.
    assert ApproverBrowser("bob").open(reject).status == 200


def test_a_version_without_a_registrant_is_never_e_mailed(world):
    from modelgate.approval.request_emails import RequestRefused

    arn = world.register(registered_by=None)
    with pytest.raises(RequestRefused, match="registered_by"):
        world.request("dev", world.registry_event(arn))
    assert world.emails() == []


def test_posts_without_the_page_csrf_token_session_or_same_origin_are_refused(world, pending):
    arn, approve, _ = pending
    browser = ApproverBrowser("alice")
    page = browser.open(approve)
    before = world.snapshot(arn)
    no_csrf = browser.submit(page, {"csrf": ""})
    assert no_csrf.status == 403
    assert "CSRF" in no_csrf.text()
    form, origin = page.forms[0], page.url.split("/links")[0]
    cross_site = browser.post(form["action"], form["fields"], {"Origin": "https://evil.example"})
    assert cross_site.status == 403
    stranger = ApproverBrowser("alice").post(form["action"], form["fields"], {"Origin": origin})  # no session
    assert stranger.status == 401
    assert "sign in" in stranger.text().lower()
    # Another approver's session cannot reuse alice's form (the CSRF token is bound to her).
    dave = ApproverBrowser("dave")
    dave.open(approve)
    hijack = dave.post(form["action"], form["fields"], {"Origin": origin})
    assert hijack.status == 403
    assert "not issued to you" in hijack.text()
    assert world.snapshot(arn) == before


def test_separation_of_duties_fails_closed_on_an_unverified_or_missing_e_mail(world, pending):
    """Separation of duties: a decider is known by a VERIFIED e-mail (OIDC Core 5.1 email_verified), and an
    unverified e-mail that names the registrant still counts as the registrant."""
    arn, approve, reject = pending
    approvers = ("modelgate-approvers",)
    world.issuer.add_user("bob", "bob@example.com", approvers, email_verified=False)  # bob, e-mail not verified
    world.issuer.add_user("robert", "robert@new.example", approvers, email_verified=False)  # bob, e-mail changed
    world.issuer.add_user("nomail", "", approvers)  # a token without any e-mail claim
    refused(world, arn, approve, username="bob", status=403, says="registered energy-forecast v1")
    for who in ("robert", "nomail"):
        for url in (approve, reject):
            refused(world, arn, url, username=who, status=403, says="does not vouch for your e-mail")
    assert "Verify your e-mail address" in ApproverBrowser("robert").open(approve).text()


def test_the_principal_that_registered_the_version_is_recorded_and_shown(world, pending):
    """Separation of duties: `registered_by` is typed by whoever starts the run, so the AWS principal behind the
    version (CreatedBy) is recorded at registration and shown next to it."""
    arn, approve, _ = pending
    metadata = world.describe(arn)["CustomerMetadataProperties"]
    assert metadata["started_by"], metadata  # moto's CreatedBy: a (fake) Studio user profile
    (mail,) = world.emails()
    assert f"Started by (AWS principal): {metadata['started_by']}" in mail.text
    page = ApproverBrowser("alice").open(approve)
    assert metadata["started_by"] in page.text()
