"""Shared pieces of every entry point: logging set-up and the --run-date flag."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str | None = None) -> None:
    """Log to stderr at ``level`` (default ``$RECSYS_LOG_LEVEL`` or INFO)."""
    logging.basicConfig(
        level=(level or os.environ.get("RECSYS_LOG_LEVEL", "INFO")).upper(), format=LOG_FORMAT
    )
    for noisy in ("py4j", "urllib3", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def parse_run_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--run-date must be YYYY-MM-DD, got {text!r}") from exc


def add_run_date_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-date",
        type=parse_run_date,
        required=True,
        help="logical date of the run (YYYY-MM-DD); every write touches only this date's partition",
    )
