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
    import pyarrow as pa
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
    """``--input FILE...`` and ``--format``: files to land as the drop of the run date."""
    from recsys.datasets.formats import FORMATS

    parser.add_argument(
        "--input",
        nargs="+",
        default=None,
        help="land these ratings files as the drop of the run date (default: the landing zone as it is)",
    )
    parser.add_argument("--format", choices=sorted(FORMATS), default=None, help="format of --input")


def inputs_from_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace, config: Config
) -> tuple[list[str], str] | None:
    """``--input``/``--format`` as (paths, format name), or None when the night reads the landing zone.

    Checked before Spark starts, so a wrong path fails in a second with a one-line error (exit
    status 2) rather than after the JVM is up: every local file must exist and hold text (not
    compressed under a text name), and the format must fit ``data.dataset``'s rating scale
    (:func:`recsys.datasets.check_format`). A URI (``s3a://...``) is checked by ingest.
    """
    from recsys.config import ConfigError, is_uri
    from recsys.datasets import check_format
    from recsys.datasets.formats import MAGIC_BYTES, compressed_file_error

    if not args.input:
        return None
    if args.format is None:
        parser.error("--format is required with --input")
    for path in args.input:
        if is_uri(path) and not path.startswith("file:"):
            continue
        local = path.removeprefix("file://").removeprefix("file:")
        try:
            with open(local, "rb") as handle:
                head = handle.read(MAGIC_BYTES)
        except FileNotFoundError:
            parser.error(f"--input {path}: no such file")
        except IsADirectoryError:
            parser.error(f"--input {path}: is a directory; name the ratings file(s)")
        except OSError as exc:
            parser.error(f"--input {path}: cannot be read ({exc.strerror})")
        problem = compressed_file_error(path, head)
        if problem is not None:
            parser.error(f"--input {problem}")
        try:
            check_format(config, args.format, path)
        except ConfigError as exc:
            parser.error(f"--input {exc}")
    return list(args.input), args.format


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
    # False for the small bookkeeping tables: one file, replaced by predicate (not a partition
    # per date, which costs a file per date on every read and write).
    partitioned: bool = True
    # The partition columns when they are not the slice's own (publish's ``where``): a coarser
    # partition that the frame carries, the slice replaced by its data columns' predicate.
    partition_by: tuple[str, ...] = ()
    # New columns of a later release are added to the table on write (Delta's mergeSchema).
    evolves: bool = False

    @property
    def properties(self) -> dict[str, str]:
        return {"delta.dataSkippingStatsColumns": ",".join(self.stats_columns)} if self.stats_columns else {}

    @property
    def write_options(self) -> dict[str, str]:
        options = {f"parquet.enable.dictionary#{column}": "false" for column in self.plain_columns}
        return {**options, "mergeSchema": "true"} if self.evolves else options


# Statistics only where a reader filters on them; Parquet dictionaries off for columns whose
# values are (nearly) all distinct — line numbers, timestamps, raw text — where the dictionary
# is built and abandoned page after page (on 25M bronze rows: 46 s -> 25 s).
TABLE_LAYOUTS: dict[str, TableLayout] = {
    "ratings_bronze": TableLayout(
        stats_columns=("drop_date", "line_number", "parse_error"),
        plain_columns=("raw", "line_number", "timestamp"),
        partition_by=("drop_month",),
    ),
    "ratings_quarantine": TableLayout(plain_columns=("raw",)),
    "ratings_silver": TableLayout(
        stats_columns=("user_id", "item_id"), plain_columns=("line_number", "timestamp")
    ),
    "sessions": TableLayout(stats_columns=("user_id",), plain_columns=("timestamp",)),
    "sequences": TableLayout(stats_columns=("user_id",), plain_columns=("timestamps.list.element",)),
    "ingest_ledger": TableLayout(partitioned=False),
    "ratings_drop_stats": TableLayout(partitioned=False),
    # registry_version and alias came with the MLflow registry: a lake of an earlier release gains them.
    "model_runs": TableLayout(evolves=True),
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


def publish(df: DataFrame, ctx: RunContext, table: str, where: Mapping[str, Any] | None = None) -> str:
    """Replace a slice of ``table`` with ``df``: by default this run's ``run_date`` partition.

    ``where`` maps columns to the value (or values) whose rows ``df`` replaces, e.g.
    ``{"drop_date": [d1, d2], "stage": "gate"}``: the table's partition columns, or data columns
    when its :data:`TABLE_LAYOUTS` entry partitions it more coarsely (``partition_by``); the
    frame carries those columns. replaceWhere (see :mod:`recsys.delta`), the run id in
    userMetadata, and the layout when the table is created. A table partitioned otherwise (by
    an earlier release) is refused with what to do.
    """
    path = ctx.table(table)
    layout = TABLE_LAYOUTS.get(table, TableLayout())
    where = dict(where) if where is not None else {RUN_DATE_COL: ctx.run_date}
    partition_by = partition_columns(layout, where)
    require_partitioning(path, table, partition_by)
    ensure_table(df.sparkSession, path, df, partition_by, layout, ctx.run_id)
    publish_slice(df, path, where, ctx.run_id, layout.write_options, partition_by=partition_by)
    log.info("published %s for %s (%s)", table, _describe(where), path)
    return path


def partition_columns(layout: TableLayout, where: Mapping[str, Any]) -> list[str]:
    """A table's partition columns: its layout's, else the columns of the slice it is written by."""
    return list(layout.partition_by or where) if layout.partitioned else []


def require_partitioning(path: str, table: str, partition_by: Sequence[str]) -> None:
    """Refuse to write a table whose partition columns (Delta log, delta-rs) are not ``partition_by``."""
    from recsys.delta import open_delta

    existing = open_delta(path)
    if existing is None or set(existing.metadata().partition_columns) == set(partition_by):
        return
    raise ValueError(
        f"{path}: table {table} is partitioned by {list(existing.metadata().partition_columns)}, this "
        f"release writes it partitioned by {list(partition_by)}; move the table aside and rerun the "
        "night to rebuild it (bronze is rebuilt from the landing zone's drops)"
    )


def publish_kept(
    df: DataFrame, ctx: RunContext, table: str, where: Mapping[str, Any], keep: bool
) -> DataFrame | None:
    """:func:`publish`; with ``keep`` the frame is persisted first and returned (materialised by the
    write) for the next stage of the same process, which unpersists it. None without ``keep``."""
    if not keep:
        publish(df, ctx, table, where)
        return None
    df = df.persist()
    try:
        publish(df, ctx, table, where)
    except BaseException:
        df.unpersist()
        raise
    return df


def publish_rows(
    ctx: RunContext,
    table: str,
    rows: pa.Table | Sequence[Mapping[str, Any]],
    schema: str,
    where: Mapping[str, Any] | None = None,
) -> str:
    """:func:`publish` for a small table (a few thousand rows at most), through delta-rs: no Spark job.

    ``rows``: a pyarrow table or dicts with the columns of ``schema`` (Spark DDL); ``where`` as
    for :func:`publish` (default this run's ``run_date``). One atomic commit
    (:func:`recsys.delta.replace_where`).
    """
    import pyarrow as pa

    from recsys.delta import arrow_schema, replace_where

    path = ctx.table(table)
    layout = TABLE_LAYOUTS.get(table, TableLayout())
    where = dict(where) if where is not None else {RUN_DATE_COL: ctx.run_date}
    target = arrow_schema(schema)
    if isinstance(rows, pa.Table):
        arrow = rows.select(target.names).cast(target)
    else:
        arrow = pa.Table.from_pylist(
            [{name: row[name] for name in target.names} for row in rows], schema=target
        )
    missing = [column for column in where if column not in target.names]
    if missing:
        raise ValueError(f"cannot publish to {path}: the rows have no {', '.join(missing)} column")
    replace_where(path, arrow, slice_predicate(where), ctx.run_id, partition_columns(layout, where))
    log.info("published %s for %s (%s)", table, _describe(where), path)
    return path


def _describe(where: Mapping[str, Any]) -> str:
    def one(value: Any) -> str:
        if isinstance(value, (list, tuple, set, frozenset)):
            values = sorted(value)
            return (
                f"{values[0]}..{values[-1]} ({len(values)})"
                if len(values) > 3
                else ", ".join(map(str, values))
            )
        return str(value)

    return "; ".join(f"{column} {one(value)}" for column, value in where.items())


def sql_literal(value: Any) -> str:
    """A date, number or string as a Spark SQL literal."""
    if isinstance(value, dt.date):
        return run_date_literal(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def slice_predicate(where: Mapping[str, Any]) -> str:
    """``col = v AND col IN (...)``: the SQL predicate of a slice (a list of values is an IN)."""
    parts = []
    for column, value in where.items():
        if isinstance(value, (list, tuple, set, frozenset)):
            if not value:
                raise ValueError(f"empty value list for {column}: a slice must name what it replaces")
            parts.append(f"{column} IN ({', '.join(sql_literal(v) for v in sorted(value))})")
        else:
            parts.append(f"{column} = {sql_literal(value)}")
    return " AND ".join(parts)


def publish_slice(
    df: DataFrame,
    path: str,
    where: Mapping[str, Any],
    run_id: str,
    options: Mapping[str, str] | None = None,
    partition_by: Sequence[str] | None = None,
) -> None:
    """Overwrite the rows of the slice ``where`` (column -> value or values) atomically.

    Two jobs can each own a slice of one table (ingest and gate in quarantine, by ``stage``).
    The frame must carry every column of ``where``; rows outside the slice are an error
    (Delta checks replaceWhere), so a job can never overwrite what it does not own.
    ``partition_by``: the table's partition columns, by default the slice's own (``[]``: an
    unpartitioned table, written as one file). A slice of several values is written one task
    per partition value (not one file per value per task); a slice of data columns (the
    partition coarser than the slice) is replaced by predicate, Delta rewriting only the files
    that hold rows of it.
    """
    missing = [column for column in where if column not in df.columns]
    if missing:
        raise ValueError(f"cannot publish to {path}: the frame has no {', '.join(missing)} column")
    partition_by = list(where) if partition_by is None else list(partition_by)
    if not partition_by:
        df = df.coalesce(1)
    elif any(isinstance(value, (list, tuple, set, frozenset)) and len(value) > 1 for value in where.values()):
        df = df.repartition(*partition_by)
    writer = (
        df.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", slice_predicate(where))
        .option("userMetadata", run_id)
    )
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    for key, value in (options or {}).items():
        writer = writer.option(key, value)
    writer.save(path)


def holds_slice(path: str, where: Mapping[str, Any]) -> bool:
    """Whether the table at ``path`` has a file in the slice ``where`` (partition column -> value or
    values), from the Delta log through delta-rs (no data read); False for an absent table."""
    from recsys.delta import open_delta

    table = open_delta(path)
    if table is None:
        return False
    wanted = {
        column: {str(v) for v in (value if isinstance(value, (list, tuple, set, frozenset)) else [value])}
        for column, value in where.items()
    }
    return any(all(p.get(c) in values for c, values in wanted.items()) for p in table.partitions())


def read_small_table(path: str) -> list[dict[str, Any]]:
    """Every row of a small bookkeeping table (the ingest ledger, the drop stats) as dicts; [] when absent.

    Read by delta-rs in this process rather than by a Spark job: a night reads these tables a
    dozen times, and each Spark read costs about 0.4 s warm and several seconds as a JVM's first
    Delta read, against about 10 ms here. Map columns come back as dicts, dates as dates.
    """
    import pyarrow as pa

    from recsys.delta import open_delta, read_arrow

    table = open_delta(path)
    if table is None:
        return []
    arrow = read_arrow(table)
    maps = [f.name for f in arrow.schema if pa.types.is_map(f.type)]
    rows = arrow.to_pylist()
    for row in rows:
        for name in maps:
            row[name] = None if row[name] is None else dict(row[name])
    return rows


# ------------------------------------------------------------------ text files in the lake
# Through Hadoop's FileSystem so the same code writes to a local lake and to s3a:// or abfss://.


def hadoop_path(spark: SparkSession, uri: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def dated_folders(spark: SparkSession, uri: str) -> list[tuple[dt.date, Any]]:
    """(date, Hadoop FileStatus) of every folder under ``uri`` named YYYY-MM-DD, by date; none if absent."""
    fs, root = hadoop_path(spark, uri)
    if not fs.exists(root):
        return []
    folders = []
    for status in fs.listStatus(root):
        try:
            dated = dt.date.fromisoformat(status.getPath().getName())
        except ValueError:
            continue
        if status.isDirectory():
            folders.append((dated, status))
    return sorted(folders, key=lambda pair: pair[0])


def write_text(spark: SparkSession, uri: str, text: str) -> None:
    fs, path = hadoop_path(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def read_text(spark: SparkSession, uri: str) -> str | None:
    """The file's text, or None when it does not exist."""
    fs, path = hadoop_path(spark, uri)
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
