"""spark_jobs/publish_recommendations.py: the recommendations gate, then Delta, idempotently."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from expectations.gate import GateError
from model.score import score_run
from recsys.staging import RECOMMENDATIONS_FILE, staging_dir
from spark_jobs import publish_recommendations
from spark_jobs.common import RunContext
from tests.scoring_fixtures import DAY, EVENTS, ITEMS, save_model, scoring_config, write_lake

pytestmark = pytest.mark.spark

COLUMNS = ["run_date", "model_version", "user_id", "rank", "item_id", "score", "is_fallback", "generated_at"]


def _night(tmp_path: Path, *overrides: str):
    config = scoring_config(tmp_path, "scoring.top_k=4", *overrides)
    write_lake(config, EVENTS, max_seq_len=200)
    version = save_model(config, ITEMS)
    score_run(config, DAY, version)
    return config, RunContext.for_date(config, DAY, run_id="test-run")


def _table(spark, config, name: str) -> list[tuple]:
    frame = spark.read.format("delta").load(config.table_path(name))
    columns = COLUMNS if name == "recommendations" else sorted(frame.columns)
    return sorted(tuple(row) for row in frame.select(*columns).collect())


def _restage(config, change) -> None:
    """Rewrite the staged rows through ``change(list of row dicts) -> list of row dicts``."""
    path = Path(staging_dir(config, DAY)) / RECOMMENDATIONS_FILE
    staged = pq.read_table(path)
    pq.write_table(pa.Table.from_pylist(change(staged.to_pylist()), schema=staged.schema), path)


def test_publish_passes_the_gate_writes_both_tables_and_is_idempotent(spark, tmp_path):
    config, ctx = _night(tmp_path)
    summary = publish_recommendations.run(spark, ctx)
    assert summary["parameters"] == {"users": 2}
    staged = pq.read_table(Path(staging_dir(config, DAY)) / RECOMMENDATIONS_FILE).to_pylist()
    published = _table(spark, config, "recommendations")
    # Spark hands timestamps back naive, in the session's time zone (UTC)
    staged = [{**row, "generated_at": row["generated_at"].replace(tzinfo=None)} for row in staged]
    assert published == sorted(tuple(row[c] for c in COLUMNS) for row in staged)
    assert len(published) == 3 + 4  # user 77 has 3 unseen items left, user 501 four
    (run,) = spark.read.format("delta").load(config.table_path("model_runs")).collect()
    assert (run.model_version, run.scored, run.trained_tonight) == ("ss4rec-test", True, True)
    assert run.metrics["test.production.ndcg@10"] == 0.375 and set(run.input_versions) == {
        "sequences",
        "ratings_silver",
    }
    before = {name: _table(spark, config, name) for name in ("recommendations", "model_runs")}
    publish_recommendations.run(spark, ctx)  # rerun of the date
    assert {name: _table(spark, config, name) for name in before} == before
    assert Path(ctx.validation_uri("recommendations") + ".html").is_file()


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        # a seen item (user 77 rated 1000) in place of rank 1
        (
            lambda rows: [
                {**r, "item_id": 1000} if (r["user_id"], r["rank"]) == (77, 1) else r for r in rows
            ],
            {"no_seen_item"},
        ),
        # the same item twice for one user
        (
            lambda rows: [{**r, "item_id": 8000} if r["user_id"] == 501 else r for r in rows],
            {"items_distinct"},
        ),
        # a rank missing, so the user has fewer than min(K, unseen) items
        (
            lambda rows: [r for r in rows if (r["user_id"], r["rank"]) != (501, 2)],
            {"ranks_complete", "expected_count"},
        ),
        # a user of the snapshot without recommendations
        (lambda rows: [r for r in rows if r["user_id"] != 77], {"scored"}),
        # scores that increase with rank
        (lambda rows: [{**r, "score": float(r["rank"])} for r in rows], {"scores_non_increasing"}),
        # another model's version
        (lambda rows: [{**r, "model_version": "other"} for r in rows], {"stamped"}),
    ],
)
def test_a_failed_gate_publishes_nothing_and_keeps_the_previous_partition(spark, tmp_path, change, failing):
    config, ctx = _night(tmp_path)
    publish_recommendations.run(spark, ctx)
    before = {name: _table(spark, config, name) for name in ("recommendations", "model_runs")}
    versions = spark.sql(f"DESCRIBE HISTORY delta.`{config.table_path('recommendations')}`").count()
    _restage(config, change)
    with pytest.raises(GateError) as failure:
        publish_recommendations.run(spark, ctx)
    named = {f.name.split("(")[-1].rstrip(")") for f in failure.value.failures}
    assert named == failing, str(failure.value)
    assert {name: _table(spark, config, name) for name in before} == before
    assert spark.sql(f"DESCRIBE HISTORY delta.`{config.table_path('recommendations')}`").count() == versions


def test_publish_without_staged_rows_says_to_run_scoring(spark, tmp_path):
    config = scoring_config(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"run model\.score first"):
        publish_recommendations.run(spark, RunContext.for_date(config, DAY))
