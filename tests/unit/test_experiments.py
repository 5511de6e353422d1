"""The results-table driver: aggregation, the per-run cache, and a real run on a fixture table."""

from __future__ import annotations

import json
import math

import pytest

from orchestration import experiments
from orchestration.experiments import (
    RUN_DATE,
    Settings,
    experiment_config,
    results_table,
    run_one,
    run_trained,
)
from tests.sequence_fixtures import build_sequences_table, cycle_ratings, write_sequences_delta


def _record(model, seed, ndcg, seconds=2.0):
    metrics = {"hr@10": 2 * ndcg, "ndcg@10": ndcg, "mrr@10": ndcg / 2}
    return {
        "model": model,
        "seed": seed,
        "test": {"paper": metrics, "production": {k: v / 2 for k, v in metrics.items()}},
        "epoch_seconds": seconds,
    }


def test_results_table_reports_mean_and_sample_std_per_model_in_model_order():
    records = [_record("ss4rec", 1, 0.1, 3.0), _record("pop", 1, 0.02), _record("ss4rec", 2, 0.3, 5.0)]
    lines = results_table(records).splitlines()
    assert lines[0].startswith("| Model | Seeds | paper HR@10 | paper NDCG@10")
    pop, ss4rec = lines[2], lines[3]  # experiments.MODELS order: pop before ss4rec
    assert pop.startswith("| Popularity | 1 |") and "0.0200 ± 0.0000" in pop
    cells = [c.strip() for c in ss4rec.strip("|").split("|")]
    assert cells[:2] == ["SS4Rec", "2"]
    std = math.sqrt(((0.1 - 0.2) ** 2 + (0.3 - 0.2) ** 2) / 1)  # sample std, n - 1 = 1
    assert cells[3] == f"0.2000 ± {std:.4f}"  # paper NDCG@10
    assert cells[6] == f"0.1000 ± {std / 2:.4f}"  # production NDCG@10
    assert cells[-1] == "4.0 ± 1.4"


def test_run_one_reuses_a_finished_run_only_for_the_same_settings(tmp_path, monkeypatch):
    calls = []

    def fake(name, seed, config, settings, work_dir):
        calls.append((name, seed, settings.epochs))
        return {"test": {}, "epoch_seconds": 1.0}

    monkeypatch.setattr(experiments, "run_trained", fake)
    first = run_one("pop", 7, None, Settings(epochs=1), tmp_path)
    again = run_one("pop", 7, None, Settings(epochs=1), tmp_path)
    other = run_one("pop", 7, None, Settings(epochs=2), tmp_path)
    assert calls == [("pop", 7, 1), ("pop", 7, 2)]
    assert first == again and other["settings"]["epochs"] == 2
    assert len(list((tmp_path / "runs").glob("pop-7-*.json"))) == 2
    with pytest.raises(ValueError, match="unknown model"):
        run_one("nope", 7, None, Settings(), tmp_path)


def test_new_training_protocol_reruns_ours_not_recbole_new_evaluation_reruns_all(tmp_path, monkeypatch):
    calls = []

    def fake(name, *args):
        calls.append(name)
        return {"test": {}, "epoch_seconds": 1.0}

    monkeypatch.setattr(experiments, "run_trained", lambda name, *args: fake(name))
    monkeypatch.setattr(experiments, "run_recbole", lambda seed, settings: fake("recbole_sasrec"))
    for name in ("pop", "recbole_sasrec"):
        run_one(name, 7, None, Settings(), tmp_path)
    monkeypatch.setattr(experiments, "TRAINING_PROTOCOL", experiments.TRAINING_PROTOCOL + 1)
    for name in ("pop", "recbole_sasrec"):
        run_one(name, 7, None, Settings(), tmp_path)
    assert calls == ["pop", "recbole_sasrec", "pop"]
    monkeypatch.setattr(experiments, "EVALUATION_PROTOCOL", experiments.EVALUATION_PROTOCOL + 1)
    for name in ("pop", "recbole_sasrec"):
        run_one(name, 7, None, Settings(), tmp_path)
    assert calls == ["pop", "recbole_sasrec", "pop", "pop", "recbole_sasrec"]


def test_run_trained_trains_and_tests_a_model_on_the_configured_sequences(tmp_path):
    settings = Settings(max_len=20, epochs=5, patience=1, batch_size=8, lr=0.01)
    config = experiment_config(tmp_path, settings)
    # 40 items on a deterministic cycle: learnable, and popularity cannot guess the next item
    table = build_sequences_table(cycle_ratings(n_users=30, n_items=40, length=12), valid_from=RUN_DATE)
    write_sequences_delta(table, tmp_path / "lake" / "sequences")
    sasrec = run_trained("sasrec", 3, config, settings, tmp_path)
    pop = run_trained("pop", 3, config, settings, tmp_path)
    assert sasrec["n_test_users"] == 30 and 1 <= sasrec["epochs_run"] <= 5
    for record in (sasrec, pop):
        assert set(record["test"]) == {"paper", "production"}
        for metrics in record["test"].values():
            assert 0.0 <= metrics["mrr@10"] <= metrics["ndcg@10"] <= metrics["hr@10"] <= 1.0
        json.dumps(record)  # the record is what run_one writes
    assert sasrec["test"]["paper"]["ndcg@10"] > 0.6 > pop["test"]["paper"]["ndcg@10"]


def test_write_report_writes_table_runs_and_chart(tmp_path):
    records = [_record("ss4rec", 1, 0.1), _record("ss4rec", 2, 0.3), _record("pop", 1, 0.02)]
    out = tmp_path / "docs" / "results.md"
    experiments.write_report(out, records, Settings(), ["--seeds", "1", "2"])
    text = out.read_text()
    assert "`python -m orchestration.experiments --seeds 1 2`" in text
    assert results_table(records) in text and "![NDCG@10 per model](results.svg)" in text
    assert json.loads(out.with_suffix(".json").read_text()) == records
    chart = out.with_suffix(".svg").read_text()
    assert chart.startswith("<?xml") and "<svg" in chart
