"""The nightly DAG: the landing zone's drops in, tonight's recommendations table out.

Thin by design: the stages are the job files of ``spark_jobs/`` (spark-submit) and the steps of
``orchestration/model_tasks.py`` (a venv process or a GPU pod); how each runs comes from the
profile (:mod:`orchestration.operators`). Nothing heavy is imported at parse time.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, task

from orchestration.operators import (
    dag_config,
    default_args,
    model_step,
    recommendations_asset,
    spark_stage,
    webhook_notifier,
)

CONFIG = dag_config()
RECOMMENDATIONS = recommendations_asset(CONFIG)

DOC = """
### recsys_nightly

One night of the batch recommender for the run date (the logical date, `{{ ds }}`).

1. **ingest**: the landing zone's drops dated <= the run date that the lake lacks or that
   changed, into `ratings_bronze` / `ratings_quarantine` (ingest ledger).
2. **ratings_gate**: row and per-drop expectations; a failing drop stops the night before any
   as-of state changes.
3. **silver -> sessions -> sequences**: versioned as-of state, only the keys tonight touched.
   **drift_input** beside them: tonight's new ratings against a trailing window (PSI, KS,
   new users and items) into `drift_reports`; a breach makes tonight's training a full retrain.
4. **sequences** are gated (`expectations/sequences.json`) before they are published; the model
   steps read the version the gate passed. **items** (titles and genres) beside the chain.
5. **train**: the refresh policy: a warm start from the champion, a full retrain (schedule,
   config change, no champion, drift, or the `full_retrain` param), or nothing when no event
   arrived. A new challenger is logged to MLflow and registered.
6. **evaluate**: champion and challenger on tonight's split.
7. **champion_challenger**: promote the challenger unless its production NDCG@10 is worse than
   the champion's beyond the tolerance (or go back one promotion: the `rollback` param);
   records the champion after tonight and moves the registry's `champion` / `challenger` aliases.
8. **score** (GPU pool; the champion loaded from the MLflow registry by alias) and **publish**:
   the recommendations gate, then the date's partitions of `recommendations` and `model_runs`.
   SS4Rec scores from every user's recurrent state in `user_states`: only users whose window
   changed are advanced or re-encoded, the others redo their last step at tonight's cut-off
   (`scoring.state_mode`; the `full_rescore` param re-encodes everyone).
9. **drift_output**: tonight's lists against the previous run's (score PSI/KS, overlap@10,
   catalogue coverage) into `drift_reports`.
10. **report**: the night's HTML report with its plots, `<lake>/_reports/<run date>/report.html`.
11. **notify**: the night's summary with the report's path, a webhook post when a challenger
   was promoted or a drift measure breached, and the `recsys.recommendations` asset event
   (extra `run_date`) that schedules `recsys_report`.

Backfill: `airflow backfill create --dag-id recsys_nightly --from-date ... --to-date ...`, or
`make backfill FROM=... TO=...` on the local SQLite profile. Every task reads and writes its run
date only, so a rerun reproduces the date's tables.
"""

with DAG(
    dag_id="recsys_nightly",
    description="ingest -> gates -> as-of state -> train/refresh -> champion/challenger -> score -> publish",
    schedule="@daily",
    start_date=dt.datetime(1997, 9, 20, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(CONFIG),
    params={
        "full_retrain": Param(
            False, type="boolean", description="train from scratch whatever the policy says"
        ),
        "drift_breach": Param(
            False,
            type="boolean",
            description="the drift hook by hand: a full retrain as if drift_input had found a breach",
        ),
        "rollback": Param(
            False,
            type="boolean",
            description="champion/challenger: go back to the champion before the latest promotion "
            "(the MLflow `champion` alias moves back; the night rescored with it)",
        ),
        "full_rescore": Param(
            False,
            type="boolean",
            description="score every user from their whole window, storing no state from earlier "
            "nights (scoring.state_mode full for this run)",
        ),
        "model": Param(
            CONFIG.model.name,
            type="string",
            enum=["ss4rec", "ss4rec_s5_only", "ss4rec_mamba_only", "sasrec", "ncf", "pop"],
            description="model.name to train and score tonight",
        ),
    },
    tags=["recsys", "nightly", "spark", "gpu"],
    doc_md=DOC,
) as dag:
    ingest = spark_stage(
        CONFIG, "ingest", "ingest", doc_md="New or changed drops <= the run date into bronze and quarantine."
    )
    ratings_gate = spark_stage(
        CONFIG,
        "ratings_gate",
        "validate",
        "--suite",
        "ratings",
        doc_md="expectations/ratings.json on tonight's rows and ratings_drops.json per drop.",
    )
    silver = spark_stage(CONFIG, "silver", "silver", doc_md="Versioned ratings_silver + run and drop stats.")
    drift_input = spark_stage(
        CONFIG,
        "drift_input",
        "drift",
        "--stage",
        "input",
        doc_md="Tonight's new ratings against a trailing window into drift_reports; a breach retrains.",
    )
    sessions = spark_stage(CONFIG, "sessions", "sessionize", doc_md="Sessions of the users tonight touched.")
    sequences = spark_stage(
        CONFIG,
        "sequences",
        "sequences",
        doc_md="Sequences + leave-one-out split, gated (expectations/sequences.json) before publishing.",
    )
    items = spark_stage(CONFIG, "items", "items", doc_md="Titles, years and genres from the movie file.")
    train = model_step(
        CONFIG,
        "train",
        "train",
        "{{ '--full-retrain' if params.full_retrain else '' }}",
        "{{ '--drift-breach' if params.drift_breach else '' }}",
        gpu=True,
        doc_md="Refresh policy (orchestration/policy.py): warm start, full retrain, or skip.",
    )
    evaluate = model_step(
        CONFIG, "evaluate", "evaluate", gpu=True, doc_md="Champion and challenger on tonight's split."
    )
    champion_challenger = model_step(
        CONFIG,
        "champion_challenger",
        "decide",
        "{{ '--rollback' if params.rollback else '' }}",
        gpu=False,
        doc_md="Promote the challenger unless worse than the champion beyond the tolerance; "
        "moves the MLflow registry's champion and challenger aliases.",
    )
    drift_output = spark_stage(
        CONFIG,
        "drift_output",
        "drift",
        "--stage",
        "output",
        doc_md="Tonight's recommendations against the previous run's (scores, overlap@10, coverage).",
    )
    score = model_step(
        CONFIG,
        "score",
        "score",
        "{{ '--full-rescore' if params.full_rescore else '' }}",
        gpu=True,
        doc_md="Tonight's champion scores every user: SS4Rec from the stored user states "
        "(model/user_state.py), advancing only what changed, or in full (the `full_rescore` param).",
    )
    publish = spark_stage(
        CONFIG,
        "publish",
        "publish_recommendations",
        doc_md="The recommendations gate, then the date's recommendations and model_runs partitions.",
    )

    @task(doc_md="The night's HTML report (plots embedded): <lake>/_reports/<D>/report.html.")
    def report(ds: str | None = None) -> str:
        from orchestration.night_report import write_report

        return str(write_report(CONFIG, dt.date.fromisoformat(ds)))

    @task(
        outlets=[RECOMMENDATIONS],
        doc_md="The night's summary and report link; a webhook post when a challenger was promoted or drift "
        "breached; "
        "the asset event (extra: run_date) that schedules the downstream report.",
    )
    def notify(report_path: str, ds: str | None = None, outlet_events=None) -> dict:
        import logging

        from orchestration.model_tasks import read_step, summarise_drift

        run_date = dt.date.fromisoformat(ds)
        decided = read_step(CONFIG, run_date, "decide")
        scored = read_step(CONFIG, run_date, "score")
        drift = summarise_drift(CONFIG, run_date)
        summary = {
            "run_date": ds,
            "champion": decided["champion"],
            "promoted": decided["promoted"],
            "reason": decided["reason"],
            "users": scored["users"],
            "rows": scored["rows"],
            "drift": drift,
            "report": report_path,
        }
        logging.getLogger(__name__).info("the night's summary: %s", summary)
        messages = []
        if decided["promoted"]:
            messages.append(
                f"recsys {ds}: {decided['champion']} promoted to champion ({decided['reason']}); "
                f"{scored['rows']:,} recommendations for {scored['users']:,} users published"
            )
        if drift["breached"]:
            messages.append(f"recsys {ds}: drift breach of {', '.join(drift['breached'])}")
        for text in messages:
            from airflow.sdk import get_current_context

            notifier = webhook_notifier(CONFIG, f"{text} (report: {report_path})")
            if notifier is not None:
                notifier.notify(get_current_context())
        outlet_events[RECOMMENDATIONS].extra = {"run_date": ds, "rows": scored["rows"]}
        return summary

    ingest >> ratings_gate >> silver >> sessions >> sequences
    silver >> drift_input >> train
    sequences >> train >> evaluate >> champion_challenger >> score >> publish
    ingest >> items >> publish
    page = report()
    publish >> drift_output >> page
    notify(page)
