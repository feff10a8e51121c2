"""The forecaster's candidate models and how they are chosen (pipelines/steps/forecaster.py `train`): the
fixed candidates' forecasts, the ridge prior, and the validation scores the choice is made on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import bench_accuracy
from modelgate.model_repository import HORIZON, WINDOW
from pipelines.steps import evaluate, forecaster, series

WEEK = 7 * 24


def forecast(beta: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """One window [WINDOW] through feature weights [1, HORIZON, F] (normalised units: mean 0, std 1)."""
    params = forecaster.linear_parameters(beta, 4)
    return forecaster.predict(params, window[None, None], torch.zeros(1), torch.ones(1))[0, 0]


def test_a_level_candidate_adds_the_recent_levels_move_to_the_seasonal_window_average(monkeypatch):
    monkeypatch.setattr(forecaster, "LEVEL_CANDIDATES", (24, 168))
    monkeypatch.setattr(forecaster, "MSTL_ALPHAS", ())
    size = forecaster.design()[2].shape[-1]
    window = torch.rand(WINDOW, generator=torch.Generator().manual_seed(2), dtype=torch.float64).float()

    prior, level_24, level_168 = forecaster.fixed_candidates(1, size, torch.device("cpu"))

    seasonal = window.reshape(4, WEEK)[:, :HORIZON].mean(0)  # the same hour of the week over the four weeks
    torch.testing.assert_close(forecast(prior, window), seasonal)
    for beta, span in ((level_24, 24), (level_168, 168)):
        recent = window[WINDOW - span :].mean()
        earlier = torch.stack([window[WINDOW - span - WEEK * k : WINDOW - WEEK * k].mean() for k in (1, 2, 3)]).mean()
        torch.testing.assert_close(forecast(beta, window), seasonal + recent - earlier)


def test_a_level_span_outside_the_features_is_refused(monkeypatch):
    monkeypatch.setattr(forecaster, "LEVEL_CANDIDATES", (5,))
    with pytest.raises(ValueError, match="LEVEL_CANDIDATES span 5"):
        forecaster.fixed_candidates(1, forecaster.design()[2].shape[-1], torch.device("cpu"))


def test_validation_errors_are_the_evaluation_steps_mape_and_rmse():
    """The selection criterion scores candidates with the metrics evaluation judges them by."""
    generator = torch.Generator().manual_seed(5)
    hours = WINDOW + 7 * 24
    readings = 10 + torch.rand(2, hours, generator=generator) * 5
    readings[0, WINDOW + 3 : WINDOW + 9] = float("nan")  # gaps in the validation week are not scored
    readings[1, WINDOW + 30] = 0.0  # a zero reading counts in RMSE, not in MAPE
    mean, std = readings.nanmean(1), torch.full((2,), 2.0)
    validation = forecaster.Validation(readings, mean, std, torch.tensor([WINDOW, WINDOW]), 7 * 24)
    params = forecaster.linear_parameters(torch.zeros(2, 24, forecaster.design()[2].shape[-1]).double(), 4)

    mape, rmse = validation.errors(params)

    actual = readings[:, WINDOW:].reshape(2, 7, 24).numpy()
    forecast = (forecaster.forward(params, validation.windows) * 2.0 + mean[:, None, None]).numpy()
    for c in range(2):
        observed = ~np.isnan(actual[c])
        expected = evaluate._scores(forecast[c], actual[c], observed, observed & (actual[c] != 0))
        assert mape[c].item() == pytest.approx(expected.mape, rel=1e-5)
        assert rmse[c].item() == pytest.approx(expected.rmse, rel=1e-5)


def test_selection_by_mape_and_rmse_weighs_both_relative_to_the_prior(monkeypatch):
    hours = WINDOW + 7 * 24
    readings = 10 + torch.sin(torch.arange(hours) / 3.0)[None, :].repeat(1, 1)
    validation = forecaster.Validation(readings, readings.mean(1), torch.ones(1), torch.tensor([WINDOW]), 7 * 24)
    size = forecaster.design()[2].shape[-1]
    prior = forecaster.linear_parameters(torch.zeros(1, 24, size).double(), 4)
    shifted = torch.zeros(1, 24, size).double()
    shifted[..., -1] = 0.5  # a constant offset: worse on both metrics
    candidates = [prior, forecaster.linear_parameters(shifted, 4)]
    (mape_prior, rmse_prior), (mape_shifted, rmse_shifted) = (validation.errors(c) for c in candidates)

    monkeypatch.setattr(forecaster, "SELECTION", "mape+rmse")
    scores, mapes = validation.scores(candidates)

    assert scores[0, 0].item() == pytest.approx(2.0)
    assert scores[0, 1].item() == pytest.approx((mape_shifted / mape_prior + rmse_shifted / rmse_prior).item())
    assert torch.equal(mapes, torch.stack([mape_prior, mape_shifted], 1))
    monkeypatch.setattr(forecaster, "SELECTION", "rmse only")
    with pytest.raises(ValueError, match="SELECTION"):
        validation.scores(candidates)


def test_members_are_the_top_candidates_by_validation_score_ties_to_the_earlier(monkeypatch):
    scores = torch.tensor([[0.3, 0.1, 0.2, 0.1], [0.0, 0.0, 0.0, 0.0]])  # the second: no validation points
    monkeypatch.setattr(forecaster, "COMBINE", "top")
    monkeypatch.setattr(forecaster, "TOP", 2)
    chosen, weights = forecaster.members(scores, None, fixed=2)
    assert chosen.tolist() == [[1, 3], [0, 1]]
    assert weights.tolist() == [[0.5, 0.5], [0.5, 0.5]]


def test_a_longer_scoring_period_picks_the_one_fixed_candidate_that_competes(monkeypatch):
    """FIXED_SCORING_WEEKS: the fixed candidates are ranked on their longer scores; only the best of them
    competes with the fitted ones on the validation week."""
    monkeypatch.setattr(forecaster, "COMBINE", "top")
    monkeypatch.setattr(forecaster, "TOP", 2)
    scores = torch.tensor([[0.10, 0.20, 0.30, 0.40]])  # validation week: fixed 0 best, then fixed 1
    longer = torch.tensor([[0.5, 0.4]])  # over more weeks the second fixed candidate is better
    chosen, _ = forecaster.members(scores, longer, fixed=2)
    assert chosen.tolist() == [[1, 2]]
    monkeypatch.setattr(forecaster, "COMBINE", "fixed+fitted")
    chosen, _ = forecaster.members(scores, longer, fixed=2)
    assert chosen.tolist() == [[1, 2]]  # fixed 1 (longer scores), then the best fitted


def test_the_model_is_the_mean_of_the_best_fixed_and_the_best_fitted_candidate(monkeypatch):
    scores = torch.tensor([[0.30, 0.20, 0.25, 0.10, 0.40], [0.10, 0.30, 0.50, 0.20, 0.15]])
    monkeypatch.setattr(forecaster, "COMBINE", "fixed+fitted")
    chosen, weights = forecaster.members(scores, None, fixed=2)
    assert chosen.tolist() == [[3, 1], [0, 4]]  # the better of the two first
    assert weights.tolist() == [[0.5, 0.5], [0.5, 0.5]]
    monkeypatch.setattr(forecaster, "COMBINE", "median")
    with pytest.raises(ValueError, match="COMBINE must be"):
        forecaster.members(scores, None, fixed=2)


def test_a_longer_scoring_period_leaves_out_origins_without_a_full_window():
    """Validation over more weeks than a short history has: origins with fewer than WINDOW hours before them
    (in the padded series) are not scored, so no index reaches before the series."""
    hours = WINDOW + 2 * WEEK
    readings = 10 + torch.sin(torch.arange(hours) / 3.0)[None, :]
    ends = torch.tensor([WINDOW + 2 * WEEK - 4 * WEEK])  # four weeks of origins, two of them too early
    validation = forecaster.Validation(readings, readings.mean(1), torch.ones(1), ends, 4 * WEEK)
    scored_days = validation.weight.reshape(-1, HORIZON).sum(1) > 0
    assert scored_days.tolist() == [False] * 14 + [True] * 14


@pytest.mark.parametrize(("name", "value"), [("FIXED_SCORING_WEEKS", 1), ("COMBINE", "top")])
def test_the_checkpoint_fingerprint_covers_each_design_constant(monkeypatch, name, value):
    """A checkpoint of a fit with other design constants is another fit (forecaster.fingerprint)."""
    data = series.SeriesSet(("c0",), np.ones((1, 48), dtype=np.float32), np.array([48]), np.zeros(1, dtype=np.int64))
    hp = forecaster.Hyperparameters()
    before = forecaster.fingerprint(data, hp)
    monkeypatch.setattr(forecaster, name, value)
    assert forecaster.fingerprint(data, hp) != before


def test_the_baseline_candidates_are_the_evaluation_steps_seasonal_naive_forecasts(monkeypatch):
    monkeypatch.setattr(forecaster, "LEVEL_CANDIDATES", ())
    monkeypatch.setattr(forecaster, "BASELINE_CANDIDATES", (168, 24))
    monkeypatch.setattr(forecaster, "MSTL_ALPHAS", ())
    size = forecaster.design()[2].shape[-1]
    window = torch.rand(WINDOW, generator=torch.Generator().manual_seed(4), dtype=torch.float64).float()

    _, weekly, daily = forecaster.fixed_candidates(1, size, torch.device("cpu"))

    assert forecaster.fixed_priors() == [0, 0, 0]
    baselines = evaluate.baseline_forecasts(window.numpy()[None, None])
    for beta, name in ((weekly, evaluate.SEASONAL_NAIVE_168), (daily, evaluate.SEASONAL_NAIVE_24)):
        torch.testing.assert_close(forecast(beta, window), torch.as_tensor(baselines[name][0, 0]))
    monkeypatch.setattr(forecaster, "BASELINE_CANDIDATES", (48,))
    with pytest.raises(ValueError, match="lag 48 must be 24 or 168"):
        forecaster.fixed_candidates(1, size, torch.device("cpu"))


def test_an_mstl_candidate_serves_statsforecasts_mstl_forecast(monkeypatch):
    from statsforecast.models import MSTL, SimpleExponentialSmoothing

    monkeypatch.setattr(forecaster, "LEVEL_CANDIDATES", (24,))
    monkeypatch.setattr(forecaster, "MSTL_ALPHAS", (0.9, 0.5))
    size = forecaster.design()[2].shape[-1]
    fixed = forecaster.fixed_candidates(1, size, torch.device("cpu"))
    assert forecaster.fixed_priors() == [0, 0, 1, 2]
    hours = bench_accuracy.taylor().values[0].astype(np.float64)  # the real series, hourly GWh
    for offset in (0, 700):
        window = hours[offset : offset + WINDOW]
        mean, std = window.mean(), window.std()
        for index, alpha in ((2, 0.9), (3, 0.5)):
            params = forecaster.linear_parameters(fixed[index], 4, forecaster.one_prior(index - 1, 1))
            ours = forecaster.predict(params, torch.tensor(window, dtype=torch.float32)[None, None],
                                      torch.tensor([mean], dtype=torch.float32),
                                      torch.tensor([std], dtype=torch.float32))[0, 0]  # fmt: skip
            theirs = MSTL(season_length=[24, 168], trend_forecaster=SimpleExponentialSmoothing(alpha=alpha))
            expected = theirs.forecast(y=window, h=HORIZON)["mean"]
            np.testing.assert_allclose(ours.numpy(), expected, rtol=2e-6)


def test_a_customer_whose_model_is_mstl_alone_is_served_mstls_map(monkeypatch):
    # The real series in 4 overlapping cuts; COMBINE "top" with TOP 1 serves one member alone, so a customer
    # that picks the MSTL candidate is served exactly its map (and the others are not).
    monkeypatch.setattr(forecaster, "MSTL_ALPHAS", (0.9,))
    monkeypatch.setattr(forecaster, "COMBINE", "top")
    monkeypatch.setattr(forecaster, "TOP", 1)
    real = bench_accuracy.taylor()
    hours = real.values[0]
    lengths = np.array([8, 9, 10, 11]) * WEEK
    values = np.full((4, int(lengths.max())), np.nan, dtype=np.float32)
    for row, length in enumerate(lengths):
        values[row, :length] = hours[:length]
    data = series.SeriesSet(tuple(f"cut-{w}" for w in (8, 9, 10, 11)), values, lengths, np.repeat(real.starts, 4))

    models = forecaster.train(data, forecaster.Hyperparameters(), progress=False)

    mstl_index = len(forecaster.fixed_priors()) - 1
    served = models.params.w_in[:, :, :HORIZON].double()
    mstl_map = forecaster.priors()[1]
    alone = models.chosen_epochs == mstl_index
    assert alone.any(), f"no cut picked the MSTL candidate: {models.chosen_epochs.tolist()}"
    for row in range(4):
        same = torch.allclose(served[row], mstl_map, rtol=0, atol=1e-6) and not models.params.b_in[row].any()
        assert same == bool(alone[row])
    # ... and the served graph (gap filling, normalisation and that map in one ONNX model) forecasts what
    # forecaster.predict does, on windows with every kind of gap.
    from pipelines.packaging import onnx_export

    template = onnx_export.served_template(onnx_export.export_template(models.hyperparameters.hidden))
    row = int(alone.nonzero()[0, 0])
    mean, std = float(models.mean[row]), float(models.std[row])
    model = onnx_export.customer_model(template, models.params, row, mean, std)
    onnx_export.verify(model, models.params, row, np.random.default_rng(3), mean, std)  # raises past 1e-4 relative
