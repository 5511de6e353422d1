"""model/recbole_peer.py: RecBole runs in its own environment; its scores are ranked by our evaluator."""

from __future__ import annotations

import numpy as np
import pytest

from model import recbole_peer
from model.recbole_peer import PeerError, night_metrics, ranking_metrics, run_peer, train_and_score

# Light users (<= 40 ratings: 305 users) and a small SASRec keep one epoch to seconds on CPU.
TINY = {
    "user_inter_num_interval": "[0,40]",
    "MAX_ITEM_LIST_LENGTH": 20,
    "hidden_size": 32,
    "inner_size": 64,
    "n_layers": 1,
    "n_heads": 1,
    "train_batch_size": 2048,
    "epochs": 1,
}


def test_ranking_metrics_rules():
    scores = np.array(
        [
            [-np.inf, 0.9, 0.5, 0.1, 0.7],  # target 2: rank 3 -> 2 once item 1 (seen) is masked
            [-np.inf, 0.1, 0.2, 0.3, 0.4],  # target 4: rank 1
            [-np.inf, 0.4, 0.4, 0.4, 0.0],  # target 1: tied with items 2 and 3, rank 3; seen -> miss
        ]
    )
    target = np.array([2, 4, 1])
    seen = np.zeros_like(scores, dtype=bool)
    seen[0, 1] = True
    seen[2, 1] = True
    paper = ranking_metrics(scores, target, ks=(1, 2))
    production = ranking_metrics(scores, target, seen, ks=(1, 2))
    assert paper["hr@1"] == pytest.approx(1 / 3)  # the tie ranks ahead of the target
    assert paper["hr@2"] == pytest.approx(1 / 3)
    assert paper["mrr@2"] == pytest.approx(1 / 3)
    assert production["hr@2"] == pytest.approx(2 / 3)
    assert production["ndcg@2"] == pytest.approx((1 / np.log2(3) + 1) / 3)


def test_a_missing_peer_environment_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setenv(recbole_peer.PEER_PYTHON_ENV, str(tmp_path / "no-such-python"))
    with pytest.raises(PeerError, match="make recbole-venv"):
        run_peer("split", [])


def test_a_failing_peer_run_raises_with_the_end_of_its_log():
    with pytest.raises(
        PeerError, match=r"(?s)`metrics` failed \(exit 2\).*--scores /no/such.npz: no such file"
    ):
        run_peer("metrics", ["--scores", "/no/such.npz"])


def test_settings_reach_the_peer_as_json():
    from model.recbole_peer import _settings_args

    args = _settings_args(
        {"learning_rate": 5e-05, "user_inter_num_interval": "[0,40]", "normalize_field": None}
    )
    assert args == [
        "--set",
        "learning_rate=5e-05",
        "--set",
        'user_inter_num_interval="[0,40]"',
        "--set",
        "normalize_field=null",
    ]


def test_the_product_never_imports_recbole():
    import subprocess
    import sys

    code = (
        "import sys, model.recbole_peer, model.evaluate, orchestration.experiments; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('recbole', 'peers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_a_peer_run_returns_scores_our_evaluator_ranks_as_recbole_does():
    summary, arrays = train_and_score("sasrec", 2020, TINY, device="cpu", threads=2)
    assert summary["epochs_run"] == 1 and summary["config"]["exact_timestamps"] is True
    scores, target = arrays["scores"], arrays["target_index"]
    assert scores.shape == (305, len(arrays["item_raw_ids"])) and arrays["item_raw_ids"][0] == "[PAD]"
    np.testing.assert_array_equal(arrays["item_raw_ids"][target], arrays["target_raw_ids"])
    # The scores reproduce RecBole's own test metrics (6 decimals; a trained model's float scores
    # have no ties, where the two tie rules would differ) ...
    paper = summary["test_metrics_from_scores"]["paper"]
    for key, value in summary["test_metrics_recbole"].items():
        assert paper[key] == pytest.approx(value, abs=2e-6)
    # ... and the production variant's cold users (the peer's count, and its arrays) are misses.
    production = summary["test_metrics_from_scores"]["production"]
    assert summary["night_cold_users"] == int(arrays["night_cold"].sum()) > 0
    assert production["no_history"] == pytest.approx(summary["night_cold_users"] / 305)
    assert production["hr@20"] <= 1 - production["no_history"]


def test_night_metrics_mask_the_nights_seen_items_and_count_cold_users_as_misses():
    scores = np.array(
        [
            [-np.inf, 0.9, 0.5, 0.1],  # target 2, item 1 seen that night: rank 1
            [-np.inf, 0.1, 0.2, 0.3],  # target 1: rank 3
            [-np.inf, -np.inf, -np.inf, -np.inf],  # cold: not scored
        ]
    )
    seen = np.zeros_like(scores, dtype=bool)
    seen[0, 1] = True
    cold = np.array([False, False, True])
    metrics = night_metrics(scores, np.array([2, 1, 3]), seen, cold, ks=(1, 3))
    assert metrics["hr@1"] == pytest.approx(1 / 3)
    assert metrics["hr@3"] == pytest.approx(2 / 3)
    assert metrics["mrr@3"] == pytest.approx((1 + 1 / 3) / 3)
    assert metrics["ndcg@3"] == pytest.approx((1 + 1 / np.log2(4)) / 3)
    assert metrics["no_history"] == pytest.approx(1 / 3)
