"""peers/recbole/reference.py and its CLI: RecBole SASRec reference run, score export, throughput."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from peers.recbole.__main__ import main
from peers.recbole.reference import (
    PAPER_CONFIG,
    _prepare,
    build_config,
    measure_training_throughput,
    recbole_metrics,
)
from peers.recbole.runtime import recbole_data_path

# Light users (<= 40 ratings: 305 users) and a small SASRec keep one epoch to seconds on CPU.
TINY = [
    "user_inter_num_interval=[0,40]",
    "MAX_ITEM_LIST_LENGTH=20",
    "hidden_size=32",
    "inner_size=64",
    "n_layers=1",
    "n_heads=1",
    "train_batch_size=2048",
]


def _raw_ratings():
    import os

    import pandas as pd

    frame = pd.read_csv(os.path.join(recbole_data_path(), "ml-100k", "ml-100k.inter"), sep="\t")
    frame.columns = ["user_id", "item_id", "rating", "timestamp"]
    return frame


def test_paper_protocol_settings():
    assert PAPER_CONFIG["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert PAPER_CONFIG["eval_args"]["order"] == "TO"
    assert PAPER_CONFIG["eval_args"]["mode"] == "full"
    assert PAPER_CONFIG["MAX_ITEM_LIST_LENGTH"] == 200
    assert PAPER_CONFIG["train_neg_sample_args"] is None and PAPER_CONFIG["loss_type"] == "CE"
    assert (PAPER_CONFIG["hidden_size"], PAPER_CONFIG["n_layers"], PAPER_CONFIG["n_heads"]) == (64, 2, 2)
    assert PAPER_CONFIG["learning_rate"] == 1e-3 and PAPER_CONFIG["stopping_step"] == 10
    assert PAPER_CONFIG["valid_metric"] == "NDCG@10"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = build_config(seed=7, device="cpu")
    assert config["seed"] == 7 and config["device"].type == "cpu"
    assert config["metrics"] == ["Hit", "NDCG", "MRR"] and config["topk"] == [5, 10, 20]


def test_exact_timestamps_change_recbole_split():
    """RecBole as shipped (normalised float32 times) picks other test items for a few users."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exact_config = build_config(device="cpu", overrides={"normalize_all": False})
        shipped_config = build_config(device="cpu")
        exact = _prepare(exact_config, exact_timestamps=True)
        shipped = _prepare(shipped_config, exact_timestamps=False)

    def targets(prepared):
        dataset, _, _, test_data = prepared
        inter = test_data.dataset.inter_feat
        users = dataset.id2token("user_id", inter["user_id"].numpy())
        items = dataset.id2token("item_id", inter["item_id"].numpy())
        return dict(zip(users, items, strict=True))

    exact_targets, shipped_targets = targets(exact), targets(shipped)
    assert len(exact_targets) == len(shipped_targets) == 943
    assert exact[0].inter_feat["timestamp"].dtype == torch.float64
    assert shipped[0].inter_feat["timestamp"].dtype == torch.float32
    assert sum(exact_targets[u] != shipped_targets[u] for u in exact_targets) == 4


@pytest.mark.slow
def test_cli_runs_reference_and_exports_comparable_scores(tmp_path):
    out_json, out_npz = tmp_path / "ref.json", tmp_path / "ref.npz"
    args = ["sasrec", "--seed", "2020", "--device", "cpu", "--epochs", "1", "--json", str(out_json)]
    args += ["--scores", str(out_npz)]
    for item in TINY:
        args += ["--set", item]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = main(args)

    assert json.loads(out_json.read_text()) == json.loads(json.dumps(summary, default=str))
    assert summary["epochs_run"] == 1 and len(summary["epoch_seconds"]) == 1
    assert summary["train_sequences_per_second"] > 0
    assert summary["config"]["exact_timestamps"] is True
    reported = summary["test_metrics_recbole"]
    assert set(reported) == {f"{m}@{k}" for m in ("hr", "ndcg", "mrr") for k in (5, 10, 20)}

    data = np.load(out_npz, allow_pickle=False)
    scores, target, seen = data["scores"], data["target_index"], data["seen_mask"]
    n_users, n_cols = scores.shape
    assert n_users == 305 == len(data["user_raw_ids"]) == len(data["target_raw_ids"])
    assert n_cols == len(data["item_raw_ids"]) and data["item_raw_ids"][0] == "[PAD]"
    assert np.isneginf(scores[:, 0]).all() and np.isfinite(scores[:, 1:]).all()
    np.testing.assert_array_equal(data["item_raw_ids"][target], data["target_raw_ids"])
    # Seen = every earlier interaction: each light user has 20..40 ratings, the test one excluded.
    raw = _raw_ratings()
    n_ratings = raw.groupby("user_id").size().loc[data["user_raw_ids"].astype(int)].to_numpy()
    np.testing.assert_array_equal(seen.sum(axis=1), n_ratings - 1)
    first_row = raw.sort_values(["user_id", "timestamp"], kind="stable").groupby("user_id").head(1)
    first_item = first_row.set_index("user_id").loc[data["user_raw_ids"].astype(int), "item_id"]
    column_of = {raw: column for column, raw in enumerate(data["item_raw_ids"])}
    first_col = np.array([column_of[str(item)] for item in first_item])
    assert seen[np.arange(n_users), first_col].all()
    assert not seen[np.arange(n_users), target].any()  # ML-100K has no repeat ratings

    # The night inputs: the events dated before the UTC midnight of the test item's day.
    night_seen, cold, night_scores = data["night_seen_mask"], data["night_cold"], data["night_scores"]
    ordered = raw.sort_values(["user_id", "timestamp"], kind="stable")
    per_user = {user: group.to_numpy() for user, group in ordered.groupby("user_id")["timestamp"]}
    expected_known = []
    for user in data["user_raw_ids"].astype(int):
        times = per_user[user]
        expected_known.append(int((times[:-1] < times[-1] - times[-1] % 86_400).sum()))
    np.testing.assert_array_equal(night_seen.sum(axis=1), expected_known)
    np.testing.assert_array_equal(cold, np.array(expected_known) == 0)
    assert cold.any() and not cold.all()
    assert np.isneginf(night_scores[cold]).all() and np.isfinite(night_scores[~cold][:, 1:]).all()
    assert not (night_seen & ~seen).any()  # the night knew a prefix of the history

    # The exported matrix is the one RecBole evaluated: its own metrics of it agree (6 decimals).
    from_scores = recbole_metrics(scores, target)
    for key, value in reported.items():
        assert from_scores[key] == pytest.approx(value, abs=2e-6)


@pytest.mark.slow
def test_training_throughput():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        figures = measure_training_throughput(
            n_batches=2,
            batch_size=256,
            max_len=20,
            device="cpu",
            overrides={"hidden_size": 32, "inner_size": 64, "n_layers": 1, "n_heads": 1},
        )
    assert figures["sequences"] == 512
    assert figures["sequences_per_second"] > 0
    assert figures["max_len"] == 20 and figures["batch_size"] == 256
    assert figures["train_samples_per_epoch"] == 97_171


def test_night_scores_are_the_models_scores_of_the_events_before_the_night():
    """Rebuilt from the raw ratings: a warm user's night input is their last MAX_ITEM_LIST_LENGTH
    events dated before the UTC midnight of the test item's day."""
    from recbole.data.interaction import Interaction

    from peers.recbole.reference import export_test_scores
    from peers.recbole.runtime import sequential_models

    overrides = {"user_inter_num_interval": "[0,40]", "MAX_ITEM_LIST_LENGTH": 5, "normalize_all": False}
    overrides.update({"hidden_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = build_config(device="cpu", overrides=overrides)
        dataset, train_data, _, test_data = _prepare(config)
    torch.manual_seed(0)
    model = sequential_models().SASRec(config, train_data._dataset).eval()
    exported = export_test_scores(model, dataset, test_data, config["device"])

    raw = _raw_ratings().sort_values(["user_id", "timestamp"], kind="stable")
    warm = np.flatnonzero(~exported["night_cold"])
    assert len(warm) >= 3
    for row in warm[:3]:
        events = raw[raw.user_id == int(exported["user_raw_ids"][row])]
        night = events.timestamp.iloc[-1] - events.timestamp.iloc[-1] % 86_400
        before = events[events.timestamp < night].tail(5)
        items = dataset.token2id("item_id", before.item_id.astype(str).to_numpy())
        batch = Interaction(
            {
                "item_id_list": torch.from_numpy(np.pad(items, (0, 5 - len(items)))[None]),
                "item_length": torch.tensor([len(items)]),
            }
        )
        with torch.no_grad():
            expected = model.full_sort_predict(batch).view(-1).numpy()
        np.testing.assert_allclose(exported["night_scores"][row, 1:], expected[1:], rtol=1e-5, atol=1e-6)
        assert exported["night_seen_mask"][row].sum() == (events.timestamp < night).sum()
