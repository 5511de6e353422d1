"""Benchmark the synthetic ML-25M-shaped ratings generator: wall time, peak memory, shape.

    python bench/bench_synthetic.py --scale 1.0 --out data/raw/synthetic/ratings.csv \\
        --json bench/results/synthetic.json

Runs ``generate_synthetic`` once and reports its wall time, throughput, output size and peak
resident memory (the larger of a 50 ms psutil sampler and the kernel's ``ru_maxrss`` high-water
mark, which also covers spikes between samples), next to the statistics of the file it wrote,
so a run shows both that the generator stays bounded and that the data is ML-25M-shaped.
The CSV is left in place for the pipeline's scale runs.
"""

from __future__ import annotations

import argparse
import logging
import resource
from pathlib import Path

from common import RESULTS_DIR, PeakRSS, stopwatch, write_result

from recsys.datasets.synthetic import DEFAULT_SEED, generate_synthetic

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = ML-25M's size (default)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--users-per-batch", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "data" / "raw" / "synthetic" / "ratings.csv")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "synthetic.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    with PeakRSS() as sampled, stopwatch() as timing:
        summary = generate_synthetic(
            args.out, scale=args.scale, seed=args.seed, users_per_batch=args.users_per_batch
        )
    max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    wall_s = timing["wall_s"]
    figures = {
        "scale": args.scale,
        "seed": args.seed,
        "users_per_batch": args.users_per_batch,
        "rows": summary.n_ratings,
        "users": summary.n_users,
        "items": summary.n_items,
        "rating_mean": summary.rating_mean,
        "item_gini": summary.item_gini,
        "max_user_ratings": summary.max_user_ratings,
        "min_user_ratings": summary.min_user_ratings,
        "wall_s": wall_s,
        "peak_rss_mb": max(sampled.peak_mb, max_rss_mb),
        "sampled_peak_rss_mb": sampled.peak_mb,
        "ru_maxrss_mb": max_rss_mb,
        "rows_per_s": summary.n_ratings / wall_s,
        "file_bytes": summary.path.stat().st_size,
        "path": str(summary.path),
    }
    write_result("synthetic", figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
