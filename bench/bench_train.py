"""Benchmark: training throughput of SS4Rec against RecBole's SASRec on the same data, same run.

    python bench/bench_train.py --max-len 50 --repeats 3 [--device cpu|cuda]

Data: the Spark pipeline's ML-100K sequences (built once under ``--work-dir`` by
:func:`orchestration.experiments.ensure_sequences`) for our models, and the same ML-100K file through
RecBole's own dataset and prefix-augmented loader for RecBole's SASRec.

One step = forward, backward and an Adam step. Ours trains on whole user sequences (every
position predicts the next item), RecBole on one (prefix, next item) sample per row, so the
common unit is the *training target*: a (history, next item) pair. For ours, a batch of B
user sequences of lengths n_i holds sum(n_i - 1) targets; for RecBole a batch of B samples
holds B. Each row reports the median over ``--repeats`` measurements of ``--batches`` steps
(after one warm-up step) of targets/s and user sequences (or samples)/s, and the epoch time
that implies on ML-100K. Prints a table and writes JSON.

``--ml25m-epoch`` instead times one full training epoch of ``--models`` (the trainer's own
epoch: shuffled batches of ``--batch-size`` users, bf16 autocast on CUDA) on ML-25M-shaped
synthetic sequences: ``--scale`` x (162,541 users, 59,047 items), history lengths drawn as
the synthetic ratings generator draws them, cut to the most recent ``--max-len`` events
(the pipeline's truncation), items drawn from a heavy-tailed popularity. Meant for a CUDA GPU:

    python bench/bench_train.py --ml25m-epoch --device cuda --max-len 200 --batch-size 256
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import RESULTS_DIR, write_result

from model.data import IdVocab, SequenceData, model_arguments, read_sequences
from model.score import synchronize
from model.train import Trainer, build_model, seed_everything
from orchestration.experiments import RUN_DATE, Dataset, Settings, ensure_sequences, experiment_config
from recsys.config import PROJECT_ROOT
from recsys.datasets.synthetic import history_lengths, target_counts

log = logging.getLogger("bench_train")


def ours_throughput(
    name: str,
    data: SequenceData,
    config: Any,
    batch_size: int,
    max_len: int,
    batches: int,
    device: torch.device,
) -> dict[str, float]:
    """Targets/s and sequences/s of one of our models over ``batches`` shuffled training batches."""
    seed_everything(0)
    config = config.model_copy(update={"model": config.model.model_copy(update={"name": name})})
    model = build_model(config, data.n_items, data.n_users).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = iter(data.view("train", max_len=max_len).loader(batch_size, shuffle=True, seed=1))

    def step() -> tuple[int, int]:
        batch = next(loader).to(device)
        loss = model.calculate_loss(**model_arguments(model.calculate_loss, batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return len(batch), int((batch.lengths - 1).sum())

    step()  # warm-up
    synchronize(device)
    started = time.perf_counter()
    sequences = targets = 0
    for _ in range(batches):
        n, t = step()
        sequences, targets = sequences + n, targets + t
    synchronize(device)
    seconds = time.perf_counter() - started
    return {"sequences_per_s": sequences / seconds, "targets_per_s": targets / seconds, "seconds": seconds}


def ml25m_shaped(scale: float, max_len: int, seed: int = 0) -> SequenceData:
    """ML-25M-shaped sequences (see the module docstring), already truncated to ``max_len``."""
    rng = np.random.default_rng(seed)
    n_users, n_items, n_ratings = target_counts(scale)
    full = history_lengths(n_users, n_ratings, n_items, rng)
    lengths = np.minimum(full, max_len)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    total = int(offsets[-1])
    popularity = rng.pareto(1.2, n_items) + 1e-3
    items = rng.choice(n_items, size=total, p=popularity / popularity.sum()).astype(np.int64) + 1
    owner = np.repeat(np.arange(n_users), lengths)
    gaps = rng.exponential(3_600.0, total).astype(np.int64)
    timestamps = 1_000_000_000 + np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[offsets[:-1]], lengths)
    position_from_end = offsets[owner + 1] - np.arange(total) - 1
    split = np.where(position_from_end == 0, 2, np.where(position_from_end == 1, 1, 0)).astype(np.int8)
    return SequenceData(
        IdVocab(np.arange(1, n_items + 1), 1),
        IdVocab(np.arange(n_users), 0),
        offsets,
        items,
        timestamps,
        split,
    )


def ml25m_epoch(args: argparse.Namespace, config: Any, device: torch.device) -> dict[str, Any]:
    """Wall seconds of one training epoch per model on :func:`ml25m_shaped` data."""
    data = ml25m_shaped(args.scale, args.max_len)
    view = data.view("train", max_len=args.max_len)
    figures: dict[str, Any] = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "scale": args.scale,
        "users": data.n_users,
        "items": data.n_items,
        "max_len": args.max_len,
        "batch_size": args.batch_size,
        "train_sequences": len(view),
        "train_targets": int((view.lengths - 1).sum()),
    }
    train = config.train.model_copy(update={"batch_size": args.batch_size, "epochs": 1})
    for name in args.models:
        seed_everything(0)
        named = config.model_copy(update={"model": config.model.model_copy(update={"name": name})})
        model = build_model(named, data.n_items, data.n_users)
        work = args.work_dir / "bench-ml25m" / name
        trainer = Trainer(model, data, train, [10], work, device, args.max_len)
        trainer._train_epoch(0)  # warm-up epoch: kernels, allocator, autotuning
        synchronize(device)
        seconds = [trainer._train_epoch(epoch + 1)[1] for epoch in range(args.repeats)]
        figures[f"{name}_epoch_s_median"] = statistics.median(seconds)
        figures[f"{name}_epoch_s_samples"] = [round(x, 2) for x in seconds]
        figures[f"{name}_targets_per_s"] = figures["train_targets"] / statistics.median(seconds)
        log.info("%s: epoch %s s", name, seconds)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32, help="our models: user sequences per batch")
    parser.add_argument("--recbole-batch-size", type=int, default=1024, help="RecBole: samples per batch")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=["ss4rec", "sasrec"], help="ours to measure")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--work-dir", type=Path, default=PROJECT_ROOT / "artifacts" / "experiments")
    parser.add_argument("--json", type=Path, default=None, help="default: bench/results/train[_ml25m].json")
    parser.add_argument("--ml25m-epoch", action="store_true", help="time epochs on ML-25M-shaped data")
    parser.add_argument("--scale", type=float, default=1.0, help="--ml25m-epoch: fraction of ML-25M")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    # the embedded ML-100K's lake, shared with the results table (orchestration.experiments)
    config = experiment_config(Dataset().work_dir(args.work_dir), Settings())
    if args.ml25m_epoch:
        write_result("train_ml25m", ml25m_epoch(args, config, device), args.json)
        return 0
    ensure_sequences(config)
    data = SequenceData.from_arrow(read_sequences(config.table_path("sequences"), RUN_DATE))
    train_view = data.view("train", max_len=args.max_len)
    epoch_targets = int((train_view.lengths - 1).sum())

    from model.recbole_peer import training_throughput

    samples: dict[str, list[dict[str, float]]] = {}
    recbole_epoch_samples = 0
    for repeat in range(args.repeats):
        for name in args.models:
            figures = ours_throughput(name, data, config, args.batch_size, args.max_len, args.batches, device)
            samples.setdefault(name, []).append(figures)
            log.info("repeat %d %s: %s", repeat + 1, name, figures)
        recbole = training_throughput(
            n_batches=args.batches,
            batch_size=args.recbole_batch_size,
            max_len=args.max_len,
            device=args.device,
            threads=args.threads,
        )
        recbole_epoch_samples = recbole["train_samples_per_epoch"]
        rate = recbole["sequences_per_second"]
        samples.setdefault("recbole_sasrec", []).append(
            {"sequences_per_s": rate, "targets_per_s": rate, "seconds": recbole["seconds"]}
        )
        log.info("repeat %d recbole_sasrec: %.1f samples/s", repeat + 1, rate)

    figures: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "max_len": args.max_len,
        "batch_size_ours": args.batch_size,
        "batch_size_recbole": args.recbole_batch_size,
        "batches_per_measurement": args.batches,
        "repeats": args.repeats,
        "epoch_targets_ours": epoch_targets,
        "epoch_samples_recbole": recbole_epoch_samples,
    }
    for name, runs in samples.items():
        targets = statistics.median(r["targets_per_s"] for r in runs)
        sequences = statistics.median(r["sequences_per_s"] for r in runs)
        epoch = (recbole_epoch_samples if name == "recbole_sasrec" else epoch_targets) / targets
        figures[f"{name}_targets_per_s"] = targets
        figures[f"{name}_sequences_per_s"] = sequences
        figures[f"{name}_epoch_s_estimate"] = epoch
        figures[f"{name}_targets_per_s_samples"] = [round(r["targets_per_s"], 1) for r in runs]
    baseline = figures["recbole_sasrec_targets_per_s"]
    for name in args.models:
        figures[f"{name}_speedup_vs_recbole_sasrec"] = figures[f"{name}_targets_per_s"] / baseline
    write_result("train", figures, args.json or RESULTS_DIR / "train.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
