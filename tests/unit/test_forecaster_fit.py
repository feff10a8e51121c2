"""The closed-form fit's cheaper arithmetic computes what the plain formulas do (pipelines/steps/forecaster.py):
the normal equations by blocks, the candidates on the sums in place, W_lin from the basis's parts, and a
window's decay whatever block it is summed in."""

from __future__ import annotations

import torch

from modelgate.model_repository import HORIZON
from pipelines.steps import forecaster


def test_a_windows_decay_does_not_depend_on_the_block_it_is_summed_in():
    # 8 customers x 16 windows, summed whole and in blocks of 3 (3, 3, 2): a plain vectorised pow rounds some
    # elements of the shorter tensors otherwise (here, on this x86 machine: 2 of 128; and the block-size test of
    # test_training.py failed).
    generator = torch.Generator().manual_seed(0)
    age = torch.randint(0, 20_000, (8, 16), generator=generator).float()  # up to two years of hours
    whole = forecaster._decay(age, 336)
    blocks = torch.cat([forecaster._decay(age[first : first + 3], 336) for first in range(0, 8, 3)])
    assert torch.equal(whole, blocks)
    assert torch.allclose(whole, (0.5 ** (age.double() / 336)).float(), rtol=1e-6, atol=0)
    fractional = age + 0.5  # not whole hours: the formula itself
    assert torch.equal(forecaster._decay(fractional, 336), 0.5 ** (fractional / 336))


def _problem(customers: int = 3, windows: int = 200):
    generator = torch.Generator().manual_seed(1)
    w = torch.randn(customers, windows, forecaster.WINDOW, generator=generator, dtype=torch.float64)
    target = torch.randn(customers, windows, HORIZON, generator=generator, dtype=torch.float64)
    weight = torch.rand(customers, windows, HORIZON, generator=generator, dtype=torch.float64)
    age = torch.randint(0, 900, (customers, windows), generator=generator).double()
    return w, target, weight, age


def test_the_sums_by_blocks_are_the_full_feature_products():
    w, target, weight, age = _problem()
    equations = forecaster.NormalEquations(len(w), torch.device("cpu"))
    equations.add(w, target, weight, age)
    picks, shared, _ = forecaster.design()  # the features in float64 (`features` reads them in float32)
    common = torch.cat([w @ shared.double(), torch.ones_like(w[..., :1])], -1)[:, :, None].expand(-1, -1, HORIZON, -1)
    x = torch.cat([w[..., picks], common], -1).permute(0, 2, 1, 3)  # [C, HORIZON, N, F]
    residual = (target - w @ forecaster.seasonal_window_average()).transpose(1, 2)
    for index, half_life in enumerate(forecaster.HALF_LIVES):
        decay = 0.5 ** (age / half_life) if half_life else torch.ones_like(age)
        v = (weight.square() * decay[..., None]).transpose(1, 2)  # [C, HORIZON, N]
        gram = (x * v[..., None]).transpose(-1, -2) @ x
        moment = ((x * v[..., None]).transpose(-1, -2) @ residual[..., None]).squeeze(-1)
        # `shared` holds its thirds in float32; the sums take the deviations' thirds exactly: 1e-7, not 1e-16
        assert (equations.gram[index] - gram).abs().max() <= 1e-6 * gram.abs().max()
        assert (equations.moment[index] - moment).abs().max() <= 1e-6 * moment.abs().max()


def test_every_candidate_is_the_ridge_solve_of_its_half_life_and_strength():
    w, target, weight, age = _problem()
    equations = forecaster.NormalEquations(len(w), torch.device("cpu"))
    equations.add(w, target, weight, age)
    strengths = (1e-5, 1e-2, 1.0)
    got = equations.candidates(strengths)
    expected = [
        equations.solve(torch.full((len(w),), s, dtype=torch.float64), torch.full((len(w),), life), False, 0)
        for life in range(len(forecaster.HALF_LIVES))
        for s in strengths
    ]
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert (a - b).abs().max() <= 1e-9 * b.abs().max()


def test_the_served_weights_from_the_basis_parts_are_the_dense_map():
    beta = torch.randn(5, HORIZON, forecaster.design()[2].shape[-1], dtype=torch.float64)
    params = forecaster.linear_parameters(beta, 4)
    dense = forecaster.seasonal_window_average() + torch.einsum("hwf,chf->cwh", forecaster.design()[2], beta)
    assert torch.allclose(params.w_in[..., :HORIZON].double(), dense, rtol=0, atol=1e-5)
    assert torch.equal(params.b_in[:, 0, :HORIZON], beta[..., -1].float())
    assert not params.w_in[..., HORIZON:].any()


def test_the_cholesky_ridge_solve_is_lus_and_a_system_that_fails_to_factor_falls_back_to_lu():
    # Gram matrices plus a ridge, as the fit builds them, one of them made indefinite: Cholesky cannot factor it,
    # so without the LU fallback its solution would be whatever the failed factor gives.
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 200, 42, generator=generator, dtype=torch.float64)
    gram = x.transpose(-1, -2) @ x
    gram[1, 2] = torch.diag(torch.linspace(-10.0, 1.0, 42, dtype=torch.float64)) + 1e-3  # symmetric, indefinite
    moment = torch.randn(4, 3, 42, generator=generator, dtype=torch.float64)
    factor = torch.empty_like(gram).mT  # a reused buffer: the second call must not see the first's factor
    for strength in (1e-5, 1.0):
        ridge = torch.full((4, 3, 1), strength, dtype=torch.float64)
        system = gram + ridge[..., None] * torch.eye(42, dtype=torch.float64)
        assert int((torch.linalg.cholesky_ex(system)[1] != 0).sum()) == 1
        expected = torch.linalg.solve(system, moment)
        for got in (forecaster._ridge_solve(gram, ridge, moment), forecaster._ridge_solve(gram, ridge, moment, factor)):
            assert ((got - expected).abs() <= 1e-9 * expected.abs().amax(-1, keepdim=True)).all()


def test_a_candidate_scored_without_the_relu_columns_scores_as_served():
    # The fit scores candidates with hidden=0 (the served ReLU correction is zeros): the same errors, bit for bit.
    generator = torch.Generator().manual_seed(3)
    readings = 10 + torch.rand(3, 6 * forecaster.WEEK, generator=generator)
    readings[1, 100:130] = torch.nan
    mean, std = readings.nanmean(1), torch.full((3,), 2.0)
    validation = forecaster.Validation(readings, mean, std, torch.full((3,), 5 * forecaster.WEEK), forecaster.WEEK)
    beta = 0.01 * torch.randn(3, HORIZON, 42, generator=generator, dtype=torch.float64)
    served = validation.errors(forecaster.linear_parameters(beta, forecaster.Hyperparameters().hidden))
    scored = validation.errors(forecaster.linear_parameters(beta, 0))
    assert forecaster.Hyperparameters().hidden > 0
    assert all(torch.equal(a, b) for a, b in zip(served, scored, strict=True))


def test_the_sums_of_candidates_fitted_on_mstls_forecast_use_its_residual(monkeypatch):
    monkeypatch.setattr(forecaster, "MSTL_ALPHAS", (0.9,))
    monkeypatch.setattr(forecaster, "FITTED_PRIOR", 1)
    w, target, weight, age = _problem()
    equations = forecaster.NormalEquations(len(w), torch.device("cpu"))
    equations.add(w, target, weight, age)
    monkeypatch.setattr(forecaster, "FITTED_PRIOR", 0)  # the same sums with the seasonal window average's prior
    plain = forecaster.NormalEquations(len(w), torch.device("cpu"))
    plain.add(w, target - w @ forecaster.priors()[1] + w @ forecaster.seasonal_window_average(), weight, age)
    # The same Gram matrices; the moments of the residual against MSTL's forecast (float32 map: 1e-6).
    torch.testing.assert_close(equations.gram, plain.gram, rtol=0, atol=0)
    assert (equations.moment - plain.moment).abs().max() <= 1e-5 * plain.moment.abs().max()


def test_the_served_weights_start_from_each_customers_mix_of_priors(monkeypatch):
    monkeypatch.setattr(forecaster, "MSTL_ALPHAS", (0.9, 0.5))
    beta = torch.randn(3, HORIZON, forecaster.design()[2].shape[-1], dtype=torch.float64)
    mix = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.25, 0.75]], dtype=torch.float64)
    params = forecaster.linear_parameters(beta, 4, mix)
    maps = forecaster.priors()
    assert maps.shape == (3, forecaster.WINDOW, HORIZON)
    start = torch.einsum("ck,kwh->cwh", mix, maps)
    dense = start + torch.einsum("hwf,chf->cwh", forecaster.design()[2], beta)
    assert torch.allclose(params.w_in[..., :HORIZON].double(), dense, rtol=0, atol=1e-5)
    # mix None is the seasonal window average alone, as before
    torch.testing.assert_close(forecaster.linear_parameters(beta[:1], 4).w_in, params.w_in[:1])
