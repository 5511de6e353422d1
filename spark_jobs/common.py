"""What every job shares: its run context, command line, and small lake I/O helpers."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from recsys.cli import add_run_date_argument, configure_logging
from recsys.config import Config, add_config_arguments, config_from_args, join_uri
from recsys.delta import RUN_DATE_COL, read_partition, run_id_for

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """One run of one date: the configuration, the logical date and the run id stamped on commits."""

    config: Config
    run_date: dt.date
    run_id: str

    @classmethod
    def for_date(cls, config: Config, run_date: dt.date, run_id: str | None = None) -> RunContext:
        return cls(config, run_date, run_id or run_id_for(run_date))

    def table(self, name: str) -> str:
        """Location of a Delta table by its logical name in ``config.tables``."""
        return self.config.table_path(name)

    def lake_uri(self, *parts: str) -> str:
        uri = self.config.project_path(self.config.lake.root)
        for part in parts:
            uri = join_uri(uri, part)
        return uri

    def validation_uri(self, name: str) -> str:
        """Where this run's validation results of ``name`` go (a file name without suffix)."""
        return self.lake_uri(self.config.pipeline.validation_dir, self.run_date.isoformat(), name)


def job_parser(description: str) -> argparse.ArgumentParser:
    """``--run-date``, ``--config`` and ``--set``: the command line of every job."""
    parser = argparse.ArgumentParser(description=description)
    add_run_date_argument(parser)
    add_config_arguments(parser)
    return parser


def context_from_args(args: argparse.Namespace) -> RunContext:
    configure_logging()
    return RunContext.for_date(config_from_args(args), args.run_date)


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """``--input FILE...`` and ``--format``: the raw files a job reads (default: data.dataset's)."""
    from recsys.datasets.formats import FORMATS

    parser.add_argument(
        "--input", nargs="+", default=None, help="raw files (default: the configured data.dataset's file)"
    )
    parser.add_argument("--format", choices=sorted(FORMATS), default=None, help="format of --input")


def inputs_from_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace, ctx: RunContext
) -> tuple[list[str], str]:
    """The raw file paths and their format name: ``--input``/``--format``, else data.dataset's file."""
    from recsys.datasets import raw_source

    if args.input:
        if args.format is None:
            parser.error("--format is required with --input")
        return list(args.input), args.format
    source = raw_source(ctx.config)
    return [str(source.path)], source.format_name


def run_date_literal(run_date: dt.date) -> str:
    return f"DATE'{run_date.isoformat()}'"


def table_exists(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def read_run(spark: SparkSession, ctx: RunContext, table: str) -> DataFrame:
    """This run's partition of ``table``; an error that says which job to run when it is missing."""
    path = ctx.table(table)
    if not table_exists(spark, path):
        raise FileNotFoundError(
            f"{path}: table {table} does not exist; run the job that writes it for {ctx.run_date} first"
        )
    return read_partition(spark, path, ctx.run_date)


@dataclass(frozen=True)
class TableLayout:
    """Physical choices for one table, set when the table is created.

    ``stats_columns``: the only columns Delta keeps min/max statistics for (data skipping);
    computing them for every column costs about a third of a wide table's write.
    ``plain_columns``: written without Parquet dictionary encoding (high-cardinality text,
    where the dictionary is built and then abandoned for every page).
    """

    stats_columns: tuple[str, ...] = ()
    plain_columns: tuple[str, ...] = ()

    @property
    def properties(self) -> dict[str, str]:
        return {"delta.dataSkippingStatsColumns": ",".join(self.stats_columns)} if self.stats_columns else {}

    @property
    def write_options(self) -> dict[str, str]:
        return {f"parquet.enable.dictionary#{column}": "false" for column in self.plain_columns}


# Statistics only where a reader filters on them; Parquet dictionaries off for columns whose
# values are (nearly) all distinct — line numbers, timestamps, raw text — where the dictionary
# is built and abandoned page after page (on 25M bronze rows: 46 s -> 25 s).
TABLE_LAYOUTS: dict[str, TableLayout] = {
    "ratings_bronze": TableLayout(
        stats_columns=("line_number", "parse_error"), plain_columns=("raw", "line_number", "timestamp")
    ),
    "ratings_quarantine": TableLayout(plain_columns=("raw",)),
    "ratings_silver": TableLayout(
        stats_columns=("user_id", "item_id"), plain_columns=("line_number", "timestamp")
    ),
    "sessions": TableLayout(stats_columns=("user_id",), plain_columns=("timestamp",)),
    "sequences": TableLayout(stats_columns=("user_id",), plain_columns=("timestamps.list.element",)),
}


def ensure_table(
    spark: SparkSession,
    path: str,
    df: DataFrame,
    partition_columns: Sequence[str],
    layout: TableLayout,
    run_id: str,
) -> None:
    """Create the Delta table at ``path`` with ``df``'s columns (all nullable) and ``layout`` if absent.

    The creating commit carries ``run_id`` in userMetadata, like every publishing commit.
    """
    if not layout.properties or table_exists(spark, path):
        return
    from delta.tables import DeltaTable

    schema = _all_nullable(df.schema)
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema)
    builder = builder.partitionedBy(*partition_columns)
    for key, value in layout.properties.items():
        builder = builder.property(key, value)
    metadata_key = "spark.databricks.delta.commitInfo.userMetadata"
    previous = spark.conf.get(metadata_key, None)
    spark.conf.set(metadata_key, run_id)
    try:
        builder.execute()
    finally:
        if previous is None:
            spark.conf.unset(metadata_key)
        else:
            spark.conf.set(metadata_key, previous)


def _all_nullable(data_type: Any) -> Any:
    """The type with every field and array element nullable, as a table created by a plain write."""
    from pyspark.sql.types import ArrayType, MapType, StructField, StructType

    if isinstance(data_type, StructType):
        return StructType(
            [StructField(f.name, _all_nullable(f.dataType), True, f.metadata) for f in data_type]
        )
    if isinstance(data_type, ArrayType):
        return ArrayType(_all_nullable(data_type.elementType), True)
    if isinstance(data_type, MapType):
        return MapType(data_type.keyType, _all_nullable(data_type.valueType), True)
    return data_type


def publish(df: DataFrame, ctx: RunContext, table: str, partition: Mapping[str, str] | None = None) -> str:
    """Replace this run's partition of ``table`` with ``df`` (which carries run_date).

    replaceWhere on run_date (see :mod:`recsys.delta`), the run id in userMetadata, the table's
    :data:`TABLE_LAYOUTS` entry and, for a table partitioned further, the values of the further
    partition columns this job owns.
    """
    path = ctx.table(table)
    layout = TABLE_LAYOUTS.get(table, TableLayout())
    partition = dict(partition or {})
    ensure_table(df.sparkSession, path, df, [RUN_DATE_COL, *partition], layout, ctx.run_id)
    publish_slice(df, path, ctx.run_date, ctx.run_id, partition, layout.write_options)
    log.info("published %s for %s (%s)", table, ctx.run_date, path)
    return path


def publish_slice(
    df: DataFrame,
    path: str,
    run_date: dt.date,
    run_id: str,
    partition: Mapping[str, str],
    options: Mapping[str, str] | None = None,
) -> None:
    """Overwrite the rows of ``run_date`` (and of the given further partition values) atomically.

    With a further partition, two jobs can each own a slice of one run_date (ingest and gate in
    quarantine). The frame must carry the run_date column.
    """
    if RUN_DATE_COL not in df.columns:
        raise ValueError(f"cannot publish to {path}: the frame has no {RUN_DATE_COL} column")
    predicate = " AND ".join(
        [f"{RUN_DATE_COL} = {run_date_literal(run_date)}"]
        + [f"{column} = '{value}'" for column, value in partition.items()]
    )
    writer = (
        df.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", predicate)
        .option("userMetadata", run_id)
        .partitionBy(RUN_DATE_COL, *partition)
    )
    for key, value in (options or {}).items():
        writer = writer.option(key, value)
    writer.save(path)


def previous_run_date(spark: SparkSession, path: str, run_date: dt.date) -> dt.date | None:
    """The latest run_date of the table at ``path`` before ``run_date`` (None when there is none)."""
    from pyspark.sql import functions as F

    if not table_exists(spark, path):
        return None
    row = (
        spark.read.format("delta")
        .load(path)
        .where(F.col(RUN_DATE_COL) < F.lit(run_date).cast("date"))
        .agg(F.max(RUN_DATE_COL).alias("previous"))
        .first()
    )
    return None if row is None else row["previous"]


# ------------------------------------------------------------------ text files in the lake
# Through Hadoop's FileSystem so the same code writes to a local lake and to s3a:// or abfss://.


def _hadoop_path(spark: SparkSession, uri: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def write_text(spark: SparkSession, uri: str, text: str) -> None:
    fs, path = _hadoop_path(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def read_text(spark: SparkSession, uri: str) -> str | None:
    """The file's text, or None when it does not exist."""
    fs, path = _hadoop_path(spark, uri)
    if not fs.exists(path):
        return None
    jvm = spark.sparkContext._jvm
    stream = fs.open(path)
    try:
        return jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()


def write_json(spark: SparkSession, uri: str, payload: Mapping[str, Any] | Sequence[Any]) -> None:
    write_text(spark, uri, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_json(spark: SparkSession, uri: str) -> Any:
    text = read_text(spark, uri)
    return None if text is None else json.loads(text)
