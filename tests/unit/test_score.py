"""model/score.py: nightly batch scoring on delta-rs tables, no JVM."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from model.data import IdVocab, SequenceData
from model.registry import ModelRegistry
from model.score import History, fallback_users, history_from_silver, mask_and_top_k, score_run
from recsys.staging import CATALOGUE_FILE, MANIFEST_FILE, RECOMMENDATIONS_FILE, read_manifest, staging_dir
from tests.scoring_fixtures import CUTOFF, DAY, EVENTS, ITEMS, T0, save_model, scoring_config, write_lake
from tests.sequence_fixtures import build_sequences_table, ratings_frame


def _staged(config) -> list[dict]:
    return pq.read_table(Path(staging_dir(config, DAY)) / RECOMMENDATIONS_FILE).to_pylist()


def _by_user(rows: list[dict]) -> dict[int, list[dict]]:
    users: dict[int, list[dict]] = {}
    for row in sorted(rows, key=lambda r: (r["user_id"], r["rank"])):
        users.setdefault(row["user_id"], []).append(row)
    return users


def test_raw_ids_out_full_history_masked_and_fewer_than_k_when_catalogue_runs_out(tmp_path):
    config = scoring_config(tmp_path, "scoring.top_k=4", "scoring.batch_size=1")
    # sequences keep only the last 2 events: 1000 and 2000 of user 77 are outside the tail.
    write_lake(config, EVENTS, max_seq_len=2)
    version = save_model(config, ITEMS)
    result = score_run(config, DAY, version)
    users = _by_user(_staged(config))
    assert set(users) == {77, 501}
    for user, history in EVENTS.items():
        seen = {item for item, _ in history}
        recommended = [row["item_id"] for row in users[user]]
        assert not seen & set(recommended), user  # the full history, not just the tail, is masked
        assert set(recommended) <= set(ITEMS) and len(set(recommended)) == len(recommended)
        assert [row["rank"] for row in users[user]] == list(range(1, len(recommended) + 1))
        scores = [row["score"] for row in users[user]]
        assert scores == sorted(scores, reverse=True)
    # user 77 has rated 5 of 8 items: only 3 candidates are left for K = 4
    assert len(users[77]) == 3 and len(users[501]) == 4
    rows = _staged(config)
    assert {r["model_version"] for r in rows} == {version} and not any(r["is_fallback"] for r in rows)
    assert {r["generated_at"] for r in rows} == {dt.datetime.fromtimestamp(CUTOFF, tz=dt.UTC)}
    manifest = read_manifest(config, DAY)
    assert manifest == result.manifest
    assert (manifest["users"], manifest["rows"], manifest["fallback_users"]) == (2, 7, 0)
    assert pq.read_table(Path(result.staging) / CATALOGUE_FILE).column("item_id").to_pylist() == ITEMS
    (run,) = manifest["model_runs"]
    assert run["metrics"]["valid.production.ndcg@10"] == 0.5 and run["trained_tonight"] is True
    assert set(run["input_versions"]) == {"sequences", "ratings_silver"}


def test_scores_are_the_models_own_ranking(tmp_path):
    """The staged top-K is the model's full_sort_predict order over unseen items."""
    config = scoring_config(tmp_path, "scoring.top_k=8")
    write_lake(config, EVENTS, max_seq_len=200)
    version = save_model(config, ITEMS)
    score_run(config, DAY, version)
    from model.train import load_trained_model

    model, vocab, _ = load_trained_model(ModelRegistry.from_config(config).path(version))
    history = EVENTS[501]
    items = torch.tensor([vocab["items"].encode([i for i, _ in history]).tolist()])
    times = torch.tensor([[t for _, t in history]])
    with torch.no_grad():
        expected = model.full_sort_predict(items, times, torch.tensor([3]), torch.tensor([CUTOFF]))[0]
    expected[items[0]] = float("-inf")
    order = torch.argsort(expected[1:], descending=True)[:5] + 1
    staged = _by_user(_staged(config))[501]
    assert [row["item_id"] for row in staged] == vocab["items"].decode(order.numpy()).tolist()
    np.testing.assert_allclose(
        [row["score"] for row in staged], expected[order].numpy(), rtol=1e-5, atol=1e-6
    )


def test_unknown_items_are_skipped_and_a_user_with_none_known_gets_the_popularity_fallback(tmp_path):
    config = scoring_config(tmp_path, "scoring.top_k=3", "scoring.fallback_window_days=30")
    events = {
        **EVENTS,
        # 9000 and 9100 are new since training: 501's input loses 9000, 900 keeps nothing.
        501: [*EVENTS[501], (9000, T0 + 200)],
        900: [(9000, T0 + 300), (9100, T0 + 400)],
        # recent activity (inside the 30-day window) makes 8000 the most popular item
        901: [(8000, CUTOFF - 3600), (7000, CUTOFF - 7200), (4000, T0 - 86_400)],
        902: [(8000, CUTOFF - 5000), (1000, CUTOFF - 6000), (2000, CUTOFF - 6500)],
    }
    write_lake(config, events, max_seq_len=200)
    version = save_model(config, ITEMS)
    result = score_run(config, DAY, version)
    assert (result.manifest["skipped_positions"], result.manifest["skipped_items"]) == (3, 2)
    assert result.manifest["fallback_users"] == 1
    users = _by_user(_staged(config))
    assert set(users) == {77, 501, 900, 901, 902}
    fallback = users[900]
    assert all(row["is_fallback"] for row in fallback)
    assert not any(row["is_fallback"] for user, rows in users.items() if user != 900 for row in rows)
    # recent counts: 8000 -> 2, then 7000, 1000, 2000 -> 1 each, broken by all-time counts:
    # 1000 (3 ratings in total) before 2000 and 7000 (2 each; the smaller id first)
    assert [row["item_id"] for row in fallback] == [8000, 1000, 2000]
    assert [row["score"] for row in fallback] == [2.0, 1.0, 1.0]


def test_a_saved_vocabulary_without_skipping_still_rejects_unknown_items():
    table = build_sequences_table(ratings_frame({1: [(1, 1), (2, 2), (9, 3)]}))
    with pytest.raises(ValueError, match="1 item"):
        SequenceData.from_arrow(table, item_vocab=IdVocab([1, 2], first_index=1))
    data = SequenceData.from_arrow(table, item_vocab=IdVocab([1, 2], first_index=1), unknown_items="skip")
    assert data.offsets.tolist() == [0, 2] and data.skipped.positions == 1


def test_rerun_stages_identical_rows_and_replaces_the_staging(tmp_path):
    config = scoring_config(tmp_path, "scoring.top_k=5")
    write_lake(config, EVENTS, max_seq_len=200)
    version = save_model(config, ITEMS)
    score_run(config, DAY, version)
    first = sorted(_staged(config), key=lambda r: (r["user_id"], r["rank"]))
    score_run(config, DAY, version)
    assert sorted(_staged(config), key=lambda r: (r["user_id"], r["rank"])) == first
    parent = Path(staging_dir(config, DAY)).parent
    assert [p.name for p in parent.iterdir()] == [DAY.isoformat()]  # no partial or old directory left
    assert (parent / DAY.isoformat() / MANIFEST_FILE).is_file()


def test_mask_and_top_k_masks_exactly_the_seen_columns():
    import scipy.sparse as sp

    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
    seen = sp.csr_matrix(np.array([[0, 1, 0, 0, 0], [0, 0, 0, 0, 1]], dtype=bool))  # items 1 and 4
    values, items = mask_and_top_k(scores, seen, 2)
    assert items.tolist() == [[2, 3], [3, 2]]
    assert values.tolist() == [[4.0, 3.0], [3.0, 2.0]]


def test_history_counts_only_catalogue_items_and_known_users():
    silver = pa.table(
        {
            "user_id": [1, 1, 2, 3],
            "item_id": [10, 99, 20, 10],  # 99 is not in the catalogue; user 3 is not scored
            "timestamp": [CUTOFF - 10, CUTOFF - 10, CUTOFF - 40 * 86_400, CUTOFF - 10],
        }
    )
    history = history_from_silver(silver, IdVocab([1, 2], 0), IdVocab([10, 20], 1), CUTOFF, window_days=30)
    assert history.seen.toarray().tolist() == [[False, True, False], [False, False, True]]
    assert history.recent_counts.tolist() == [0, 2, 0] and history.total_counts.tolist() == [0, 2, 1]
    assert history.fallback_order.tolist() == [1, 2]
    batch = fallback_users(
        History(history.seen, history.recent_counts, history.total_counts), np.array([0]), 5
    )
    assert batch.items[0, : batch.counts[0]].tolist() == [2] and batch.fallback
