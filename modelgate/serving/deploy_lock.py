"""One deploy at a time per environment, without reserved Lambda concurrency.

A fresh account may have a Lambda concurrency quota of 10 and Lambda keeps at least that much unreserved, so
`ReservedConcurrentExecutions` can fail a first deploy. Instead each run takes a lease in a DynamoDB table
(a conditional put: free, or the previous holder's lease expired) and gives it back when done (a conditional
delete: only its own). A run that finds the lease taken waits for it; a run can hold it at most for the
function's timeout (the lease's length), so a holder killed by a timeout blocks nobody for longer. A waiter that
runs out of time raises `DeployBusy`: Lambda retries the event, then keeps it in the failure queue (alarmed).
Every run re-reads the approval, so the one that runs last serves the latest approval.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from botocore.exceptions import ClientError

PARTITION_KEY = "lock"
TTL_ATTRIBUTE = "expires_at"  # epoch seconds; also the table's TTL, which removes abandoned leases
POLL_SECONDS = 5.0


class DeployBusy(Exception):
    """Another deploy of this environment held the lease for all of this run's time; retry later."""


@dataclass(frozen=True)
class DeployLock:
    table: str
    name: str  # what is serialised: one environment's model repository
    lease_seconds: int

    def try_acquire(self, dynamodb, owner: str, now: float) -> bool:
        try:
            dynamodb.put_item(
                TableName=self.table,
                Item={
                    PARTITION_KEY: {"S": self.name},
                    "owner": {"S": owner},
                    TTL_ATTRIBUTE: {"N": str(int(now) + self.lease_seconds)},
                },
                ConditionExpression="attribute_not_exists(#k) OR #e < :now",
                ExpressionAttributeNames={"#k": PARTITION_KEY, "#e": TTL_ATTRIBUTE},
                ExpressionAttributeValues={":now": {"N": str(int(now))}},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def release(self, dynamodb, owner: str) -> None:
        try:
            dynamodb.delete_item(
                TableName=self.table,
                Key={PARTITION_KEY: {"S": self.name}},
                ConditionExpression="#o = :owner",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            # Our lease expired and someone else holds it now: theirs to release.

    @contextmanager
    def held(
        self,
        dynamodb,
        owner: str,
        *,
        seconds_left: Callable[[], float],
        clock: Callable[[], float] = time.time,
        wait: Callable[[float], object] = time.sleep,
        margin_seconds: float = 30.0,
    ) -> Iterator[None]:
        """Hold the lease for the `with` body; wait while another run holds it, as long as `seconds_left()`
        minus `margin_seconds` allows, then raise DeployBusy."""
        while not self.try_acquire(dynamodb, owner, clock()):
            if seconds_left() - POLL_SECONDS <= margin_seconds:
                raise DeployBusy(
                    f"another deploy of {self.name} still holds the lease in {self.table}; "
                    "this event is retried (then kept in the failure queue)"
                )
            wait(POLL_SECONDS)
        try:
            yield
        finally:
            self.release(dynamodb, owner)
