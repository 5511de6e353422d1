"""Export the silver ratings as of one run date (after the k-core filter) as a RecBole atomic file.

``<out_dir>/<name>/<name>.inter``, tab-separated, with RecBole's typed header::

    user_id:token	item_id:token	rating:float	timestamp:float

rows ordered by user_id, then :data:`spark_jobs.columns.EVENT_ORDER` (time, then file order) —
the order of the sequences table, which RecBole's stable time sort keeps — so the
reference RecBole models see exactly the interactions SS4Rec trains on. The default ``out_dir``
is ``<lake.root>/<pipeline.export_dir>/<run_date>``; the k-core is ``pipeline.kcore``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from recsys.asof import AS_OF_KEYS, as_of_spark
from spark_jobs.columns import EVENT_ORDER, ITEM_COL, RATING_COL, TIMESTAMP_COL, USER_COL
from spark_jobs.common import RunContext, context_from_args, job_parser
from spark_jobs.sequences import kcore

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

RECBOLE_HEADER = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")


def recbole_interactions(silver: DataFrame, k: int) -> DataFrame:
    """Silver ratings -> RecBole .inter columns (after the k-core), in sequence order."""
    from pyspark.sql import functions as F

    core = kcore(silver.select(USER_COL, ITEM_COL, RATING_COL, *EVENT_ORDER), k)
    return core.orderBy(USER_COL, *EVENT_ORDER).select(
        F.col(USER_COL).cast("string").alias(RECBOLE_HEADER[0]),
        F.col(ITEM_COL).cast("string").alias(RECBOLE_HEADER[1]),
        F.col(RATING_COL).cast("double").alias(RECBOLE_HEADER[2]),
        # whole seconds as digits (a double would print as 1.0E9); RecBole reads them as floats
        F.col(TIMESTAMP_COL).cast("long").cast("string").alias(RECBOLE_HEADER[3]),
    )


def write_single_file(spark: SparkSession, frame: DataFrame, uri: str) -> None:
    """Write ``frame`` as one tab-separated text file with a header at ``uri`` (replacing it)."""
    staging = uri + "._staging"
    (
        frame.coalesce(1)
        .write.mode("overwrite")
        .option("sep", "\t")
        .option("header", True)
        .option("lineSep", "\n")
        .csv(staging)
    )
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path
    fs = hadoop_path(staging).getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    parts = [
        s.getPath() for s in fs.listStatus(hadoop_path(staging)) if s.getPath().getName().startswith("part-")
    ]
    if len(parts) != 1:
        raise RuntimeError(f"{staging}: expected one part file, found {len(parts)}")
    target = hadoop_path(uri)
    fs.delete(target, False)
    fs.mkdirs(target.getParent())
    if not fs.rename(parts[0], target):
        raise RuntimeError(f"could not move {parts[0]} to {uri}")
    fs.delete(hadoop_path(staging), True)


def export(spark: SparkSession, ctx: RunContext, name: str = "ratings", out_dir: str | None = None) -> str:
    """Write ``<out_dir>/<name>/<name>.inter`` from this run's silver; return its location."""
    out_dir = out_dir or ctx.lake_uri(ctx.config.pipeline.export_dir, ctx.run_date.isoformat())
    uri = f"{out_dir.rstrip('/')}/{name}/{name}.inter"
    silver = as_of_spark(spark, ctx.table("ratings_silver"), ctx.run_date, AS_OF_KEYS["ratings_silver"])
    frame = recbole_interactions(silver, ctx.config.pipeline.kcore)
    write_single_file(spark, frame, uri)
    log.info("RecBole atomic file for %s: %s", ctx.run_date, uri)
    return uri


def main(argv: list[str] | None = None) -> None:
    from recsys.spark import build_spark

    parser = job_parser("export one run date's silver ratings (k-core applied) as a RecBole .inter file")
    parser.add_argument("--name", default="ratings", help="dataset name: <out>/<name>/<name>.inter")
    parser.add_argument("--out", default=None, help="output folder (default <lake>/<export_dir>/<run_date>)")
    args = parser.parse_args(argv)
    ctx = context_from_args(args)
    print(export(build_spark(ctx.config, app_name="export-recbole"), ctx, args.name, args.out))


if __name__ == "__main__":
    main()
