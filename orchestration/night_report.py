"""The night's report: one static HTML file per run date, plots embedded, viewable offline.

    python -m orchestration.night_report --run-date 1998-04-22

writes ``<lake>/_reports/<run_date>/report.html`` (replacing a rerun's) from what the night
left in the lake and the model registry, nothing recomputed:

1. **accounting**: tonight's drops, rows read, quarantined by reason, duplicates, late
   (``ratings_run_stats``), and the last nights' rows;
2. **gates**: each suite's result for the date, linked to its Data Docs page
   (``<lake>/<pipeline.validation_dir>/<run_date>/<suite>.html``);
3. **training**: the refresh plan and the curve (loss, validation NDCG@10 per epoch) of tonight's
   challenger, with its MLflow run;
4. **champion versus challenger** on tonight's split, and the decision;
5. **drift**: ``drift_reports`` of the date against their bands;
6. **recommendations**: catalogue coverage and Gini (``docs/sql/coverage.sql``) and the Lorenz
   curve of the items' top-10 appearances;
7. **trend** over the last ``orchestration.report_trend_nights`` nights: the champion's
   validation NDCG@10 (``model_runs``), coverage and overlap@10 with the previous run
   (``drift_reports``), rows per night.

Plots are matplotlib PNGs inlined as data URIs. Once the page has loaded, each figure marks
itself ``drawn`` (or ``broken``, which it then says in place): what the headless-browser test
reads. The DAG's ``report`` task writes it after ``drift_output``; the notification names it.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

from orchestration.reports import REPORTS_DIR
from recsys.cli import add_run_date_argument, configure_logging
from recsys.config import Config, add_config_arguments, config_from_args, join_uri

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"


def report_path(config: Config, run_date: dt.date) -> Path:
    return (
        Path(join_uri(config.project_path(config.lake.root), REPORTS_DIR))
        / run_date.isoformat()
        / REPORT_FILE
    )


# ------------------------------------------------------------------------------ inputs


def _table_rows(config: Config, table: str, until: dt.date, nights: int) -> list[dict[str, Any]]:
    """The rows of a run_date-keyed table for the last ``nights`` run dates <= ``until`` (delta-rs)."""
    from deltalake import DeltaTable

    from recsys.delta import read_arrow

    path = config.table_path(table)
    if not Path(path).exists() and "://" not in path:
        return []
    rows = read_arrow(DeltaTable(path), None, [("run_date", "<=", until)]).to_pylist()
    dates = sorted({row["run_date"] for row in rows})[-nights:]
    return [row for row in rows if row["run_date"] in dates]


def _step(config: Config, run_date: dt.date, step: str) -> dict[str, Any] | None:
    from orchestration.model_tasks import read_step

    try:
        return read_step(config, run_date, step)
    except FileNotFoundError:
        return None


def _gates(config: Config, run_date: dt.date) -> list[dict[str, Any]]:
    """Each suite's summary of the date, its GE statistics and the Data Docs page beside it."""
    directory = Path(join_uri(config.project_path(config.lake.root), config.pipeline.validation_dir)) / (
        run_date.isoformat()
    )
    gates = []
    for summary_path in sorted(directory.glob("*.summary.json")):
        suite = summary_path.name.removesuffix(".summary.json")
        summary = json.loads(summary_path.read_text())
        result_path = directory / f"{suite}.json"
        statistics = (
            json.loads(result_path.read_text()).get("statistics", {}) if result_path.is_file() else {}
        )
        docs = directory / f"{suite}.html"
        gates.append(
            {
                "suite": suite,
                "success": bool(summary.get("success")),
                "failed": summary.get("failed", []),
                "evaluated": statistics.get("evaluated_expectations"),
                "successful": statistics.get("successful_expectations"),
                "docs": docs if docs.is_file() else None,
            }
        )
    return gates


def _top10_counts(config: Config, run_date: dt.date) -> list[int]:
    """How many users' top 10 hold each recommended item, on the run date."""
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    from recsys.delta import read_arrow

    rows = read_arrow(
        DeltaTable(config.table_path("recommendations")),
        ["item_id"],
        [("run_date", "=", run_date), ("rank", "<=", 10)],
    )
    return [int(count) for count in pc.value_counts(rows["item_id"]).field("counts").to_pylist()]


# ------------------------------------------------------------------------------- plots


def _figure(width: float = 7.0, height: float = 3.2, ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height), dpi=100, squeeze=False)


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plot_accounting(stats: dict[str, Any], trend: list[dict[str, Any]]) -> str:
    fig, axes = _figure(10, 3.2, ncols=2)
    reasons = stats["quarantined_by_reason"] or {}
    left, right = axes[0]
    names = sorted(reasons, key=lambda name: -reasons[name])
    left.barh(names, [reasons[name] for name in names], color="#c0504d")
    if not names:
        left.text(0.5, 0.5, "nothing quarantined", ha="center", va="center", transform=left.transAxes)
        left.set_xticks([])
        left.set_yticks([])
    left.set_title(f"quarantined tonight by reason ({stats['rows_quarantined']:,} rows)")
    left.set_xlabel("rows")
    dates = [row["run_date"].isoformat() for row in trend]
    silver = [row["rows_silver"] for row in trend]
    quarantined = [row["rows_quarantined"] for row in trend]
    duplicates = [row["duplicates_removed"] for row in trend]
    right.bar(dates, silver, label="to silver", color="#4f81bd")
    right.bar(dates, quarantined, bottom=silver, label="quarantined", color="#c0504d")
    right.bar(
        dates,
        duplicates,
        bottom=[s + q for s, q in zip(silver, quarantined, strict=True)],
        label="duplicates",
        color="#9bbb59",
    )
    right.set_title("rows read per night")
    right.legend(fontsize=8)
    right.tick_params(axis="x", rotation=45, labelsize=7)
    return _png(fig)


def plot_training(metrics: dict[str, Any]) -> str:
    history = metrics.get("history", [])
    fig, axes = _figure(10, 3.2, ncols=2)
    left, right = axes[0]
    epochs = [record["epoch"] for record in history]
    left.plot(epochs, [record["loss"] for record in history], marker="o")
    left.set_title("training loss")
    left.set_xlabel("epoch")
    for name in sorted({key for record in history for key in record["valid"] if key.startswith("ndcg")}):
        right.plot(epochs, [record["valid"].get(name) for record in history], marker="o", label=name)
    if "best_epoch" in metrics:
        right.axvline(metrics["best_epoch"], color="grey", linestyle="--", label="best epoch")
    right.set_title("validation (paper variant)")
    right.set_xlabel("epoch")
    right.legend(fontsize=8)
    return _png(fig)


def plot_models(models: dict[str, Any]) -> str:
    fig, axes = _figure(8, 3.2)
    ax = axes[0][0]
    labels = [
        f"{split} {variant} {name}"
        for split in ("valid", "test")
        for variant in ("production", "paper")
        for name in ("ndcg@10", "hr@10")
    ]
    width = 0.8 / max(len(models), 1)
    for offset, (role, entry) in enumerate(sorted(models.items())):
        metrics = entry["metrics"]
        values = [
            metrics.get(label.split()[0], {}).get(label.split()[1], {}).get(label.split()[2], 0.0)
            for label in labels
        ]
        ax.bar(
            [i + offset * width for i in range(len(labels))],
            values,
            width,
            label=f"{role} {entry['version']}",
        )
    ax.set_xticks(
        [i + width * (len(models) - 1) / 2 for i in range(len(labels))], labels, rotation=30, fontsize=7
    )
    ax.set_title("champion versus challenger on tonight's split")
    ax.legend(fontsize=8)
    return _png(fig)


def plot_drift(rows: list[dict[str, Any]]) -> str:
    judged = [r for r in rows if r["value"] is not None and r["warn"] is not None]
    fig, axes = _figure(8, max(2.0, 0.35 * len(judged) + 1))
    ax = axes[0][0]
    labels = [f"{r['stage']} {r['measure']} {r['statistic']}" for r in judged]
    colours = {"ok": "#9bbb59", "warn": "#f79646", "breach": "#c0504d"}
    ax.barh(labels, [r["value"] for r in judged], color=[colours.get(r["status"], "#7f7f7f") for r in judged])
    for i, r in enumerate(judged):
        ax.plot([r["warn"]] * 2, [i - 0.4, i + 0.4], color="#f79646")
        if r["breach"] is not None:
            ax.plot([r["breach"]] * 2, [i - 0.4, i + 0.4], color="#c0504d")
    ax.set_title("drift: value (bar) against its warn and breach bands (ticks)")
    ax.invert_yaxis()
    return _png(fig)


def plot_concentration(counts: list[int], catalogue_items: int, gini: float | None) -> str:
    import numpy as np

    fig, axes = _figure(5, 4)
    ax = axes[0][0]
    values = np.sort(
        np.concatenate([np.zeros(max(catalogue_items - len(counts), 0)), np.asarray(counts, float)])
    )
    if values.sum() > 0:
        lorenz = np.concatenate([[0.0], np.cumsum(values) / values.sum()])
        ax.plot(np.linspace(0, 1, lorenz.size), lorenz, label="recommendations")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="every item equally")
    ax.set_xlabel("share of the catalogue (least recommended first)")
    ax.set_ylabel("share of top-10 slots")
    ax.set_title(f"popularity concentration (Gini@10 {gini:.3f})" if gini is not None else "concentration")
    ax.legend(fontsize=8)
    return _png(fig)


def plot_trend(runs: list[dict[str, Any]], drift: list[dict[str, Any]], stats: list[dict[str, Any]]) -> str:
    fig, axes = _figure(11, 3.4, ncols=3)
    first, second, third = axes[0]
    champions = sorted((r["run_date"], r["metrics"]) for r in runs if r["scored"])
    first.plot(
        [day.isoformat() for day, _ in champions],
        [dict(metrics).get("valid.production.ndcg@10") for _, metrics in champions],
        marker="o",
    )
    first.set_title("champion: valid NDCG@10 (production)", fontsize=10)
    for measure, statistic in (("catalogue_coverage", "share_top10"), ("overlap", "mean_at_10")):
        points = sorted(
            (r["run_date"], r["value"])
            for r in drift
            if r["measure"] == measure and r["statistic"] == statistic and r["value"] is not None
        )
        second.plot([d.isoformat() for d, _ in points], [v for _, v in points], marker="o", label=measure)
    second.set_title("coverage@10, overlap@10", fontsize=10)
    second.legend(fontsize=8)
    ordered = sorted(stats, key=lambda r: r["run_date"])
    third.bar([r["run_date"].isoformat() for r in ordered], [r["rows_read"] for r in ordered])
    third.set_yscale("log")  # a history drop beside daily drops
    third.set_title("rows read per night (log)", fontsize=10)
    for ax in axes[0]:
        ax.tick_params(axis="x", rotation=45, labelsize=7)
    return _png(fig)


# ------------------------------------------------------------------------------- page

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
.ok { color: #2e7d32; } .warn { color: #ef6c00; } .breach, .failed { color: #c62828; font-weight: bold; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; } figcaption { font-size: 0.85em; color: #555; }
figure.broken figcaption::after { content: " (this plot failed to load)"; color: #c62828; }
"""
# Once the page has loaded (every inlined image decoded), marks each figure "drawn" or "broken":
# what a reader sees in place, and what a browser (the test) can check.
SCRIPT = """
window.addEventListener("load", () => {
  for (const figure of document.querySelectorAll("figure.plot")) {
    const img = figure.querySelector("img");
    figure.classList.add(img.complete && img.naturalWidth > 0 ? "drawn" : "broken");
  }
});
"""


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, str) and value in ("ok", "warn", "breach", "failed"):
        return f'<span class="{value}">{value}</span>'
    return html.escape("" if value is None else str(value))


def _plot(name: str, png: str, caption: str) -> str:
    return (
        f'<figure class="plot" data-plot="{name}"><img alt="{html.escape(caption)}" '
        f'src="data:image/png;base64,{png}"><figcaption>{html.escape(caption)}</figcaption></figure>'
    )


def render(config: Config, run_date: dt.date) -> str:
    """The report's HTML for ``run_date`` (see the module docstring for its sections)."""
    from model.registry import ModelRegistry
    from recsys.sql import duckdb_query

    nights = config.orchestration.report_trend_nights
    stats_rows = _table_rows(config, "ratings_run_stats", run_date, nights)
    tonight = [row for row in stats_rows if row["run_date"] == run_date]
    if not tonight:
        raise FileNotFoundError(
            f"{config.table_path('ratings_run_stats')}: no row for {run_date}; run the night first"
        )
    stats = tonight[0]
    planned, evaluated, decided, scored = (
        _step(config, run_date, step) for step in ("train", "evaluate", "decide", "score")
    )
    drift_rows = _table_rows(config, "drift_reports", run_date, nights)
    runs = _table_rows(config, "model_runs", run_date, nights)
    out: list[str] = [f"<h1>recsys nightly run {run_date.isoformat()}</h1>"]
    if decided and scored:
        out.append(
            f"<p>Champion <b>{html.escape(decided['champion'])}</b> scored {scored['users']:,} users "
            f"({scored['rows']:,} recommendations, top {scored['top_k']}); {html.escape(decided['reason'])}. "
            f"Model: <code>{html.escape(scored.get('model_uri', ''))}</code>.</p>"
        )

    out.append("<h2>Row accounting</h2>")
    drops = html.escape(", ".join(str(d) for d in stats["drops"]) or "none")
    out.append(
        f"<p>Drops {drops}: {stats['rows_read']:,} rows read "
        f"= {stats['rows_silver']:,} to silver + {stats['rows_quarantined']:,} quarantined + "
        f"{stats['duplicates_removed']:,} duplicates; {stats['late']:,} late, "
        f"{stats['users_with_new_events']:,} users with new events. As of the date: "
        f"{stats['total_rows_silver']:,} ratings.</p>"
    )
    out.append(
        _plot(
            "accounting",
            plot_accounting(stats, sorted(stats_rows, key=lambda r: r["run_date"])),
            "quarantine reasons tonight; rows of the last nights",
        )
    )

    out.append("<h2>Gates</h2>")
    report_dir = report_path(config, run_date).parent
    gate_rows = [
        {
            **gate,
            "status": "ok" if gate["success"] else "failed",
            "failed": ", ".join(gate["failed"]),
            "Data Docs": gate["docs"],
        }
        for gate in _gates(config, run_date)
    ]
    table = _table(gate_rows, ["suite", "status", "evaluated", "successful", "failed"])
    links = " · ".join(
        f'<a href="{html.escape(os.path.relpath(gate["docs"], report_dir))}">{html.escape(gate["suite"])}</a>'
        for gate in gate_rows
        if gate["docs"]
    )
    out.append(table + (f"<p>Data Docs: {links}</p>" if links else "<p>No Data Docs for this date.</p>"))

    out.append("<h2>Training</h2>")
    if planned is None:
        out.append("<p>The train step has not run for this date.</p>")
    else:
        out.append(
            f"<p>{html.escape(planned['plan']['mode'])}: {html.escape(planned['plan']['reason'])}. "
            f"Challenger: {html.escape(str(planned['challenger']))}"
            + (
                f" (MLflow run <code>{html.escape(planned['mlflow_run_id'])}</code>)"
                if planned.get("mlflow_run_id")
                else ""
            )
            + ".</p>"
        )
        version = planned["challenger"] or planned["champion"]
        registry = ModelRegistry.from_config(config)
        if version and registry.has(version):
            label = "tonight's challenger" if planned["challenger"] else "the champion (no training tonight)"
            out.append(
                _plot(
                    "training",
                    plot_training(registry.metrics(version)),
                    f"training curve of {label} {version}",
                )
            )

    out.append("<h2>Champion versus challenger</h2>")
    if evaluated and evaluated["models"]:
        out.append(_plot("models", plot_models(evaluated["models"]), "tonight's split, both variants"))
    if decided:
        backfill = "" if decided["aliases_moved"] else " (a backfill: the registry keeps the newest night's)"
        out.append(
            f"<p>Decision: <b>{html.escape(decided['champion'])}</b> "
            f"({'promoted' if decided['promoted'] else 'stays'}): {html.escape(decided['reason'])}. "
            f"Registry aliases: {html.escape(json.dumps(decided['aliases']))}"
            f"{backfill}.</p>"
        )

    out.append("<h2>Drift</h2>")
    tonight_drift = [r for r in drift_rows if r["run_date"] == run_date]
    if tonight_drift:
        out.append(_plot("drift", plot_drift(tonight_drift), "drift_reports of the date (docs/drift.md)"))
        out.append(
            _table(tonight_drift, ["stage", "measure", "statistic", "value", "warn", "breach", "status"])
        )
    else:
        out.append("<p>No drift findings for this date.</p>")

    out.append("<h2>Recommendations</h2>")
    tables = {name: config.table_path(name) for name in ("recommendations", "items", "model_runs")}
    (coverage,) = duckdb_query(tables, "coverage", run_date=run_date).to_dict("records")
    out.append(_table([coverage], list(coverage)))
    gini = coverage["gini_at_10"]
    out.append(
        _plot(
            "concentration",
            plot_concentration(_top10_counts(config, run_date), int(coverage["catalogue_items"]), gini),
            "Lorenz curve of the items' top-10 appearances",
        )
    )

    out.append(f"<h2>Trend over the last {nights} nights</h2>")
    out.append(_plot("trend", plot_trend(runs, drift_rows, stats_rows), "the last nights"))
    body = "\n".join(out)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>recsys {run_date.isoformat()}</title><style>{STYLE}</style></head>"
        f"<body>\n{body}\n<script>{SCRIPT}</script></body></html>\n"
    )


def write_report(config: Config, run_date: dt.date) -> Path:
    """Render and write (atomically, replacing a rerun's) the report of ``run_date``; returns its path."""
    from model.checkpoint import atomic_path

    path = report_path(config, run_date)
    page = render(config, run_date)
    with atomic_path(path) as temporary:
        temporary.write_text(page, encoding="utf-8")
        temporary.chmod(0o644)  # a page for people to open (mkstemp makes it owner-only)
    log.info("report of %s: %s", run_date, path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m orchestration.night_report", description=__doc__.splitlines()[0]
    )
    add_run_date_argument(parser)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging()
    print(write_report(config_from_args(args), args.run_date))


if __name__ == "__main__":
    main()
