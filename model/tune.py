"""Hyper-parameter search with Optuna on validation NDCG@10: ``python -m model.tune``.

    python -m model.tune --run-date 2024-01-01 --model ss4rec --trials 40
    python -m model.tune --run-date 2024-01-01 --model sasrec --trials 40   # the same budget

Each trial trains ``--model`` from scratch with :class:`model.train.Trainer` on the run's
sequences (early stopping on validation, as ``model.train`` does) and scores its best
weights on the validation users; the objective is validation NDCG@10 in ``--variant``
(default ``production``, the variant the nightly promotion policy reads). Test users are
never looked at. The search space (:func:`suggest`):

* every model: ``train.lr`` (log-uniform 1e-4..1e-2), ``model.dropout`` (0..0.5),
  ``model.hidden_size`` (32, 64, 128), ``model.n_layers`` (1..3) and the input window
  ``model.max_seq_len`` (20, 50, 100, 200);
* SS4Rec and its ablations also the time scale of S5's steps: ``model.dt_min`` (log-uniform
  1e-6..1e-2) and ``model.dt_max`` (log-uniform 1e-2..1) per unit of gap (the released
  setting is 0.001..0.1 per second), and ``model.gap_transform`` (linear or log1p; see
  docs/time_scale.md, which also says why the unit itself is not a separate axis).

The study is resumable: it lives in SQLite, ``<out-dir>/<study>.db`` (default
``artifacts/tune/<model>-<run date>.db``), and ``--trials`` is the number of finished
trials wanted, so a second invocation runs only what is missing (a trial interrupted
mid-way, or failed by a diverging loss, is not finished and is replaced). Trials are
sampled by TPE seeded from ``train.seed``; a trial whose per-epoch validation NDCG@10
(the trainer's paper-variant monitor) falls below the median of earlier trials at the same
epoch is pruned (Optuna's ``MedianPruner``, after ``--startup-trials`` trials and
``--warmup-epochs`` epochs).

The best trial is written as a configuration overlay, ``<out-dir>/<study>.best.yaml``: the
keys it tuned, nothing else, which ``model.train --overlay FILE`` and the nightly run
(``RECSYS_OVERLAYS=FILE``) layer over their profile.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from model.data import SequenceData, read_sequences
from model.evaluate import EVALUATION_PROTOCOL, evaluate
from model.train import MONITOR, Trainer, TrainResult, build_model, resolve_device, seed_everything
from recsys.cli import add_run_date_argument, configure_logging
from recsys.config import Config, add_config_arguments, config_from_args

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

TUNED_MODELS = ("ss4rec", "ss4rec_s5_only", "ss4rec_mamba_only", "sasrec")
OBJECTIVE = "ndcg@10"


def suggest(trial: optuna.Trial, model_name: str) -> dict[str, dict[str, Any]]:
    """One trial's configuration keys, ``{section: {key: value}}`` (see the module docstring)."""
    model = {
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "hidden_size": trial.suggest_categorical("hidden_size", [32, 64, 128]),
        "n_layers": trial.suggest_int("n_layers", 1, 3),
        "max_seq_len": trial.suggest_categorical("max_seq_len", [20, 50, 100, 200]),
    }
    if model_name.startswith("ss4rec"):
        model["dt_min"] = trial.suggest_float("dt_min", 1e-6, 1e-2, log=True)
        model["dt_max"] = trial.suggest_float("dt_max", 1e-2, 1.0, log=True)
        model["gap_transform"] = trial.suggest_categorical("gap_transform", ["linear", "log1p"])
    return {"model": model, "train": {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True)}}


def apply(config: Config, keys: dict[str, dict[str, Any]]) -> Config:
    """``config`` with ``keys`` set, validated as any configuration layer is."""
    payload = config.model_dump(mode="json")
    for section, values in keys.items():
        payload[section].update(values)
    return type(config).model_validate(payload)


class _PruningTrainer(Trainer):
    """A Trainer that reports each epoch's validation score to the trial and stops a pruned one."""

    def __init__(self, trial: optuna.Trial, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trial = trial
        self.step = 0

    def _validate(self) -> dict[str, float]:
        import optuna

        valid = super()._validate()
        self.trial.report(valid[MONITOR], self.step)
        self.step += 1
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"epoch {self.step - 1}: valid {MONITOR} {valid[MONITOR]:.4f}")
        return valid


def fit_on_validation(
    config: Config,
    data: SequenceData,
    directory: Path,
    variants: Sequence[str],
    device: str,
    trainer: Callable[..., Trainer] = Trainer,
) -> tuple[dict[str, dict[str, float]], TrainResult]:
    """Train ``config``'s model from scratch (seeded, early stopping on validation) and score its best
    weights on the validation users: ``({variant: metrics at 10}, the training result)``.

    ``trainer`` builds the Trainer (a subclass may report epochs, as a pruned trial does); the
    checkpoints under ``directory`` are removed afterwards (a study keeps figures, not weights).
    """
    seed_everything(config.train.seed)
    model = build_model(config, data.n_items, data.n_users)
    max_len = config.model.max_seq_len
    try:
        result = trainer(model, data, config.train, config.scoring.eval_ks, directory, device, max_len).fit()
        valid = evaluate(
            model,
            data,
            "valid",
            [10],
            variants=list(variants),
            max_len=max_len,
            device=device,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return valid, result


def objective(
    trial: optuna.Trial,
    config: Config,
    data: SequenceData,
    work_dir: Path,
    variant: str,
    device: str,
) -> float:
    """Train one trial's configuration; its best weights' validation NDCG@10 in ``variant``."""
    keys = suggest(trial, config.model.name)
    trial.set_user_attr("config", keys)
    valid, result = fit_on_validation(
        apply(config, keys),
        data,
        work_dir / f"trial-{trial.number}",
        [variant],
        device,
        lambda *args: _PruningTrainer(trial, *args),
    )
    trial.set_user_attr("best_epoch", result.best_epoch)
    trial.set_user_attr("epochs_run", len(result.history))
    return valid[variant][OBJECTIVE]


def finished_trials(study: optuna.Study) -> int:
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(trial.state in done for trial in study.trials)


def write_overlay(study: optuna.Study, path: Path, variant: str) -> Path:
    """The best trial's keys as a YAML configuration overlay (atomically)."""
    best = study.best_trial
    header = (
        f"# python -m model.tune, study {study.study_name}: best of {finished_trials(study)} trials is "
        f"trial {best.number}, validation {variant} {OBJECTIVE} {best.value:.4f}\n"
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(header + yaml.safe_dump(best.user_attrs["config"], sort_keys=True))
    tmp.replace(path)
    return path


def tune(
    config: Config,
    data: SequenceData,
    run_date: dt.date,
    out_dir: Path,
    trials: int,
    study_name: str | None = None,
    variant: str = "production",
    startup_trials: int = 5,
    warmup_epochs: int = 3,
    device: str = "cpu",
) -> tuple[optuna.Study, Path]:
    """Run the study to ``trials`` finished trials; return it and the best trial's overlay."""
    import optuna

    name = config.model.name
    if name not in TUNED_MODELS:
        raise ValueError(f"model.name={name}: python -m model.tune tunes {', '.join(TUNED_MODELS)}")
    study_name = study_name or f"{name}-{run_date.isoformat()}"
    out_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=study_name,
        storage=f"sqlite:///{(out_dir / f'{study_name}.db').resolve()}",
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=config.train.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs),
    )
    # A trial's value is only comparable under the evaluation protocol it was scored with.
    protocol = study.user_attrs.get("evaluation_protocol")
    if protocol is None and not study.trials:
        study.set_user_attr("evaluation_protocol", EVALUATION_PROTOCOL)
    elif protocol != EVALUATION_PROTOCOL:
        raise ValueError(
            f"study {study_name} in {out_dir} was scored under evaluation protocol "
            f"{protocol or '2 or earlier'}, not {EVALUATION_PROTOCOL} (model.evaluate.EVALUATION_PROTOCOL): "
            "name a new study (--study) or remove its .db"
        )
    missing = trials - finished_trials(study)
    log.info("study %s: %d trials finished, %d to run", study_name, trials - max(missing, 0), max(missing, 0))
    if missing > 0:
        work_dir = out_dir / study_name
        study.optimize(
            lambda trial: objective(trial, config, data, work_dir, variant, device),
            n_trials=missing,
            catch=(FloatingPointError,),  # a diverging learning rate fails its trial, not the study
        )
    return study, write_overlay(study, out_dir / f"{study_name}.best.yaml", variant)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.tune", description=__doc__.splitlines()[0])
    add_run_date_argument(parser)
    add_config_arguments(parser)
    parser.add_argument("--model", choices=TUNED_MODELS, default=None, help="default: model.name")
    parser.add_argument("--trials", type=int, default=40, help="finished trials wanted (default %(default)s)")
    parser.add_argument("--study", default=None, help="study name (default <model>-<run date>)")
    parser.add_argument("--variant", choices=("paper", "production"), default="production")
    parser.add_argument("--startup-trials", type=int, default=5)
    parser.add_argument("--warmup-epochs", type=int, default=3)
    parser.add_argument("--sequences-path", help="sequences Delta table (default: the configured lake table)")
    parser.add_argument("--out-dir", type=Path, default=Path("artifacts") / "tune")
    args = parser.parse_args(argv)
    configure_logging()
    if args.model:
        args.overrides = [*args.overrides, f"model.name={args.model}"]
    config = config_from_args(args)
    device = resolve_device(config.device)
    data = SequenceData.from_arrow(
        read_sequences(args.sequences_path or config.table_path("sequences"), args.run_date)
    )
    study, overlay = tune(
        config,
        data,
        args.run_date,
        args.out_dir,
        args.trials,
        args.study,
        args.variant,
        args.startup_trials,
        args.warmup_epochs,
        str(device),
    )
    best = study.best_trial
    print(f"best trial {best.number}: validation {args.variant} {OBJECTIVE} {best.value:.4f}")
    print(yaml.safe_dump(best.user_attrs["config"], sort_keys=True).rstrip())
    print(f"overlay: {overlay}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
