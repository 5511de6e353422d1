"""The hand-over between scoring (no JVM) and publishing (Spark): a staged directory per run date.

``<lake>/<scoring.staging_dir>/recommendations/<run_date>/`` holds ``recommendations.parquet``
(the rows), ``catalogue.parquet`` (the item ids the model scores) and ``manifest.json`` (model
version, counts, the versions of the tables scoring read, the ``model_runs`` rows). Scoring
writes it (:mod:`model.score`), the publish job reads it
(:mod:`spark_jobs.publish_recommendations`); both agree on it through this module.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from recsys.config import Config, join_uri

RECOMMENDATIONS_FILE = "recommendations.parquet"
CATALOGUE_FILE = "catalogue.parquet"
MANIFEST_FILE = "manifest.json"


def staging_dir(config: Config, run_date: dt.date) -> str:
    """Where scoring stages the run date's recommendations for the publish job."""
    uri = config.project_path(config.lake.root)
    for part in (config.scoring.staging_dir, "recommendations", run_date.isoformat()):
        uri = join_uri(uri, part)
    return uri


def read_manifest(config: Config, run_date: dt.date) -> dict[str, Any]:
    """The staged manifest of ``run_date``; an error that says to run scoring when it is missing."""
    path = Path(staging_dir(config, run_date)) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no staged recommendations for {run_date}; run model.score first")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("run_date") != run_date.isoformat():
        raise ValueError(f"{path}: the staged manifest is for {manifest.get('run_date')}, not {run_date}")
    return manifest
