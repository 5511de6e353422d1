"""The recsys_nightly DAG end to end (``airflow dags test``, real spark-submit) on ML-100K replayed.

One lake; two DAG runs and nights outside Airflow, in order (the module fixture):

1. 1998-04-20 under Airflow with a planted collapsed drop: the ratings gate fails the run,
   nothing after it runs, no recommendations partition appears, the drop stays ``ingested``;
2. the drop restored, 1998-04-20 again: a full training (no champion yet), a published
   recommendations partition that passed its gate, the champion recorded;
3. 1998-04-21: a warm start from that champion, champion/challenger on tonight's split, both
   models in model_runs;
4. 1998-04-22 under Airflow, its drop drifted (600 one-star ratings planted): drift_input
   breaches, so the night retrains in full instead of warm-starting, and notify reports it;
5. a backfill of the last two nights (04-21, 04-22): the tables of each are reproduced
   exactly (content hashes; the drift values within a tolerance), the model steps start from
   the champion each night started from.

Steps 2, 3 and 5 run what the DAG's tasks run, outside Airflow (:func:`night_outside_airflow`):
the Spark stages' job functions in this process, on its warm SparkSession, and the model steps
as the very commands the DAG's BashOperators run. A DAG run costs 4-6 minutes here, most of it
the fresh JVM of each Spark stage; more of them would put the suite past its 30 minutes. That
the DAG and the jobs write the same tables is part of what step 5 checks: night 3 was the DAG's.
"""

from __future__ import annotations

import datetime as dt
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

# Two DAG runs of about 2 and 5 minutes on two cores (each Spark stage is a fresh spark-submit
# JVM) and five nights outside Airflow of about a minute: more than the suite's per-test timeout.
pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.timeout(2400)]

START = dt.date(1998, 4, 16)
NIGHT_1, NIGHT_2, NIGHT_3 = dt.date(1998, 4, 20), dt.date(1998, 4, 21), dt.date(1998, 4, 22)
NIGHTS = (NIGHT_1, NIGHT_2, NIGHT_3)
# The backfill reruns the last two: a warm-started night that is no longer the newest, and the
# newest (a full retrain, from drift); a third rerun would cost the suite three more minutes.
BACKFILLED = (NIGHT_2, NIGHT_3)
OVERRIDES = {
    "model.hidden_size": "16",
    "model.n_layers": "1",
    "train.epochs": "1",
    "train.refresh_epochs": "1",
    "train.batch_size": "256",
    "orchestration.retries": "0",
}


# Object-store credentials as a deployment gives them (environment): none may reach a log.
PLANTED_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIA" + "Q7RECSYSPLANTED2",
    "AWS_SECRET_ACCESS_KEY": "planted/" + "Xk29vQm41LrTzW8nYp3HcJ5dFa7sBg0eUiOq",
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
        **PLANTED_CREDENTIALS,
    )
    env.update({"RECSYS__" + key.upper().replace(".", "__", 1): value for key, value in OVERRIDES.items()})
    return env


def run_logged(command: list[str], env: dict[str, str], log: Path, timeout: int) -> int:
    """Run ``command`` from the project root, its output appended to ``log``; its exit status."""
    with log.open("a") as out:
        done = subprocess.run(
            command,
            env=env,
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    return done.returncode


def airflow(env: dict[str, str], *args: str, log: Path) -> int:
    return run_logged([str(Path(sys.executable).parent / "airflow"), *args], env, log, timeout=1500)


def night_outside_airflow(spark, config, env: dict[str, str], day: dt.date, log: Path) -> None:
    """The DAG's tasks for ``day`` in the DAG's order, outside Airflow.

    Spark stages: the job functions each task's spark-submit runs (``main`` -> ``run``), here on
    this process's SparkSession. Model steps: the command line of each BashOperator, rendered
    for ``day`` with the DAG's default params, in a process of this venv.
    """
    from orchestration.night_report import write_report
    from orchestration.operators import RUN_DATE, model_command
    from spark_jobs import (
        drift,
        ingest,
        items,
        publish_recommendations,
        sequences,
        sessionize,
        silver,
        validate,
    )
    from spark_jobs.common import RunContext

    ctx = RunContext.for_date(config, day)
    ingest.run(spark, ctx)
    validate.run_ratings_gate(spark, ctx)
    items.run(ctx)
    silver.run(spark, ctx)
    drift.run(spark, ctx, drift.INPUT)
    sessionize.run(spark, ctx)
    sequences.run(spark, ctx)
    for step in ("train", "evaluate", "decide", "score"):
        rendered = [
            arg.replace(RUN_DATE, day.isoformat()).replace("{{ params.model }}", config.model.name)
            for arg in model_command(step)
        ]
        status = run_logged([sys.executable, "-m", *rendered], env, log, timeout=600)
        assert status == 0, f"{step} {day} exited {status}: " + log.read_text()[-3000:]
    publish_recommendations.run(spark, ctx)
    drift.run(spark, ctx, drift.OUTPUT)
    write_report(config, day)


def content_hash(frame, drop: tuple[str, ...] = ()) -> tuple[int, str]:
    """(rows, an order-free hash of every row): equal for equal multisets of rows.

    Computed in Spark: the sum of each row's 64-bit hash over all its columns (maps as their
    sorted entries), as an exact decimal.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import MapType

    frame = frame.drop(*drop)
    columns = [
        F.array_sort(F.map_entries(field.name)) if isinstance(field.dataType, MapType) else F.col(field.name)
        for field in sorted(frame.schema.fields, key=lambda f: f.name)
    ]
    row = frame.select(
        F.count(F.lit(1)).alias("rows"), F.sum(F.xxhash64(*columns).cast("decimal(38,0)")).alias("hash")
    ).first()
    return int(row["rows"]), str(row["hash"])


def night_tables(spark, config, day: dt.date) -> dict[str, tuple[int, str]]:
    """Content hashes of what the night of ``day`` published: its partitions and its as-of state."""
    from recsys.asof import AS_OF_KEYS, as_of_spark

    def partition(table: str):
        return spark.read.format("delta").load(config.table_path(table)).where(f"run_date = DATE'{day}'")

    hashes = {
        "recommendations": content_hash(partition("recommendations")),
        # input_versions are the Delta versions the night read: a rerun reads later versions
        # of the same content.
        "model_runs": content_hash(partition("model_runs"), drop=("input_versions",)),
        # run_id names the attempt (Airflow's run id under the DAG).
        "ratings_run_stats": content_hash(partition("ratings_run_stats"), drop=("run_id",)),
        "items": content_hash(partition("items")),
        # The values (and their detail) are compared apart, with a tolerance (drift_values).
        "drift_reports": content_hash(partition("drift_reports"), drop=("run_id", "value", "detail")),
    }
    for table, keys in AS_OF_KEYS.items():
        hashes[table] = content_hash(as_of_spark(spark, config.table_path(table), day, list(keys)))
    return hashes


def drift_values(spark, config, day: dt.date) -> dict[tuple[str, str, str], float | None]:
    """The night's drift findings. Approximate quantiles and float sums follow the Spark
    session's partitioning: the DAG's spark-submit and this process's session differ slightly."""
    rows = (
        spark.read.format("delta").load(config.table_path("drift_reports")).where(f"run_date = DATE'{day}'")
    )
    return {(r.stage, r.measure, r.statistic): r.value for r in rows.collect()}


@pytest.fixture(scope="module")
def nights(tmp_path_factory, spark):
    tmp = tmp_path_factory.mktemp("dag")
    env = environment(tmp)
    config = config_with_lake(
        tmp / "lake", f"train.models_dir={tmp / 'models'}", *(f"{k}={v}" for k, v in OVERRIDES.items())
    )
    landing = tmp / "lake" / "landing" / "ratings"
    replay(ml100k_path(), "recbole-inter", landing, start=START, until=NIGHT_3)
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
    # 2. The feed re-delivers the drop whole: the same night again, outside Airflow.
    planted.write_bytes(original)
    night_outside_airflow(spark, config, env, NIGHT_1, tmp / "n1.log")
    first = {NIGHT_1: night_tables(spark, config, NIGHT_1)}
    champions_1 = json.loads((tmp / "models" / "champions" / f"{NIGHT_1}.json").read_text())
    # 3. The next night (a warm start), outside Airflow.
    night_outside_airflow(spark, config, env, NIGHT_2, tmp / f"{NIGHT_2}.log")
    first[NIGHT_2] = night_tables(spark, config, NIGHT_2)
    # 4. The third under Airflow, its drop drifted: the input drift breaches and it retrains in full.
    plant_one_star_ratings(landing / NIGHT_3.isoformat() / "ml-100k.inter", NIGHT_3, DRIFTED_RATINGS)
    runs["night_3"] = airflow(env, "dags", "test", "recsys_nightly", NIGHT_3.isoformat(), log=tmp / "n3.log")
    first[NIGHT_3] = night_tables(spark, config, NIGHT_3) if runs["night_3"] == 0 else None
    first_drift = {day: drift_values(spark, config, day) for day in BACKFILLED}
    # 5. Then a backfill of the last two nights.
    steps = {
        day: {step: night_step(tmp, day, step) for step in ("train", "decide", "score")} for day in NIGHTS
    }
    champions = {day: (tmp / "models" / "champions" / f"{day}.json").read_text() for day in NIGHTS}
    again, again_drift, backfill_steps = {}, {}, {}
    for day in BACKFILLED:
        night_outside_airflow(spark, config, env, day, tmp / f"backfill-{day}.log")
        again[day] = night_tables(spark, config, day)
        again_drift[day] = drift_values(spark, config, day)
        backfill_steps[day] = {step: night_step(tmp, day, step) for step in ("train", "decide", "score")}
    yield {
        "tmp": tmp,
        "config": config,
        "runs": runs,
        "bad_recommendations": bad_recommendations,
        "bad_model_steps": bad_model_steps,
        "bad_ledger": bad_ledger,
        "first": first,
        "again": again,
        "first_drift": first_drift,
        "again_drift": again_drift,
        "steps": steps,
        "backfill_steps": backfill_steps,
        "champions": champions,
        "champions_after": {
            day: (tmp / "models" / "champions" / f"{day}.json").read_text() for day in NIGHTS
        },
        "champions_1": champions_1,
    }
    shutil.rmtree(tmp, ignore_errors=True)


# ML-100K's 1998-04-22 holds 536 ratings: with these one-star ratings tonight's rating values
# breach (PSI far above 0.25) and the night is judged (over drift.min_rows = 1000).
DRIFTED_RATINGS = 600


def plant_one_star_ratings(drop: Path, day: dt.date, count: int) -> None:
    """Append ``count`` one-star ratings of known users and items, dated ``day``, to a drop file."""
    start = int(dt.datetime.combine(day, dt.time(1), tzinfo=dt.UTC).timestamp())
    lines = [f"{1 + n % 943}\t{1 + (n * 7) % 1682}\t1\t{start + n}" for n in range(count)]
    with drop.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


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
    # Each model is a version of the MLflow registered model; the scored one holds the champion alias.
    assert rows["challenger"].registry_version == planned["registered_version"]
    assert {row.alias for row in rows.values() if row.scored} == {"champion"}
    scored = nights["steps"][NIGHT_2]["score"]  # the newest night then: loaded by alias
    assert scored["model_uri"] == f"models:/{config.mlflow.registered_model}@champion"
    assert [row.model_version for row in rows.values() if row.scored] == [decided["champion"]]
    for row in rows.values():
        assert row.decision == decided["reason"]
        assert "valid.production.ndcg@10" in row.metrics
    recommendations = spark.read.format("delta").load(config.table_path("recommendations"))
    versions = {r.model_version for r in recommendations.where(f"run_date = DATE'{NIGHT_2}'").collect()}
    assert versions == {decided["champion"]}
    # The scored row judges night 1's recommendations on night 2's new keys; the users counted
    # are those with a new key in night 2's drops, split by whether night 1 recommended to them.
    from pyspark.sql import functions as F

    (scored_row,) = [row for row in rows.values() if row.scored]
    realised = {
        k.removeprefix("realised."): v for k, v in scored_row.metrics.items() if k.startswith("realised.")
    }
    drops = (
        (
            spark.read.format("delta")
            .load(config.table_path("ratings_run_stats"))
            .where(f"run_date = DATE'{NIGHT_2}'")
        )
        .first()
        .drops
    )
    arrived = (
        spark.read.format("delta")
        .load(config.table_path("ratings_silver"))
        .where(F.col("valid_from").isin(drops) & (F.col("previous_copies") == 0))
        .select("user_id")
        .distinct()
    )
    night_1 = recommendations.where(f"run_date = DATE'{NIGHT_1}'").select("user_id").distinct()
    judged = arrived.join(night_1, "user_id").count()
    assert realised["users"] == judged > 0
    assert realised["no_recommendation"] == arrived.count() - judged
    assert 0.0 <= realised["ndcg@10"] <= realised["hr@10"] <= 1.0
    assert not any(k.startswith("realised.") for row in rows.values() if not row.scored for k in row.metrics)


def test_a_backfill_of_two_nights_reproduces_their_tables(nights):
    assert all(nights["first"][day] is not None for day in NIGHTS)
    for day in BACKFILLED:
        assert nights["again"][day] == nights["first"][day], day
        first_drift, again_drift = nights["first_drift"][day], nights["again_drift"][day]
        assert set(again_drift) == set(first_drift) and len(first_drift) >= 13, day
        for key, value in first_drift.items():
            if value is None:
                assert again_drift[key] is None, (day, key)
            else:
                assert again_drift[key] == pytest.approx(value, rel=0.05, abs=0.005), (day, key)
        assert all(rows > 0 for rows, _ in nights["first"][day].values()), nights["first"][day]
    # Each night started from the champion it started from the first time: the same plan and
    # challenger (already registered: reused, not retrained), the same decision, the same
    # champion records.
    for day in BACKFILLED:
        before, after = nights["steps"][day], nights["backfill_steps"][day]
        assert after["train"]["plan"] == before["train"]["plan"], day
        assert after["train"]["challenger"] == before["train"]["challenger"], day
        assert after["train"]["trained_tonight"] is False, day
        moved = ("aliases_moved",)
        assert {k: v for k, v in after["decide"].items() if k not in moved} == {
            k: v for k, v in before["decide"].items() if k not in moved
        }, day
    # The MLflow aliases moved on every night of the first pass (each the newest then); in the
    # backfill only on the newest night, so they end where the newest night put them.
    assert [nights["steps"][day]["decide"]["aliases_moved"] for day in NIGHTS] == [True, True, True]
    assert [nights["backfill_steps"][day]["decide"]["aliases_moved"] for day in BACKFILLED] == [False, True]
    from model.tracking import CHAMPION, VERSION_TAG, alias_version, client

    config = nights["config"]
    alias = alias_version(client(config), config, CHAMPION)
    assert alias.tags[VERSION_TAG] == nights["steps"][NIGHT_3]["decide"]["champion"]
    # A backfilled night scores with its own champion: by alias when the alias names it, else by
    # its version number (the alias stays the newest night's).
    name = config.mlflow.registered_model
    for day in BACKFILLED:
        decided = nights["backfill_steps"][day]["decide"]
        number = decided["registered"][decided["champion"]]
        expected = f"models:/{name}@champion" if number == str(alias.version) else f"models:/{name}/{number}"
        assert nights["backfill_steps"][day]["score"]["model_uri"] == expected, day
    assert nights["steps"][NIGHT_1]["train"]["plan"]["mode"] == "full"
    assert nights["steps"][NIGHT_2]["train"]["plan"]["mode"] == "warm"
    assert nights["champions_after"] == nights["champions"]


def test_a_drifted_night_under_airflow_retrains_in_full_and_reports_the_breach(nights):
    assert nights["runs"]["night_3"] == 0
    planned = nights["steps"][NIGHT_3]["train"]
    # The night would have warm-started from last night's champion; drift_input found a breach.
    assert planned["plan"] == {"mode": "full", "reason": "drift check breached: full retrain"}
    assert "rating psi" in planned["drift_breaches"]
    assert planned["challenger"] and planned["trained_tonight"] is True
    from spark_jobs.drift import report

    (rating,) = [
        r
        for r in report(nights["config"], NIGHT_3, "input")
        if (r["measure"], r["statistic"]) == ("rating", "psi")
    ]
    assert rating["status"] == "breach" and rating["value"] > nights["config"].drift.psi_breach
    assert rating["current_rows"] >= nights["config"].drift.min_rows  # judged: the planted rows count
    # notify's summary names the breach (posted to the webhook when one is configured).
    assert "input rating psi" in (nights["tmp"] / "n3.log").read_text()


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
    assert (
        f"The night's report (open it in a browser): {tmp / 'lake' / '_reports' / NIGHT_2.isoformat()}" in out
    )


# Where the report's screenshot is kept (git-ignored; CI keeps it as an artifact).
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
PLOTS = {"accounting", "training", "models", "drift", "concentration", "trend"}


def chromium(*args: str) -> str:
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed: `make test` installs Debian's chromium package when missing"
    done = subprocess.run(
        [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_night_report_renders_in_headless_chromium_with_every_plot_drawn(nights):
    import re

    import matplotlib.image
    import numpy as np

    from orchestration.night_report import report_path

    config, tmp = nights["config"], nights["tmp"]
    # Night 3 ran under Airflow: its report task wrote the page, and notify's summary names it.
    night_3 = report_path(config, NIGHT_3)
    assert night_3.is_file() and str(night_3) in (tmp / "n3.log").read_text()
    page = report_path(config, NIGHT_2)
    text = page.read_text()
    decided = night_step(tmp, NIGHT_2, "decide")
    assert decided["champion"] in text and "Data Docs" in text
    for link in re.findall(r'<a href="([^"]+\.html)">', text):  # Data Docs pages, relative to the report
        assert (page.parent / link).resolve().is_file(), link
    dom = chromium("--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    figures = {
        name: classes
        for classes, name in re.findall(r'<figure class="plot ?([a-z ]*)" data-plot="(\w+)"', dom)
    }
    assert set(figures) == PLOTS, figures
    assert not {name: classes for name, classes in figures.items() if classes != "drawn"}
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"night_report_{NIGHT_2}.png"
    shot.unlink(missing_ok=True)
    chromium("--window-size=1200,4200", "--virtual-time-budget=10000", f"--screenshot={shot}", page.as_uri())
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (4200, 1200)
    # Drawn plots: a good part of the page is neither white nor text-thin.
    assert float(np.mean(pixels.min(axis=2) < 0.9)) > 0.05


def test_each_night_scores_from_the_stored_states_of_its_champion(nights):
    """Score reads the user states its champion stored the night before: none on the first
    night or when the champion changed (every user re-encoded), and a rerun reads the same."""
    previous = None
    for day in NIGHTS:
        scored = nights["steps"][day]["score"]
        states = scored["states"]
        encoded = scored["users"] - scored["fallback_users"]
        assert states["reuse"] + states["advance"] + states["full"] == encoded, day
        assert states["rows_written"] == states["advance"] + states["full"], day
        if scored["model_version"] != previous:
            assert states["stored_read"] == 0 and states["full"] == encoded, day
        else:
            assert states["stored_read"] > 0 and states["reuse"] > 0, day
        previous = scored["model_version"]
    for day in BACKFILLED:
        assert nights["backfill_steps"][day]["score"]["states"] == nights["steps"][day]["score"]["states"]


def test_no_secret_reaches_the_logs_of_the_nights(nights):
    """Every log of the nights (the commands' output and Airflow's task logs) is free of the planted
    object-store credentials and of anything that looks like a secret."""
    from tests.secret_patterns import find_secrets

    tmp = nights["tmp"]
    logs = sorted(tmp.glob("*.log")) + sorted((tmp / "airflow_home").rglob("*.log"))
    texts = {path: path.read_text(errors="replace") for path in logs}
    assert len(texts) >= 6 and sum(map(len, texts.values())) > 100_000  # the nights did log
    for path, text in texts.items():
        for value in PLANTED_CREDENTIALS.values():
            assert value not in text, path
        assert find_secrets(text) == [], path
