"""An AWS stand-in on loopback: moto's server mode, one account and region, for the demo and integration tests.

Every client made through `LocalAws.client()` — and every process started with `LocalAws.environ()` (e.g. the
local Lambda workers) — talks to it instead of AWS. Real code needs no change: boto3 honours AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class LocalAws:
    def __init__(self, account: str, region: str) -> None:
        self.account = account
        self.region = region
        self._server: ThreadedMotoServer | None = None
        self._previous_account: str | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("local AWS is not started (use it as a context manager)")
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def environ(self, **overrides: str) -> dict[str, str]:
        """Environment variables that point AWS SDKs at this stand-in."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": _CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": _CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            **overrides,
        }

    def session(self) -> boto3.Session:
        return boto3.Session(region_name=self.region, **_CREDENTIALS)

    def client(self, service: str, **kwargs: Any):
        return self.session().client(service, endpoint_url=kwargs.pop("endpoint_url", self.url), **kwargs)

    def __enter__(self) -> LocalAws:
        # Request logs and "no CloudFormation support for X" notes: sandbox.cloudformation reports skips itself.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        logging.getLogger("moto.cloudformation.parsing").setLevel(logging.ERROR)
        warnings.filterwarnings(
            "ignore", message="Tried to parse .* but it's not supported by moto", category=UserWarning
        )
        # moto reads the account of new resources from MOTO_ACCOUNT_ID; make ARNs carry the configured account.
        self._previous_account = os.environ.get("MOTO_ACCOUNT_ID")
        os.environ["MOTO_ACCOUNT_ID"] = self.account
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._previous_account is None:
            os.environ.pop("MOTO_ACCOUNT_ID", None)
        else:
            os.environ["MOTO_ACCOUNT_ID"] = self._previous_account
