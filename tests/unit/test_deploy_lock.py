"""Serving deploys of one environment never overlap (issue 12, problem 6: no reserved concurrency; a lease)."""

from __future__ import annotations

import threading

import boto3
import pytest
from moto import mock_aws

from modelgate.serving.deploy_lock import PARTITION_KEY, DeployBusy, DeployLock

TABLE = "deploy-locks"
GUARD_SECONDS = 60  # only bounds a broken run; the passing path never waits on it


@pytest.fixture
def dynamodb():
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": PARTITION_KEY, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client


def test_two_concurrent_deploys_of_one_environment_run_one_after_the_other(dynamodb):
    lock = DeployLock(TABLE, "repo/dev", lease_seconds=900)
    log: list[str] = []
    first_inside, second_waiting, first_done = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first():
        with lock.held(dynamodb, "first", seconds_left=lambda: 900):
            log.append("first: start")
            first_inside.set()
            # Stay inside until the second run has found the lease taken (without a lease it never does).
            second_waiting.wait(GUARD_SECONDS)
            log.append("first: end")
        first_done.set()

    def waiting(_seconds: float) -> None:
        second_waiting.set()
        first_done.wait(GUARD_SECONDS)

    def second():
        first_inside.wait(GUARD_SECONDS)
        with lock.held(dynamodb, "second", seconds_left=lambda: 900, wait=waiting):
            log.append("second: start")
            log.append("second: end")

    def run(target):
        try:
            target()
        except BaseException as error:  # surfaced below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(t,)) for t in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert log == ["first: start", "first: end", "second: start", "second: end"]
    assert "Item" not in dynamodb.get_item(TableName=TABLE, Key={PARTITION_KEY: {"S": "repo/dev"}})


def test_a_waiter_out_of_time_raises_busy_so_lambda_retries_the_event(dynamodb):
    lock = DeployLock(TABLE, "repo/dev", lease_seconds=900)
    assert lock.try_acquire(dynamodb, "holder", now=1_000)
    waits: list[float] = []
    held = lock.held(dynamodb, "late", seconds_left=lambda: 20, clock=lambda: 1_010, wait=waits.append)
    with pytest.raises(DeployBusy, match="retried"), held:
        pytest.fail("entered while another run held the lease")
    assert waits == []
    item = dynamodb.get_item(TableName=TABLE, Key={PARTITION_KEY: {"S": "repo/dev"}})["Item"]
    assert item["owner"] == {"S": "holder"}, "the waiter must not release someone else's lease"


def test_the_lease_of_a_run_killed_by_its_timeout_expires(dynamodb):
    lock = DeployLock(TABLE, "repo/dev", lease_seconds=900)
    assert lock.try_acquire(dynamodb, "killed", now=1_000)
    assert not lock.try_acquire(dynamodb, "next", now=1_899)
    assert lock.try_acquire(dynamodb, "next", now=1_901)


def test_a_failed_deploy_gives_the_lease_back(dynamodb):
    lock = DeployLock(TABLE, "repo/dev", lease_seconds=900)
    with pytest.raises(RuntimeError), lock.held(dynamodb, "failing", seconds_left=lambda: 900):
        raise RuntimeError("copy failed")
    assert lock.try_acquire(dynamodb, "next", now=0)


def test_environments_do_not_block_each_other(dynamodb):
    assert DeployLock(TABLE, "repo/dev", 900).try_acquire(dynamodb, "a", now=0)
    assert DeployLock(TABLE, "repo/test", 900).try_acquire(dynamodb, "b", now=0)
