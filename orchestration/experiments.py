"""The results table on one dataset: every model over several seeds, both evaluation variants, CPU epoch time.

    python -m orchestration.experiments --seeds 2020 2021 2022 --out docs/results.md
    python -m orchestration.experiments --dataset ml-1m --out docs/results-ml-1m.md
    python -m orchestration.experiments --input ~/data/ratings.dat --format ratings.dat --out r.md

Data: the Spark pipeline's ``sequences`` table for ``--dataset`` (default the embedded
ML-100K; a GroupLens release is fetched into ``data.raw_dir`` unless it is there already) or
for the ratings file ``--input`` (of ``--format``, else told by its name), loaded whole as the
drop of ``--run-date`` (default 2024-01-01, after the last event of every MovieLens release up
to ML-32M; a rating dated after it would be quarantined as future). The table is built first
into ``<work-dir>/<dataset>/lake`` when it is missing (``<dataset>``: the dataset's name, or
for ``--input`` the file's stem and the start of its SHA-256), with ``pipeline.max_seq_len`` =
``--history-len`` so the whole history is in the table and the production variant masks every
seen item. Every model sees the same leave-one-out split: last event test, second-to-last
validation, equal timestamps in file order (RecBole's rule, so RecBole's SASRec gets the same
targets).

Models:

* ``ss4rec``, ``ss4rec_s5_only``, ``ss4rec_mamba_only``, ``sasrec`` (ours), ``ncf``, ``pop``:
  :class:`model.train.Trainer` (Adam, early stopping on validation NDCG@10, best epoch tested)
  with the model inputs cut to the last ``--max-len`` events;
* ``recbole_sasrec``: RecBole's own SASRec (``peers/recbole``, run in its own environment by
  :mod:`model.recbole_peer`: RecBole's trainer and prefix augmentation, ``MAX_ITEM_LIST_LENGTH``
  = ``--max-len``), its exported test score matrix ranked by ``model.evaluate``. It reads
  ML-100K from the recbole package (the file the pipeline ingests) and any other dataset from
  the pipeline's own RecBole export of the lake's silver ratings
  (:mod:`spark_jobs.export_recbole`, written once to ``<work-dir>/<dataset>/recbole/``), so both
  sides train on the same interactions;
* ``als``: Spark MLlib ALS (:mod:`model.baselines_als`) fitted on each user's train and
  validation events (what the sequential models read as input at test time), seed = the run's.

``--tuned MODEL=OVERLAY`` (repeatable) adds a row for MODEL trained with a configuration overlay
(``model.tune``'s or ``model.time_scale``'s ``.best.yaml``) applied over the settings, beside its
default row, with the same seeds; the report lists each overlay's keys.

Each (model, seed) run is written as JSON under ``<work-dir>/<dataset>/runs/`` when it
finishes, and a later invocation with the same settings and run date reuses it, so an
interrupted table resumes where it stopped. The table (mean +- sample standard deviation over
the seeds; HR, NDCG, MRR at 10 in the paper variant, seen items not masked, and the production
variant, seen items masked; the mean training seconds per epoch on this machine) is written as
Markdown to ``--out`` and all runs as JSON beside it.
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
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from model import evaluate
from model.recbole_peer import PEER_PROTOCOL
from recsys.cli import configure_logging
from recsys.config import PROJECT_ROOT, Config, DatasetName, load_config
from recsys.datasets.formats import FORMATS

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
DEFAULT_DATASET = "ml-100k"
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
# 4: SS4Rec's default gap transform is log1p (docs/time_scale.md), not the released linear gap.
# 5: SS4Rec's default time scale is a linear gap in days (the study under evaluation protocol 3).
TRAINING_PROTOCOL = 5
# How every run is evaluated (model.evaluate.EVALUATION_PROTOCOL): part of every run's cache
# key, RecBole's too.
EVALUATION_PROTOCOL = evaluate.EVALUATION_PROTOCOL


@dataclasses.dataclass(frozen=True)
class Dataset:
    """The ratings a table is built on: a supported dataset by name, or one file (``input``).

    ``label`` names its folder under the work dir and its report: the dataset's name, or the
    file's stem and the first 12 hex digits of its SHA-256 (a different file, a different lake
    and cache). ``name`` is the dataset the file belongs to (its movies load the items table).
    """

    name: str = DEFAULT_DATASET
    input: Path | None = None
    format_name: str | None = None
    run_date: dt.date = RUN_DATE
    label: str = DEFAULT_DATASET

    @classmethod
    def of(
        cls,
        name: str = DEFAULT_DATASET,
        input: Path | None = None,
        format_name: str | None = None,
        run_date: dt.date = RUN_DATE,
    ) -> Dataset:
        if input is None:
            if format_name is not None:
                raise ValueError("--format describes --input; pass the file as well")
            return cls(name, None, None, run_date, name)
        from recsys.datasets.formats import format_for

        input = input.expanduser().resolve()
        if not input.is_file():
            raise FileNotFoundError(f"--input {input}: no such file")
        format_name = format_name or format_for(input).name
        with input.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return cls(name, input, format_name, run_date, f"{input.stem}-{digest[:12]}")

    @property
    def embedded(self) -> bool:
        """The embedded ML-100K (RecBole reads its own copy of the same file)."""
        return self.input is None and self.name == DEFAULT_DATASET

    def work_dir(self, root: Path) -> Path:
        return root / self.label


@dataclasses.dataclass(frozen=True)
class Tuned:
    """A tuned configuration of one model (``--tuned MODEL=OVERLAY``): its rows beside the defaults.

    ``keys``: the overlay's ``{section: {key: value}}`` (what ``model.tune`` or
    ``model.time_scale`` wrote), applied over the experiment's configuration, so a key it sets
    (window, learning rate, ...) wins over the settings; ``label``: the overlay file's stem.
    """

    model: str
    label: str
    keys: dict[str, dict[str, Any]]

    @classmethod
    def parse(cls, text: str) -> Tuned:
        import yaml

        from model.tune import TUNED_MODELS

        name, sep, path = text.partition("=")
        if not sep or name not in TUNED_MODELS:
            raise ValueError(
                f"--tuned {text!r}: expected MODEL=OVERLAY with MODEL one of {', '.join(TUNED_MODELS)}"
            )
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"--tuned {text!r}: {file}: no such file")
        keys = yaml.safe_load(file.read_text()) or {}
        if not isinstance(keys, dict) or not all(isinstance(v, dict) for v in keys.values()):
            raise ValueError(
                f"--tuned {text!r}: {file} is not a configuration overlay ({{section: {{key: value}}}})"
            )
        fixed = [
            f"{part}.{key}"
            for part, key in (("model", "name"), ("train", "seed"))
            if key in keys.get(part, {})
        ]
        if fixed:
            raise ValueError(f"--tuned {text!r}: {file} sets {', '.join(fixed)}, which each row sets itself")
        return cls(name, file.stem, keys)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.keys, sort_keys=True).encode()).hexdigest()[:12]


def run_key(
    name: str, seed: int, settings: Settings, run_date: dt.date = RUN_DATE, tuned: Tuned | None = None
) -> str:
    """The cache key of one (model, seed) run: its settings, the run date and the evaluation
    protocol, for TRAINED models the training protocol, for RecBole's the peer's
    (:data:`model.recbole_peer.PEER_PROTOCOL`), and a tuned run's overlay keys."""
    key = f"{name}-{seed}-{settings.key()}-{run_date:%Y%m%d}-e{EVALUATION_PROTOCOL}"
    key = f"{key}-p{TRAINING_PROTOCOL}" if name in TRAINED else key
    key = f"{key}-r{PEER_PROTOCOL}" if name == "recbole_sasrec" else key
    return f"{key}-t{tuned.digest()}" if tuned is not None else key


def row_label(record: dict[str, Any]) -> str:
    """A results row's name: the model's label, and a tuned run's overlay."""
    label = LABELS[record["model"]]
    return f"{label}, tuned ({record['tuned']})" if record.get("tuned") else label


def _rows(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str | None], list[dict[str, Any]]]:
    """Runs grouped by row (model, tuned overlay or None), defaults first, in :data:`MODELS` order."""
    rows: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    order = {name: i for i, name in enumerate(MODELS)}
    for record in sorted(records, key=lambda r: (order[r["model"]], r.get("tuned") or "")):
        rows.setdefault((record["model"], record.get("tuned")), []).append(record)
    return rows


def experiment_config(
    work_dir: Path, settings: Settings, dataset: Dataset = Dataset(), *overrides: str
) -> Config:
    """The configuration of every run on ``dataset``; ``work_dir`` is the dataset's own folder."""
    return load_config(
        profile="local",
        overrides=(
            f"lake.root={work_dir / 'lake'}",
            f"data.dataset={dataset.name}",
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


def ensure_sequences(config: Config, dataset: Dataset = Dataset()) -> None:
    """Run the Spark pipeline on ``dataset`` (the whole file as the drop of its run date) unless
    its sequences exist."""
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

    log.info("building %s sequences under %s", dataset.label, config.lake.root)
    if dataset.input is not None:
        inputs = ([str(dataset.input)], dataset.format_name)
    else:
        source = raw_source(config)
        inputs = ([str(source.path)], source.format_name)
    run_pipeline_stages(config, dataset.run_date, inputs)


def recbole_source(config: Config, dataset: Dataset, work_dir: Path) -> tuple[str, str | None]:
    """(RecBole dataset name, atomic-files root) for RecBole's runs on ``dataset``.

    The embedded ML-100K is RecBole's own ``ml-100k`` (root None: the recbole package's); any
    other dataset is the pipeline's export of the lake's silver ratings as of the run date, in
    ``<work_dir>/recbole/<label>/<label>.inter``, written once.
    """
    if dataset.embedded:
        return DEFAULT_DATASET, None
    root = work_dir / "recbole"
    if not (root / dataset.label / f"{dataset.label}.inter").is_file():
        from recsys.spark import build_spark
        from spark_jobs.common import RunContext
        from spark_jobs.export_recbole import export

        spark = build_spark(config, app_name="experiments-export")
        export(spark, RunContext.for_date(config, dataset.run_date), dataset.label, str(root))
    return dataset.label, str(root)


def _metrics(test: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {variant: {name: float(test[variant][name]) for name in COLUMNS} for variant in VARIANTS}


def run_trained(
    name: str,
    seed: int,
    config: Config,
    settings: Settings,
    work_dir: Path,
    run_date: dt.date = RUN_DATE,
    tuned: Tuned | None = None,
) -> dict[str, Any]:
    """Train one of :data:`TRAINED` with ``seed`` (and ``tuned``'s keys); test its best-validation weights."""
    from model.data import SequenceData, read_sequences
    from model.train import train_and_evaluate

    config = config.model_copy(
        update={
            "model": config.model.model_copy(update={"name": name}),
            "train": config.train.model_copy(update={"seed": seed}),
        }
    )
    if tuned is not None:
        from model.tune import apply

        config = apply(config, tuned.keys)
    data = SequenceData.from_arrow(read_sequences(config.table_path("sequences"), run_date))
    checkpoints = work_dir / "checkpoints" / run_key(name, seed, settings, run_date, tuned)
    trained = train_and_evaluate(config, data, checkpoints, run_date, "cpu")
    metrics = trained.metrics
    record: dict[str, Any] = {
        "test": _metrics(metrics["test"]),
        **{key: metrics[key] for key in ("epochs_run", "best_epoch", "stopped_early", "best_valid_ndcg@10")},
        "epoch_seconds": metrics["mean_epoch_seconds"],
        "n_test_users": len(data.view("test")),
        "n_items": data.n_items,
        "parameters": sum(p.numel() for p in trained.model.parameters()),
    }
    if "rating" in metrics:
        record["rating"] = metrics["rating"]
    return record


def run_als(seed: int, config: Config, settings: Settings, run_date: dt.date = RUN_DATE) -> dict[str, Any]:
    """Spark ALS on every user's train + validation events; tested like the other models."""
    import pandas as pd

    from model.baselines_als import DEFAULT_SETTINGS, ALSScorer, fit_als
    from model.data import SequenceData, read_sequences
    from model.evaluate import evaluate
    from recsys.spark import build_spark

    data = SequenceData.from_arrow(read_sequences(config.table_path("sequences"), run_date))
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
        max_len=settings.max_len,
    )
    return {
        "test": _metrics(test),
        "epoch_seconds": fit_seconds / als_settings.max_iter,
        "fit_seconds": fit_seconds,
        "epochs_run": als_settings.max_iter,
        "als": dataclasses.asdict(als_settings),
        "n_test_users": len(data.view("test")),
        "n_items": data.n_items,
    }


def run_recbole(
    seed: int, settings: Settings, recbole_dataset: str = DEFAULT_DATASET, data_path: str | None = None
) -> dict[str, Any]:
    """RecBole's SASRec on the paper protocol with ``MAX_ITEM_LIST_LENGTH`` = ``settings.max_len``,
    on RecBole's dataset ``recbole_dataset`` under ``data_path`` (see :func:`recbole_source`)."""
    from model.recbole_peer import train_and_score

    overrides = {
        "MAX_ITEM_LIST_LENGTH": settings.max_len,
        "epochs": settings.recbole_epochs,
        "stopping_step": settings.patience,
        "train_batch_size": settings.recbole_batch_size,
        "learning_rate": settings.lr,
    }
    summary, _ = train_and_score(
        "sasrec",
        seed,
        overrides,
        device="cpu",
        dataset=recbole_dataset,
        data_path=data_path,
        threads=torch.get_num_threads(),
    )
    scored = summary["test_metrics_from_scores"]
    return {
        "test": {variant: {name: float(scored[variant][name]) for name in COLUMNS} for variant in VARIANTS},
        "epoch_seconds": summary["mean_epoch_seconds"],
        "epochs_run": summary["epochs_run"],
        "best_epoch": summary["best_epoch"],
        "train_samples_per_epoch": summary["train_samples_per_epoch"],
        "n_test_users": summary["n_test_users"],
        "n_items": summary["n_items"],
    }


def run_one(
    name: str,
    seed: int,
    config: Config,
    settings: Settings,
    work_dir: Path,
    dataset: Dataset = Dataset(),
    tuned: Tuned | None = None,
) -> dict[str, Any]:
    """One (model, seed) run on ``dataset`` (``work_dir``: its folder), with ``tuned``'s keys if
    given, from the cache when an identical run finished before."""
    path = work_dir / "runs" / f"{run_key(name, seed, settings, dataset.run_date, tuned)}.json"
    what = name if tuned is None else f"{name} tuned ({tuned.label})"
    if path.exists():
        log.info("%s seed %d: cached %s", what, seed, path)
        return json.loads(path.read_text())
    log.info("%s seed %d: running", what, seed)
    started = time.perf_counter()
    if tuned is not None:
        record = run_trained(name, seed, config, settings, work_dir, dataset.run_date, tuned)
        record.update(tuned=tuned.label, overlay=tuned.keys)
    elif name in TRAINED:
        record = run_trained(name, seed, config, settings, work_dir, dataset.run_date)
    elif name == "als":
        record = run_als(seed, config, settings, dataset.run_date)
    elif name == "recbole_sasrec":
        record = run_recbole(seed, settings, *recbole_source(config, dataset, work_dir))
    else:
        raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")
    record = {
        "model": name,
        "seed": seed,
        "dataset": dataset.label,
        "run_date": dataset.run_date.isoformat(),
        "settings": dataclasses.asdict(settings),
        "wall_seconds": time.perf_counter() - started,
        **record,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    log.info("%s seed %d: %s", what, seed, record["test"])
    return record


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def results_table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per model (and tuned overlay), mean +- std over its seeds of each metric,
    and epoch time."""
    header = ["Model", "Seeds"]
    header += [f"{variant} {name.upper()}" for variant in VARIANTS for name in COLUMNS]
    header += ["s/epoch (CPU)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for runs in _rows(records).values():
        cells = [row_label(runs[0]), str(len(runs))]
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


def plot_results(records: Sequence[dict[str, Any]], path: Path, title: str = "ML-100K") -> None:
    """Bar chart of NDCG@10 (mean, error bar = std over seeds) per row and variant, as SVG."""
    from recsys.plots import variant_bars

    rows = list(_rows(records).values())
    stats = {v: [_mean_std([r["test"][v]["ndcg@10"] for r in runs]) for runs in rows] for v in VARIANTS}
    variant_bars(
        path,
        [row_label(runs[0]) for runs in rows],
        {v: [mean for mean, _ in s] for v, s in stats.items()},
        "test NDCG@10",
        f"{title}, leave-one-out, full ranking (mean ± std over seeds)",
        errors={v: [std for _, std in s] for v, s in stats.items()},
    )


def dataset_title(dataset: Dataset) -> str:
    """How a report names its data: ``ML-100K``, ``ML-1M``, ..., or the input file's label."""
    if dataset.input is not None:
        return f"{dataset.input.name} ({dataset.label})"
    names = {"ml-latest-small": "ML-latest-small", "synthetic": "Synthetic"}
    return names.get(dataset.name, dataset.name.upper())


def _extent(records: Sequence[dict[str, Any]]) -> str:
    """'ranking against all N items, U test users' from the runs' own counts."""
    items = {r["n_items"] for r in records if "n_items" in r}
    users = {r["n_test_users"] for r in records if "n_test_users" in r}
    parts = []
    if len(items) == 1:
        parts.append(f"ranking against all {items.pop():,} items")
    if len(users) == 1:
        parts.append(f"{users.pop():,} test users")
    return ", " + ", ".join(parts) if parts else ""


def write_report(
    out: Path,
    records: Sequence[dict[str, Any]],
    settings: Settings,
    argv: Sequence[str],
    dataset: Dataset = Dataset(),
) -> None:
    """``out`` (Markdown), ``out`` with suffix .json (every run) and .svg (NDCG@10 chart)."""
    title = dataset_title(dataset)
    text = [
        f"# {title} results",
        "",
        f"Generated by `python -m orchestration.experiments {' '.join(argv)}` on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
        "no GPU.",
        "",
        f"Leave-one-out by time (equal timestamps in file order){_extent(records)}, the whole file "
        f"loaded as the drop of {dataset.run_date}. "
        "*Paper*: seen items not masked, query time = the test item's timestamp. "
        "*Production*: as the night before the test item's day saw the user: input and masked items "
        "are the events dated before that day, query time = that night's end, a user with no such "
        "event a miss. Mean ± sample standard "
        "deviation over the seeds; s/epoch is training time only (for ALS: fit time per iteration).",
        "",
        "In both kinds of epoch every training event but a user's first is a target once. Ours "
        "is one pass over every user's training history split into windows of at most max_len "
        "events that overlap by one (a target sees the events of its window before it); RecBole's "
        "is one pass over its prefix samples (each target with up to max_len events of history, "
        "one forward pass per target). Compare throughput with `bench/bench_train.py` (targets "
        "per second). RecBole's SASRec runs in its own environment (`peers/recbole`) and returns "
        "score matrices that our evaluator ranks: RecBole's own test inputs for the paper "
        "columns, and the same night cut as every other model for the production ones.",
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
    overlays = {(r["model"], r["tuned"]): r["overlay"] for r in records if r.get("tuned")}
    if overlays:
        text += ["Tuned rows: each overlay's keys, applied over the settings above.", ""]
        for (name, label), keys in overlays.items():
            flat = ", ".join(
                f"{section}.{k} {v}" for section, values in keys.items() for k, v in values.items()
            )
            text.append(f"- {LABELS[name]}, tuned ({label}): {flat}.")
        text.append("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(text))
    out.with_suffix(".json").write_text(json.dumps(list(records), indent=2, sort_keys=True) + "\n")
    plot_results(records, out.with_suffix(".svg"), title)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m orchestration.experiments", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--dataset",
        choices=typing.get_args(DatasetName),
        default=DEFAULT_DATASET,
        help="the dataset (with --input: the release the file belongs to, whose movies load the items)",
    )
    parser.add_argument(
        "--input", type=Path, default=None, help="a ratings file instead of the dataset's own"
    )
    parser.add_argument("--format", dest="format_name", choices=sorted(FORMATS), default=None)
    parser.add_argument(
        "--run-date",
        type=dt.date.fromisoformat,
        default=RUN_DATE,
        help="the drop date the whole file is loaded as (on or after its last rating's day)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "results.md")
    parser.add_argument("--work-dir", type=Path, default=PROJECT_ROOT / "artifacts" / "experiments")
    for field in dataclasses.fields(Settings):
        parser.add_argument(
            f"--{field.name.replace('_', '-')}", type=type(getattr(defaults, field.name)), default=None
        )
    parser.add_argument(
        "--tuned",
        action="append",
        default=[],
        metavar="MODEL=OVERLAY",
        help="also run MODEL with a configuration overlay (model.tune's or model.time_scale's .best.yaml), "
        "as its own row beside the defaults (repeatable)",
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
    try:
        dataset = Dataset.of(args.dataset, args.input, args.format_name, args.run_date)
        tuned = [Tuned.parse(text) for text in args.tuned]
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    rows = [(one.model, one.label) for one in tuned]
    if len(set(rows)) < len(rows):
        parser.error(f"--tuned: two overlays of one model share a file name {sorted(rows)}: rename one")
    work_dir = dataset.work_dir(args.work_dir)
    config = experiment_config(work_dir, settings, dataset)
    ensure_sequences(config, dataset)
    records = []
    for name in args.models:
        for seed in args.seeds:
            records.append(run_one(name, seed, config, settings, work_dir, dataset))
            write_report(args.out, records, settings, argv, dataset)
    for one in tuned:
        for seed in args.seeds:
            records.append(run_one(one.model, seed, config, settings, work_dir, dataset, one))
            write_report(args.out, records, settings, argv, dataset)
    print(results_table(records))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
