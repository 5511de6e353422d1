"""The nightly DAG's two model decisions, as pure functions: how to train, and whom to promote.

Both take plain values (no Spark, no torch) so the policy is tested on its own and the DAG's
tasks only gather the facts.

**Refresh or retrain** (:func:`plan_training`), in this order:

1. ``full``: on demand (the DAG's ``full_retrain`` param), when the drift hook asks
   (``drift_breach``; the MLOps drift check sets it), when there is no champion, or when the
   model configuration changed since the champion's last full retrain;
2. ``skip``: tonight's sequences are the champion's (no new events, nothing re-rated) and the
   configuration is unchanged: the champion scores tonight untouched;
3. ``full``: the last full retrain in the champion's line is ``full_retrain_every_days`` old, or
   the model cannot be warm-started (Pop counts in one pass);
4. ``warm``: otherwise, a warm start from the champion on tonight's data.

**Champion/challenger** (:func:`choose_champion`): the challenger is promoted unless its
production-variant validation NDCG@10 on tonight's split is more than ``tolerance`` below the
champion's on the same split. Without a champion the challenger is promoted; without a
challenger (a skipped night) the champion stays.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any, Literal

Mode = Literal["full", "warm", "skip"]
PROMOTION_METRIC = ("valid", "production", "ndcg@10")


@dataclass(frozen=True)
class Champion:
    """What the policy needs to know of the current champion."""

    version: str
    config_hash: str
    sequences_fingerprint: str
    # Run date of the last full retrain in this champion's line (itself, or its warm-start parent).
    full_retrain_on: dt.date


@dataclass(frozen=True)
class TrainingPlan:
    mode: Mode
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_training(
    run_date: dt.date,
    champion: Champion | None,
    config_hash: str,
    sequences_fingerprint: str,
    full_retrain_every_days: int,
    full_retrain: bool = False,
    drift_breach: bool = False,
    can_warm_start: bool = True,
) -> TrainingPlan:
    """How tonight's challenger is made (see the module docstring for the order of the rules)."""
    if full_retrain:
        return TrainingPlan("full", "full retrain requested (full_retrain param)")
    if drift_breach:
        return TrainingPlan("full", "drift check breached: full retrain")
    if champion is None:
        return TrainingPlan("full", "no champion yet")
    if champion.config_hash != config_hash:
        return TrainingPlan("full", f"model configuration changed since {champion.version}")
    if champion.sequences_fingerprint == sequences_fingerprint:
        return TrainingPlan("skip", f"no new events since {champion.version} was trained")
    age = (run_date - champion.full_retrain_on).days
    if full_retrain_every_days and age >= full_retrain_every_days:
        return TrainingPlan(
            "full",
            f"last full retrain {champion.full_retrain_on} is {age} days old "
            f"(every {full_retrain_every_days})",
        )
    if not can_warm_start:
        return TrainingPlan("full", "the model trains in one pass: retrained, not refreshed")
    return TrainingPlan("warm", f"warm start from {champion.version}")


@dataclass(frozen=True)
class Decision:
    champion: str
    promoted: bool
    reason: str
    champion_metric: float | None
    challenger_metric: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def promotion_metric(metrics: dict[str, Any]) -> float:
    """Production-variant validation NDCG@10 from a model's metrics (``{"valid": {variant: ...}}``)."""
    split, variant, name = PROMOTION_METRIC
    try:
        return float(metrics[split][variant][name])
    except KeyError as exc:
        raise KeyError(f"metrics lack {split}.{variant}.{name}; they have {sorted(metrics)}") from exc


def choose_champion(
    champion: str | None,
    champion_metrics: dict[str, Any] | None,
    challenger: str | None,
    challenger_metrics: dict[str, Any] | None,
    tolerance: float,
) -> Decision:
    """Who scores tonight: the challenger unless it is worse than the champion beyond ``tolerance``."""
    if challenger is None or challenger == champion:
        if champion is None:
            raise ValueError("neither a champion nor a challenger: nothing can score tonight")
        metric = promotion_metric(champion_metrics) if champion_metrics else None
        return Decision(champion, False, "no challenger tonight: the champion stays", metric, metric)
    new = promotion_metric(challenger_metrics or {})
    if champion is None:
        return Decision(challenger, True, "no champion yet: the challenger is promoted", None, new)
    old = promotion_metric(champion_metrics or {})
    if new >= old - tolerance:
        return Decision(
            challenger,
            True,
            f"challenger NDCG@10 {new:.4f} >= champion {old:.4f} - tolerance {tolerance}",
            old,
            new,
        )
    return Decision(
        champion,
        False,
        f"challenger NDCG@10 {new:.4f} < champion {old:.4f} - tolerance {tolerance}: the champion stays",
        old,
        new,
    )
