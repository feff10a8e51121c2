"""The decision history: append-only, complete, in order, for any number of decisions.

One DynamoDB item per decision in the history table of the environment that decided (partition key: the model
package group; sort key: `decision_id` = decision time (ISO 8601, microseconds, UTC) + `#` + link token id, so
a query returns decisions in time order and two decisions never share a key). A `by-version` index answers
"what happened to version N". Items are only ever created with a conditional put; no ModelGate role may
update or delete them (the table is retained, point-in-time recovery on). SSM keeps only the last 100 versions
of a parameter, and the registry only the current state: this table is the history.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

PARTITION_KEY = "model_package_group"
SORT_KEY = "decision_id"
VERSION_INDEX = "by-version"
VERSION_INDEX_KEY = "group_version"


@dataclass(frozen=True)
class Decision:
    model_package_group: str
    decision_id: str
    model_version: int
    model_package_arn: str
    action: str  # approve | reject
    state: str  # Approved | Rejected | PendingManualApproval (an approval short of the quorum)
    from_environment: str  # the environment that approved it before, or "registry" for the chain's first
    to_environment: str
    decided_by: str  # e-mail address of the signed-in approver
    decided_by_subject: str  # the identity provider's stable subject id
    decided_at: str  # ISO 8601 UTC
    reason: str
    request_id: str
    link_token_id: str
    link_recipient: str
    model: str = ""  # the model's name in the config (entries before many-model platforms: empty)
    # With a quorum above 1: "1 of 2" for an approval that counts towards it (state still pending), "2 of 2" for
    # the one that completes it (state Approved); empty with a quorum of 1.
    progress: str = ""

    @staticmethod
    def make_id(decided_at: str, token_id: str) -> str:
        return f"{decided_at}#{token_id}"

    def to_item(self) -> dict[str, dict[str, str]]:
        item = {name: {"S": str(value)} for name, value in asdict(self).items() if name != "model_version"}
        item["model_version"] = {"N": str(self.model_version)}
        item[VERSION_INDEX_KEY] = {"S": f"{self.model_package_group}#{self.model_version}"}
        return item

    @classmethod
    def from_item(cls, item: Mapping[str, Mapping[str, str]]) -> Decision:
        values: dict[str, Any] = {}
        for spec in fields(cls):
            cell = item.get(spec.name, {})
            values[spec.name] = int(cell["N"]) if spec.name == "model_version" else cell.get("S", "")
        return cls(**values)


def history_put(table: str, decision: Decision) -> dict:
    """PutItem arguments that append `decision`, failing if its id exists: history is never overwritten."""
    return {
        "TableName": table,
        "Item": decision.to_item(),
        "ConditionExpression": "attribute_not_exists(#sk)",
        "ExpressionAttributeNames": {"#sk": SORT_KEY},
    }


def put_request(table: str, decision: Decision) -> dict:
    """The TransactWriteItems entry that appends `decision`."""
    return {"Put": history_put(table, decision)}


def iter_history(
    dynamodb: Any, table: str, group: str, *, version: int | None = None, page_size: int = 500
) -> Iterator[Decision]:
    """Every decision for `group` (or one version of it), oldest first, following DynamoDB pagination."""
    if version is None:
        query = {
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": PARTITION_KEY},
            "ExpressionAttributeValues": {":pk": {"S": group}},
        }
    else:
        query = {
            "IndexName": VERSION_INDEX,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": VERSION_INDEX_KEY},
            "ExpressionAttributeValues": {":pk": {"S": f"{group}#{version}"}},
        }
    start: dict | None = None
    while True:
        page = dynamodb.query(
            TableName=table,
            ScanIndexForward=True,
            Limit=page_size,
            **query,
            **({"ExclusiveStartKey": start} if start else {}),
        )
        for item in page.get("Items", []):
            yield Decision.from_item(item)
        start = page.get("LastEvaluatedKey")
        if not start:
            return


def read_history(dynamodb: Any, table: str, group: str, *, version: int | None = None) -> list[Decision]:
    return list(iter_history(dynamodb, table, group, version=version))
