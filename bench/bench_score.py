"""Benchmark: nightly batch scoring of every user (model/score.py) at ML-25M size, with floors and a peer.

    python bench/bench_score.py [--scale 1.0] [--device cpu|cuda] [--no-als]

Data: the seeded ML-25M-shaped synthetic ratings (``recsys.datasets.synthetic``; 162,541 users,
59,047 items, 25,000,095 ratings at scale 1), turned into the two tables scoring reads (written
with delta-rs, without Spark, to keep the benchmark about scoring): ``ratings_silver`` (every
rating) and ``sequences`` (each user's most recent 200 events, in time then file order).
Model: SS4Rec at the released shape (hidden 64, 2 layers, S5 state 32, Mamba d_state 32),
untrained weights (timing does not depend on them), top-100, every seen item masked.

The job (:func:`model.score.score_run`) reports its phases (read, encode, score + mask + top-k,
write); beside each, in the same run:

- read floor: the same Parquet files read by pyarrow alone (no Delta log, no indexing);
- encode floor: the model's forward FLOPs per position (``torch.utils.flop_counter`` on one
  batch) x the positions scored, divided by this machine's measured float32 matmul FLOP/s;
- score floor: a bare chunked matmul + mask + top-k of precomputed user vectors of the same
  shapes (same batch size, same seen matrix);
- write floor: the same rows written by pyarrow as one Parquet file;
- the peer a Spark shop runs today: MLlib ALS at rank 64 on the same ratings,
  ``recommendForAllUsers(100)`` (no seen-item masking), its fit timed separately.

Prints a table and writes JSON (bench/results/bench_score.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from common import PeakRSS, write_result

from model.checkpoint import save_artifacts
from model.data import SequenceData, model_arguments
from model.evaluate import run_timestamp
from model.registry import ModelRegistry
from model.score import (
    PhaseSeconds,
    history_from_silver,
    load_model,
    mask_and_top_k,
    score_run,
    synchronize,
)
from model.train import build_model, resolve_device
from recsys.config import load_config
from recsys.datasets.formats import read_ratings
from recsys.datasets.synthetic import generate_synthetic
from recsys.delta import read_arrow

log = logging.getLogger("bench_score")

RUN_DATE = dt.date(2019, 11, 21)  # the synthetic data's last day
VERSION = "ss4rec-bench"


def sequences_and_silver(ratings_csv: Path, lake: Path, max_len: int) -> None:
    """Write ``sequences`` (last ``max_len`` events per user) and ``ratings_silver`` with delta-rs."""
    from deltalake import write_deltalake

    frame = read_ratings(ratings_csv, "ratings.csv")
    users = frame["user_id"].to_numpy()
    items = frame["item_id"].to_numpy()
    times = frame["timestamp"].to_numpy()
    date = pa.array(np.full(len(frame), RUN_DATE), pa.date32())
    silver = pa.table({"user_id": users, "item_id": items, "timestamp": times, "run_date": date})
    write_deltalake(str(lake / "ratings_silver"), silver, partition_by=["run_date"])
    del silver, date
    order = np.lexsort((np.arange(users.size), times, users))  # time, then file order, per user
    users, items, times = users[order], items[order], times[order]
    user_ids, counts = np.unique(users, return_counts=True)
    ends = np.cumsum(counts)
    kept = np.minimum(counts, max_len)
    take = np.concatenate([np.arange(end - k, end) for end, k in zip(ends, kept, strict=True)])
    from_end = np.repeat(ends, kept) - take - 1
    full = np.repeat(counts, kept)
    split = np.where((from_end == 0) & (full >= 2), 2, np.where((from_end == 1) & (full >= 3), 1, 0))
    offsets = pa.array(np.concatenate([[0], np.cumsum(kept)]).astype(np.int32))
    gaps = np.diff(times, prepend=times[0])[take]

    def lists(values: np.ndarray, kind: pa.DataType) -> pa.Array:
        return pa.ListArray.from_arrays(offsets, pa.array(values, kind))

    sequences = pa.table(
        {
            "run_date": pa.array(np.full(user_ids.size, RUN_DATE), pa.date32()),
            "user_id": pa.array(user_ids, pa.int64()),
            "item_ids": lists(items[take], pa.int64()),
            "timestamps": lists(times[take], pa.int64()),
            "time_gaps": lists(gaps, pa.int64()),
            "session_ids": lists(np.zeros(take.size, np.int32), pa.int32()),
            "split": lists(split.astype(np.int8), pa.int8()),
            "n_events": pa.array(counts.astype(np.int32), pa.int32()),
        }
    )
    write_deltalake(str(lake / "sequences"), sequences, partition_by=["run_date"])


def save_untrained(config: Any, lake: Path) -> SequenceData:
    """An untrained SS4Rec over the sequences' items, saved as the registry's VERSION."""
    from deltalake import DeltaTable

    data = SequenceData.from_arrow(read_arrow(DeltaTable(str(lake / "sequences"))))
    torch.manual_seed(0)
    model = build_model(config, data.n_items, data.n_users)
    saved = {"config": config.model_dump(mode="json"), "n_items": data.n_items, "n_users": data.n_users}
    save_artifacts(ModelRegistry.from_config(config).path(VERSION), model, data.vocab_dict(), saved, {})
    return data


def matmul_flops_per_s(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def forward_flops_per_position(model: torch.nn.Module, data: SequenceData, max_len: int) -> float:
    """Forward FLOPs of ``last_hidden`` per (unpadded) position, counted on the 256 longest users."""
    from torch.utils.flop_counter import FlopCounterMode

    view = data.view("full", max_len=max_len)
    rows = np.argsort(view.lengths)[-256:]
    batch = view.collate(rows)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model.last_hidden(**model_arguments(model.last_hidden, batch, batch.timestamps[:, -1]))
    return counter.get_total_flops() / float(batch.lengths.sum())


def score_floor(data: SequenceData, seen: Any, k: int, batch_size: int, device: torch.device) -> float:
    """Seconds of a bare chunked matmul + mask + top-k on random user vectors of the job's shapes."""
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(data.n_users, 64, generator=generator).to(device)
    weights = torch.randn(data.n_items, 64, generator=generator).to(device)
    synchronize(device)
    started = time.perf_counter()
    for start in range(0, data.n_users, batch_size):
        scores = vectors[start : start + batch_size] @ weights.T
        values, items = mask_and_top_k(scores, seen[start : start + batch_size], k)
        values.cpu(), items.cpu()
    synchronize(device)
    return time.perf_counter() - started


def als_peer(ratings_csv: Path, config: Any, max_iter: int) -> dict[str, float]:
    """MLlib ALS rank 64 on the same ratings: fit seconds, recommendForAllUsers(100) seconds."""
    from pyspark.ml.recommendation import ALS

    from recsys.spark import build_spark

    spark = build_spark(config, app_name="bench-score-als", extra_conf={"spark.driver.memory": "10g"})
    ratings = (
        spark.read.option("header", True)
        .schema("userId int, movieId int, rating float, timestamp long")
        .csv(str(ratings_csv))
        .cache()
    )
    ratings.count()
    started = time.perf_counter()
    als = ALS(rank=64, maxIter=max_iter, regParam=0.05, userCol="userId", itemCol="movieId", seed=0)
    model = als.fit(ratings)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    model.recommendForAllUsers(100).write.format("noop").mode("overwrite").save()
    recommend_s = time.perf_counter() - started
    spark.stop()
    return {"als_fit_s": fit_s, "als_max_iter": max_iter, "als_recommend_for_all_users_s": recommend_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--no-als", action="store_true", help="skip the Spark ALS peer")
    parser.add_argument("--als-max-iter", type=int, default=5)
    parser.add_argument("--work-dir", type=Path, default=None, help="keep data here (default: a temp dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    device = resolve_device(args.device)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-score-"))
    lake = work / "lake"
    config = load_config(
        profile="local",
        overrides=(
            f"lake.root={lake}",
            f"train.models_dir={work / 'models'}",
            "scoring.top_k=100",
            f"scoring.batch_size={args.batch_size}",
            "pipeline.max_seq_len=200",
        ),
    )
    ratings_csv = work / "synthetic" / "ratings.csv"
    if not ratings_csv.exists():
        generate_synthetic(ratings_csv, scale=args.scale)
    if not (lake / "sequences").exists():
        sequences_and_silver(ratings_csv, lake, config.pipeline.max_seq_len)
    data = save_untrained(config, lake)
    figures: dict[str, Any] = {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "scale": args.scale,
        "users": data.n_users,
        "items": data.n_items,
        "top_k": 100,
        "batch_size": args.batch_size,
        "positions_scored": int(np.diff(data.offsets).sum()),
    }

    with PeakRSS() as peak:
        started = time.perf_counter()
        result = score_run(config, RUN_DATE, VERSION, device)
        job_s = time.perf_counter() - started
    seconds: PhaseSeconds = result.seconds
    figures.update(job_wall_s=job_s, job_peak_rss_mb=peak.peak_mb, rows=result.manifest["rows"])
    for phase, value in seconds.as_dict().items():
        figures[f"job_{phase}_s"] = value
        figures[f"job_{phase}_users_per_s"] = data.n_users / value if value else None

    # Floors, same run.
    started = time.perf_counter()
    for table in ("sequences", "ratings_silver"):
        for file in (lake / table).rglob("*.parquet"):
            pq.read_table(file)
    figures["floor_read_s"] = time.perf_counter() - started
    model, _, _ = load_model(config, VERSION, device)
    flops = forward_flops_per_position(model.cpu(), data, config.pipeline.max_seq_len)
    rate = matmul_flops_per_s(device)
    figures.update(
        forward_flops_per_position=flops,
        matmul_gflop_per_s=rate / 1e9,
        floor_encode_s=flops * figures["positions_scored"] / rate,
    )
    from deltalake import DeltaTable

    silver = read_arrow(DeltaTable(str(lake / "ratings_silver")), ["user_id", "item_id", "timestamp"])
    history = history_from_silver(silver, data.user_vocab, data.item_vocab, run_timestamp(RUN_DATE), 30)
    figures["ratings"] = silver.num_rows
    del silver
    figures["floor_score_s"] = score_floor(data, history.seen, 100, args.batch_size, device)
    staged = pq.read_table(Path(result.staging) / "recommendations.parquet")
    started = time.perf_counter()
    pq.write_table(staged, work / "floor-write.parquet")
    figures["floor_write_s"] = time.perf_counter() - started
    figures["score_vs_floor"] = figures["job_score_s"] / figures["floor_score_s"]
    figures["encode_vs_floor"] = figures["job_encode_s"] / figures["floor_encode_s"]
    if not args.no_als:
        figures.update(als_peer(ratings_csv, config, args.als_max_iter))
        figures["job_vs_als_recommend"] = job_s / figures["als_recommend_for_all_users_s"]
    write_result("bench_score", figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
