"""An AWS stand-in on loopback: moto's server mode, for the demo and integration tests.

Several AWS accounts live in the one server (dev, test, uat, prod may each have their own): `LocalAws.account(id)`
creates an IAM user with an access key in that account (the operator: allowed everything), and moto attributes
every request signed with it to that account, as AWS does. Real code needs no change: boto3 honours
AWS_ENDPOINT_URL and the credentials in its environment.

IAM is enforced (sandbox/iam.py): `LocalAccount.assume(role_arn, service)` plays the AWS service that runs code
with a role (Lambda, SageMaker): it checks that the role trusts that service, assumes it through the local STS
and returns the account as that role, so a function or a job can do exactly what its role's policies allow.
"""

from __future__ import annotations

import email
import logging
import threading
import urllib.request
import warnings
from typing import Any

import boto3
import botocore.loaders
import botocore.session
from moto.server import ThreadedMotoServer

from sandbox import iam as local_iam

OPERATOR = "modelgate-local"
# Service models read once per process, not once per session: a fresh Session loads each client's JSON models
# again (~0.2 s a client), which dominated deploying a stage and every role-assumed function's first calls.
_LOADER = botocore.loaders.create_loader()


class RoleNotAssumable(Exception):
    """A service was asked to run code with a role whose trust policy does not name that service."""


def _accept_current_instance_types() -> None:
    """moto 5.2's endpoint-config validation lists instance types up to ml.g4dn: also accept the ones our config
    validates (infra.instance_types: g5, g6, p4d, p5...), so a template with ml.g5.xlarge deploys locally."""
    from moto.sagemaker.models import FakeEndpointConfig

    from infra.instance_types import ALL_INSTANCE_TYPES

    original = FakeEndpointConfig.validate_instance_type
    if getattr(original, "modelgate", False):
        return

    def validate_instance_type(self: FakeEndpointConfig, instance_type: str) -> None:
        if instance_type not in ALL_INSTANCE_TYPES:
            original(self, instance_type)

    validate_instance_type.modelgate = True  # type: ignore[attr-defined]
    FakeEndpointConfig.validate_instance_type = validate_instance_type


def _ses_envelope_is_destinations() -> None:
    """SendRawEmail with `Destinations` delivers to those addresses only (the envelope; the To/Cc headers are then
    not read: a Bcc is simply a destination missing from the headers). moto 5 adds the headers' addresses to the
    given Destinations, so a mail sent to `a` with `To: a` was recorded with recipients (a, a). Here it keeps the
    headers only when no Destinations are given, as SES does."""
    from moto.ses.models import SESBackend

    original = SESBackend.send_raw_email
    if getattr(original, "modelgate", False):
        return

    def send_raw_email(self: SESBackend, source: str, destinations: list[str], raw_data: str):
        if not destinations:
            return original(self, source, destinations, raw_data)
        without_headers = email.message_from_string(raw_data)
        for header in ("To", "Cc", "Bcc"):
            del without_headers[header]
        message = original(self, source, list(destinations), without_headers.as_string())
        message.raw_data = raw_data  # what was sent, headers included
        return message

    send_raw_email.modelgate = True  # type: ignore[attr-defined]
    SESBackend.send_raw_email = send_raw_email


class LocalAccount:
    """One account of the stand-in: sessions, clients and process environments signed as that account."""

    def __init__(
        self, aws: LocalAws, account: str, access_key: str, secret_key: str, session_token: str | None = None
    ) -> None:
        self.aws = aws
        self.account = account
        self.region = aws.region
        self._credentials = {"aws_access_key_id": access_key, "aws_secret_access_key": secret_key}
        if session_token:
            self._credentials["aws_session_token"] = session_token
        self._session: boto3.Session | None = None
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()  # boto3 clients are thread-safe; making them from one Session is not

    @property
    def url(self) -> str:
        return self.aws.url

    def environ(self, **overrides: str) -> dict[str, str]:
        """Environment variables that point AWS SDKs at this account of the stand-in."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self._credentials["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": self._credentials["aws_secret_access_key"],
            **(
                {"AWS_SESSION_TOKEN": self._credentials["aws_session_token"]}
                if "aws_session_token" in self._credentials
                else {}
            ),
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            **overrides,
        }

    def assume(self, role_arn: str, service: str, session_name: str = "local") -> LocalAccount:
        """This account as `role_arn`, the way `service` (e.g. lambda.amazonaws.com) runs code with it. Refuses,
        as the service would, a role whose trust policy does not let that service assume it."""
        role_name = role_arn.rsplit("/", 1)[-1]
        role = self.client("iam").get_role(RoleName=role_name)["Role"]
        if not local_iam.trusts(role["AssumeRolePolicyDocument"], service):
            raise RoleNotAssumable(f"{service} cannot assume {role_arn}: its trust policy does not name {service}")
        credentials = self.client("sts").assume_role(RoleArn=role["Arn"], RoleSessionName=session_name[:64])[
            "Credentials"
        ]
        return LocalAccount(
            self.aws,
            self.account,
            credentials["AccessKeyId"],
            credentials["SecretAccessKey"],
            credentials["SessionToken"],
        )

    def session(self) -> boto3.Session:
        core = botocore.session.Session()
        core.register_component("data_loader", _LOADER)
        return boto3.Session(region_name=self.region, botocore_session=core, **self._credentials)

    def client(self, service: str, **kwargs: Any):
        """A client of the stand-in signed as this account (the same one for the same service: clients are
        thread-safe and cheap to share; options other than endpoint_url make a new one)."""
        endpoint = kwargs.pop("endpoint_url", self.url)
        if kwargs:
            return self.session().client(service, endpoint_url=endpoint, **kwargs)
        with self._lock:
            if (service, endpoint) not in self._clients:
                if self._session is None:
                    self._session = self.session()
                self._clients[(service, endpoint)] = self._session.client(service, endpoint_url=endpoint)
            return self._clients[(service, endpoint)]


class LocalAws:
    def __init__(self, region: str, *, enforce_iam: bool = True) -> None:
        self.region = region
        self.enforce_iam = enforce_iam
        self._enforcing: local_iam.Enforcing | None = None
        self._server: ThreadedMotoServer | None = None
        self._accounts: dict[str, LocalAccount] = {}

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("local AWS is not started (use it as a context manager)")
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def account(self, account: str) -> LocalAccount:
        """The account's operator: an IAM user allowed everything (made in moto's backend directly, as an account
        owner's first user is made outside IAM's API)."""
        if account not in self._accounts:
            from moto.iam.models import iam_backends

            backend = iam_backends[account]["aws"]
            # moto's backends are per process: an earlier LocalAws of this process may have made the user.
            if OPERATOR not in backend.users:
                backend.create_user(self.region, OPERATOR)
            backend.put_user_policy(OPERATOR, "operator", local_iam.ADMIN_POLICY)
            key = backend.create_access_key(OPERATOR)
            self._accounts[account] = LocalAccount(self, account, key.access_key_id, key.secret_access_key)
        return self._accounts[account]

    def __enter__(self) -> LocalAws:
        # Request logs and "no CloudFormation support for X" notes: sandbox.cloudformation reports skips itself.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        logging.getLogger("moto.cloudformation.parsing").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", message="Tried to parse .* not supported by moto", category=UserWarning)
        _accept_current_instance_types()
        _ses_envelope_is_destinations()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        # moto keeps its backends per process, not per server: start from nothing, whatever ran here before.
        self._reset()
        local_iam.DENIALS.clear()  # refusals of this world only
        if self.enforce_iam:
            self._enforcing = local_iam.Enforcing().__enter__()
        return self

    def _reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=30):  # noqa: S310 - our own http://127.0.0.1 server
            pass

    def __exit__(self, *exc: object) -> None:
        if self._enforcing is not None:
            self._enforcing.__exit__()
            self._enforcing = None
        if self._server is not None:
            self._reset()  # leave nothing behind for the next stand-in in this process
            self._server.stop()
            self._server = None
        self._accounts.clear()
