"""Evaluation step (SageMaker Processing): every customer's model against the cheap peers an operator would use
instead (seasonal naive 24 h and 168 h, statsforecast's SeasonalWindowAverage over four weeks) on the held-out
tail of its series, which training never saw.

Inputs: /opt/ml/processing/input/model (the training job's model.tar.gz), /opt/ml/processing/input/curated.
Output: /opt/ml/processing/output/evaluation/
    evaluation.json   modelgate/evaluation_report.py: per-customer and aggregate MAPE/RMSE of the model and of
                      every baseline; the pipeline's condition reads aggregate.mape_ratio (model / the best
                      baseline, by mean MAPE) through a PropertyFile
    forecasts.png     forecasts vs actuals over the held-out days, for the worst, best and median customers,
                      then the next worst

Protocol: the held-out tail (hyperparameter holdout_hours, read from the model artifact) is cut into days; for
each day the model forecasts the next HORIZON hours from the WINDOW hours before it, gaps filled as in serving.
The baselines (`baseline_forecasts`) forecast from the same gap-filled four-week window as the model (gaps and
the hours before a short history filled as serving fills them, pipelines/steps/forecaster.py `fill_gaps`):
    seasonal_naive_24              the same hour one day earlier
    seasonal_naive_168             the same hour one week earlier
    seasonal_window_average_168x4  the mean of the same hour of the week over the four weeks (statsforecast's
                                   SeasonalWindowAverage(season_length=168, window_size=4) on the filled series).
                                   Computed here in numpy (0.04 ms per series with statsforecast, which would
                                   bring numba and pandas<3 into the job); tests/unit/test_evaluate_metrics.py
                                   checks it against statsforecast's.
statsforecast's fitted models are no cheap peer: AutoETS(season_length=24) costs 0.66 s per fit on one week,
MSTL(24, 168) 0.9 s on four weeks (bench/bench_accuracy.py compares them on a sample).
Hours without a reading are left out; MAPE also leaves out hours whose reading is 0.

Probabilistic forecasts: the P10/P90 the ensemble serves (pipelines/steps/quantiles.py `bounds` of the same
point forecast, with the offsets the training step estimated on the validation week) are scored on the same
held-out hours, per customer and as the mean over customers: the P10-P90 coverage (target 80 %) and the mean
pinball loss of P10, P50 and P90 (evaluation_report.IntervalScore). The plot shades the P10-P90 band.

Bounded memory: the step goes through the training artifact shard by shard (pipelines/steps/artifact.py: one
per training shard of customers), reading only that shard's weights and series (pipelines/steps/series.py reads
them a customer at a time); it keeps the scores, and makes the plotted customers' forecasts again at the end. Peak
memory is set by the training shard size.

Arguments: --model-package-group NAME (required), --plot-customers N (default 4).
Runtime: `python pipelines/steps/evaluate.py ...` from the source bundle (pipelines/steps/paths.py
RUNTIME_SOURCES); needs torch, numpy, pandas, pyarrow, matplotlib.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script (SageMaker): make the source bundle's root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import torch

from modelgate.evaluation_report import (
    REPORT_FILE,
    SEASONAL_NAIVE_24,
    SEASONAL_NAIVE_168,
    SEASONAL_WINDOW_AVERAGE,
    CustomerScores,
    EvaluationReport,
    IntervalScore,
    Score,
)
from modelgate.model_repository import HORIZON, WINDOW
from pipelines.steps import artifact, forecaster, quantiles, series
from pipelines.steps.paths import FORECAST_PLOT_FILE, EvaluatePaths, StepInputError, fail


@dataclass
class Forecasts:
    """Held-out forecasts of C customers over K days: arrays [C, K, HORIZON] in reading units."""

    customers: tuple[str, ...]
    actual: np.ndarray
    model: np.ndarray
    baselines: dict[str, np.ndarray]  # name (modelgate.evaluation_report.BASELINES) -> [C, K, HORIZON]
    context: np.ndarray  # [C, WINDOW] readings before the held-out tail, for plots
    first_hour: np.ndarray  # [C] microseconds since the epoch of the first held-out hour
    p10: np.ndarray | None = None  # [C, K, HORIZON] the served quantiles (quantiles.bounds), when the models have them
    p90: np.ndarray | None = None

    @classmethod
    def concat(cls, parts: list[Forecasts]) -> Forecasts:
        def quantile(name: str) -> np.ndarray | None:
            arrays = [getattr(part, name) for part in parts]
            return None if any(a is None for a in arrays) else np.concatenate(arrays)

        return cls(
            customers=tuple(c for part in parts for c in part.customers),
            actual=np.concatenate([part.actual for part in parts]),
            model=np.concatenate([part.model for part in parts]),
            baselines={name: np.concatenate([part.baselines[name] for part in parts]) for name in parts[0].baselines},
            context=np.concatenate([part.context for part in parts]),
            first_hour=np.concatenate([part.first_hour for part in parts]),
            p10=quantile("p10"),
            p90=quantile("p90"),
        )


WEEK = 7 * 24


def baseline_forecasts(filled: np.ndarray) -> dict[str, np.ndarray]:
    """The peers' forecasts for the HORIZON hours after each window: filled [C, K, WINDOW], the gap-filled
    windows (reading units) the model is given too, so every method sees the same input."""
    weeks = filled.reshape(*filled.shape[:-1], WINDOW // WEEK, WEEK)[..., :HORIZON]  # the same hour of the week
    return {
        SEASONAL_NAIVE_24: filled[..., WINDOW - HORIZON :],
        SEASONAL_NAIVE_168: filled[..., WINDOW - WEEK : WINDOW - WEEK + HORIZON],
        SEASONAL_WINDOW_AVERAGE: weeks.mean(axis=-2, dtype=np.float64).astype(np.float32),
    }


def holdout_forecasts(models: forecaster.TrainedModels, data: series.SeriesSet) -> Forecasts:
    missing = sorted(set(models.customers) - set(data.customers))
    if missing:
        raise StepInputError(f"the curated data lacks {len(missing)} trained customer(s), e.g. {missing[:5]}")
    data = forecaster.padded(data.subset([data.customers.index(c) for c in models.customers]))
    holdout = models.hyperparameters.holdout_hours
    start = torch.as_tensor(data.lengths - holdout)  # first held-out hour, per customer
    windows, actual, model = quantiles.origin_forecasts(models, data, start, holdout // HORIZON)
    scale, mean = models.std[:, None, None], models.mean[:, None, None]
    filled = forecaster.fill_gaps((windows - mean) / scale) * scale + mean
    values = torch.as_tensor(data.values)
    context = values[torch.arange(len(data))[:, None], start[:, None] - WINDOW + torch.arange(WINDOW)]
    p10 = p90 = None
    if models.intervals is not None:  # the served P10/P90: the graph's arithmetic on the same forecast
        p10, p90 = quantiles.bounds(model.numpy(), *(t.numpy() for t in models.intervals.tensors()))
    return Forecasts(
        customers=models.customers,
        actual=actual.numpy(),
        model=model.numpy(),
        baselines=baseline_forecasts(filled.numpy()),
        context=context.numpy(),
        first_hour=data.starts + (data.lengths - holdout) * series.HOUR_US,
        p10=p10,
        p90=p90,
    )


def _scores(forecast: np.ndarray, actual: np.ndarray, observed: np.ndarray, nonzero: np.ndarray) -> Score:
    """MAPE over hours with a non-zero reading, RMSE over hours with a reading."""
    error = forecast.astype(np.float64) - actual
    mape = float(np.mean(np.abs(error[nonzero]) / np.abs(actual[nonzero])))
    return Score(mape=mape, rmse=float(np.sqrt(np.mean(np.square(error[observed])))))


def interval_score(p10: np.ndarray, p50: np.ndarray, p90: np.ndarray, actual: np.ndarray) -> IntervalScore:
    """Coverage of [P10, P90] and each quantile's mean pinball loss over the hours with a reading."""
    return IntervalScore(
        coverage=quantiles.coverage(p10, p90, actual),
        pinball_p10=quantiles.pinball(p10, actual, quantiles.LOW),
        pinball_p50=quantiles.pinball(p50, actual, 0.5),
        pinball_p90=quantiles.pinball(p90, actual, quantiles.HIGH),
    )


def customer_scores(forecasts: Forecasts) -> tuple[list[CustomerScores], dict[str, str]]:
    """The model's and every baseline's score per customer, and the customers that cannot be scored (why)."""
    scores, skipped = [], {}
    for index, customer in enumerate(forecasts.customers):
        actual = forecasts.actual[index].astype(np.float64)
        observed = ~np.isnan(actual)
        nonzero = observed & (np.abs(np.nan_to_num(actual)) > 0)
        if not observed.any() or not nonzero.any():
            skipped[customer] = "no non-zero reading in the held-out tail to evaluate against"
            continue
        scores.append(
            CustomerScores(
                customer=customer,
                model=_scores(forecasts.model[index], actual, observed, nonzero),
                baselines={
                    name: _scores(forecast[index], actual, observed, nonzero)
                    for name, forecast in forecasts.baselines.items()
                },
                points=int(observed.sum()),
                interval=None
                if forecasts.p10 is None
                else interval_score(forecasts.p10[index], forecasts.model[index], forecasts.p90[index], actual),
            )
        )
    return scores, skipped


def plot_selection(report: EvaluationReport, count: int = 4) -> dict[str, str]:
    """{customer: role} of the plot's panels, in order: worst, best, median, then the next worst ones (an
    approver looks for what got worse, not for more good news)."""
    ranked = sorted(report.per_customer, key=lambda m: (m.mape_ratio, m.customer))
    roles = {ranked[-1].customer: "worst"}
    roles.setdefault(ranked[0].customer, "best")
    roles.setdefault(ranked[len(ranked) // 2].customer, "median")
    for rank, metrics in enumerate(reversed(ranked[:-1]), start=2):
        roles.setdefault(metrics.customer, f"{rank}. worst")
    return dict(list(roles.items())[: max(1, count)])


def plot(forecasts: Forecasts, report: EvaluationReport, path: Path, count: int = 4) -> list[str]:
    """Forecasts vs actuals for the best, median and worst customers (by MAPE ratio). Returns who is shown."""
    import matplotlib

    matplotlib.use("Agg")  # no display in a container
    import matplotlib.pyplot as plt

    roles = plot_selection(report, count)
    baseline = report.aggregate.baseline
    unique = list(roles)
    figure, axes = plt.subplots(len(unique), 1, figsize=(12, 2.8 * len(unique)), squeeze=False)
    for axis, customer in zip(axes[:, 0], unique, strict=True):
        index = forecasts.customers.index(customer)
        metrics = report.customer(customer)
        hours_before = np.arange(-WINDOW, 0)
        hours = np.arange(forecasts.actual.shape[1] * HORIZON)
        axis.plot(hours_before, forecasts.context[index], color="0.6", linewidth=0.8, label="history")
        axis.plot(hours, forecasts.actual[index].ravel(), color="black", linewidth=1.0, label="actual")
        axis.plot(hours, forecasts.baselines[baseline][index].ravel(), color="tab:orange", linestyle="--",
                  linewidth=0.9, label=f"{baseline} (MAPE {metrics.baseline_mape:.1%})")  # fmt: skip
        axis.plot(hours, forecasts.model[index].ravel(), color="tab:blue", linewidth=1.2,
                  label=f"model (MAPE {metrics.mape:.1%})")  # fmt: skip
        if forecasts.p10 is not None and metrics.interval is not None:
            band = f"P10-P90 (covers {metrics.interval.coverage:.0%})"
            axis.fill_between(hours, forecasts.p10[index].ravel(), forecasts.p90[index].ravel(), color="tab:blue",
                              alpha=0.18, linewidth=0, label=band)  # fmt: skip
        for day in range(0, len(hours) + 1, HORIZON):
            axis.axvline(day, color="0.9", linewidth=0.6, zorder=0)
        axis.set_title(f"{customer} ({roles[customer]}): MAPE ratio {metrics.mape_ratio:.2f}", fontsize=10, loc="left")
        axis.set_ylabel("kWh")
        axis.legend(loc="upper left", fontsize=8, ncol=5, frameon=False)
    axes[-1, 0].set_xlabel("hours from the start of the held-out tail (each day forecast from the week before)")
    figure.suptitle(
        f"{report.model_package_group}: {report.aggregate.customers} customers, MAPE {report.aggregate.mape:.1%}"
        f" vs {baseline} {report.aggregate.baseline_mape:.1%} (ratio {report.aggregate.mape_ratio:.2f})"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return unique


def run(paths: EvaluatePaths, model_package_group: str, plot_customers: int = 4) -> EvaluationReport:
    """Shard by shard of the training artifact: one shard's weights, series and forecasts in memory at a time;
    only the scores (a few numbers per customer) are kept, and the plotted customers' forecasts are made again."""
    with tempfile.TemporaryDirectory() as scratch:
        shards = artifact.shards(paths.model, Path(scratch))
        trained = [c for shard in shards for c in shard.customers]
        if not trained:
            raise StepInputError("the model artifact holds no trained customer")
        files = series.curated_files(paths.curated)
        missing = sorted(set(trained) - set(files))
        if missing:
            raise StepInputError(f"the curated data lacks {len(missing)} trained customer(s), e.g. {missing[:5]}")
        scores, unevaluated = [], {}
        for shard in shards:
            if shard.customers:
                part, skipped = customer_scores(_shard_forecasts(shard, paths.curated, files))
                scores += part
                unevaluated.update(skipped)
        if not scores:
            raise StepInputError(f"no customer could be evaluated: {next(iter(unevaluated.values()))}")
        report = EvaluationReport.from_scores(
            model_package_group=model_package_group,
            window=WINDOW,
            horizon=HORIZON,
            holdout_hours=shards[0].hyperparameters.holdout_hours,
            scores=sorted(scores, key=lambda score: score.customer),
            skipped={**artifact.skipped(shards), **unevaluated},
        )
        paths.evaluation.mkdir(parents=True, exist_ok=True)
        (paths.evaluation / REPORT_FILE).write_text(report.to_json())
        if plot_customers > 0:
            shown = set(plot_selection(report, plot_customers))
            parts = [_shard_forecasts(s, paths.curated, files, shown) for s in shards if shown & set(s.customers)]
            plot(Forecasts.concat(parts), report, paths.evaluation / FORECAST_PLOT_FILE, plot_customers)
    return report


def _shard_forecasts(
    shard: artifact.Shard, curated: Path, files: dict[str, list[Path]], only: set[str] | None = None
) -> Forecasts:
    models = shard.load()
    if only is not None:
        models = models.select([i for i, c in enumerate(models.customers) if c in only])
    return holdout_forecasts(models, series.read_curated(curated, models.customers, files))


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(
        description="ModelGate evaluation: per-customer MAPE/RMSE vs the best cheap baseline"
    )
    parser.add_argument("--model-package-group", "--model_package_group", dest="group", required=True)
    parser.add_argument("--plot-customers", "--plot_customers", dest="plot_customers", type=int, default=4)
    args = parser.parse_args(argv)
    try:
        report = run(EvaluatePaths.from_environ(environ), args.group, args.plot_customers)
    except StepInputError as error:
        return fail(f"evaluate: {error}", environ)
    aggregate = report.aggregate
    interval = aggregate.interval
    print(
        f"evaluate: {aggregate.customers} customers, MAPE {aggregate.mape:.4f}"
        f" vs {aggregate.baseline} {aggregate.baseline_mape:.4f} (ratio {aggregate.mape_ratio:.3f}),"
        f" RMSE {aggregate.rmse:.4f} vs {aggregate.baseline_rmse:.4f},"
        + (f" P10-P90 coverage {interval.coverage:.3f}, mean pinball {interval.mean_pinball:.4f}," if interval else "")
        + f" {len(report.skipped)} skipped",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
