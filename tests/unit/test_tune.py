"""model.tune: a resumable Optuna study on validation NDCG@10, pruning, and the best trial's overlay."""

from __future__ import annotations

import datetime as dt

import optuna
import pytest
import yaml

from model import tune
from model.data import SequenceData
from recsys.config import load_config
from tests.sequence_fixtures import build_sequences_table, cycle_ratings, write_sequences_delta

RUN_DATE = dt.date(2024, 1, 1)


@pytest.fixture
def table():
    return build_sequences_table(cycle_ratings(n_users=30, n_items=25, length=10), valid_from=RUN_DATE)


def _config(tmp_path, name):
    return load_config(
        profile="local",
        overrides=(
            f"lake.root={tmp_path / 'lake'}",
            f"model.name={name}",
            "train.epochs=2",
            "train.patience=1",
            "train.batch_size=8",
            "device=cpu",
        ),
    )


def test_a_study_resumes_to_the_trials_asked_and_writes_the_best_as_an_overlay(tmp_path, table, monkeypatch):
    config = _config(tmp_path, "sasrec")
    data = SequenceData.from_arrow(table)
    out = tmp_path / "tune"
    study, overlay = tune.tune(config, data, RUN_DATE, out, trials=3, startup_trials=1, warmup_epochs=0)
    assert (out / "sasrec-2024-01-01.db").is_file() and overlay == out / "sasrec-2024-01-01.best.yaml"
    assert tune.finished_trials(study) == 3
    assert not (out / "sasrec-2024-01-01").exists() or not any((out / "sasrec-2024-01-01").iterdir())
    keys = yaml.safe_load(overlay.read_text())
    assert keys == study.best_trial.user_attrs["config"]
    assert set(keys["model"]) == {"dropout", "hidden_size", "n_layers", "max_seq_len"} and set(
        keys["train"]
    ) == {"lr"}
    assert 1e-4 <= keys["train"]["lr"] <= 1e-2 and keys["model"]["max_seq_len"] in (20, 50, 100, 200)
    assert f"{study.best_value:.4f}" in overlay.read_text().splitlines()[0]
    assert 0.0 <= study.best_value <= 1.0
    # the overlay is a valid configuration layer, and the one model.train reads
    tuned = load_config(profile="local", overlays=[overlay])
    assert tuned.model.hidden_size == keys["model"]["hidden_size"] and tuned.train.lr == keys["train"]["lr"]

    again, _ = tune.tune(config, data, RUN_DATE, out, trials=3)
    assert len(again.trials) == 3  # nothing missing: nothing run
    more, _ = tune.tune(config, data, RUN_DATE, out, trials=4)
    assert len(more.trials) == 4 and tune.finished_trials(more) == 4
    # trials scored under another evaluation protocol are not resumed
    monkeypatch.setattr(tune, "EVALUATION_PROTOCOL", tune.EVALUATION_PROTOCOL + 1)
    with pytest.raises(ValueError, match="evaluation protocol"):
        tune.tune(config, data, RUN_DATE, out, trials=5)


def test_ss4rec_also_tunes_the_time_scale_and_pop_is_refused(tmp_path, table):
    trial = optuna.trial.FixedTrial(
        {
            "dropout": 0.1,
            "hidden_size": 32,
            "n_layers": 1,
            "max_seq_len": 20,
            "dt_min": 1e-4,
            "dt_max": 0.5,
            "gap_transform": "log1p",
            "lr": 1e-3,
        }
    )
    keys = tune.suggest(trial, "ss4rec")
    assert keys["model"]["dt_min"] == 1e-4 and keys["model"]["dt_max"] == 0.5
    assert keys["model"]["gap_transform"] == "log1p"
    assert tune.apply(_config(tmp_path, "ss4rec"), keys).model.dt_max == 0.5
    with pytest.raises(ValueError, match="tunes ss4rec"):
        tune.tune(_config(tmp_path, "pop"), SequenceData.from_arrow(table), RUN_DATE, tmp_path, trials=1)


class _Trial:
    """The two calls the pruning trainer makes, recorded; prunes from epoch ``prune_at``."""

    def __init__(self, prune_at: int) -> None:
        self.prune_at = prune_at
        self.reports: list[tuple[float, int]] = []

    def report(self, value: float, step: int) -> None:
        self.reports.append((value, step))

    def should_prune(self) -> bool:
        return len(self.reports) > self.prune_at


def test_a_trial_below_the_median_stops_at_the_epoch_it_is_pruned(tmp_path, table):
    from model.train import build_model

    config = _config(tmp_path, "sasrec")
    data = SequenceData.from_arrow(table)
    trial = _Trial(prune_at=1)
    trainer = tune._PruningTrainer(
        trial, build_model(config, data.n_items, data.n_users), data, config.train, [10], tmp_path / "t"
    )
    with pytest.raises(optuna.TrialPruned, match="epoch 1"):
        trainer.fit()
    assert [step for _, step in trial.reports] == [0, 1]


def test_main_tunes_the_configured_sequences_and_prints_the_overlay(tmp_path, table, capsys):
    write_sequences_delta(table, tmp_path / "lake" / "sequences")
    argv = [
        "--run-date",
        "2024-01-01",
        "--model",
        "ss4rec",
        "--trials",
        "2",
        "--out-dir",
        str(tmp_path / "t"),
    ]
    for key in (f"lake.root={tmp_path / 'lake'}", "train.epochs=1", "train.batch_size=8", "device=cpu"):
        argv += ["--set", key]
    assert tune.main(argv) == 0
    printed = capsys.readouterr().out
    overlay = tmp_path / "t" / "ss4rec-2024-01-01.best.yaml"
    assert f"overlay: {overlay}" in printed and "dt_max" in yaml.safe_load(overlay.read_text())["model"]
