"""The RecBole peer's command line (run by its own interpreter, ``.venv-recbole/bin/python``).

Every command writes JSON (``--json``, and to stdout); the training commands can also write the
test score matrix and its ids (``--scores``, ``.npz`` of plain arrays: it loads with
``allow_pickle=False``)::

    python -m peers.recbole sasrec  --seed 2020 [--epochs N] [--set KEY=VALUE ...] --json F [--scores F.npz]
    python -m peers.recbole ss4rec  --seed 2020 [...]          # our SS4Rec under RecBole's trainer
    python -m peers.recbole throughput [--batches 5] [--set KEY=VALUE ...] --json F
    python -m peers.recbole metrics --scores F.npz --json F   # RecBole's Hit/NDCG/MRR of given scores
    python -m peers.recbole split --json F                    # RecBole's valid/test target per user

``--dataset`` / ``--data-path`` select RecBole atomic files (default: the ml-100k example inside
the recbole package); ``--threads`` sets torch's intra-op threads.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import yaml


def setting_value(text: str) -> Any:
    """A ``--set`` value: JSON (what :mod:`model.recbole_peer` writes, so ``1e-05`` stays a float),
    else YAML for a hand-typed one (``[0,40]``, ``none``, a bare word)."""
    try:
        return json.loads(text)
    except ValueError:
        return yaml.safe_load(text)


def _settings(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = setting_value(value)
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m peers.recbole", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("sasrec", "train and test RecBole's SASRec on the paper protocol"),
        ("ss4rec", "train and test our SS4Rec under RecBole's dataset, trainer and evaluator"),
        ("throughput", "RecBole SASRec training throughput (samples per second)"),
        ("metrics", "RecBole's Hit/NDCG/MRR of a score matrix (npz: scores, target_index)"),
        ("split", "RecBole's leave-one-out valid and test target of every user"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--json", type=Path, help="write the result here")
        command.add_argument("--threads", type=int, help="torch intra-op threads")
        if name == "metrics":
            command.add_argument("--scores", type=Path, required=True)
            command.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20])
            continue
        command.add_argument("--dataset", default="ml-100k")
        command.add_argument(
            "--data-path", help="RecBole atomic-files root (default: recbole's dataset_example)"
        )
        if name == "split":
            command.add_argument("--recbole-float32-time", action="store_true")
            continue
        command.add_argument("--seed", type=int, default=2020)
        command.add_argument("--device", default="auto", help="cpu | cuda | auto")
        command.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="a RecBole setting (JSON or YAML)"
        )
        if name == "throughput":
            command.add_argument("--batches", type=int, default=5)
            continue
        command.add_argument(
            "--epochs", type=int, help="cap on training epochs (default: 200, early stopping)"
        )
        command.add_argument("--scores", type=Path, help="write the test score matrix and ids here (.npz)")
        if name == "sasrec":
            command.add_argument(
                "--recbole-float32-time",
                action="store_true",
                help="RecBole's float32 timestamps (its shipped behaviour) instead of exact ones",
            )
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out: dict[str, Any]
    if args.command == "metrics":
        from peers.recbole.reference import recbole_metrics

        if not args.scores.is_file():
            parser.error(f"--scores {args.scores}: no such file")
        with np.load(args.scores, allow_pickle=False) as data:
            out = recbole_metrics(data["scores"], data["target_index"], tuple(args.ks))
    elif args.command == "split":
        from peers.recbole.reference import split_targets

        out = split_targets(not args.recbole_float32_time, args.dataset, args.data_path)
    elif args.command == "throughput":
        from peers.recbole.reference import measure_training_throughput

        out = measure_training_throughput(
            n_batches=args.batches,
            seed=args.seed,
            device=args.device,
            overrides=_settings(parser, args.set),
            dataset=args.dataset,
            data_path=args.data_path,
        )
    else:
        overrides = _settings(parser, args.set)
        if args.epochs is not None:
            overrides["epochs"] = args.epochs
        if args.command == "sasrec":
            from peers.recbole.reference import run_reference

            result = run_reference(
                args.seed, overrides, args.device, args.dataset, args.data_path, not args.recbole_float32_time
            )
        else:
            from peers.recbole.ss4rec_adapter import run_ss4rec_under_recbole

            result = run_ss4rec_under_recbole(args.seed, overrides, args.device, args.dataset, args.data_path)
        out = result.summary()
        if args.scores:
            result.save_scores(args.scores)
            out["scores_file"] = str(args.scores)
    text = json.dumps(out, indent=2, default=str)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return out


if __name__ == "__main__":
    main()
