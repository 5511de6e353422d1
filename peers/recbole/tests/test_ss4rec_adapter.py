"""peers/recbole/ss4rec_adapter.py: SS4Rec under RecBole's dataset, trainer and evaluator."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from peers.recbole.dataset import ExactTimeSequentialDataset
from peers.recbole.reference import _prepare, build_config, recbole_metrics
from peers.recbole.runtime import recbole_data_path
from peers.recbole.ss4rec_adapter import SS4RecAdapter, adapter_config, run_ss4rec_under_recbole

# Light users only (<= 40 ratings: 305 users, 8,390 interactions): no history is truncated at
# L = 50, and an epoch of a small SS4Rec takes seconds on CPU.
LIGHT_USERS = "[0,40]"
SMALL_MODEL = {
    "hidden_size": 16,
    "n_layers": 1,
    "s5_state": 8,
    "mamba_d_state": 8,
    "dropout": 0.2,
}


def _config(tmp_path, **overrides):
    settings = {
        "user_inter_num_interval": LIGHT_USERS,
        "MAX_ITEM_LIST_LENGTH": 50,
        **SMALL_MODEL,
        **overrides,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_config(
            seed=2020,
            checkpoint_dir=str(tmp_path),
            device="cpu",
            overrides=adapter_config(settings),
            model=SS4RecAdapter,
        )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    config = _config(tmp_path_factory.mktemp("ckpt"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset, train_data, _valid, test_data = _prepare(config, exact_timestamps=True)
    torch.manual_seed(0)
    adapter = SS4RecAdapter(config, train_data._dataset).eval()
    return config, dataset, train_data, test_data, adapter


def _raw_ml100k() -> pd.DataFrame:
    path = os.path.join(recbole_data_path(), "ml-100k", "ml-100k.inter")
    frame = pd.read_csv(path, sep="\t")
    frame.columns = ["user_id", "item_id", "rating", "timestamp"]
    return frame


def test_create_dataset_builds_exact_time_dataset_for_the_adapter(prepared):
    from recbole.data import create_dataset

    config, dataset, *_ = prepared
    assert type(dataset) is ExactTimeSequentialDataset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert type(create_dataset(config)) is ExactTimeSequentialDataset  # RecBole's own lookup


def test_timestamps_are_exact_and_targets_follow_exact_time_order(prepared):
    _, dataset, _, test_data, _ = prepared
    raw = _raw_ml100k()
    counts = raw.groupby("user_id").size()
    raw = raw[raw.user_id.isin(counts[counts <= 40].index)]
    # Exact time order; equal timestamps keep file order (stable), as RecBole's sort does.
    ordered = raw.sort_values(["user_id", "timestamp"], kind="stable")
    last = ordered.groupby("user_id").tail(1).set_index("user_id")

    inter = test_data.dataset.inter_feat
    assert inter["timestamp_list"].dtype == torch.float64
    users = dataset.id2token("user_id", inter["user_id"].numpy()).astype(int)
    targets = dataset.id2token("item_id", inter["item_id"].numpy()).astype(int)
    times = inter["timestamp"].numpy()
    assert len(users) == len(last) == 305
    np.testing.assert_array_equal(targets, last.loc[users, "item_id"].to_numpy())
    np.testing.assert_array_equal(times, last.loc[users, "timestamp"].to_numpy())  # to the second


def test_refuses_normalised_time(prepared, tmp_path):
    _, _, train_data, _, _ = prepared
    with pytest.raises(ValueError, match="raw Unix-second"):
        SS4RecAdapter(_config(tmp_path, normalize_all=True), train_data._dataset)


def test_refuses_float32_timestamps(prepared):
    _, _, train_data, _, adapter = prepared
    batch = next(iter(train_data))
    batch.interaction["timestamp_list"] = batch["timestamp_list"].float()
    with pytest.raises(ValueError, match="float32"):
        adapter.full_sort_predict(batch)


def test_prefix_loss_equals_ss4rec_all_positions_loss(prepared):
    """RecBole's per-prefix samples through the adapter == SS4Rec's one-pass loss on the whole sequence."""
    _, _, train_data, _, adapter = prepared
    inter = train_data.dataset.inter_feat
    user = int(inter["user_id"][0])
    rows = torch.nonzero(inter["user_id"] == user).squeeze(1)
    samples = inter[rows]
    longest = int(torch.argmax(samples["item_length"]))
    n = int(samples["item_length"][longest])
    assert len(rows) == n  # prefixes of length 1..n, untruncated
    items = torch.cat([samples["item_id_list"][longest, :n], samples["item_id"][longest : longest + 1]])
    times = torch.cat([samples["timestamp_list"][longest, :n], samples["timestamp"][longest : longest + 1]])
    with torch.no_grad():
        per_prefix = adapter.calculate_loss(samples)
        whole = adapter.net.calculate_loss(items[None], times.round().long()[None], torch.tensor([n + 1]))
    torch.testing.assert_close(per_prefix, whole, rtol=1e-5, atol=1e-6)


def test_scores_are_ss4rec_scores_with_target_time_as_query(prepared):
    _, _, _, test_data, adapter = prepared
    interaction = next(iter(test_data))[0]
    with torch.no_grad():
        scores = adapter.full_sort_predict(interaction)
        expected = adapter.net.full_sort_predict(
            interaction["item_id_list"],
            interaction["timestamp_list"].long(),
            interaction["item_length"],
            interaction["timestamp"].long(),
        )
        predicted = adapter.predict(interaction)
    assert scores.shape == (len(interaction), adapter.n_items)
    assert torch.isneginf(scores[:, 0]).all()
    torch.testing.assert_close(scores, expected)
    rows = torch.arange(len(interaction))
    torch.testing.assert_close(predicted, scores[rows, interaction["item_id"]], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_trains_and_evaluates_under_recbole_trainer():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_ss4rec_under_recbole(
            seed=2020,
            overrides={
                "user_inter_num_interval": LIGHT_USERS,
                "MAX_ITEM_LIST_LENGTH": 10,
                **SMALL_MODEL,
                "epochs": 2,
                "train_batch_size": 512,
                "learning_rate": 3e-3,
            },
            device="cpu",
        )
    summary = result.summary()
    assert result.epochs_run == 2 and len(result.epoch_seconds) == 2
    assert result.config["model"] == "SS4RecAdapter"
    assert result.scores.shape == (305, result.item_raw_ids.shape[0])
    keys = {f"{m}@{k}" for m in ("hr", "ndcg", "mrr") for k in (5, 10, 20)}
    assert set(result.test_metrics) == keys
    # The exported matrix reproduces RecBole's own evaluation (reported to 6 decimals).
    from_scores = recbole_metrics(result.scores, result.target_index)
    for key, value in result.test_metrics.items():
        assert from_scores[key] == pytest.approx(value, abs=2e-6)
    assert summary["best_epoch"] in (0, 1)
    # Trained: clearly better than ranking at random (hr@20 = 20 / 868 = 0.023 expected).
    assert result.test_metrics["hr@20"] > 0.035


def test_night_scores_query_at_the_nights_end(prepared):
    """SS4Rec reads the gaps: a warm user's night row is the model on their events before the UTC
    midnight of the test item's day, queried at that midnight."""
    from peers.recbole.reference import export_test_scores

    _, dataset, _, test_data, adapter = prepared
    exported = export_test_scores(adapter, dataset, test_data, "cpu")
    raw = _raw_ml100k().sort_values(["user_id", "timestamp"], kind="stable")
    warm = np.flatnonzero(~exported["night_cold"])
    assert len(warm) >= 3
    for row in warm[:3]:
        events = raw[raw.user_id == int(exported["user_raw_ids"][row])]
        night = int(events.timestamp.iloc[-1] - events.timestamp.iloc[-1] % 86_400)
        before = events[events.timestamp < night].tail(50)
        items = torch.from_numpy(dataset.token2id("item_id", before.item_id.astype(str).to_numpy()))[None]
        times = torch.from_numpy(before.timestamp.to_numpy(dtype=np.int64))[None]
        query = torch.tensor([max(night, int(times[0, -1]))])
        with torch.no_grad():
            expected = adapter.net.full_sort_predict(items, times, torch.tensor([items.shape[1]]), query)
            at_last_event = adapter.net.full_sort_predict(
                items, times, torch.tensor([items.shape[1]]), times[:, -1]
            )
        np.testing.assert_allclose(
            exported["night_scores"][row, 1:], expected[0, 1:].numpy(), rtol=1e-5, atol=1e-5
        )
        assert not np.allclose(exported["night_scores"][row, 1:], at_last_event[0, 1:].numpy(), atol=1e-5)
        night_seen = set(np.flatnonzero(exported["night_seen_mask"][row]))
        assert night_seen == set(
            dataset.token2id(
                "item_id", events[events.timestamp < night].item_id.astype(str).to_numpy()
            ).tolist()
        )
