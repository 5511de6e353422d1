"""The documented queries of docs/sql: the same rows in Spark SQL and DuckDB, the right numbers, and
the documented rollback (Delta RESTORE) of a bad publish."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recsys.sql import SQL_DIR, duckdb_query, load_query, query_names, render, spark_query, sql_literal
from spark_jobs.common import publish_slice
from spark_jobs.publish_recommendations import MODEL_RUNS_SCHEMA

pytestmark = pytest.mark.spark

NIGHT_1 = dt.date(2026, 11, 23)
NIGHT_2 = dt.date(2026, 11, 24)
NIGHTS = (NIGHT_1, NIGHT_2)
K = 12
CATALOGUE = tuple(range(101, 116))  # 15 items; 115 is never recommended
NEVER_RECOMMENDED = 115
FALLBACK_USER = 3  # the popularity fallback, both nights
DROPPED_USER = 4  # first night only
NEW_USER = 5  # second night only

# Each user's K item ids in rank order, per night.
RANKED: dict[dt.date, dict[int, list[int]]] = {
    NIGHT_1: {
        1: list(range(101, 113)),
        2: list(range(103, 115)),
        FALLBACK_USER: list(range(101, 113)),
        DROPPED_USER: list(range(114, 102, -1)),
    },
    NIGHT_2: {
        # top 10 {101..109, 113}; 110 and 114 only at ranks 11-12. Shares 101..109 with night 1: 9.
        1: [101, 102, 103, 104, 105, 106, 107, 108, 113, 109, 110, 114],
        # top 10 {101, 102, 103..107, 111, 112, 113}. Shares 103..107, 111, 112 with night 1: 7.
        2: [101, 102, 113, 103, 104, 105, 106, 107, 111, 112, 114, 108],
        FALLBACK_USER: list(range(101, 113)),  # unchanged: 10 shared
        NEW_USER: [*range(112, 102, -1), 114, 101],
    },
}
MODEL_VERSION = {NIGHT_1: "als-20261123", NIGHT_2: "als-20261124"}

RECS_SCHEMA = (
    "run_date date, model_version string, user_id bigint, rank int, item_id bigint, score float, "
    "is_fallback boolean, generated_at timestamp"
)
ITEMS_SCHEMA = "run_date date, item_id bigint, title string, year int, genres array<string>"
SILVER_SCHEMA = "user_id bigint, item_id bigint, rating double, timestamp bigint, copies int, valid_from date"
V1, V2, V3 = dt.date(2026, 11, 20), dt.date(2026, 11, 22), dt.date(2026, 11, 24)
# Versions of ratings_silver: user 1 re-rates item 101 on V3; user 2 appears on V2.
SILVER = [
    (1, 101, 3.0, 1_700_000_000, 1, V1),
    (1, 102, 4.0, 1_700_000_100, 1, V1),
    (1, 103, 2.0, 1_700_500_000, 1, V2),
    (1, 101, 5.0, 1_700_900_000, 2, V3),
    (2, 101, 1.0, 1_700_400_000, 1, V2),
]


def generated_at(night: dt.date) -> dt.datetime:
    return dt.datetime(night.year, night.month, night.day, 3, 15, tzinfo=dt.UTC)


def recommendation_rows(night: dt.date, ranked: dict[int, list[int]] | None = None) -> list[tuple]:
    ranked = RANKED[night] if ranked is None else ranked
    return [
        (
            night,
            MODEL_VERSION[night],
            user,
            rank,
            item,
            float(np.float32(1.0 - rank / 100)),
            user == FALLBACK_USER,
            generated_at(night),
        )
        for user, items in ranked.items()
        for rank, item in enumerate(items, start=1)
    ]


def item_rows(night: dt.date) -> list[tuple]:
    rows = []
    for item in CATALOGUE:
        title = f"Movie {item}"
        if item == 101:  # retitled between the nights: a query must join the catalogue of its run
            title = "Toy Story" if night == NIGHT_1 else "Toy Story (1995)"
        if item == 104:
            title = "Schindler's List"  # a quote in the data
        year = None if item == 113 else 1900 + item - 10
        genres = [] if item == 113 else (["Comedy", "Drama"] if item % 2 else ["Drama"])
        rows.append((night, item, title, year, genres))
    return rows


def model_run_rows(night: dt.date) -> list[tuple]:
    return [
        (
            night,
            MODEL_VERSION[night],
            "als",
            "cfg-1",
            f"seq-{night:%Y%m%d}",
            {"sequences": 3, "items": 1},
            {"ndcg@10": 0.25, "hr@10": 0.5},
            12.5,
            night == NIGHT_1,
            True,
            "champion",
            "full" if night == NIGHT_1 else None,
            night == NIGHT_1,
            "no champion yet: the challenger is promoted" if night == NIGHT_1 else "no challenger tonight",
            "1",
            "champion",
        )
    ]


# --------------------------------------------------------------------------- fixture as pandas

RECS = pd.DataFrame(
    [row for night in NIGHTS for row in recommendation_rows(night)],
    columns=[c.split()[0] for c in RECS_SCHEMA.split(", ")],
)
ITEMS = pd.DataFrame(
    [row for night in NIGHTS for row in item_rows(night)],
    columns=[c.split()[0] for c in ITEMS_SCHEMA.split(", ")],
)


@pytest.fixture(scope="module")
def tables(spark, tmp_path_factory) -> dict[str, str]:
    """recommendations, items and model_runs for both nights, each night published like the jobs do."""
    lake = tmp_path_factory.mktemp("sql_lake")
    paths = {name: str(lake / name) for name in ("recommendations", "items", "model_runs", "ratings_silver")}
    silver = spark.createDataFrame(SILVER, SILVER_SCHEMA)
    publish_slice(
        silver, paths["ratings_silver"], {"valid_from": sorted({row[-1] for row in SILVER})}, "run-silver"
    )
    for night in NIGHTS:
        for name, rows, schema in (
            ("recommendations", recommendation_rows(night), RECS_SCHEMA),
            ("items", item_rows(night), ITEMS_SCHEMA),
            ("model_runs", model_run_rows(night), MODEL_RUNS_SCHEMA),
        ):
            publish_slice(
                spark.createDataFrame(rows, schema), paths[name], {"run_date": night}, f"run-{night}"
            )
    return paths


# --------------------------------------------------------------------------- comparing results


def _value(value: Any, session_tz: str) -> Any:
    """One cell in a form both engines' pandas output (and the expectations) agree on."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float | np.floating) and math.isnan(value):
        return None
    if isinstance(value, np.ndarray | list | tuple):
        return tuple(_value(v, session_tz) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _value(v, session_tz)) for k, v in value.items()))
    if isinstance(value, dt.datetime):  # pd.Timestamp too; naive ones are in Spark's session time zone
        stamp = pd.Timestamp(value)
        return (stamp.tz_localize(session_tz) if stamp.tzinfo is None else stamp).tz_convert("UTC")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer | float | np.floating):
        return float(value)
    return value


def _sort_key(row: tuple) -> tuple:
    return tuple((v is None, v if v is not None else 0) for v in row)


def rows(frame: pd.DataFrame, session_tz: str = "UTC") -> list[tuple]:
    return sorted(
        (tuple(_value(v, session_tz) for v in record) for record in frame.itertuples(index=False)),
        key=_sort_key,
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def assert_same_rows(actual: pd.DataFrame, expected: pd.DataFrame, session_tz: str = "UTC") -> None:
    assert list(actual.columns) == list(expected.columns)
    got, want = rows(actual, session_tz), rows(expected)
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want, strict=True):
        assert _same(g, w), f"\n got {g}\nwant {w}"


# --------------------------------------------------------------------------- expectations
# Computed from RANKED / ITEMS with pandas and numpy, independently of the SQL.


def _top10(night: dt.date | None) -> dict[int, set[int]]:
    if night is None:
        return {}
    return {user: set(items[:10]) for user, items in RANKED.get(night, {}).items()}


def _previous(night: dt.date) -> dt.date | None:
    earlier = [n for n in RANKED if n < night]
    return max(earlier) if earlier else None


def expect_latest_run() -> pd.DataFrame:
    return RECS[RECS.run_date == max(RANKED)].reset_index(drop=True)


def expect_user_top10(user_id: int) -> pd.DataFrame:
    latest = max(RANKED)
    recs = RECS[(RECS.run_date == latest) & (RECS.user_id == user_id) & (RECS["rank"] <= 10)]
    joined = recs.merge(ITEMS, on=["run_date", "item_id"], how="left")
    columns = ["run_date", "model_version", "user_id", "rank", "item_id", "title", "year", "genres"]
    return joined[[*columns, "score", "is_fallback"]]


def _overlaps(night: dt.date) -> dict[int, int]:
    tonight, previous = _top10(night), _top10(_previous(night))
    return {user: len(tonight[user] & previous[user]) for user in sorted(tonight.keys() & previous.keys())}


def expect_run_vs_previous(run_date: dt.date) -> pd.DataFrame:
    previous = _previous(run_date)
    records = [
        (run_date, previous, user, shared, shared / 10, 1 - shared / 10)
        for user, shared in _overlaps(run_date).items()
    ]
    columns = ["run_date", "previous_run_date", "user_id", "shared_at_10", "overlap_at_10", "churn_at_10"]
    return pd.DataFrame(records, columns=columns)


def expect_run_vs_previous_summary(run_date: dt.date) -> pd.DataFrame:
    tonight, previous = _top10(run_date), _top10(_previous(run_date))
    overlaps = [shared / 10 for shared in _overlaps(run_date).values()]
    mean = float(np.mean(overlaps)) if overlaps else None
    record = {
        "run_date": run_date,
        "previous_run_date": _previous(run_date),
        "users_tonight": len(tonight),
        "users_compared": len(overlaps),
        "users_new_tonight": len(tonight.keys() - previous.keys()),
        "users_dropped": len(previous.keys() - tonight.keys()),
        "mean_overlap_at_10": mean,
        "mean_churn_at_10": None if mean is None else 1 - mean,
    }
    return pd.DataFrame([record])


def gini(counts: list[int]) -> float:
    c = np.sort(np.asarray(counts, dtype=float))
    n = len(c)
    i = np.arange(1, n + 1)
    return float(2 * np.sum(i * c) / (n * np.sum(c)) - (n + 1) / n)


def expect_coverage(run_date: dt.date) -> pd.DataFrame:
    catalogue = set(ITEMS[ITEMS.run_date == run_date].item_id)
    ranked = RANKED[run_date]
    at_10 = {item for items in ranked.values() for item in items[:10]} & catalogue
    at_k = {item for items in ranked.values() for item in items} & catalogue
    counts = {item: 0 for item in catalogue}
    for items in ranked.values():
        for item in items[:10]:
            counts[item] += 1
    record = {
        "run_date": run_date,
        "users": len(ranked),
        "k": max(len(items) for items in ranked.values()),
        "catalogue_items": len(catalogue),
        "items_at_10": len(at_10),
        "items_at_k": len(at_k),
        "coverage_at_10": len(at_10) / len(catalogue),
        "coverage_at_k": len(at_k) / len(catalogue),
        "gini_at_10": gini(list(counts.values())),
    }
    return pd.DataFrame([record])


def expect_most_recommended(run_date: dt.date) -> pd.DataFrame:
    top10 = RECS[(RECS.run_date == run_date) & (RECS["rank"] <= 10)]
    users = RECS[RECS.run_date == run_date].user_id.nunique()
    counts = top10.groupby("item_id").user_id.nunique().rename("users_recommended").reset_index()
    counts = counts.sort_values(["users_recommended", "item_id"], ascending=[False, True]).head(20)
    counts["popularity_rank"] = range(1, len(counts) + 1)
    counts["run_date"] = run_date
    counts["share_of_users"] = counts.users_recommended / users
    titles = ITEMS[ITEMS.run_date == run_date][["item_id", "title"]]
    frame = counts.merge(titles, on="item_id", how="left")
    return frame[["run_date", "popularity_rank", "item_id", "title", "users_recommended", "share_of_users"]]


def expect_ratings_as_of(user_id: int, as_of: dt.date) -> pd.DataFrame:
    columns = [c.split()[0] for c in SILVER_SCHEMA.split(", ")]
    versions = pd.DataFrame(SILVER, columns=columns)
    versions = versions[(versions.user_id == user_id) & (versions.valid_from <= as_of)]
    latest = versions.sort_values("valid_from").groupby(["user_id", "item_id"]).tail(1)
    return latest.sort_values(["timestamp", "item_id"])[columns]


# Every documented query: the parameter sets it is run with, and what it must return.
CASES: dict[str, tuple[list[dict[str, Any]], Callable[..., pd.DataFrame]]] = {
    "latest_run": ([{}], expect_latest_run),
    "user_top10": (
        [{"user_id": 1}, {"user_id": FALLBACK_USER}, {"user_id": NEW_USER}, {"user_id": DROPPED_USER}],
        expect_user_top10,
    ),
    "run_vs_previous": ([{"run_date": NIGHT_2}, {"run_date": NIGHT_1}], expect_run_vs_previous),
    "run_vs_previous_summary": (
        [{"run_date": NIGHT_2}, {"run_date": NIGHT_1}],
        expect_run_vs_previous_summary,
    ),
    "coverage": ([{"run_date": NIGHT_2}, {"run_date": NIGHT_1}], expect_coverage),
    "most_recommended": ([{"run_date": NIGHT_2}, {"run_date": NIGHT_1}], expect_most_recommended),
    "ratings_as_of": (
        [
            {"user_id": 1, "as_of": V1},
            {"user_id": 1, "as_of": V3 - dt.timedelta(days=1)},
            {"user_id": 1, "as_of": V3},
            {"user_id": 2, "as_of": V1},
        ],
        expect_ratings_as_of,
    ),
}


def _case_id(case: tuple[str, dict[str, Any]]) -> str:
    name, params = case
    return "-".join([name, *(f"{k}={v}" for k, v in params.items())])


ALL_CASES = [(name, params) for name in query_names() for params in CASES.get(name, ([{}], None))[0]]


def test_every_documented_query_is_exercised():
    """A new docs/sql/*.sql file fails here until it has parameter sets and expectations in CASES."""
    files = {path.stem for path in SQL_DIR.glob("*.sql")}
    assert files == set(query_names())
    assert files == set(CASES), f"queries without a test: {sorted(files - set(CASES))}"


@pytest.mark.parametrize("case", ALL_CASES, ids=_case_id)
def test_query_same_rows_in_both_engines_and_expected(spark, tables, case):
    name, params = case
    assert name in CASES, f"docs/sql/{name}.sql has no test case"
    session_tz = spark.conf.get("spark.sql.session.timeZone")
    from_spark = spark_query(spark, tables, name, **params)
    from_duckdb = duckdb_query(tables, name, **params)
    assert list(from_spark.columns) == list(from_duckdb.columns)
    for column in from_spark.columns:  # the same pandas types, but Spark's naive timestamps
        spark_type, duckdb_type = from_spark[column].dtype, from_duckdb[column].dtype
        if pd.api.types.is_datetime64_any_dtype(spark_type):
            assert pd.api.types.is_datetime64_any_dtype(duckdb_type), column
        else:
            assert spark_type == duckdb_type, (column, spark_type, duckdb_type)
    got_spark, got_duckdb = rows(from_spark, session_tz), rows(from_duckdb)
    assert len(got_spark) == len(got_duckdb)
    for a, b in zip(got_spark, got_duckdb, strict=True):
        assert _same(a, b), f"\nspark  {a}\nduckdb {b}"
    assert_same_rows(from_spark, CASES[name][1](**params), session_tz)


# --------------------------------------------------------------------------- hand-derived numbers


def test_hand_derived_numbers(tables):
    """The fixture's numbers worked out by hand (in the comments of RANKED), through DuckDB."""
    as_of = duckdb_query(tables, "ratings_as_of", user_id=1, as_of=V3)
    assert list(zip(as_of.item_id, as_of.rating, as_of.copies, strict=True)) == [
        (102, 4.0, 1),
        (103, 2.0, 1),
        (101, 5.0, 2),
    ]
    assert duckdb_query(tables, "ratings_as_of", user_id=1, as_of=V2).rating.tolist() == [3.0, 4.0, 2.0]

    latest = duckdb_query(tables, "latest_run")
    assert set(latest.run_date) == {NIGHT_2}
    assert len(latest) == 4 * K
    assert set(latest.user_id) == {1, 2, FALLBACK_USER, NEW_USER}

    top = duckdb_query(tables, "user_top10", user_id=1)
    assert top["rank"].tolist() == list(range(1, 11))
    assert top.item_id.tolist() == RANKED[NIGHT_2][1][:10]
    assert top.title.iloc[0] == "Toy Story (1995)"  # the catalogue of the same run
    assert top.title.iloc[3] == "Schindler's List"
    no_year = top[top.item_id == 113].iloc[0]
    assert math.isnan(no_year.year) and list(no_year.genres) == []
    assert not top.is_fallback.any()
    assert duckdb_query(tables, "user_top10", user_id=FALLBACK_USER).is_fallback.all()
    assert duckdb_query(tables, "user_top10", user_id=DROPPED_USER).empty  # not in the latest run

    per_user = duckdb_query(tables, "run_vs_previous", run_date=NIGHT_2)
    assert dict(zip(per_user.user_id, per_user.overlap_at_10, strict=True)) == pytest.approx(
        {1: 0.9, 2: 0.7, FALLBACK_USER: 1.0}
    )
    assert per_user.churn_at_10.tolist() == pytest.approx([0.1, 0.3, 0.0])
    assert set(per_user.previous_run_date) == {NIGHT_1}
    assert duckdb_query(tables, "run_vs_previous", run_date=NIGHT_1).empty

    summary = duckdb_query(tables, "run_vs_previous_summary", run_date=NIGHT_2).iloc[0]
    assert (summary.users_tonight, summary.users_compared) == (4, 3)
    assert (summary.users_new_tonight, summary.users_dropped) == (1, 1)
    assert summary.mean_overlap_at_10 == pytest.approx((0.9 + 0.7 + 1.0) / 3)
    first = duckdb_query(tables, "run_vs_previous_summary", run_date=NIGHT_1).iloc[0]
    assert first.previous_run_date is None and first.users_new_tonight == 4
    assert first.users_compared == 0 and math.isnan(first.mean_overlap_at_10)

    coverage = duckdb_query(tables, "coverage", run_date=NIGHT_2).iloc[0]
    assert (coverage.catalogue_items, coverage.items_at_10, coverage.items_at_k, coverage.k) == (
        15,
        13,
        14,
        K,
    )
    assert coverage.coverage_at_10 == pytest.approx(13 / 15)
    assert coverage.coverage_at_k == pytest.approx(14 / 15)
    # top-10 counts ascending: 0,0 (114, 115), 2 x4, 3 x4, 4 x5 -> sum i*c = 398, sum c = 40
    assert coverage.gini_at_10 == pytest.approx(2 * 398 / (15 * 40) - 16 / 15)
    assert coverage.gini_at_10 == pytest.approx(0.26)

    most = duckdb_query(tables, "most_recommended", run_date=NIGHT_2)
    assert most.popularity_rank.tolist() == list(range(1, 14))
    assert most.item_id.tolist() == [103, 104, 105, 106, 107, 101, 102, 108, 109, 110, 111, 112, 113]
    assert most.share_of_users.tolist() == pytest.approx([1.0] * 5 + [0.75] * 4 + [0.5] * 4)
    assert NEVER_RECOMMENDED not in set(most.item_id) and 114 not in set(most.item_id)


def test_latest_run_is_a_view_body_and_the_shared_predicate(spark, tables):
    """latest_run.sql works as `CREATE VIEW ... AS <file>` in both engines, as the README shows, and
    the queries on the current run use its predicate verbatim."""
    import duckdb
    from deltalake import DeltaTable

    from recsys.delta import arrow_dataset

    predicate = "r.run_date = (SELECT MAX(run_date) FROM recommendations)"
    assert predicate in load_query("latest_run")
    assert predicate in load_query("user_top10")
    view = "CREATE OR REPLACE TEMPORARY VIEW latest_recommendations AS\n" + load_query("latest_run")
    count = "SELECT COUNT(*) AS n, MIN(run_date) AS first, MAX(run_date) AS last FROM latest_recommendations"

    spark_query(spark, tables, "latest_run")  # registers the tables as temp views
    spark.sql(view)
    assert tuple(spark.sql(count).first()) == (4 * K, NIGHT_2, NIGHT_2)

    connection = duckdb.connect()
    connection.register("recommendations", arrow_dataset(DeltaTable(tables["recommendations"])))
    connection.execute(view)
    assert connection.sql(count).fetchall() == [(4 * K, NIGHT_2, NIGHT_2)]
    connection.close()


# --------------------------------------------------------------------------- render


def test_render_substitutes_literals():
    sql = "SELECT ${day} AS d, ${n} AS n, ${s} AS s, ${n} + 1 AS m"
    assert render(sql, day=NIGHT_2, n=-42, s="it's ${n}") == (
        "SELECT DATE '2026-11-24' AS d, -42 AS n, 'it''s ${n}' AS s, -42 + 1 AS m"
    )
    assert render("SELECT 1") == "SELECT 1"
    assert sql_literal("x", 10**12) == "1000000000000"


@pytest.mark.parametrize(
    ("sql", "params", "message"),
    [
        ("SELECT ${user_id}", {}, "missing parameter.*user_id"),
        ("SELECT ${a}, ${b}", {"a": 1}, "missing parameter.*b"),
        ("SELECT 1", {"run_date": NIGHT_1}, "unused parameter.*run_date"),
        ("SELECT ${a}", {"a": 1, "extra": 2}, "unused parameter.*extra"),
        ("SELECT ${a}", {"a": 1.5}, "parameter a: float"),
        ("SELECT ${a}", {"a": True}, "parameter a: a bool"),
        ("SELECT ${a}", {"a": None}, "parameter a: NoneType"),
        ("SELECT ${a}", {"a": dt.datetime(2026, 1, 1, 2)}, "parameter a: a datetime"),
        ("SELECT ${a}", {"a": np.int64(3)}, "parameter a: int64"),
        ("SELECT ${a}", {"a": "back\\slash"}, "parameter a: .*backslash"),
        ("SELECT ${1a}", {}, "malformed placeholder"),
        ("SELECT ${ a }", {"a": 1}, "malformed placeholder"),
    ],
)
def test_render_errors_name_the_parameter(sql, params, message):
    with pytest.raises(ValueError, match=message):
        render(sql, **params)


def test_load_query_errors():
    assert load_query("latest_run").startswith("-- latest_run")
    with pytest.raises(ValueError, match="plain name"):
        load_query("../README")
    with pytest.raises(FileNotFoundError, match="no such query"):
        load_query("no_such_query")
    with pytest.raises(ValueError, match=r"missing parameter.*run_date"):
        duckdb_query({}, "coverage")


def test_literals_read_alike_in_both_engines(spark):
    """render's literals mean the same value to Spark SQL and DuckDB."""
    import duckdb

    sql = render(
        "SELECT ${day} AS d, ${n} AS n, ${s} AS s, ${t} AS t",
        day=NIGHT_1,
        n=2**40,
        s='Schindler\'s "List" ; -- é',
        t="",
    )
    expected = (NIGHT_1, 2**40, 'Schindler\'s "List" ; -- é', "")
    assert tuple(spark.sql(sql).first()) == expected
    assert duckdb.sql(sql).fetchall() == [expected]


# --------------------------------------------------------------------------- rollback


def _table_rows(spark, path: str, version: int | None = None) -> list[tuple]:
    travel = "" if version is None else f" VERSION AS OF {version}"
    return sorted(tuple(row) for row in spark.sql(f"SELECT * FROM delta.`{path}`{travel}").collect())


def test_rollback_restores_the_previous_run(spark, tmp_path: Path):
    """The README's rollback: find the good run's version in the history, inspect it with time
    travel, RESTORE it; the table is then exactly as the good run left it."""
    path = str(tmp_path / "recommendations")

    def publish(night: dt.date, run_id: str, ranked: dict[int, list[int]] | None = None) -> None:
        frame = spark.createDataFrame(recommendation_rows(night, ranked), RECS_SCHEMA)
        publish_slice(frame, path, {"run_date": night}, run_id)

    publish(NIGHT_1, "run-night-1")
    publish(NIGHT_2, "run-night-2")  # night A
    night_a = _table_rows(spark, path)
    # A bad republish of the same night: other content (user 1 only, reversed lists).
    publish(NIGHT_2, "run-night-2-bad", {1: list(reversed(RANKED[NIGHT_2][1]))})
    assert _table_rows(spark, path) != night_a

    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").collect()
    by_run = {h.userMetadata: h.version for h in history}
    good = by_run["run-night-2"]
    assert by_run["run-night-2-bad"] == good + 1  # the version before the bad publish
    assert _table_rows(spark, path, good) == night_a  # inspect before restoring

    key = "spark.databricks.delta.commitInfo.userMetadata"
    spark.sql(f"SET {key}=rollback-of-run-night-2-bad")
    try:
        restored = spark.sql(f"RESTORE TABLE delta.`{path}` TO VERSION AS OF {good}").first()
    finally:
        spark.conf.unset(key)
    assert restored.num_removed_files > 0 and restored.num_restored_files > 0

    assert _table_rows(spark, path) == night_a
    latest = spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").first()
    assert latest.operation == "RESTORE"
    assert latest.version == good + 2  # RESTORE is itself a new commit; the bad one stays in the history
    assert latest.operationParameters["version"] == str(good)
    assert latest.userMetadata == "rollback-of-run-night-2-bad"

    # Readers through delta-rs (DuckDB) see the restored table too.
    latest_run = duckdb_query({"recommendations": path}, "latest_run")
    want = pd.DataFrame(recommendation_rows(NIGHT_2), columns=list(RECS.columns))
    assert_same_rows(latest_run, want)
