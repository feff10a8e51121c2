"""The AWS clients and clock one approval function works with, bundled so handlers build them once per
container and tests pass moto-backed ones."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3

from modelgate.approval.sealed import KmsMacSigner, MacSigner
from modelgate.approval.settings import ApprovalSettings


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 UTC with microseconds: sorts lexicographically in time order (history keys rely on it)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _LazyClient:
    """A boto3 client created on first use: a cold Lambda only pays for the clients its request needs.

    Client creation is serialised because a boto3 Session is not thread-safe (the local API stand-in serves
    requests on threads; clients themselves are).
    """

    _creating = threading.Lock()

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            with _LazyClient._creating:
                if self._client is None:
                    self._client = self._factory()
        return getattr(self._client, name)


@dataclass
class Services:
    settings: ApprovalSettings
    sagemaker: Any  # in the registry's region (account: through the group's resource policy)
    dynamodb: Any
    ssm: Any
    ses: Any
    s3: Any
    events: Any
    signer: MacSigner
    clock: Callable[[], datetime] = utc_now
    local_sagemaker: Any = None  # this environment's region (transform jobs); defaults to `sagemaker`

    def __post_init__(self) -> None:
        if self.local_sagemaker is None:
            self.local_sagemaker = self.sagemaker

    def now(self) -> datetime:
        return self.clock()

    def epoch(self) -> int:
        return int(self.clock().timestamp())

    @classmethod
    def from_environ(cls) -> Services:
        """A Lambda's services: the settings its stack put in its environment, clients from its own session."""
        return cls.from_session(ApprovalSettings.from_environ(), boto3.Session())

    @classmethod
    def from_session(
        cls, settings: ApprovalSettings, session: Any, clock: Callable[[], datetime] = utc_now
    ) -> Services:
        """Clients from a boto3 Session (the Lambda's, or the CLI's)."""

        def lazy(service: str, **kwargs: Any) -> Any:
            return _LazyClient(lambda: session.client(service, **kwargs))

        return cls(
            settings=settings,
            sagemaker=lazy("sagemaker", region_name=settings.registry_region),
            dynamodb=lazy("dynamodb"),
            ssm=lazy("ssm"),
            ses=lazy("ses"),
            s3=lazy("s3"),
            events=lazy("events"),
            signer=KmsMacSigner(lazy("kms"), settings.signing_key_id),
            clock=clock,
            local_sagemaker=lazy("sagemaker"),
        )
