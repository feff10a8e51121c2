"""Contract: the evaluation report of a model version (one forecasting model per customer).

Written by the pipeline's evaluation step (`pipelines/steps/evaluate.py`) as `evaluation.json`; read by
- the pipeline's condition step, through a PropertyFile: `CONDITION_JSON_PATH` (`aggregate.mape_ratio`, the
  model's MAPE divided by the seasonal-naive baseline's MAPE) must be <= config `training.metric_threshold`;
- the Model Registry: the registration attaches the file as ModelMetrics.ModelQuality.Statistics
  (content type `CONTENT_TYPE`); SageMaker Studio reads its top-level `regression_metrics` block, which follows
  the SageMaker Model Quality statistics format: {"regression_metrics": {"<metric>": {"value": v,
  "standard_deviation": s}}};
- the approval workflow, which shows `aggregate` in approval e-mails (`parse_report`).

Document (schema 1):
    {
      "schema": 1,
      "model_package_group": "energy-forecast",
      "window": 168, "horizon": 24,            # hours in / out (modelgate.model_repository)
      "holdout_hours": 168,                    # each customer's held-out tail, never seen by training
      "aggregate": {"customers": 100, "mape": .., "rmse": .., "baseline_mape": .., "baseline_rmse": ..,
                    "mape_ratio": ..},         # means over customers; mape_ratio = mape / baseline_mape
                                               # (ratio of the means, see `mape_ratio`)
      "per_customer": [{"customer": "c0001", "mape": .., "rmse": .., "baseline_mape": .., "baseline_rmse": ..,
                        "mape_ratio": .., "points": 168}, ...],      # sorted by customer
      "skipped": {"c0042": "only 100 hours of data, need 360"},     # customers without a model, and why
      "regressed": [{"customer": "c0007", "mape": .., "baseline_mape": .., "mape_ratio": 1.33}, ...],
                                               # customers worse than their baseline (ratio > 1), worst first
                                               # (derived from per_customer; written for people and tools)
      "regression_metrics": {"mape": {"value": .., "standard_deviation": ..}, "rmse": {...}, ...}
    }
MAPE is a fraction (0.08 = 8 %), over the held-out points with a non-zero actual reading; RMSE is in reading
units. Aggregates are unweighted means over customers, so a large customer does not drown the small ones.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1
REPORT_FILE = "evaluation.json"
FORECAST_PLOT_FILE = "forecasts.png"  # the evaluation's plot, written and registered next to REPORT_FILE
CONTENT_TYPE = "application/json"
CONDITION_JSON_PATH = "aggregate.mape_ratio"

METRICS = ("mape", "rmse", "baseline_mape", "baseline_rmse", "mape_ratio")

# The ratio reported when the baseline is perfect (MAPE 0) and the model is not: JSON has no infinity, and
# the condition step must still see a value far above any sensible threshold.
RATIO_CAP = 1e9


class EvaluationReportError(ValueError):
    """A document that is not a valid evaluation report; the message says which field and why."""


def mape_ratio(mape: float, baseline_mape: float) -> float:
    """Model MAPE / baseline MAPE (< 1: the model beats the seasonal-naive baseline). A perfect baseline can
    only be matched: 1.0 if the model is perfect too, else RATIO_CAP."""
    if baseline_mape > 0:
        return min(mape / baseline_mape, RATIO_CAP)
    return 1.0 if mape == 0 else RATIO_CAP


def _number(value: Any, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EvaluationReportError(f"{where} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise EvaluationReportError(f"{where} must be {'positive' if positive else '>= 0'}, got {value!r}")
    return float(value)


def _integer(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise EvaluationReportError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class CustomerMetrics:
    customer: str
    mape: float
    rmse: float
    baseline_mape: float
    baseline_rmse: float
    mape_ratio: float
    points: int  # held-out readings the metrics are computed on


@dataclass(frozen=True)
class AggregateMetrics:
    customers: int
    mape: float
    rmse: float
    baseline_mape: float
    baseline_rmse: float
    mape_ratio: float


@dataclass(frozen=True)
class EvaluationReport:
    model_package_group: str
    window: int
    horizon: int
    holdout_hours: int
    aggregate: AggregateMetrics
    per_customer: tuple[CustomerMetrics, ...]
    skipped: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_customers(
        cls,
        *,
        model_package_group: str,
        window: int,
        horizon: int,
        holdout_hours: int,
        per_customer: list[CustomerMetrics],
        skipped: Mapping[str, str] | None = None,
    ) -> EvaluationReport:
        """Aggregate per-customer metrics into a report (the only place the aggregate is computed)."""
        if not per_customer:
            raise EvaluationReportError("no customer could be evaluated: an evaluation report needs at least one")
        count = len(per_customer)

        def mean(name: str) -> float:
            return sum(getattr(m, name) for m in per_customer) / count

        baseline_mape = mean("baseline_mape")
        aggregate = AggregateMetrics(
            customers=count,
            mape=mean("mape"),
            rmse=mean("rmse"),
            baseline_mape=baseline_mape,
            baseline_rmse=mean("baseline_rmse"),
            mape_ratio=mape_ratio(mean("mape"), baseline_mape),
        )
        return cls(
            model_package_group=model_package_group,
            window=window,
            horizon=horizon,
            holdout_hours=holdout_hours,
            aggregate=aggregate,
            per_customer=tuple(sorted(per_customer, key=lambda m: m.customer)),
            skipped=dict(sorted((skipped or {}).items())),
        )

    def regression_metrics(self) -> dict[str, dict[str, dict[str, float]]]:
        """The SageMaker Model Quality statistics block: mean over customers and its standard deviation."""

        def stat(name: str) -> dict[str, float]:
            values = [getattr(m, name) for m in self.per_customer]
            mean = sum(values) / len(values)
            deviation = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            return {"value": mean, "standard_deviation": deviation}

        return {"regression_metrics": {name: stat(name) for name in METRICS}}

    def regressed(self) -> tuple[CustomerMetrics, ...]:
        """Customers whose model is worse than their seasonal-naive baseline (ratio > 1), worst first.

        An average below 1 can hide them, so approvers are shown these by name."""
        worse = [m for m in self.per_customer if m.mape_ratio > 1.0]
        return tuple(sorted(worse, key=lambda m: (-m.mape_ratio, m.customer)))

    def to_json(self) -> str:
        document = {
            "schema": SCHEMA_VERSION,
            "model_package_group": self.model_package_group,
            "window": self.window,
            "horizon": self.horizon,
            "holdout_hours": self.holdout_hours,
            "aggregate": asdict(self.aggregate),
            "per_customer": [asdict(m) for m in self.per_customer],
            "skipped": dict(self.skipped),
            "regressed": [
                {"customer": m.customer, "mape": m.mape, "baseline_mape": m.baseline_mape, "mape_ratio": m.mape_ratio}
                for m in self.regressed()
            ],
            **self.regression_metrics(),
        }
        # allow_nan=False: a NaN/inf metric must fail here, not produce JSON the condition step cannot read.
        return json.dumps(document, indent=1, allow_nan=False)

    def customer(self, customer: str) -> CustomerMetrics:
        for metrics in self.per_customer:
            if metrics.customer == customer:
                return metrics
        raise KeyError(f"customer {customer!r} is not in the evaluation report")


def _metrics_fields(data: Any, where: str) -> dict[str, float]:
    if not isinstance(data, dict):
        raise EvaluationReportError(f"{where} must be an object, got {type(data).__name__}")
    missing = [name for name in METRICS if name not in data]
    if missing:
        raise EvaluationReportError(f"{where} lacks {', '.join(missing)}")
    return {name: _number(data[name], f"{where}.{name}") for name in METRICS}


def parse_report(text: str | bytes) -> EvaluationReport:
    """Parse and validate `evaluation.json`; raises EvaluationReportError naming the bad field."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as error:
        raise EvaluationReportError(f"evaluation report is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise EvaluationReportError("evaluation report must be a JSON object")
    if data.get("schema") != SCHEMA_VERSION:
        raise EvaluationReportError(f"evaluation report schema {data.get('schema')!r}, expected {SCHEMA_VERSION}")
    for key in ("model_package_group", "window", "horizon", "holdout_hours", "aggregate", "per_customer"):
        if key not in data:
            raise EvaluationReportError(f"evaluation report lacks {key!r}")
    group = data["model_package_group"]
    if not isinstance(group, str) or not group:
        raise EvaluationReportError(f"model_package_group must be a non-empty string, got {group!r}")

    aggregate_data = data["aggregate"]
    aggregate_fields = _metrics_fields(aggregate_data, "aggregate")
    aggregate = AggregateMetrics(
        customers=_integer(aggregate_data.get("customers"), "aggregate.customers", 1), **aggregate_fields
    )
    if not isinstance(data["per_customer"], list):
        raise EvaluationReportError("per_customer must be a list")
    per_customer = []
    for index, item in enumerate(data["per_customer"]):
        where = f"per_customer[{index}]"
        fields = _metrics_fields(item, where)
        customer = item.get("customer")
        if not isinstance(customer, str) or not customer:
            raise EvaluationReportError(f"{where}.customer must be a non-empty string, got {customer!r}")
        points = _integer(item.get("points"), f"{where}.points", 1)
        per_customer.append(CustomerMetrics(customer=customer, points=points, **fields))
    if len(per_customer) != aggregate.customers:
        raise EvaluationReportError(
            f"aggregate.customers is {aggregate.customers} but per_customer lists {len(per_customer)} customers"
        )
    skipped = data.get("skipped", {})
    if not isinstance(skipped, dict) or not all(isinstance(v, str) for v in skipped.values()):
        raise EvaluationReportError("skipped must map customer ids to reasons")
    return EvaluationReport(
        model_package_group=group,
        window=_integer(data["window"], "window", 1),
        horizon=_integer(data["horizon"], "horizon", 1),
        holdout_hours=_integer(data["holdout_hours"], "holdout_hours", 1),
        aggregate=aggregate,
        per_customer=tuple(per_customer),
        skipped=skipped,
    )
