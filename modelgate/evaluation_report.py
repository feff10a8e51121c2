"""Contract: the evaluation report of a model version (one forecasting model per customer).

Written by the pipeline's evaluation step (`pipelines/steps/evaluate.py`) as `evaluation.json`; read by
- the pipeline's condition step, through a PropertyFile: `CONDITION_JSON_PATH` (`aggregate.mape_ratio`, the
  model's mean MAPE divided by the best baseline's mean MAPE) must be <= config `training.metric_threshold`;
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
                    "mape_ratio": ..,          # means over customers; mape_ratio = mape / baseline_mape
                    "baseline": "seasonal_window_average_168x4",    # the best baseline (lowest mean MAPE)
                    "baselines": {"seasonal_naive_24": {"mape": .., "rmse": .., "mape_ratio": ..}, ...},
                    "interval": {"coverage": .., "pinball_p10": .., "pinball_p50": .., "pinball_p90": ..}},
      "per_customer": [{"customer": "c0001", "mape": .., "rmse": .., "baseline_mape": .., "baseline_rmse": ..,
                        "mape_ratio": .., "points": 168,             # baseline_*: the aggregate's baseline
                        "baselines": {"seasonal_naive_24": {"mape": .., "rmse": ..}, ...},
                        "interval": {"coverage": .., "pinball_p10": .., ...}}, ...],   # by customer
      "skipped": {"c0042": "only 100 hours of data, need 360"},     # customers without a model, and why
      "regressed": [{"customer": "c0007", "mape": .., "baseline_mape": .., "mape_ratio": 1.33}, ...],
                                               # customers worse than their baseline (ratio > 1), worst first
                                               # (derived from per_customer; written for people and tools)
      "regression_metrics": {"mape": {"value": .., "standard_deviation": ..}, "rmse": {...}, ...}
    }
MAPE is a fraction (0.08 = 8 %), over the held-out points with a non-zero actual reading; RMSE is in reading
units. Aggregates are unweighted means over customers, so a large customer does not drown the small ones.
`interval` scores the served P10/P90 (pipelines/steps/quantiles.py) on the same held-out hours: `coverage` the
share of readings inside [P10, P90] (INTERVAL_TARGET = 0.8 is what a calibrated interval gives), `pinball_p*`
the mean pinball (quantile) loss of P10, P50 (the point forecast) and P90 in reading units; `null` (or absent,
in reports written before quantiles were served) when the models had no interval.

The aggregate ratio has one meaning: the RATIO OF THE MEANS, mean model MAPE / mean baseline MAPE (the same numbers
the accuracy tables compare). The mean of the per-customer ratios weighs a customer whose baseline is already
good more heavily and disagrees with it (0.926 vs 0.910 on one run); it is not reported as a ratio anywhere: the
Model Quality block's `mape_ratio.value` is the aggregate ratio too, its `standard_deviation` the spread of the
per-customer ratios. The baseline is the one the operator would pick instead of the models: of the peers the
evaluation step computes (`BASELINES`), the one with the lowest mean MAPE over these customers. The best peer per
customer is not used: choosing it needs the held-out week itself, which no one forecasting has. A document
written before baselines were compared (no `baseline` key) reads as the 168 h seasonal naive.
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

# The peers the evaluation step forecasts with, named as in `baselines` (pipelines/steps/evaluate.py computes
# them): the same hour one day / one week earlier, and statsforecast's SeasonalWindowAverage (season 168 h,
# 4 seasons): the mean of the same hour of the week over the last four weeks.
SEASONAL_NAIVE_24 = "seasonal_naive_24"
SEASONAL_NAIVE_168 = "seasonal_naive_168"
SEASONAL_WINDOW_AVERAGE = "seasonal_window_average_168x4"
BASELINES = (SEASONAL_NAIVE_24, SEASONAL_NAIVE_168, SEASONAL_WINDOW_AVERAGE)
LEGACY_BASELINE = SEASONAL_NAIVE_168  # what baseline_mape meant in reports without a `baseline` key

INTERVAL_TARGET = 0.8  # P10-P90: a calibrated interval holds 80 % of the readings

# The ratio reported when the baseline is perfect (MAPE 0) and the model is not: JSON has no infinity, and
# the condition step must still see a value far above any sensible threshold.
RATIO_CAP = 1e9


class EvaluationReportError(ValueError):
    """A document that is not a valid evaluation report; the message says which field and why."""


def mape_ratio(mape: float, baseline_mape: float) -> float:
    """Model MAPE / baseline MAPE (< 1: the model beats the baseline). A perfect baseline can
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
class Score:
    """One forecaster's MAPE and RMSE on one customer's held-out hours."""

    mape: float
    rmse: float


@dataclass(frozen=True)
class IntervalScore:
    """The served P10/P90 on held-out hours: the share of readings inside [P10, P90] and each quantile's mean
    pinball loss (reading units); for the aggregate, means over customers."""

    coverage: float
    pinball_p10: float
    pinball_p50: float
    pinball_p90: float

    @property
    def mean_pinball(self) -> float:
        return (self.pinball_p10 + self.pinball_p50 + self.pinball_p90) / 3

    @classmethod
    def mean(cls, scores: list[IntervalScore]) -> IntervalScore:
        return cls(*(sum(getattr(s, f) for s in scores) / len(scores) for f in INTERVAL_FIELDS))


INTERVAL_FIELDS = ("coverage", "pinball_p10", "pinball_p50", "pinball_p90")


@dataclass(frozen=True)
class CustomerScores:
    """What the evaluation step measures for one customer: the model's score and every baseline's."""

    customer: str
    model: Score
    baselines: Mapping[str, Score]
    points: int
    interval: IntervalScore | None = None  # the served P10/P90, when the models have them


@dataclass(frozen=True)
class CustomerMetrics:
    customer: str
    mape: float
    rmse: float
    baseline_mape: float  # of the aggregate's baseline
    baseline_rmse: float
    mape_ratio: float
    points: int  # held-out readings the metrics are computed on
    baselines: Mapping[str, Score] = field(default_factory=dict)  # every peer's score on this customer
    interval: IntervalScore | None = None


@dataclass(frozen=True)
class BaselineSummary:
    """One peer over all customers: mean MAPE and RMSE, and the model's mean MAPE divided by its mean MAPE."""

    mape: float
    rmse: float
    mape_ratio: float


@dataclass(frozen=True)
class AggregateMetrics:
    customers: int
    mape: float
    rmse: float
    baseline_mape: float
    baseline_rmse: float
    mape_ratio: float
    baseline: str = LEGACY_BASELINE  # which peer baseline_* and mape_ratio refer to
    baselines: Mapping[str, BaselineSummary] = field(default_factory=dict)
    interval: IntervalScore | None = None  # means over customers


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
    def from_scores(
        cls,
        *,
        model_package_group: str,
        window: int,
        horizon: int,
        holdout_hours: int,
        scores: list[CustomerScores],
        skipped: Mapping[str, str] | None = None,
    ) -> EvaluationReport:
        """A report comparing the models with the best peer: the baseline with the lowest mean MAPE over the
        customers (ties: the first in `BASELINES` order, then by name)."""
        if not scores:
            raise EvaluationReportError("no customer could be evaluated: an evaluation report needs at least one")
        names = set(scores[0].baselines)
        if not names:
            raise EvaluationReportError("the scores hold no baseline to compare the models with")
        for score in scores:
            if set(score.baselines) != names:
                raise EvaluationReportError(
                    f"customer {score.customer} has baselines {sorted(score.baselines)}, the others {sorted(names)}"
                )
        order = {name: index for index, name in enumerate(BASELINES)}
        best = min(
            names,
            key=lambda n: (sum(s.baselines[n].mape for s in scores) / len(scores), order.get(n, len(order)), n),
        )
        per_customer = [
            CustomerMetrics(
                customer=s.customer,
                mape=s.model.mape,
                rmse=s.model.rmse,
                baseline_mape=s.baselines[best].mape,
                baseline_rmse=s.baselines[best].rmse,
                mape_ratio=mape_ratio(s.model.mape, s.baselines[best].mape),
                points=s.points,
                baselines=dict(sorted(s.baselines.items())),
                interval=s.interval,
            )
            for s in scores
        ]
        return cls.from_customers(
            model_package_group=model_package_group,
            window=window,
            horizon=horizon,
            holdout_hours=holdout_hours,
            per_customer=per_customer,
            skipped=skipped,
            baseline=best,
        )

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
        baseline: str = LEGACY_BASELINE,
    ) -> EvaluationReport:
        """Aggregate per-customer metrics into a report (the only place the aggregate is computed); `baseline`
        names the peer the customers' baseline_* fields hold."""
        if not per_customer:
            raise EvaluationReportError("no customer could be evaluated: an evaluation report needs at least one")
        count = len(per_customer)

        def mean(name: str) -> float:
            return sum(getattr(m, name) for m in per_customer) / count

        model_mape = mean("mape")
        baseline_mape = mean("baseline_mape")
        names = sorted(set().union(*(m.baselines for m in per_customer)))
        summaries = {}
        for name in names:
            if any(name not in m.baselines for m in per_customer):
                raise EvaluationReportError(f"baseline {name!r} is scored for some customers only")
            peer_mape = sum(m.baselines[name].mape for m in per_customer) / count
            peer_rmse = sum(m.baselines[name].rmse for m in per_customer) / count
            summaries[name] = BaselineSummary(peer_mape, peer_rmse, mape_ratio(model_mape, peer_mape))
        intervals = [m.interval for m in per_customer if m.interval is not None]
        if intervals and len(intervals) != count:
            raise EvaluationReportError("the P10/P90 interval is scored for some customers only")
        aggregate = AggregateMetrics(
            customers=count,
            mape=model_mape,
            rmse=mean("rmse"),
            baseline_mape=baseline_mape,
            baseline_rmse=mean("baseline_rmse"),
            mape_ratio=mape_ratio(model_mape, baseline_mape),
            baseline=baseline,
            baselines=summaries,
            interval=IntervalScore.mean(intervals) if intervals else None,
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
        """The SageMaker Model Quality statistics block: mean over customers and its standard deviation; for
        mape_ratio the value is the aggregate's (ratio of the means), the deviation that of per-customer ratios."""

        def stat(name: str) -> dict[str, float]:
            values = [getattr(m, name) for m in self.per_customer]
            mean = sum(values) / len(values)
            deviation = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            value = self.aggregate.mape_ratio if name == "mape_ratio" else mean
            return {"value": value, "standard_deviation": deviation}

        block = {name: stat(name) for name in METRICS}
        if self.aggregate.interval is not None:  # Studio lists these next to the point metrics
            coverage = [m.interval.coverage for m in self.per_customer]
            pinball = [m.interval.mean_pinball for m in self.per_customer]
            for name, values, value in (
                ("interval_coverage", coverage, self.aggregate.interval.coverage),
                ("mean_pinball_loss", pinball, self.aggregate.interval.mean_pinball),
            ):
                deviation = math.sqrt(sum((v - value) ** 2 for v in values) / len(values))
                block[name] = {"value": value, "standard_deviation": deviation}
        return {"regression_metrics": block}

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
            "per_customer": [asdict(m) for m in self.per_customer],  # asdict recurses into the Score maps
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


def _baselines(data: Any, where: str, fields: tuple[str, ...]) -> dict[str, tuple[float, ...]]:
    if not isinstance(data, dict):
        raise EvaluationReportError(f"{where} must be an object, got {type(data).__name__}")
    parsed = {}
    for name, item in data.items():
        if not isinstance(item, dict) or any(f not in item for f in fields):
            raise EvaluationReportError(f"{where}.{name} must be an object with {', '.join(fields)}")
        parsed[name] = tuple(_number(item[f], f"{where}.{name}.{f}") for f in fields)
    return parsed


def _interval(data: Any, where: str) -> IntervalScore | None:
    if data is None:
        return None
    if not isinstance(data, dict) or any(f not in data for f in INTERVAL_FIELDS):
        raise EvaluationReportError(f"{where} must be null or an object with {', '.join(INTERVAL_FIELDS)}")
    score = IntervalScore(*(_number(data[f], f"{where}.{f}") for f in INTERVAL_FIELDS))
    if score.coverage > 1:
        raise EvaluationReportError(f"{where}.coverage must be a share in [0, 1], got {score.coverage!r}")
    return score


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
    baseline = aggregate_data.get("baseline", LEGACY_BASELINE)
    if not isinstance(baseline, str) or not baseline:
        raise EvaluationReportError(f"aggregate.baseline must be a non-empty string, got {baseline!r}")
    summaries = _baselines(aggregate_data.get("baselines", {}), "aggregate.baselines", ("mape", "rmse", "mape_ratio"))
    if summaries and baseline not in summaries:
        raise EvaluationReportError(f"aggregate.baseline {baseline!r} is not one of aggregate.baselines")
    aggregate = AggregateMetrics(
        customers=_integer(aggregate_data.get("customers"), "aggregate.customers", 1),
        **aggregate_fields,
        baseline=baseline,
        baselines={name: BaselineSummary(*values) for name, values in summaries.items()},
        interval=_interval(aggregate_data.get("interval"), "aggregate.interval"),
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
        scores = _baselines(item.get("baselines", {}), f"{where}.baselines", ("mape", "rmse"))
        if set(scores) != set(summaries):
            raise EvaluationReportError(
                f"{where}.baselines names {sorted(scores)}, aggregate.baselines {sorted(summaries)}"
            )
        per_customer.append(
            CustomerMetrics(
                customer=customer,
                points=points,
                **fields,
                baselines={name: Score(*values) for name, values in scores.items()},
                interval=_interval(item.get("interval"), f"{where}.interval"),
            )
        )
        if (per_customer[-1].interval is None) != (aggregate.interval is None):
            raise EvaluationReportError(f"{where}.interval and aggregate.interval must both be given, or neither")
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
