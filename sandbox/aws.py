"""An AWS stand-in on loopback: moto's server mode, for the demo and integration tests.

Several AWS accounts live in the one server (dev, test, uat, prod may each have their own): `LocalAws.account(id)`
creates an IAM access key in that account, and moto attributes every request signed with it to that account,
as AWS does. Real code needs no change: boto3 honours AWS_ENDPOINT_URL and the credentials in its environment.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.request
import warnings
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

_BOOTSTRAP_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _accept_current_instance_types() -> None:
    """moto 5.2's endpoint-config validation lists instance types up to ml.g4dn: also accept the ones our config
    validates (modelgate.instance_types: g5, g6, p4d, p5...), so a template with ml.g5.xlarge deploys locally."""
    from moto.sagemaker.models import FakeEndpointConfig

    from modelgate.instance_types import ALL_INSTANCE_TYPES

    original = FakeEndpointConfig.validate_instance_type
    if getattr(original, "modelgate", False):
        return

    def validate_instance_type(self: FakeEndpointConfig, instance_type: str) -> None:
        if instance_type not in ALL_INSTANCE_TYPES:
            original(self, instance_type)

    validate_instance_type.modelgate = True  # type: ignore[attr-defined]
    FakeEndpointConfig.validate_instance_type = validate_instance_type


class LocalAccount:
    """One account of the stand-in: sessions, clients and process environments signed as that account."""

    def __init__(self, aws: LocalAws, account: str, access_key: str, secret_key: str) -> None:
        self.aws = aws
        self.account = account
        self.region = aws.region
        self._credentials = {"aws_access_key_id": access_key, "aws_secret_access_key": secret_key}

    @property
    def url(self) -> str:
        return self.aws.url

    def environ(self, **overrides: str) -> dict[str, str]:
        """Environment variables that point AWS SDKs at this account of the stand-in."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self._credentials["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": self._credentials["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            **overrides,
        }

    def session(self) -> boto3.Session:
        return boto3.Session(region_name=self.region, **self._credentials)

    def client(self, service: str, **kwargs: Any):
        return self.session().client(service, endpoint_url=kwargs.pop("endpoint_url", self.url), **kwargs)


class LocalAws:
    def __init__(self, region: str) -> None:
        self.region = region
        self._server: ThreadedMotoServer | None = None
        self._accounts: dict[str, LocalAccount] = {}

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("local AWS is not started (use it as a context manager)")
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def account(self, account: str) -> LocalAccount:
        if account not in self._accounts:
            iam = boto3.client("iam", region_name=self.region, endpoint_url=self.url, **_BOOTSTRAP_CREDENTIALS)

            def in_account(request, **_: Any) -> None:
                request.headers["x-moto-account-id"] = account

            iam.meta.events.register("before-sign.iam.*", in_account)
            # moto's backends are per process: an earlier LocalAws of this process may have made the user.
            with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
                iam.create_user(UserName="modelgate-local")
            key = iam.create_access_key(UserName="modelgate-local")["AccessKey"]
            self._accounts[account] = LocalAccount(self, account, key["AccessKeyId"], key["SecretAccessKey"])
        return self._accounts[account]

    def __enter__(self) -> LocalAws:
        # Request logs and "no CloudFormation support for X" notes: sandbox.cloudformation reports skips itself.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        logging.getLogger("moto.cloudformation.parsing").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", message="Tried to parse .* not supported by moto", category=UserWarning)
        _accept_current_instance_types()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        # moto keeps its backends per process, not per server: start from nothing, whatever ran here before.
        self._reset()
        return self

    def _reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=30):  # noqa: S310 - our own http://127.0.0.1 server
            pass

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._reset()  # leave nothing behind for the next stand-in in this process
            self._server.stop()
            self._server = None
        self._accounts.clear()
