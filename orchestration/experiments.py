"""The ML-100K results table: every model over several seeds, both evaluation variants, CPU epoch time.

    python -m orchestration.experiments --seeds 2020 2021 2022 --out docs/results.md

Data: the Spark pipeline's ``sequences`` table for the embedded ML-100K (built first into
``<work-dir>/lake`` when it is missing, with ``pipeline.max_seq_len`` = ``--history-len`` so
the whole history is in the table and the production variant masks every seen item). Every
model sees the same leave-one-out split: last event test, second-to-last validation, equal
timestamps in file order (RecBole's rule, so RecBole's SASRec gets the same targets).

Models:

* ``ss4rec``, ``ss4rec_s5_only``, ``ss4rec_mamba_only``, ``sasrec`` (ours), ``ncf``, ``pop``:
  :class:`model.train.Trainer` (Adam, early stopping on validation NDCG@10, best epoch tested)
  with the model inputs cut to the last ``--max-len`` events;
* ``recbole_sasrec``: RecBole's own SASRec (:mod:`model.recbole_reference`, RecBole's trainer
  and prefix augmentation, ``MAX_ITEM_LIST_LENGTH`` = ``--max-len``), its exported test score
  matrix ranked by the same rules as ``model.evaluate``;
* ``als``: Spark MLlib ALS (:mod:`model.baselines_als`) fitted on each user's train and
  validation events (what the sequential models read as input at test time), seed = the run's.

Each (model, seed) run is written as JSON under ``<work-dir>/runs/`` when it finishes, and a
later invocation with the same settings reuses it, so an interrupted table resumes where it
stopped. The table (mean +- sample standard deviation over the seeds; HR, NDCG, MRR at 10 in
the paper variant, seen items not masked, and the production variant, seen items masked; the
mean training seconds per epoch on this machine) is written as Markdown to ``--out`` and all
runs as JSON beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from recsys.cli import configure_logging
from recsys.config import PROJECT_ROOT, Config, load_config

log = logging.getLogger(__name__)

TRAINED = ("pop", "sasrec", "ncf", "ss4rec_s5_only", "ss4rec_mamba_only", "ss4rec")
MODELS = (*TRAINED, "als", "recbole_sasrec")
LABELS = {
    "ss4rec": "SS4Rec",
    "ss4rec_s5_only": "SS4Rec, S5 only",
    "ss4rec_mamba_only": "SS4Rec, Mamba only",
    "sasrec": "SASRec (ours)",
    "recbole_sasrec": "SASRec (RecBole)",
    "ncf": "NCF",
    "als": "ALS (Spark MLlib)",
    "pop": "Popularity",
}
RUN_DATE = dt.date(2024, 1, 1)
VARIANTS = ("paper", "production")
COLUMNS = ("hr@10", "ndcg@10", "mrr@10")
KS = [5, 10, 20]


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a run's figures depend on besides model and seed (part of each run's cache key)."""

    max_len: int = 50
    history_len: int = 1000
    epochs: int = 50
    patience: int = 10
    batch_size: int = 32
    lr: float = 0.001
    recbole_epochs: int = 5
    recbole_batch_size: int = 1024

    def key(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:12]


# How our models are trained, beyond the settings: part of the cache key of TRAINED runs and
# their checkpoints, so a change of protocol never resumes or reuses a run of the old one.
# 2: histories longer than max_len train as overlapping windows (model.data.training_windows).
# 3: the model's window is its own key (model.max_seq_len = max_len): SASRec's position table
#    is sized by it, not by the history kept.
TRAINING_PROTOCOL = 3
# How every run is evaluated: part of every run's cache key (RecBole's too).
# 2: ties are ranked ahead of the target (model.evaluate.target_ranks).
EVALUATION_PROTOCOL = 2


def run_key(name: str, seed: int, settings: Settings) -> str:
    """The cache key of one (model, seed) run: its settings and the evaluation protocol, and for
    TRAINED models the training protocol."""
    key = f"{name}-{seed}-{settings.key()}-e{EVALUATION_PROTOCOL}"
    return f"{key}-p{TRAINING_PROTOCOL}" if name in TRAINED else key


def experiment_config(work_dir: Path, settings: Settings, *overrides: str) -> Config:
    return load_config(
        profile="local",
        overrides=(
            f"lake.root={work_dir / 'lake'}",
            "data.dataset=ml-100k",
            f"pipeline.max_seq_len={settings.history_len}",
            f"model.max_seq_len={settings.max_len}",
            f"train.batch_size={settings.batch_size}",
            f"train.lr={settings.lr}",
            f"train.epochs={settings.epochs}",
            f"train.patience={settings.patience}",
            "device=cpu",
            *overrides,
        ),
    )


def ensure_sequences(config: Config) -> None:
    """Run the Spark pipeline on ML-100K (the whole file as the drop of :data:`RUN_DATE`) unless its
    sequences exist."""
    from deltalake import DeltaTable

    from recsys.delta import arrow_dataset

    path = config.table_path("sequences")
    try:
        rows = arrow_dataset(DeltaTable(path)).count_rows()
    except Exception:
        rows = 0
    if rows:
        return
    from orchestration.nightly import run_pipeline_stages
    from recsys.datasets import raw_source

    log.info("building ML-100K sequences under %s", config.lake.root)
    source = raw_source(config)
    run_pipeline_stages(config, RUN_DATE, ([str(source.path)], source.format_name))


def _metrics(test: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {variant: {name: float(test[variant][name]) for name in COLUMNS} for variant in VARIANTS}


def run_trained(name: str, seed: int, config: Config, settings: Settings, work_dir: Path) -> dict[str, Any]:
    """Train one of :data:`TRAINED` with ``seed`` and test its best-validation weights."""
    from model.data import SequenceData, read_sequences
    from model.train import train_and_evaluate

    config = config.model_copy(
        update={
            "model": config.model.model_copy(update={"name": name}),
            "train": config.train.model_copy(update={"seed": seed}),
        }
    )
    data = SequenceData.from_arrow(read_sequences(config.table_path("sequences"), RUN_DATE))
    checkpoints = work_dir / "checkpoints" / run_key(name, seed, settings)
    trained = train_and_evaluate(config, data, checkpoints, RUN_DATE, "cpu")
    metrics = trained.metrics
    record: dict[str, Any] = {
        "test": _metrics(metrics["test"]),
        **{key: metrics[key] for key in ("epochs_run", "best_epoch", "stopped_early", "best_valid_ndcg@10")},
        "epoch_seconds": metrics["mean_epoch_seconds"],
        "n_test_users": len(data.view("test")),
        "parameters": sum(p.numel() for p in trained.model.parameters()),
    }
    if "rating" in metrics:
        record["rating"] = metrics["rating"]
    return record


def run_als(seed: int, config: Config, settings: Settings) -> dict[str, Any]:
    """Spark ALS on every user's train + validation events; tested like the other models."""
    import pandas as pd

    from model.baselines_als import DEFAULT_SETTINGS, ALSScorer, fit_als
    from model.data import SequenceData, read_sequences
    from model.evaluate import evaluate, run_timestamp
    from recsys.spark import build_spark

    data = SequenceData.from_arrow(read_sequences(config.table_path("sequences"), RUN_DATE))
    pairs = data.seen("test").tocoo()
    spark = build_spark(config, app_name="experiments-als")
    frame = spark.createDataFrame(pd.DataFrame({"user_id": pairs.row.astype("int64"), "item_id": pairs.col}))
    als_settings = dataclasses.replace(DEFAULT_SETTINGS, seed=seed)
    started = time.perf_counter()
    factors = fit_als(frame, als_settings)
    fit_seconds = time.perf_counter() - started
    test = evaluate(
        ALSScorer(factors, data.n_items),
        data,
        "test",
        KS,
        run_time=run_timestamp(RUN_DATE),
        max_len=settings.max_len,
    )
    return {
        "test": _metrics(test),
        "epoch_seconds": fit_seconds / als_settings.max_iter,
        "fit_seconds": fit_seconds,
        "epochs_run": als_settings.max_iter,
        "als": dataclasses.asdict(als_settings),
        "n_test_users": len(data.view("test")),
    }


def run_recbole(seed: int, settings: Settings) -> dict[str, Any]:
    """RecBole's SASRec on the paper protocol with ``MAX_ITEM_LIST_LENGTH`` = ``settings.max_len``."""
    from model.recbole_reference import run_reference

    overrides = {
        "MAX_ITEM_LIST_LENGTH": settings.max_len,
        "epochs": settings.recbole_epochs,
        "stopping_step": settings.patience,
        "train_batch_size": settings.recbole_batch_size,
        "learning_rate": settings.lr,
    }
    summary = run_reference(seed, overrides, device="cpu").summary()
    scored = summary["test_metrics_from_scores"]
    return {
        "test": {variant: {name: float(scored[variant][name]) for name in COLUMNS} for variant in VARIANTS},
        "epoch_seconds": summary["mean_epoch_seconds"],
        "epochs_run": summary["epochs_run"],
        "best_epoch": summary["best_epoch"],
        "train_samples_per_epoch": summary["train_samples_per_epoch"],
        "n_test_users": summary["n_test_users"],
    }


def run_one(name: str, seed: int, config: Config, settings: Settings, work_dir: Path) -> dict[str, Any]:
    """One (model, seed) run, from the cache when an identical run finished before."""
    path = work_dir / "runs" / f"{run_key(name, seed, settings)}.json"
    if path.exists():
        log.info("%s seed %d: cached %s", name, seed, path)
        return json.loads(path.read_text())
    log.info("%s seed %d: running", name, seed)
    started = time.perf_counter()
    if name in TRAINED:
        record = run_trained(name, seed, config, settings, work_dir)
    elif name == "als":
        record = run_als(seed, config, settings)
    elif name == "recbole_sasrec":
        record = run_recbole(seed, settings)
    else:
        raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")
    record = {
        "model": name,
        "seed": seed,
        "settings": dataclasses.asdict(settings),
        "wall_seconds": time.perf_counter() - started,
        **record,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    log.info("%s seed %d: %s", name, seed, record["test"])
    return record


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def results_table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per model, mean +- std over its seeds of each metric, and epoch time."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_model.setdefault(record["model"], []).append(record)
    header = ["Model", "Seeds"]
    header += [f"{variant} {name.upper()}" for variant in VARIANTS for name in COLUMNS]
    header += ["s/epoch (CPU)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in MODELS:
        runs = by_model.get(name)
        if not runs:
            continue
        cells = [LABELS[name], str(len(runs))]
        for variant in VARIANTS:
            for metric in COLUMNS:
                mean, std = _mean_std([r["test"][variant][metric] for r in runs])
                cells.append(f"{mean:.4f} ± {std:.4f}")
        mean, std = _mean_std([r["epoch_seconds"] for r in runs])
        cells.append(f"{mean:.1f} ± {std:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rating_table(records: Sequence[dict[str, Any]]) -> str | None:
    """NCF's rating RMSE (and the global-mean baseline's) over its seeds, or None without NCF runs."""
    runs = [r for r in records if r["model"] == "ncf" and "rating" in r]
    if not runs:
        return None
    rmse = _mean_std([r["rating"]["rating_rmse"] for r in runs])
    base = _mean_std([r["rating"]["rating_rmse_global_mean"] for r in runs])
    return (
        "| Model | Test rating RMSE | Global-mean RMSE |\n|---|---|---|\n"
        f"| NCF | {rmse[0]:.4f} ± {rmse[1]:.4f} | {base[0]:.4f} ± {base[1]:.4f} |"
    )


def plot_results(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Bar chart of NDCG@10 (mean, error bar = std over seeds) per model and variant, as SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name in MODELS if any(r["model"] == name for r in records)]
    figure, axis = plt.subplots(figsize=(9, 4))
    width = 0.38
    for offset, variant in enumerate(VARIANTS):
        stats = [
            _mean_std([r["test"][variant]["ndcg@10"] for r in records if r["model"] == name])
            for name in names
        ]
        axis.bar(
            [i + (offset - 0.5) * width for i in range(len(names))],
            [mean for mean, _ in stats],
            width,
            yerr=[std for _, std in stats],
            capsize=3,
            label=variant,
        )
    axis.set_xticks(range(len(names)), [LABELS[name] for name in names], rotation=20, ha="right")
    axis.set_ylabel("test NDCG@10")
    axis.set_title("ML-100K, leave-one-out, full ranking (mean ± std over seeds)")
    axis.legend(title="variant")
    figure.tight_layout()
    figure.savefig(path, format="svg", metadata={"Date": None})
    plt.close(figure)


def write_report(
    out: Path, records: Sequence[dict[str, Any]], settings: Settings, argv: Sequence[str]
) -> None:
    """``out`` (Markdown), ``out`` with suffix .json (every run) and .svg (NDCG@10 chart)."""
    text = [
        "# ML-100K results",
        "",
        f"Generated by `python -m orchestration.experiments {' '.join(argv)}` on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
        "no GPU.",
        "",
        "Leave-one-out by time (equal timestamps in file order), ranking against all 1,682 items, "
        "943 test users. *Paper*: seen items not masked, query time = the test item's timestamp. "
        "*Production*: seen items masked, query time = the run's time. Mean ± sample standard "
        "deviation over the seeds; s/epoch is training time only (for ALS: fit time per iteration).",
        "",
        "In both kinds of epoch every training event but a user's first is a target once. Ours "
        "is one pass over every user's training history split into windows of at most max_len "
        "events that overlap by one (a target sees the events of its window before it); RecBole's "
        "is one pass over its prefix samples (each target with up to max_len events of history, "
        "one forward pass per target). Compare throughput with `bench/bench_train.py` (targets "
        "per second).",
        "",
        results_table(records),
        "",
        f"![NDCG@10 per model]({out.with_suffix('.svg').name})",
        "",
    ]
    ratings = rating_table(records)
    if ratings:
        text += [
            "NCF also predicts ratings (its ridge-fitted rating head, on the test events):",
            "",
            ratings,
            "",
        ]
    text += [
        "Settings: " + ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(settings).items()) + ".",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(text))
    out.with_suffix(".json").write_text(json.dumps(list(records), indent=2, sort_keys=True) + "\n")
    plot_results(records, out.with_suffix(".svg"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m orchestration.experiments", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "results.md")
    parser.add_argument("--work-dir", type=Path, default=PROJECT_ROOT / "artifacts" / "experiments")
    for field in dataclasses.fields(Settings):
        parser.add_argument(
            f"--{field.name.replace('_', '-')}", type=type(getattr(defaults, field.name)), default=None
        )
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    configure_logging()
    torch.set_num_threads(args.threads)
    settings = Settings(
        **{
            f.name: getattr(args, f.name)
            for f in dataclasses.fields(Settings)
            if getattr(args, f.name) is not None
        }
    )
    config = experiment_config(args.work_dir, settings)
    ensure_sequences(config)
    records = []
    for name in args.models:
        for seed in args.seeds:
            records.append(run_one(name, seed, config, settings, args.work_dir))
            write_report(args.out, records, settings, argv)
    print(results_table(records))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
