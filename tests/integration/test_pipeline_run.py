"""The whole pipeline on a small hand-made file: accounting, contents, readers, idempotency, export.

One run per module (a Delta-backed run costs tens of seconds on two cores); the idempotency test
runs it a second time and compares every table.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from spark_jobs.common import RunContext
from spark_jobs.pipeline import OUTPUT_TABLES, run_pipeline
from tests.conftest import config_with_lake

pytestmark = pytest.mark.spark

FIXTURE = str(Path(__file__).resolve().parents[1] / "fixtures" / "pipeline" / "ratings_small.csv")
DAY = dt.date(2024, 1, 1)
OVERRIDES = ("data.dataset=synthetic", "pipeline.quarantine_max_ratio=0.5")


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pipeline") / "lake"


@pytest.fixture(scope="module")
def first_run(spark, lake):
    ctx = RunContext.for_date(config_with_lake(lake, *OVERRIDES), DAY, run_id="run-1")
    return ctx, run_pipeline(spark, ctx, [FIXTURE], "ratings.csv")


def _rows(spark, ctx, table):
    frame = spark.read.format("delta").load(ctx.table(table))
    return sorted(json.dumps(r.asDict(recursive=True), sort_keys=True, default=str) for r in frame.collect())


def _where(spark, ctx, table, *columns):
    frame = spark.read.format("delta").load(ctx.table(table))
    return sorted(tuple(r) for r in frame.select(*columns).collect())


def test_row_accounting_is_exact_and_recorded(spark, first_run):
    ctx, result = first_run
    stats = result.stats
    assert (stats.rows_read, stats.rows_silver, stats.rows_quarantined, stats.duplicates_removed) == (
        26,
        13,
        10,
        3,
    )
    assert (stats.rows_quarantined_ingest, stats.rows_quarantined_gate) == (6, 4)
    assert stats.rows_read == stats.rows_silver + stats.rows_quarantined + stats.duplicates_removed
    recorded = spark.read.format("delta").load(ctx.table("ratings_run_stats")).first()
    assert (recorded["rows_read"], recorded["rows_silver"], recorded["rows_quarantined"]) == (26, 13, 10)
    assert (recorded["duplicates_removed"], recorded["run_id"]) == (3, "run-1")


def test_silver_applies_the_dedup_policy(spark, first_run):
    ctx, _ = first_run
    assert _where(
        spark, ctx, "ratings_silver", "user_id", "item_id", "rating", "timestamp", "line_number"
    ) == [
        (1, 10, 2.0, 1000005000, 5),  # re-rated later
        (1, 11, 3.5, 1000000100, 4),
        (1, 12, 5.0, 1000000100, 3),
        (2, 20, 4.0, 1000000000, 6),
        (3, 30, 4.0, 1000000000, 8),  # exact duplicate: one kept
        (3, 31, 4.5, 1000003000, 11),  # re-rated at the same second: the later line
        (3, 32, 1.0, 1000003000, 10),
        (4, 40, 4.0, 1000000000, 12),
        (4, 41, 5.0, 1000001800, 13),
        (4, 42, 2.5, 1000003601, 14),
        (4, 43, 0.5, 1000003700, 15),
        (6, 10, 3.0, 1000000000, 16),
        (6, 11, 3.0, 1000000060, 17),
    ]


def test_gate_quarantines_rows_with_the_expectation_name(spark, first_run):
    ctx, _ = first_run
    assert _where(spark, ctx, "ratings_quarantine", "line_number", "stage", "reason")[6:] == [
        (24, "gate", "expect_column_values_to_be_between(rating)"),
        (25, "gate", "future"),
        (26, "gate", "expect_column_values_to_be_between(timestamp)"),
        (27, "gate", "expect_column_values_to_be_between(user_id)"),
    ]


def test_sessions_and_sequences(spark, first_run):
    ctx, _ = first_run
    sessions = _where(spark, ctx, "sessions", "user_id", "item_id", "session_id", "position", "gap_seconds")
    assert [s for s in sessions if s[0] == 4] == [
        (4, 40, 0, 0, 0),
        (4, 41, 0, 1, 1800),
        (4, 42, 1, 2, 1801),
        (4, 43, 1, 3, 99),
    ]
    sequences = {
        r["user_id"]: r.asDict() for r in spark.read.format("delta").load(ctx.table("sequences")).collect()
    }
    assert sorted(sequences) == [1, 2, 3, 4, 6]
    one = sequences[1]
    assert one["item_ids"] == [12, 11, 10]  # same second: file order (line 3, then line 4)
    assert one["timestamps"] == [1000000100, 1000000100, 1000005000]
    assert (one["time_gaps"], one["session_ids"], one["split"], one["n_events"]) == (
        [0, 0, 4900],
        [0, 0, 1],
        [0, 1, 2],
        3,
    )
    assert (sequences[2]["item_ids"], sequences[2]["split"]) == ([20], [0])
    assert (sequences[6]["item_ids"], sequences[6]["split"]) == ([10, 11], [0, 2])


def test_validation_results_are_kept_per_run(first_run):
    ctx, result = first_run
    for suite in ("ratings", "ratings_silver", "sequences"):
        base = Path(ctx.validation_uri(suite))
        assert json.loads(base.with_suffix(".json").read_text())["success"] is True
        assert "<html" in base.with_suffix(".html").read_text()
        assert json.loads(Path(f"{base}.summary.json").read_text())["run_id"] == "run-1"
    assert result.ratings_gate["quarantined_by_reason"]["wrong_field_count"] == 1


def test_tables_are_readable_without_a_jvm(first_run):
    import duckdb
    from deltalake import DeltaTable

    from recsys.delta import read_arrow

    ctx, _ = first_run
    for table in OUTPUT_TABLES:
        assert read_arrow(DeltaTable(ctx.table(table))).num_rows > 0, table
    sequences = read_arrow(DeltaTable(ctx.table("sequences")))
    assert {f.name: str(f.type) for f in sequences.schema} == {
        "valid_from": "date32[day]",
        "user_id": "int64",
        "item_ids": "list<element: int64>",
        "timestamps": "list<element: int64>",
        "time_gaps": "list<element: int64>",
        "session_ids": "list<element: int32>",
        "split": "list<element: int8>",
        "n_events": "int32",
    }
    connection = duckdb.connect()
    connection.register("sessions", read_arrow(DeltaTable(ctx.table("sessions"))))
    assert connection.execute("SELECT count(*), count(DISTINCT user_id) FROM sessions").fetchall() == [
        (13, 5)
    ]


def test_commits_carry_the_run_id(spark, first_run):
    ctx, _ = first_run
    for table in OUTPUT_TABLES:
        history = spark.sql(f"DESCRIBE HISTORY delta.`{ctx.table(table)}`").orderBy("version").collect()
        assert {h["userMetadata"] for h in history} == {"run-1"}, table


def test_recbole_export_after_kcore(spark, first_run, lake, tmp_path):
    from spark_jobs.export_recbole import RECBOLE_HEADER, export

    ctx, _ = first_run
    lines = Path(export(spark, ctx, "small", str(tmp_path))).read_text().splitlines()
    assert lines[0].split("\t") == list(RECBOLE_HEADER)
    assert lines[1:4] == ["1\t12\t5.0\t1000000100", "1\t11\t3.5\t1000000100", "1\t10\t2.0\t1000005000"]
    assert len(lines) == 1 + 13
    core = RunContext.for_date(config_with_lake(lake, *OVERRIDES, "pipeline.kcore=2"), DAY)
    lines = Path(export(spark, core, "core", str(tmp_path))).read_text().splitlines()[1:]
    # 2-core: items 10 and 11 (users 1 and 6) survive; user 1 then keeps both, user 6 both.
    assert sorted(tuple(line.split("\t")[:2]) for line in lines) == [
        ("1", "10"),
        ("1", "11"),
        ("6", "10"),
        ("6", "11"),
    ]


def test_a_second_run_of_the_same_date_leaves_every_table_identical(spark, first_run):
    ctx, _ = first_run
    before = {table: _rows(spark, ctx, table) for table in OUTPUT_TABLES}
    again = RunContext.for_date(ctx.config, DAY, run_id="run-2")
    run_pipeline(spark, again, [FIXTURE], "ratings.csv")
    after = {table: _rows(spark, ctx, table) for table in OUTPUT_TABLES}
    for table in OUTPUT_TABLES:
        if table == "ratings_run_stats":  # records which run wrote it, and nothing else differs
            before[table] = [row.replace('"run-1"', '"run-2"') for row in before[table]]
        assert after[table] == before[table], table
    history = spark.sql(f"DESCRIBE HISTORY delta.`{ctx.table('sequences')}`").orderBy("version").collect()
    assert [h["userMetadata"] for h in history][-2:] == ["run-1", "run-2"]  # (after the CREATE TABLE)
