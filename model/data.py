"""The ``sequences`` table as model input: vocabularies, leave-one-out views, padded batches.

The Spark pipeline writes one row per user (``run_date``, ``user_id``, chronological
``item_ids`` / ``timestamps`` arrays, per-position ``split`` markers: 0 train, 1 valid,
2 test). :class:`SequenceData` turns one run's rows into contiguous indices and flat arrays:

- items are indexed 1..N (0 is padding), users 0..U-1, in ascending raw-id order when the
  vocabularies are built from the table; a saved vocabulary (a trained model's, or one grown
  by a warm start, :meth:`IdVocab.grow`) keeps its own indices, new ids appended after the
  old ones. Both vocabularies are plain JSON (:meth:`IdVocab.to_dict`) and are saved with the
  model so scores map back to raw MovieLens ids;
- rows are in user-index order and positions are taken in table order, never re-sorted:
  events with equal timestamps keep the order the pipeline gave them.

Views (:meth:`SequenceData.view`) are what the trainer and the evaluator iterate:

==========  ===========================  ==============  =========================
view        input positions              target          ``target_time``
==========  ===========================  ==============  =========================
``train``   train (every prefix trains)  none (0)        0
``valid``   train                        the valid item  the valid item's timestamp
``test``    train + valid                the test item   the test item's timestamp
``full``    all (for nightly scoring)    none (0)        0
==========  ===========================  ==============  =========================

A user is in ``valid`` and ``test`` only with one valid and one test position and at least
one train position before them, i.e. with 3 or more events: users with fewer events
(``[train]`` or ``[train, test]``) are used for training only, as the issue specifies; a
training sequence needs 2 or more train positions to hold a next-item pair.
The production variant of evaluation sees a valid or test user as the nightly job of the night
before the target's day would (:meth:`SequenceData.night_view`, :mod:`model.evaluate`). With
``max_len``, an evaluation input keeps its most recent ``max_len`` positions; a training
sequence longer than ``max_len`` becomes several rows, windows of at most ``max_len`` positions
that overlap by one event (:func:`training_windows`), so every next-item pair of the user's
training history is a target exactly once, as in RecBole's prefix samples (there each target
sees up to ``max_len`` events of history; here it sees the events of its window before it).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader

PADDING_INDEX = 0
SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST = 0, 1, 2
SEQUENCE_COLUMNS = ("user_id", "item_ids", "timestamps", "split")

ViewName = Literal["train", "valid", "test", "full"]
SECONDS_PER_DAY = 86_400
# Vocabularies whose raw ids are all in [0, this) look ids up in a dense table (8 bytes an id).
DENSE_LOOKUP_MAX_ID = 1 << 24


class SequenceDataError(ValueError):
    """The sequences table breaks its contract (missing column, bad split markers, ...)."""


class IdVocab:
    """Raw ids <-> contiguous indices ``first_index .. first_index + len - 1``.

    ``raw_ids[i]`` is the id at index ``first_index + i``: ids are unique, in insertion order.
    :meth:`build` gives ascending order; :meth:`grow` appends ids after the existing ones, so
    a vocabulary that only ever grows keeps every id at the index it was first given.
    """

    def __init__(self, raw_ids: Iterable[int], first_index: int) -> None:
        ids = np.asarray(raw_ids if isinstance(raw_ids, np.ndarray) else list(raw_ids), dtype=np.int64)
        if ids.ndim != 1:
            raise SequenceDataError(f"vocabulary raw ids must be one-dimensional, got shape {ids.shape}")
        values, counts = np.unique(ids, return_counts=True)
        if values.size != ids.size:
            repeated = values[counts > 1][:5].tolist()
            raise SequenceDataError(f"vocabulary raw ids must be unique; repeated: {repeated}")
        self.raw_ids = ids
        self.first_index = first_index

    @classmethod
    def build(cls, values: np.ndarray, first_index: int) -> IdVocab:
        """The distinct ``values`` in ascending order."""
        return cls(np.unique(np.asarray(values, dtype=np.int64)), first_index)

    def grow(self, raw_ids: np.ndarray | Sequence[int]) -> IdVocab:
        """A new vocabulary: these ids at their indices, then the ids of ``raw_ids`` it lacks, ascending."""
        candidates = np.unique(np.asarray(raw_ids, dtype=np.int64))
        new = candidates[~self.contains(candidates)]
        return IdVocab(np.concatenate([self.raw_ids, new]), self.first_index)

    def extends(self, other: IdVocab) -> bool:
        """Whether this vocabulary is ``other`` grown: every id of ``other`` at the same index."""
        return (
            self.first_index == other.first_index
            and len(self) >= len(other)
            and np.array_equal(self.raw_ids[: len(other)], other.raw_ids)
        )

    def __len__(self) -> int:
        return int(self.raw_ids.size)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, IdVocab)
            and self.first_index == other.first_index
            and np.array_equal(self.raw_ids, other.raw_ids)
        )

    __hash__ = None  # type: ignore[assignment]

    def positions(self, raw: np.ndarray | Sequence[int]) -> np.ndarray:
        """0-based position of each of ``raw`` in the vocabulary, -1 for an id outside it.

        Ids that are small non-negative integers (every MovieLens release) go through a dense
        lookup table, one gather per id; others through a binary search over the sorted ids.
        """
        raw = np.asarray(raw, dtype=np.int64)
        table = self._dense_table
        if table is not None:
            inside = (raw >= 0) & (raw < table.size)
            return np.where(inside, table[np.where(inside, raw, 0)], -1)
        order = self._sort_order
        ordered = self.raw_ids[order]
        rank = np.searchsorted(ordered, raw)
        known = rank < len(self)
        known[known] = ordered[rank[known]] == raw[known]
        return np.where(known, order[np.where(known, rank, 0)], -1)

    @functools.cached_property
    def _sort_order(self) -> np.ndarray:
        """Positions of the ids in ascending id order (``raw_ids[_sort_order]`` is sorted)."""
        return np.argsort(self.raw_ids, kind="stable")

    @functools.cached_property
    def _dense_table(self) -> np.ndarray | None:
        if not self.raw_ids.size or self.raw_ids.min() < 0 or self.raw_ids.max() >= DENSE_LOOKUP_MAX_ID:
            return None
        table = np.full(int(self.raw_ids.max()) + 1, -1, dtype=np.int64)
        table[self.raw_ids] = np.arange(self.raw_ids.size)
        return table

    def contains(self, raw: np.ndarray | Sequence[int]) -> np.ndarray:
        """Boolean mask: which of ``raw`` are in the vocabulary."""
        return self.positions(raw) >= 0

    def encode(self, raw: np.ndarray | Sequence[int]) -> np.ndarray:
        """Indices of ``raw`` ids; an id outside the vocabulary raises :class:`KeyError`."""
        raw = np.asarray(raw, dtype=np.int64)
        position = self.positions(raw)
        if np.any(position < 0):
            unknown = np.unique(raw[position < 0])
            raise KeyError(f"{unknown.size} id(s) not in the vocabulary, e.g. {unknown[:5].tolist()}")
        return position + self.first_index

    def decode(self, index: np.ndarray | Sequence[int]) -> np.ndarray:
        """Raw ids of ``index``; padding or an index out of range raises :class:`IndexError`."""
        position = np.asarray(index, dtype=np.int64) - self.first_index
        if np.any((position < 0) | (position >= len(self))):
            raise IndexError(f"index outside {self.first_index}..{self.first_index + len(self) - 1}")
        return self.raw_ids[position]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``raw_ids`` in index order (so :meth:`from_dict` restores every index)."""
        return {"first_index": self.first_index, "raw_ids": self.raw_ids.tolist()}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> IdVocab:
        return cls(np.asarray(payload["raw_ids"], dtype=np.int64), int(payload["first_index"]))


@dataclass(frozen=True)
class SequenceBatch:
    """Padded model input: left-aligned, right-padded with 0; int64 throughout."""

    users: torch.Tensor  # [B] user index
    items: torch.Tensor  # [B, L] item index, 0 = padding
    timestamps: torch.Tensor  # [B, L] seconds, 0 = padding
    lengths: torch.Tensor  # [B] number of valid positions (>= 1)
    targets: torch.Tensor  # [B] item index to predict (0 in train/full views)
    target_time: torch.Tensor  # [B] the target's timestamp (0 in train/full views)

    def to(self, device: torch.device | str) -> SequenceBatch:
        return SequenceBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def __len__(self) -> int:
        return int(self.users.shape[0])


@dataclass(frozen=True)
class SplitView:
    """One view of the users: where each input starts in the flat arrays, its length, its target."""

    name: ViewName
    users: np.ndarray  # [V] user index
    starts: np.ndarray  # [V] offset of the first input position in the flat arrays
    lengths: np.ndarray  # [V]
    targets: np.ndarray  # [V]
    target_time: np.ndarray  # [V]
    flat_items: np.ndarray
    flat_timestamps: np.ndarray

    def __len__(self) -> int:
        return int(self.users.size)

    def collate(self, rows: Sequence[int]) -> SequenceBatch:
        """The padded batch of view rows ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        width = int(lengths.max()) if rows.size else 0
        positions = np.arange(width, dtype=np.int64)
        valid = positions[None, :] < lengths[:, None]
        flat_index = np.where(valid, self.starts[rows][:, None] + positions[None, :], 0)
        items = np.where(valid, self.flat_items[flat_index], PADDING_INDEX)
        timestamps = np.where(valid, self.flat_timestamps[flat_index], 0)
        return SequenceBatch(
            users=torch.from_numpy(self.users[rows].copy()),
            items=torch.from_numpy(items),
            timestamps=torch.from_numpy(timestamps),
            lengths=torch.from_numpy(lengths.copy()),
            targets=torch.from_numpy(self.targets[rows].copy()),
            target_time=torch.from_numpy(self.target_time[rows].copy()),
        )

    def loader(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """Batches in row order, or shuffled by a generator seeded with ``seed`` (same seed, same order).

        The loader always has its own generator, so iterating it never draws from torch's global RNG.
        """
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            range(len(self)),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            collate_fn=self.collate,
        )


def night_start(timestamps: Any) -> Any:
    """The UTC midnight that starts the day of each timestamp (seconds; numpy arrays or tensors).

    The night of a run date publishes what its drops held up to the end of that date, so the
    last night before an event ends at the start of the event's day.
    """
    return timestamps - timestamps % SECONDS_PER_DAY


@dataclass(frozen=True)
class NightView:
    """The ``valid`` or ``test`` users as the night before each target's day saw them.

    ``view``: the users with at least one input event before that night's end, each input cut to
    those events (then to ``max_len``); ``seen``: [n_users, n_items + 1], the items each user had
    by then (their whole kept history before the cut, not only the window); ``cold``: the users of
    the split with no event before that night, so no recommendations (evaluation counts them as
    misses).
    """

    view: SplitView
    seen: sp.csr_matrix
    cold: int


@dataclass(frozen=True)
class SkippedItems:
    """Positions dropped because their item is not in the model's vocabulary."""

    positions: int = 0
    items: int = 0  # distinct unknown items

    @classmethod
    def of(cls, raw_items: np.ndarray) -> SkippedItems:
        return cls(int(raw_items.size), int(np.unique(raw_items).size))


class SequenceData:
    """One run's sequences as contiguous indices in flat (CSR-like) arrays, sorted by user id."""

    skipped = SkippedItems()

    def __init__(
        self,
        item_vocab: IdVocab,
        user_vocab: IdVocab,
        offsets: np.ndarray,
        items: np.ndarray,
        timestamps: np.ndarray,
        split: np.ndarray,
    ) -> None:
        self.item_vocab = item_vocab
        self.user_vocab = user_vocab
        self.offsets = offsets  # [U + 1]: user u owns flat positions offsets[u]:offsets[u + 1]
        self.items = items
        self.timestamps = timestamps
        self.split = split
        # the user index of every flat position
        self.owner = np.repeat(np.arange(len(user_vocab), dtype=np.int64), np.diff(offsets))
        per_user = [np.bincount(self.owner[split == code], minlength=len(user_vocab)) for code in range(3)]
        self.n_train = per_user[SPLIT_TRAIN]
        self.evaluable = (per_user[SPLIT_VALID] == 1) & (per_user[SPLIT_TEST] == 1) & (self.n_train >= 1)

    @property
    def n_items(self) -> int:
        return len(self.item_vocab)

    @property
    def n_users(self) -> int:
        return len(self.user_vocab)

    @classmethod
    def from_arrow(
        cls,
        table: pa.Table,
        item_vocab: IdVocab | None = None,
        unknown_items: Literal["raise", "skip"] = "raise",
        user_vocab: IdVocab | None = None,
    ) -> SequenceData:
        """Validate and index a ``sequences`` table (one run's rows).

        ``item_vocab`` reuses a saved vocabulary; by default the vocabulary is every item in the
        table. An item the saved vocabulary lacks (new since training) raises, or with
        ``unknown_items="skip"`` (nightly scoring) its positions are dropped and counted in
        :attr:`skipped`; a user may then keep no position at all (length 0).

        ``user_vocab`` (``first_index`` 0) reuses a saved user vocabulary, e.g. a champion's grown
        by tonight's users (a warm start): users get its indices, a user of the table it lacks
        raises, and a user of the vocabulary absent from the table gets an empty sequence
        (length 0). By default the users are the table's, indexed in ascending user id.
        """
        missing = [name for name in SEQUENCE_COLUMNS if name not in table.column_names]
        if missing:
            raise SequenceDataError(f"sequences table lacks column(s) {missing}; it has {table.column_names}")
        if table.num_rows == 0:
            raise SequenceDataError("sequences table has no rows (wrong run_date?)")
        user_ids = table.column("user_id").to_numpy().astype(np.int64)
        order = np.argsort(user_ids, kind="stable")
        if np.any(np.diff(user_ids[order]) == 0):
            duplicated = np.unique(user_ids[order][1:][np.diff(user_ids[order]) == 0])
            raise SequenceDataError(f"user_id must be unique per run; repeated: {duplicated[:5].tolist()}")
        columns = {name: _list_column(table, name) for name in ("item_ids", "timestamps", "split")}
        lengths = columns["item_ids"][0]
        for name in ("timestamps", "split"):
            bad = np.flatnonzero(columns[name][0] != lengths)
            if bad.size:
                raise SequenceDataError(
                    f"user_id {user_ids[bad[0]]}: {name} has {columns[name][0][bad[0]]} entries, "
                    f"item_ids has {lengths[bad[0]]}"
                )
        if np.any(lengths == 0):
            raise SequenceDataError(f"user_id {user_ids[np.argmax(lengths == 0)]}: empty sequence")
        row_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        take = flat_positions(row_starts[order], lengths[order])
        offsets = np.concatenate([[0], np.cumsum(lengths[order])]).astype(np.int64)
        raw_items = columns["item_ids"][1][take]
        timestamps = columns["timestamps"][1][take]
        split = columns["split"][1][take].astype(np.int8)
        _check_positions(user_ids[order], offsets, timestamps, split)
        vocab = IdVocab.build(raw_items, first_index=1) if item_vocab is None else item_vocab
        known = vocab.contains(raw_items)
        if not known.all() and unknown_items == "raise":
            unknown = np.unique(raw_items[~known])
            raise SequenceDataError(
                f"sequences hold {unknown.size} item(s) the saved vocabulary lacks, e.g. "
                f"{unknown[:5].tolist()}; retrain the model or skip them (unknown_items='skip')"
            )
        skipped = SkippedItems.of(raw_items[~known])
        if skipped.positions:
            owner = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
            kept = np.bincount(owner[known], minlength=offsets.size - 1)
            offsets = np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)
            raw_items, timestamps, split = raw_items[known], timestamps[known], split[known]
        users = IdVocab(user_ids[order], first_index=0)
        if user_vocab is not None:
            offsets, take = _reindex_users(users.raw_ids, offsets, user_vocab)
            raw_items, timestamps, split = raw_items[take], timestamps[take], split[take]
            users = user_vocab
        data = cls(
            vocab,
            users,
            offsets,
            vocab.encode(raw_items),
            timestamps,
            split,
        )
        data.skipped = skipped
        return data

    def fingerprint(self) -> str:
        """SHA-256 of the content (users, raw items, timestamps, split markers).

        Independent of row order and of the vocabularies' index order: users are hashed in
        ascending user id, items by raw id. Users without a position (absent from the table
        but in a given user vocabulary, or with every item skipped) are left out.
        """
        lengths = np.diff(self.offsets)
        users = np.flatnonzero(lengths > 0)
        users = users[np.argsort(self.user_vocab.raw_ids[users], kind="stable")]
        take = flat_positions(self.offsets[users], lengths[users])
        items = self.items[take]
        digest = hashlib.sha256()
        for array in (
            self.user_vocab.raw_ids[users],
            np.concatenate([[0], np.cumsum(lengths[users])]),
            self.item_vocab.decode(items) if items.size else items,
            self.timestamps[take],
            self.split[take],
        ):
            digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        return digest.hexdigest()

    def view(self, name: ViewName, max_len: int | None = None) -> SplitView:
        """The ``train`` / ``valid`` / ``test`` / ``full`` view (see the module docstring)."""
        if name == "train":
            users = np.flatnonzero(self.n_train >= 2)
            lengths = self.n_train[users]
        elif name in ("valid", "test"):
            users = np.flatnonzero(self.evaluable)
            lengths = self.n_train[users] + (name == "test")
        elif name == "full":
            users = np.arange(self.n_users)
            lengths = np.diff(self.offsets)
        else:
            raise ValueError(f"unknown view {name!r}; expected train, valid, test or full")
        starts = self.offsets[users]
        if max_len is not None and name == "train":
            users, starts, lengths = training_windows(users, starts, lengths, max_len)
        if name in ("valid", "test"):
            targets, target_time = self.items[starts + lengths], self.timestamps[starts + lengths]
        else:
            targets = target_time = np.zeros(users.size, dtype=np.int64)
        if max_len is not None and name != "train":
            cut = np.maximum(lengths - max_len, 0)
            starts, lengths = starts + cut, lengths - cut
        return SplitView(
            name=name,
            users=users.astype(np.int64),
            starts=starts.astype(np.int64),
            lengths=lengths.astype(np.int64),
            targets=targets.astype(np.int64),
            target_time=target_time.astype(np.int64),
            flat_items=self.items,
            flat_timestamps=self.timestamps,
        )

    def night_view(self, name: ViewName, max_len: int | None = None) -> NightView:
        """The ``valid`` / ``test`` view as the nightly job of the night before each target's day
        had it: input events dated before that day (``night_start`` of the target's timestamp)."""
        if name not in ("valid", "test"):
            raise ValueError(f"a night view needs a split with targets (valid or test), got {name!r}")
        whole = self.view(name)
        boundary = night_start(whole.target_time)
        positions = flat_positions(whole.starts, whole.lengths)
        row = np.repeat(np.arange(len(whole)), whole.lengths)
        # Positions are chronological (the pipeline orders them), so the known ones are a prefix.
        known = np.bincount(row[self.timestamps[positions] < boundary[row]], minlength=len(whole))
        keep = known > 0
        users, starts, lengths = whole.users[keep], whole.starts[keep], known[keep]
        owned = flat_positions(starts, lengths)
        seen = sp.csr_matrix(
            (np.ones(owned.size, dtype=bool), (np.repeat(users, lengths), self.items[owned])),
            shape=(self.n_users, self.n_items + 1),
        )
        seen.sum_duplicates()
        if max_len is not None:
            cut = np.maximum(lengths - max_len, 0)
            starts, lengths = starts + cut, lengths - cut
        view = SplitView(
            name=name,
            users=users,
            starts=starts,
            lengths=lengths.astype(np.int64),
            targets=whole.targets[keep],
            target_time=whole.target_time[keep],
            flat_items=self.items,
            flat_timestamps=self.timestamps,
        )
        return NightView(view, seen, int((~keep).sum()))

    def seen(self, name: ViewName) -> sp.csr_matrix:
        """Boolean [n_users, n_items + 1] matrix of the items in each user's input part of ``name``.

        ``full`` (every position) is what nightly scoring masks; production evaluation masks a
        night view's own (:meth:`night_view`).
        Only events inside the table are known: history cut by the pipeline's truncation is not.
        """
        limit = {"train": SPLIT_VALID, "valid": SPLIT_VALID, "test": SPLIT_TEST, "full": SPLIT_TEST + 1}[name]
        keep = self.split < limit
        rows = self.owner[keep]
        matrix = sp.csr_matrix(
            (np.ones(rows.size, dtype=bool), (rows, self.items[keep])), shape=(self.n_users, self.n_items + 1)
        )
        matrix.sum_duplicates()
        return matrix

    def interactions(self, split: int) -> pd.DataFrame:
        """Raw ``user_id, item_id, timestamp`` of every position marked ``split`` (0, 1 or 2)."""
        keep = self.split == split
        users = self.owner[keep]
        return pd.DataFrame(
            {
                "user_id": self.user_vocab.decode(users),
                "item_id": self.item_vocab.decode(self.items[keep]),
                "timestamp": self.timestamps[keep],
            }
        )

    def item_counts(self, name: ViewName = "train") -> np.ndarray:
        """[n_items + 1] occurrences of each item in the input positions of view ``name`` (index 0: 0)."""
        view = self.view(name)
        return np.bincount(self.items[flat_positions(view.starts, view.lengths)], minlength=self.n_items + 1)

    def vocab_dict(self) -> dict[str, Any]:
        """Both vocabularies, JSON-ready (saved with the model)."""
        return {"items": self.item_vocab.to_dict(), "users": self.user_vocab.to_dict()}


def model_arguments(
    method: Callable[..., Any], batch: SequenceBatch, query_time: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Keyword arguments of a model method from a batch.

    Every model takes ``items, timestamps, lengths`` (and ``query_time`` to predict); a
    model that also takes ``users`` (NCF) gets them: one trainer and one evaluator for all.
    """
    accepted = _parameter_names(getattr(method, "__func__", method))
    arguments = {name: getattr(batch, name) for name in ("items", "timestamps", "lengths", "users")}
    if query_time is not None:
        arguments["query_time"] = query_time
    if accepted is None:
        return arguments
    return {name: value for name, value in arguments.items() if name in accepted}


@functools.cache
def _parameter_names(function: Callable[..., Any]) -> frozenset[str] | None:
    """Names a function accepts by keyword, or None when it takes ``**kwargs``."""
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters)


def training_windows(
    users: np.ndarray, starts: np.ndarray, lengths: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows longer than ``max_len`` -> windows of at most ``max_len`` positions, overlapping by one.

    The windows of a row of ``n`` positions end at ``n``, ``n - (max_len - 1)``, ... and the
    earliest starts at the row's start, so each consecutive pair (i, i + 1) lies in exactly one
    window, and every window holds at least one pair. Returns (users, starts, lengths), the
    windows of a row adjacent and latest first.
    """
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2 to hold a next-item pair, got {max_len}")
    users = np.asarray(users, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    step = max_len - 1
    count = 1 + -(-np.maximum(lengths - max_len, 0) // step)  # 1 + ceil((n - max_len)+ / step)
    row = np.repeat(np.arange(lengths.size), count)
    k = np.arange(int(count.sum()), dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    end = lengths[row] - k * step
    begin = np.maximum(end - max_len, 0)
    return users[row], starts[row] + begin, end - begin


def flat_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(start, start + length)`` for each pair, without a Python loop."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    segment_begin = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(starts - segment_begin, lengths)


def _reindex_users(
    sorted_users: np.ndarray, offsets: np.ndarray, user_vocab: IdVocab
) -> tuple[np.ndarray, np.ndarray]:
    """(offsets by ``user_vocab`` index, flat positions to take) for rows of ``sorted_users``.

    The rows (user ``sorted_users[r]`` owns ``offsets[r]:offsets[r + 1]``) are put in the order of
    their users' indices; a user of the vocabulary without a row gets an empty one.
    """
    if user_vocab.first_index != 0:
        raise SequenceDataError(f"a user vocabulary starts at index 0, not {user_vocab.first_index}")
    index = user_vocab.positions(sorted_users)
    if np.any(index < 0):
        unknown = sorted_users[index < 0]
        raise SequenceDataError(
            f"sequences hold {unknown.size} user(s) the user vocabulary lacks, e.g. "
            f"{unknown[:5].tolist()}; grow it with their ids first (IdVocab.grow)"
        )
    lengths = np.diff(offsets)
    rows = np.argsort(index)
    per_user = np.zeros(len(user_vocab), dtype=np.int64)
    per_user[index] = lengths
    take = flat_positions(offsets[:-1][rows], lengths[rows])
    return np.concatenate([[0], np.cumsum(per_user)]).astype(np.int64), take


def _list_column(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(per-row lengths, flat values) of a list column; a null list is a contract error."""
    column = table.column(name)
    if column.null_count:
        raise SequenceDataError(f"column {name} has {column.null_count} null row(s)")
    lengths = pc.list_value_length(column).to_numpy().astype(np.int64)
    values = pc.list_flatten(column)
    if values.null_count:
        raise SequenceDataError(f"column {name} has null elements")
    return lengths, values.to_numpy().astype(np.int64)


def _check_positions(
    user_ids: np.ndarray, offsets: np.ndarray, timestamps: np.ndarray, split: np.ndarray
) -> None:
    """Chronological timestamps and split markers of the form train*, [valid], [test] per user."""
    if np.any((split < SPLIT_TRAIN) | (split > SPLIT_TEST)):
        raise SequenceDataError(f"split markers must be 0, 1 or 2; found {np.unique(split).tolist()}")
    continues_user = np.ones(timestamps.size, dtype=bool)  # position has a predecessor of the same user
    continues_user[offsets[:-1]] = False
    owner = np.repeat(user_ids, np.diff(offsets))
    split_step = np.diff(split.astype(np.int64), prepend=0)
    problems = (
        (np.diff(timestamps, prepend=0) < 0, "timestamps are not chronological"),
        (split_step < 0, "split markers decrease (a train position after valid/test)"),
        ((split_step == 0) & (split != SPLIT_TRAIN), "more than one valid or test position"),
    )
    for mask, problem in problems:
        hits = np.flatnonzero(mask & continues_user)
        if hits.size:
            raise SequenceDataError(f"user_id {owner[hits[0]]}: {problem}")


def read_as_of(
    path: str, table: str, run_date: dt.date, columns: list[str] | None = None, version: int | None = None
) -> tuple[pa.Table, int]:
    """(the versioned Delta table ``table`` at ``path`` as of ``run_date``, the table version read).

    delta-rs, no JVM (:func:`recsys.asof.as_of_arrow`). An empty state raises
    :class:`SequenceDataError` naming the table and the date.
    """
    from recsys.asof import AS_OF_KEYS, as_of_arrow

    data, read_version = as_of_arrow(path, run_date, AS_OF_KEYS[table], columns, version)
    if data.num_rows == 0:
        raise SequenceDataError(f"{path}: no {table} as of {run_date.isoformat()}; run that night first")
    return data, read_version


def read_sequences(path: str, run_date: dt.date) -> pa.Table:
    """The sequences as of ``run_date`` (every user's latest version), from the Delta table at ``path``."""
    return read_as_of(path, "sequences", run_date)[0]
