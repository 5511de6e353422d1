"""The nightly DAG's model steps, one command each: train, evaluate, champion/challenger, score.

    python -m orchestration.model_tasks train --run-date 1998-04-22 [--full-retrain] [--drift-breach]
    python -m orchestration.model_tasks evaluate --run-date 1998-04-22
    python -m orchestration.model_tasks decide --run-date 1998-04-22 [--rollback]
    python -m orchestration.model_tasks score --run-date 1998-04-22

Each step runs where the DAG's runner puts it (a process of this venv, or a pod of the trainer
image on a GPU: ``orchestration.runner``), reads its run date's inputs and writes its result as
JSON under ``<train.models_dir>/nights/<run_date>/<step>.json`` for the next step, replacing a
rerun's. Nothing reads "the latest" anything: the night of D starts from the champion recorded
for the last night before D (:meth:`model.registry.ModelRegistry.champion_before`).

- **train**: the refresh policy (:func:`orchestration.policy.plan_training`) on tonight's
  sequences snapshot and the champion: a full retrain, a warm start from the champion
  (:func:`model.refresh.warm_start`), or nothing; an input drift breach in the night's
  ``drift_reports`` (:mod:`spark_jobs.drift`) makes it a full retrain. A version already in the
  registry (a rerun) is reused, not trained again.
- **evaluate**: the champion and the challenger on tonight's split, both variants
  (:func:`model.refresh.evaluate_saved`).
- **decide**: :func:`orchestration.policy.choose_champion` (or a rollback by hand); records the
  champion after tonight and moves the MLflow registry's ``champion`` / ``challenger`` aliases.
- **score**: the chosen model, loaded from the MLflow registry by alias
  (:func:`model.tracking.download_model`), scores every user and stages the recommendations with
  both models' ``model_runs`` rows (metrics on tonight's split, training mode, the decision, the
  registered version and its alias; on the scored row, the previous night's recommendations
  judged on tonight's arrivals, :mod:`model.realised`).

A trained or refreshed challenger is logged to MLflow (config, per-epoch metrics, the sequences'
Delta version, the model) and registered by the train step (:mod:`model.tracking`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import tempfile
from pathlib import Path
from typing import Any

from orchestration.policy import Champion, Decision, TrainingPlan, choose_champion, plan_training
from recsys.cli import add_run_date_argument, configure_logging
from recsys.config import Config, add_config_arguments, config_from_args
from recsys.gates import gated_version

log = logging.getLogger(__name__)

NIGHTS_DIR = "nights"
STEPS = ("train", "evaluate", "decide", "score")


def night_path(config: Config, run_date: dt.date, step: str) -> Path:
    from model.registry import ModelRegistry

    return ModelRegistry.from_config(config).root / NIGHTS_DIR / run_date.isoformat() / f"{step}.json"


def read_step(config: Config, run_date: dt.date, step: str) -> dict[str, Any]:
    """The result an earlier step of the night of ``run_date`` wrote."""
    from model.checkpoint import load_json

    path = night_path(config, run_date, step)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: step {step!r} has not run for {run_date}")
    return load_json(path)


def write_step(config: Config, run_date: dt.date, step: str, result: dict[str, Any]) -> dict[str, Any]:
    from model.checkpoint import save_json

    save_json(result, night_path(config, run_date, step))
    log.info("%s %s: %s", step, run_date, {k: v for k, v in result.items() if k != "metrics"})
    return result


def night_plan(
    config: Config,
    run_date: dt.date,
    champion: Champion | None,
    config_hash: str,
    fingerprint: str,
    full_retrain: bool = False,
    drift_breach: bool = False,
) -> tuple[TrainingPlan, list[str]]:
    """Tonight's refresh plan, with the drift hook read from ``drift_reports``; and the measures in breach."""
    from spark_jobs.drift import input_breaches

    breached = input_breaches(config, run_date)
    if breached and config.drift.retrain_on_breach:
        log.warning("drift %s: %s in breach: a full retrain", run_date, ", ".join(breached))
        drift_breach = True
    plan = plan_training(
        run_date,
        champion,
        config_hash,
        fingerprint,
        config.orchestration.full_retrain_every_days,
        full_retrain=full_retrain,
        drift_breach=drift_breach,
        can_warm_start=config.model.name != "pop",
    )
    return plan, breached


def summarise_drift(config: Config, run_date: dt.date) -> dict[str, Any]:
    """The night's drift findings by status, and the measures in breach (for the summary and notification)."""
    from spark_jobs.drift import BREACH, report

    rows = report(config, run_date)
    by_status: dict[str, int] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    return {
        "findings": by_status,
        "breached": sorted(
            f"{r['stage']} {r['measure']} {r['statistic']}" for r in rows if r["status"] == BREACH
        ),
    }


def _champion(record: dict[str, Any] | None) -> Champion | None:
    if record is None:
        return None
    return Champion(
        record["version"],
        record["config_hash"],
        record["sequences_fingerprint"],
        dt.date.fromisoformat(record["full_retrain_on"]),
    )


def train(
    config: Config, run_date: dt.date, full_retrain: bool = False, drift_breach: bool = False
) -> dict[str, Any]:
    """Make tonight's challenger (or none) by the refresh policy; returns and records the step.

    ``drift_breach`` (the DAG param) forces the drift hook; without it, the hook fires when the
    night's ``drift_reports`` hold an input breach and ``drift.retrain_on_breach`` is on.
    """
    from model.data import SequenceData, read_as_of
    from model.registry import ModelRegistry, model_version, training_hash
    from model.train import resolve_device, save_trained, train_and_evaluate

    registry = ModelRegistry.from_config(config)
    # the sequences as the night's gate passed and published them (refused without a pass)
    gated = gated_version(config, run_date, "sequences")
    sequences, sequences_version = read_as_of(
        config.table_path("sequences"), "sequences", run_date, version=gated
    )
    data = SequenceData.from_arrow(sequences)
    fingerprint, config_hash = data.fingerprint(), training_hash(config)
    champion_record = registry.champion_before(run_date)
    champion = _champion(champion_record)
    plan, breached = night_plan(
        config, run_date, champion, config_hash, fingerprint, full_retrain, drift_breach
    )
    result: dict[str, Any] = {
        "run_date": run_date.isoformat(),
        "plan": plan.to_dict(),
        "champion": champion.version if champion else None,
        "challenger": None,
        "sequences_fingerprint": fingerprint,
        "sequences_version": sequences_version,
        "config_hash": config_hash,
        "drift_breaches": breached,
    }
    if plan.mode == "skip":
        return write_step(config, run_date, "train", result)
    parent = champion.version if plan.mode == "warm" else None
    version = model_version(config, fingerprint, parent=parent)
    result.update(
        challenger=version,
        full_retrain_on=(champion.full_retrain_on if parent else run_date).isoformat(),
        trained_tonight=not registry.has(version),
    )
    if registry.has(version):
        log.info("%s is in the registry already (a rerun of %s): reusing it", version, run_date)
        return _registered(config, run_date, result, sequences_version)
    device = resolve_device(config.device)
    work_dir = registry.work_dir(version)
    if parent:
        from model.refresh import warm_start

        log.info("warm start of %s from %s on %d users (%s)", version, parent, data.n_users, device)
        trained = warm_start(
            config, registry.path(parent), sequences, work_dir / "checkpoint", run_date, device
        )
    else:
        log.info(
            "full training of %s on %d users, %d items (%s)", version, data.n_users, data.n_items, device
        )
        trained = train_and_evaluate(config, data, work_dir / "checkpoint", run_date, device)
    save_trained(work_dir, config, trained)
    registry.publish(version)
    return _registered(config, run_date, result, sequences_version)


def _registered(
    config: Config, run_date: dt.date, result: dict[str, Any], sequences_version: int
) -> dict[str, Any]:
    """Record the train step once its challenger is a version of the MLflow registered model."""
    from model.registry import ModelRegistry
    from model.tracking import log_model_version

    version = result["challenger"]
    registered = log_model_version(
        config,
        version,
        ModelRegistry.from_config(config).path(version),
        run_date,
        {"sequences": sequences_version},
        result["plan"]["mode"],
        parent=result["champion"] if result["plan"]["mode"] == "warm" else None,
        fingerprint=result["sequences_fingerprint"],
    )
    result.update(registered_version=str(registered.version), mlflow_run_id=registered.run_id)
    return write_step(config, run_date, "train", result)


def evaluate(config: Config, run_date: dt.date) -> dict[str, Any]:
    """The champion's and the challenger's metrics on tonight's split (the sequences train read)."""
    from model.data import read_as_of
    from model.refresh import evaluate_saved
    from model.registry import ModelRegistry
    from model.train import resolve_device

    planned = read_step(config, run_date, "train")
    registry = ModelRegistry.from_config(config)
    sequences = read_as_of(
        config.table_path("sequences"), "sequences", run_date, version=planned["sequences_version"]
    )[0]
    device = resolve_device(config.device)
    metrics = {}
    for role in ("champion", "challenger"):
        version = planned[role]
        if version is not None and version not in [entry["version"] for entry in metrics.values()]:
            metrics[role] = {
                "version": version,
                "metrics": evaluate_saved(config, registry.path(version), sequences, device),
            }
    return write_step(config, run_date, "evaluate", {"run_date": run_date.isoformat(), "models": metrics})


def decide(config: Config, run_date: dt.date, rollback: bool = False) -> dict[str, Any]:
    """Champion/challenger on tonight's split; records the champion after tonight, moves the aliases.

    ``rollback``: whatever the metrics say, the champion after tonight is the one before the
    latest promotion: tonight's challenger is rejected when it would be promoted, and otherwise
    the champion in force goes back to the one it replaced. The aliases move (and the registry's
    record of the night is replaced) only when tonight is the newest night with a record: a
    backfill leaves them where the latest night put them (:mod:`model.tracking`).
    """
    from model import tracking
    from model.registry import ModelRegistry

    planned = read_step(config, run_date, "train")
    models = read_step(config, run_date, "evaluate")["models"]
    registry = ModelRegistry.from_config(config)

    def of(role: str) -> tuple[str | None, dict | None]:
        entry = models.get(role)
        return (entry["version"], entry["metrics"]) if entry else (planned[role], None)

    decision = choose_champion(*of("champion"), *of("challenger"), config.orchestration.promotion_tolerance)
    before = registry.champion_before(run_date)
    challenger = planned["challenger"] if planned["challenger"] != decision.champion else None
    if rollback:
        decision, record, challenger = _rolled_back(registry, run_date, decision, before, challenger)
    elif decision.promoted:
        record = {
            "version": decision.champion,
            "config_hash": planned["config_hash"],
            "sequences_fingerprint": planned["sequences_fingerprint"],
            "full_retrain_on": planned["full_retrain_on"],
            "promoted_on": run_date.isoformat(),
            "metric": decision.challenger_metric,
        }
    else:
        record = before
    registry.record_champion(run_date, record)
    mlflow_client = tracking.client(config)
    for version in {decision.champion, challenger} - {None}:
        if tracking.registered_version(mlflow_client, config, version) is None:
            # A model trained before the lake had a registry (an older release): registered now.
            log.warning(
                "%s is not in the MLflow registry: registering it from %s", version, registry.path(version)
            )
            tracking.log_model_version(config, version, registry.path(version), run_date, {}, "imported")
    registered = {
        version: str(entry.version)
        for version in {decision.champion, *(e["version"] for e in models.values()), challenger} - {None}
        if (entry := tracking.registered_version(mlflow_client, config, version)) is not None
    }
    # What tonight's decision gives each alias (recorded, and reproduced by a backfill); the
    # registry's aliases move to it only when tonight is the newest night.
    aliases = {
        tracking.CHAMPION: registered.get(decision.champion),
        tracking.CHALLENGER: registered.get(challenger) if challenger else None,
    }
    newest = registry.champion_dates()[-1] == run_date
    if newest:
        tracking.move_aliases(config, decision.champion, challenger)
    else:
        log.info("%s is a backfill (newer nights are recorded): the registry's aliases stay", run_date)
    return write_step(
        config,
        run_date,
        "decide",
        {
            "run_date": run_date.isoformat(),
            **decision.to_dict(),
            "rollback": rollback,
            "aliases": aliases,
            "aliases_moved": newest,
            "registered": registered,
        },
    )


def _rolled_back(
    registry: Any,
    run_date: dt.date,
    decision: Decision,
    before: dict[str, Any] | None,
    challenger: str | None,
) -> tuple[Decision, dict[str, Any], str | None]:
    """(the decision, the champion record, the challenger alias's version) of a rollback on ``run_date``."""
    if decision.promoted and before is not None:
        rejected, record = decision.champion, before
    elif before is not None and (
        previous := registry.champion_before(dt.date.fromisoformat(before["promoted_on"]))
    ):
        rejected, record = before["version"], {**previous, "rolled_back_on": run_date.isoformat()}
    else:
        raise ValueError(f"rollback on {run_date}: no champion before the latest promotion to go back to")
    reason = (
        f"rollback by hand: {rejected} replaced by {record['version']} (promoted on {record['promoted_on']})"
    )
    log.warning("%s: %s", run_date, reason)
    rolled = Decision(record["version"], False, reason, decision.champion_metric, decision.challenger_metric)
    return rolled, record, rejected


def score(
    config: Config, run_date: dt.date, run_id: str | None = None, full_rescore: bool = False
) -> dict[str, Any]:
    """Tonight's champion scores every user; staged with both models' ``model_runs`` rows.

    ``full_rescore``: every user re-encoded from their window, whatever ``scoring.state_mode``
    says (no state of an earlier night is read; tonight's are written as usual).
    """
    from model.realised import realised_quality
    from model.registry import ModelRegistry
    from model.score import model_run_row, score_run
    from model.tracking import download_model
    from model.train import resolve_device

    planned = read_step(config, run_date, "train")
    models = read_step(config, run_date, "evaluate")["models"]
    decided = read_step(config, run_date, "decide")
    registry = ModelRegistry.from_config(config)
    aliases = {number: alias for alias, number in decided["aliases"].items() if number is not None}
    realised = realised_quality(config, run_date)

    def rows(input_versions: dict[str, int], fingerprint: str) -> list[dict[str, Any]]:
        out = []
        for role, entry in models.items():
            version = entry["version"]
            saved = registry.metrics(version)
            # How the night made the model (a rerun that finds it in the registry reports the
            # same, so the night's rows are reproduced); a champion row says so only on a skip.
            if role == "challenger":
                mode = planned["plan"]["mode"]
            else:
                mode = "skip" if planned["challenger"] is None else None
            metrics = {
                **entry["metrics"],
                "training_seconds": saved.get("training_seconds", 0.0),
                "trained_on": saved.get("trained_on"),
            }
            out.append(
                model_run_row(
                    config,
                    run_date,
                    version,
                    metrics,
                    input_versions,
                    fingerprint,
                    role=role,
                    scored=version == decided["champion"],
                    training_mode=mode,
                    promoted=decided["promoted"] and version == decided["champion"],
                    decision=decided["reason"],
                    registry_version=decided["registered"].get(version),
                    alias=aliases.get(decided["registered"].get(version)),
                    realised=realised if version == decided["champion"] else None,
                )
            )
        return out

    if full_rescore:
        config = config.model_copy(
            update={"scoring": config.scoring.model_copy(update={"state_mode": "full"})}
        )
    with tempfile.TemporaryDirectory(prefix="recsys-model-") as downloaded:
        model_dir, model_uri = download_model(config, decided["champion"], downloaded)
        manifest = score_run(
            config,
            run_date,
            decided["champion"],
            resolve_device(config.device),
            run_id=run_id,
            model_runs=rows,
            model_dir=model_dir,
            sequences_version=planned["sequences_version"],
        ).manifest
    result = {
        key: manifest[key] for key in ("model_version", "users", "fallback_users", "rows", "top_k", "states")
    }
    result["model_uri"] = model_uri
    return write_step(config, run_date, "score", {"run_date": run_date.isoformat(), **result})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestration.model_tasks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("step", choices=STEPS)
    add_run_date_argument(parser)
    add_config_arguments(parser)
    parser.add_argument(
        "--full-retrain", action="store_true", help="train: a full retrain whatever the policy says"
    )
    parser.add_argument(
        "--drift-breach", action="store_true", help="train: the drift check breached (full retrain)"
    )
    parser.add_argument(
        "--rollback",
        action="store_true",
        help="decide: back to the champion before the latest promotion, whatever the metrics say",
    )
    parser.add_argument("--run-id", default=None, help="score: the run id stamped on the staged manifest")
    parser.add_argument(
        "--full-rescore",
        action="store_true",
        help="score: re-encode every user, reading no stored user state (scoring.state_mode full)",
    )
    args = parser.parse_args(argv)
    configure_logging()
    config = config_from_args(args)
    if args.step == "train":
        result = train(config, args.run_date, args.full_retrain, args.drift_breach)
    elif args.step == "score":
        result = score(config, args.run_date, args.run_id, args.full_rescore)
    elif args.step == "decide":
        result = decide(config, args.run_date, args.rollback)
    else:
        result = evaluate(config, args.run_date)
    log.info("%s %s done: %s", args.step, args.run_date, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
