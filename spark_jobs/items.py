"""Items: the dataset's own movie file -> ``items`` (item_id, title, year, genres) per run_date.

The file is the configured ``data.dataset``'s (:func:`recsys.datasets.items.item_source`), read
strictly by :func:`recsys.datasets.items.read_items`; a malformed line fails the job before it
publishes. Rerunning a date replaces its partition.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from spark_jobs.common import RunContext, context_from_args, job_parser, publish

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

ITEMS_SCHEMA = "item_id bigint, title string, year int, genres array<string>"


def run(spark: SparkSession, ctx: RunContext) -> str:
    """Publish this run's partition of ``items`` from the dataset's movie file; returns the table path."""
    from recsys.datasets.items import item_source, read_items
    from recsys.delta import with_run_date

    path, format_name = item_source(ctx.config)
    items = read_items(path, format_name)
    frame = spark.createDataFrame(items, ITEMS_SCHEMA)
    table = publish(with_run_date(frame, ctx.run_date), ctx, "items")
    log.info("items %s: %d items from %s (%s)", ctx.run_date, len(items), path, format_name)
    return table


def main(argv: list[str] | None = None) -> None:
    from recsys.spark import build_spark

    args = job_parser(
        "the dataset's movie file -> items (titles, years, genres) for one run date"
    ).parse_args(argv)
    ctx = context_from_args(args)
    run(build_spark(ctx.config, app_name="items"), ctx)


if __name__ == "__main__":
    main()
