"""model/user_state.py and SS4Rec.prefix_state: stored recurrent states, incremental == full scoring."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from model import user_state
from model.data import IdVocab, SequenceData
from model.evaluate import run_timestamp
from model.score import score_run
from model.ss4rec import SS4Rec, SS4RecConfig
from recsys.staging import RECOMMENDATIONS_FILE, staging_dir
from tests.scoring_fixtures import save_model, scoring_config
from tests.sequence_fixtures import build_sequences_table, ratings_frame, write_sequences_delta

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def _random_batch(seed: int, batch: int = 6, length: int = 30):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = 1
    lengths[1] = length
    items = torch.randint(1, 41, (batch, length), generator=generator)
    # gaps from 0 s (simultaneous ratings) to a year
    gaps = torch.randint(0, 365 * 86_400, (batch, length), generator=generator)
    gaps[:, ::3] = 0
    times = 1_000_000_000 + torch.cumsum(gaps, 1)
    padding = torch.arange(length)[None, :] >= lengths[:, None]
    return items.masked_fill(padding, 0), times.masked_fill(padding, 0), lengths


@pytest.mark.parametrize("variant", ["ss4rec", "s5_only", "mamba_only"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prefix_state_equals_stepping_and_its_final_step_equals_the_full_pass(variant, seed):
    torch.manual_seed(seed)
    model = SS4Rec(SS4RecConfig(n_items=40, hidden_size=16, variant=variant, time_unit_seconds=86_400.0))
    model.eval()
    items, times, lengths = _random_batch(seed)
    query = times.gather(1, (lengths - 1)[:, None]).squeeze(1) + 3_600 * (seed + 1)
    expected = model.last_hidden(items, times, lengths, query)
    # stepping every event but the last, each with its real gap to the next
    gaps = model.time_gaps(times, lengths, query)
    state = model.initial_state(items.shape[0])
    for t in range(items.shape[1]):
        _, new = model.step(items[:, t], gaps[:, t], state)
        state = user_state._select(new, t < lengths - 1, state)
    prefix = user_state._prefix_states(model, _view(items, times, lengths), np.arange(6), torch.device("cpu"))
    for stepped, parallel in zip(state, prefix, strict=True):
        for a, b in zip(stepped, parallel, strict=True):
            if a is not None:
                torch.testing.assert_close(b, a, **TOLERANCE)
    last = lengths - 1
    hidden, _ = model.step(
        items.gather(1, last[:, None]).squeeze(1),
        (query - times.gather(1, last[:, None]).squeeze(1)).double(),
        prefix,
    )
    torch.testing.assert_close(hidden, expected, **TOLERANCE)


def _view(items, times, lengths):
    """A ``full`` SplitView over a padded batch."""
    rows = [
        [(int(i), int(t)) for i, t in zip(items[r, : lengths[r]], times[r, : lengths[r]], strict=True)]
        for r in range(items.shape[0])
    ]
    offsets = np.cumsum([0] + [len(r) for r in rows])
    flat_items = np.array([i for r in rows for i, _ in r], dtype=np.int64)
    flat_times = np.array([t for r in rows for _, t in r], dtype=np.int64)
    data = SequenceData(
        IdVocab(np.arange(1, 41), 1),
        IdVocab(np.arange(len(rows)), 0),
        offsets,
        flat_items,
        flat_times,
        np.zeros(flat_items.size, dtype=np.int8),
    )
    return data.view("full")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_pack_round_trip_and_bytes_per_user(dtype):
    model = SS4Rec(SS4RecConfig(n_items=10))  # the released shape
    states = model.initial_state(3)
    states = [type(s)(*[None if a is None else torch.randn_like(a) for a in s]) for s in states]
    blobs = user_state.pack(states, dtype)
    layout = user_state.StateLayout.of(model)
    assert sum(b.shape[1] for b in blobs.values()) == layout.bytes_per_user(dtype)
    assert layout.bytes_per_user("float32") == 37_376  # 2 blocks x (2 x 32 + 128 x (4 + 32)) floats
    back = user_state.unpack(blobs, model, dtype, torch.device("cpu"))
    tolerance = {"rtol": 0, "atol": 0} if dtype == "float32" else {"rtol": 1e-2, "atol": 1e-2}
    for original, restored in zip(states, back, strict=True):
        for a, b in zip(original, restored, strict=True):
            torch.testing.assert_close(b, a, **tolerance)


def test_prefix_hashes_cut_at_any_prefix_and_see_every_field():
    items = torch.tensor([[3, 5, 7, 9]])
    times = torch.tensor([[10, 20, 30, 40]])
    view = _view(items, times, torch.tensor([4]))
    rows = np.zeros(5, dtype=np.int64)
    hashes = user_state.prefix_hashes(view, rows, np.arange(5))
    assert hashes[0] == 0 and len(set(hashes.tolist())) == 5
    shorter = _view(items[:, :2], times[:, :2], torch.tensor([2]))
    assert user_state.prefix_hashes(shorter, np.zeros(1, np.int64), np.array([2]))[0] == hashes[2]
    for changed_items, changed_times in (([3, 6], [10, 20]), ([3, 5], [10, 21]), ([5, 3], [10, 20])):
        other = _view(torch.tensor([changed_items]), torch.tensor([changed_times]), torch.tensor([2]))
        assert user_state.prefix_hashes(other, np.zeros(1, np.int64), np.array([2]))[0] != hashes[2]


# ----------------------------------------------------------------- scoring over several nights

NIGHTS = [dt.date(2024, 1, d) for d in (1, 2, 3, 4)]
ITEM_IDS = list(range(100, 124))


def _histories(night: int) -> dict[int, list[tuple[int, int]]]:
    """Every user's events by the end of night ``night`` (0-based). Users not divisible by 3 get
    new events every night after the first; user 24 outgrows the window (model.max_seq_len 6) on
    night 1; user 2's first event moves on night 2 (a re-rating: its history is rewritten)."""
    events: dict[int, list[tuple[int, int]]] = {}
    for user in range(1, 25):
        rng = np.random.default_rng(user)
        items = rng.permutation(ITEM_IDS).tolist()
        base = 5 if user == 24 else int(rng.integers(1, 6))
        first = run_timestamp(NIGHTS[0]) - 20 * 86_400
        times = (first + np.cumsum(rng.integers(0, 2 * 86_400, base))).tolist()
        if user == 2 and night >= 2:
            times[0] += 60
        for later in range(1, night + 1):
            new = 2 if user == 24 else (0 if user % 3 == 0 else 1 + user % 2)
            times += [run_timestamp(NIGHTS[later]) - 3_600 * (new - k) for k in range(new)]
        events[user] = sorted(zip(items[: len(times)], times, strict=True), key=lambda e: e[1])
    return events


def _write_night(config, index: int) -> None:
    from deltalake import write_deltalake

    night = NIGHTS[index]
    ratings = ratings_frame(_histories(index))
    write_sequences_delta(
        build_sequences_table(ratings, valid_from=night, max_seq_len=200),
        Path(config.table_path("sequences")),
    )
    silver = pa.Table.from_pandas(ratings, preserve_index=False).append_column(
        "valid_from", pa.array([night] * len(ratings), pa.date32())
    )
    write_deltalake(config.table_path("ratings_silver"), silver, partition_by=["valid_from"], mode="append")


def _recommendations(config, night) -> dict[int, list[tuple[int, float]]]:
    rows = pq.read_table(Path(staging_dir(config, night)) / RECOMMENDATIONS_FILE).to_pylist()
    out: dict[int, list[tuple[int, float]]] = {}
    for row in sorted(rows, key=lambda r: (r["user_id"], r["rank"])):
        out.setdefault(row["user_id"], []).append((row["item_id"], row["score"]))
    return out


def _assert_same_recommendations(incremental: dict, full: dict) -> None:
    """The same users; scores equal to float tolerance; the same items wherever scores are not tied."""
    assert incremental.keys() == full.keys()
    for user in full:
        np.testing.assert_allclose(
            [s for _, s in incremental[user]], [s for _, s in full[user]], rtol=1e-5, atol=1e-5
        )
        scores = np.array([s for _, s in full[user]])
        untied = np.r_[True, np.abs(np.diff(scores)) > 1e-4] & np.r_[np.abs(np.diff(scores)) > 1e-4, True]
        assert [i for (i, _), keep in zip(incremental[user], untied, strict=True) if keep] == [
            i for (i, _), keep in zip(full[user], untied, strict=True) if keep
        ]


def test_incremental_and_full_scoring_give_the_same_recommendations_night_after_night(tmp_path):
    lakes = {
        mode: scoring_config(tmp_path / mode, "model.max_seq_len=6", f"scoring.state_mode={mode}")
        for mode in ("incremental", "full")
    }
    for config in lakes.values():
        save_model(config, ITEM_IDS, seed=3)
    counts = []
    for index, night in enumerate(NIGHTS):
        manifests = {}
        for mode, config in lakes.items():
            _write_night(config, index)
            manifests[mode] = score_run(config, night, "ss4rec-test").manifest
        _assert_same_recommendations(*(_recommendations(lakes[m], night) for m in ("incremental", "full")))
        assert manifests["full"]["states"]["full"] == 24
        counts.append(manifests["incremental"]["states"])
    assert counts[0]["full"] == 24 and counts[0]["stored_read"] == 0
    for later in counts[1:]:
        assert later["reuse"] > 0 and later["advance"] > 0 and later["full"] >= 1  # user 24 slides
        assert later["full"] + later["advance"] == later["rows_written"]
    assert counts[2]["full"] >= 2  # and user 2's history was rewritten


def test_a_state_of_another_model_version_or_a_rewritten_history_is_not_reused(tmp_path):
    config = scoring_config(tmp_path, "model.max_seq_len=6")
    save_model(config, ITEM_IDS, seed=3)
    other = save_model(config, ITEM_IDS, version="ss4rec-other", seed=4)
    _write_night(config, 0)
    score_run(config, NIGHTS[0], "ss4rec-test")
    _write_night(config, 1)
    states = score_run(config, NIGHTS[1], other).manifest["states"]
    assert states["stored_read"] == 0 and states["full"] == 24  # the stored states are ss4rec-test's
    # the same night again with the first version: its own states of night 0 are used
    again = score_run(config, NIGHTS[1], "ss4rec-test").manifest["states"]
    assert again["stored_read"] == 24 and again["reuse"] + again["advance"] > 0
    # night 2: user 2's first event moved (a rewritten history), users 8 and 14 grew within the
    # window, user 24 slides, users 3, 6, ..., 21 had no new event
    _write_night(config, 2)
    third = score_run(config, NIGHTS[2], "ss4rec-test").manifest["states"]
    from deltalake import DeltaTable

    written = DeltaTable(config.table_path("user_states")).to_pyarrow_table().to_pylist()
    tonight = {r["user_id"]: r for r in written if r["valid_from"] == NIGHTS[2]}
    histories = _histories(2)
    assert tonight[2]["encoded"] == "full" and tonight[2]["whole_history"]
    assert tonight[2]["window_events"] == len(histories[2]) <= 6
    assert tonight[8]["encoded"] == tonight[14]["encoded"] == "advance"
    assert tonight[24]["encoded"] == "full" and not tonight[24]["whole_history"]
    assert not any(user % 3 == 0 for user in tonight if user != 24)  # reused: no new state written
    assert third["reuse"] == 7 and third["rows_written"] == len(tonight) == 17

    # another state dtype: tonight's float32 states are no candidates, and bfloat16 ones are written
    bf16 = scoring_config(tmp_path, "model.max_seq_len=6", "scoring.state_dtype=bfloat16")
    _write_night(bf16, 3)
    fourth = score_run(bf16, NIGHTS[3], "ss4rec-test").manifest["states"]
    assert fourth["stored_read"] == 0 and fourth["full"] == 24
    written = DeltaTable(bf16.table_path("user_states")).to_pyarrow_table().to_pylist()
    assert {r["state_dtype"] for r in written if r["valid_from"] == NIGHTS[3]} == {"bfloat16"}
    assert all(len(r["ssm_state"]) == 16 * 2 * 4 for r in written if r["valid_from"] == NIGHTS[3])


def test_incremental_equals_full_scoring_on_ml100k_replayed_over_five_nights(tmp_path):
    """ML-100K's last five days as nights (98-696 ratings each): every night's sequences and silver
    as of its end, scored incrementally and in full by one SS4Rec (two blocks); 148 users have more
    than the window's 200 events, so the three ways of making a state all occur."""
    from deltalake import write_deltalake

    from recsys.datasets.embedded import load_ml100k

    ratings = load_ml100k()
    nights = [dt.date(1998, 4, day) for day in range(18, 23)]
    model_shape = ("model.hidden_size=16", "model.n_layers=2", "model.max_seq_len=200")
    lakes = {
        mode: scoring_config(tmp_path / mode, *model_shape, f"scoring.state_mode={mode}")
        for mode in ("incremental", "full")
    }
    for config in lakes.values():
        save_model(config, sorted(ratings["item_id"].unique().tolist()), seed=7)
    for index, night in enumerate(nights):
        known = ratings[ratings["timestamp"] < run_timestamp(night)]
        sequences = build_sequences_table(known, valid_from=night, max_seq_len=1000)
        silver = pa.Table.from_pandas(known, preserve_index=False).append_column(
            "valid_from", pa.array([night] * len(known), pa.date32())
        )
        states = {}
        for mode, config in lakes.items():
            write_sequences_delta(sequences, Path(config.table_path("sequences")))
            write_deltalake(
                config.table_path("ratings_silver"), silver, partition_by=["valid_from"], mode="append"
            )
            states[mode] = score_run(config, night, "ss4rec-test").manifest["states"]
        _assert_same_recommendations(*(_recommendations(lakes[m], night) for m in ("incremental", "full")))
        users = known["user_id"].nunique()
        assert states["full"]["full"] == users
        if index:
            assert min(states["incremental"][kind] for kind in ("reuse", "advance", "full")) > 0
            assert states["incremental"]["full"] < users / 4
