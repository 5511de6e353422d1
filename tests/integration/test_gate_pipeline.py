"""The gate: predicates derived from the suites agree with GE; bad batches stop the run."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from expectations import gate
from expectations.gate import Expectation, GateError, load_suite, row_predicates, tag_rows, validate
from spark_jobs import ingest, silver
from spark_jobs.common import RunContext, table_exists
from spark_jobs.pipeline import run_pipeline
from spark_jobs.validate import (
    collected_reason_counts,
    end_of_day,
    flag_columns,
    flag_rows,
    ratings_parameters,
    reason_counts,
    require_gate_passed,
    run_ratings_gate,
    sequence_checks,
    tag_bronze,
)
from tests.conftest import config_with_lake

pytestmark = pytest.mark.spark

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pipeline"
DAY = dt.date(2024, 1, 1)
TAGGED = (
    "line_number long, user_id long, item_id long, rating double, timestamp long, "
    "drop_date date, parse_error string"
)
HEADER = "userId,movieId,rating,timestamp"


def _config(tmp_path, *overrides):
    return config_with_lake(tmp_path / "lake", "data.dataset=synthetic", *overrides)


def _bronze_like(spark):
    """Rows on, inside and outside every bound of the ratings suite, with nulls and a parse error."""
    future = end_of_day(DAY) + 300  # the end of the drop's day plus the configured clock skew
    rows = [
        (1, 1, 10, 4.0, 1_000_000_000, DAY, None),
        (2, 1, 10, 0.5, 788_918_400, DAY, None),  # both lower bounds exactly
        (3, 1, 10, 5.0, future, DAY, None),  # both upper bounds exactly
        (4, 1, 10, 5.5, 1_000_000_000, DAY, None),  # rating over the scale
        (5, 1, 10, 0.0, 1_000_000_000, DAY, None),  # rating under the scale
        (6, 1, 10, 4.0, future + 1, DAY, None),  # one second past the drop's day and the skew
        (7, 1, 10, 4.0, 788_918_399, DAY, None),  # before MovieLens
        (8, 0, 10, 4.0, 1_000_000_000, DAY, None),  # user id 0
        (9, 1, -3, 9.0, 1_000_000_000, DAY, None),  # bad item id and rating: first reason wins
        (10, None, None, None, None, DAY, "non_integer_user_id"),  # parse error: nulls
        (11, 2, None, 4.0, 1_000_000_000, DAY, None),  # null without a parse error
        (12, 3, 10, 4.0, future + 86400, DAY + dt.timedelta(days=1), None),  # a later drop's day: fine
    ]
    return spark.createDataFrame(rows, TAGGED)


@pytest.fixture(params=["spark", "pandas"])
def engine(request, monkeypatch):
    """GE's engine for every validation of the test: Spark (no frame is small enough for pandas),
    or pandas (the default for frames of at most gate.PANDAS_MAX_ROWS rows, as these are)."""
    if request.param == "spark":
        monkeypatch.setattr(gate, "PANDAS_MAX_ROWS", -1)
    return request.param


def test_gate_predicates_and_ge_flag_the_same_rows(spark, engine):
    suite = load_suite("ratings")
    parameters = ratings_parameters(_config(Path("/tmp")))
    tagged = tag_bronze(_bronze_like(spark), suite, parameters)
    result = validate(
        tagged,
        suite,
        parameters,
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["line_number"]},
    )
    by_ge = {}
    for item in result.results:
        config = item.expectation_config
        if config.meta.get("level") == "row":
            name = Expectation(config.type, config.kwargs, config.meta).name
            by_ge[name] = sorted(i["line_number"] for i in item.result["unexpected_index_list"])
    by_predicate = {
        name: sorted(r["line_number"] for r in tagged.where(predicate).select("line_number").collect())
        for name, predicate in row_predicates(suite, parameters)
    }
    assert by_ge == by_predicate
    assert by_predicate["expect_column_values_to_be_between(rating)"] == [4, 5, 9]
    assert by_predicate["expect_column_values_to_be_between(timestamp)"] == [7]
    assert by_predicate["future"] == [6]
    assert by_predicate["expect_column_values_to_not_be_null(item_id)"] == [10, 11]

    reasons = {r["line_number"]: r["reason"] for r in tagged.collect()}
    assert reasons == {
        1: None,
        2: None,
        3: None,
        4: "expect_column_values_to_be_between(rating)",
        5: "expect_column_values_to_be_between(rating)",
        6: "future",
        7: "expect_column_values_to_be_between(timestamp)",
        8: "expect_column_values_to_be_between(user_id)",
        9: "expect_column_values_to_be_between(item_id)",
        10: "non_integer_user_id",
        11: "expect_column_values_to_not_be_null(item_id)",
        12: None,
    }


def _jobs(spark, run):
    """The Spark jobs ``run()`` started (counted by job group)."""
    group = f"count-{id(run)}"
    spark.sparkContext.setJobGroup(group, "counting jobs")
    try:
        value = run()
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    return value, len(spark.sparkContext.statusTracker().getJobIdsForGroup(group))


def test_examples_of_unexpected_values_are_fetched_only_when_some_rows_are_unexpected(spark, monkeypatch):
    monkeypatch.setattr(gate, "PANDAS_MAX_ROWS", -1)  # the Spark engine's example queries
    suite = load_suite("ratings")
    parameters = ratings_parameters(_config(Path("/tmp")))
    tagged = tag_bronze(_bronze_like(spark), suite, parameters).persist()
    basic = {"result_format": "BASIC", "partial_unexpected_count": 20}  # what the default used to run
    try:
        for batch, clean in ((tagged.where("reason IS NULL"), True), (tagged, False)):
            default, default_jobs = _jobs(spark, lambda b=batch: validate(b, suite, parameters))
            explicit, explicit_jobs = _jobs(spark, lambda b=batch: validate(b, suite, parameters, basic))
            assert [(r.success, r.result) for r in default.results] == [
                (r.success, r.result) for r in explicit.results
            ]
            if clean:
                assert default.success
                assert default_jobs < explicit_jobs  # no example queries on a clean batch
            else:
                examples = {
                    r.expectation_config.kwargs.get("column"): r.result["partial_unexpected_list"]
                    for r in default.results
                    if r.result.get("unexpected_count")
                }
                assert sorted(examples["rating"]) == [0.0, 5.5, 9.0]
    finally:
        tagged.unpersist()


def test_tag_rows_without_prior_reason_uses_suite_order(spark):
    suite = load_suite("ratings")
    parameters = ratings_parameters(_config(Path("/tmp")))
    frame = spark.createDataFrame([(1, None, None, None, None, DAY, "x")], TAGGED)
    frame = frame.withColumn("seconds_after_drop_day", frame["timestamp"])
    row = tag_rows(frame, suite, parameters, "why", "q").first()
    assert (row["why"], row["q"]) == ("expect_column_values_to_not_be_null(user_id)", 1)


def test_row_level_expectations_must_have_a_predicate(tmp_path):
    (tmp_path / "odd.json").write_text(
        json.dumps(
            {
                "name": "odd",
                "expectations": [
                    {
                        "type": "expect_column_values_to_match_regex",
                        "kwargs": {"column": "x", "regex": "a"},
                        "meta": {"level": "row"},
                    }
                ],
            }
        )
    )
    with pytest.raises(ValueError, match="no row predicate for expect_column_values_to_match_regex"):
        load_suite("odd", tmp_path)


def _assert_untouched_downstream(spark, ctx):
    for table in ("ratings_silver", "sessions", "sequences", "ratings_run_stats", "ratings_drop_stats"):
        assert not table_exists(spark, ctx.table(table)), f"{table} must not be written by a failed run"


def test_planted_bad_batch_stops_the_run_before_silver(spark, tmp_path):
    ctx = RunContext.for_date(_config(tmp_path), DAY, run_id="bad-batch")
    with pytest.raises(GateError) as failure:
        run_pipeline(spark, ctx, [str(FIXTURES / "ratings_bad_batch.csv")], "ratings.csv")
    message = str(failure.value)
    assert "expect_column_values_to_be_between(quarantine_ratio)" in message
    assert "drop 2024-01-01: rows 17, quarantine ratio 0.4706" in message
    assert "quarantined 8 (wrong_field_count 8)" in message
    assert "rows read 17" in message
    assert ingest.read_ledger(ctx)[DAY][0]["status"] == "ingested"  # not gated: retried next night
    # every line is kept: the 8 malformed ones in quarantine, with the results per run
    quarantine = spark.read.format("delta").load(ctx.table("ratings_quarantine"))
    assert quarantine.count() == 8
    _assert_untouched_downstream(spark, ctx)
    base = ctx.validation_uri("ratings")
    # the rows that parsed are all valid; the drop fails on its quarantine ratio
    assert json.loads(Path(base + ".json").read_text())["success"] is True
    assert json.loads(Path(ctx.validation_uri("ratings_drops") + ".json").read_text())["success"] is False
    assert json.loads(Path(base + ".summary.json").read_text())["success"] is False
    assert Path(base + ".html").read_text().lstrip().startswith("<!DOCTYPE html>")
    with pytest.raises(GateError, match="ratings gate failed"):
        require_gate_passed(spark, ctx, "ratings")
    with pytest.raises(GateError):
        silver.run(spark, ctx)
    _assert_untouched_downstream(spark, ctx)


def test_schema_drift_in_the_header_stops_the_run(spark, tmp_path):
    ctx = RunContext.for_date(_config(tmp_path), DAY)
    ingest.run(spark, ctx, [str(FIXTURES / "ratings_drifted.csv")], "ratings.csv")
    with pytest.raises(GateError) as failure:
        run_ratings_gate(spark, ctx)
    assert [f.name for f in failure.value.failures] == [
        "expect_column_values_to_be_between(bad_header_files)"
    ]
    assert "header 'movieId,userId,rating,timestamp', expected 'userId,movieId,rating,timestamp'" in str(
        failure.value
    )
    assert "ratings_drifted.csv" in str(failure.value)


def test_bronze_rows_that_differ_from_the_ledger_stop_the_gate(spark, tmp_path):
    """A drop whose bronze rows are not the rows ingest counted on its files fails the gate, named."""
    ctx = RunContext.for_date(_config(tmp_path), DAY)
    ingest.run(spark, ctx, [str(FIXTURES / "ratings_small.csv")], "ratings.csv")
    (row,) = ingest.read_ledger(ctx)[DAY]
    bronze_rows = int(row["rows"])
    ingest.write_ledger(ctx, [{**row, "rows": bronze_rows + 1}])  # one line the lake does not hold
    with pytest.raises(GateError, match="bronze and the ingest ledger disagree") as failure:
        run_ratings_gate(spark, ctx)
    assert f"{DAY!r}: ({bronze_rows}, {bronze_rows + 1})" in str(failure.value)
    assert ingest.read_ledger(ctx)[DAY][0]["status"] == "ingested"  # not gated


def test_a_drop_collapsing_against_the_trailing_drops_stops_the_run(spark, tmp_path):
    from spark_jobs.common import publish_slice

    config = _config(tmp_path, "pipeline.quarantine_max_ratio=0.5", "pipeline.volume_min_ratio=0.2")
    ctx = RunContext.for_date(config, DAY)
    # The accounting rows of four earlier accepted drops; the oldest is the lake's first (the
    # history load) and no reference, the three after it have a median of 26.
    earlier = {DAY - dt.timedelta(days=n): rows for n, rows in ((4, 10_000), (3, 20), (2, 26), (1, 30))}
    stats = spark.createDataFrame(list(earlier.items()), "drop_date date, rows_read long")
    publish_slice(stats, ctx.table("ratings_drop_stats"), {"drop_date": list(earlier)}, "seed")
    ledger = [
        {c.split()[0]: None for c in ingest.LEDGER_SCHEMA.split(", ")} | {"drop_date": d, "status": "applied"}
        for d in earlier
    ]
    ingest.write_ledger(ctx, ledger)
    ingest.run(spark, ctx, [str(FIXTURES / "ratings.inter")], "recbole-inter")
    with pytest.raises(GateError) as failure:
        run_ratings_gate(spark, ctx)
    assert [f.name for f in failure.value.failures] == ["expect_column_values_to_be_in_set(volume_ok)"]
    # (the fixture's third line has an unparseable timestamp: a third of the drop, allowed here)
    assert "drop 2024-01-01: rows 3, quarantine ratio 0.3333, volume 0.115 x the median 26 of 3 drops" in str(
        failure.value
    )


SEQUENCE_ROW = (
    "user_id long, item_ids array<long>, timestamps array<long>, time_gaps array<long>, "
    "session_ids array<int>, split array<tinyint>, n_events int"
)
GOOD_SEQUENCES = [
    (1, [10], [5], [0], [0], [0], 1),
    (2, [10, 11], [5, 9], [0, 4], [0, 0], [0, 2], 2),
    (3, [10, 11, 12], [1, 2, 3], [0, 1, 1], [0, 0, 0], [0, 1, 2], 3),
    (4, [11, 12, 13], [2, 3, 4], [1, 1, 1], [0, 0, 0], [0, 1, 2], 5),  # the last 3 of 5 events
]


def _sequences_failures(spark, rows, max_seq_len=200):
    checks = sequence_checks(spark.createDataFrame(rows, SEQUENCE_ROW), max_seq_len)
    result = validate(checks, load_suite("sequences"), {"max_seq_len": max_seq_len})
    return sorted(r.expectation_config.kwargs.get("column") for r in result.results if not r.success)


def test_both_engines_judge_a_batch_alike(spark):
    """The same batch on GE's Spark and pandas engines: the same verdict and counts per expectation."""
    suite = load_suite("ratings")
    parameters = ratings_parameters(_config(Path("/tmp")))
    tagged = tag_bronze(_bronze_like(spark), suite, parameters).persist()
    try:

        def verdicts(result):
            counts = ("element_count", "unexpected_count", "missing_count")
            rows = []
            for r in result.results:
                config = r.expectation_config
                rows.append((config.type, config.kwargs.get("column"), r.success, *map(r.result.get, counts)))
            return rows

        on_spark = gate.validate(tagged, suite, parameters, rows=gate.PANDAS_MAX_ROWS + 1)
        on_pandas = gate.validate(tagged, suite, parameters, rows=tagged.count())
        assert verdicts(on_spark) == verdicts(on_pandas)
        assert on_spark.success == on_pandas.success
        assert gate.unexpected_counts(on_spark) == gate.unexpected_counts(on_pandas)
        assert any(n for n in gate.unexpected_counts(on_pandas).values())
        # a drifted type fails the schema expectation on both engines
        drifted = tagged.withColumn("user_id", tagged["user_id"].cast("int"))
        for rows in (gate.PANDAS_MAX_ROWS + 1, 12):
            failed = [
                r.expectation_config.kwargs["column"]
                for r in gate.validate(drifted, suite, parameters, rows=rows).results
                if r.expectation_config.type == "expect_column_values_to_be_of_type" and not r.success
            ]
            assert failed == ["user_id"], rows
    finally:
        tagged.unpersist()


def test_counts_of_a_collected_batch_equal_the_spark_counts(spark):
    """The night's gate counts reasons on the frame it collected for GE's pandas engine: the same
    rows per (drop, reason) and per expectation as the Spark aggregate."""
    suite = load_suite("ratings")
    parameters = ratings_parameters(_config(Path("/tmp")))
    tagged = tag_bronze(_bronze_like(spark), suite, parameters)
    on_spark = reason_counts(tagged, suite, parameters)
    small = gate.collect_small(
        flag_rows(tagged, suite, parameters), suite, ["drop_date", "reason", *flag_columns(suite)], rows=12
    )
    collected = collected_reason_counts(small, suite)
    assert collected == on_spark
    assert collected.by_drop_reason[(DAY, None)] == 3
    assert collected.by_drop_reason[(DAY, "expect_column_values_to_be_between(rating)")] == 2
    # GE judges the rows that parsed: line 11 (a null without a parse error), not line 10
    assert collected.by_expectation["expect_column_values_to_not_be_null(item_id)"] == 1
    # GE judges the collected frame as it judges the Spark one
    assert gate.unexpected_counts(
        validate(small, suite, parameters, collected=True)
    ) == gate.unexpected_counts(validate(tagged, suite, parameters, rows=gate.PANDAS_MAX_ROWS + 1))
    # too many rows: nothing is collected
    assert gate.collect_small(tagged, suite, rows=gate.PANDAS_MAX_ROWS + 1) is None
    with pytest.raises(TypeError, match="collect_small"):
        validate(tagged, suite, parameters, collected=True)


def test_version_counts_of_a_collected_frame_equal_the_spark_counts(spark):
    d1, d2 = DAY, DAY + dt.timedelta(days=1)
    rows = [
        # user, item, copies, previous copies, valid_from, late lines
        (1, 10, 1, 0, d1, 0),
        (1, 11, 3, 1, d1, 1),
        (2, 10, 2, 0, d1, 0),
        (1, 10, 2, 1, d2, 1),
        (3, 12, 1, 0, d2, 0),
    ]
    frame = spark.createDataFrame(
        rows, "user_id long, item_id long, copies int, previous_copies int, valid_from date, _late_lines long"
    )
    on_spark = silver.version_counts(frame)
    # collected as the gate collects (nullable integer columns)
    collected = silver.collected_version_counts(gate.to_pandas(frame, frame.columns))
    assert collected == on_spark
    assert collected == {
        d1: {"new_keys": 2, "clean": 5, "users": 2, "late": 1},
        d2: {"new_keys": 1, "clean": 2, "users": 2, "late": 1},
    }


def test_pandas_engine_keeps_what_it_cannot_judge_alike_on_spark(spark, engine):
    suite = load_suite("ratings")
    parameters = ratings_parameters(_config(Path("/tmp")))
    tagged = tag_bronze(_bronze_like(spark), suite, parameters)
    # a column the frame lacks fails its expectations (results kept), on either engine
    result = validate(tagged.drop("rating"), suite, parameters)
    assert not result.success
    assert all(
        r.success is False for r in result.results if r.expectation_config.kwargs.get("column") == "rating"
    )
    assert gate.pandas_can_judge(suite)
    for extra in (
        {
            "type": "expect_column_values_to_be_of_type",
            "kwargs": {"column": "drop_date", "type_": "DateType"},
        },
        {"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": ["user_id"]}},
    ):
        other = gate.Suite("x", {**suite.config, "expectations": [*suite.config["expectations"], extra]})
        assert not gate.pandas_can_judge(other)
    assert gate.suite_columns(
        gate.Suite("y", {"expectations": [{"type": "t", "kwargs": {"column_A": "a", "column_B": "b"}}]})
    ) == ["a", "b"]


def test_sequences_gate_accepts_the_contract(spark, engine):
    assert _sequences_failures(spark, GOOD_SEQUENCES, max_seq_len=3) == []


@pytest.mark.parametrize(
    ("row", "failing"),
    [
        ((9, [10, 11, 12], [1, 2, 3], [0, 1, 1], [0, 0, 0], [0, 2, 1], 3), ["split_markers_ok"]),
        ((9, [10, 11], [1, 2], [0, 1], [0, 0], [0, 0], 2), ["split_markers_ok"]),
        ((9, [10, 11], [1, 2], [0, 1], [0, 0], [1, 2], 2), ["split_markers_ok"]),
        ((9, [10, 11], [2, 1], [0, -1], [0, 0], [0, 2], 2), ["chronological"]),
        ((9, [10, 11], [1, 2], [0, 1], [0], [0, 2], 2), ["arrays_aligned"]),
        ((9, [10, 11], [1, 2], [0, 1], [0, 0], [0, 2], 5), ["keeps_most_recent", "split_markers_ok"]),
        ((1, [10, 11], [1, 2], [0, 1], [0, 0], [0, 2], 2), ["user_id"]),  # user 1 twice
    ],
)
def test_sequences_gate_rejects_broken_sequences(spark, engine, row, failing):
    assert _sequences_failures(spark, [*GOOD_SEQUENCES[:1], row], max_seq_len=3) == failing


def test_silver_builds_on_the_bronze_version_the_gate_validated(spark, tmp_path):
    """A rewrite of a gated drop's bronze rows that the gate never saw (a re-ingest that stopped
    before its ledger row, a hand edit) does not reach silver: silver reads the drop as of the
    version the gate recorded, and refuses a gated drop without one."""
    from pyspark.sql import functions as F

    from spark_jobs.common import publish
    from spark_jobs.validate import bronze_version, read_gated

    ctx = RunContext.for_date(_config(tmp_path, "pipeline.quarantine_max_ratio=0.5"), DAY)
    ingest.run(spark, ctx, [str(FIXTURES / "ratings_small.csv")], "ratings.csv")
    run_ratings_gate(spark, ctx)
    (row,) = ingest.read_ledger(ctx)[DAY]
    gated = bronze_version(ctx)
    assert (row["status"], row["gated_version"]) == ("gated", gated)
    bronze = ingest.read_bronze(spark, ctx, [DAY])
    rewritten = bronze.withColumn("rating", F.when(F.col("line_number") == 6, 0.5).otherwise(F.col("rating")))
    publish(rewritten.localCheckpoint(), ctx, "ratings_bronze", ingest.drop_slice([DAY]))
    assert bronze_version(ctx) > gated
    silver.run(spark, ctx)
    ratings = {
        r["line_number"]: r["rating"]
        for r in spark.read.format("delta").load(ctx.table("ratings_silver")).collect()
    }
    assert ratings[6] == 4.0  # as gated, not the 0.5 written after the gate

    # a gated drop whose ledger row lost its version is refused, with what to rerun
    (row,) = ingest.read_ledger(ctx)[DAY]
    ingest.write_ledger(ctx, [{**row, "status": "gated", "gated_version": None}])
    with pytest.raises(
        GateError, match=r"no gated bronze version in the ingest ledger for drop\(s\) \['2024-01-01'\]"
    ):
        read_gated(spark, ctx, [DAY])


def test_sequences_are_gated_before_they_are_published_and_the_model_reads_the_gated_version(
    spark, tmp_path, monkeypatch
):
    """Broken sequences fail their gate and are never published (the model steps refuse the night);
    good ones are published and their table version recorded for the model steps."""
    from pyspark.sql import functions as F

    from recsys.delta import open_delta
    from recsys.gates import GateNotPassedError, gated_version
    from spark_jobs import sequences
    from spark_jobs.validate import run_sequences_gate

    config = _config(tmp_path, "pipeline.quarantine_max_ratio=0.5")
    ctx = RunContext.for_date(config, DAY)
    real = sequences.collect_sequences

    def broken(events, max_seq_len):  # every event marked train: no valid/test markers
        built = real(events, max_seq_len)
        return built.withColumn("split", F.array_repeat(F.lit(0).cast("tinyint"), F.size("item_ids")))

    monkeypatch.setattr(sequences, "collect_sequences", broken)
    with pytest.raises(GateError, match=r"expect_column_values_to_be_in_set\(split_markers_ok\)"):
        run_pipeline(spark, ctx, [str(FIXTURES / "ratings_small.csv")], "ratings.csv")
    assert table_exists(spark, ctx.table("sessions"))
    assert not table_exists(spark, ctx.table("sequences"))  # nothing the gate rejected is visible
    with pytest.raises(GateNotPassedError, match="the sequences gate failed for 2024-01-01"):
        gated_version(config, DAY, "sequences")

    monkeypatch.setattr(sequences, "collect_sequences", real)
    output = sequences.run(spark, ctx)  # the rerun of the stage, from the sessions table
    assert output.gate["users"] == 5
    assert output.version == open_delta(ctx.table("sequences")).version()
    assert gated_version(config, DAY, "sequences") == output.version
    # a manual re-check of the published sequences judges and records the same version
    run_sequences_gate(spark, ctx)
    assert gated_version(config, DAY, "sequences") == output.version
