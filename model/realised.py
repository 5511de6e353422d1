"""Realised quality: the previous night's published recommendations against tonight's arrivals.

The metric a product owner watches. Night D's ``recommendations`` were published before D+1's
drops arrived; when night D+1 has applied its drops, every user with a new (user, item) key in
them (a rating of an item they had never rated: re-ratings are not new) is judged against their
top-k of night D, the new items being the relevant set:

- ``hr@k``: the share of judged users with at least one new item in their top k;
- ``ndcg@k``: DCG over the top k (``1 / log2(rank + 1)`` per new item there) divided by the
  ideal DCG of ``min(new items, k)`` hits, averaged over judged users;
- ``users``: the users judged (they had new keys tonight and a row on night D);
- ``no_recommendation``: users with new keys tonight but no row on night D (new users): not
  judged, counted.

"Tonight's drops" are the run stats' drops of the run date (those dated after the previous
night, up to D+1) and "the previous night" is the latest earlier night of ``ratings_run_stats``
with a partition in ``recommendations``. Everything is read with delta-rs from the tables'
current snapshots: a rerun of D+1 gives the same figures unless a later correction has since
rewritten those drops' silver versions or that night's table. The nightly score step records
them as ``realised.*`` in the metrics of the night's scored ``model_runs`` row: they judge the
previous night's table, whose ``model_version`` column names the model that published it (after
a promotion, not tonight's champion).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from recsys.config import Config
from recsys.delta import open_delta, partition_dates, read_arrow

log = logging.getLogger(__name__)


def _rows(path: str, columns: list[str], filters: Any = None) -> pd.DataFrame | None:
    table = open_delta(path)
    return None if table is None else read_arrow(table, columns, filters).to_pandas()


def tonight_arrivals(config: Config, run_date: dt.date) -> tuple[dt.date | None, pd.DataFrame] | None:
    """(the previous night with recommendations, tonight's new (user_id, item_id) keys); None
    when the run date has no run stats."""
    stats = _rows(config.table_path("ratings_run_stats"), ["run_date", "drops"])
    if stats is None or not (stats["run_date"] == run_date).any():
        return None
    drops = [dt.date.fromisoformat(d) for d in stats.loc[stats["run_date"] == run_date, "drops"].iloc[0]]
    published = set(partition_dates(config.table_path("recommendations"), "run_date"))
    earlier = sorted(d for d in stats["run_date"] if d < run_date and d in published)
    previous = earlier[-1] if earlier else None
    columns = ["user_id", "item_id", "previous_copies"]
    silver = None
    if previous is not None and drops:
        silver = _rows(config.table_path("ratings_silver"), columns, [("valid_from", "in", drops)])
    if silver is None:
        return previous, pd.DataFrame({"user_id": [], "item_id": []}, dtype="int64")
    # A key's first version has no earlier copies: a key new tonight, once, in its first drop.
    new = silver.loc[silver["previous_copies"] == 0, ["user_id", "item_id"]].astype("int64")
    return previous, new.reset_index(drop=True)


def judge(recommended: pd.DataFrame, arrivals: pd.DataFrame, ks: Sequence[int]) -> dict[str, float]:
    """The metrics above from ``recommended`` (user_id, item_id, rank) and ``arrivals`` (user_id, item_id)."""
    arrivals = arrivals.drop_duplicates(["user_id", "item_id"])
    recommended = recommended.drop_duplicates(["user_id", "item_id"])
    recommended_users = pd.unique(recommended["user_id"])
    judged = arrivals[arrivals["user_id"].isin(recommended_users)]
    users = pd.unique(judged["user_id"])
    out: dict[str, float] = {
        "users": float(users.size),
        "no_recommendation": float(pd.unique(arrivals["user_id"]).size - users.size),
    }
    relevant = judged.groupby("user_id").size().reindex(users).to_numpy()
    hits = judged.merge(recommended, on=["user_id", "item_id"], how="inner")
    for k in ks:
        top = hits[hits["rank"] <= k]
        gain = pd.Series(
            1.0 / np.log2(top["rank"].to_numpy(np.float64) + 1.0), index=top["user_id"].to_numpy()
        )
        dcg = gain.groupby(level=0).sum().reindex(users, fill_value=0.0).to_numpy()
        # the ideal DCG of n relevant items: all of the first min(n, k) ranks hit
        ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[np.minimum(relevant, k) - 1]
        out[f"hr@{k}"] = float(top["user_id"].nunique() / users.size) if users.size else 0.0
        out[f"ndcg@{k}"] = float(np.mean(dcg / ideal)) if users.size else 0.0
    return out


def realised_quality(config: Config, run_date: dt.date) -> dict[str, float] | None:
    """The previous night's recommendations judged on the run date's arrivals (``scoring.eval_ks``
    up to ``scoring.top_k``); None on a first night, or before the run date's silver."""
    found = tonight_arrivals(config, run_date)
    if found is None or found[0] is None:
        return None
    previous, arrivals = found
    ks = [k for k in config.scoring.eval_ks if k <= config.scoring.top_k]
    if not ks:
        log.warning("realised quality: no scoring.eval_ks within scoring.top_k=%d", config.scoring.top_k)
        return None
    recommended = _rows(
        config.table_path("recommendations"),
        ["user_id", "item_id", "rank"],
        [("run_date", "=", previous), ("rank", "<=", max(ks))],
    )
    metrics = judge(recommended.astype("int64"), arrivals, ks)
    log.info("realised quality of %s's recommendations on %s's arrivals: %s", previous, run_date, metrics)
    return metrics
