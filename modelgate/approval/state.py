"""The approval state table: who used which link, which (version, environment) is decided, which e-mails went out.

"Exactly one" comes from DynamoDB conditional writes, never from reading first:
- a decision is committed by ONE transaction that (1) marks the link token used, (2) creates the
  `decision#<group>#<version>#<env>` item and (3) appends the history entry, each conditional on not existing.
  A double-click fails (1), a second approver fails (2); the history entry exists iff the decision does.
- with a quorum of N, each approval is its own transaction: the link, the person's `vote#...` items (by
  subject and by e-mail: nobody counts twice), the `approvals#<group>#<version>#<env>` tally conditional on the
  count it was checked against (concurrent approvals: one wins, the other re-reads and is counted next), and
  its history entry; only the approval that makes the count N also creates the decision item (2), so the
  transition happens once. One rejection decides (creates the decision item) whatever the count.
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


def tally_key(group: str, version: int, environment: str) -> str:
    return f"approvals#{group}#{version}#{environment}"


def vote_key(group: str, version: int, environment: str, kind: str, who: str) -> str:
    """One person's approval of (version, environment), by identity-provider subject or by e-mail address."""
    return f"vote#{group}#{version}#{environment}#{kind}:{who}"


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


@dataclass(frozen=True)
class Approvals:
    """The approvals a (version, environment) has collected towards its quorum (before the decision)."""

    count: int = 0
    approvers: tuple[str, ...] = ()  # display names (e-mail addresses), in the order they approved
    subjects: tuple[str, ...] = ()  # their identity providers' subjects

    def includes(self, subject: str, email: str) -> bool:
        return subject in self.subjects or email.lower() in {a.lower() for a in self.approvers}


def approvals(dynamodb: Any, table: str, group: str, version: int, environment: str) -> Approvals:
    item = dynamodb.get_item(
        TableName=table, Key={PARTITION_KEY: {"S": tally_key(group, version, environment)}}, ConsistentRead=True
    ).get("Item")
    if not item:
        return Approvals()
    return Approvals(
        int(item["count"]["N"]),
        tuple(v["S"] for v in item.get("approvers", {}).get("L", [])),
        tuple(v["S"] for v in item.get("subjects", {}).get("L", [])),
    )


def own_vote(dynamodb: Any, table: str, decision_group: str, version: int, environment: str, subject: str):
    """The approval (a RecordedDecision) `subject` gave towards the quorum of (version, environment), if any."""
    item = dynamodb.get_item(
        TableName=table,
        Key={PARTITION_KEY: {"S": vote_key(decision_group, version, environment, "sub", subject)}},
        ConsistentRead=True,
    ).get("Item")
    return _decision_from_state_item(item) if item else None


class AlreadyApproved(Exception):
    """This person already gave one of the approvals of this (version, environment)."""


class _TallyChanged(Exception):
    """Another approval was counted since the tally was read: read it again and retry."""


def commit_decision(
    dynamodb: Any,
    *,
    state_table: str,
    history_table: str,
    decision: Decision,
    link_expires_at: int,
    quorum: int = 1,
    seen: Approvals | None = None,
) -> None:
    """Atomically: use the link, count the approval (or decide), append the history entry.

    A rejection, or the approval that completes the quorum (`seen` = the tally this approval was checked
    against), creates the decision item: only one request can. An approval short of the quorum only adds itself
    to the tally (conditional on the tally being still `seen`, so concurrent approvals are each counted once)
    and checks that nobody decided meanwhile. Raises LinkAlreadyUsed, AlreadyDecided, AlreadyApproved (nothing
    written) or _TallyChanged (nothing written: read the tally again).
    """
    seen = seen or Approvals()
    link_item = {
        PARTITION_KEY: {"S": link_key(decision.link_token_id)},
        "used_by": {"S": decision.decided_by},
        "used_at": {"S": decision.decided_at},
        TTL_ATTRIBUTE: {"N": str(link_expires_at + 86_400)},  # expired links are refused anyway
    }
    group, version, environment = decision.model_package_group, decision.model_version, decision.to_environment
    decision_pk = {"S": decision_key(group, version, environment)}
    condition = {"ConditionExpression": "attribute_not_exists(pk)", "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
    approving = decision.action == "approve"
    final = not approving or seen.count + 1 >= quorum
    if final:
        decides = {
            "Put": {
                "TableName": state_table,
                "Item": {**decision.to_item(), PARTITION_KEY: decision_pk, "status": {"S": RECORDED}},
                **condition,
            }
        }
    else:  # (IAM: a transaction's ConditionCheck needs dynamodb:ConditionCheckItem on the state table)
        decides = {"ConditionCheck": {"TableName": state_table, "Key": {PARTITION_KEY: decision_pk}, **condition}}
    items = [{"Put": {"TableName": state_table, "Item": link_item, **condition}}, decides]
    if approving:
        tally = {
            PARTITION_KEY: {"S": tally_key(group, version, environment)},
            "count": {"N": str(seen.count + 1)},
            "approvers": {"L": [{"S": a} for a in (*seen.approvers, decision.decided_by)]},
            "subjects": {"L": [{"S": s} for s in (*seen.subjects, decision.decided_by_subject)]},
        }
        tally_condition = (
            {"ConditionExpression": "attribute_not_exists(pk)"}
            if seen.count == 0
            else {
                "ConditionExpression": "#c = :seen",
                "ExpressionAttributeNames": {"#c": "count"},
                "ExpressionAttributeValues": {":seen": {"N": str(seen.count)}},
            }
        )
        vote = {**decision.to_item(), "status": {"S": RECORDED if final else APPLIED}}
        items += [
            {"Put": {"TableName": state_table, "Item": tally, **tally_condition}},
            {
                "Put": {
                    "TableName": state_table,
                    "Item": {
                        **vote,
                        PARTITION_KEY: {"S": vote_key(group, version, environment, "sub", decision.decided_by_subject)},
                    },
                    **condition,
                }
            },
            {
                "Put": {
                    "TableName": state_table,
                    "Item": {
                        **vote,
                        PARTITION_KEY: {
                            "S": vote_key(group, version, environment, "email", decision.decided_by.lower())
                        },
                    },
                    **condition,
                }
            },
        ]
    items.append(history.put_request(history_table, decision))
    try:
        dynamodb.transact_write_items(TransactItems=items)
    except dynamodb.exceptions.TransactionCanceledException as error:
        reasons = error.response.get("CancellationReasons") or []
        codes = [reason.get("Code") for reason in reasons]
        failed = [index for index, code in enumerate(codes) if code == "ConditionalCheckFailed"]
        if 0 in failed:
            used = reasons[0].get("Item") or {}
            raise LinkAlreadyUsed(
                used.get("used_by", {}).get("S", "?"), used.get("used_at", {}).get("S", "?")
            ) from None
        if 1 in failed:
            existing = dynamodb.get_item(
                TableName=state_table, Key={PARTITION_KEY: decision_pk}, ConsistentRead=True
            ).get("Item")
            if existing:
                raise AlreadyDecided(_decision_from_state_item(existing)) from None
        if 3 in failed or 4 in failed:
            raise AlreadyApproved(decision.decided_by) from None
        if 2 in failed:
            raise _TallyChanged() from None
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
def request_key_of(group: str, model_package_arn: str, environment: str, request_id: str) -> str:
    """A request's key; links carry (group, ARN, environment, request id), so pages find the request again."""
    return f"{group}#{model_package_arn}#{environment}#{request_id}"


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
