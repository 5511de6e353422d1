"""SS4Rec's time scale, studied on validation: ``python -m model.time_scale``.

    python -m model.time_scale --run-date 2024-01-01 --sequences-path LAKE/sequences \\
        --set train.epochs=30 --set train.patience=5 --set model.max_seq_len=50 \\
        --out docs/time_scale_results.md

S5's step for a gap is ``exp(log_step) * g``, ``log_step`` initialised uniformly in
``[log dt_min, log dt_max]`` and ``g = gap_seconds / time_unit_seconds`` (``gap_transform:
linear``) or ``log1p(gap_seconds / time_unit_seconds)`` (``log1p``). Each setting of
:data:`SETTINGS` trains ``model.name`` (default SS4Rec) from scratch with every other key and
the seed unchanged, with early stopping on validation as ``model.train`` does, and scores its
best weights on the validation users in both variants. Test users are never looked at. The
default is then chosen by validation NDCG@10 in the production variant, the one the nightly
promotion policy reads.

Results are kept per setting in ``<out>.json`` (with a fingerprint of the configuration, run
date, data and evaluation protocol each ran with), so an interrupted study resumes where it
stopped; a setting whose fingerprint changed runs again. The report shows every stored setting
of the current fingerprint, so ``--only`` reruns a few without dropping the others.
The report (``<out>``: a Markdown table, and ``<out>`` with suffix ``.svg``: a chart) and the
best setting as a configuration overlay (``<out>`` with suffix ``.best.yaml``) are rewritten
after every setting. docs/time_scale.md discusses the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from model.data import SequenceData, read_sequences
from model.evaluate import EVALUATION_PROTOCOL
from model.train import resolve_device
from model.tune import apply, fit_on_validation
from recsys.cli import add_run_date_argument, configure_logging
from recsys.config import Config, add_config_arguments, config_from_args

log = logging.getLogger(__name__)

VARIANTS = ("paper", "production")
OBJECTIVE_VARIANT = "production"


@dataclass(frozen=True)
class Setting:
    """One point of the study: a label and the ``model`` keys it sets."""

    label: str
    time_unit_seconds: float = 1.0
    gap_transform: str = "linear"
    dt_min: float = 0.001
    dt_max: float = 0.1

    @property
    def keys(self) -> dict[str, dict[str, Any]]:
        return {
            "model": {
                "time_unit_seconds": self.time_unit_seconds,
                "gap_transform": self.gap_transform,
                "dt_min": self.dt_min,
                "dt_max": self.dt_max,
            }
        }

    def per_second(self) -> tuple[float, float]:
        """S5's initial step multipliers per second of a linear gap (the one axis unit and dt span)."""
        return self.dt_min / self.time_unit_seconds, self.dt_max / self.time_unit_seconds


#: The released setting first; then the unit (equivalently, the per-second dt range) from a minute
#: to a day; a range wide enough to hold seconds and years at once; and the compressed gap.
SETTINGS: tuple[Setting, ...] = (
    Setting("released: 1 s, dt 0.001..0.1"),
    Setting("1 min", time_unit_seconds=60.0),
    Setting("1 h", time_unit_seconds=3600.0),
    Setting("1 day", time_unit_seconds=86400.0),
    Setting("1 s, dt 1e-8..0.1", dt_min=1e-8),
    Setting("log1p, 1 s", gap_transform="log1p"),
    Setting("log1p, 1 h", time_unit_seconds=3600.0, gap_transform="log1p"),
)


def fingerprint(config: Config, data: SequenceData, run_date: dt.date) -> str:
    """What a result depends on: the model and train sections, the run date, the data's extent
    (items, users, validation users) and the evaluation protocol."""
    payload = config.model_dump(mode="json")
    text = json.dumps(
        {
            **{k: payload[k] for k in ("model", "train")},
            "run_date": run_date.isoformat(),
            "data": [data.n_items, data.n_users, len(data.view("valid"))],
            "evaluation": EVALUATION_PROTOCOL,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_results(path: Path) -> dict[str, dict[str, Any]]:
    return json.loads(path.read_text())["results"] if path.is_file() else {}


def save(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def run_study(
    config: Config,
    data: SequenceData,
    run_date: dt.date,
    out: Path,
    settings: Sequence[Setting] = SETTINGS,
    device: str = "cpu",
    command: str = "",
) -> dict[str, dict[str, Any]]:
    """Run every setting not already in ``<out>.json`` for this configuration; write the report."""
    out.parent.mkdir(parents=True, exist_ok=True)
    store = out.with_suffix(".json")
    results = load_results(store)
    for setting in settings:
        setting_config = apply(config, setting.keys)
        key = fingerprint(setting_config, data, run_date)
        if results.get(setting.label, {}).get("fingerprint") == key:
            log.info("time scale %s: done already", setting.label)
            continue
        log.info("time scale %s: training %s", setting.label, config.model.name)
        start = time.perf_counter()
        valid, result = fit_on_validation(
            setting_config, data, out.parent / f".{out.stem}-work", VARIANTS, device
        )
        seconds = time.perf_counter() - start
        results[setting.label] = {
            "fingerprint": key,
            "keys": setting.keys,
            "per_second": list(setting.per_second()),
            "valid": valid,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "seconds": round(seconds, 1),
        }
        log.info(
            "time scale %s: valid NDCG@10 paper %.4f, production %.4f (best epoch %d of %d, %.0fs)",
            setting.label,
            valid["paper"]["ndcg@10"],
            valid["production"]["ndcg@10"],
            result.best_epoch,
            len(result.history),
            seconds,
        )
        payload = {
            "command": command,
            "model": config.model.name,
            "run_date": run_date.isoformat(),
            "results": results,
        }
        save(store, payload)
        write_report(results, reported(results, settings, config, data, run_date), out, config, command)
    return results


def reported(
    results: dict[str, dict[str, Any]],
    settings: Sequence[Setting],
    config: Config,
    data: SequenceData,
    run_date: dt.date,
) -> list[Setting]:
    """The settings the report shows: every one (of ``settings`` and :data:`SETTINGS`) whose
    stored result is of this configuration and data, so a run of a few (``--only``) keeps the rest."""
    candidates = [*SETTINGS, *(s for s in settings if s not in SETTINGS)]
    return [
        s
        for s in candidates
        if results.get(s.label, {}).get("fingerprint") == fingerprint(apply(config, s.keys), data, run_date)
    ]


def best_setting(results: dict[str, dict[str, Any]]) -> str:
    """The label with the highest validation NDCG@10 in the production variant."""
    return max(results, key=lambda label: results[label]["valid"][OBJECTIVE_VARIANT]["ndcg@10"])


def write_report(
    results: dict[str, dict[str, Any]], settings: Sequence[Setting], out: Path, config: Config, command: str
) -> None:
    """``out`` (Markdown table), its ``.svg`` chart and the best setting's ``.best.yaml`` overlay."""
    best = best_setting({s.label: results[s.label] for s in settings})
    lines = [
        f"# SS4Rec's time scale on validation ({config.model.name})",
        "",
        f"Generated by `{command}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; "
        f"{platform.machine()}, one seed ({config.train.seed}). Validation users only; the best "
        f"setting by validation {OBJECTIVE_VARIANT} NDCG@10 is in bold. Discussion: docs/time_scale.md.",
        "",
        "| setting | unit s | gap | dt | per second | paper HR@10 | paper NDCG@10 | production HR@10 "
        "| production NDCG@10 | best epoch / run | s |",
        "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for setting in settings:
        r = results[setting.label]
        low, high = r["per_second"]
        per_second = f"{low:.2g}..{high:.2g}" if setting.gap_transform == "linear" else "-"
        paper, production = r["valid"]["paper"], r["valid"]["production"]
        name = f"**{setting.label}**" if setting.label == best else setting.label
        lines.append(
            f"| {name} | {setting.time_unit_seconds:g} | {setting.gap_transform} | "
            f"{setting.dt_min:g}..{setting.dt_max:g} | {per_second} | {paper['hr@10']:.4f} | "
            f"{paper['ndcg@10']:.4f} | {production['hr@10']:.4f} | {production['ndcg@10']:.4f} | "
            f"{r['best_epoch']} / {r['epochs_run']} | {r['seconds']:.0f} |"
        )
    lines += [
        "",
        f"![validation NDCG@10 per setting]({out.with_suffix('.svg').name})",
        "",
        f"Settings: model {config.model.name}, hidden {config.model.hidden_size}, layers "
        f"{config.model.n_layers}, window {config.model.max_seq_len}, dropout {config.model.dropout}, "
        f"lr {config.train.lr}, batch {config.train.batch_size}, epochs {config.train.epochs}, "
        f"patience {config.train.patience}.",
        "",
    ]
    out.write_text("\n".join(lines))
    plot(results, settings, out.with_suffix(".svg"), config.model.name)
    overlay = out.with_suffix(".best.yaml")
    header = (
        f"# python -m model.time_scale: best of {len(settings)} settings by validation {OBJECTIVE_VARIANT} "
        f"NDCG@10 is {best!r} ({results[best]['valid'][OBJECTIVE_VARIANT]['ndcg@10']:.4f})\n"
    )
    overlay.write_text(header + yaml.safe_dump(results[best]["keys"], sort_keys=True))


def plot(results: dict[str, dict[str, Any]], settings: Sequence[Setting], path: Path, model: str) -> None:
    from recsys.plots import variant_bars

    values = {v: [results[s.label]["valid"][v]["ndcg@10"] for s in settings] for v in VARIANTS}
    variant_bars(
        path,
        [s.label for s in settings],
        values,
        "validation NDCG@10",
        f"{model}: S5's time scale (one seed)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.time_scale", description=__doc__.splitlines()[0])
    add_run_date_argument(parser)
    add_config_arguments(parser)
    parser.add_argument("--sequences-path", help="sequences Delta table (default: the configured lake table)")
    parser.add_argument(
        "--out", type=Path, default=Path("artifacts") / "time_scale" / "report.md", help="the Markdown report"
    )
    parser.add_argument(
        "--only", action="append", default=None, metavar="LABEL", help="run only these settings (repeatable)"
    )
    args = parser.parse_args(argv)
    configure_logging()
    config = config_from_args(args)
    if not config.model.name.startswith("ss4rec") or config.model.name == "ss4rec_mamba_only":
        parser.error(f"model.name={config.model.name}: the time scale is S5's (ss4rec or ss4rec_s5_only)")
    settings = [s for s in SETTINGS if args.only is None or s.label in args.only]
    data = SequenceData.from_arrow(
        read_sequences(args.sequences_path or config.table_path("sequences"), args.run_date)
    )
    command = shlex.join(["python", "-m", "model.time_scale", *(sys.argv[1:] if argv is None else argv)])
    device = str(resolve_device(config.device))
    results = run_study(config, data, args.run_date, args.out, settings, device, command)
    best = best_setting(
        {s.label: results[s.label] for s in reported(results, settings, config, data, args.run_date)}
    )
    print(f"best by validation {OBJECTIVE_VARIANT} NDCG@10: {best}; report {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
