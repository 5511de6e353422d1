"""The recsys_nightly DAG end to end (``airflow dags test``, real spark-submit) on ML-100K replayed.

One lake, four DAG runs in order (the module fixture), each asserted on by a test:

1. 1998-04-20 with a planted collapsed drop: the ratings gate fails the run, nothing after it
   runs, no recommendations partition appears, the drop stays ``ingested``;
2. the drop restored, 1998-04-20 again: a full training (no champion yet), a published
   recommendations partition that passed its gate, the champion recorded;
3. 1998-04-21: a warm start from that champion, champion/challenger on tonight's split, both
   models in model_runs;
4. 1998-04-20 once more (a backfill after a later night): its tables are reproduced exactly.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.config import PROJECT_ROOT
from recsys.datasets.embedded import ml100k_path
from recsys.datasets.replay import replay
from tests.conftest import config_with_lake

# Four DAG runs of about 2, 6, 6 and 5 minutes on two cores (each Spark stage is a fresh
# spark-submit JVM): the module fixture needs more than the suite's per-test timeout.
pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.timeout(3000)]

START = dt.date(1998, 4, 16)
NIGHT_1, NIGHT_2 = dt.date(1998, 4, 20), dt.date(1998, 4, 21)
OVERRIDES = {
    "model.hidden_size": "16",
    "model.n_layers": "1",
    "train.epochs": "1",
    "train.refresh_epochs": "1",
    "train.batch_size": "256",
    "orchestration.retries": "0",
}


def environment(tmp: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RECSYS__", "AIRFLOW", "PYSPARK_SUBMIT_ARGS"))
    }
    env.update(
        AIRFLOW_HOME=str(tmp / "airflow_home"),
        AIRFLOW__CORE__DAGS_FOLDER=str(PROJECT_ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW_CONN_SPARK_RECSYS=json.dumps({"conn_type": "spark", "host": "local[2]"}),
        RECSYS_PROFILE="local",
        RECSYS__LAKE__ROOT=str(tmp / "lake"),
        RECSYS__TRAIN__MODELS_DIR=str(tmp / "models"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    env.update({"RECSYS__" + key.upper().replace(".", "__", 1): value for key, value in OVERRIDES.items()})
    return env


def airflow(env: dict[str, str], *args: str, log: Path) -> int:
    with log.open("w") as out:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), *args],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1500,
            check=False,
        )
    return done.returncode


def content_hash(spark, path: str, where: str, drop: tuple[str, ...] = ()) -> str:
    frame = spark.read.format("delta").load(path).where(where).drop(*drop)
    rows = sorted(str(tuple(row)) for row in frame.select(*sorted(frame.columns)).collect())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def sequences_as_of(spark, config, day: dt.date) -> str:
    from recsys.asof import as_of_spark

    frame = as_of_spark(spark, config.table_path("sequences"), day, ["user_id"]).drop("valid_from")
    rows = sorted(str(tuple(row)) for row in frame.select(*sorted(frame.columns)).collect())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


@pytest.fixture(scope="module")
def nights(tmp_path_factory, spark):
    tmp = tmp_path_factory.mktemp("dag")
    env = environment(tmp)
    config = config_with_lake(
        tmp / "lake", f"train.models_dir={tmp / 'models'}", *(f"{k}={v}" for k, v in OVERRIDES.items())
    )
    landing = tmp / "lake" / "landing" / "ratings"
    replay(ml100k_path(), "recbole-inter", landing, start=START, until=NIGHT_2)
    assert airflow(env, "db", "migrate", log=tmp / "migrate.log") == 0
    assert airflow(env, "pools", "set", "gpu", "1", "one GPU", log=tmp / "pool.log") == 0

    # 1. A collapsed drop (its header and one rating) for the first night.
    planted = landing / NIGHT_1.isoformat() / "ml-100k.inter"
    original = planted.read_bytes()
    planted.write_bytes(b"\n".join(original.split(b"\n")[:2]) + b"\n")
    runs = {"bad": airflow(env, "dags", "test", "recsys_nightly", NIGHT_1.isoformat(), log=tmp / "bad.log")}
    bad_recommendations = (tmp / "lake" / "recommendations").exists()
    bad_model_steps = (tmp / "models" / "nights").exists()
    bad_ledger = {
        (str(row.drop_date), row.status)
        for row in spark.read.format("delta").load(config.table_path("ingest_ledger")).collect()
    }
    # 2. The feed re-delivers the drop whole: the same night again.
    planted.write_bytes(original)
    runs["night_1"] = airflow(env, "dags", "test", "recsys_nightly", NIGHT_1.isoformat(), log=tmp / "n1.log")
    where_1 = f"run_date = DATE'{NIGHT_1}'"
    first = {
        "recommendations": content_hash(spark, config.table_path("recommendations"), where_1),
        "model_runs": content_hash(spark, config.table_path("model_runs"), where_1, drop=("input_versions",)),
        "sequences": sequences_as_of(spark, config, NIGHT_1),
    }
    champions_1 = json.loads((tmp / "models" / "champions" / f"{NIGHT_1}.json").read_text())
    # 3. The next night: a warm start.
    runs["night_2"] = airflow(env, "dags", "test", "recsys_nightly", NIGHT_2.isoformat(), log=tmp / "n2.log")
    # 4. A backfill of the first night after the second.
    runs["backfill"] = airflow(env, "dags", "test", "recsys_nightly", NIGHT_1.isoformat(), log=tmp / "bf.log")
    again = {
        "recommendations": content_hash(spark, config.table_path("recommendations"), where_1),
        "model_runs": content_hash(spark, config.table_path("model_runs"), where_1, drop=("input_versions",)),
        "sequences": sequences_as_of(spark, config, NIGHT_1),
    }
    yield {
        "tmp": tmp,
        "config": config,
        "runs": runs,
        "bad_recommendations": bad_recommendations,
        "bad_model_steps": bad_model_steps,
        "bad_ledger": bad_ledger,
        "first": first,
        "again": again,
        "champions_1": champions_1,
    }
    shutil.rmtree(tmp, ignore_errors=True)


def night_step(tmp: Path, day: dt.date, step: str) -> dict:
    return json.loads((tmp / "models" / "nights" / day.isoformat() / f"{step}.json").read_text())


def test_a_collapsed_drop_fails_the_ratings_gate_and_publishes_nothing(nights, spark):
    log = (nights["tmp"] / "bad.log").read_text(errors="replace")
    assert nights["runs"]["bad"] != 0 or "state=failed" in log
    assert "GateError" in log and "1998-04-20" in log
    assert not nights["bad_recommendations"]
    # Nothing after the gate ran: no model step wrote its record, and the drop is still only
    # ingested (so the next night retries it), as is every drop of that night.
    assert not nights["bad_model_steps"]
    assert {status for _, status in nights["bad_ledger"]} == {"ingested"}
    assert ("1998-04-20", "ingested") in nights["bad_ledger"]


def test_the_first_good_night_trains_from_scratch_and_publishes_a_gated_partition(nights, spark):
    assert nights["runs"]["night_1"] == 0, (nights["tmp"] / "n1.log").read_text()[-5000:]
    config, tmp = nights["config"], nights["tmp"]
    planned = night_step(tmp, NIGHT_1, "train")
    assert planned["plan"] == {"mode": "full", "reason": "no champion yet"}
    assert nights["champions_1"]["version"] == planned["challenger"]
    gate = json.loads(
        (tmp / "lake" / "_validation" / NIGHT_1.isoformat() / "recommendations.summary.json").read_text()
    )
    assert gate["success"] is True
    published = spark.read.format("delta").load(config.table_path("recommendations"))
    tonight = published.where(f"run_date = DATE'{NIGHT_1}'")
    assert tonight.select("user_id").distinct().count() == night_step(tmp, NIGHT_1, "score")["users"]
    ledger = spark.read.format("delta").load(config.table_path("ingest_ledger"))
    assert {row.status for row in ledger.where(f"drop_date <= DATE'{NIGHT_1}'").collect()} == {"applied"}


def test_the_next_night_warm_starts_and_records_champion_and_challenger(nights, spark):
    assert nights["runs"]["night_2"] == 0, (nights["tmp"] / "n2.log").read_text()[-5000:]
    config, tmp = nights["config"], nights["tmp"]
    planned = night_step(tmp, NIGHT_2, "train")
    champion = nights["champions_1"]["version"]
    assert planned["plan"] == {"mode": "warm", "reason": f"warm start from {champion}"}
    assert planned["champion"] == champion and planned["challenger"] not in (None, champion)
    decided = night_step(tmp, NIGHT_2, "decide")
    evaluated = night_step(tmp, NIGHT_2, "evaluate")["models"]
    assert set(evaluated) == {"champion", "challenger"}
    runs = (
        spark.read.format("delta").load(config.table_path("model_runs")).where(f"run_date = DATE'{NIGHT_2}'")
    )
    rows = {row.role: row for row in runs.collect()}
    assert set(rows) == {"champion", "challenger"}
    assert rows["challenger"].training_mode == "warm" and rows["challenger"].trained_tonight
    assert rows["challenger"].model_version == planned["challenger"]
    assert [row.model_version for row in rows.values() if row.scored] == [decided["champion"]]
    for row in rows.values():
        assert row.decision == decided["reason"]
        assert "valid.production.ndcg@10" in row.metrics
    recommendations = spark.read.format("delta").load(config.table_path("recommendations"))
    versions = {r.model_version for r in recommendations.where(f"run_date = DATE'{NIGHT_2}'").collect()}
    assert versions == {decided["champion"]}


def test_a_backfill_of_a_past_night_reproduces_its_tables(nights):
    assert nights["runs"]["backfill"] == 0, (nights["tmp"] / "bf.log").read_text()[-5000:]
    assert nights["again"] == nights["first"]
    # It started from the champion that night started from (none): the same full training, reused.
    planned = night_step(nights["tmp"], NIGHT_1, "train")
    assert planned["plan"]["mode"] == "full" and planned["trained_tonight"] is False


def test_the_report_on_the_published_asset_compares_tonight_with_the_previous_run(nights):
    from orchestration.reports import recommendations_report

    report = recommendations_report(nights["config"], NIGHT_2)
    (coverage,) = report["coverage"]
    (churn,) = report["run_vs_previous_summary"]
    assert coverage["run_date"].startswith(NIGHT_2.isoformat()) and 0 < coverage["coverage_at_10"] <= 1
    assert churn["previous_run_date"].startswith(NIGHT_1.isoformat())
    assert churn["users_compared"] > 0 and 0 <= churn["mean_overlap_at_10"] <= 1
    saved = nights["tmp"] / "lake" / "_reports" / NIGHT_2.isoformat() / "recommendations.json"
    assert json.loads(saved.read_text()) == report


def test_the_night_summary_that_make_run_prints(nights, capsys):
    from orchestration.nightly import main

    tmp = nights["tmp"]
    lake, models = f"lake.root={tmp / 'lake'}", f"train.models_dir={tmp / 'models'}"
    main(["--run-date", NIGHT_2.isoformat(), "--set", lake, "--set", models])
    out = capsys.readouterr().out
    decided = night_step(tmp, NIGHT_2, "decide")
    assert "Training: warm (warm start from" in out
    assert f"Champion/challenger: {decided['champion']} scores tonight" in out
    assert "'s top 10 (docs/sql/user_top10.sql):" in out and "Coverage of 1998-04-21" in out
    assert "Tonight's drops 1998-04-21..1998-04-21 (1)" in out
