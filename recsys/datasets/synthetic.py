"""A seeded synthetic ratings generator shaped like MovieLens-25M, for scale tests.

``generate_synthetic(path, scale=1.0)`` writes a MovieLens ``ratings.csv`` (header
``userId,movieId,rating,timestamp``) with, at scale 1.0, exactly ML-25M's 162,541 users,
59,047 rated items and 25,000,095 ratings, and ML-25M's shape:

* users: every user has at least 20 ratings; history lengths are heavy-tailed (a shifted
  lognormal with mean ratings / users ~ 154 and, at scale 1.0, a longest history of ~32,000
  under ML-25M's 32,202 cap), made to sum exactly;
* items: ids are a sorted sample of ML-25M's gappy id range 1..209,171; popularity weights are
  lognormal with a soft ceiling, calibrated at scale 1.0 to an item-count Gini of ~0.94 with the
  most rated item seen by about half of the users (as in ML-25M); every item is rated at least
  once and no user rates an item twice;
* ratings: half stars 0.5..5.0 with ML-25M's marginal distribution (mean ~3.53), cut from a
  latent ``item quality + user bias + noise`` so that there is signal to learn;
* timestamps: 1995-01-09 .. 2019-11-21, strictly increasing within a user, clustered into
  sessions (gaps under the pipeline's 30-minute session gap) spread over an activity span.

Rows are grouped by user (ids 1..n_users ascending) and time-ordered within a user.

Beside it goes a MovieLens ``movies.csv`` (header ``movieId,title,genres``) with one row per
item id, titled ``Synthetic item <id> (<year>)``, with a year and 0-3 of ML-25M's genres drawn
from ``seed`` alone (:func:`write_synthetic_movies`).

The item Gini falls at smaller scales (~0.84 at 0.1, ~0.92 at 0.5): the counts are scaled
proportionally, so the mean ratings per item stays ~423 while the most any item can get (one
rating per user) shrinks with the user count, which flattens the head.

Shapes come from normal *quantiles* (not i.i.d. draws) assigned to users and items by a seeded
permutation, so the statistics (longest history, Gini) barely move between seeds. Users are
generated in fixed blocks of ``RNG_BLOCK_USERS``, each from its own generator
``SeedSequence(seed, spawn_key=(2, block))``, vectorised within the block; a batch of whole
blocks is written at a time through pyarrow's CSV writer. So the file depends only on ``seed``
and ``scale`` (``users_per_batch`` changes the memory footprint, never a byte), and peak memory
is one batch plus O(users + items) plan arrays, whatever the scale.

Sampling ``k`` distinct items by popularity is successive sampling (draw, skip repeats). A light
user draws ``~lambda(k)`` items by popularity and keeps the first ``k`` distinct ones (drawing
more in the rare case that is short), where ``lambda(k)``, the expected number of draws that
yields ``k`` distinct items (``sum_i 1 - exp(-lambda p_i) = k``), is precomputed on a grid.
Draws use Walker's alias table (O(1) each, ~4x faster than ``searchsorted`` on the CDF), and
first occurrences are found with a hash (``pandas.unique`` keeps order of appearance). A user
for whom that would cost more draws than a quarter of the catalogue takes the Gumbel-top-k
(Efraimidis-Spirakis) path over all items instead, which samples the same distribution.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm import tqdm

log = logging.getLogger(__name__)

ML25M_USERS = 162_541
ML25M_ITEMS = 59_047
ML25M_RATINGS = 25_000_095
ML25M_MAX_ITEM_ID = 209_171
ML25M_MAX_USER_RATINGS = 32_202
MIN_USER_RATINGS = 20
# Below this the counts stop resembling ML-25M (a few dozen users, a catalogue floored far above
# proportion); below ~0.0003 dealing every item once would exceed some users' 20 ratings.
MIN_SCALE = 0.001
# The catalogue is at least this many times the mean history, so that heavy-tailed histories
# fit under the per-user cap; binds only below scale ~0.0105.
MIN_CATALOGUE_PER_MEAN_HISTORY = 4

TIMESTAMP_MIN = 789_652_009  # 1995-01-09, ML-25M's first rating
TIMESTAMP_MAX = 1_574_327_703  # 2019-11-21, ML-25M's last rating
CSV_HEADER = "userId,movieId,rating,timestamp"
MOVIES_CSV_HEADER = "movieId,title,genres"
MOVIES_FILE = "movies.csv"
# ML-25M's genres (alphabetical, as MovieLens lists them); an item with none gets "(no genres listed)".
SYNTHETIC_GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
NO_GENRES = "(no genres listed)"
SYNTHETIC_YEARS = (1902, 2019)
DEFAULT_SEED = 20250211

# ML-25M's rating distribution for 0.5, 1.0, ..., 5.0 (normalised where used).
RATING_SHARES = (0.016, 0.031, 0.016, 0.066, 0.050, 0.196, 0.126, 0.266, 0.085, 0.145)
# The latent rating (item quality + user bias + noise) has unit variance, so cutting it at the
# normal quantiles of RATING_SHARES reproduces the marginal in expectation.
ITEM_QUALITY_VAR = 0.20
USER_BIAS_VAR = 0.10

# Log-scale spread of history lengths above the minimum: at scale 1.0 the top quantile lands
# near ML-25M's longest history once the mean is pinned to ratings / users.
USER_HISTORY_SIGMA = 1.44
# Item log-weight = SIGMA * soft-min(z, CEILING_Z) for normal quantiles z (softness in z units).
# Calibrated at scale 1.0 (realised counts match the Rosen approximation of successive sampling
# to 1e-3): Gini 0.939, most rated item ~84k of 162,541 users, median item 7 ratings.
ITEM_POPULARITY_SIGMA = 3.6
ITEM_POPULARITY_CEILING_Z = 3.2
ITEM_POPULARITY_SOFTNESS = 0.5

SESSION_MEAN_EVENTS = 25
GAP_MEAN_S = 60.0
GAP_MAX_S = 1_500  # under the pipeline's session_gap_seconds (1800), so sessions survive intact
SPAN_MEDIAN_S = 90 * 86_400
SPAN_SIGMA = 2.0

# A light user draws OVERSAMPLE * lambda(k) + DRAW_SLACK items; one who would need more than
# HEAVY_DRAWS_PER_ITEM * n_items draws goes through Gumbel-top-k over the whole catalogue.
OVERSAMPLE = 1.2
DRAW_SLACK = 16
HEAVY_DRAWS_PER_ITEM = 0.25
LAMBDA_GRID_POINTS = 512
RNG_BLOCK_USERS = 1024

_STREAM_CATALOGUE = 0
_STREAM_PLAN = 1
_STREAM_USERS = 2
_STREAM_MOVIES = 3
_OWNER_STRIDE = 1 << 32  # > any time offset, so one running max serves a whole block of users
_RATING_LABELS = pa.array([f"{0.5 * (code + 1):.1f}" for code in range(10)], pa.string())
_CSV_SCHEMA = pa.schema(
    [("userId", pa.int32()), ("movieId", pa.int32()), ("rating", pa.string()), ("timestamp", pa.int64())]
)


@dataclass(frozen=True)
class SyntheticSummary:
    """What was written, with statistics gathered while streaming (not by re-reading)."""

    path: Path
    n_users: int
    n_items: int
    n_ratings: int
    rating_mean: float
    item_gini: float
    max_user_ratings: int
    min_user_ratings: int


def target_counts(scale: float) -> tuple[int, int, int]:
    """``(users, items, ratings)`` for ``scale``: ML-25M's counts at 1.0, proportional otherwise.

    Each count is ML-25M's rounded proportionally, except that the catalogue is floored at
    ``MIN_CATALOGUE_PER_MEAN_HISTORY`` times the mean history length (binds only below scale
    ~0.0105, where a proportional catalogue could not hold heavy-tailed histories). For every
    accepted scale ``users * 20 <= ratings`` and ``items <= ratings``.
    """
    if not scale >= MIN_SCALE:
        raise ValueError(f"scale must be >= {MIN_SCALE} (got {scale})")
    users = round(ML25M_USERS * scale)
    ratings = round(ML25M_RATINGS * scale)
    items = max(round(ML25M_ITEMS * scale), math.ceil(MIN_CATALOGUE_PER_MEAN_HISTORY * ratings / users))
    return users, items, ratings


def gini_coefficient(values: np.ndarray) -> float:
    """Gini coefficient of non-negative ``values`` (0: all equal, -> 1: one holds everything)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    n = ordered.size
    ranks = np.arange(1, n + 1, dtype=np.float64)
    return float(2.0 * np.dot(ranks, ordered) / (n * ordered.sum()) - (n + 1) / n)


def _generator(seed: int, *key: int) -> np.random.Generator:
    """An independent PCG64 stream for ``key``, derived from ``seed`` alone."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _normal_quantiles(n: int) -> np.ndarray:
    """The ``n`` standard-normal quantiles at ``(i + 0.5) / n``, ascending."""
    inv_cdf = NormalDist().inv_cdf
    return np.array([inv_cdf((i + 0.5) / n) for i in range(n)])


def _segment_ranks(owner: np.ndarray, n_owners: int) -> np.ndarray:
    """0-based position of each element within its run of equal ``owner`` (``owner`` sorted)."""
    return np.arange(owner.size) - np.searchsorted(owner, np.arange(n_owners))[owner]


def _alias_table(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table for probabilities ``p`` (Vose's construction): O(1) draws."""
    n = p.size
    scaled = (p * n).tolist()
    keep_prob = np.ones(n)
    alias = np.arange(n)
    small = [i for i, x in enumerate(scaled) if x < 1.0]
    large = [i for i, x in enumerate(scaled) if x >= 1.0]
    while small and large:
        lo, hi = small.pop(), large.pop()
        keep_prob[lo], alias[lo] = scaled[lo], hi
        scaled[hi] += scaled[lo] - 1.0
        (small if scaled[hi] < 1.0 else large).append(hi)
    return keep_prob, alias  # leftovers (rounding) keep probability 1


def history_lengths(n_users: int, n_ratings: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Per-user rating counts: >= MIN_USER_RATINGS, <= ``cap``, heavy-tailed, summing to ``n_ratings``.

    The excess over the minimum follows lognormal quantiles, rescaled to the exact total with
    the cap enforced by water-filling (capped users are fixed, the rest rescaled again), then
    rounded down with the leftover units going to the largest fractional parts.
    """
    excess = np.exp(USER_HISTORY_SIGMA * _normal_quantiles(n_users))[rng.permutation(n_users)]
    room, target = cap - MIN_USER_RATINGS, n_ratings - MIN_USER_RATINGS * n_users
    capped = np.zeros(n_users, dtype=bool)
    while True:
        excess[~capped] *= (target - room * capped.sum()) / excess[~capped].sum()
        newly = ~capped & (excess > room)
        if not newly.any():
            break
        capped |= newly
        excess[capped] = room
    whole = np.floor(excess).astype(np.int64)
    leftover = target - int(whole.sum())
    whole[np.argsort(whole - excess, kind="stable")[:leftover]] += 1
    return whole + MIN_USER_RATINGS


@dataclass(frozen=True, eq=False)
class _Plan:
    """Per-user decisions made before streaming: history length, dealt items, rating bias."""

    lengths: np.ndarray  # int64 ratings per user
    dealt: np.ndarray  # item indices grouped by user: every item is dealt to exactly one user
    dealt_start: np.ndarray  # user u's dealt items are dealt[dealt_start[u]:dealt_start[u + 1]]
    bias: np.ndarray  # latent rating bias per user

    @classmethod
    def build(cls, n_users: int, n_items: int, n_ratings: int, cap: int, rng: np.random.Generator) -> _Plan:
        lengths = history_lengths(n_users, n_ratings, cap, rng)
        # Items go round a random order of users: distinct users while n_items <= n_users.
        dealt_to = rng.permutation(n_users)[np.arange(n_items) % n_users]
        dealt = np.argsort(dealt_to, kind="stable")
        dealt_start = np.searchsorted(dealt_to[dealt], np.arange(n_users + 1))
        bias = rng.normal(0.0, math.sqrt(USER_BIAS_VAR), n_users)
        return cls(lengths, dealt, dealt_start, bias)


@dataclass(frozen=True, eq=False)
class _Catalogue:
    """The rated items and what sampling needs of them; index ``i`` is the i-th smallest id."""

    item_ids: np.ndarray  # int32, sorted, distinct
    log_p: np.ndarray  # log popularity probabilities (Gumbel-top-k keys)
    alias_prob: np.ndarray  # Walker's alias table: bin i keeps i with this probability ...
    alias: np.ndarray  # ... and otherwise yields this item
    quality: np.ndarray  # latent quality added to every rating of the item
    lambda_grid: np.ndarray  # numbers of draws ...
    distinct_grid: np.ndarray  # ... and the expected distinct items they yield (increasing)

    @classmethod
    def build(cls, n_items: int, rng: np.random.Generator) -> _Catalogue:
        id_range = max(ML25M_MAX_ITEM_ID, round(ML25M_MAX_ITEM_ID * n_items / ML25M_ITEMS))
        item_ids = np.sort(rng.choice(id_range, size=n_items, replace=False) + 1).astype(np.int32)
        z = _normal_quantiles(n_items)[rng.permutation(n_items)]
        tau = ITEM_POPULARITY_SOFTNESS
        log_w = -ITEM_POPULARITY_SIGMA * tau * np.logaddexp(-z / tau, -ITEM_POPULARITY_CEILING_Z / tau)
        p = np.exp(log_w - log_w.max())
        p /= p.sum()
        alias_prob, alias = _alias_table(p)
        quality = rng.normal(0.0, math.sqrt(ITEM_QUALITY_VAR), n_items)
        lambda_grid = np.geomspace(1.0, HEAVY_DRAWS_PER_ITEM * n_items, LAMBDA_GRID_POINTS)
        distinct_grid = np.array([np.sum(-np.expm1(-lam * p)) for lam in lambda_grid])
        return cls(item_ids, np.log(p), alias_prob, alias, quality, lambda_grid, distinct_grid)

    @property
    def n_items(self) -> int:
        return int(self.item_ids.size)

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` independent popularity draws (with replacement): one uniform picks bin and side."""
        u = rng.random(size) * self.n_items
        bins = u.astype(np.int64)
        return np.where(u - bins < self.alias_prob[bins], bins, self.alias[bins])

    def sample(
        self, rng: np.random.Generator, lengths: np.ndarray, dealt: np.ndarray, n_dealt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Distinct items for a block of users, as ``(owner, item)`` ordered by owner, then time.

        User ``j`` gets ``lengths[j]`` distinct items: its ``n_dealt[j]`` dealt items (``dealt`` is
        grouped by user) at random positions among popularity draws kept in draw order. Light
        users are sampled together; heavy users and the rare light user left short go one by one.
        """
        n_users = lengths.size
        need = lengths - n_dealt
        heavy = need > self.distinct_grid[-1]  # would take over HEAVY_DRAWS_PER_ITEM * n_items draws
        expected_draws = np.interp(need, self.distinct_grid, self.lambda_grid)
        n_draws = np.where(heavy, 0, (OVERSAMPLE * expected_draws).astype(np.int64) + DRAW_SLACK)
        # One stream per user, its dealt items first, then its draws; the first k distinct are kept.
        stream_len = n_dealt + n_draws
        owner = np.repeat(np.arange(n_users), stream_len)
        in_dealt = _segment_ranks(owner, n_users) < n_dealt[owner]
        stream = np.empty(owner.size, dtype=np.int64)
        stream[in_dealt] = dealt
        stream[~in_dealt] = self.draw(rng, int(n_draws.sum()))
        firsts = pd.unique(owner * self.n_items + stream)  # grouped by owner, in order of appearance
        first_owner = firsts // self.n_items
        rank = _segment_ranks(first_owner, n_users)
        one_by_one = heavy | (np.bincount(first_owner, minlength=n_users) < lengths)
        keep = ~one_by_one[first_owner] & (rank < lengths[first_owner])
        owners, ranks = [first_owner[keep]], [rank[keep]]
        items = [firsts[keep] - first_owner[keep] * self.n_items]
        stream_start = np.concatenate([[0], np.cumsum(stream_len)])
        dealt_start = np.concatenate([[0], np.cumsum(n_dealt)])
        for j in np.flatnonzero(one_by_one):
            if heavy[j]:
                chosen = self._gumbel_top_k(rng, int(need[j]), dealt[dealt_start[j] : dealt_start[j + 1]])
            else:
                chosen = self._successive(rng, int(lengths[j]), stream[stream_start[j] : stream_start[j + 1]])
            owners.append(np.full(chosen.size, j))
            items.append(chosen)
            ranks.append(np.arange(chosen.size))
        owner, item, rank = np.concatenate(owners), np.concatenate(items), np.concatenate(ranks)
        # Time order: draws by rank; each dealt item (the first n_dealt ranks) at a uniform slot.
        is_dealt = rank < n_dealt[owner]
        slot = np.where(is_dealt, rng.uniform(-1.0, need[owner]), rank - n_dealt[owner])
        order = np.lexsort((slot, owner))
        return owner[order], item[order]

    def _successive(self, rng: np.random.Generator, k: int, stream: np.ndarray) -> np.ndarray:
        """First ``k`` distinct items of ``stream`` continued with popularity draws until there are ``k``."""
        while True:
            firsts = pd.unique(stream)
            if firsts.size >= k:
                return firsts[:k]
            stream = np.concatenate([stream, self.draw(rng, 2 * (k - firsts.size) + DRAW_SLACK)])

    def _gumbel_top_k(self, rng: np.random.Generator, need: int, dealt: np.ndarray) -> np.ndarray:
        """``dealt``, then the ``need`` other items with the largest ``log p + Gumbel`` keys, in key order."""
        keys = self.log_p + rng.gumbel(size=self.n_items)
        keys[dealt] = -np.inf
        top = np.argpartition(keys, self.n_items - need)[self.n_items - need :]
        return np.concatenate([dealt, top[np.argsort(-keys[top], kind="stable")]])


def _timestamps(rng: np.random.Generator, owner: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Strictly increasing epoch seconds per user, in [TIMESTAMP_MIN, TIMESTAMP_MAX].

    ``owner`` (sorted) maps rows to the block's users. Each row after a user's first opens a new
    session with probability 1 / SESSION_MEAN_EVENTS; sessions start at uniform points of a
    lognormal activity span (capped so the history fits), rows within a session are short gaps
    apart, and the whole history is shifted to a uniform start in the allowed range.
    """
    n_rows, n_users = owner.size, lengths.size
    steps = _segment_ranks(owner, n_users)
    opens = (rng.random(n_rows) < 1.0 / SESSION_MEAN_EVENTS) | (steps == 0)
    session_row = np.flatnonzero(opens)
    session_owner = owner[session_row]
    span_max = TIMESTAMP_MAX - TIMESTAMP_MIN - lengths * (GAP_MAX_S + 1)
    span = np.minimum(rng.lognormal(math.log(SPAN_MEDIAN_S), SPAN_SIGMA, n_users), span_max).astype(np.int64)
    session_offset = rng.integers(0, span[session_owner] + 1)
    session_offset[steps[session_row] == 0] = 0
    session_offset = np.sort(session_owner * _OWNER_STRIDE + session_offset) - session_owner * _OWNER_STRIDE
    gaps = np.clip(np.ceil(rng.exponential(GAP_MEAN_S, n_rows)), 1, GAP_MAX_S).astype(np.int64)
    gaps[opens] = 0
    elapsed = np.cumsum(gaps)
    session_sizes = np.diff(np.append(session_row, n_rows))
    offsets = np.repeat(session_offset - elapsed[session_row], session_sizes) + elapsed
    # Overlapping sessions merge: the running max of (offset - step) keeps every step >= 1 s.
    base = owner * _OWNER_STRIDE
    offsets = np.maximum.accumulate(offsets - steps + base) - base + steps
    last = offsets[np.cumsum(lengths) - 1]
    start = TIMESTAMP_MIN + rng.integers(0, TIMESTAMP_MAX - TIMESTAMP_MIN - last + 1)
    return start[owner] + offsets


def write_synthetic_movies(out_path: Path | str, scale: float = 1.0, seed: int = DEFAULT_SEED) -> Path:
    """Write (atomically) the ``movies.csv`` that :func:`generate_synthetic` writes beside its ratings.

    One row per item id of the ratings of ``scale`` and ``seed`` (the catalogue depends on those
    alone), without generating the ratings.
    """
    _, n_items, _ = target_counts(scale)
    catalogue = _Catalogue.build(n_items, _generator(seed, _STREAM_CATALOGUE))
    return _write_movies(Path(out_path), catalogue.item_ids, seed)


def _write_movies(out_path: Path, item_ids: np.ndarray, seed: int) -> Path:
    """``movieId,title,genres`` for ``item_ids``: a year and 0-3 genres per item, from ``seed``."""
    rng = _generator(seed, _STREAM_MOVIES)
    n = item_ids.size
    years = rng.integers(SYNTHETIC_YEARS[0], SYNTHETIC_YEARS[1] + 1, n)
    n_genres = rng.choice(4, size=n, p=(0.02, 0.40, 0.35, 0.23))
    # A uniform random subset of n_genres[i] genres: the first ones of a random permutation.
    order = np.argsort(rng.random((n, len(SYNTHETIC_GENRES))), axis=1)
    lines = [f"{MOVIES_CSV_HEADER}\n"]
    for item_id, year, k, ranked in zip(
        item_ids.tolist(), years.tolist(), n_genres.tolist(), order, strict=True
    ):
        genres = "|".join(SYNTHETIC_GENRES[g] for g in sorted(ranked[:k].tolist())) or NO_GENRES
        lines.append(f"{item_id},Synthetic item {item_id} ({year}),{genres}\n")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(out_path.name + ".tmp")
    try:
        tmp_path.write_text("".join(lines), encoding="utf-8", newline="\n")
        os.replace(tmp_path, out_path)
    finally:
        tmp_path.unlink(missing_ok=True)
    log.info("synthetic movies written: %d items into %s", n, out_path)
    return out_path


def _rating_thresholds() -> np.ndarray:
    """Cut points on the unit-variance latent rating that reproduce RATING_SHARES."""
    shares = np.asarray(RATING_SHARES) / sum(RATING_SHARES)
    inv_cdf = NormalDist().inv_cdf
    return np.array([inv_cdf(c) for c in np.cumsum(shares)[:-1]])


def _generate_block(
    seed: int, block: int, plan: _Plan, catalogue: _Catalogue, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of RNG block ``block`` as ``(user index, item index, rating code 0..9, timestamp)``."""
    rng = _generator(seed, _STREAM_USERS, block)
    first_user = block * RNG_BLOCK_USERS
    lengths = plan.lengths[first_user : first_user + RNG_BLOCK_USERS]
    dealt_start = plan.dealt_start[first_user : first_user + lengths.size + 1]
    dealt = plan.dealt[dealt_start[0] : dealt_start[-1]]
    owner, item = catalogue.sample(rng, lengths, dealt, np.diff(dealt_start))
    noise = rng.normal(0.0, math.sqrt(1.0 - ITEM_QUALITY_VAR - USER_BIAS_VAR), owner.size)
    latent = catalogue.quality[item] + plan.bias[first_user + owner] + noise
    codes = np.searchsorted(thresholds, latent).astype(np.int8)
    return first_user + owner, item, codes, _timestamps(rng, owner, lengths)


def generate_synthetic(
    out_path: Path | str, scale: float = 1.0, seed: int = DEFAULT_SEED, users_per_batch: int = 4096
) -> SyntheticSummary:
    """Write an ML-25M-shaped ``ratings.csv`` to ``out_path`` atomically and summarise it.

    Once the ratings are in place, ``movies.csv`` is written beside them (see
    :func:`write_synthetic_movies`).

    The same ``seed`` and ``scale`` give a byte-identical file whatever ``users_per_batch``,
    which only sets how many users are held and written at a time (rounded up to whole blocks
    of RNG_BLOCK_USERS). The file is written to ``<out_path>.tmp`` and renamed into place, so
    a reader never sees a partial file; the summary's statistics are gathered while writing.
    """
    if users_per_batch < 1:
        raise ValueError(f"users_per_batch must be >= 1 (got {users_per_batch})")
    out_path = Path(out_path)
    n_users, n_items, n_ratings = target_counts(scale)
    cap = min(ML25M_MAX_USER_RATINGS, round(ML25M_MAX_USER_RATINGS * n_items / ML25M_ITEMS))
    log.info(
        "synthetic ratings: scale %s, seed %d -> %d users, %d items, %d ratings (history cap %d) into %s",
        scale,
        seed,
        n_users,
        n_items,
        n_ratings,
        cap,
        out_path,
    )
    catalogue = _Catalogue.build(n_items, _generator(seed, _STREAM_CATALOGUE))
    plan = _Plan.build(n_users, n_items, n_ratings, cap, _generator(seed, _STREAM_PLAN))
    thresholds = _rating_thresholds()
    n_blocks = -(-n_users // RNG_BLOCK_USERS)
    blocks_per_batch = -(-users_per_batch // RNG_BLOCK_USERS)

    item_counts = np.zeros(n_items, dtype=np.int64)
    users_seen = rows = half_stars = longest = 0
    shortest = n_ratings
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(out_path.name + ".tmp")
    try:
        with tmp_path.open("wb") as sink, tqdm(total=n_users, unit="user", desc="synthetic ratings") as bar:
            sink.write(f"{CSV_HEADER}\n".encode())
            options = pacsv.WriteOptions(include_header=False, quoting_style="none")
            writer = pacsv.CSVWriter(sink, _CSV_SCHEMA, write_options=options)
            for first_block in range(0, n_blocks, blocks_per_batch):
                blocks = range(first_block, min(first_block + blocks_per_batch, n_blocks))
                parts = [_generate_block(seed, block, plan, catalogue, thresholds) for block in blocks]
                user, item, codes, times = (np.concatenate(column) for column in zip(*parts, strict=True))
                columns = [
                    pa.array(user.astype(np.int32) + 1),
                    pa.array(catalogue.item_ids[item]),
                    _RATING_LABELS.take(pa.array(codes)),
                    pa.array(times),
                ]
                writer.write_table(pa.table(columns, schema=_CSV_SCHEMA))
                per_user = np.bincount(user - user[0])
                item_counts += np.bincount(item, minlength=n_items)
                users_seen += per_user.size
                rows += item.size
                half_stars += int(codes.sum(dtype=np.int64)) + item.size
                shortest = min(shortest, int(per_user.min()))
                longest = max(longest, int(per_user.max()))
                bar.update(per_user.size)
            writer.close()
        os.replace(tmp_path, out_path)
    finally:
        tmp_path.unlink(missing_ok=True)
    _write_movies(out_path.with_name(MOVIES_FILE), catalogue.item_ids, seed)

    summary = SyntheticSummary(
        path=out_path,
        n_users=users_seen,
        n_items=int(np.count_nonzero(item_counts)),
        n_ratings=rows,
        rating_mean=half_stars / (2 * rows),
        item_gini=gini_coefficient(item_counts),
        max_user_ratings=longest,
        min_user_ratings=shortest,
    )
    log.info("synthetic ratings written: %s", summary)
    return summary
