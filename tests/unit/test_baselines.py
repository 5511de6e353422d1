"""Baselines: Pop counts, SASRec's contract and learning, NCF ranking and rating RMSE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from model.baselines import NCF, NCFConfig, Pop, SASRec, SASRecConfig
from model.baselines.ncf import rating_report
from model.data import SequenceData, flat_positions
from model.evaluate import evaluate
from model.train import Trainer, seed_everything
from recsys.config import TrainConfig
from tests.sequence_fixtures import build_sequences_table, cycle_ratings, ratings_frame


def train_config(**overrides: object) -> TrainConfig:
    values = {
        "batch_size": 8,
        "lr": 0.005,
        "epochs": 6,
        "patience": 100,
        "seed": 7,
        "amp": False,
        "compile": False,
        "models_dir": "artifacts/models",
    }
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def cycle_data() -> SequenceData:
    return SequenceData.from_arrow(build_sequences_table(cycle_ratings(n_users=24, n_items=10, length=12)))


def small_sasrec(n_items: int) -> SASRec:
    return SASRec(SASRecConfig(n_items=n_items, max_seq_len=16, hidden_size=16, inner_size=32))


@pytest.mark.parametrize("max_len", [None, 4])
def test_pop_scores_count_each_training_target_once(
    cycle_data: SequenceData, tmp_path: Path, max_len: int | None
) -> None:
    model = Pop(cycle_data.n_items)
    result = Trainer(model, cycle_data, train_config(epochs=5), [5], tmp_path, "cpu", max_len).fit()
    assert len(result.history) == 1  # a single counting pass, whatever train.epochs says
    # Targets: every training event but each user's first, counted once even when the
    # trainer cuts the histories into overlapping windows (max_len 4 < 10 training events).
    whole = cycle_data.view("train")
    targets = cycle_data.items[flat_positions(whole.starts + 1, whole.lengths - 1)]
    counts = np.bincount(targets, minlength=cycle_data.n_items + 1)
    batch = cycle_data.view("test").collate([0, 1])
    scores = model.full_sort_predict(batch.items, batch.timestamps, batch.lengths, batch.target_time)
    assert scores.shape == (2, cycle_data.n_items + 1)
    assert torch.isneginf(scores[:, 0]).all()
    assert scores[0, 1:].tolist() == counts[1:].astype(float).tolist()
    assert counts.sum() == (whole.lengths - 1).sum() > 0


def test_sasrec_is_causal_and_ignores_padding() -> None:
    torch.manual_seed(0)
    model = small_sasrec(n_items=20).eval()
    items = torch.tensor([[3, 4, 5, 6, 0, 0]])
    timestamps = torch.zeros_like(items)
    lengths = torch.tensor([4])
    hidden = model(items, timestamps, lengths)
    changed_later = model(torch.tensor([[3, 4, 9, 6, 0, 0]]), timestamps, lengths)
    assert torch.allclose(hidden[:, :2], changed_later[:, :2], atol=1e-6)
    assert not torch.allclose(hidden[:, 2:4], changed_later[:, 2:4])
    unpadded = model(items[:, :4], timestamps[:, :4], lengths)
    assert torch.allclose(hidden[:, :4], unpadded, atol=1e-6)
    scores = model.full_sort_predict(items, timestamps, lengths, torch.zeros(1, dtype=torch.long))
    assert scores.shape == (1, 21) and torch.isneginf(scores[0, 0])
    assert torch.allclose(
        scores[0, 1:],
        model.last_hidden(items, timestamps, lengths) @ model.item_embedding.weight[1:].T,
        atol=1e-6,
    )


def test_sasrec_rejects_sequences_longer_than_its_positions() -> None:
    model = small_sasrec(n_items=5)
    items = torch.ones(1, 17, dtype=torch.long)
    with pytest.raises(ValueError, match="exceeds max_seq_len 16"):
        model(items, items, torch.tensor([17]))


def test_sasrec_learns_a_deterministic_cycle(cycle_data: SequenceData, tmp_path: Path) -> None:
    seed_everything(0)
    model = small_sasrec(cycle_data.n_items)
    before = evaluate(model, cycle_data, "test", [5], variants=["paper"])["paper"]["hr@5"]
    Trainer(model, cycle_data, train_config(epochs=5), [5], tmp_path).fit()
    after = evaluate(model, cycle_data, "test", [5], variants=["paper"])["paper"]["hr@5"]
    assert before < 0.7
    assert after > 0.9


GROUPS, ITEMS_PER_GROUP, USERS = 3, 6, 30


def group_ratings() -> pd.DataFrame:
    """Each user rates the 6 items of its group, in a random order; odd items are liked (5), even not (2)."""
    rng = np.random.default_rng(0)
    records = []
    for user in range(USERS):
        group = user % GROUPS
        items = rng.permutation(np.arange(ITEMS_PER_GROUP) + group * ITEMS_PER_GROUP + 1)
        for step, item in enumerate(items):
            records.append((user, int(item), 5.0 if item % 2 else 2.0, 1_000 + 86_400 * step))  # a day apart
    return pd.DataFrame(records, columns=["user_id", "item_id", "rating", "timestamp"])


def test_ncf_learns_group_preferences_and_rates(tmp_path: Path) -> None:
    ratings = group_ratings()
    data = SequenceData.from_arrow(build_sequences_table(ratings))
    seed_everything(0)
    model = NCF(
        NCFConfig(n_users=data.n_users, n_items=data.n_items, embedding_size=16, mlp_hidden_sizes=(32, 16))
    )
    before = evaluate(model, data, "test", [1])["production"]["hr@1"]
    Trainer(model, data, train_config(epochs=15, lr=0.01), [1], tmp_path).fit()
    after = evaluate(model, data, "test", [1])["production"]["hr@1"]
    # production masks the 5 seen items, so only the group's last item should score high
    assert before < 0.3
    assert after > 0.8

    report = rating_report(model, data, ratings)
    assert report["rated_test_events"] == USERS
    assert report["rating_rmse"] < 0.5 * report["rating_rmse_global_mean"]


def test_ncf_takes_users_and_scores_every_item() -> None:
    model = NCF(NCFConfig(n_users=4, n_items=7, embedding_size=8, mlp_hidden_sizes=(16, 8))).eval()
    items = torch.tensor([[1, 2, 0], [3, 4, 5]])
    lengths = torch.tensor([2, 3])
    users = torch.tensor([0, 3])
    scores = model.full_sort_predict(items, items, lengths, lengths, users)
    assert scores.shape == (2, 8) and torch.isneginf(scores[:, 0]).all()
    assert torch.allclose(scores[1, 1:], model.logits(torch.full((7,), 3), torch.arange(1, 8)), atol=1e-6)
    assert model.calculate_loss(items, items, lengths, users).ndim == 0


def test_rating_report_needs_matching_ratings() -> None:
    data = SequenceData.from_arrow(build_sequences_table(ratings_frame({1: [(1, 1), (2, 2), (3, 3)]})))
    model = NCF(NCFConfig(n_users=1, n_items=3))
    other = ratings_frame({1: [(1, 99), (2, 98), (3, 97)]})
    with pytest.raises(ValueError, match="no train event has a rating"):
        rating_report(model, data, other)
