"""Batched training: one model per customer, each exactly the model it would be if trained alone (so sharding
over hosts changes nothing), resumable from checkpoints, and the step script fails clearly on bad input."""

from __future__ import annotations

import json
import shutil
import tarfile
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from modelgate.model_repository import HORIZON, WINDOW
from pipelines import datagen
from pipelines.steps import artifact, evaluate, forecaster, prep, quantiles, series, train
from pipelines.steps.paths import (
    FORECAST_PLOT_FILE,
    OPT_ML_ENV,
    EvaluatePaths,
    PrepPaths,
    StepInputError,
)

HP = forecaster.Hyperparameters(batch_size=16, holdout_hours=48)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The suite runs on shared cores, where torch's threads spin waiting for each other (pipelines/local_runner.py
    LocalRunSettings.threads); results do not depend on it (tolerances below)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    base = tmp_path_factory.mktemp("prep")
    paths = PrepPaths.from_environ({OPT_ML_ENV: str(base)})
    datagen.generate(datagen.DatasetSpec(customers=8, days=28, seed=3), paths.raw)
    prep.run(paths, workers=1)
    return paths.curated


@pytest.fixture(scope="module")
def data(curated):
    return series.read_curated(curated)


def close(a: forecaster.ForecasterParameters, b: forecaster.ForecasterParameters) -> bool:
    return all(torch.allclose(x, y, rtol=1e-5, atol=1e-6) for x, y in zip(a.tensors(), b.tensors(), strict=True))


def close_intervals(a: quantiles.Intervals, b: quantiles.Intervals) -> bool:
    return all(torch.allclose(x, y, rtol=1e-4, atol=1e-5) for x, y in zip(a.tensors(), b.tensors(), strict=True))


def test_series_are_hourly_per_customer_with_gaps_as_nan(data, curated):
    assert data.customers == tuple(datagen.customer_ids(8))
    assert data.values.dtype == np.float32
    frame = pq.read_table(curated / "customer=cust-00004").to_pandas()
    first, last = frame["timestamp"].min(), frame["timestamp"].max()
    index = data.customers.index("cust-00004")
    assert data.lengths[index] == (last - first) / pd.Timedelta(hours=1) + 1
    assert data.hours(index)[0] == first
    expected = frame.set_index("timestamp")["reading"].reindex(data.hours(index)).to_numpy(np.float32)
    np.testing.assert_array_equal(data.values[index, : data.lengths[index]], expected)  # NaN where no reading
    assert np.isnan(expected).any()


def test_fill_gaps_carries_the_last_reading_and_zero_before_any():
    window = torch.tensor([[[np.nan, 2.0, np.nan, np.nan, 5.0, np.nan]]])
    assert forecaster.fill_gaps(window).tolist() == [[[0.0, 2.0, 2.0, 2.0, 5.0, 5.0]]]
    carried, age = forecaster.carried_forward(window[0])
    assert carried[0, 3].item() == 2.0
    assert age[0, 3].item() == 2.0
    assert age[0, 0].item() == float("inf")


def test_training_windows_are_the_gap_filled_windows_with_their_targets_and_loss_weights():
    # Gaps everywhere, long ones included, so windows that start in a gap (nothing to carry forward yet) and
    # targets with missing hours are both sampled.
    generator = torch.Generator().manual_seed(7)
    hours = forecaster.SPAN + 400
    readings = 5 + torch.rand(3, hours, generator=generator)
    readings[torch.rand(3, hours, generator=generator) < 0.3] = float("nan")
    readings[1, 50:120] = float("nan")
    readings[2, :250] = float("nan")  # more than a week before the first reading, as `padded` makes it
    mean, std = torch.tensor([5.5, 5.0, 6.0]), torch.tensor([0.3, 0.5, 0.2])
    sampler = forecaster.WindowSampler(readings, mean, std, batch_size=64)
    starts = torch.randint(0, hours - forecaster.SPAN + 1, (3, 64), generator=generator)
    windows, target, weight, observed = sampler.at((sampler.row_of_customer + starts).reshape(-1))

    def spans(matrix):
        return torch.stack([matrix[c, s : s + forecaster.SPAN] for c in range(3) for s in starts[c]]).view(3, 64, -1)

    series = (readings - mean[:, None]) / std[:, None]
    raw, raw_target, reading = spans(series), spans(series)[..., WINDOW:], spans(readings)[..., WINDOW:]
    assert torch.isnan(raw[..., 0]).any()  # some windows start in a gap
    assert torch.equal(windows, forecaster.fill_gaps(raw[..., :WINDOW]))  # what the Triton preprocess computes
    assert torch.equal(target, torch.nan_to_num(raw_target))
    floor = 0.05 * mean.abs()[:, None, None] + 1e-6
    relative = torch.where(torch.isnan(reading), 0.0, std[:, None, None] / torch.maximum(reading.abs(), floor))
    assert torch.allclose(weight, relative)
    assert torch.equal(observed, (~torch.isnan(raw_target)).sum((1, 2)))


def test_training_starts_from_the_seasonal_window_average_of_the_four_weeks():
    keys = forecaster.customer_keys(["a", "b"], seed=1)
    params = forecaster.ForecasterParameters.initial(keys, hidden=4, device=torch.device("cpu"))
    windows = torch.randn(2, 3, WINDOW)
    # The same hour of the week in each of the four weeks before the forecast hour, averaged.
    expected = windows.reshape(2, 3, 4, 168)[..., :HORIZON].mean(dim=2)
    assert torch.allclose(forecaster.forward(params, windows), expected, atol=1e-6)


def test_each_customer_trains_exactly_as_if_alone(data):
    together = forecaster.train(data, HP, progress=False)
    alone = forecaster.train(data.subset([5]), HP, progress=False)
    pair = forecaster.train(data.subset([2, 5]), HP, progress=False)
    index = together.customers.index(data.customers[5])
    assert close(together.params.select(slice(index, index + 1)), alone.params)
    assert close(pair.params.select(slice(1, 2)), alone.params)
    assert torch.equal(together.mean[index : index + 1], alone.mean)
    assert not close(together.params.select(slice(0, 1)), alone.params)  # and customers do differ


def weekly_with_level_shifts(customers: int, weeks: int, seed: int) -> series.SeriesSet:
    """A weekly profile whose level steps every few days: the seasonal window average lags each step, a model
    that reads the recent level against earlier weeks (forecaster.design) does not."""
    rng = np.random.default_rng(seed)
    hours = np.arange(weeks * 168)
    profile = 10 + 3 * np.sin(2 * np.pi * hours / 24) + 2 * (hours % 168 < 120)
    steps = rng.normal(0, 1.0, size=(customers, len(hours) // 168 + 2))
    level = np.repeat(np.cumsum(steps, axis=1), 168, axis=1)[:, 84 : 84 + len(hours)]  # a step mid-week
    values = profile + level + rng.normal(0, 0.1, size=(customers, len(hours)))
    ids = tuple(f"c{i}" for i in range(customers))
    return series.SeriesSet(
        ids, values.astype(np.float32), np.full(customers, len(hours)), np.zeros(customers, np.int64)
    )


def test_the_recent_level_is_read_against_earlier_weeks():
    data = weekly_with_level_shifts(customers=3, weeks=9, seed=4)
    models = forecaster.train(data, forecaster.Hyperparameters(holdout_hours=7 * 24), progress=False)
    scores, _ = evaluate.customer_scores(evaluate.holdout_forecasts(models, data))
    for score in scores:
        assert score.model.mape < 0.75 * score.baselines[evaluate.SEASONAL_WINDOW_AVERAGE].mape
    assert (models.chosen_epochs > 0).all()  # another candidate won the validation week, not the prior


def test_the_held_out_tail_never_shapes_the_models(data):
    changed = series.SeriesSet(data.customers, data.values.copy(), data.lengths, data.starts)
    for row, length in enumerate(data.lengths):
        changed.values[row, length - HP.holdout_hours : length] *= 3.0
    original, altered = forecaster.train(data, HP, progress=False), forecaster.train(changed, HP, progress=False)
    assert torch.equal(original.chosen_epochs, altered.chosen_epochs)
    assert close(original.params, altered.params)


def test_the_fit_is_the_weighted_ridge_solution_on_every_training_window(data):
    """NormalEquations' chunked sums equal one least-squares problem over all of a customer's windows, built
    independently here from the padded series with fill_gaps (the serving transform)."""
    hp = forecaster.Hyperparameters(holdout_hours=48, batch_size=16)
    one = forecaster.padded(data.subset([3]))
    mean, std = (torch.as_tensor(v) for v in forecaster.normalisation(one, hp))
    readings = torch.as_tensor(one.values)
    end = int(one.lengths[0]) - hp.holdout_hours - hp.validation_hours
    starts = torch.arange(end - forecaster.SPAN + 1)
    spans = torch.stack([readings[0, s : s + forecaster.SPAN] for s in starts])
    windows = forecaster.fill_gaps((spans[:, :WINDOW] - mean) / std)
    reading = spans[:, WINDOW:]
    floor = 0.05 * mean.abs() + 1e-6
    weight = torch.where(torch.isnan(reading), 0.0, (std / torch.maximum(reading.abs(), floor)) ** 2).double()
    target = torch.nan_to_num((reading - mean) / std).double()
    residual = target - windows.double() @ forecaster.seasonal_window_average()
    x = forecaster.features(windows[None])[0].double()  # [HORIZON, N, F]
    equations = forecaster.NormalEquations(1, torch.device("cpu"))
    for first in range(0, len(starts), hp.batch_size):
        chunk = starts[first : first + hp.batch_size]
        sampler = forecaster.WindowSampler(readings, mean[None], std[None], len(chunk))
        w, t, wt, _ = sampler.at(chunk)
        equations.add(w, t, wt, torch.zeros(1, len(chunk)))
    strength = torch.tensor([1e-2], dtype=torch.float64)
    got = equations.solve(strength, torch.tensor([0]), False, 0)[0]
    for h in range(HORIZON):
        gram = (x[h] * weight[:, h, None]).T @ x[h]
        scale = gram.diagonal().mean()
        expected = torch.linalg.solve(gram + 1e-2 * scale * torch.eye(len(gram), dtype=torch.float64),
                                      (x[h] * weight[:, h, None]).T @ residual[:, h])  # fmt: skip
        assert (got[h] - expected).abs().max() <= 1e-3 * expected.abs().max()  # float32 sums, float64 solve


def test_the_refit_adds_the_validation_windows_and_decays_the_older_ones(data):
    """The refit's sums (the pass's, then `add_validation_windows` folding in the windows that reach into the
    validation week) equal one weighted least-squares problem over all of them, with every window's weight
    decayed by its age from the end of the validation week; and each set of sums is only solved as what it is."""
    hp = forecaster.Hyperparameters(holdout_hours=48, batch_size=16)
    one = forecaster.padded(data.subset([3]))
    mean, std = (torch.as_tensor(v) for v in forecaster.normalisation(one, hp))
    readings = torch.as_tensor(one.values)
    early_end = int(one.lengths[0]) - hp.holdout_hours - hp.validation_hours - forecaster.SPAN + 1
    late_end = early_end + hp.validation_hours
    sampler = forecaster.WindowSampler(readings, mean[None], std[None], hp.batch_size, block=1)
    equations = forecaster.NormalEquations(1, torch.device("cpu"))
    early, late = torch.tensor([early_end]), torch.tensor([late_end])
    chunks = range(-(-early_end // hp.batch_size))
    forecaster.sum_windows(sampler, equations, slice(0, 1), torch.zeros(1, dtype=torch.int64), early, chunks)
    strength, life = torch.tensor([1e-2], dtype=torch.float64), torch.tensor([1])  # HALF_LIVES[1]: decays
    with pytest.raises(ValueError, match="without the validation windows"):
        equations.solve(strength, life, True, hp.validation_hours)
    forecaster.add_validation_windows(sampler, equations, early, late, hp.validation_hours)
    with pytest.raises(ValueError, match="solve them before add_late"):
        equations.solve(strength, life, False, 0)
    got = equations.solve(strength, life, True, hp.validation_hours)[0]

    starts = torch.arange(late_end)
    spans = torch.stack([readings[0, s : s + forecaster.SPAN] for s in starts])
    windows = forecaster.fill_gaps((spans[:, :WINDOW] - mean) / std)
    reading = spans[:, WINDOW:]
    floor = 0.05 * mean.abs() + 1e-6
    weight = torch.where(torch.isnan(reading), 0.0, (std / torch.maximum(reading.abs(), floor)) ** 2).double()
    weight = weight * 0.5 ** ((late_end - 1 - starts) / forecaster.HALF_LIVES[1]).double()[:, None]
    residual = (
        torch.nan_to_num((reading - mean) / std).double() - windows.double() @ forecaster.seasonal_window_average()
    )
    x = forecaster.features(windows[None])[0].double()  # [HORIZON, N, F]
    for h in range(HORIZON):
        gram = (x[h] * weight[:, h, None]).T @ x[h]
        expected = torch.linalg.solve(gram + 1e-2 * gram.diagonal().mean() * torch.eye(len(gram), dtype=torch.float64),
                                      (x[h] * weight[:, h, None]).T @ residual[:, h])  # fmt: skip
        assert (got[h] - expected).abs().max() <= 1e-3 * expected.abs().max()  # float32 sums, float64 solve


def test_the_models_do_not_depend_on_the_customer_blocks_of_the_fit(data, monkeypatch):
    """The pass, the solves and the weights are computed a block of customers at a time (bounded memory): any
    block size gives the same models and the same choices (customers of different lengths share blocks here).
    To float32 round-off, not bit for bit: the BLAS may split a batched product differently by batch size (seen
    on an AVX-512 EPYC: one customer's weights 1.5e-8 apart with blocks of 3)."""
    assert len(set(data.lengths.tolist())) > 1
    whole = forecaster.train(data, HP, progress=False)
    monkeypatch.setattr(forecaster, "BLOCK_CUSTOMERS", 3)
    blocks = forecaster.train(data, HP, progress=False)
    assert close(blocks.params, whole.params)
    assert close(blocks.validation_params, whole.validation_params)
    assert torch.equal(blocks.chosen_epochs, whole.chosen_epochs)


def test_the_early_pass_blocks_customers_of_similar_lengths(monkeypatch):
    """A block reads every chunk of start hours up to its longest customer's last window: blocks group customers
    by length (as the late pass does), so short histories whose ids lie between long ones do not ride along
    through the long ones' chunks. Ids alternate long (4 weeks) and short (19 days) here, blocks of 2."""
    full = weekly_with_level_shifts(customers=8, weeks=4, seed=5)
    cut = np.where(np.arange(8) % 2, full.lengths[0] - 19 * 24, 0)
    values = np.full_like(full.values, np.nan)
    for row, hours in enumerate(cut):
        values[row, : full.lengths[row] - hours] = full.values[row, hours:]
    data = series.SeriesSet(full.customers, values, full.lengths - cut, full.starts + cut * series.HOUR_US)
    monkeypatch.setattr(forecaster, "BLOCK_CUSTOMERS", 2)
    passes = []
    sum_windows = forecaster.sum_windows

    def spy(sampler, equations, rows, begin, end, chunks):
        if not begin.any():  # the early pass: windows from start hour 0
            index = rows if isinstance(rows, slice) else rows.cpu().numpy()
            passes.append((data.lengths[index].tolist(), len(chunks)))
        sum_windows(sampler, equations, rows, begin, end, chunks)

    monkeypatch.setattr(forecaster, "sum_windows", spy)
    forecaster.train(data, HP, progress=False)
    short, long = 19 * 24, 4 * 168
    assert [lengths for lengths, _ in passes] == [[short, short], [short, short], [long, long], [long, long]]
    assert passes[0][1] < passes[-1][1]  # the short blocks read fewer chunks


def test_a_finished_fit_is_read_back_from_its_checkpoint(data, tmp_path, capsys):
    checkpointer = forecaster.Checkpointer(tmp_path, "train-algo-1", every_seconds=0)
    first = forecaster.train(data, HP, checkpointer=checkpointer, progress=False)
    assert checkpointer.path.exists()
    again = forecaster.train(data, HP, checkpointer=checkpointer, progress=False)
    assert "not fitting again" in capsys.readouterr().out
    assert close(again.params, first.params)
    assert torch.equal(again.chosen_epochs, first.chosen_epochs)


def test_a_checkpoint_of_other_data_is_ignored(data, tmp_path, capsys):
    checkpointer = forecaster.Checkpointer(tmp_path, "train-algo-1", every_seconds=0)
    forecaster.train(data.subset([0, 1]), HP, checkpointer=checkpointer, progress=False)
    forecaster.train(data.subset([0, 2]), HP, checkpointer=checkpointer, progress=False)
    output = capsys.readouterr().out
    assert "ignoring checkpoint" in output
    assert "not fitting again" not in output


def test_a_checkpoint_of_another_fit_design_is_ignored(data, tmp_path, capsys, monkeypatch):
    """A design constant changed (a new release, or the accuracy bench's variants) is another fit: the old
    checkpoint must not be served as this one's models."""
    checkpointer = forecaster.Checkpointer(tmp_path, "train-algo-1", every_seconds=0)
    part = data.subset([0, 1])
    forecaster.train(part, HP, checkpointer=checkpointer, progress=False)
    monkeypatch.setattr(forecaster, "TOP", forecaster.TOP + 1)
    forecaster.train(part, HP, checkpointer=checkpointer, progress=False)
    output = capsys.readouterr().out
    assert "ignoring checkpoint" in output
    assert "not fitting again" not in output


def test_customers_without_enough_data_are_skipped_with_a_reason(data):
    hp = forecaster.Hyperparameters(**{**HP.__dict__, "holdout_hours": 24 * 20})
    keep, skipped = forecaster.eligible(data, hp)
    assert len(keep) + len(skipped) == len(data)
    assert skipped
    assert all("hours of data, need" in reason for reason in skipped.values())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 0}, "batch_size must be in 1..4096"),
        ({"holdout_hours": 30}, "multiple of 24"),
        ({"min_coverage": 2.0}, r"min_coverage must be in \[0, 1\]"),
    ],
)
def test_bad_hyperparameters_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        forecaster.Hyperparameters(**{**HP.__dict__, **changes})


def test_artifact_round_trip_through_model_tar_gz(data, tmp_path):
    models = forecaster.train(data, HP, progress=False)
    artifact.save(models, tmp_path / "model", "algo-1")
    (tmp_path / "input").mkdir()
    with tarfile.open(tmp_path / "input" / "model.tar.gz", "w:gz") as tar:  # what SageMaker uploads
        tar.add(tmp_path / "model", arcname=".")
    loaded = artifact.load(tmp_path / "input", scratch=tmp_path / "scratch")
    assert loaded.customers == models.customers
    assert close(loaded.params, models.params)
    assert torch.equal(loaded.std, models.std)
    assert loaded.hyperparameters == HP


def environ(base, host: str, hosts: list[str], channel) -> dict[str, str]:
    return {
        OPT_ML_ENV: str(base),
        "SM_CHANNEL_TRAIN": str(channel),
        "SM_MODEL_DIR": str(base / "model"),
        "SM_HOSTS": json.dumps(hosts),
        "SM_CURRENT_HOST": host,
        "SM_NUM_GPUS": "0",
    }


ARGS = ["--batch_size", "16", "--holdout-hours", "48", "--device", "cpu"]


def test_sharded_by_s3_key_hosts_produce_the_models_of_one_host(curated, tmp_path):
    """Two hosts, each given half of the customer objects (as ShardedByS3Key does) and training them in shards
    of 3, merge into the artifact a single host would have written training all 8 at once: the union of the two
    instances' outputs is the single-instance run."""
    partitions = sorted(curated.iterdir())
    hosts = ["algo-1", "algo-2"]
    model_dir = tmp_path / "merged"
    for number, host in enumerate(hosts):
        channel = tmp_path / host / "train"
        for partition in partitions[number::2]:
            shutil.copytree(partition, channel / partition.name)
        assert train.main([*ARGS, "--shard-customers", "3"], environ(tmp_path / host, host, hosts, channel)) == 0
        shutil.copytree(tmp_path / host / "model", model_dir, dirs_exist_ok=True)  # SageMaker merges the model dirs
    assert train.main(ARGS, environ(tmp_path / "single", "algo-1", ["algo-1"], curated)) == 0
    merged, single = artifact.load(model_dir), artifact.load(tmp_path / "single" / "model")
    assert len(single.customers) == 8
    assert merged.customers == single.customers
    assert close(merged.params, single.params)
    assert close_intervals(merged.intervals, single.intervals)  # the P10/P90 offsets are per customer too
    assert torch.equal(merged.mean, single.mean)
    assert torch.equal(merged.std, single.std)
    # 4 customers per host in shards of at most 3: two shards each.
    assert sorted(p.name for p in model_dir.glob("*.pt")) == [
        "shard-algo-1-00000.pt",
        "shard-algo-1-00001.pt",
        "shard-algo-2-00000.pt",
        "shard-algo-2-00001.pt",
    ]
    assert [len(s.customers) for s in artifact.shards(model_dir)] == [3, 1, 3, 1]


def test_training_in_shards_gives_the_models_of_one_unsharded_run(data, curated, tmp_path):
    """Bounded memory: the step reads and trains a shard of customers at a time; the models equal one run over
    all customers up to float rounding, whatever the shard size."""
    unsharded = forecaster.train(data, HP, progress=False)
    argv = [*ARGS, "--shard-customers", "3"]
    assert train.main(argv, environ(tmp_path, "algo-1", ["algo-1"], curated)) == 0
    assert [len(shard.customers) for shard in artifact.shards(tmp_path / "model")] == [3, 3, 2]
    sharded = artifact.load(tmp_path / "model")
    assert sharded.customers == unsharded.customers
    assert close(sharded.params, unsharded.params)
    # The step stores the P10/P90 offsets of quantiles.fit (the trained models' validation errors) with them.
    assert close_intervals(sharded.intervals, quantiles.fit(unsharded, data))
    assert torch.equal(sharded.mean, unsharded.mean)


def test_a_customer_whose_files_hold_no_row_is_skipped_with_its_reason_not_failing_the_job(curated, tmp_path):
    """Nothing dropped silently, no partial failure: a customer object whose Parquet files hold no row (alone in
    its shard here) is listed among the skipped with why, and the others train as they would without it."""
    channel = tmp_path / "train"
    shutil.copytree(curated, channel)
    table = pq.read_table(next(iter(sorted(channel.glob("customer=*/*.parquet")))))
    (channel / "customer=aaa-empty").mkdir()
    pq.write_table(table.slice(0, 0), channel / "customer=aaa-empty" / "part-00000.parquet")
    argv = [*ARGS, "--shard-customers", "1"]
    assert train.main(argv, environ(tmp_path, "algo-1", ["algo-1"], channel)) == 0
    trained = artifact.load(tmp_path / "model")
    assert "aaa-empty" not in trained.customers
    assert len(trained.customers) == len(list(curated.iterdir()))
    assert trained.skipped["aaa-empty"] == "its curated files hold no reading"


def test_a_shard_size_below_one_is_refused(curated, tmp_path):
    argv = [*ARGS, "--shard-customers", "0"]
    assert train.main(argv, environ(tmp_path, "algo-1", ["algo-1"], curated)) == 1
    assert "shard size must be at least 1 customer" in (tmp_path / "output" / "failure").read_text()


def test_a_customer_on_two_hosts_is_refused_at_load(data, tmp_path):
    models = forecaster.train(data.subset([0, 1]), HP, progress=False)
    artifact.save(models, tmp_path, "algo-1")
    artifact.save(models, tmp_path, "algo-2")
    with pytest.raises(StepInputError, match="ShardedByS3Key"):
        artifact.load(tmp_path)


def test_a_host_without_customers_writes_an_empty_shard(tmp_path):
    channel = tmp_path / "train"
    channel.mkdir()
    assert train.main(ARGS, environ(tmp_path, "algo-3", ["algo-1", "algo-2", "algo-3"], channel)) == 0
    assert json.loads((tmp_path / "model" / "shard-algo-3-00000.json").read_text())["customers"] == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "0"], "bad hyperparameters: batch_size must be in 1..4096"),
        (["--epochs", "3", "--steps-per-epoch", "4"], "unknown hyperparameters: --epochs 3 --steps-per-epoch 4"),
        (["--device", "cuda"], "no CUDA GPU"),
    ],
)
def test_train_step_failures_reach_sagemaker(curated, tmp_path, argv, message):
    if message == "no CUDA GPU" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert train.main(argv, environ(tmp_path, "algo-1", ["algo-1"], curated)) == 1
    assert message in (tmp_path / "output" / "failure").read_text()


def test_train_step_without_data_or_with_too_little_fails_clearly(curated, tmp_path):
    assert train.main(ARGS, environ(tmp_path, "algo-1", ["algo-1"], tmp_path / "nowhere")) == 1
    assert "curated input" in (tmp_path / "output" / "failure").read_text()
    too_long = [*ARGS, "--holdout-hours", str(24 * 40)]
    assert train.main(too_long, environ(tmp_path, "algo-1", ["algo-1"], curated)) == 1
    assert "no customer has enough data" in (tmp_path / "output" / "failure").read_text()


def test_hours_before_the_first_reading_take_the_same_hour_of_the_first_week_that_has_one():
    window = torch.arange(WINDOW, dtype=torch.float32)
    window[:300] = float("nan")  # history starts at hour 300
    window[400] = float("nan")  # a gap after it: forward fill
    filled = forecaster.fill_gaps(window[None])[0]
    assert filled[10].item() == 346.0  # 10 + 2 weeks: the first week with a reading at that hour of the week
    assert filled[200].item() == 368.0
    assert filled[299].item() == 467.0
    assert filled[400].item() == 399.0
    late = torch.arange(WINDOW, dtype=torch.float32)
    late[:600] = float("nan")  # less than a week: hours with no later same hour in the window get the mean (0)
    filled = forecaster.fill_gaps(late[None])[0]
    assert filled[500].item() == 668.0
    assert filled[0].item() == 0.0


def test_evaluation_shard_by_shard_gives_the_report_of_one_shard(curated, tmp_path):
    """Bounded memory downstream: evaluation reads the artifact one training shard at a time; the report (scores,
    skipped, the plot) is that of an artifact with one shard."""
    reports = {}
    for size in (3, 100):
        base = tmp_path / f"size-{size}"
        assert train.main([*ARGS, "--shard-customers", str(size)], environ(base, "algo-1", ["algo-1"], curated)) == 0
        evaluated = EvaluatePaths(model=base / "model", curated=curated, evaluation=base / "evaluation")
        reports[size] = evaluate.run(evaluated, "group-a", plot_customers=3)
        assert (base / "evaluation" / FORECAST_PLOT_FILE).stat().st_size > 10_000
    sharded, single = reports[3], reports[100]
    customers = list(datagen.customer_ids(8))
    assert [m.customer for m in sharded.per_customer] == [m.customer for m in single.per_customer] == customers
    for a, b in zip(sharded.per_customer, single.per_customer, strict=True):
        assert a.mape == pytest.approx(b.mape, rel=1e-5)
        assert a.baseline_mape == pytest.approx(b.baseline_mape)
    assert sharded.aggregate.mape_ratio == pytest.approx(single.aggregate.mape_ratio, rel=1e-5)
    assert sharded.skipped == single.skipped
    # packaging shard by shard: tests/integration/test_local_pipeline.py (100 customers in 2 training shards)


def test_interval_offsets_come_from_errors_the_models_did_not_see(data):
    """The served models are refitted with the validation week; P10/P90 offsets estimated from their errors on
    that week would be in sample (too narrow). They come from the same choice fitted without the week."""
    models = forecaster.train(data, HP, progress=False)
    assert models.validation_params is not None
    assert not close(models.validation_params, models.params)
    honest = quantiles.fit(models, data)
    in_sample = quantiles.fit(replace(models, validation_params=None), data)  # what the refit models would give
    trained = forecaster.padded(data.subset([data.customers.index(c) for c in models.customers]))
    origins = torch.as_tensor(trained.lengths - HP.holdout_hours - HP.validation_hours)
    _, actual, forecast = quantiles.origin_forecasts(
        models, trained, origins, HP.validation_hours // HORIZON, params=models.validation_params
    )
    floor = quantiles.floor_of(models.mean)
    spread = (models.std / torch.maximum(models.mean.abs(), floor)).numpy()
    expected = quantiles.estimate(forecast.numpy(), actual.numpy(), floor.numpy(), spread)
    assert close_intervals(honest, expected)
    assert not close_intervals(honest, in_sample)
