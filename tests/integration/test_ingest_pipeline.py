"""Ingest: exact line numbers in the JVM, parsing of every format, every parse-error kind kept."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from recsys.datasets.formats import FORMATS
from spark_jobs import ingest
from spark_jobs.common import RunContext
from tests.conftest import config_with_lake, spark_submit

pytestmark = pytest.mark.spark

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pipeline"
DAY = dt.date(2024, 1, 1)


def _lines_frame(spark, rows: list[tuple[int, str]], source: str = "file:/x.csv"):
    return spark.createDataFrame(
        [(source, n, text) for n, text in rows], "source_file string, line_number long, value string"
    )


def _parsed(spark, rows, fmt="ratings.csv", headers=None):
    frame = ingest.parse_lines(_lines_frame(spark, rows), FORMATS[fmt], headers)
    return {r["line_number"]: r.asDict() for r in frame.collect()}


@pytest.fixture()
def split_small_files(spark):
    """Tiny file splits, so that even a small file is read as many splits in several partitions."""
    keys = ("spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes")
    before = {k: spark.conf.get(k) for k in keys}
    spark.conf.set("spark.sql.files.maxPartitionBytes", "64")
    spark.conf.set("spark.sql.files.openCostInBytes", "0")
    yield
    for key, value in before.items():
        spark.conf.set(key, value)


def test_line_numbers_are_exact_across_splits_and_files(spark, tmp_path, split_small_files):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("".join(f"a{i:04d},x,y,z\n" for i in range(1, 301)))
    second.write_text("".join(f"b{i:04d}\n" for i in range(1, 151)))
    assert spark.read.text(str(first)).rdd.getNumPartitions() > 10
    counts: dict[str, int] = {}
    first_lines: dict[str, str] = {}
    rows = ingest.read_lines(spark, [str(first), str(second)], counts, first_lines).collect()
    assert len(rows) == 450
    # each file's first line from its first split, not from a later one
    assert sorted(first_lines.values()) == ["a0001,x,y,z", "b0001"]
    assert sorted(counts.values()) == [150, 300]
    for row in rows:
        prefix = "a" if row["source_file"].endswith("a.txt") else "b"
        assert row["value"].startswith(f"{prefix}{row['line_number']:04d}"), row


def test_valid_lines_parse_to_typed_columns(spark):
    parsed = _parsed(spark, [(2, "1,10,4.5,1000000000"), (3, " 7 , 8 ,4, 9"), (4, "1,2,3,881250949.0")])
    assert {k: (v["user_id"], v["item_id"], v["rating"], v["timestamp"]) for k, v in parsed.items()} == {
        2: (1, 10, 4.5, 1000000000),
        3: (7, 8, 4.0, 9),
        4: (1, 2, 3.0, 881250949),
    }
    assert all(v["parse_error"] is None for v in parsed.values())


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1,2,3", "wrong_field_count"),
        ("1,2,3,4,5", "wrong_field_count"),
        ("a,10,4.0,1000000000", "non_integer_user_id"),
        ("1,1.5,4.0,1000000000", "non_integer_item_id"),
        ("1,1e3,4.0,1000000000", "non_integer_item_id"),
        ("99999999999999999999,1,4.0,1000000000", "user_id_out_of_range"),
        ("1,-99999999999999999999,4.0,1000000000", "item_id_out_of_range"),
        (",10,4.0,1000000000", "missing_user_id"),
        ("1, ,4.0,1000000000", "missing_item_id"),
        ("1,10,\t,1000000000", "missing_rating"),
        ("1,10,4.0,", "missing_timestamp"),
        (",,,", "missing_user_id"),  # the first empty field
        ("x,,4.0,1000000000", "missing_item_id"),  # an empty field before a malformed one
        ("1,10,great,1000000000", "unparseable_rating"),
        ("1,10,NaN,1000000000", "unparseable_rating"),
        ("1,10,4.0,yesterday", "unparseable_timestamp"),
        ("1,10,4.0,1000000000.5", "unparseable_timestamp"),
        ("", "empty_line"),
        ("   ", "empty_line"),
        ("1,10,4.0,10\ufffd", "bad_encoding"),
    ],
)
def test_every_parse_error_kind_is_named_and_nulls_the_fields(spark, text, reason):
    row = _parsed(spark, [(5, text)])[5]
    assert row["parse_error"] == reason
    assert (row["user_id"], row["item_id"], row["rating"], row["timestamp"]) == (None, None, None, None)
    assert row["raw"] == text


def test_invalid_utf8_bytes_are_bad_encoding_and_raw_keeps_a_readable_copy(spark, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"userId,movieId,rating,timestamp\n5,\xe9t\xe9,4.0,1000000000\n1,10,4.0,1000000000\n")
    headers: dict[str, str] = {}
    bronze = ingest.parse_lines(
        ingest.read_lines(spark, [str(path)], first_lines=headers), FORMATS["ratings.csv"], headers
    )
    rows = {r["line_number"]: r for r in bronze.collect()}
    assert sorted(rows) == [2, 3]
    assert rows[2]["parse_error"] == "bad_encoding"
    assert rows[2]["raw"] == "5,\ufffdt\ufffd,4.0,1000000000"
    assert rows[3]["parse_error"] is None
    assert rows[3]["source_header"] == "userId,movieId,rating,timestamp"


@pytest.mark.parametrize(
    ("name", "fmt", "good", "bad"),
    [
        (
            "tiny_ratings_dat.txt",
            "ratings.dat",
            {1: (1, 10, 5.0, 978300760), 3: (2, 10, 4.0, 978300000)},
            {4},
        ),
        ("tiny_u_data.tsv", "u.data", {1: (1, 10, 5.0, 881250949), 2: (1, 11, 3.0, 881250950)}, {4}),
        ("ratings.inter", "recbole-inter", {2: (1, 10, 5.0, 881250949), 3: (1, 11, 3.0, 881250950)}, {4}),
    ],
)
def test_every_format_parses_with_its_separator_and_header(spark, name, fmt, good, bad):
    path = str(FIXTURES / name)
    headers: dict[str, str] = {}
    lines = ingest.read_lines(spark, [path], first_lines=headers if FORMATS[fmt].header else None)
    rows = {r["line_number"]: r for r in ingest.parse_lines(lines, FORMATS[fmt], headers).collect()}
    for line, values in good.items():
        assert (
            rows[line]["user_id"],
            rows[line]["item_id"],
            rows[line]["rating"],
            rows[line]["timestamp"],
        ) == values
    assert {n for n, r in rows.items() if r["parse_error"]} == bad
    if FORMATS[fmt].header:
        assert 1 not in rows, "the header line is not data"
        assert {r["source_header"] for r in rows.values()} == {ingest.expected_header(FORMATS[fmt])}
    else:
        assert {r["source_header"] for r in rows.values()} == {None}


def test_ingest_publishes_every_line_and_quarantines_parse_errors(spark, tmp_path):
    config = config_with_lake(tmp_path / "lake", "data.dataset=synthetic")
    ctx = RunContext.for_date(config, DAY, run_id="test-ingest")
    path = str(FIXTURES / "ratings_small.csv")
    ingest.run(spark, ctx, [path], "ratings.csv")

    bronze = spark.read.format("delta").load(ctx.table("ratings_bronze"))
    assert sorted(r["line_number"] for r in bronze.collect()) == list(range(2, 28))
    quarantine = {
        r["line_number"]: (r["reason"], r["stage"], r["raw"])
        for r in spark.read.format("delta").load(ctx.table("ratings_quarantine")).collect()
    }
    assert quarantine == {
        18: ("wrong_field_count", "ingest", "1,2,3"),
        19: ("non_integer_user_id", "ingest", "a,10,4.0,1000000000"),
        20: ("unparseable_rating", "ingest", "5,10,great,1000000000"),
        21: ("unparseable_timestamp", "ingest", "5,11,4.0,yesterday"),
        22: ("bad_encoding", "ingest", "5,\ufffdt\ufffd,4.0,1000000000"),
        23: ("empty_line", "ingest", ""),
    }
    # the file was landed as the run date's drop, and the ledger records it
    (row,) = ingest.read_ledger(ctx)[DAY]
    assert row["file"].endswith(f"/landing/ratings/{DAY.isoformat()}/ratings_small.csv")
    assert (row["format"], row["header"], row["rows"], row["status"]) == (
        "ratings.csv",
        "userId,movieId,rating,timestamp",
        26,
        "ingested",
    )
    assert row["size"] == (FIXTURES / "ratings_small.csv").stat().st_size and len(row["sha256"]) == 64
    assert {r["drop_date"] for r in bronze.collect()} == {DAY}
    assert row["rows"] == bronze.count()  # from the line-numbering scan, equal to the published rows


def test_ingest_main_runs_under_spark_submit(tmp_path):
    """A job's thin main: spark-submit decides the master; --run-date and --config select the run."""
    from recsys.config import PROJECT_ROOT

    lake = tmp_path / "lake"
    done = spark_submit(
        lake,
        "local[2]",
        PROJECT_ROOT / "spark_jobs" / "ingest.py",
        "--run-date",
        DAY.isoformat(),
        "--config",
        "local",
        "--set",
        f"lake.root={lake}",
        "--input",
        str(FIXTURES / "tiny_u_data.tsv"),
        "--format",
        "u.data",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    from deltalake import DeltaTable

    from recsys.delta import read_arrow

    bronze = read_arrow(DeltaTable(str(lake / "ratings_bronze")))
    assert sorted(bronze.column("line_number").to_pylist()) == [1, 2, 3, 4]
    assert [str(d) for d in set(bronze.column("drop_date").to_pylist())] == [DAY.isoformat()]
    # a u.data file keeps no name that tells its format: it is landed under the format's name
    assert (lake / "landing" / "ratings" / DAY.isoformat() / "u.data").exists()
