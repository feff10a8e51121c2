"""The local SES records a raw mail's recipients as SES delivers it: the envelope (`Destinations`) when given,
the To/Cc/Bcc headers otherwise."""

from __future__ import annotations

import pytest

from modelgate.approval.emails import ApprovalEmail, send
from sandbox.approval import sent_emails
from sandbox.aws import LocalAws

SENDER = "modelgate@example.com"


@pytest.fixture(scope="module")
def ses():
    with LocalAws("eu-west-1", enforce_iam=False) as aws:
        account = aws.account("111111111111")
        client = account.client("ses")
        client.verify_email_identity(EmailAddress=SENDER)
        yield account, client


def mail(recipient: str) -> ApprovalEmail:
    return ApprovalEmail(recipient=recipient, subject="v1", text="t", html="<p>h</p>", approve_url="a", reject_url="r")


def test_an_approval_mail_names_its_one_recipient_once(ses):
    # moto alone lists Destinations plus the To header: ('a@example.com', 'a@example.com').
    account, client = ses
    before = len(sent_emails(account.account, "eu-west-1"))
    send(client, mail("a@example.com"), SENDER)
    (sent,) = sent_emails(account.account, "eu-west-1")[before:]
    assert sent.recipients == ("a@example.com",)


def test_destinations_are_the_envelope_and_headers_count_only_without_them(ses):
    account, client = ses
    raw = f"From: {SENDER}\nTo: header@example.com\nSubject: s\n\nbody\n".encode()
    before = len(sent_emails(account.account, "eu-west-1"))
    client.send_raw_email(Source=SENDER, Destinations=["bcc@example.com"], RawMessage={"Data": raw})
    client.send_raw_email(Source=SENDER, RawMessage={"Data": raw})
    with_envelope, from_headers = sent_emails(account.account, "eu-west-1")[before:]
    assert with_envelope.recipients == ("bcc@example.com",)
    assert from_headers.recipients == ("header@example.com",)
