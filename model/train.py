"""Model-agnostic training with early stopping, exact resume, and the ``python -m model.train`` CLI.

Any model with the contract ``calculate_loss(items, timestamps, lengths[, users])`` and
``full_sort_predict(items, timestamps, lengths, query_time[, users])`` trains here: SS4Rec,
SASRec, NCF, Pop. One epoch = one pass over the ``train`` view (every user's training
sequence; the model trains on all its positions at once), Adam at ``train.lr``, batches of
``train.batch_size`` users, shuffled by a generator seeded from ``(train.seed, epoch)``.

After each epoch the validation users are scored (paper variant) and NDCG@10 drives early
stopping exactly as RecBole's ``early_stopping`` does: a score >= the best so far is an
improvement (the later epoch wins ties) and training stops once ``train.patience`` + 1
consecutive epochs fail to improve. The best epoch's weights are what the test sees.

Resume: at the end of every epoch the full training state (model, optimizer, epoch, best
score and epoch, early-stopping counter, history, the torch / CUDA / NumPy / Python RNG
states) is written atomically to ``<work_dir>/last.pt``, and the best weights to
``<work_dir>/best.safetensors``. A new :class:`Trainer` on the same ``work_dir`` continues
from there and ends with the same weights as an uninterrupted run.

On CUDA, ``train.amp`` runs the loss under bf16 autocast and ``train.compile`` compiles the
model; both are ignored on CPU. Evaluation always scores in float32.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from model.checkpoint import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    VOCAB_FILE,
    WEIGHTS_FILE,
    load_json,
    load_training_state,
    load_weights,
    save_artifacts,
    save_training_state,
    save_weights,
)
from model.data import IdVocab, SequenceData, model_arguments, read_sequences
from model.evaluate import evaluate, evaluate_view
from recsys.cli import add_run_date_argument, configure_logging
from recsys.config import Config, TrainConfig, add_config_arguments, config_from_args

log = logging.getLogger(__name__)

MONITOR = "ndcg@10"
STATE_FILE = "last.pt"
BEST_FILE = "best.safetensors"


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda is configured but no CUDA GPU is visible; use device=auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(config: Config, n_items: int, n_users: int) -> nn.Module:
    """The model ``config.model.name`` names, sized for the vocabularies."""
    name = config.model.name
    if name.startswith("ss4rec"):
        from model.ss4rec import SS4Rec, SS4RecConfig

        return SS4Rec(SS4RecConfig.from_model_config(config.model, n_items))
    if name == "sasrec":
        from model.baselines import SASRec, SASRecConfig

        return SASRec(SASRecConfig.from_model_config(config.model, n_items, config.model.max_seq_len))
    if name == "ncf":
        from model.baselines import NCF, NCFConfig

        return NCF(NCFConfig.from_model_config(config.model, n_users, n_items))
    if name == "pop":
        from model.baselines import Pop

        return Pop(n_items)
    raise ValueError(f"model.name={name}: not trained here (ALS is trained by Spark MLlib in spark_jobs)")


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    train_seconds: float
    valid_seconds: float
    valid: dict[str, float]


@dataclass
class TrainResult:
    best_epoch: int
    best_score: float
    stopped_early: bool
    history: list[EpochRecord] = field(default_factory=list)

    @property
    def mean_epoch_seconds(self) -> float:
        """Mean training time of one epoch (validation excluded)."""
        return float(np.mean([r.train_seconds for r in self.history])) if self.history else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "best_valid_ndcg@10": self.best_score,
            "stopped_early": self.stopped_early,
            "epochs_run": len(self.history),
            "mean_epoch_seconds": self.mean_epoch_seconds,
            "history": [asdict(record) for record in self.history],
        }


class Trainer:
    """Trains ``model`` on ``data``'s train view, validating on its valid view (see module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        data: SequenceData,
        train_config: TrainConfig,
        eval_ks: list[int],
        work_dir: str | Path,
        device: torch.device | str = "cpu",
        max_len: int | None = None,
        eval_batch_size: int = 256,
    ) -> None:
        self.model = model.to(device)
        self.data = data
        self.config = train_config
        self.eval_ks = sorted({*eval_ks, 10})
        self.work_dir = Path(work_dir)
        self.device = torch.device(device)
        self.eval_batch_size = eval_batch_size
        self.train_view = data.view("train", max_len=max_len)
        self.valid_view = data.view("valid", max_len=max_len)
        if len(self.train_view) == 0:
            raise ValueError("no user has 2 or more training events: nothing to train on")
        if len(self.valid_view) == 0:
            raise ValueError("no user has 3 or more events: no validation target for early stopping")
        self.on_cuda = self.device.type == "cuda"
        self.epochs = 1 if getattr(model, "single_pass", False) else train_config.epochs
        self.optimizer = torch.optim.Adam(model.parameters(), lr=train_config.lr)
        if self.on_cuda and train_config.compile:
            model.compile()

    def fit(self) -> TrainResult:
        """Train to the end or to early stopping, resuming from ``work_dir`` when it holds a state."""
        state_path = self.work_dir / STATE_FILE
        if state_path.exists():
            result, start_epoch, bad_epochs, finished = self._resume(state_path)
        else:
            seed_everything(self.config.seed)
            result = TrainResult(best_epoch=-1, best_score=float("-inf"), stopped_early=False)
            start_epoch, bad_epochs, finished = 0, 0, False
        epoch = start_epoch
        while not finished and epoch < self.epochs:
            loss, train_seconds = self._train_epoch(epoch)
            started = time.perf_counter()
            valid = self._validate()
            record = EpochRecord(epoch, loss, train_seconds, time.perf_counter() - started, valid)
            result.history.append(record)
            score = valid[MONITOR]
            if score >= result.best_score:
                result.best_score, result.best_epoch, bad_epochs = score, epoch, 0
                save_weights(self.model, self.work_dir / BEST_FILE)
            else:
                bad_epochs += 1
            finished = bad_epochs > self.config.patience or epoch + 1 == self.epochs
            result.stopped_early = bad_epochs > self.config.patience
            log.info(
                "epoch %d: loss %.4f, valid %s %.4f (best %.4f at epoch %d), %.1fs train + %.1fs valid",
                epoch,
                loss,
                MONITOR,
                score,
                result.best_score,
                result.best_epoch,
                record.train_seconds,
                record.valid_seconds,
            )
            self._save_state(epoch, result, bad_epochs, finished)
            epoch += 1
        if result.stopped_early:
            log.info("early stopping: no improvement for %d epochs", self.config.patience + 1)
        load_weights(self.model, self.work_dir / BEST_FILE)
        return result

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        self.model.train()
        started = time.perf_counter()
        total, batches = 0.0, 0
        loader = self.train_view.loader(
            self.config.batch_size, shuffle=True, seed=self.config.seed * 100_003 + epoch
        )
        progress = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=None)
        for batch in progress:
            batch = batch.to(self.device)
            with torch.autocast(
                self.device.type, dtype=torch.bfloat16, enabled=self.on_cuda and self.config.amp
            ):
                loss = self.model.calculate_loss(**model_arguments(self.model.calculate_loss, batch))
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"epoch {epoch}: loss is {loss.item()}; lower train.lr or check the data"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach())
            batches += 1
            progress.set_postfix(loss=f"{total / batches:.4f}")
        return total / max(batches, 1), time.perf_counter() - started

    def _validate(self) -> dict[str, float]:
        return evaluate_view(
            self.model,
            self.valid_view,
            self.eval_ks,
            variant="paper",
            batch_size=self.eval_batch_size,
            device=self.device,
        )

    def _save_state(self, epoch: int, result: TrainResult, bad_epochs: int, finished: bool) -> None:
        numpy_state = np.random.get_state()
        python_state = random.getstate()
        state = {
            "model_class": type(self.model).__name__,
            "train_config": self.config.model_dump(mode="json"),
            "epoch": epoch,
            "finished": finished,
            "bad_epochs": bad_epochs,
            "result": {k: v for k, v in asdict(result).items() if k != "history"},
            "history": [asdict(record) for record in result.history],
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.on_cuda else [],
            "numpy_rng": {
                "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
                "position": int(numpy_state[2]),
                "has_gauss": int(numpy_state[3]),
                "cached_gaussian": float(numpy_state[4]),
            },
            "python_rng": {"version": python_state[0], "state": list(python_state[1])},
        }
        save_training_state(state, self.work_dir / STATE_FILE)

    def _resume(self, path: Path) -> tuple[TrainResult, int, int, bool]:
        state = load_training_state(path)
        expected = (type(self.model).__name__, self.config.model_dump(mode="json"))
        if (state["model_class"], state["train_config"]) != expected:
            raise RuntimeError(
                f"{path}: saved by a run of {state['model_class']} with train config "
                f"{state['train_config']}, not this one ({expected[0]}, {expected[1]}); "
                f"remove {self.work_dir} to start afresh"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if self.on_cuda and state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        numpy_rng = state["numpy_rng"]
        np.random.set_state(
            (
                "MT19937",
                numpy_rng["keys"].numpy().astype(np.uint32),
                numpy_rng["position"],
                numpy_rng["has_gauss"],
                numpy_rng["cached_gaussian"],
            )
        )
        random.setstate((state["python_rng"]["version"], tuple(state["python_rng"]["state"]), None))
        result = TrainResult(**state["result"], history=[EpochRecord(**r) for r in state["history"]])
        log.info("resuming from %s after epoch %d", path, state["epoch"])
        return result, state["epoch"] + 1, state["bad_epochs"], state["finished"]


def load_trained_model(
    directory: str | Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict, Config]:
    """A trained model from its artifact directory, with its vocabularies and configuration.

    Returns ``(model in eval mode, {"items": IdVocab, "users": IdVocab}, config)``.
    """
    directory = Path(directory)
    saved = load_json(directory / CONFIG_FILE)
    config = Config.model_validate(saved["config"])
    vocab = {name: IdVocab.from_dict(payload) for name, payload in load_json(directory / VOCAB_FILE).items()}
    model = build_model(config, n_items=len(vocab["items"]), n_users=len(vocab["users"]))
    load_weights(model, directory / WEIGHTS_FILE)
    return model.to(device).eval(), vocab, config


def read_ratings(path: str, run_date: dt.date) -> pd.DataFrame:
    """Ratings as of ``run_date``: from the versioned silver table, or all rows of a plain ratings table."""
    from deltalake import DeltaTable

    from model.data import read_as_of
    from recsys.asof import VALID_FROM_COL
    from recsys.delta import read_arrow

    columns = ["user_id", "item_id", "rating", "timestamp"]
    table = DeltaTable(path)
    if VALID_FROM_COL in [f.name for f in table.schema().fields]:
        return read_as_of(path, "ratings_silver", run_date, columns)[0].select(columns).to_pandas()
    return read_arrow(table, columns).to_pandas()


def format_metrics(results: dict[str, dict[str, float]], ks: list[int]) -> str:
    """A plain-text table: one row per variant, HR/NDCG/MRR at each k."""
    from tabulate import tabulate

    headers = ["variant", *[f"{m}@{k}" for m in ("hr", "ndcg", "mrr") for k in ks]]
    rows = [[variant, *[metrics[h] for h in headers[1:]]] for variant, metrics in results.items()]
    return tabulate(rows, headers=headers, floatfmt=".4f")


@dataclass
class TrainedModel:
    """A model trained and tested on one run's sequences, with what its artifacts record."""

    model: nn.Module
    data: SequenceData
    metrics: dict[str, Any]


def train_and_evaluate(
    config: Config,
    data: SequenceData,
    work_dir: str | Path,
    run_date: dt.date,
    device: torch.device | str = "cpu",
    ratings_path: str | None = None,
    max_len: int | None = None,
) -> TrainedModel:
    """Train ``config.model`` from scratch on ``data`` (checkpoints in ``work_dir``), then evaluate it.

    See :func:`fit_and_evaluate` for ``max_len`` and the metrics.
    """
    seed_everything(config.train.seed)
    model = build_model(config, data.n_items, data.n_users)
    return fit_and_evaluate(config, model, data, work_dir, run_date, device, ratings_path, max_len)


def fit_and_evaluate(
    config: Config,
    model: nn.Module,
    data: SequenceData,
    work_dir: str | Path,
    run_date: dt.date,
    device: torch.device | str = "cpu",
    ratings_path: str | None = None,
    max_len: int | None = None,
    train_config: TrainConfig | None = None,
) -> TrainedModel:
    """Train ``model`` (as it is: fresh or warm-started) on ``data``, then evaluate it.

    ``train_config`` defaults to ``config.train``; ``max_len`` is the model's input window
    (default ``model.max_seq_len``). Metrics: ``valid`` and ``test``, each in both variants,
    of the best-validation weights (:func:`evaluate_splits`), the training history,
    ``training_seconds`` (wall time of fit, validation included) and ``trained_on``; NCF adds
    its rating report.
    """
    max_len = max_len or config.model.max_seq_len
    trainer = Trainer(
        model, data, train_config or config.train, config.scoring.eval_ks, work_dir, device, max_len
    )
    started = time.perf_counter()
    result = trainer.fit()
    training_seconds = time.perf_counter() - started
    metrics: dict[str, Any] = evaluate_splits(model, data, config.scoring.eval_ks, max_len, device)
    metrics.update(
        valid_best=result.history[result.best_epoch].valid,
        training_seconds=training_seconds,
        trained_on=run_date.isoformat(),
        **result.to_dict(),
    )
    if config.model.name == "ncf":
        from model.baselines.ncf import rating_report

        ratings = read_ratings(ratings_path or config.table_path("ratings_silver"), run_date)
        metrics["rating"] = rating_report(model, data, ratings)
    return TrainedModel(model, data, metrics)


def evaluate_splits(
    model: nn.Module,
    data: SequenceData,
    ks: list[int],
    max_len: int | None,
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, dict[str, float]]]:
    """``{"valid": {variant: metrics}, "test": {...}}``: both variants (see :mod:`model.evaluate`)."""
    return {
        split: evaluate(model, data, split, ks, max_len=max_len, device=device) for split in ("valid", "test")
    }


def save_trained(directory: str | Path, config: Config, trained: TrainedModel) -> Path:
    """Write the artifacts of ``trained`` (weights, vocabularies, config, metrics) into ``directory``."""
    saved_config = {
        "config": config.model_dump(mode="json"),
        "n_items": trained.data.n_items,
        "n_users": trained.data.n_users,
    }
    return save_artifacts(directory, trained.model, trained.data.vocab_dict(), saved_config, trained.metrics)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model.train",
        description="Train a model on a run's sequences, evaluate it on the test users, save its artifacts.",
    )
    add_run_date_argument(parser)
    add_config_arguments(parser)
    parser.add_argument("--sequences-path", help="sequences Delta table (default: the configured lake table)")
    parser.add_argument(
        "--ratings-path",
        help="ratings Delta table for NCF's rating RMSE (default: the configured silver table)",
    )
    parser.add_argument("--artifacts-dir", default="artifacts", help="artifacts root (default: %(default)s)")
    args = parser.parse_args(argv)
    configure_logging()
    config = config_from_args(args)
    device = resolve_device(config.device)
    sequences_path = args.sequences_path or config.table_path("sequences")
    out_dir = Path(args.artifacts_dir) / args.run_date.isoformat() / config.model.name

    data = SequenceData.from_arrow(read_sequences(sequences_path, args.run_date))
    log.info("%s: %d users, %d items, device %s", sequences_path, data.n_users, data.n_items, device)
    trained = train_and_evaluate(
        config, data, out_dir / CHECKPOINT_DIR, args.run_date, device, ratings_path=args.ratings_path
    )
    save_trained(out_dir, config, trained)

    metrics = trained.metrics
    print(f"{config.model.name} on {args.run_date} (test, {len(data.view('test'))} users)")
    print(format_metrics(metrics["test"], config.scoring.eval_ks))
    print(
        f"best epoch {metrics['best_epoch']}, {metrics['epochs_run']} epochs, "
        f"{metrics['mean_epoch_seconds']:.2f}s/epoch"
    )
    if "rating" in metrics:
        print("rating: " + json.dumps(metrics["rating"]))
    print(f"artifacts: {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
