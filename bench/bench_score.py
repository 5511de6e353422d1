"""Benchmark: nightly batch scoring of every user (model/score.py) at ML-25M size, with floors and a peer.

    python bench/bench_score.py [--scale 1.0] [--device cpu|cuda] [--no-als] [--shares 0.01 0.1]

Data: the seeded ML-25M-shaped synthetic ratings (``recsys.datasets.synthetic``; 162,541 users,
59,047 items, 25,000,095 ratings at scale 1), turned into the two tables scoring reads (written
with delta-rs, without Spark, to keep the benchmark about scoring): ``ratings_silver`` (every
rating) and ``sequences`` (each user's most recent 200 events, in time then file order), both
versioned by ``valid_from`` like the pipeline's (:mod:`recsys.asof`).
Model: SS4Rec at the released shape (hidden 64, 2 layers, S5 state 32, Mamba d_state 32),
untrained weights (timing does not depend on them), top-100, every seen item masked.

The first night (the data's last day) scores every user from scratch and writes every user's
state into ``user_states`` (:mod:`model.user_state`). Then, for each ``--shares`` value, one
more night in which that share of the users gets 1-3 new events: its new ``sequences`` and
``ratings_silver`` versions are appended, and the night is scored incrementally
(``scoring.state_mode: incremental``, ``--repeats`` times, medians) and in full
(``state_mode: full``, once: the baseline), per phase (read, state read, encode/step,
score + mask + top-k, write, state write), with how far the two tables differ (largest score
difference; users whose top-K items differ where the full run's scores are not tied). The
state table's bytes per user, as stored on disk, are reported beside the in-memory size.

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
    silver = pa.table({"user_id": users, "item_id": items, "timestamp": times, "valid_from": date})
    write_deltalake(str(lake / "ratings_silver"), silver, partition_by=["valid_from"])
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
            "valid_from": pa.array(np.full(user_ids.size, RUN_DATE), pa.date32()),
            "user_id": pa.array(user_ids, pa.int64()),
            "item_ids": lists(items[take], pa.int64()),
            "timestamps": lists(times[take], pa.int64()),
            "time_gaps": lists(gaps, pa.int64()),
            "session_ids": lists(np.zeros(take.size, np.int32), pa.int32()),
            "split": lists(split.astype(np.int8), pa.int8()),
            "n_events": pa.array(counts.astype(np.int32), pa.int32()),
        }
    )
    write_deltalake(str(lake / "sequences"), sequences, partition_by=["valid_from"])


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


def append_night(
    lake: Path, night: dt.date, share: float, catalogue: np.ndarray, max_len: int, seed: int
) -> dict[str, int]:
    """Give ``share`` of the users 1-3 new events (random catalogue items) during ``night``: their
    new ``sequences`` versions and the new ``ratings_silver`` rows, valid from ``night``."""
    from deltalake import write_deltalake

    from model.data import read_as_of

    sequences, _ = read_as_of(str(lake / "sequences"), "sequences", night - dt.timedelta(days=1))
    rng = np.random.default_rng(seed)
    chosen = np.sort(
        rng.choice(sequences.num_rows, size=max(1, round(share * sequences.num_rows)), replace=False)
    )
    day_start = run_timestamp(night) - 86_400
    rows: dict[str, list] = {name: [] for name in sequences.column_names}
    silver: dict[str, list] = {"user_id": [], "item_id": [], "timestamp": []}
    for row in sequences.take(chosen).to_pylist():
        count = int(rng.integers(1, 4))
        times = np.sort(rng.integers(day_start, day_start + 86_400, count)).tolist()
        items = rng.choice(catalogue, count).tolist()
        n_events = row["n_events"] + count
        window = min(n_events, max_len)
        split = [0] * window
        if n_events >= 2:
            split[-1] = 2
        if n_events >= 3:
            split[-2] = 1
        rows["valid_from"].append(night)
        rows["user_id"].append(row["user_id"])
        rows["item_ids"].append((row["item_ids"] + items)[-window:])
        rows["timestamps"].append((row["timestamps"] + times)[-window:])
        rows["time_gaps"].append(
            (row["time_gaps"] + np.diff(times, prepend=row["timestamps"][-1]).tolist())[-window:]
        )
        rows["session_ids"].append([0] * window)
        rows["split"].append(split)
        rows["n_events"].append(n_events)
        silver["user_id"] += [row["user_id"]] * count
        silver["item_id"] += items
        silver["timestamp"] += times
    write_deltalake(
        str(lake / "sequences"), pa.Table.from_pydict(rows, schema=sequences.schema), mode="append"
    )
    silver["valid_from"] = [night] * len(silver["user_id"])
    silver_schema = pa.schema(
        [
            ("user_id", pa.int64()),
            ("item_id", pa.int64()),
            ("timestamp", pa.int64()),
            ("valid_from", pa.date32()),
        ]
    )
    write_deltalake(
        str(lake / "ratings_silver"), pa.Table.from_pydict(silver, schema=silver_schema), mode="append"
    )
    return {"users_with_new_events": int(chosen.size), "new_events": len(silver["user_id"])}


def timed_scoring(
    config: Any, night: dt.date, mode: str, device: torch.device
) -> tuple[dict[str, Any], Path]:
    """One scoring run of ``night`` in ``mode`` (incremental | full): wall time, phases, peak RSS."""
    config = config.model_copy(update={"scoring": config.scoring.model_copy(update={"state_mode": mode})})
    with PeakRSS() as peak:
        started = time.perf_counter()
        result = score_run(config, night, VERSION, device)
        wall = time.perf_counter() - started
    figures = {"wall_s": round(wall, 2), "peak_rss_mb": round(peak.peak_mb, 1)}
    figures.update({f"{phase}_s": value for phase, value in result.seconds.as_dict().items()})
    figures["states"] = result.manifest["states"]
    return figures, Path(result.staging) / "recommendations.parquet"


def compare_tables(incremental: pa.Table, full: pa.Table) -> dict[str, float]:
    """Largest score difference, and users whose top-K items differ where the full run's scores
    are not tied (within 1e-4 of a neighbour)."""
    a, b = (t.sort_by([("user_id", "ascending"), ("rank", "ascending")]) for t in (incremental, full))
    if a.num_rows != b.num_rows or a.column("user_id") != b.column("user_id"):
        return {"same_rows": False}
    users = b.column("user_id").to_numpy()
    score = b.column("score").to_numpy(zero_copy_only=False)
    difference = np.abs(a.column("score").to_numpy(zero_copy_only=False) - score)
    same_user_next = np.r_[users[1:] == users[:-1], False]
    same_user_prev = np.r_[False, users[1:] == users[:-1]]
    gap_next = np.r_[np.abs(np.diff(score)), np.inf]
    gap_prev = np.r_[np.inf, np.abs(np.diff(score))]
    untied = ~((same_user_next & (gap_next <= 1e-4)) | (same_user_prev & (gap_prev <= 1e-4)))
    differ = (a.column("item_id").to_numpy() != b.column("item_id").to_numpy()) & untied
    return {
        "same_rows": True,
        "max_abs_score_difference": float(np.nanmax(difference)) if difference.size else 0.0,
        "users_with_other_untied_items": int(np.unique(users[differ]).size),
    }


def incremental_nights(
    config: Any, lake: Path, data: SequenceData, shares: list[float], repeats: int, device: torch.device
) -> dict[str, Any]:
    """For each share: a night with that share of users active, scored incrementally and in full."""
    import statistics

    out: dict[str, Any] = {}
    night = RUN_DATE
    for index, share in enumerate(shares):
        night = night + dt.timedelta(days=1)
        added = append_night(
            lake, night, share, data.item_vocab.raw_ids, config.pipeline.max_seq_len, seed=index
        )
        samples = []
        for _ in range(repeats):
            figures, staged = timed_scoring(config, night, "incremental", device)
            samples.append(figures)
        incremental_table = pq.read_table(staged, columns=["user_id", "rank", "item_id", "score"])
        full, staged = timed_scoring(config, night, "full", device)
        comparison = compare_tables(
            incremental_table, pq.read_table(staged, columns=["user_id", "rank", "item_id", "score"])
        )
        del incremental_table
        phases = [key for key in samples[0] if key.endswith("_s")]
        incremental = {key: round(statistics.median(s[key] for s in samples), 3) for key in phases}
        incremental["wall_s_repeats"] = [s["wall_s"] for s in samples]
        incremental["peak_rss_mb"] = max(s["peak_rss_mb"] for s in samples)
        incremental["states"] = samples[0]["states"]
        besides_scoring = (incremental["wall_s"] - incremental["score_s"]) / (
            full["wall_s"] - full["score_s"]
        )
        out[f"{share:g}"] = {
            "night": night.isoformat(),
            **added,
            "incremental": incremental,
            "full": full,
            "besides_score_vs_full": round(besides_scoring, 4),
            "wall_vs_full": round(incremental["wall_s"] / full["wall_s"], 4),
            "equal_to_full": comparison,
        }
        log.info("night %s (%g of users): %s", night, share, out[f"{share:g}"])
    return out


def state_bytes_on_disk(lake: Path, night: dt.date, users: int) -> dict[str, float]:
    """The first night's ``user_states`` partition (every user's state): bytes on disk per user."""
    files = list((lake / "user_states" / f"valid_from={night.isoformat()}").glob("*.parquet"))
    total = sum(f.stat().st_size for f in files)
    return {"state_table_bytes": total, "state_bytes_per_user_on_disk": total / users}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--no-als", action="store_true", help="skip the Spark ALS peer")
    parser.add_argument("--als-max-iter", type=int, default=5)
    parser.add_argument("--work-dir", type=Path, default=None, help="keep data here (default: a temp dir)")
    parser.add_argument(
        "--shares",
        type=float,
        nargs="*",
        default=[0.01, 0.1],
        help="one incremental night per value: the share of users with new events (none: skip)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="incremental runs per night (medians)")
    parser.add_argument("--state-dtype", default="float32", choices=("float32", "bfloat16"))
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
            f"scoring.state_dtype={args.state_dtype}",
            "pipeline.max_seq_len=200",
        ),
    )
    ratings_csv = work / "synthetic" / "ratings.csv"
    if not ratings_csv.exists():
        generate_synthetic(ratings_csv, scale=args.scale)
    import shutil

    for table in ("sequences", "ratings_silver", "user_states"):  # a kept work dir starts over
        shutil.rmtree(lake / table, ignore_errors=True)
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
    figures["state_bytes_per_user"] = result.manifest["states"]["bytes_per_user"]
    figures.update(state_bytes_on_disk(lake, RUN_DATE, data.n_users))
    figures["nights"] = incremental_nights(config, lake, data, args.shares, args.repeats, device)
    if not args.no_als:
        figures.update(als_peer(ratings_csv, config, args.als_max_iter))
        figures["job_vs_als_recommend"] = job_s / figures["als_recommend_for_all_users_s"]
    write_result("bench_score", figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
