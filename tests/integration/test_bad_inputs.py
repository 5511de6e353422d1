"""Bad input files: each stops the night with an error naming the file and what is wrong with it,
before anything downstream of the gate is written (issue: reliability)."""

from __future__ import annotations

import datetime as dt
import gzip

import pytest

from expectations.gate import GateError
from recsys.config import ConfigError
from spark_jobs import ingest
from spark_jobs.common import RunContext, table_exists
from spark_jobs.pipeline import run_pipeline
from tests.conftest import config_with_lake

pytestmark = pytest.mark.spark

DAY = dt.date(2024, 1, 1)
HEADER = "userId,movieId,rating,timestamp\n"
GOOD = "1,10,4.0,1700000000\n2,11,3.5,1700000100\n"


def _ctx(tmp_path, dataset="synthetic"):
    return RunContext.for_date(config_with_lake(tmp_path / "lake", f"data.dataset={dataset}"), DAY)


def _nothing_derived(spark, ctx):
    for table in ("ratings_silver", "sessions", "sequences", "ratings_run_stats"):
        assert not table_exists(spark, ctx.table(table)), table


@pytest.mark.parametrize(
    ("content", "what"), [("", "empty"), (HEADER, "no data lines")], ids=["empty", "header-only"]
)
def test_a_file_without_data_rows_fails_the_gate_naming_the_file(spark, tmp_path, content, what):
    path = tmp_path / "drop.csv"
    path.write_text(content)
    ctx = _ctx(tmp_path)
    with pytest.raises(GateError) as failure:
        run_pipeline(spark, ctx, [str(path)], "ratings.csv")
    message = str(failure.value)
    assert "expect_column_values_to_be_between(rows) [a drop holds at least one data line]" in message
    assert f"files without data rows: file:{tmp_path}/lake/landing/ratings/{DAY}/drop.csv ({what})" in message
    if not content:
        assert "(an empty file, expected 'userId,movieId,rating,timestamp')" in message
    _nothing_derived(spark, ctx)


def test_a_compressed_file_under_a_text_name_is_refused_before_anything_is_written(spark, tmp_path):
    path = tmp_path / "ratings.csv"
    with gzip.open(path, "wt") as handle:
        handle.write(HEADER + GOOD)
    ctx = _ctx(tmp_path)
    with pytest.raises(
        ValueError, match=r"ratings\.csv: looks gzip-compressed \(it starts with the bytes 1f 8b\)"
    ):
        run_pipeline(spark, ctx, [str(path)], "ratings.csv")
    assert not table_exists(spark, ctx.table("ratings_bronze"))
    assert not table_exists(spark, ctx.table("ingest_ledger"))


def test_a_format_of_another_rating_scale_is_refused_naming_the_file_and_the_setting(spark, tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text(HEADER + "1,10,0.5,1700000000\n")
    ctx = _ctx(tmp_path, dataset="ml-100k")
    with pytest.raises(ConfigError) as failure:
        ingest.run(spark, ctx, [str(path)], "ratings.csv")
    message = str(failure.value)
    assert "ratings.csv: a ratings.csv file, but data.dataset=ml-100k (ratings 1-5)" in message
    assert "ml-25m (ratings 0.5-5)" in message and "--set data.dataset=" in message
    assert not table_exists(spark, ctx.table("ratings_bronze"))


def test_bad_ids_are_quarantined_by_field_and_reported_once(spark, tmp_path):
    """Each bad id names its field and its kind; the gate's error lists the reasons once (not once
    more under every not-null expectation, which judge the lines that parsed)."""
    path = tmp_path / "ids.csv"
    path.write_text(
        HEADER
        + GOOD
        + ",10,4.0,1700000000\n"  # line 4
        + "99999999999999999999,10,4.0,1700000000\n"  # line 5
        + "1.5,10,4.0,1700000000\n"  # line 6
        + "1,x,4.0,1700000000\n"  # line 7
    )
    ctx = _ctx(tmp_path)
    with pytest.raises(GateError) as failure:
        run_pipeline(spark, ctx, [str(path)], "ratings.csv")
    message = str(failure.value)
    quarantine = {
        r["line_number"]: r["reason"]
        for r in spark.read.format("delta").load(ctx.table("ratings_quarantine")).collect()
    }
    assert quarantine == {
        4: "missing_user_id",
        5: "user_id_out_of_range",
        6: "non_integer_user_id",
        7: "non_integer_item_id",
    }
    assert "not_be_null" not in message
    assert "ratings gate failed" not in message  # the rows that parsed are all valid
    assert "quarantine ratio 0.6667" in message
    assert (
        "quarantined 4 (missing_user_id 1, non_integer_item_id 1, non_integer_user_id 1, "
        "user_id_out_of_range 1)"
    ) in message
    _nothing_derived(spark, ctx)
