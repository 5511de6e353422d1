"""Trainer: early stopping, exact resume, safe checkpoint formats, the CLI end to end."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from model.checkpoint import load_weights, save_weights
from model.data import SequenceData
from model.train import BEST_FILE, STATE_FILE, Trainer, load_trained_model, main, seed_everything
from recsys.config import TrainConfig
from tests.sequence_fixtures import (
    TinySequentialModel,
    build_sequences_table,
    cycle_ratings,
    write_sequences_delta,
)


def train_config(**overrides: object) -> TrainConfig:
    values = {
        "batch_size": 8,
        "lr": 0.01,
        "epochs": 4,
        "patience": 10,
        "seed": 11,
        "amp": False,
        "compile": False,
        "models_dir": "artifacts/models",
    }
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def data() -> SequenceData:
    return SequenceData.from_arrow(build_sequences_table(cycle_ratings(n_users=20, n_items=8, length=10)))


def fresh_model(data: SequenceData, seed: int = 0) -> TinySequentialModel:
    seed_everything(seed)
    return TinySequentialModel(data.n_items, hidden_size=8, dropout=0.3)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_early_stopping_follows_recbole_and_restores_the_best_epoch(
    data: SequenceData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = fresh_model(data)
    trainer = Trainer(model, data, train_config(epochs=50, patience=2), [10], tmp_path)
    scores = iter([0.1, 0.3, 0.2, 0.3, 0.25, 0.2, 0.1, 0.9])
    snapshots = []

    def scripted_validation() -> dict[str, float]:
        snapshots.append(weights(model))
        return {"ndcg@10": next(scores)}

    monkeypatch.setattr(trainer, "_validate", scripted_validation)
    result = trainer.fit()
    # epoch 3 ties the best (0.3) and wins; epochs 4, 5, 6 fail: 3 > patience 2 stops
    assert len(result.history) == 7
    assert result.best_epoch == 3 and result.best_score == 0.3
    assert result.stopped_early
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, snapshots[3][name]), name


def test_resuming_after_a_crash_gives_the_uninterrupted_weights(
    data: SequenceData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = train_config(epochs=4)
    reference = fresh_model(data)
    reference_result = Trainer(reference, data, config, [10], tmp_path / "whole").fit()

    crashing = Trainer(fresh_model(data), data, config, [10], tmp_path / "resumed")
    original_epoch = crashing._train_epoch

    def crash_at_epoch_2(epoch: int) -> tuple[float, float]:
        if epoch == 2:
            raise RuntimeError("simulated crash")
        return original_epoch(epoch)

    monkeypatch.setattr(crashing, "_train_epoch", crash_at_epoch_2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.fit()

    resumed = fresh_model(data, seed=123)  # a different init: everything must come from the checkpoint
    result = Trainer(resumed, data, config, [10], tmp_path / "resumed").fit()
    assert [r.loss for r in result.history] == [r.loss for r in reference_result.history]
    assert result.best_epoch == reference_result.best_epoch
    for name, tensor in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name
    # a finished run resumes to the same place without training again
    again = fresh_model(data, seed=5)
    assert len(Trainer(again, data, config, [10], tmp_path / "resumed").fit().history) == 4
    assert all(torch.equal(again.state_dict()[n], t) for n, t in reference.state_dict().items())


def test_resume_refuses_a_different_configuration(data: SequenceData, tmp_path: Path) -> None:
    Trainer(fresh_model(data), data, train_config(epochs=1), [10], tmp_path).fit()
    with pytest.raises(RuntimeError, match=r"remove .* to start afresh"):
        Trainer(fresh_model(data), data, train_config(epochs=1, lr=0.5), [10], tmp_path).fit()


def test_checkpoints_load_without_unpickling_objects(data: SequenceData, tmp_path: Path) -> None:
    model = fresh_model(data)
    Trainer(model, data, train_config(epochs=1), [10], tmp_path).fit()
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert state["epoch"] == 0 and set(state["model"]) == set(model.state_dict())
    best = load_file(str(tmp_path / BEST_FILE))
    assert all(torch.equal(best[n], t) for n, t in model.state_dict().items())

    save_weights(model, tmp_path / "copy.safetensors")
    other = fresh_model(data, seed=9)
    load_weights(other, tmp_path / "copy.safetensors")
    assert all(torch.equal(other.state_dict()[n], t) for n, t in model.state_dict().items())
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_autocast_and_compile_train_on_cuda(data: SequenceData, tmp_path: Path) -> None:
    from model.baselines import SASRec, SASRecConfig

    model = SASRec(SASRecConfig(n_items=data.n_items, max_seq_len=16, hidden_size=16, inner_size=32))
    config = train_config(epochs=2, amp=True, compile=True)
    result = Trainer(model, data, config, [10], tmp_path, device="cuda").fit()
    assert all(math.isfinite(record.loss) for record in result.history)
    assert next(model.parameters()).device.type == "cuda"


def test_cli_trains_evaluates_and_saves_artifacts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ratings = cycle_ratings(n_users=16, n_items=8, length=8)
    run_date = dt.date(2024, 3, 1)
    sequences = tmp_path / "sequences"
    write_sequences_delta(build_sequences_table(ratings, valid_from=run_date), sequences)
    common = [
        "--run-date",
        run_date.isoformat(),
        "--sequences-path",
        str(sequences),
        "--artifacts-dir",
        str(tmp_path / "artifacts"),
        "--set",
        "train.epochs=2",
        "--set",
        "train.batch_size=8",
        "--set",
        "model.hidden_size=16",
        "--set",
        "device=cpu",
    ]
    assert main([*common, "--set", "model.name=sasrec"]) == 0
    printed = capsys.readouterr().out
    assert "paper" in printed and "production" in printed and "ndcg@10" in printed

    out = tmp_path / "artifacts" / "2024-03-01" / "sasrec"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"paper", "production"}
    assert set(metrics["test"]["paper"]) >= {"hr@5", "ndcg@10", "mrr@20"}
    assert metrics["epochs_run"] == 2 and metrics["mean_epoch_seconds"] > 0

    model, vocab, config = load_trained_model(out)
    assert config.model.name == "sasrec" and not model.training
    data = SequenceData.from_arrow(
        build_sequences_table(ratings, valid_from=run_date), item_vocab=vocab["items"]
    )
    batch = data.view("full").collate([0])
    top = model.full_sort_predict(batch.items, batch.timestamps, batch.lengths).argmax(dim=1)
    assert vocab["items"].decode(top.numpy())[0] in set(ratings["item_id"])

    ratings_table = tmp_path / "ratings"
    from deltalake import write_deltalake

    write_deltalake(str(ratings_table), ratings.assign(run_date=pd.Timestamp(run_date).date()))
    assert main([*common, "--set", "model.name=ncf", "--ratings-path", str(ratings_table)]) == 0
    ncf_metrics = json.loads((tmp_path / "artifacts" / "2024-03-01" / "ncf" / "metrics.json").read_text())
    assert ncf_metrics["rating"]["rated_test_events"] == 16
    assert "rating:" in capsys.readouterr().out


def test_the_models_window_is_its_own_key_not_the_history_kept(tmp_path: Path) -> None:
    from model.train import build_model, train_and_evaluate
    from recsys.config import load_config

    config = load_config(
        profile="local",
        overrides=(
            "model.name=sasrec",
            "model.max_seq_len=3",
            "model.hidden_size=8",
            "train.epochs=1",
            "train.batch_size=8",
            "device=cpu",
        ),
    )
    assert config.pipeline.max_seq_len == 200  # the history kept is untouched
    assert build_model(config, n_items=8, n_users=4).position_embedding.num_embeddings == 3
    # Histories of 8 events train as windows of 3 (SASRec refuses an input wider than its table)
    # and are evaluated on their last 3 events.
    data = SequenceData.from_arrow(build_sequences_table(cycle_ratings(n_users=6, n_items=8, length=8)))
    trained = train_and_evaluate(config, data, tmp_path / "work", dt.date(2024, 3, 1), "cpu")
    assert trained.metrics["epochs_run"] == 1
