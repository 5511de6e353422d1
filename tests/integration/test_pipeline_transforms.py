"""Silver versions (the dedup policy across drops), sessionize, k-core and sequences on tiny frames."""

from __future__ import annotations

import datetime as dt

import pytest

from spark_jobs.sequences import build_sequences, collect_sequences, kcore
from spark_jobs.sessionize import sessionize
from spark_jobs.silver import SILVER_COLUMNS, versions

pytestmark = pytest.mark.spark

RATINGS = "user_id long, item_id long, rating double, timestamp long, source_file string, line_number long"
EVENTS = "user_id long, item_id long, timestamp long, source_file string, line_number long"
SEQUENCE_EVENTS = EVENTS + ", session_id int"


def _lines(rows):
    """Give every (user, item, timestamp, ...) row a place in one file: line i + 1 of "f"."""
    return [(*row[:3], "f", i + 1, *row[3:]) for i, row in enumerate(rows)]


@pytest.mark.parametrize("single_drop", [True, False], ids=["one-drop path", "running path"])
def test_dedup_keeps_latest_rerating_then_later_line_and_one_exact_duplicate(spark, single_drop):
    rows = [
        (1, 10, 4.0, 100, "f", 2),
        (1, 10, 2.0, 500, "f", 3),  # re-rating, later timestamp: kept
        (1, 10, 5.0, 300, "f", 9),  # later line but earlier timestamp
        (3, 31, 3.0, 700, "f", 4),
        (3, 31, 4.5, 700, "f", 6),  # equal timestamp: the later line wins
        (3, 30, 4.0, 100, "f", 7),
        (3, 30, 4.0, 100, "f", 8),  # exact duplicate: one copy kept
        (2, 20, 4.0, 100, "f", 5),  # single rating
        (4, 40, 1.0, 100, "a", 9),
        (4, 40, 2.0, 100, "b", 1),  # equal timestamp in a later file
    ]
    first = _versions(spark, rows, DAY_1, single_drop=single_drop)
    assert {key: value[:4] for key, value in first.items()} == {
        (1, 10): (2.0, 500, 3, 3),
        (3, 31): (4.5, 700, 6, 2),
        (3, 30): (4.0, 100, 8, 2),
        (2, 20): (4.0, 100, 5, 1),
        (4, 40): (2.0, 100, 1, 2),
    }
    assert {value[4:] for value in first.values()} == {(0, DAY_1, False, True)}  # all new keys


DAY_1, DAY_2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)


def _versions(spark, rows, day, previous=None, single_drop=False):
    from pyspark.sql import functions as F

    clean = spark.createDataFrame(rows, RATINGS).withColumn("drop_date", F.lit(day).cast("date"))
    return _collect(versions(clean, previous, single_drop=single_drop))


def _collect(frame, key=("user_id", "item_id")):
    return {
        tuple(r[k] for k in key): (
            r["rating"],
            r["timestamp"],
            r["line_number"],
            r["copies"],
            r["previous_copies"],
            r["valid_from"],
            r["repeats_previous_key"],
            r["adds_lines"],
        )
        for r in frame.collect()
    }


def test_a_later_drop_versions_only_its_keys_against_their_previous_state(spark):
    from pyspark.sql import functions as F

    day_1 = [(1, 10, 2.0, 500, "d1", 3), (2, 20, 4.0, 100, "d1", 5), (2, 20, 4.0, 100, "d1", 6)]
    clean_1 = spark.createDataFrame(day_1, RATINGS).withColumn("drop_date", F.lit(DAY_1).cast("date"))
    previous = versions(clean_1, None).select(*SILVER_COLUMNS)
    day_2 = [
        (1, 10, 1.0, 400, "d2", 1),  # a re-rating dated before the kept one: the old rating stays
        (2, 20, 3.0, 900, "d2", 2),  # a later re-rating: it wins
        (5, 50, 4.0, 100, "d2", 3),  # a new key
    ]
    assert _versions(spark, day_2, DAY_2, previous) == {
        (1, 10): (2.0, 500, 3, 2, 1, DAY_2, False, True),
        (2, 20): (3.0, 900, 2, 3, 2, DAY_2, False, True),
        (5, 50): (4.0, 100, 3, 1, 0, DAY_2, False, True),
    }


def test_several_drops_at_once_give_one_version_per_key_and_drop_in_drop_order(spark):
    """A first night over several drops: each drop's version of a key carries the earlier drops' lines."""
    rows = [
        (1, 10, 4.0, 900, "d1", 1, DAY_1),  # the latest rating, in the earlier drop
        (1, 10, 2.0, 500, "d2", 1, DAY_2),  # a re-rating dated before it: the first stays
        (1, 10, 2.0, 500, "d2", 2, DAY_2),  # and its exact duplicate
        (2, 20, 3.0, 100, "d1", 2, DAY_1),
        (3, 30, 5.0, 100, "d2", 3, DAY_2),
    ]
    clean = spark.createDataFrame(rows, RATINGS + ", drop_date date")
    got = _collect(versions(clean, None), key=("user_id", "item_id", "valid_from"))
    assert got == {
        (1, 10, DAY_1): (4.0, 900, 1, 1, 0, DAY_1, False, True),
        (1, 10, DAY_2): (4.0, 900, 1, 3, 1, DAY_2, False, True),
        (2, 20, DAY_1): (3.0, 100, 2, 1, 0, DAY_1, False, True),
        (3, 30, DAY_2): (5.0, 100, 3, 1, 0, DAY_2, False, True),
    }


def _sessions(spark, rows, gap=1800):
    frame = sessionize(spark.createDataFrame(rows, EVENTS), gap)
    assert frame.columns[:5] == ["user_id", "item_id", "timestamp", "source_file", "line_number"]
    return {
        (r["user_id"], r["item_id"]): (
            r["session_id"],
            r["position"],
            r["session_position"],
            r["gap_seconds"],
        )
        for r in frame.collect()
    }


def test_sessionize_single_event_user(spark):
    assert _sessions(spark, _lines([(2, 20, 1000)])) == {(2, 20): (0, 0, 0, 0)}


def test_sessionize_splits_only_on_gaps_strictly_over_the_limit(spark):
    rows = _lines([(4, 40, 0), (4, 41, 1800), (4, 42, 3601), (4, 43, 3700), (4, 44, 100000)])
    assert _sessions(spark, rows) == {
        (4, 40): (0, 0, 0, 0),
        (4, 41): (0, 1, 1, 1800),  # exactly the gap: same session
        (4, 42): (1, 2, 0, 1801),
        (4, 43): (1, 3, 1, 99),
        (4, 44): (2, 4, 0, 96300),
    }


def test_sessionize_orders_equal_timestamps_by_file_order_and_keeps_users_apart(spark):
    rows = [
        (1, 12, 100, "f", 1),
        (1, 11, 100, "f", 2),  # same second, later line: after item 12 whatever the item ids
        (1, 10, 50, "f", 3),
        (1, 13, 100, "a", 9),  # same second in an earlier file ("a" < "f"): first of the three
        (9, 10, 100, "f", 4),
    ]
    assert _sessions(spark, rows) == {
        (1, 10): (0, 0, 0, 0),
        (1, 13): (0, 1, 1, 50),
        (1, 12): (0, 2, 2, 0),
        (1, 11): (0, 3, 3, 0),
        (9, 10): (0, 0, 0, 0),
    }


def _sequences(spark, rows, max_seq_len=200):
    events = spark.createDataFrame(_lines(rows), SEQUENCE_EVENTS)
    return {r["user_id"]: r.asDict() for r in build_sequences(events, max_seq_len).collect()}


def test_sequences_schema_is_the_model_contract(spark):
    events = spark.createDataFrame(_lines([(1, 10, 5, 0)]), SEQUENCE_EVENTS)
    schema = {f.name: f.dataType.simpleString() for f in build_sequences(events, 10).schema.fields}
    assert schema == {
        "user_id": "bigint",
        "item_ids": "array<bigint>",
        "timestamps": "array<bigint>",
        "time_gaps": "array<bigint>",
        "session_ids": "array<int>",
        "split": "array<tinyint>",
        "n_events": "int",
    }


def test_sequences_leave_one_out_for_one_two_and_three_events(spark):
    rows = [(1, 10, 5, 0), (2, 20, 5, 0), (2, 21, 9, 0), (3, 30, 5, 0), (3, 31, 9, 0), (3, 32, 20, 1)]
    got = _sequences(spark, rows)
    assert (got[1]["item_ids"], got[1]["split"], got[1]["time_gaps"], got[1]["n_events"]) == (
        [10],
        [0],
        [0],
        1,
    )
    assert (got[2]["item_ids"], got[2]["split"], got[2]["time_gaps"]) == ([20, 21], [0, 2], [0, 4])
    assert (got[3]["item_ids"], got[3]["split"], got[3]["session_ids"]) == (
        [30, 31, 32],
        [0, 1, 2],
        [0, 0, 1],
    )


def test_sequences_order_equal_timestamps_by_line_as_recbole_does(spark):
    # lines 1..4 of one file; the last two events share a second: the later line is the test item
    got = _sequences(spark, [(1, 12, 100, 0), (1, 10, 100, 0), (1, 11, 50, 0), (1, 9, 100, 0)])[1]
    assert got["item_ids"] == [11, 12, 10, 9]
    assert got["timestamps"] == [50, 100, 100, 100]
    assert got["time_gaps"] == [0, 50, 0, 0]
    assert got["split"] == [0, 0, 1, 2]


def test_sequences_truncation_keeps_the_most_recent_events_and_their_markers(spark):
    rows = [(1, 100 + i, 10 * i * i, i // 3) for i in range(7)]  # 7 events, gaps grow
    got = _sequences(spark, rows, max_seq_len=3)[1]
    assert got["n_events"] == 7
    assert got["item_ids"] == [104, 105, 106]
    assert got["timestamps"] == [160, 250, 360]
    assert got["time_gaps"] == [70, 90, 110]  # the first kept event measures from its real predecessor
    assert got["session_ids"] == [1, 1, 2]
    assert got["split"] == [0, 1, 2]


@pytest.mark.parametrize("max_seq_len", [2, 3, 7, 200])
def test_sequences_collected_from_sessions_equal_the_windowed_build(spark, max_seq_len):
    # The pipeline (no k-core) collects sequences from the sessions' own positions and gaps.
    import random

    rng = random.Random(max_seq_len)
    rows = [
        (user, rng.randrange(1, 60), rng.choice([0, 5, 5, 900, 4000, 10**6]) * rng.randrange(1, 4))
        for user in range(1, 41)
        for _ in range(rng.randrange(1, 12))
    ]
    sessions = sessionize(spark.createDataFrame(_lines(rows), EVENTS), 1800)
    collected = {r["user_id"]: r.asDict() for r in collect_sequences(sessions, max_seq_len).collect()}
    windowed = {r["user_id"]: r.asDict() for r in build_sequences(sessions, max_seq_len).collect()}
    assert collected == windowed
    assert len(collected) == 40
    assert {r["n_events"] for r in collected.values()} >= {1, 2}  # the short-history markers too
    assert collect_sequences(sessions, 10).schema == build_sequences(sessions, 10).schema


def test_sequences_need_room_for_the_markers(spark):
    events = spark.createDataFrame(_lines([(1, 10, 5, 0)]), SEQUENCE_EVENTS)
    with pytest.raises(ValueError, match="max_seq_len"):
        build_sequences(events, 1)


def test_kcore_is_iterative_for_users_and_items(spark):
    # 2-core: item 3 has one rating -> removed; user 2 then has one rating -> removed;
    # item 2 then has one rating (user 1) -> removed; user 1 keeps items 1 and 4 with user 3.
    rows = _lines([(1, 1, 0), (1, 2, 0), (1, 4, 0), (2, 2, 0), (2, 3, 0), (3, 1, 0), (3, 4, 0)])
    core = sorted(
        (r["user_id"], r["item_id"]) for r in kcore(spark.createDataFrame(rows, EVENTS), 2).collect()
    )
    assert core == [(1, 1), (1, 4), (3, 1), (3, 4)]


def test_kcore_zero_is_the_identity(spark):
    frame = spark.createDataFrame(_lines([(1, 1, 0)]), EVENTS)
    assert kcore(frame, 0) is frame
