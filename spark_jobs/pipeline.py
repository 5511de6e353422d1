"""The ratings pipeline for one night: ingest -> gate -> silver -> sessions -> gated sequences; items.

The night of run date D ingests the landing zone's drops dated <= D that the lake does not hold
yet (or that changed), gates them, applies them to the versioned silver, and rewrites the session
and sequence versions of the users they touched (see each job's docstring, and docs/timeline.md).

Used by ``make run`` (:mod:`orchestration.nightly`), the benchmark, and later by Airflow tasks (which
call the same job ``run`` functions one task each). A failing gate raises
:class:`expectations.gate.GateError` and no ratings stage after it runs. Items (titles and
genres, no Spark job) run beside the chain once ingest is done, as in the DAG (``ingest >> items``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spark_jobs import ingest, items, sequences, sessionize, silver, validate
from spark_jobs.common import (
    RunContext,
    add_input_arguments,
    context_from_args,
    inputs_from_args,
    job_parser,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

OUTPUT_TABLES = (
    "ingest_ledger",
    "ratings_bronze",
    "ratings_quarantine",
    "ratings_silver",
    "ratings_run_stats",
    "ratings_drop_stats",
    "sessions",
    "sequences",
    "items",
)


@dataclass
class PipelineResult:
    """What one run produced: table locations, the accounting, gate summaries, seconds per stage."""

    tables: dict[str, str]
    drops: dict = field(default_factory=dict)
    stats: silver.RunStats | None = None
    ratings_gate: dict[str, Any] | None = None
    sequences_gate: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def run_pipeline(
    spark: SparkSession,
    ctx: RunContext,
    paths: Sequence[str] | None = None,
    format_name: str | None = None,
) -> PipelineResult:
    """Run every stage for ``ctx.run_date``; ``paths`` (of ``format_name``) are landed as its drop first."""
    result = PipelineResult(tables={name: ctx.table(name) for name in OUTPUT_TABLES})

    def stage(name: str, step: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        log.info("stage %s: start (%s)", name, ctx.run_date)
        value = step()
        result.seconds[name] = round(time.perf_counter() - start, 3)
        log.info("stage %s: done in %.1fs", name, result.seconds[name])
        return value

    result.drops = stage("ingest", lambda: ingest.run(spark, ctx, paths, format_name)).drops
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="items") as beside:
        # The movie file -> items (delta-rs, in this process) while Spark runs the chain.
        items_done = beside.submit(items.run, ctx)
        result.ratings_gate = stage("ratings_gate", lambda: validate.run_ratings_gate(spark, ctx))
        silver_output = stage("silver", lambda: silver.run(spark, ctx, keep=True))
        result.stats = silver_output.stats
        # Silver hands sessions the state as of the date of the users tonight touched (the whole
        # state on a first load), partitioned by user, and sessions hand theirs to sequences: no
        # stage then re-reads what the one before it wrote, nor shuffles it. Run alone, each job
        # reads its input table. The sequences job gates its frame before publishing it.
        try:
            sessions = stage(
                "sessions",
                lambda: sessionize.run(
                    spark, ctx, keep=True, silver=silver_output.state, silver_of=silver_output.state_of
                ),
            )
        finally:
            if silver_output.state is not None:
                silver_output.state.unpersist()
        try:
            # gated before it is published (the gate's seconds are part of the stage)
            result.sequences_gate = stage("sequences", lambda: sequences.run(spark, ctx, sessions)).gate
        finally:
            sessions.unpersist()
        stage("items", items_done.result)  # its seconds: the wait once the chain is done
    return result


def main(argv: list[str] | None = None) -> None:
    from recsys.spark import build_spark

    parser = job_parser(
        "the whole ratings pipeline for one night (the landing zone's drops up to the run date)"
    )
    add_input_arguments(parser)
    args = parser.parse_args(argv)
    ctx = context_from_args(args)
    inputs = inputs_from_args(parser, args, ctx.config)
    result = run_pipeline(
        build_spark(ctx.config, app_name="ratings-pipeline"), ctx, *(inputs or (None, None))
    )
    log.info("pipeline %s done: %s; seconds %s", ctx.run_date, result.stats, result.seconds)


if __name__ == "__main__":
    main()
