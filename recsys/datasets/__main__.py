"""``python -m recsys.datasets``: download a MovieLens release or generate synthetic ratings.

python -m recsys.datasets download ml-1m [--raw-dir data/raw]
python -m recsys.datasets generate --scale 0.1 [--seed N] [--out PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recsys.cli import configure_logging
from recsys.config import add_config_arguments, config_from_args


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recsys.datasets", description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    download = commands.add_parser("download", help="fetch and verify a GroupLens release")
    download.add_argument("name", choices=["ml-latest-small", "ml-1m", "ml-20m", "ml-25m", "ml-32m"])
    download.add_argument("--raw-dir", type=Path, default=None, help="default: data.raw_dir from config")
    generate = commands.add_parser("generate", help="write ML-25M-shaped synthetic ratings.csv")
    generate.add_argument("--scale", type=float, default=None, help="default: data.synthetic_scale")
    generate.add_argument("--seed", type=int, default=None, help="default: data.synthetic_seed")
    generate.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    configure_logging()
    config = config_from_args(args)

    if args.command == "download":
        from recsys.datasets.download import download_dataset

        raw_dir = args.raw_dir or Path(config.project_path(config.data.raw_dir))
        print(download_dataset(args.name, raw_dir))
    else:
        from recsys.datasets import synthetic_path
        from recsys.datasets.synthetic import generate_synthetic

        scale = args.scale if args.scale is not None else config.data.synthetic_scale
        seed = args.seed if args.seed is not None else config.data.synthetic_seed
        out = args.out or synthetic_path(
            config.model_copy(
                update={
                    "data": config.data.model_copy(update={"synthetic_scale": scale, "synthetic_seed": seed})
                }
            )
        )
        summary = generate_synthetic(out, scale=scale, seed=seed)
        print(summary)


if __name__ == "__main__":
    main()
