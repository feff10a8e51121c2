"""Pure logic of the approval workflow: token format, event parsing, rules, e-mail, HTTP plumbing."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from modelgate.approval import links
from modelgate.approval.emails import render
from modelgate.approval.events import (
    ApprovalRequest,
    EventFormatError,
    parse_inference_event,
    parse_request_event,
    promotion_entry,
)
from modelgate.approval.model_versions import Evaluation, ModelVersion, check_model_package_arn, flatten_metrics
from modelgate.approval.registrant import Registrant
from modelgate.approval.rules import NotEligible, check_eligible
from modelgate.approval.sealed import SealBroken, peek, seal, unseal
from modelgate.approval.signin import approver_from_claims
from modelgate.approval.web import HttpRequest, read_cookies, same_origin, set_cookie
from modelgate.chain import Chain
from modelgate.function_settings import TASK_ROOT
from modelgate.registry import customer_metadata

ARN = "arn:aws:sagemaker:eu-west-1:222222222222:model-package/energy-forecast/3"
CHAIN = Chain(("dev", "test", "uat", "prod"))  # these tests' chain: any names would do (the code takes them)


class LocalHmac:
    """A stand-in for the KMS HMAC key (same contract: sign/verify bytes)."""

    def __init__(self, key: bytes = b"k" * 32) -> None:
        self.key = key

    def sign(self, message: bytes) -> bytes:
        return hmac.new(self.key, message, hashlib.sha256).digest()

    def verify(self, message: bytes, mac: bytes) -> bool:
        return hmac.compare_digest(self.sign(message), mac)


def issue(action="approve", env="dev", now=1_000, ttl=3600):
    return links.issue(
        LocalHmac(), request_id="r", model_package_group="energy-forecast", model_package_arn=ARN,
        environment=env, action=action,
        recipient="a@example.com", now=now, ttl_seconds=ttl,
    )  # fmt: skip


def test_a_link_round_trips_and_binds_every_claim():
    token, claims = issue()
    read = links.read(token, LocalHmac(), now=1_500, environment="dev", action="approve")
    assert read == claims
    assert read.model_package_arn == ARN
    assert read.model_package_group == "energy-forecast"
    assert read.version == 3
    assert read.recipient == "a@example.com"


def test_a_link_of_the_format_before_groups_is_refused_as_malformed():
    """Links name their model package group (format 2): a format-1 link could be for any group."""
    _, claims = issue()
    payload = {**claims.to_payload(), "v": 1}
    del payload["grp"]
    with pytest.raises(links.LinkRefused) as refused:
        links.read(
            seal(links.PURPOSE, payload, LocalHmac()), LocalHmac(), now=1_500, environment="dev", action="approve"
        )
    assert refused.value.reason == "malformed"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda t: t[:-3], "forged"),
        (lambda t: "x" + t, "forged"),
        (lambda t: "nonsense", "forged"),
        (lambda t: "", "forged"),
    ],
)
def test_altered_links_are_refused(mutate, reason):
    token, _ = issue()
    with pytest.raises(links.LinkRefused) as refused:
        links.read(mutate(token), LocalHmac(), now=1_500, environment="dev", action="approve")
    assert refused.value.reason == reason


def test_a_link_signed_with_another_key_or_for_another_purpose_is_refused():
    token, claims = issue()
    with pytest.raises(links.LinkRefused, match="not issued by ModelGate"):
        links.read(token, LocalHmac(b"o" * 32), now=1_500, environment="dev", action="approve")
    csrf_sealed = seal("csrf", claims.to_payload(), LocalHmac())  # same key, other purpose
    with pytest.raises(links.LinkRefused):
        links.read(csrf_sealed, LocalHmac(), now=1_500, environment="dev", action="approve")


def test_expiry_environment_and_action_are_checked_after_the_signature():
    token, _ = issue(now=1_000, ttl=60)
    for kwargs, reason in (
        ({"now": 1_060, "environment": "dev", "action": "approve"}, "expired"),
        ({"now": 1_010, "environment": "test", "action": "approve"}, "wrong_environment"),
        ({"now": 1_010, "environment": "dev", "action": "reject"}, "wrong_action"),
    ):
        with pytest.raises(links.LinkRefused) as refused:
            links.read(token, LocalHmac(), **kwargs)
        assert refused.value.reason == reason
        assert refused.value.claims is not None


def test_sealed_values_refuse_bad_shapes_and_peek_never_verifies():
    with pytest.raises(SealBroken):
        unseal("link", "a.b.c", LocalHmac())
    with pytest.raises(SealBroken):
        unseal("link", "x" * 5000, LocalHmac())
    token, _ = issue(env="uat")
    assert peek(token)["env"] == "uat"
    assert links.unverified_environment(token, CHAIN) == "uat"
    assert links.unverified_environment(token, Chain(("a", "b"))) is None, "a name outside the chain is not echoed"
    assert peek("garbage") == {}


def test_registry_and_promotion_events_parse_to_requests():
    registry = {
        "source": "aws.sagemaker",
        "detail-type": "SageMaker Model Package State Change",
        "detail": {"ModelPackageArn": ARN, "ModelApprovalStatus": "PendingManualApproval"},
    }
    request = parse_request_event(registry, CHAIN)
    assert (request.environment, request.request_id, request.source_environment) == ("dev", "registered", None)
    other = Chain(("sandbox", "staging", "live"))
    assert parse_request_event(registry, other).environment == "sandbox", "versions arrive in the chain's first"
    promotion = ApprovalRequest(ARN, "test", "run:1", "dev", "post-inference", "run-1", (("rows", "10"),))
    entry = promotion_entry(promotion, "arn:aws:events:eu-west-1:333333333333:event-bus/default")
    parsed = parse_request_event(
        {"source": entry["Source"], "detail-type": entry["DetailType"], "detail": json.loads(entry["Detail"])}, CHAIN
    )
    assert parsed == promotion


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({}, "no 'detail'"),
        ({"source": "x", "detail-type": "y", "detail": {}}, "unexpected event"),
        (
            {"source": "modelgate.promotion", "detail-type": "ModelGate Promotion Requested", "detail": {}},
            "lacks: model_package_arn, target_environment, request_id",
        ),
        (
            {
                "source": "modelgate.promotion",
                "detail-type": "ModelGate Promotion Requested",
                "detail": {"model_package_arn": ARN, "target_environment": "staging", "request_id": "r"},
            },
            "unknown environment 'staging'",
        ),
    ],
)
def test_malformed_events_are_refused_with_a_clear_message(event, message):
    with pytest.raises(EventFormatError, match=message):
        parse_request_event(event, CHAIN)


def test_inference_events_only_promote_completed_runs():
    assert parse_inference_event(
        {"source": "aws.sagemaker", "detail-type": "SageMaker Transform Job State Change",
         "detail": {"TransformJobName": "j", "TransformJobStatus": "Failed"}}, CHAIN
    ) is None  # fmt: skip
    run = parse_inference_event(
        {"source": "modelgate.inference", "detail-type": "ModelGate Inference Completed",
         "detail": {"run_id": "r1", "environment": "dev", "model_package_arn": ARN, "metrics": {"rows": 3}}}, CHAIN
    )  # fmt: skip
    assert run.metrics == (("rows", "3"),)


def version(**metadata) -> ModelVersion:
    return ModelVersion(
        arn=ARN,
        group="energy-forecast",
        version=3,
        created_at=datetime(2026, 11, 1, tzinfo=UTC),
        approval_status="PendingManualApproval",
        metadata=customer_metadata(
            None,
            extra={
                "registered_by": "bob@example.com",
                "started_by": "arn:aws:iam::1:user/bob",
                "started_by.names": "bob",
            },
            environments=CHAIN,
            **metadata,
        ),
        model_data_url="s3://b/m.tar.gz",
    )


def test_promotion_rules_skip_no_environment():
    check_eligible(version(), "dev", CHAIN)
    with pytest.raises(NotEligible, match="not approved for dev"):
        check_eligible(version(), "test", CHAIN)
    check_eligible(version(dev="Approved"), "test", CHAIN)
    with pytest.raises(NotEligible, match="not approved for test"):
        check_eligible(version(dev="Approved"), "uat", CHAIN)
    with pytest.raises(NotEligible, match="already approved for dev"):
        check_eligible(version(dev="Approved"), "dev", CHAIN)
    bare = version().__class__(**{**version().__dict__, "metadata": customer_metadata(None)})
    with pytest.raises(NotEligible, match="registered_by"):
        check_eligible(bare, "dev", CHAIN)
    # Another chain: its own order, nothing about the names above.
    other = Chain(("test", "dev"))
    check_eligible(version(), "test", other)
    with pytest.raises(NotEligible, match="not approved for test"):
        check_eligible(version(), "dev", other)


def test_arns_of_other_groups_or_accounts_are_foreign():
    assert check_model_package_arn(ARN, group="energy-forecast", account="222222222222", region="eu-west-1") == 3
    for arn in (ARN.replace("energy-forecast", "other"), ARN.replace("2222", "9999"), "arn:aws:s3:::b"):
        with pytest.raises(ValueError, match="not"):
            check_model_package_arn(arn, group="energy-forecast", account="222222222222", region="eu-west-1")


def test_metrics_are_flattened_from_any_report_shape():
    report = {"regression_metrics": {"mape": {"value": 0.1, "standard_deviation": 0.01}}, "ok": True, "n": 5}
    assert flatten_metrics(report) == [
        ("regression_metrics.mape", 0.1),
        ("regression_metrics.mape.standard_deviation", 0.01),
        ("n", 5.0),
    ]


def test_the_email_escapes_what_it_shows_and_carries_both_links():
    hostile = ModelVersion(**{**version().__dict__, "metadata": {"registered_by": "<script>x</script>"}})
    request = ApprovalRequest(ARN, "dev", "registered")
    mail = render(
        version=hostile, request=request, recipient="a@example.com",
        evaluation=Evaluation("s3://b/e.json", metrics=(("mape", 0.1),)),
        approve_url="https://api/links/approve?token=A", reject_url="https://api/links/reject?token=R",
        expires_at=2_000_000_000,
    )  # fmt: skip
    assert "<script>" not in mail.html
    assert "&lt;script&gt;" in mail.html
    assert "Approve: https://api/links/approve?token=A" in mail.text
    assert "Reject:  https://api/links/reject?token=R" in mail.text


def test_identity_helpers():
    approver = approver_from_claims(
        {"sub": "s1", "email": "Bob@Example.com", "email_verified": True, "cognito:groups": ["a", "b"]},
        "cognito:groups",
    )
    assert approver.email == "bob@example.com"
    assert approver.groups == ("a", "b")
    assert approver_from_claims({"sub": "s", "groups": "[a, b]"}, "groups").groups == ("a", "b")
    federated = {"sub": "s", "cognito:groups": ["x"], "custom:groups": "[modelgate-approvers, y]"}
    assert approver_from_claims(federated, "cognito:groups,custom:groups").groups == ("x", "modelgate-approvers", "y")
    assert approver_from_claims({"sub": "s", "email": "x@y.z", "email_verified": False}, "g").email == ""
    assert Registrant.of({"registered_by": "BOB@example.com"}).includes(approver.identities)


def test_http_plumbing():
    request = HttpRequest.from_event(
        {"httpMethod": "GET", "resource": "/links/{action}", "queryStringParameters": {"token": "t"}}
    )
    assert request.query_value("token") == "t"
    with pytest.raises(ValueError, match="not an API Gateway"):
        HttpRequest.from_event({"foo": 1})
    assert read_cookies({"Cookie": "mg_session=abc; other=1"}) == {"mg_session": "abc", "other": "1"}
    assert "Secure" in set_cookie("mg_session", "v", 60, secure=True)
    assert set_cookie("mg_session", "v", 60, secure=True).startswith("__Host-mg_session=v")
    assert same_origin({"Origin": "https://api.example"}, "https://api.example/v1")
    assert not same_origin({"Origin": "https://evil.example"}, "https://api.example/v1")
    assert not same_origin({"Origin": "null"}, "https://api.example/v1")
    assert same_origin({}, "https://api.example/v1")


def test_settings_round_trip_and_name_what_is_missing(tmp_path):
    from modelgate.approval.settings import ApprovalSettings, ModelApproval, SettingsError

    models = (
        ModelApproval("energy-forecast", "energy-forecast", ("a@example.com", "b@example.com"), "g", 1, 60, 1.0),
        ModelApproval("churn", "churn-scores", ("c@example.com",), "g2", quorum=2),
    )
    settings = ApprovalSettings(
        project="modelgate", environment="test", chain=CHAIN, models=models,
        registry_account="222222222222", registry_region="eu-west-1", signing_key_id="k", state_table="s",
        history_table="h", sender_email="m@example.com", api_url="https://x/v1", next_event_bus="arn:bus",
    )  # fmt: skip
    for name, text in settings.bundled_files().items():  # what the stack ships in the code package
        (tmp_path / name).write_text(text)
    environ = {**settings.environ(), TASK_ROOT: str(tmp_path)}
    assert ApprovalSettings.from_environ(environ) == settings
    assert settings.model_package_arn("energy-forecast", 3) == ARN
    assert settings.model("churn-scores").quorum == 2
    broken = {k: v for k, v in environ.items() if k != "MODELGATE_STATE_TABLE"}
    with pytest.raises(SettingsError, match=r"not set: MODELGATE_STATE_TABLE \(the approval stack sets them\)"):
        ApprovalSettings.from_environ(broken)


def test_the_models_come_from_the_code_package_and_a_bad_file_names_what_to_fix(tmp_path):
    """The models' list grows with every model: it ships as MODELS_FILE in the functions' code package, not in
    the 4 KB environment; a missing or malformed file is a deployment error that says to redeploy."""
    from modelgate.approval.settings import MODELS_FILE, ApprovalSettings, ModelApproval, SettingsError, environ_size

    models = tuple(
        ModelApproval(f"model-{i:03d}", f"group-{i:03d}", (f"approvers-{i}@example.com",), "g") for i in range(300)
    )
    settings = ApprovalSettings(
        project="modelgate", environment="test", chain=CHAIN, models=models,
        registry_account="222222222222", registry_region="eu-west-1", signing_key_id="k", state_table="s",
        history_table="h", sender_email="m@example.com", api_url="https://x/v1",
    )  # fmt: skip
    assert environ_size(settings.environ()) < 500, "the environment does not grow with the models"
    environ = {**settings.environ(), TASK_ROOT: str(tmp_path)}
    with pytest.raises(SettingsError, match=rf"{MODELS_FILE} is missing: the approval stack ships .* redeploy"):
        ApprovalSettings.from_environ(environ)
    for text, fragment in (
        ("{not json", "not a readable JSON file"),
        ('{"model": "m"}', "must be a JSON list of models"),
        ('[{"model": "m"}]', "each model needs model, group, emails, approvers_group"),
        ("[]", "at least one model"),
    ):
        (tmp_path / MODELS_FILE).write_text(text)
        with pytest.raises(SettingsError, match=MODELS_FILE) as refused:
            ApprovalSettings.from_environ(environ)
        assert fragment in str(refused.value)
    (tmp_path / MODELS_FILE).write_text(settings.bundled_files()[MODELS_FILE])
    assert ApprovalSettings.from_environ(environ).models == models


class FakeS3:
    """get_object over a dict; ClientError like botocore's for missing keys."""

    class exceptions:  # mirrors boto3's client.exceptions
        from botocore.exceptions import ClientError

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def get_object(self, Bucket: str, Key: str) -> dict:  # boto3's parameter names
        import io

        if f"{Bucket}/{Key}" not in self.objects:
            raise self.exceptions.ClientError({"Error": {"Code": "NoSuchKey", "Message": ""}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[f"{Bucket}/{Key}"])}


def test_evaluation_is_the_pipeline_report_or_another_formats_numbers_or_a_note_why_not():
    from modelgate.approval.model_versions import read_evaluation
    from modelgate.evaluation_report import CustomerMetrics, EvaluationReport

    report = EvaluationReport.from_customers(
        model_package_group="energy-forecast", window=168, horizon=24, holdout_hours=168,
        per_customer=[CustomerMetrics("c1", 0.05, 1.0, 0.1, 2.0, 0.5, 168)], skipped={"c2": "too little data"},
    )  # fmt: skip
    s3 = FakeS3(
        {
            "b/ours.json": report.to_json().encode(),
            "b/other.json": b'{"accuracy": 0.9}',
            "b/broken.json": b'{"schema": 1, "aggregate": {}}',
            "b/text.json": b"not json",
        }
    )
    ours = read_evaluation(s3, "s3://b/ours.json")
    assert ours.report == report
    assert (ours.metrics, ours.note) == ((), None)
    assert read_evaluation(s3, "s3://b/other.json").metrics == (("accuracy", 0.9),)
    for uri, note in (
        ("s3://b/broken.json", "is not valid"),
        ("s3://b/text.json", "not JSON"),
        ("s3://b/missing.json", "NoSuchKey"),
        (None, "no evaluation report"),
    ):
        evaluation = read_evaluation(s3, uri)
        assert (evaluation.report, evaluation.metrics) == (None, ()), uri
        assert note in evaluation.note, uri


def test_config_names_a_bad_identity_provider_or_link_lifetime():
    import yaml

    from infra.config import DEFAULT_CONFIG_PATH, ConfigError, parse_config

    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    first, last = raw["environments"][0], raw["environments"][-1]
    assert parse_config(raw, "c.yaml").environments[first["name"]].approvers.link_ttl_hours == 72
    raw["defaults"]["approvers"]["link_ttl_hours"] = 0
    last["approvers"]["identity_provider"] = {
        "name": "SSO", "issuer": "http://plain.example", "client_id": "c", "client_secret_name": "s",
    }  # fmt: skip
    with pytest.raises(ConfigError) as error:
        parse_config(raw, "c.yaml")
    message = str(error.value)
    assert "c.yaml: defaults.approvers.link_ttl_hours" in message
    assert f"c.yaml: environments.{last['name']}.approvers.identity_provider.issuer: must be an https:// URL" in message


def test_handlers_import_nothing_the_lambda_bundle_lacks():
    """The bundle ships modelgate/ without config.py and no CDK, pydantic, YAML or sagemaker SDK."""
    import subprocess
    import sys
    from pathlib import Path

    probe = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('sagemaker', 'pydantic', 'yaml', 'aws_cdk') or name == 'infra.config':\n"
        "            raise ImportError('not in the Lambda bundle: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import lambdas.approval_api, lambdas.request_approval, lambdas.post_inference\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
