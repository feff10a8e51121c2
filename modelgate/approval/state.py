"""The approval state table: who used which link, which (version, environment) is decided, which e-mails went out.

"Exactly one" comes from DynamoDB conditional writes, never from reading first:
- a decision is committed by ONE transaction that (1) marks the link token used, (2) creates the
  `decision#<group>#<version>#<env>` item and (3) appends the history entry, each conditional on not existing.
  A double-click fails (1), a second approver fails (2); the history entry exists iff the decision does.
- each approval e-mail (request, recipient) is claimed before it is sent; a retry of the same request (an
  EventBridge retry, a duplicate registry event) finds it sent and sends nothing. A claim still being sent
  makes the retry fail (EmailInFlight: Lambda retries it later); a claim whose sender died is taken over after
  its lease, so a crash loses no e-mail either.
Items: partition key `pk`; `expires_at` (epoch seconds) is the table's TTL attribute.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from modelgate.approval import history
from modelgate.approval.history import Decision

PARTITION_KEY = "pk"
TTL_ATTRIBUTE = "expires_at"
RECORDED = "recorded"  # committed in DynamoDB, not yet written to the registry / Parameter Store
APPLIED = "applied"
EMAIL_LEASE_SECONDS = 120  # twice the request Lambda's timeout: a crashed sender's claim is free for the retries
EMAIL_MARKER_DAYS = 30


def decision_key(group: str, version: int, environment: str) -> str:
    return f"decision#{group}#{version}#{environment}"


def link_key(token_id: str) -> str:
    return f"link#{token_id}"


def email_key(request_key: str, recipient: str) -> str:
    return f"email#{request_key}#{recipient.lower()}"


@dataclass(frozen=True)
class RecordedDecision:
    decision: Decision
    status: str  # RECORDED | APPLIED


class AlreadyDecided(Exception):
    def __init__(self, existing: RecordedDecision) -> None:
        super().__init__(f"already {existing.decision.state.lower()} by {existing.decision.decided_by}")
        self.existing = existing


class LinkAlreadyUsed(Exception):
    def __init__(self, used_by: str, used_at: str) -> None:
        super().__init__(f"link already used by {used_by} at {used_at}")
        self.used_by = used_by
        self.used_at = used_at


def _decision_from_state_item(item: dict) -> RecordedDecision:
    return RecordedDecision(Decision.from_item(item), item.get("status", {}).get("S", RECORDED))


def get_decision(dynamodb: Any, table: str, group: str, version: int, environment: str) -> RecordedDecision | None:
    item = dynamodb.get_item(
        TableName=table,
        Key={PARTITION_KEY: {"S": decision_key(group, version, environment)}},
        ConsistentRead=True,
    ).get("Item")
    return _decision_from_state_item(item) if item else None


def commit_decision(
    dynamodb: Any, *, state_table: str, history_table: str, decision: Decision, link_expires_at: int
) -> None:
    """Atomically: use the link, decide the (version, environment), append the history entry.

    Raises LinkAlreadyUsed or AlreadyDecided (nothing written) when another request got there first.
    """
    link_item = {
        PARTITION_KEY: {"S": link_key(decision.link_token_id)},
        "used_by": {"S": decision.decided_by},
        "used_at": {"S": decision.decided_at},
        TTL_ATTRIBUTE: {"N": str(link_expires_at + 86_400)},  # expired links are refused anyway
    }
    decision_item = {
        **decision.to_item(),
        PARTITION_KEY: {
            "S": decision_key(decision.model_package_group, decision.model_version, decision.to_environment)
        },
        "status": {"S": RECORDED},
    }
    condition = {"ConditionExpression": "attribute_not_exists(pk)", "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
    try:
        dynamodb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": state_table, "Item": link_item, **condition}},
                {"Put": {"TableName": state_table, "Item": decision_item, **condition}},
                history.put_request(history_table, decision),
            ]
        )
    except dynamodb.exceptions.TransactionCanceledException as error:
        reasons = error.response.get("CancellationReasons") or []
        codes = [reason.get("Code") for reason in reasons]
        if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
            existing = reasons[1].get("Item") or dynamodb.get_item(
                TableName=state_table, Key={PARTITION_KEY: decision_item[PARTITION_KEY]}, ConsistentRead=True
            ).get("Item")
            if existing:
                raise AlreadyDecided(_decision_from_state_item(existing)) from None
        if codes and codes[0] == "ConditionalCheckFailed":
            used = reasons[0].get("Item") or {}
            raise LinkAlreadyUsed(
                used.get("used_by", {}).get("S", "?"), used.get("used_at", {}).get("S", "?")
            ) from None
        raise


def mark_applied(dynamodb: Any, table: str, decision: Decision) -> None:
    dynamodb.update_item(
        TableName=table,
        Key={
            PARTITION_KEY: {
                "S": decision_key(decision.model_package_group, decision.model_version, decision.to_environment)
            }
        },
        UpdateExpression="SET #s = :applied",
        ConditionExpression="attribute_exists(pk)",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":applied": {"S": APPLIED}},
    )


def link_use(dynamodb: Any, table: str, token_id: str) -> tuple[str, str] | None:
    """(used_by, used_at) if the link was used."""
    item = dynamodb.get_item(TableName=table, Key={PARTITION_KEY: {"S": link_key(token_id)}}, ConsistentRead=True).get(
        "Item"
    )
    return (item["used_by"]["S"], item["used_at"]["S"]) if item else None


# -- e-mail claims ---------------------------------------------------------------------------------------------
class EmailInFlight(Exception):
    """Another attempt is sending this e-mail right now (or died doing so less than a lease ago): retry later."""


def claim_email(dynamodb: Any, table: str, request_key: str, recipient: str, now: int) -> str | None:
    """A claim id if this (request, recipient) e-mail is ours to send, None if it was sent (EmailInFlight if
    another attempt holds it)."""
    claim_id = secrets.token_hex(8)
    try:
        dynamodb.put_item(
            TableName=table,
            Item={
                PARTITION_KEY: {"S": email_key(request_key, recipient)},
                "status": {"S": "sending"},
                "claim_id": {"S": claim_id},
                "lease_until": {"N": str(now + EMAIL_LEASE_SECONDS)},
                TTL_ATTRIBUTE: {"N": str(now + EMAIL_MARKER_DAYS * 86_400)},
            },
            ConditionExpression="attribute_not_exists(pk) OR (#s = :sending AND lease_until < :now)",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":sending": {"S": "sending"}, ":now": {"N": str(now)}},
        )
    except dynamodb.exceptions.ConditionalCheckFailedException:
        existing = dynamodb.get_item(
            TableName=table, Key={PARTITION_KEY: {"S": email_key(request_key, recipient)}}, ConsistentRead=True
        ).get("Item", {})
        if existing.get("status", {}).get("S") == "sent":
            return None
        raise EmailInFlight(f"the e-mail to {recipient} for {request_key} is being sent by another attempt") from None
    return claim_id


def email_sent(dynamodb: Any, table: str, request_key: str, recipient: str, claim_id: str, message_id: str) -> None:
    dynamodb.update_item(
        TableName=table,
        Key={PARTITION_KEY: {"S": email_key(request_key, recipient)}},
        UpdateExpression="SET #s = :sent, message_id = :m",
        ConditionExpression="claim_id = :c",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":sent": {"S": "sent"}, ":m": {"S": message_id}, ":c": {"S": claim_id}},
    )


def release_email(dynamodb: Any, table: str, request_key: str, recipient: str, claim_id: str) -> None:
    """Give a claim back after a failed send, so the retry sends it."""
    with contextlib.suppress(dynamodb.exceptions.ConditionalCheckFailedException):
        dynamodb.delete_item(
            TableName=table,
            Key={PARTITION_KEY: {"S": email_key(request_key, recipient)}},
            ConditionExpression="claim_id = :c AND #s = :sending",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":c": {"S": claim_id}, ":sending": {"S": "sending"}},
        )


# -- what a request said (shown again on the confirmation page) -------------------------------------------------
def request_key_of(model_package_arn: str, environment: str, request_id: str) -> str:
    """A request's key; links carry (ARN, environment, request id), so pages find the request again."""
    return f"{model_package_arn}#{environment}#{request_id}"


def request_record_key(request_key: str) -> str:
    return f"request#{request_key}"


def save_request(
    dynamodb: Any, table: str, request_key: str, *, details: dict[str, str], metrics: list[tuple[str, str]], now: int
) -> None:
    """Keep the request's details and run metrics for the links' lifetime (plus a margin)."""
    dynamodb.put_item(
        TableName=table,
        Item={
            PARTITION_KEY: {"S": request_record_key(request_key)},
            "details": {"S": json.dumps(details)},
            "metrics": {"S": json.dumps(metrics)},
            TTL_ATTRIBUTE: {"N": str(now + EMAIL_MARKER_DAYS * 86_400)},
        },
    )


def load_request(dynamodb: Any, table: str, request_key: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(details, metrics) of a request; empty when unknown (older links, or expired records)."""
    item = dynamodb.get_item(TableName=table, Key={PARTITION_KEY: {"S": request_record_key(request_key)}}).get("Item")
    if not item:
        return {}, []
    return json.loads(item["details"]["S"]), [tuple(pair) for pair in json.loads(item["metrics"]["S"])]
