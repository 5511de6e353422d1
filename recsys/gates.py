"""A gate's verdict for a run date, as every later stage checks it (Spark jobs and model steps alike).

Each gate writes ``<lake>/<pipeline.validation_dir>/<run_date>/<suite>.summary.json``: success,
the failed expectations, counts, and, for a gate that judges a table before it is published,
``table_version``: the Delta version of the table that holds what it judged. A stage that builds
on the table reads it at that version, so it builds on nothing the gate did not see, and refuses
to start (with what to rerun) when the gate has not run, failed, or stopped before publishing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recsys.config import Config, arrow_uri, join_uri

#: The job that writes each gated table (and runs its gate first), for the messages.
RERUN = {
    "ratings": "python -m spark_jobs.validate --suite ratings",
    "sequences": "python -m spark_jobs.sequences",
}


class GateNotPassedError(RuntimeError):
    """A stage asked for a gate's pass that the run date does not have."""


def summary_uri(config: Config, run_date: dt.date, suite: str) -> str:
    """Where a gate's summary of ``run_date`` is (the results' ``.json`` and ``.html`` beside it)."""
    uri = config.project_path(config.lake.root)
    for part in (config.pipeline.validation_dir, run_date.isoformat(), f"{suite}.summary.json"):
        uri = join_uri(uri, part)
    return uri


def check_summary(summary: Mapping[str, Any] | None, suite: str, run_date: dt.date, where: str) -> None:
    """Raise :class:`GateNotPassedError` unless ``summary`` (read from ``where``) is a pass of ``suite``."""
    rerun = f"{RERUN.get(suite, 'the ' + suite + ' gate')} --run-date {run_date.isoformat()}"
    if summary is None:
        raise GateNotPassedError(
            f"the {suite} gate has not run for {run_date} ({where} is missing); run {rerun}"
        )
    if not summary.get("success"):
        failed = ", ".join(summary.get("failed", [])) or "see the results"
        results = f"{where.removesuffix('.summary.json')}.json"
        raise GateNotPassedError(
            f"the {suite} gate failed for {run_date} ({failed}); see {results}, fix the data and run {rerun}"
        )


def read_summary(uri: str) -> dict[str, Any] | None:
    """The summary JSON at ``uri`` (a path, ``file://``, or an object store's ``s3a://``), or None."""
    if "://" not in uri or uri.startswith("file://"):
        path = Path(uri.removeprefix("file://"))
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    import pyarrow.fs as pafs

    filesystem, path = pafs.FileSystem.from_uri(arrow_uri(uri))
    if filesystem.get_file_info(path).type != pafs.FileType.File:
        return None
    with filesystem.open_input_stream(path) as stream:
        return json.loads(stream.read().decode("utf-8"))


def gated_version(config: Config, run_date: dt.date, suite: str) -> int:
    """The table version the ``suite`` gate of ``run_date`` passed and published."""
    uri = summary_uri(config, run_date, suite)
    summary = read_summary(uri)
    check_summary(summary, suite, run_date, uri)
    if summary.get("table_version") is None:
        raise GateNotPassedError(
            f"the {suite} gate passed for {run_date} but records no published table version ({uri}): "
            f"the job stopped between its gate and its publish; run {RERUN[suite]} --run-date {run_date}"
        )
    return int(summary["table_version"])
