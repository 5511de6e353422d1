"""Reports over the published tables, for the DAGs scheduled on them."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

from recsys.config import Config, join_uri

log = logging.getLogger(__name__)

REPORTS_DIR = "_reports"


def recommendations_report(config: Config, run_date: str | dt.date) -> dict[str, Any]:
    """Coverage and churn of ``run_date`` (docs/sql queries in DuckDB), written beside the lake."""
    from model.checkpoint import save_json
    from recsys.sql import duckdb_query

    run_date = dt.date.fromisoformat(str(run_date))
    tables = {name: config.table_path(name) for name in ("recommendations", "items", "model_runs")}
    report = {
        name: json.loads(
            duckdb_query(tables, name, run_date=run_date).to_json(orient="records", date_format="iso")
        )
        for name in ("coverage", "run_vs_previous_summary")
    }
    path = Path(join_uri(config.project_path(config.lake.root), REPORTS_DIR)) / run_date.isoformat()
    save_json(report, path / "recommendations.json")
    log.info("report of %s: %s", run_date, report)
    return report
