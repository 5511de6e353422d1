"""Data-aware scheduling: a report DAG that runs whenever the nightly DAG publishes recommendations."""

from __future__ import annotations

from airflow.sdk import DAG, task

from orchestration.operators import dag_config, default_args, recommendations_asset

CONFIG = dag_config()

with DAG(
    dag_id="recsys_report",
    description="tonight's coverage and churn against the previous run, on each published run",
    schedule=[recommendations_asset(CONFIG)],
    catchup=False,
    default_args=default_args(CONFIG),
    tags=["recsys", "report"],
    doc_md="""
### recsys_report

Scheduled on the `recsys.recommendations` asset: each time `recsys_nightly` publishes a run
date, the documented queries `docs/sql/coverage.sql` and `docs/sql/run_vs_previous_summary.sql`
run over that date (DuckDB on the Delta tables, no Spark) and their rows are written to
`<lake>/_reports/<run_date>/recommendations.json` and the task log.
""",
) as dag:

    @task(doc_md="Coverage and churn of the run date named by the triggering asset event.")
    def coverage_and_churn(triggering_asset_events=None) -> dict:
        from orchestration.reports import recommendations_report

        events = [event for events in triggering_asset_events.values() for event in events]
        run_dates = sorted({event.extra["run_date"] for event in events if "run_date" in event.extra})
        if not run_dates:
            raise ValueError(f"no triggering asset event names a run_date: {events}")
        return {run_date: recommendations_report(CONFIG, run_date) for run_date in run_dates}

    coverage_and_churn()
