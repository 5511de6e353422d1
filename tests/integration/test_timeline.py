"""The nightly timeline: daily drops, incremental nights, as-of state, backfills, gates, retention.

One lake plays a week of nights over a small ratings.csv replayed as daily drops (with a late,
a future and a duplicated line planted in one drop); the tests then check it against itself
(a backfill), against a lake that loaded everything in one night, and against planted failures.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from expectations.gate import GateError
from recsys.asof import AS_OF_KEYS, BeforeHorizonError, as_of_arrow, as_of_spark
from recsys.datasets.replay import replay
from recsys.delta import partition_dates
from spark_jobs import maintenance
from spark_jobs.common import RunContext
from spark_jobs.ingest import read_ledger
from spark_jobs.pipeline import run_pipeline
from tests.conftest import config_with_lake

pytestmark = [pytest.mark.spark, pytest.mark.slow]

DAYS = [dt.date(2024, 3, 1) + dt.timedelta(days=i) for i in range(7)]  # 03-01 .. 03-07
START = dt.date(2024, 3, 3)  # 03-01 and 03-02 form the history drop, dated 03-02
NIGHTS = [dt.date(2024, 3, 3), dt.date(2024, 3, 4), dt.date(2024, 3, 5), dt.date(2024, 3, 6)]
OVERRIDES = (
    "data.dataset=synthetic",
    "pipeline.quarantine_max_ratio=0.5",
    "pipeline.volume_min_trailing_drops=2",
    "pipeline.volume_min_ratio=0.2",
    "pipeline.vacuum_retention_hours=0",
)
HEADER = "userId,movieId,rating,timestamp"


def _seconds(day: dt.date, hour: int = 0, minute: int = 0) -> int:
    return calendar.timegm(day.timetuple()) + hour * 3600 + minute * 60


def _source(path: Path) -> Path:
    """12 users, each active on some days with 3 ratings per visit; user 1 re-rates item 1 on 03-05."""
    lines = [HEADER]
    for index, day in enumerate(DAYS[:6]):
        for k in range(4):
            user = (index * 3 + k) % 12 + 1
            for j in range(3):
                item = (user + index + j) % 20 + 1
                lines.append(f"{user},{item},{(j % 5) + 1}.0,{_seconds(day, 8 + k, 10 * j)}")
    lines.append(f"1,1,1.0,{_seconds(DAYS[0], 20)}")
    lines.append(f"1,1,5.0,{_seconds(DAYS[4], 21)}")  # the re-rating: a later version of key (1, 1)
    path.write_text("\n".join(lines) + "\n")
    return path


def _append(path: Path, *lines: str) -> None:
    with path.open("a") as handle:
        handle.write("".join(f"{line}\n" for line in lines))


def _night(spark, config, day: dt.date):
    return run_pipeline(spark, RunContext.for_date(config, day, run_id=f"night-{day}"))


#: The versioned tables the ETL writes (scoring writes user_states: tests/unit/test_user_state.py).
ETL_TABLES = [table for table in AS_OF_KEYS if table != "user_states"]


def _hash_rows(frame, drop: tuple[str, ...] = ()) -> str:
    frame = frame.drop(*drop)
    rows = sorted(str(tuple(r)) for r in frame.select(*sorted(frame.columns)).collect())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _state(spark, config, day: dt.date, drop: tuple[str, ...] = ()) -> dict[str, str]:
    """Content hashes of the as-of tables on ``day`` and of the night's accounting rows."""
    hashes = {
        table: _hash_rows(as_of_spark(spark, config.table_path(table), day, AS_OF_KEYS[table]), drop)
        for table in ETL_TABLES
    }
    run_stats = spark.read.format("delta").load(config.table_path("ratings_run_stats"))
    hashes["ratings_run_stats"] = _hash_rows(run_stats.where(f"run_date = DATE'{day}'"), ("run_id",))
    drop_stats = spark.read.format("delta").load(config.table_path("ratings_drop_stats"))
    hashes["ratings_drop_stats"] = _hash_rows(
        drop_stats.where(f"drop_date <= DATE'{day}'"), ("run_id", "night")
    )
    return hashes


@pytest.fixture(scope="module")
def timeline(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("timeline")
    config = config_with_lake(root / "lake", *OVERRIDES)
    landing = root / "lake" / "landing" / "ratings"
    summary = replay(_source(root / "ratings.csv"), "ratings.csv", landing, start=START, until=DAYS[6])
    planted = landing / "2024-03-05" / "ratings.csv"
    _append(
        planted,
        f"2,19,3.0,{_seconds(DAYS[1], 9)}",  # late: dated 03-02, arrived 03-05
        f"3,18,4.0,{_seconds(DAYS[6], 10)}",  # future: dated 03-07 10:00, beyond the clock skew
        planted.read_text().splitlines()[1],  # an exact duplicate of the drop's first rating
    )
    results, states = {}, {}
    for day in NIGHTS:
        results[day] = _night(spark, config, day)
        states[day] = _state(spark, config, day)
    return config, landing, summary, results, states


def test_replay_made_one_history_drop_and_daily_drops(timeline):
    _, landing, summary, _, _ = timeline
    assert sorted(summary.drops) == [dt.date(2024, 3, d) for d in (2, 3, 4, 5, 6)]
    assert summary.drops[dt.date(2024, 3, 2)] == 2 * 12 + 1  # 03-01 and 03-02, plus user 1's first rating
    assert sorted(p.name for p in landing.iterdir()) == [f"2024-03-0{d}" for d in (2, 3, 4, 5, 6)]


def test_each_night_ingests_only_its_new_drops(spark, timeline):
    config, _, _, results, _ = timeline
    assert results[NIGHTS[0]].drops == {dt.date(2024, 3, 2): "new", dt.date(2024, 3, 3): "new"}
    for day in NIGHTS[1:]:
        assert results[day].drops == {day: "new"}
    ledger = read_ledger(RunContext.for_date(config, NIGHTS[-1]))
    assert {drop: rows[0]["night"] for drop, rows in ledger.items()} == {
        dt.date(2024, 3, 2): NIGHTS[0],
        **{day: day for day in NIGHTS},
    }
    assert all(
        row["status"] == "applied" and len(row["sha256"]) == 64 for rows in ledger.values() for row in rows
    )
    bronze = spark.read.format("delta").load(config.table_path("ratings_bronze"))
    assert sorted(r[0] for r in bronze.select("drop_date").distinct().collect()) == sorted(ledger)
    # bronze is partitioned by the drops' month: every drop of March 2024 in one partition
    assert partition_dates(config.table_path("ratings_bronze"), "drop_month") == [dt.date(2024, 3, 1)]
    # a night's silver versions are only the keys its drop touched
    silver = spark.read.format("delta").load(config.table_path("ratings_silver"))
    assert silver.where("valid_from = DATE'2024-03-04'").count() == 12


def _oracle(landing: Path, until: dt.date) -> tuple[dict[dt.date, dict], dict[tuple[int, int], float]]:
    """Per-drop accounting and the final ratings, computed in plain Python from the landed files."""
    seen: dict[tuple[int, int], tuple[int, str, int, float]] = {}
    drops = {}
    for folder in sorted(landing.iterdir()):
        drop = dt.date.fromisoformat(folder.name)
        if drop > until:
            continue
        day_start = _seconds(drop)
        rows = quarantined = late = new = 0
        users = set()
        for file in sorted(folder.iterdir()):
            for number, line in enumerate(file.read_text().splitlines()[1:], start=2):
                rows += 1
                user, item, rating, stamp = line.split(",")
                stamp = int(stamp)
                if stamp > day_start + 86399 + 300:
                    quarantined += 1
                    continue
                late += stamp < day_start
                key = (int(user), int(item))
                users.add(int(user))
                new += key not in seen
                order = (stamp, str(file), number, float(rating))
                seen[key] = max(seen.get(key, order), order)
        drops[drop] = {
            "rows_read": rows,
            "rows_quarantined": quarantined,
            "new_keys": new,
            "duplicates": rows - quarantined - new,
            "late": late,
            "users": len(users),
        }
    return drops, {key: value[3] for key, value in seen.items()}


def test_each_drop_and_night_accounts_for_every_row(spark, timeline):
    config, landing, _, results, _ = timeline
    table = spark.read.format("delta").load(config.table_path("ratings_drop_stats"))
    stats = {r["drop_date"]: r for r in table.collect()}
    expected, ratings = _oracle(landing, NIGHTS[-1])
    assert {d: {k: row[k] for k in expected[d]} for d, row in stats.items()} == expected
    for row in stats.values():
        assert row["rows_read"] == row["rows_quarantined"] + row["new_keys"] + row["duplicates"]
    planted = stats[dt.date(2024, 3, 5)]
    assert (planted["rows_read"], planted["late"], planted["quarantined_by_reason"]) == (16, 1, {"future": 1})
    night = results[dt.date(2024, 3, 5)].stats
    assert night.drops == ["2024-03-05"] and (night.rows_read, night.late, night.rows_quarantined) == (
        16,
        1,
        1,
    )
    last = results[NIGHTS[-1]].stats
    assert last.total_rows_read == sum(d["rows_read"] for d in expected.values()) == 12 * 6 + 2 + 3
    assert last.total_rows_silver == len(ratings)
    assert (
        last.total_rows_read
        == last.total_rows_silver + last.total_rows_quarantined + last.total_duplicates_removed
    )
    silver = as_of_spark(spark, config.table_path("ratings_silver"), NIGHTS[-1], AS_OF_KEYS["ratings_silver"])
    assert {(r["user_id"], r["item_id"]): r["rating"] for r in silver.collect()} == ratings
    quarantine = spark.read.format("delta").load(config.table_path("ratings_quarantine"))
    assert [(r["drop_date"], r["reason"]) for r in quarantine.collect()] == [(dt.date(2024, 3, 5), "future")]


def test_as_of_state_keeps_the_latest_version_and_the_dedup_policy(spark, timeline):
    config, _, _, _, _ = timeline
    silver = config.table_path("ratings_silver")

    def key_1_1(day):
        (row,) = (
            as_of_spark(spark, silver, day, AS_OF_KEYS["ratings_silver"])
            .where("user_id = 1 AND item_id = 1")
            .collect()
        )
        return row["rating"], row["copies"], row["valid_from"]

    assert key_1_1(dt.date(2024, 3, 4)) == (1.0, 1, dt.date(2024, 3, 2))
    assert key_1_1(dt.date(2024, 3, 5)) == (5.0, 2, dt.date(2024, 3, 5))
    arrow, _ = as_of_arrow(silver, dt.date(2024, 3, 4), AS_OF_KEYS["ratings_silver"])
    assert (
        arrow.num_rows
        == as_of_spark(spark, silver, dt.date(2024, 3, 4), AS_OF_KEYS["ratings_silver"]).count()
    )


def test_incremental_nights_equal_one_night_over_all_drops(spark, timeline, tmp_path):
    config, landing, _, _, states = timeline
    fresh = config_with_lake(tmp_path / "lake", *OVERRIDES)
    shutil.copytree(landing, tmp_path / "lake" / "landing" / "ratings")
    last = NIGHTS[-1]
    _night(spark, fresh, last)
    # Lineage (the landed file's path) and version dates differ between the lakes; content may not.
    ignored = ("source_file", "valid_from", "previous_copies")
    for table in ETL_TABLES:
        ours = as_of_spark(spark, config.table_path(table), last, AS_OF_KEYS[table])
        theirs = as_of_spark(spark, fresh.table_path(table), last, AS_OF_KEYS[table])
        assert _hash_rows(ours, ignored) == _hash_rows(theirs, ignored), table
    total = ("total_rows_read", "total_rows_silver", "total_rows_quarantined", "total_duplicates_removed")
    ours = (
        spark.read.format("delta")
        .load(config.table_path("ratings_run_stats"))
        .where(f"run_date = DATE'{last}'")
    )
    theirs = spark.read.format("delta").load(fresh.table_path("ratings_run_stats"))
    assert ours.select(*total).collect() == theirs.select(*total).collect()
    assert states[last] == _state(spark, config, last)  # the other lake did not touch this one


def test_a_backfill_of_a_middle_date_reproduces_it_exactly(spark, timeline):
    config, _, _, results, states = timeline
    middle = NIGHTS[1]
    again = _night(spark, config, middle)
    assert again.drops == {}  # everything it needs is held
    assert again.stats == results[middle].stats
    assert _state(spark, config, middle) == states[middle]
    assert _state(spark, config, NIGHTS[-1]) == states[NIGHTS[-1]]


def test_a_changed_past_drop_is_reingested_logged_and_applied(spark, timeline, caplog):
    config, landing, _, _, states = timeline
    changed = landing / "2024-03-03" / "ratings.csv"
    lines = changed.read_text().splitlines()
    user, item, rating, stamp = lines[1].split(",")
    new_rating = "5.0" if rating != "5.0" else "4.0"
    lines[1] = f"{user},{item},{new_rating},{stamp}"  # same size: only the checksum can tell
    changed.write_text("\n".join(lines) + "\n")
    later = os.stat(changed).st_mtime_ns + 5_000_000_000
    os.utime(changed, ns=(later, later))
    last = NIGHTS[-1]

    def bronze_lines() -> dict[dt.date, list[str]]:
        bronze = spark.read.format("delta").load(config.table_path("ratings_bronze"))
        by_drop: dict[dt.date, list[str]] = {}
        for r in bronze.select("drop_date", "raw").collect():
            by_drop.setdefault(r["drop_date"], []).append(r["raw"])
        return {d: sorted(texts) for d, texts in by_drop.items()}

    before = bronze_lines()
    with caplog.at_level(logging.WARNING, logger="spark_jobs"):
        result = _night(spark, config, last)
    assert result.drops == {dt.date(2024, 3, 3): "changed"}
    # the drop's rows were replaced in its month's partition; the month's other drops kept theirs
    after = bronze_lines()
    assert {d: t for d, t in after.items() if d != dt.date(2024, 3, 3)} == {
        d: t for d, t in before.items() if d != dt.date(2024, 3, 3)
    }
    assert after[dt.date(2024, 3, 3)] == sorted(lines[1:])
    assert any("2024-03-03 changed" in record.getMessage() for record in caplog.records)
    ledger = read_ledger(RunContext.for_date(config, last))
    (row,) = ledger[dt.date(2024, 3, 3)]
    assert row["changed"] and row["previous_sha256"] != row["sha256"] and row["night"] == last
    (kept,) = (
        as_of_spark(spark, config.table_path("ratings_silver"), last, AS_OF_KEYS["ratings_silver"])
        .where(f"user_id = {user} AND item_id = {item}")
        .collect()
    )
    assert kept["rating"] == float(new_rating)
    assert _state(spark, config, last)["ratings_silver"] != states[last]["ratings_silver"]
    # the user's sequence was rebuilt tonight
    sequences = as_of_spark(spark, config.table_path("sequences"), last, AS_OF_KEYS["sequences"])
    assert sequences.where(f"user_id = {user}").first()["valid_from"] == last


def _land(landing: Path, day: dt.date, text: str) -> Path:
    folder = landing / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(text)
    return folder / "ratings.csv"


def _as_of_partitions(spark, config) -> dict[str, list[dt.date]]:
    return {table: partition_dates(config.table_path(table), "valid_from") for table in ETL_TABLES}


def test_a_drifted_header_stops_the_night_before_any_state_changes_and_a_fix_passes(spark, timeline):
    config, landing, _, _, _ = timeline
    day = dt.date(2024, 3, 8)
    rows = [f"{u},{u + 3},4.0,{_seconds(day, 9, u)}" for u in range(1, 13)]
    bad = _land(landing, day, "\n".join(["userId,itemId,rating,timestamp", *rows]) + "\n")
    before = _as_of_partitions(spark, config)
    with pytest.raises(GateError, match="header") as failure:
        _night(spark, config, day)
    assert "2024-03-08" in str(failure.value) and "userId,itemId" in str(failure.value)
    assert _as_of_partitions(spark, config) == before
    assert read_ledger(RunContext.for_date(config, day))[day][0]["status"] == "ingested"
    bad.write_text("\n".join([HEADER, *rows]) + "\n")
    result = _night(spark, config, day)
    assert result.drops == {day: "retry"} and result.stats.rows_read == 12


def test_a_collapsed_drop_stops_the_night(spark, timeline):
    config, landing, _, _, _ = timeline
    day = dt.date(2024, 3, 9)
    _land(landing, day, f"{HEADER}\n5,7,3.0,{_seconds(day, 9)}\n")
    before = _as_of_partitions(spark, config)
    with pytest.raises(GateError, match="volume_ok") as failure:
        _night(spark, config, day)
    assert "drop 2024-03-09: rows 1" in str(failure.value)
    assert _as_of_partitions(spark, config) == before
    shutil.rmtree(landing / day.isoformat())


def test_retention_prunes_superseded_versions_and_keeps_later_dates_exact(spark, timeline):
    config, _, _, _, _ = timeline
    day = dt.date(2024, 3, 8)
    keep = [dt.date(2024, 3, 6), day]
    before = {d: _state(spark, config, d) for d in keep}
    bronze_rows = spark.read.format("delta").load(config.table_path("ratings_bronze")).count()
    retention = config.model_copy(
        update={"pipeline": config.pipeline.model_copy(update={"retention_days": 2})}
    )
    horizon = dt.date(2024, 3, 6)
    versions = DeltaTable(config.table_path("ratings_silver")).to_pandas(
        columns=["user_id", "item_id", "valid_from"]
    )
    versions = versions[pd.to_datetime(versions["valid_from"]).dt.date <= horizon]
    superseded = len(versions) - versions[["user_id", "item_id"]].drop_duplicates().shape[0]
    summary = maintenance.run(spark, RunContext.for_date(retention, day))
    assert summary["horizon"] == horizon.isoformat()
    assert summary["rows_deleted"]["ratings_silver"] == superseded > 0  # e.g. key (1, 1)'s 03-02 version
    assert summary["rows_deleted"]["sequences"] > 0
    assert {d: _state(spark, config, d) for d in keep} == before
    with pytest.raises(BeforeHorizonError, match="2024-03-05"):
        as_of_spark(spark, config.table_path("sequences"), dt.date(2024, 3, 5), AS_OF_KEYS["sequences"])
    with pytest.raises(BeforeHorizonError):
        as_of_arrow(config.table_path("ratings_silver"), dt.date(2024, 3, 5), AS_OF_KEYS["ratings_silver"])
    assert spark.read.format("delta").load(config.table_path("ratings_bronze")).count() == bronze_rows
    assert summary["compaction"]["ratings_bronze"]["files_removed"] >= 0
