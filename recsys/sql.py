"""The documented queries of ``docs/sql``: load one, fill in its parameters, run it in Spark or DuckDB.

Each ``docs/sql/<name>.sql`` holds one query in the SQL that Spark SQL and DuckDB both accept
unchanged, over the plain table names ``recommendations``, ``items`` and ``model_runs``, with
``${name}`` placeholders for its parameters. :func:`render` turns the parameters into SQL
literals that both engines read alike; :func:`spark_query` and :func:`duckdb_query` bind the
table names to Delta tables and run the query.

Nothing heavy is imported here: pyspark, duckdb and deltalake are imported by the functions
that use them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.config import PROJECT_ROOT

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession

SQL_DIR: Path = PROJECT_ROOT / "docs" / "sql"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def query_names() -> list[str]:
    """The names of the documented queries (the ``.sql`` files of ``docs/sql``), sorted."""
    return sorted(path.stem for path in SQL_DIR.glob("*.sql"))


def load_query(name: str) -> str:
    """The text of ``docs/sql/<name>.sql``, placeholders unfilled."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"query name {name!r} is not a plain name (letters, digits, underscores)")
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such query; the queries are {', '.join(query_names())}")
    return path.read_text(encoding="utf-8")


def placeholders(sql: str) -> set[str]:
    """The parameter names of the ``${name}`` placeholders in ``sql``."""
    return set(_PLACEHOLDER.findall(sql))


def sql_literal(name: str, value: Any) -> str:
    """``value`` as a literal that Spark SQL and DuckDB read alike (``name`` is for the error).

    ``datetime.date`` -> ``DATE 'YYYY-MM-DD'``, ``int`` -> its digits, ``str`` -> single-quoted
    with quotes doubled. Anything else raises ValueError, and so does a string holding a
    backslash: Spark SQL reads it as an escape and DuckDB as itself, so no literal means the
    same in both.
    """
    if isinstance(value, bool):
        raise ValueError(f"parameter {name}: a bool ({value!r}) has no literal here; pass an int or a str")
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, dt.datetime):
        raise ValueError(f"parameter {name}: a datetime ({value!r}) has no literal here; pass a date")
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):
        if "\\" in value:
            raise ValueError(
                f"parameter {name}: {value!r} holds a backslash, which Spark SQL reads as an escape "
                "and DuckDB does not"
            )
        return "'" + value.replace("'", "''") + "'"
    raise ValueError(
        f"parameter {name}: {type(value).__name__} ({value!r}) has no literal here; "
        "pass a datetime.date, an int or a str"
    )


def render(sql: str, /, **params: Any) -> str:
    """``sql`` with every ``${name}`` placeholder replaced by ``params[name]`` as a SQL literal.

    A placeholder without a parameter, a parameter without a placeholder, a malformed
    placeholder (``${`` not followed by ``name}``) or a value of another type than date, int
    or str raises ValueError naming it.
    """
    names = placeholders(sql)
    malformed = [
        sql[m.start() : m.start() + 20]
        for m in re.finditer(r"\$\{", sql)
        if not _PLACEHOLDER.match(sql, m.start())
    ]
    if malformed:
        raise ValueError(f"malformed placeholder(s): {', '.join(repr(text) for text in malformed)}")
    missing = sorted(names - params.keys())
    if missing:
        raise ValueError(f"missing parameter(s): {', '.join(missing)}")
    unused = sorted(params.keys() - names)
    if unused:
        takes = ", ".join(sorted(names)) or "none"
        raise ValueError(f"unused parameter(s): {', '.join(unused)} (the query takes: {takes})")
    literals = {name: sql_literal(name, value) for name, value in params.items()}
    return _PLACEHOLDER.sub(lambda match: literals[match.group(1)], sql)


def _view_names(tables: Mapping[str, str]) -> None:
    for view in tables:
        if not _NAME.fullmatch(view):
            raise ValueError(f"table name {view!r} is not a plain identifier")


def spark_query(spark: SparkSession, tables: Mapping[str, str], name: str, /, **params: Any) -> pd.DataFrame:
    """Run the query ``name`` with ``params`` in Spark SQL, as a pandas DataFrame.

    ``tables`` maps each table name of the query (``recommendations``, ...) to a Delta table's
    path; each is registered as a temporary view of that name (replacing any view of that name,
    and left registered for further queries in the session).
    """
    sql = render(load_query(name), **params)
    _view_names(tables)
    for view, path in tables.items():
        spark.read.format("delta").load(str(path)).createOrReplaceTempView(view)
    return spark.sql(sql).toPandas()


def duckdb_query(tables: Mapping[str, str], name: str, /, **params: Any) -> pd.DataFrame:
    """Run the query ``name`` with ``params`` in DuckDB, as a pandas DataFrame.

    ``tables`` maps each table name of the query to a Delta table's path; each is read by
    delta-rs (its latest version) and registered as a view in a fresh in-memory DuckDB
    connection, closed afterwards. The result goes through Arrow, so DATE columns come back as
    ``datetime.date`` and nullable integers as floats, as from Spark's ``toPandas``; TIMESTAMP
    columns come back timezone-aware (UTC instants).
    """
    import duckdb
    from deltalake import DeltaTable

    from recsys.delta import arrow_dataset

    sql = render(load_query(name), **params)
    _view_names(tables)
    connection = duckdb.connect(":memory:")
    try:
        for view, path in tables.items():
            connection.register(view, arrow_dataset(DeltaTable(str(path))))
        return connection.sql(sql).to_arrow_table().to_pandas()
    finally:
        connection.close()
