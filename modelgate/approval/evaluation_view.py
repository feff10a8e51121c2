"""The evaluation of a model version as a person reads it: numbers with units, the gate and its threshold, and
the customers that got worse. E-mails and pages read metrics only through `summarize`, so a renamed key in
`evaluation.json` (modelgate.evaluation_report) is a change in `_numbers` alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from modelgate.approval.model_versions import Evaluation, ModelVersion
from modelgate.evaluation_report import (
    CONDITION_JSON_PATH,
    INTERVAL_TARGET,
    CustomerMetrics,
    EvaluationReport,
    IntervalScore,
)
from modelgate.registry import APPROVED, PENDING, REJECTED, STARTED_BY_KEY

READING_UNIT = "kWh"  # prep converts every reading to kWh (pipelines/steps/cleaning.py)
SHOWN_REGRESSED = 5  # worst customers listed in e-mails and on the confirmation page; the report page has all

_STATE_WORDS = {PENDING: "waiting for a decision", APPROVED: "approved", REJECTED: "rejected"}


def state_words(state: str) -> str:
    """Registry states in plain words (`PendingManualApproval` means nothing to most approvers)."""
    return _STATE_WORDS.get(state, state)


def when(moment: datetime | str | int | None) -> str:
    """'1 Dec 2026, 08:12 UTC' from a datetime, an ISO 8601 string or epoch seconds."""
    if moment is None or moment == "":
        return ""
    if isinstance(moment, int):
        moment = datetime.fromtimestamp(moment, UTC)
    elif isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            return moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return f"{moment.day} {moment:%b %Y, %H:%M} UTC"


def percent(fraction: float) -> str:
    return f"{fraction * 100:.1f}\u00a0%"  # a no-break space: "14.0 %" never splits across lines


@dataclass(frozen=True)
class Line:
    label: str
    value: str
    detail: str = ""


@dataclass(frozen=True)
class Worse:
    """One customer worse than its baseline, formatted."""

    customer: str
    model_mape: str
    baseline_mape: str
    ratio: str


@dataclass(frozen=True)
class EvaluationSummary:
    headline: str  # one sentence: the verdict at a glance
    warning: bool  # something an approver must look at (customers worse than baseline, gate failed, no report)
    lines: tuple[Line, ...]
    regressed: tuple[Worse, ...]  # all customers worse than baseline, worst first
    customers: int
    note: str | None = None
    ranked: tuple[Worse, ...] = ()  # every customer, worst first (the report page)

    @property
    def regressed_shown(self) -> tuple[Worse, ...]:
        return self.regressed[:SHOWN_REGRESSED]


@dataclass(frozen=True)
class _Numbers:
    customers: int
    mape: float
    baseline_mape: float
    gate_ratio: float  # what the pipeline's condition compared with the threshold
    mean_of_ratios: float  # mean of per-customer ratios: shown for comparison only
    rmse: float
    baseline_rmse: float
    regressed: tuple[CustomerMetrics, ...]
    ranked: tuple[CustomerMetrics, ...]  # every customer, worst ratio first
    interval: IntervalScore | None  # the served P10-P90, means over customers (None: not served)


def _numbers(report: EvaluationReport) -> _Numbers:
    """The only place the report's fields are read for people."""
    aggregate = report.aggregate
    ratios = [m.mape_ratio for m in report.per_customer]
    return _Numbers(
        customers=aggregate.customers,
        mape=aggregate.mape,
        baseline_mape=aggregate.baseline_mape,
        gate_ratio=aggregate.mape_ratio,
        mean_of_ratios=sum(ratios) / len(ratios),
        rmse=aggregate.rmse,
        baseline_rmse=aggregate.baseline_rmse,
        regressed=report.regressed(),
        ranked=tuple(sorted(report.per_customer, key=lambda m: (-m.mape_ratio, m.customer))),
        interval=aggregate.interval,
    )


def summarize(evaluation: Evaluation, threshold: float | None) -> EvaluationSummary:
    report = evaluation.report
    if report is None:
        lines = tuple(Line(name, f"{value:.6g}") for name, value in evaluation.metrics)
        headline = (
            "This version's evaluation report is not in ModelGate's format: its numbers are shown as they are."
            if lines
            else "No evaluation could be read for this version: decide only if you checked it another way."
        )
        return EvaluationSummary(headline, True, lines, (), 0, evaluation.note)
    n = _numbers(report)
    gate = f"at most {threshold:.2f} ({threshold:.0%} of baseline)" if threshold is not None else "the configured limit"
    passed = threshold is None or n.gate_ratio <= threshold
    lines = [
        Line("MAPE", percent(n.mape), f"baseline {percent(n.baseline_mape)}; mean absolute percentage error"),
        Line("RMSE", f"{n.rmse:.3g} {READING_UNIT}", f"baseline {n.baseline_rmse:.3g} {READING_UNIT}"),
        Line(
            "Gate: MAPE ratio",
            f"{n.gate_ratio:.3f}",
            f"model MAPE / baseline MAPE (ratio of the means over customers, {CONDITION_JSON_PATH}); "
            f"must be {gate}: {'passed' if passed else 'NOT passed'}",
        ),
        Line("Mean of per-customer ratios", f"{n.mean_of_ratios:.3f}", "for comparison; the gate does not use it"),
        Line(
            "Customers",
            f"{n.customers} evaluated",
            f"{len(report.skipped)} without a model; {report.horizon} h ahead, over the last "
            f"{report.holdout_hours // 24} days each customer's model never saw",
        ),
        Line("Worse than baseline", f"{len(n.regressed)} of {n.customers}", "customers whose own ratio is above 1"),
    ]
    if n.interval is not None:
        target = f"{INTERVAL_TARGET * 100:.0f}\u00a0%"
        lines.append(
            Line(
                f"{target} interval (P10-P90)",
                f"covered {percent(n.interval.coverage)} of held-out hours",
                f"target {target} (mean over customers); mean pinball loss {n.interval.mean_pinball:.3g} "
                f"{READING_UNIT} (P10 {n.interval.pinball_p10:.3g}, P50 {n.interval.pinball_p50:.3g}, "
                f"P90 {n.interval.pinball_p90:.3g})",
            )
        )

    def worse(m: CustomerMetrics) -> Worse:
        return Worse(m.customer, percent(m.mape), percent(m.baseline_mape), f"{m.mape_ratio:.2f}")

    regressed = tuple(worse(m) for m in n.regressed)
    better = "better than" if n.gate_ratio < 1 else "not better than"
    headline = (
        f"On average {better} the seasonal-naive baseline (MAPE {percent(n.mape)} vs {percent(n.baseline_mape)}), "
    )
    if n.regressed:
        worst = n.regressed[0]
        headline += (
            f"but {len(n.regressed)} of {n.customers} customers got worse (worst: {worst.customer}, "
            f"{percent(worst.mape)} vs {percent(worst.baseline_mape)})."
        )
    else:
        headline += f"and none of the {n.customers} customers is worse than its baseline."
    if not passed:
        headline += " It did not pass the training gate."
    return EvaluationSummary(
        headline,
        bool(n.regressed) or not passed,
        tuple(lines),
        regressed,
        n.customers,
        evaluation.note,
        tuple(worse(m) for m in n.ranked),
    )


def version_facts(version: ModelVersion) -> list[tuple[str, str]]:
    """Who and what a version is, as the e-mail and the confirmation page both list it."""
    return [
        ("Model package group", version.group),
        ("Version", str(version.version)),
        ("Created", when(version.created_at)),
        ("Registered by", version.registered_by or "unknown"),  # typed when the run started
        ("Started by (AWS principal)", version.metadata.get(STARTED_BY_KEY) or "not recorded"),
    ]
