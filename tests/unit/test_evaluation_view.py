"""What approvers read about a version's evaluation: the verdict, units, the gate and its threshold, the
customers that got worse; and the e-mail that carries it."""

from __future__ import annotations

from datetime import UTC, datetime

from modelgate.approval.emails import render
from modelgate.approval.evaluation_view import state_words, summarize, when
from modelgate.approval.events import ApprovalRequest
from modelgate.approval.model_versions import Evaluation, ModelVersion
from modelgate.approval.settings import ModelApproval
from modelgate.approval.state import Approvals
from modelgate.chain import Chain
from modelgate.evaluation_report import CustomerMetrics, EvaluationReport, IntervalScore

ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/energy-forecast/3"


def report(ratios: list[float]) -> EvaluationReport:
    return EvaluationReport.from_customers(
        model_package_group="energy-forecast",
        window=168,
        horizon=24,
        holdout_hours=168,
        per_customer=[CustomerMetrics(f"c{i}", 0.1 * r, 1.0, 0.1, 1.2, r, 168) for i, r in enumerate(ratios)],
    )


def test_the_average_does_not_hide_the_customers_that_got_worse():
    summary = summarize(Evaluation("s3://b/e.json", report([0.5, 1.3, 0.7, 1.1, 0.6, 0.6, 0.6, 0.6, 1.2])), 1.0)
    assert summary.warning
    assert summary.headline.startswith("On average better than the seasonal-naive baseline (MAPE 8.0\u00a0% vs")
    assert "but 3 of 9 customers got worse (worst: c1, 13.0\u00a0% vs 10.0\u00a0%)" in summary.headline
    assert [w.customer for w in summary.regressed] == ["c1", "c8", "c3"]
    lines = {line.label: line for line in summary.lines}
    assert lines["MAPE"].value == "8.0\u00a0%"
    assert lines["RMSE"].value == "1 kWh"
    assert lines["Gate: MAPE ratio"].value == "0.800"
    assert "must be at most 1.00 (100% of baseline): passed" in lines["Gate: MAPE ratio"].detail
    assert "the gate does not use it" in lines["Mean of per-customer ratios"].detail
    assert lines["Worse than baseline"].value == "3 of 9"


def test_a_version_above_the_threshold_says_it_did_not_pass():
    summary = summarize(Evaluation("s3://b/e.json", report([1.2, 1.1])), 0.9)
    assert "It did not pass the training gate." in summary.headline
    assert "NOT passed" in {line.label: line for line in summary.lines}["Gate: MAPE ratio"].detail


def test_all_better_is_a_plain_verdict_and_no_warning():
    summary = summarize(Evaluation("s3://b/e.json", report([0.8, 0.9])), None)
    assert not summary.warning
    assert summary.headline.endswith("and none of the 2 customers is worse than its baseline.")
    assert "must be the configured limit" in {line.label: line for line in summary.lines}["Gate: MAPE ratio"].detail


def test_foreign_and_missing_reports_are_said_to_be_so():
    foreign = summarize(Evaluation("s3://b/x.json", metrics=(("accuracy", 0.9),)), 1.0)
    assert foreign.warning
    assert [(line.label, line.value) for line in foreign.lines] == [("accuracy", "0.9")]
    missing = summarize(Evaluation(None, note="the model version has no evaluation report (ModelMetrics)"), 1.0)
    assert missing.headline.startswith("No evaluation could be read")
    assert missing.note == "the model version has no evaluation report (ModelMetrics)"


def test_words_and_times_for_people():
    assert state_words("PendingManualApproval") == "waiting for a decision"
    assert when("2026-12-01T08:03:38.279264Z") == "1 Dec 2026, 08:03 UTC"
    assert when(datetime(2026, 1, 5, 9, 7, tzinfo=UTC)) == "5 Jan 2026, 09:07 UTC"


def test_the_email_has_a_language_the_verdict_the_worst_customers_and_the_report_link():
    created = datetime(2026, 12, 1, tzinfo=UTC)
    metadata = {"registered_by": "bob@example.com"}
    report_uri = "s3://b/models/v3/evaluation.json"
    version = ModelVersion(
        ARN, "energy-forecast", 3, created, "PendingManualApproval", metadata, "s3://b/m/", report_uri
    )
    mail = render(
        version=version,
        request=ApprovalRequest(ARN, "dev", "registered"),
        recipient="alice@example.com",
        evaluation=Evaluation(version.metrics_uri, report([1.33, 0.7, 0.8, 1.1])),
        approve_url="https://api/links/approve?token=A",
        reject_url="https://api/links/reject?token=R",
        expires_at=2_000_000_000,
        report_url="https://api/links/approve?token=A&view=report",
        threshold=1.0,
        approvers_group="modelgate-approvers",
        chain=Chain(("dev", "test", "uat", "prod")),
    )
    assert mail.html.startswith('<!doctype html><html lang="en">')
    assert "2 of 4 customers got worse (worst: c0, 13.3\u00a0% vs 10.0\u00a0%)" in mail.text
    assert "  c0: MAPE 13.3\u00a0% vs baseline 10.0\u00a0% (ratio 1.33)" in mail.text
    assert "Full report (every customer, forecast plot): https://api/links/approve?token=A&view=report" in mail.text
    assert "s3://b/models/v3/evaluation.json" not in mail.text, "a readable report link, not an s3:// URI"
    assert "Approving deploys version 3 to dev's endpoint; the test approvers are asked next" in mail.text
    assert "only members of the 'modelgate-approvers' group can decide" in mail.text


def test_the_email_names_the_model_and_its_quorum_progress():
    version = ModelVersion(
        ARN.replace("energy-forecast", "churn-scores"), "churn-scores", 3, datetime(2026, 12, 1, tzinfo=UTC),
        "PendingManualApproval", {"registered_by": "bob@example.com"}, "s3://b/m/", None,
    )  # fmt: skip
    churn = ModelApproval("churn", "churn-scores", ("a@example.com", "b@example.com"), "approvers", quorum=2)
    mail = render(
        version=version,
        request=ApprovalRequest(version.arn, "live", "run:1", "stage"),
        recipient="a@example.com",
        evaluation=Evaluation(None, note="none"),
        approve_url="https://api/links/approve?token=A",
        reject_url="https://api/links/reject?token=R",
        expires_at=2_000_000_000,
        model=churn,
        chain=Chain(("stage", "live")),
        progress=Approvals(1, ("alice@example.com",), ("s-alice",)),
    )
    assert mail.subject == "[ModelGate] Promote churn (churn-scores) v3 from stage to live?"
    assert "Model: churn (churn-scores)" in mail.text
    assert "Approvals needed: 2 distinct approvers; 1 so far (alice@example.com)" in mail.text
    assert "Once 2 approvers have approved, version 3 is deployed to live's endpoint." in mail.text


def test_every_customer_is_ranked_worst_first_for_the_report_page():
    summary = summarize(Evaluation("s3://b/e.json", report([0.5, 1.3, 0.9])), 1.0)
    assert [(w.customer, w.ratio) for w in summary.ranked] == [("c1", "1.30"), ("c2", "0.90"), ("c0", "0.50")]


def test_the_served_interval_is_one_humanised_line_and_absent_for_a_report_without_it():
    customers = [
        CustomerMetrics("c0", 0.1, 1.0, 0.1, 1.2, 1.0, 168, interval=IntervalScore(0.75, 0.1, 0.3, 0.12)),
        CustomerMetrics("c1", 0.1, 1.0, 0.1, 1.2, 1.0, 168, interval=IntervalScore(0.818, 0.2, 0.5, 0.18)),
    ]
    with_interval = EvaluationReport.from_customers(
        model_package_group="energy-forecast", window=168, horizon=24, holdout_hours=168, per_customer=customers
    )
    lines = {line.label: line for line in summarize(Evaluation("s3://b/e.json", with_interval), 1.0).lines}
    line = lines["80\u00a0% interval (P10-P90)"]
    assert line.value == "covered 78.4\u00a0% of held-out hours"
    assert (
        line.detail
        == "target 80\u00a0% (mean over customers); mean pinball loss 0.233 kWh (P10 0.15, P50 0.4, P90 0.15)"
    )
    without = {line.label for line in summarize(Evaluation("s3://b/e.json", report([0.8])), 1.0).lines}
    assert not [label for label in without if "interval" in label]
