"""Items: the dataset's own movie file -> ``items`` (item_id, title, year, genres) per run_date.

The file is the configured ``data.dataset``'s (:func:`recsys.datasets.items.item_source`), read
strictly by :func:`recsys.datasets.items.read_items`; a malformed line fails the job before it
publishes. Rerunning a date replaces its partition. A table of a few thousand rows: written by
delta-rs in this process (:func:`spark_jobs.common.publish_rows`), no Spark job.
"""

from __future__ import annotations

import logging

from spark_jobs.columns import RUN_DATE_COL
from spark_jobs.common import RunContext, context_from_args, job_parser, publish_rows

log = logging.getLogger(__name__)

ITEMS_SCHEMA = "item_id bigint, title string, year int, genres array<string>"


def run(ctx: RunContext) -> str:
    """Publish this run's partition of ``items`` from the dataset's movie file; returns the table path."""
    import pyarrow as pa

    from recsys.datasets.items import item_source, read_items

    path, format_name = item_source(ctx.config)
    items = read_items(path, format_name)
    frame = pa.Table.from_pandas(items, preserve_index=False)
    frame = frame.append_column(RUN_DATE_COL, pa.array([ctx.run_date] * len(items), pa.date32()))
    table = publish_rows(ctx, "items", frame, f"{ITEMS_SCHEMA}, {RUN_DATE_COL} date")
    log.info("items %s: %d items from %s (%s)", ctx.run_date, len(items), path, format_name)
    return table


def main(argv: list[str] | None = None) -> None:
    args = job_parser(
        "the dataset's movie file -> items (titles, years, genres) for one run date"
    ).parse_args(argv)
    ctx = context_from_args(args)
    run(ctx)


if __name__ == "__main__":
    main()
