"""RecBole's reference models, run in their own environment and scored by this project's evaluator.

RecBole lives in ``peers/recbole`` with its own pinned virtual environment (``make
recbole-venv`` builds ``.venv-recbole``); nothing in the product imports it. Each call here runs
one ``python -m peers.recbole <command>`` in that interpreter, in a scratch working directory
(RecBole writes ``./log_tensorboard`` and sets process-wide state), streams its log through
:mod:`logging`, and reads back what it wrote: JSON, and for a training run the test score
matrices as an ``.npz`` of plain arrays (loaded with ``allow_pickle=False``). The figures the
results table shows are computed from those scores by :mod:`model.evaluate`, beside RecBole's
own: the paper variant from RecBole's test inputs (:func:`ranking_metrics`), the production one
from the night-cut inputs (:func:`night_metrics`).

The peer cuts histories from RecBole's export of the whole ratings, the evaluator's night view
from the sequences table, which keeps at most ``pipeline.max_seq_len`` events per user: on data
where a user has more (not ML-100K), their seen items at the night can differ.

``RECBOLE_PEER_PYTHON`` overrides the peer's interpreter. The peer runs from a repository
checkout (``peers/`` beside ``model/``), with only that checkout on its ``PYTHONPATH``.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON_ENV = "RECBOLE_PEER_PYTHON"
DEFAULT_PEER_PYTHON = REPO_ROOT / ".venv-recbole" / "bin" / "python"
KS = (5, 10, 20)
# How a peer run's scores are exported and ranked; part of a cached run's key
# (orchestration.experiments). 1: production from every event before the target, in-process
# RecBole; 2: the peer's own environment, production at the night before the target's day.
PEER_PROTOCOL = 2
# Arrays a training run's score file holds (peers.recbole.reference.ReferenceResult.save_scores).
SCORE_ARRAYS = (
    "scores",
    "user_raw_ids",
    "target_raw_ids",
    "target_index",
    "item_raw_ids",
    "seen_mask",
    "night_scores",
    "night_seen_mask",
    "night_cold",
)
_LOG_TAIL = 40


class PeerError(RuntimeError):
    """The RecBole peer is missing or one of its runs failed."""


def peer_python() -> Path:
    """The peer environment's interpreter; a clear error when it has not been built."""
    path = Path(os.environ.get(PEER_PYTHON_ENV) or DEFAULT_PEER_PYTHON)
    if not path.is_file():
        raise PeerError(
            f"the RecBole peer environment is not built ({path} does not exist): run `make recbole-venv`"
            f" (or set {PEER_PYTHON_ENV} to its interpreter)"
        )
    return path


def peer_root() -> Path:
    """The checkout that holds ``peers/recbole`` (the peer is not part of the installed package)."""
    if not (REPO_ROOT / "peers" / "recbole" / "__main__.py").is_file():
        raise PeerError(
            f"{REPO_ROOT} holds no peers/recbole: the RecBole peer runs from a repository checkout, "
            "not from an installed package"
        )
    return REPO_ROOT


def run_peer(command: str, args: list[str], work_dir: Path | None = None) -> dict[str, Any]:
    """``python -m peers.recbole COMMAND ARGS --json ...`` in the peer; its JSON result.

    ``work_dir``: the run's working directory (default: a temporary one, removed after).
    """
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="recbole-peer-") as scratch:
            return run_peer(command, args, Path(scratch))
    out = work_dir / f"{command}.json"
    argv = [str(peer_python()), "-m", "peers.recbole", command, *args, "--json", str(out)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    log.info("RecBole peer: %s", " ".join(argv[3:]))
    tail: collections.deque[str] = collections.deque(maxlen=_LOG_TAIL)
    with subprocess.Popen(
        argv, cwd=work_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stderr is not None
        for line in process.stderr:
            line = line.rstrip("\n")
            tail.append(line)
            log.info("peer: %s", line)  # RecBole's own progress (epochs, validation)
        code = process.wait()
    if code != 0 or not out.is_file():
        raise PeerError(
            f"RecBole peer `{command}` failed (exit {code}); the end of its log:\n" + "\n".join(tail)
        )
    return json.loads(out.read_text())


def _settings_args(overrides: dict[str, Any] | None) -> list[str]:
    args = []
    for key, value in (overrides or {}).items():
        args += ["--set", f"{key}={json.dumps(value)}"]  # JSON is YAML: the peer reads it back exactly
    return args


def ranking_metrics(
    scores: np.ndarray,
    target_index: np.ndarray,
    seen_mask: np.ndarray | None = None,
    ks: tuple[int, ...] = KS,
) -> dict[str, float]:
    """HR/NDCG/MRR@k (keys ``hr@10`` ...) of one target per row, ranking against columns 1..N.

    The project's evaluator's rules (:func:`model.evaluate.target_ranks`: ties are ranked ahead
    of the target, so a tie never flatters a model; RecBole's ``topk`` breaks exact ties
    arbitrarily); with ``seen_mask`` every seen item is set to -inf, the target included (a
    seen target is a miss: production never recommends it).
    """
    import torch

    from model.evaluate import metrics_from_ranks, target_ranks

    scores = np.asarray(scores, dtype=np.float64)
    if seen_mask is not None:
        scores = np.where(np.asarray(seen_mask, dtype=bool), -np.inf, scores)
    ranks = target_ranks(torch.from_numpy(scores), torch.from_numpy(np.asarray(target_index, dtype=np.int64)))
    return metrics_from_ranks(ranks, ks)


def night_metrics(
    scores: np.ndarray,
    target_index: np.ndarray,
    seen_mask: np.ndarray,
    cold: np.ndarray,
    ks: tuple[int, ...] = KS,
) -> dict[str, float]:
    """The production variant as :func:`model.evaluate.evaluate` computes it, on the peer's night
    inputs: the warm rows ranked with their night's seen items masked, every ``cold`` row (no
    event before the night) a miss; ``no_history`` is the cold share."""
    import torch

    from model.evaluate import metric_sums, target_ranks

    cold = np.asarray(cold, dtype=bool)
    warm = ~cold
    masked = np.where(
        np.asarray(seen_mask, dtype=bool)[warm], -np.inf, np.asarray(scores, dtype=np.float64)[warm]
    )
    ranks = target_ranks(
        torch.from_numpy(masked), torch.from_numpy(np.asarray(target_index, dtype=np.int64)[warm])
    )
    users = max(len(cold), 1)
    metrics = {name: value / users for name, value in metric_sums(ranks, ks).items()}
    metrics["no_history"] = float(cold.sum()) / users
    return metrics


def train_and_score(
    model: str = "sasrec",
    seed: int = 2020,
    overrides: dict[str, Any] | None = None,
    device: str = "cpu",
    dataset: str = "ml-100k",
    data_path: str | None = None,
    threads: int | None = None,
    exact_timestamps: bool = True,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Train ``model`` (``sasrec``: RecBole's SASRec; ``ss4rec``: ours under RecBole's trainer) in the
    peer on the paper protocol; (its summary with ``test_metrics_from_scores`` added, the test score
    arrays). The summary's metrics from scores are this project's evaluator's on the best epoch:
    ``paper`` (RecBole's test inputs, nothing masked) and, with exact timestamps (RecBole's float32
    or normalised times place no midnight), ``production`` (the night before the target's day:
    :func:`night_metrics`)."""
    if model not in ("sasrec", "ss4rec"):
        raise ValueError(f"unknown RecBole peer model {model!r}; expected 'sasrec' or 'ss4rec'")
    args = ["--seed", str(seed), "--device", device, "--dataset", dataset, *_settings_args(overrides)]
    if data_path:
        args += ["--data-path", str(data_path)]
    if threads:
        args += ["--threads", str(threads)]
    if not exact_timestamps:
        if model != "sasrec":
            raise ValueError("only RecBole's SASRec runs on RecBole's float32 timestamps")
        args.append("--recbole-float32-time")
    with tempfile.TemporaryDirectory(prefix="recbole-peer-") as scratch:
        scores_file = Path(scratch) / "scores.npz"
        summary = run_peer(model, [*args, "--scores", str(scores_file)], Path(scratch))
        with np.load(scores_file, allow_pickle=False) as data:
            arrays = {name: data[name] for name in SCORE_ARRAYS}
    summary.pop("scores_file", None)
    summary["test_metrics_from_scores"] = {"paper": ranking_metrics(arrays["scores"], arrays["target_index"])}
    if exact_timestamps:
        summary["test_metrics_from_scores"]["production"] = night_metrics(
            arrays["night_scores"], arrays["target_index"], arrays["night_seen_mask"], arrays["night_cold"]
        )
    return summary, arrays


def training_throughput(
    n_batches: int = 5,
    batch_size: int | None = None,
    max_len: int | None = None,
    device: str = "cpu",
    threads: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """RecBole SASRec's training samples per second on ML-100K's paper protocol, measured in the peer."""
    settings = dict(overrides or {})
    if batch_size is not None:
        settings["train_batch_size"] = batch_size
    if max_len is not None:
        settings["MAX_ITEM_LIST_LENGTH"] = max_len
    args = ["--batches", str(n_batches), "--device", device, *_settings_args(settings)]
    if threads:
        args += ["--threads", str(threads)]
    return run_peer("throughput", args)


def recbole_metrics(scores: np.ndarray, targets: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """RecBole's own Hit/NDCG/MRR of a score matrix (one target column per row), computed in the peer."""
    with tempfile.TemporaryDirectory(prefix="recbole-peer-") as scratch:
        path = Path(scratch) / "scores.npz"
        np.savez(path, scores=np.asarray(scores), target_index=np.asarray(targets, dtype=np.int64))
        return run_peer("metrics", ["--scores", str(path), "--ks", *map(str, ks)], Path(scratch))


def recbole_split(exact_timestamps: bool = True) -> dict[str, dict[str, Any]]:
    """RecBole's leave-one-out split of its ML-100K example, by raw user id: ``valid`` and ``test``
    (each user's target item) and ``test_night_known`` (the events before the test one that the
    night before its day knew; 0 = cold)."""
    return run_peer("split", [] if exact_timestamps else ["--recbole-float32-time"])
