"""The items job on the embedded ML-100K: 1,682 items per run date, idempotent reruns, the CLI."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from spark_jobs import items
from spark_jobs.common import RunContext
from tests.conftest import config_with_lake

pytestmark = pytest.mark.spark

DAY = dt.date(2024, 3, 1)


def _partition(spark, ctx, run_date=DAY):
    from pyspark.sql import functions as F

    frame = spark.read.format("delta").load(ctx.table("items")).where(F.col("run_date") == F.lit(run_date))
    return sorted(json.dumps(r.asDict(recursive=True), sort_keys=True, default=str) for r in frame.collect())


def test_items_job_publishes_ml100k_items_idempotently(spark, tmp_path):
    config = config_with_lake(tmp_path / "lake")
    first = RunContext.for_date(config, DAY, run_id="run-1")
    path = items.run(first)
    assert path == first.table("items")
    table = spark.read.format("delta").load(path)
    assert dict(table.dtypes) == {
        "item_id": "bigint",
        "title": "string",
        "year": "int",
        "genres": "array<string>",
        "run_date": "date",
    }
    before = _partition(spark, first)
    assert len(before) == 1682
    toy_story = table.where("item_id = 1").collect()
    assert [(r["title"], r["year"], r["genres"], r["run_date"]) for r in toy_story] == [
        ("Toy Story", 1995, ["Animation", "Children's", "Comedy"], DAY)
    ]

    items.run(RunContext.for_date(config, DAY, run_id="run-2"))
    assert _partition(spark, first) == before
    assert spark.read.format("delta").load(path).count() == 1682  # replaced, not appended
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()
    assert [h["userMetadata"] for h in history] == ["run-1", "run-2"]


def test_items_main_publishes_the_given_date(spark, tmp_path):
    lake = tmp_path / "lake"
    items.main(["--run-date", "2024-03-02", "--config", "local", "--set", f"lake.root={lake}"])
    ctx = RunContext.for_date(config_with_lake(lake), dt.date(2024, 3, 2))
    rows = _partition(spark, ctx, dt.date(2024, 3, 2))
    assert len(rows) == 1682
    assert spark.read.format("delta").load(ctx.table("items")).select("run_date").distinct().count() == 1
