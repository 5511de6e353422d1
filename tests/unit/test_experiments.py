"""The results-table driver: aggregation, the per-run cache, and a real run on a fixture table."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pytest

from orchestration import experiments
from orchestration.experiments import (
    RUN_DATE,
    Dataset,
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

    def fake(name, seed, config, settings, work_dir, run_date):
        assert run_date == RUN_DATE
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
    monkeypatch.setattr(experiments, "run_recbole", lambda *args: fake("recbole_sasrec"))
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


def _ratings_csv(path, ratings):
    """``ratings`` (user_id, item_id, rating, timestamp) as a MovieLens ``ratings.csv``."""
    frame = ratings.rename(columns={"user_id": "userId", "item_id": "movieId"})
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, columns=["userId", "movieId", "rating", "timestamp"])
    return path


def test_an_input_file_is_its_own_dataset_with_its_own_folder(tmp_path):
    first = _ratings_csv(tmp_path / "ratings.csv", cycle_ratings(n_users=5, n_items=6, length=4))
    other = _ratings_csv(tmp_path / "other" / "ratings.csv", cycle_ratings(n_users=5, n_items=6, seed=1))
    default = Dataset.of()
    assert (default.label, default.embedded, default.input) == ("ml-100k", True, None)
    ml1m = Dataset.of("ml-1m")
    assert ml1m.label == "ml-1m" and not ml1m.embedded
    one, two = Dataset.of(input=first), Dataset.of(input=other)
    assert one.format_name == "ratings.csv" and not one.embedded
    assert one.label.startswith("ratings-") and len(one.label) == len("ratings-") + 12
    assert one.label != two.label  # same name, different content: different lake and cache
    assert one.work_dir(tmp_path) == tmp_path / one.label
    assert Dataset.of(input=first, format_name="ratings.csv").label == one.label
    with pytest.raises(ValueError, match="--format describes --input"):
        Dataset.of(format_name="ratings.csv")
    with pytest.raises(FileNotFoundError, match="no such file"):
        Dataset.of(input=tmp_path / "missing.csv")
    # the run date is part of a run's cache key
    assert experiments.run_key("pop", 1, Settings(), RUN_DATE) != experiments.run_key(
        "pop", 1, Settings(), RUN_DATE.replace(year=2030)
    )


def test_main_on_an_input_file_builds_its_own_lake_and_names_its_report(tmp_path, monkeypatch):
    import orchestration.nightly

    ratings = cycle_ratings(n_users=24, n_items=15, length=8)
    source = _ratings_csv(tmp_path / "ratings.csv", ratings)
    run_date = dt.date(2001, 2, 3)
    built = []

    def pipeline(config, date, inputs):
        # what the Spark pipeline leaves behind for the experiments: the sequences table
        built.append((config.lake.root, date, inputs))
        table = build_sequences_table(ratings, valid_from=date)
        write_sequences_delta(table, Path(config.table_path("sequences")))

    monkeypatch.setattr(orchestration.nightly, "run_pipeline_stages", pipeline)
    work, out = tmp_path / "work", tmp_path / "report" / "results.md"
    argv = ["--input", str(source), "--run-date", "2001-02-03", "--models", "pop", "--seeds", "4"]
    argv += ["--epochs", "1", "--work-dir", str(work), "--out", str(out), "--threads", "1"]
    assert experiments.main(argv) == 0
    label = Dataset.of(input=source).label
    assert built == [(str(work / label / "lake"), run_date, ([str(source.resolve())], "ratings.csv"))]
    (run,) = (work / label / "runs").glob("pop-4-*.json")
    record = json.loads(run.read_text())
    assert (record["dataset"], record["run_date"]) == (label, "2001-02-03")
    assert (record["n_items"], record["n_test_users"]) == (15, 24)
    text = out.read_text()
    assert text.startswith(f"# ratings.csv ({label}) results")
    assert "ranking against all 15 items, 24 test users" in text and "drop of 2001-02-03" in text
    # a second invocation finds the lake and the run: nothing is built or trained again
    monkeypatch.setattr(experiments, "run_trained", lambda *args: pytest.fail("trained again"))
    assert experiments.main(argv) == 0
    assert len(built) == 1


def test_recbole_reads_the_embedded_ml100k_or_the_pipelines_export(tmp_path):
    from spark_jobs.export_recbole import RECBOLE_HEADER

    assert experiments.recbole_source(None, Dataset.of(), tmp_path) == ("ml-100k", None)
    # another dataset: the export under <work_dir>/recbole (present here, so Spark is not started)
    source = _ratings_csv(tmp_path / "ratings.csv", cycle_ratings(n_users=30, n_items=25, length=10))
    dataset = Dataset.of(input=source)
    inter = tmp_path / "recbole" / dataset.label / f"{dataset.label}.inter"
    inter.parent.mkdir(parents=True)
    ratings = cycle_ratings(n_users=30, n_items=25, length=10)
    ratings[["user_id", "item_id", "rating", "timestamp"]].to_csv(
        inter, sep="\t", index=False, header=list(RECBOLE_HEADER)
    )
    name, root = experiments.recbole_source(None, dataset, tmp_path)
    assert (name, root) == (dataset.label, str(tmp_path / "recbole"))
    record = experiments.run_recbole(5, Settings(max_len=5, recbole_epochs=1, patience=1), name, root)
    assert (record["n_test_users"], record["n_items"]) == (30, 25)
    for metrics in record["test"].values():
        assert 0.0 <= metrics["mrr@10"] <= metrics["ndcg@10"] <= metrics["hr@10"] <= 1.0


def test_tuned_rows_run_with_their_overlay_beside_the_defaults(tmp_path):
    overlay = tmp_path / "sasrec-2024-01-01.best.yaml"
    overlay.write_text("model:\n  hidden_size: 16\n  max_seq_len: 5\ntrain:\n  lr: 0.02\n")
    tuned = experiments.Tuned.parse(f"sasrec={overlay}")
    assert tuned == experiments.Tuned(
        "sasrec",
        "sasrec-2024-01-01.best",
        {"model": {"hidden_size": 16, "max_seq_len": 5}, "train": {"lr": 0.02}},
    )
    for bad, error in (
        ("pop=" + str(overlay), ValueError),
        ("sasrec", ValueError),
        ("sasrec=/no/file", OSError),
    ):
        with pytest.raises(error, match="--tuned"):
            experiments.Tuned.parse(bad)
    (tmp_path / "named.yaml").write_text("model:\n  name: ss4rec\ntrain:\n  seed: 1\n")
    with pytest.raises(ValueError, match=r"sets model.name, train.seed"):
        experiments.Tuned.parse(f"sasrec={tmp_path / 'named.yaml'}")
    twice = tmp_path / "again"
    twice.mkdir()
    (twice / overlay.name).write_text(overlay.read_text())
    with pytest.raises(SystemExit):
        experiments.main(
            ["--models", "pop", "--tuned", f"sasrec={overlay}", "--tuned", f"sasrec={twice / overlay.name}"]
        )
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ValueError, match="not a configuration overlay"):
        experiments.Tuned.parse(f"sasrec={tmp_path / 'list.yaml'}")

    settings = Settings(max_len=20, epochs=1, patience=1, batch_size=8)
    config = experiment_config(tmp_path, settings)
    table = build_sequences_table(cycle_ratings(n_users=20, n_items=30, length=8), valid_from=RUN_DATE)
    write_sequences_delta(table, tmp_path / "lake" / "sequences")
    default = run_one("sasrec", 3, config, settings, tmp_path)
    tuned_run = run_one("sasrec", 3, config, settings, tmp_path, tuned=tuned)
    assert "tuned" not in default and tuned_run["tuned"] == "sasrec-2024-01-01.best"
    assert tuned_run["overlay"] == tuned.keys
    assert tuned_run["parameters"] < default["parameters"]  # hidden 16 and 5 positions, not 64 and 20
    assert len(list((tmp_path / "runs").glob("sasrec-3-*.json"))) == 2  # its own cache entry

    lines = results_table([default, tuned_run, _record("pop", 1, 0.02)]).splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == [
        "Popularity",
        "SASRec (ours)",
        "SASRec (ours), tuned (sasrec-2024-01-01.best)",
    ]
    out = tmp_path / "report.md"
    experiments.write_report(out, [default, tuned_run], settings, ["--tuned", f"sasrec={overlay}"])
    expected = "model.hidden_size 16, model.max_seq_len 5, train.lr 0.02."
    assert f"- SASRec (ours), tuned (sasrec-2024-01-01.best): {expected}" in out.read_text()
