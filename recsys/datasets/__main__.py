"""``python -m recsys.datasets``: download a MovieLens release, generate synthetic ratings, or replay drops.

python -m recsys.datasets download ml-1m [--raw-dir data/raw]
python -m recsys.datasets generate --scale 0.1 [--seed N] [--out PATH]
python -m recsys.datasets replay ml-100k [--start 1998-04-16] [--until 1998-04-22] [--landing DIR]
python -m recsys.datasets replay --input FILE [--format ratings.csv] [--start DATE] [--until DATE]

``replay`` cuts the ratings file of a ``data.dataset`` (fetched or generated as the pipeline
would) or any ``--input`` file into daily drops ``<landing>/<YYYY-MM-DD>/<file>`` (see
:mod:`recsys.datasets.replay`); the landing zone defaults to ``<lake.root>/<pipeline.landing_dir>``.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from recsys.cli import configure_logging
from recsys.config import Config, add_config_arguments, config_from_args, is_uri, join_uri
from recsys.datasets.formats import FORMATS, format_for

if TYPE_CHECKING:
    from recsys.datasets.replay import ReplaySummary


def _iso_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from exc


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
    replay = commands.add_parser("replay", help="cut a ratings file into daily drops in the landing zone")
    replay.add_argument(
        "dataset", nargs="?", default=None, help="a data.dataset name (ml-100k, synthetic, ml-1m, ...)"
    )
    replay.add_argument("--start", type=_iso_date, default=None, help="first daily drop; earlier = history")
    replay.add_argument("--until", type=_iso_date, default=None, help="last drop; later ratings are left out")
    replay.add_argument(
        "--landing", type=Path, default=None, help="default: <lake.root>/<pipeline.landing_dir>"
    )
    replay.add_argument("--input", type=Path, default=None, help="replay this file instead of DATASET")
    replay.add_argument("--format", dest="format_name", choices=sorted(FORMATS), default=None)
    args = parser.parse_args(argv)
    if args.command == "replay" and (args.dataset is None) == (args.input is None):
        replay.error("give either DATASET or --input FILE")
    if args.command == "replay" and args.format_name is not None and args.input is None:
        replay.error("--format goes with --input (a DATASET knows its format)")
    if args.command == "replay" and args.start and args.until and args.until < args.start - dt.timedelta(1):
        replay.error("--until must be on or after the day before --start (the history drop)")
    configure_logging()
    config = config_from_args(args)

    if args.command == "download":
        from recsys.datasets import raw_dir
        from recsys.datasets.download import download_dataset

        print(download_dataset(args.name, args.raw_dir or raw_dir(config)))
    elif args.command == "replay":
        print(_replay(args, config, replay))
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


def _replay(args: argparse.Namespace, config: Config, parser: argparse.ArgumentParser) -> ReplaySummary:
    from recsys.datasets import raw_source
    from recsys.datasets.replay import replay

    if args.input is not None:
        source = args.input
        try:
            format_name = args.format_name or format_for(source).name
        except ValueError as exc:
            parser.error(str(exc))
    else:
        raw = raw_source(
            config.model_copy(update={"data": config.data.model_copy(update={"dataset": args.dataset})})
        )
        source, format_name = raw.path, raw.format_name
    landing = args.landing
    if landing is None:
        location = join_uri(config.project_path(config.lake.root), config.pipeline.landing_dir)
        if is_uri(location):
            parsed = urlparse(location)
            if parsed.scheme != "file":
                parser.error(f"the landing zone {location} is not local; pass --landing DIR")
            location = parsed.path
        landing = Path(location)
    return replay(source, format_name, landing, start=args.start, until=args.until)


if __name__ == "__main__":
    main()
