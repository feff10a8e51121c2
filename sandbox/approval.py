"""Local stand-ins around the approval workflow: registered model versions (as the training pipeline registers
them), the registry's event, the SES outbox, and a scriptable approver's browser. Used by the tests and the demo.

The approval resources themselves are never declared here: they are deployed from the synthesized templates
(sandbox.world). `session` arguments are anything with `.client(service)`: a sandbox.aws.LocalAccount of the
local AWS, or a boto3 Session under in-process moto.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import html
import http.cookiejar
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

from modelgate.chain import Chain
from modelgate.evaluation_report import REPORT_FILE
from modelgate.registry import REGISTERED_BY_KEY, initial_customer_metadata


def register_version(
    session: Any,
    *,
    group: str,
    bucket: str,
    registered_by: str | None,
    chain: Chain,
    evaluation: dict | str | None = None,
) -> str:
    """Register a model version as the training pipeline does (PendingManualApproval, pending in the chain)."""
    sagemaker, s3 = session.client("sagemaker"), session.client("s3")
    with contextlib.suppress(sagemaker.exceptions.ClientError):  # the group exists already
        sagemaker.create_model_package_group(ModelPackageGroupName=group)
    existing = sagemaker.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    number = len(existing) + 1
    # The pipeline's layout (pipelines/registration.py): the version's prefix is its model data and holds its
    # evaluation report, where every environment's approval functions may read it.
    prefix = f"models/{group}/v{number}/"
    report_key = f"{prefix}{REPORT_FILE}"
    body = evaluation if isinstance(evaluation, str) else json.dumps(evaluation or {})
    s3.put_object(Bucket=bucket, Key=report_key, Body=body.encode())
    metadata = initial_customer_metadata(chain)
    if registered_by:
        metadata[REGISTERED_BY_KEY] = registered_by
    return sagemaker.create_model_package(
        ModelPackageGroupName=group,
        ModelPackageDescription=f"{group} version {number}",
        ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={
            "Containers": [{"Image": "triton:local", "ModelDataUrl": f"s3://{bucket}/{prefix}"}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelMetrics={
            "ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": f"s3://{bucket}/{report_key}"}}
        },
        CustomerMetadataProperties=metadata,
    )["ModelPackageArn"]


def registry_event(arn: str, group: str, account: str, region: str) -> dict:
    """The EventBridge event SageMaker emits when a version is registered pending approval."""
    return {
        "version": "0",
        "id": f"event-{arn.rsplit('/', 1)[-1]}",
        "detail-type": "SageMaker Model Package State Change",
        "source": "aws.sagemaker",
        "account": account,
        "time": "2026-11-22T12:00:00Z",
        "region": region,
        "resources": [arn],
        "detail": {
            "ModelPackageGroupName": group,
            "ModelPackageVersion": int(arn.rsplit("/", 1)[-1]),
            "ModelPackageArn": arn,
            "ModelApprovalStatus": "PendingManualApproval",
            "ModelPackageStatus": "Completed",
        },
    }


# -- the SES outbox --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SentEmail:
    sender: str
    recipients: tuple[str, ...]
    subject: str
    text: str
    html: str

    def links(self) -> dict[str, str]:
        """{'approve': url, 'reject': url} as written in the plain-text body."""
        return {action.lower(): url for action, url in re.findall(r"^(Approve|Reject):\s+(\S+)$", self.text, re.M)}


def _raw_messages(account: str, region: str) -> list[tuple[Any, bytes]]:
    """(message, raw MIME bytes) of every raw message sent through moto's SES in this process."""
    from moto.ses.models import ses_backends

    found = []
    for message in ses_backends[account][region].sent_messages:
        raw = getattr(message, "raw_data", None)
        if raw is not None:
            found.append((message, raw.encode() if isinstance(raw, str) else raw))
    return found


def write_outbox(account: str, region: str, directory: Path) -> list[Path]:
    """Every message sent so far as an .eml file (open it in any mail program); returns the new files."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for number, (_, raw) in enumerate(_raw_messages(account, region), start=1):
        subject = str(email.message_from_bytes(raw, policy=email.policy.default)["Subject"] or "")
        path = directory / f"{number:03d}-{re.sub(r'[^A-Za-z0-9]+', '-', subject).strip('-')[:60]}.eml"
        if not path.exists():
            path.write_bytes(raw)
            written.append(path)
    return written


def sent_emails(account: str, region: str) -> list[SentEmail]:
    """Messages sent through moto's SES (in this process: in-process mocks or the local server)."""
    found = []
    for message, raw in _raw_messages(account, region):
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        text = parsed.get_body(preferencelist=("plain",))
        markup = parsed.get_body(preferencelist=("html",))
        found.append(
            SentEmail(
                sender=str(parsed["From"]),
                recipients=tuple(message.destinations) if message.destinations else (str(parsed["To"]),),
                subject=str(parsed["Subject"]),
                text=text.get_content() if text else "",
                html=markup.get_content() if markup else "",
            )
        )
    return found


# -- a scriptable approver's browser ---------------------------------------------------------------------------
class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": values.get("action", ""), "method": values.get("method", "get"), "fields": {}})
        elif tag in ("input", "button", "textarea") and self.forms and values.get("name"):
            if tag != "button":
                self.forms[-1]["fields"][values["name"]] = values.get("value", "")
            else:
                self.forms[-1].setdefault("buttons", {})[values["name"]] = values.get("value", "")


@dataclass
class Page:
    status: int
    url: str
    html: str
    forms: list[dict] = field(default_factory=list)

    def text(self) -> str:
        """The visible text, tags and styles removed, entities decoded."""
        visible = re.sub(r"<(style|script)[^>]*>.*?</\1>", " ", self.html, flags=re.S)
        return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", visible))).strip()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class ApproverBrowser:
    """A cookie-keeping HTTP client that follows redirects and signs in at the local IdP as `username`."""

    def __init__(self, username: str | None = None) -> None:
        self.username = username
        self.cookies = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect)
        self.requests: list[tuple[str, str, int]] = []  # (method, url, status)

    def _request(self, method: str, url: str, data: dict[str, str] | None = None, headers: dict | None = None):
        body = urlencode(data).encode() if data is not None else None
        if not url.startswith("http://127.0.0.1"):
            raise ValueError(f"the local approver's browser only talks to loopback stand-ins, not {url}")
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
        if body is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            response = self._opener.open(request, timeout=120)  # a bound for a hung server, not a timing guess
            status, content, location = response.status, response.read(), response.headers.get("Location")
        except urllib.error.HTTPError as error:
            status, content, location = error.code, error.read(), error.headers.get("Location")
        self.requests.append((method, url, status))
        return status, content.decode(errors="replace"), location

    def _follow(self, method: str, url: str, data: dict[str, str] | None = None, headers: dict | None = None) -> Page:
        for _ in range(10):
            status, content, location = self._request(method, url, data, headers)
            if status in (301, 302, 303) and location:
                url, method, data, headers = urljoin(url, location), "GET", None, None
                continue
            page = Page(status, url, content)
            parser = _Forms()
            parser.feed(content)
            page.forms = parser.forms
            if self._is_sign_in(page):
                return self._sign_in(page)
            return page
        raise RuntimeError(f"too many redirects from {url}")

    @staticmethod
    def _is_sign_in(page: Page) -> bool:
        return page.status == 200 and any(f["action"].endswith("/oauth2/authorize") for f in page.forms)

    def _sign_in(self, page: Page) -> Page:
        if self.username is None:
            return page  # the caller looks at the sign-in page itself
        form = next(f for f in page.forms if f["action"].endswith("/oauth2/authorize"))
        return self._follow("POST", urljoin(page.url, form["action"]), {**form["fields"], "username": self.username})

    def open(self, url: str) -> Page:
        return self._follow("GET", url)

    def submit(self, page: Page, overrides: dict[str, str] | None = None, form_index: int = 0) -> Page:
        form = page.forms[form_index]
        origin = re.match(r"^https?://[^/]+", page.url).group(0)
        return self._follow(
            "POST", urljoin(page.url, form["action"]), {**form["fields"], **(overrides or {})}, {"Origin": origin}
        )

    def post(self, url: str, data: dict[str, str], headers: dict | None = None) -> Page:
        return self._follow("POST", url, data, headers)
