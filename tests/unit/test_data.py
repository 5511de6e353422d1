"""SequenceData: vocabularies, leave-one-out views, batches, seen items, contract errors."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from model.data import (
    IdVocab,
    SequenceData,
    SequenceDataError,
    model_arguments,
    read_sequences,
    training_windows,
)
from tests.sequence_fixtures import build_sequences_table, ratings_frame, write_sequences_delta

# user 7: one event; user 3: two; user 5: three; user 9: six, with equal timestamps inside.
EVENTS = {
    7: [(100, 50)],
    3: [(200, 10), (100, 20)],
    5: [(300, 5), (200, 6), (400, 7)],
    9: [(100, 1), (500, 2), (300, 2), (200, 2), (600, 3), (700, 3)],
}


@pytest.fixture()
def data() -> SequenceData:
    return SequenceData.from_arrow(build_sequences_table(ratings_frame(EVENTS)))


def test_vocab_round_trip_through_json() -> None:
    vocab = IdVocab.build(np.array([30, 10, 20, 10]), first_index=1)
    assert vocab.raw_ids.tolist() == [10, 20, 30]
    assert vocab.encode([20, 30, 10]).tolist() == [2, 3, 1]
    assert vocab.decode(vocab.encode([30, 20])).tolist() == [30, 20]
    assert IdVocab.from_dict(json.loads(json.dumps(vocab.to_dict()))) == vocab
    with pytest.raises(KeyError, match="1 id"):
        vocab.encode([20, 99])
    with pytest.raises(IndexError):
        vocab.decode([0])


def test_indices_are_contiguous_and_sorted(data: SequenceData) -> None:
    assert data.item_vocab.raw_ids.tolist() == [100, 200, 300, 400, 500, 600, 700]
    assert data.user_vocab.raw_ids.tolist() == [3, 5, 7, 9]
    assert data.n_items == 7 and data.n_users == 4
    assert data.items.min() == 1


def test_splits_follow_leave_one_out_with_short_users_train_only(data: SequenceData) -> None:
    decode_users = data.user_vocab.decode
    train = data.view("train")
    assert decode_users(train.users).tolist() == [9]  # 5 has one train event: no next-item pair
    assert train.lengths.tolist() == [4]

    valid = data.view("valid")
    assert decode_users(valid.users).tolist() == [5, 9]  # 3 ([train, test]) and 7 ([train]) are train only
    assert valid.lengths.tolist() == [1, 4]
    assert data.item_vocab.decode(valid.targets).tolist() == [200, 600]
    assert valid.target_time.tolist() == [6, 3]

    test = data.view("test")
    assert test.lengths.tolist() == [2, 5]
    assert data.item_vocab.decode(test.targets).tolist() == [400, 700]
    assert test.target_time.tolist() == [7, 3]


def test_equal_timestamps_keep_table_order(data: SequenceData) -> None:
    batch = data.view("test").collate([1])
    # equal times (2, 2, 2) keep the fixture's row order (not item order) and are never re-sorted
    assert data.item_vocab.decode(batch.items[0, :5].numpy()).tolist() == [100, 500, 300, 200, 600]
    assert batch.timestamps[0, :5].tolist() == [1, 2, 2, 2, 3]


def test_row_order_of_the_table_does_not_matter(data: SequenceData) -> None:
    table = build_sequences_table(ratings_frame(EVENTS))
    shuffled = SequenceData.from_arrow(table.take([2, 0, 3, 1]))
    assert shuffled.user_vocab == data.user_vocab
    assert np.array_equal(shuffled.items, data.items)
    assert np.array_equal(shuffled.offsets, data.offsets)


def test_batches_are_right_padded_int64(data: SequenceData) -> None:
    batch = data.view("test").collate([0, 1])
    assert batch.items.dtype == batch.timestamps.dtype == batch.lengths.dtype == torch.int64
    assert batch.items.shape == (2, 5)
    assert batch.lengths.tolist() == [2, 5]
    assert batch.items[0, 2:].tolist() == [0, 0, 0]
    assert batch.timestamps[0, 2:].tolist() == [0, 0, 0]
    assert data.user_vocab.decode(batch.users).tolist() == [5, 9]


def test_max_len_keeps_the_most_recent_positions(data: SequenceData) -> None:
    full = data.view("test")
    cut = data.view("test", max_len=3)
    assert cut.lengths.tolist() == [2, 3]
    assert cut.collate([1]).items[0].tolist() == full.collate([1]).items[0, 2:].tolist()
    assert cut.targets.tolist() == full.targets.tolist()


@pytest.mark.parametrize("max_len", [2, 3, 7, 50])
def test_training_windows_hold_every_next_item_pair_exactly_once(max_len: int) -> None:
    rng = np.random.default_rng(max_len)
    lengths = rng.integers(2, 120, size=200)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) + 5
    users = np.arange(lengths.size) * 10
    w_users, w_starts, w_lengths = training_windows(users, starts, lengths, max_len)
    assert w_lengths.min() >= 2 and w_lengths.max() <= max_len
    pairs = {
        (int(u), int(start + i))
        for u, start, n in zip(w_users, w_starts, w_lengths, strict=True)
        for i in range(n - 1)
    }
    expected = {
        (int(u), int(start + i))
        for u, start, n in zip(users, starts, lengths, strict=True)
        for i in range(n - 1)
    }
    assert pairs == expected
    assert len(pairs) == int((w_lengths - 1).sum())  # no pair twice
    # Each row's windows are adjacent, the latest first, and the latest ends where the row ends.
    first = np.flatnonzero(np.r_[True, w_users[1:] != w_users[:-1]])
    assert (w_users[first] == users).all()
    assert (w_starts[first] + w_lengths[first] == starts + lengths).all()
    assert (w_lengths[first] == np.minimum(lengths, max_len)).all()


def test_training_windows_need_room_for_a_pair() -> None:
    with pytest.raises(ValueError, match="max_len must be >= 2"):
        training_windows(np.array([0]), np.array([0]), np.array([5]), 1)


def test_train_view_with_max_len_splits_long_histories(data: SequenceData) -> None:
    whole = data.view("train")  # user 9: 4 train events, [100, 500, 300, 200] in time order
    history = whole.collate([0]).items[0].tolist()
    windows = data.view("train", max_len=3)
    assert windows.users.tolist() == [whole.users[0]] * 2
    assert windows.lengths.tolist() == [3, 2]
    assert [windows.collate([i]).items[0].tolist() for i in range(2)] == [history[1:], history[:2]]
    assert data.item_vocab.decode(np.array(history)).tolist() == [100, 500, 300, 200]
    assert windows.targets.tolist() == [0, 0]


def test_shuffling_is_seeded() -> None:
    events = {user: [(item, item) for item in range(1, 6)] for user in range(1, 41)}
    view = SequenceData.from_arrow(build_sequences_table(ratings_frame(events))).view("train")

    def order(seed: int) -> list[int]:
        return torch.cat([b.users for b in view.loader(8, shuffle=True, seed=seed)]).tolist()

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(order(1)) == list(range(40))
    assert torch.cat([b.users for b in view.loader(8)]).tolist() == list(range(40))


def test_seen_holds_the_input_part(data: SequenceData) -> None:
    user = int(data.user_vocab.encode([9])[0])
    decode = data.item_vocab.decode
    assert decode(data.seen("valid")[user].indices).tolist() == [100, 200, 300, 500]
    assert decode(data.seen("test")[user].indices).tolist() == [100, 200, 300, 500, 600]
    assert decode(data.seen("full")[user].indices).tolist() == [100, 200, 300, 500, 600, 700]
    assert data.seen("test").shape == (4, 8)


def test_interactions_and_counts(data: SequenceData) -> None:
    test_events = data.interactions(2)
    assert test_events.to_dict("list") == {
        "user_id": [3, 5, 9],
        "item_id": [100, 400, 700],
        "timestamp": [20, 7, 3],
    }
    counts = data.item_counts("train")
    assert counts[data.item_vocab.encode([100, 200, 300, 500])].tolist() == [1, 1, 1, 1]
    assert counts.sum() == 4


def _table_with(column: str, rows: list) -> pa.Table:
    table = build_sequences_table(ratings_frame({1: [(10, 1), (11, 2), (12, 3)]}))
    index = table.column_names.index(column)
    return table.set_column(index, column, pa.array(rows, type=table.schema.field(column).type))


@pytest.mark.parametrize(
    ("column", "rows", "message"),
    [
        ("split", [[0, 2, 1]], "user_id 1: split markers decrease"),
        ("split", [[0, 2, 2]], "user_id 1: more than one valid or test"),
        ("split", [[0, 1, 3]], "split markers must be 0, 1 or 2"),
        ("timestamps", [[1, 3, 2]], "user_id 1: timestamps are not chronological"),
        ("timestamps", [[1, 2]], "user_id 1: timestamps has 2 entries, item_ids has 3"),
    ],
)
def test_contract_violations_name_the_user(column: str, rows: list, message: str) -> None:
    with pytest.raises(SequenceDataError, match=message):
        SequenceData.from_arrow(_table_with(column, rows))


def test_missing_column_is_reported() -> None:
    table = build_sequences_table(ratings_frame(EVENTS)).drop_columns(["split"])
    with pytest.raises(SequenceDataError, match=r"lacks column\(s\) \['split'\]"):
        SequenceData.from_arrow(table)


def test_saved_vocabulary_is_reused_and_must_cover_items(data: SequenceData) -> None:
    table = build_sequences_table(ratings_frame(EVENTS))
    again = SequenceData.from_arrow(table, item_vocab=data.item_vocab)
    assert np.array_equal(again.items, data.items)
    smaller = IdVocab(np.array([100, 200]), first_index=1)
    with pytest.raises(SequenceDataError, match="retrain"):
        SequenceData.from_arrow(table, item_vocab=smaller)


def test_read_sequences_reads_each_users_latest_version_as_of_the_date(tmp_path) -> None:
    ratings = ratings_frame(EVENTS)
    path = tmp_path / "sequences"
    first, second = dt.date(2024, 1, 1), dt.date(2024, 1, 3)
    write_sequences_delta(build_sequences_table(ratings, valid_from=first), path)
    # a later version of the users of the first five events (7, 3 and 5), with shorter histories
    write_sequences_delta(build_sequences_table(ratings.iloc[:5], valid_from=second), path)

    def state(day: dt.date) -> dict[int, tuple[dt.date, int]]:
        table = read_sequences(str(path), day)
        return {
            u: (v, n)
            for u, v, n in zip(
                table["user_id"].to_pylist(),
                table["valid_from"].to_pylist(),
                table["n_events"].to_pylist(),
                strict=True,
            )
        }

    full = build_sequences_table(ratings).to_pydict()
    later = build_sequences_table(ratings.iloc[:5]).to_pydict()
    as_first = {u: (first, n) for u, n in zip(full["user_id"], full["n_events"], strict=True)}
    assert state(first) == as_first
    assert state(second - dt.timedelta(days=1)) == as_first  # the later version is not yet valid
    assert state(second) == {
        **as_first,
        **{u: (second, n) for u, n in zip(later["user_id"], later["n_events"], strict=True)},
    }
    assert len(state(second)) == 4 and sorted(later["user_id"]) == [3, 5, 7]
    with pytest.raises(SequenceDataError, match="no sequences as of 2023-12-31"):
        read_sequences(str(path), dt.date(2023, 12, 31))


def test_model_arguments_pass_users_only_where_accepted(data: SequenceData) -> None:
    batch = data.view("test").collate([0])

    def sequential(
        items: torch.Tensor, timestamps: torch.Tensor, lengths: torch.Tensor, query_time: torch.Tensor
    ):
        return None

    def with_users(
        items: torch.Tensor,
        timestamps: torch.Tensor,
        lengths: torch.Tensor,
        query_time: torch.Tensor,
        users: torch.Tensor,
    ):
        return None

    assert set(model_arguments(sequential, batch, batch.target_time)) == {
        "items",
        "timestamps",
        "lengths",
        "query_time",
    }
    assert "users" in model_arguments(with_users, batch, batch.target_time)
    assert "query_time" not in model_arguments(sequential, batch)


@pytest.mark.parametrize("offset", [0, 1 << 40])  # dense lookup table, and binary search past its range
def test_vocab_positions_agree_on_both_lookup_paths(offset: int):
    vocab = IdVocab(np.array([3, 7, 8, 20]) + offset, first_index=1)
    raw = np.array([7, 3, 4, 20, 21, -1, 8]) + offset
    assert vocab.positions(raw).tolist() == [1, 0, -1, 3, -1, -1, 2]
    assert vocab.contains(raw).tolist() == [True, True, False, True, False, False, True]
    assert vocab.encode(raw[[0, 1, 3]]).tolist() == [2, 1, 4]
    with pytest.raises(KeyError, match="2 id"):
        vocab.encode([*raw[:3].tolist(), int(raw[4])])
