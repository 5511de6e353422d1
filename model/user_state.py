"""Every user's recurrent SS4Rec state, kept between nights, so a night re-encodes only what changed.

SS4Rec is recurrent: a user's scores depend only on the model's state after their history and
the gap from their last event to the run's query time. Both halves of a block can advance that
state one event at a time (:meth:`model.ss4rec.SS4Rec.step`), so the state is split in two:

* the **stored state**: the blocks' state after every event of the user's window but the last
  (S5's complex state, Mamba's conv window and SSM state, per block), with the last event's
  item and time. It is final: the last event's step needs the gap to what follows it, known
  only at scoring time;
* the **final step**: the last event stepped with ``gap = query_time - t[last]``; its output is
  the user's hidden vector, scored against every item. It is redone every night (the gap to the
  run grows every night), and never stored.

The window is the model's: a user's most recent ``model.max_seq_len`` events, as in training,
evaluation and the full scoring pass; the state covers exactly that window, so incremental
and full scoring compute the same function (equal to float tolerance). A user whose window no
longer starts at their first event (a history longer than the window, or one the sequences
table truncated) slides: its first events drop out, which a recurrence cannot undo, so such a
user is re-encoded (one parallel pass over the window) on the nights their window moves.

Per user, against the stored state of the same model version (:func:`plan`):

* ``reuse``: the window is unchanged (same events, same history length): only the final step;
* ``advance``: the window is the whole history, then and now, and the stored window is a prefix
  of tonight's: the stored state steps through the new events only;
* ``full``: anything else (no stored state, another model version, a rewritten history such as
  a re-rating or a late event before the stored position, a sliding window): the window is
  re-encoded by :meth:`model.ss4rec.SS4Rec.prefix_state`.

A window is identified by its length and a hash of its (item index, timestamp, position)
triples that can be cut at any prefix (a sum of mixed 64-bit words), so the prefix test costs
one cumulative sum over tonight's events.

The ``user_states`` Delta table (delta-rs, no JVM) holds one version per user and night that
changed it, under ``valid_from`` like the pipeline's versioned tables (:mod:`recsys.asof`):
the night of D reads the states as of D - 1 and writes, under D, the states it advanced or
re-encoded; a rerun or a backfill of D reads the same and writes the same.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from model.data import SplitView, flat_positions
from model.ss4rec import BlockState, SS4Rec

log = logging.getLogger(__name__)

STATE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
REUSE, ADVANCE, FULL = 0, 1, 2
KIND_NAMES = {REUSE: "reuse", ADVANCE: "advance", FULL: "full"}
STATE_BLOBS = ("s5_state", "conv_state", "ssm_state")
STATES_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("model_version", pa.string()),
        ("state_dtype", pa.string()),
        # Per block, concatenated: S5's state as (real, imag) pairs [P, 2]; Mamba's conv window
        # [d_inner, d_conv]; Mamba's SSM state [d_inner, d_state]; little-endian state_dtype.
        ("s5_state", pa.binary()),
        ("conv_state", pa.binary()),
        ("ssm_state", pa.binary()),
        ("last_item", pa.int64()),  # raw id of the window's last event (not yet in the state)
        ("last_time", pa.int64()),
        ("window_events", pa.int32()),  # events of the window: the state holds all but the last
        ("history_events", pa.int32()),  # the user's n_events when the state was written
        ("whole_history", pa.bool_()),  # the window started at the user's first event
        ("encoded", pa.string()),  # how tonight made the state: "advance" (stepped) or "full"
        ("window_hash", pa.int64()),
        ("valid_from", pa.date32()),
    ]
)

_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def prefix_hashes(view: SplitView, rows: np.ndarray, prefix: np.ndarray) -> np.ndarray:
    """int64 [len(rows)]: the hash of the first ``prefix[i]`` events of each view row (0 for none)."""
    lengths = np.minimum(prefix, view.lengths[rows]).astype(np.int64)
    out = np.zeros(rows.size, dtype=np.uint64)
    some = np.flatnonzero(lengths > 0)
    if some.size:
        starts, counts = view.starts[rows[some]], lengths[some]
        flat = flat_positions(starts, counts)
        relative = (flat - np.repeat(starts, counts)).astype(np.uint64)
        with np.errstate(over="ignore"):
            words = _splitmix(
                view.flat_items[flat].astype(np.uint64) * _MIX[0]
                + view.flat_timestamps[flat].astype(np.uint64) * _MIX[1]
                + (relative + np.uint64(1)) * _MIX[2]
            )
            out[some] = np.add.reduceat(words, np.cumsum(counts) - counts)
    return out.view(np.int64)


@dataclass
class StateLayout:
    """Element counts of the stored state per block (floats; S5's complex state counts twice)."""

    n_blocks: int
    s5: int
    conv: int
    ssm: int

    @classmethod
    def of(cls, model: SS4Rec) -> StateLayout:
        block = model.blocks[0]
        s5 = 2 * block.s5.Lambda.shape[0] if block.s5 is not None else 0
        mamba = block.mamba
        conv = mamba.d_inner * mamba.d_conv if mamba is not None else 0
        ssm = mamba.d_inner * mamba.d_state if mamba is not None else 0
        return cls(len(model.blocks), s5, conv, ssm)

    def bytes_per_user(self, dtype: str) -> int:
        return self.n_blocks * (self.s5 + self.conv + self.ssm) * torch.finfo(STATE_DTYPES[dtype]).bits // 8


def pack(states: list[BlockState], dtype: str) -> dict[str, np.ndarray]:
    """The batch's states as one uint8 row of bytes per user for each of :data:`STATE_BLOBS`."""
    target = STATE_DTYPES[dtype]
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in STATE_BLOBS}
    for state in states:
        if state.s5 is not None:
            parts["s5_state"].append(torch.view_as_real(state.s5).flatten(1))
        if state.conv is not None:
            parts["conv_state"].append(state.conv.flatten(1))
            parts["ssm_state"].append(state.ssm.flatten(1))
    first = states[0].s5 if states[0].s5 is not None else states[0].conv
    batch = first.shape[0]
    out = {}
    for name, tensors in parts.items():
        if not tensors:
            out[name] = np.zeros((batch, 0), dtype=np.uint8)
            continue
        values = torch.cat(tensors, dim=1).to(target).cpu().contiguous()
        out[name] = values.view(torch.uint8).numpy()
    return out


def unpack(blobs: dict[str, np.ndarray], model: SS4Rec, dtype: str, device: torch.device) -> list[BlockState]:
    """:func:`pack`'s inverse, in float32 on ``device``."""
    layout = StateLayout.of(model)
    source = STATE_DTYPES[dtype]
    values = {
        name: torch.from_numpy(np.ascontiguousarray(blobs[name])).view(source).to(device, torch.float32)
        for name in STATE_BLOBS
    }
    batch = next(v.shape[0] for v in values.values())
    states = []
    for index, block in enumerate(model.blocks):
        s5 = conv = ssm = None
        if block.s5 is not None:
            pairs = values["s5_state"][:, index * layout.s5 : (index + 1) * layout.s5]
            s5 = torch.view_as_complex(pairs.reshape(batch, -1, 2).contiguous())
        if block.mamba is not None:
            mamba = block.mamba
            conv = values["conv_state"][:, index * layout.conv : (index + 1) * layout.conv]
            conv = conv.reshape(batch, mamba.d_inner, mamba.d_conv)
            ssm = values["ssm_state"][:, index * layout.ssm : (index + 1) * layout.ssm]
            ssm = ssm.reshape(batch, mamba.d_inner, mamba.d_state)
        states.append(BlockState(s5, conv, ssm))
    return states


# ------------------------------------------------------------------------------ planning


@dataclass
class Stored:
    """The stored states of tonight's users (row i = user index ``users[i]``), as read."""

    users: np.ndarray  # [S] user index (of tonight's vocabulary)
    blobs: dict[str, np.ndarray]  # name -> [S, bytes] uint8
    window_events: np.ndarray
    history_events: np.ndarray
    whole_history: np.ndarray
    window_hash: np.ndarray
    dtype: str


def _fixed_width(values: pa.Array, name: str) -> np.ndarray:
    """A binary array whose values all have one length -> uint8 [rows, width], without a copy."""
    wide = pa.types.is_large_binary(values.type)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64 if wide else np.int32)
    offsets = offsets[values.offset : values.offset + len(values) + 1].astype(np.int64)
    widths = np.diff(offsets)
    if widths.size and (widths != widths[0]).any():
        raise ValueError(f"user_states.{name}: states of several sizes for one model version and dtype")
    width = int(widths[0]) if widths.size else 0
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8) if width else np.zeros(0, np.uint8)
    return data[offsets[0] : offsets[-1]].reshape(len(values), width)


def plan(
    view: SplitView, history_events: np.ndarray, whole_history: np.ndarray, stored: Stored | None
) -> tuple[np.ndarray, np.ndarray]:
    """(kind per view row: REUSE, ADVANCE or FULL; the stored row of each view row, -1 if none).

    ``history_events``: each view row's n_events; ``whole_history``: whether its window starts at
    the user's first event. View rows are users (the ``full`` view).
    """
    n = len(view)
    kind = np.full(n, FULL, dtype=np.int8)
    stored_row = np.full(n, -1, dtype=np.int64)
    if stored is None or stored.users.size == 0:
        return kind, stored_row
    stored_row[stored.users] = np.arange(stored.users.size)
    has = np.flatnonzero(stored_row >= 0)
    row = stored_row[has]
    lengths = view.lengths[has]
    prefix = np.minimum(stored.window_events[row], lengths)
    matches = prefix_hashes(view, has, prefix) == stored.window_hash[row]
    same = (
        matches & (stored.window_events[row] == lengths) & (stored.history_events[row] == history_events[has])
    )
    grows = (
        matches
        & stored.whole_history[row]
        & whole_history[has]
        & (stored.window_events[row] < lengths)
        & (stored.history_events[row] < history_events[has])
    )
    kind[has[same]] = REUSE
    kind[has[grows & ~same]] = ADVANCE
    return kind, stored_row


# ------------------------------------------------------------------------------ encoding


@dataclass
class StateSeconds:
    encode: float = 0.0  # prefix passes (full) and steps (advance)
    final_step: float = 0.0
    events_stepped: int = 0
    events_encoded: int = 0


@dataclass
class Encoded:
    """What :func:`encode_users` produced: every user's hidden vector and the states it changed."""

    vectors: torch.Tensor  # [V, H] float32, view row order
    # The new states, batch by batch (kept apart: at ML-25M's size a full night's states are
    # about 6 GB at fp32, and the table's rows take them without a copy).
    changed_parts: list[np.ndarray]  # view rows whose stored state is new tonight (advance + full)
    blob_parts: list[dict[str, np.ndarray]]  # per part: name -> [rows, bytes] uint8
    kinds: np.ndarray
    seconds: StateSeconds = field(default_factory=StateSeconds)


def _select(chosen: list[BlockState], mask: torch.Tensor, other: list[BlockState]) -> list[BlockState]:
    """Per row (batch dimension), ``chosen``'s state where ``mask`` is True, else ``other``'s."""
    out = []
    for old, fresh in zip(chosen, other, strict=True):
        out.append(
            BlockState(
                *[
                    None if a is None else torch.where(mask.view(-1, *[1] * (a.dim() - 1)), a, b)
                    for a, b in zip(old, fresh, strict=True)
                ]
            )
        )
    return out


def encode_users(
    model: SS4Rec,
    view: SplitView,
    kinds: np.ndarray,
    stored: Stored | None,
    stored_row: np.ndarray,
    query_time: int,
    batch_size: int,
    step_batch_size: int,
    state_dtype: str,
    device: torch.device,
) -> Encoded:
    """Every view row's hidden vector at ``query_time`` (rows with >= 1 event), and the new stored
    state of every row that is not ``reuse``.

    ``full`` rows are re-encoded in batches of ``batch_size`` in order of length (one
    :meth:`~model.ss4rec.SS4Rec.prefix_state` pass over all but the last event); ``advance``
    rows step their stored state through the new events, batched by the number of steps; every
    row then takes the final step with its own gap to ``query_time``. ``reuse`` rows only take
    the final step, ``step_batch_size`` at a time (one step is cheap: a large batch amortises
    the per-call overhead).
    """
    model = model.to(device).eval()
    seconds = StateSeconds()
    n = len(view)
    hidden_size = model.item_embedding.weight.shape[1]
    vectors = torch.zeros(n, hidden_size, dtype=torch.float32, device=device)
    changed_parts: list[np.ndarray] = []
    blob_parts: list[dict[str, np.ndarray]] = []
    last = view.starts + view.lengths - 1
    flat_items = torch.from_numpy(view.flat_items)
    flat_times = torch.from_numpy(view.flat_timestamps)

    def finish(rows: np.ndarray, states: list[BlockState], store: bool) -> None:
        began = time.perf_counter()
        items = flat_items[last[rows]].to(device)
        times = flat_times[last[rows]]
        gaps = torch.clamp(torch.full_like(times, query_time) - times, min=0).to(device)
        hidden, _ = model.step(items, gaps, states)
        vectors[torch.from_numpy(rows).to(device)] = hidden.float()
        seconds.final_step += time.perf_counter() - began
        if store:
            changed_parts.append(rows)
            blob_parts.append(pack(states, state_dtype))

    with torch.inference_mode():
        # reuse: the stored state as it is
        reuse = np.flatnonzero(kinds == REUSE)
        for at in tqdm(range(0, reuse.size, step_batch_size), desc="reuse", unit="batch", disable=None):
            rows = reuse[at : at + step_batch_size]
            finish(rows, _stored_states(model, stored, stored_row[rows], device), store=False)
        # advance: step the stored state through the new events (all but tonight's last)
        advance = np.flatnonzero(kinds == ADVANCE)
        if advance.size:
            steps_needed = view.lengths[advance] - stored.window_events[stored_row[advance]]
            order = advance[np.argsort(steps_needed, kind="stable")]
            for at in tqdm(range(0, order.size, batch_size), desc="advance", unit="batch", disable=None):
                rows = order[at : at + batch_size]
                began = time.perf_counter()
                states = _stored_states(model, stored, stored_row[rows], device)
                first = view.starts[rows] + stored.window_events[stored_row[rows]] - 1  # the old last event
                count = torch.from_numpy(view.lengths[rows] - stored.window_events[stored_row[rows]])
                for step in range(int(count.max())):
                    position = np.minimum(first + step, last[rows] - 1)
                    items = flat_items[position].to(device)
                    gaps = (flat_times[position + 1] - flat_times[position]).clamp(min=0).to(device)
                    _, new = model.step(items, gaps, states)
                    states = _select(new, (step < count).to(device), states)
                seconds.events_stepped += int(count.sum())
                seconds.encode += time.perf_counter() - began
                finish(rows, states, store=True)
        # full: one parallel pass over all but the last event of the window
        full = np.flatnonzero(kinds == FULL)
        order = full[np.argsort(view.lengths[full], kind="stable")]
        for at in tqdm(range(0, order.size, batch_size), desc="encode", unit="batch", disable=None):
            rows = order[at : at + batch_size]
            began = time.perf_counter()
            states = _prefix_states(model, view, rows, device)
            seconds.events_encoded += int(view.lengths[rows].sum())
            seconds.encode += time.perf_counter() - began
            finish(rows, states, store=True)
    return Encoded(vectors, changed_parts, blob_parts, kinds, seconds)


def _stored_states(model: SS4Rec, stored: Stored, rows: np.ndarray, device: torch.device) -> list[BlockState]:
    return unpack({name: stored.blobs[name][rows] for name in STATE_BLOBS}, model, stored.dtype, device)


def _prefix_states(
    model: SS4Rec, view: SplitView, rows: np.ndarray, device: torch.device
) -> list[BlockState]:
    """The state after all but the last event of each row's window (the initial state for one event)."""
    batch = view.collate(rows)
    lengths = batch.lengths
    single = lengths <= 1
    before_last = (lengths - 1).clamp(min=1)
    query = batch.timestamps.gather(1, before_last[:, None]).squeeze(1)  # the last event's time
    states = model.prefix_state(
        batch.items.to(device), batch.timestamps.to(device), before_last.to(device), query.to(device)
    )
    if bool(single.any()):
        states = _select(states, ~single.to(device), model.initial_state(rows.size))
    return states


def state_rows(
    encoded: Encoded,
    view: SplitView,
    user_ids: np.ndarray,
    item_ids: Callable[[np.ndarray], np.ndarray],
    history_events: np.ndarray,
    whole_history: np.ndarray,
    model_version: str,
    state_dtype: str,
    run_date: dt.date,
) -> pa.Table:
    """The ``user_states`` rows of the states ``encoded`` changed (``user_ids``: raw id per view
    row): one record batch per encoded batch, the states' bytes not copied."""

    def batch(rows: np.ndarray, blobs: dict[str, np.ndarray]) -> pa.RecordBatch:
        last = view.starts[rows] + view.lengths[rows] - 1
        n = rows.size

        def blob(name: str) -> pa.Array:
            values = np.ascontiguousarray(blobs[name])
            offsets = np.arange(n + 1, dtype=np.int32) * values.shape[1]
            return pa.BinaryArray.from_buffers(
                pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(values)]
            )

        return pa.record_batch(
            {
                "user_id": pa.array(user_ids[rows], pa.int64()),
                "model_version": pa.array([model_version] * n, pa.string()),
                "state_dtype": pa.array([state_dtype] * n, pa.string()),
                **{name: blob(name) for name in STATE_BLOBS},
                "last_item": pa.array(item_ids(view.flat_items[last]), pa.int64()),
                "last_time": pa.array(view.flat_timestamps[last], pa.int64()),
                "window_events": pa.array(view.lengths[rows].astype(np.int32), pa.int32()),
                "history_events": pa.array(history_events[rows].astype(np.int32), pa.int32()),
                "whole_history": pa.array(whole_history[rows], pa.bool_()),
                "encoded": pa.array([KIND_NAMES[int(kind)] for kind in encoded.kinds[rows]], pa.string()),
                "window_hash": pa.array(prefix_hashes(view, rows, view.lengths[rows]), pa.int64()),
                "valid_from": pa.array(np.full(n, run_date), pa.date32()),
            },
            schema=STATES_SCHEMA,
        )

    parts = zip(encoded.changed_parts, encoded.blob_parts, strict=True)
    return pa.Table.from_batches([batch(rows, blobs) for rows, blobs in parts], schema=STATES_SCHEMA)


def kind_counts(kinds: np.ndarray) -> dict[str, int]:
    return {name: int((kinds == code).sum()) for code, name in KIND_NAMES.items()}


# ------------------------------------------------------------------------------ the table


def window_facts(
    sequences: pa.Table, user_positions: Callable[[np.ndarray], np.ndarray], usable: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """(n_events, whole_history) per user index, from the sequences snapshot and each user's
    ``usable`` events (known to the model): whole_history when the sequences row holds every
    event of the user and the model's window of ``max_len`` every usable one."""
    import pyarrow.compute as pc

    users = user_positions(sequences.column("user_id").to_numpy())
    history = np.zeros(usable.size, dtype=np.int64)
    row_length = np.zeros(usable.size, dtype=np.int64)
    history[users] = sequences.column("n_events").to_numpy()
    row_length[users] = pc.list_value_length(sequences.column("item_ids")).to_numpy(zero_copy_only=False)
    return history, (history == row_length) & (usable <= max_len)


def read_stored(
    path: str,
    run_date: dt.date,
    model_version: str,
    state_dtype: str,
    user_positions: Callable[[np.ndarray], np.ndarray],
) -> Stored | None:
    """The latest state of every one of tonight's users stored by ``model_version`` in
    ``state_dtype`` as of the night before ``run_date`` (None: no table yet).

    Two passes, so memory holds the states once (about 6 GB at fp32 for ML-25M's users): the
    as-of rule on the small columns picks each user's row, then the state columns are streamed
    batch by batch into arrays allocated for exactly those rows. A state of another version or
    dtype is never a candidate (a user whose latest row is another version's may still find an
    older one of this version: :func:`plan` checks every state against tonight's window).
    """
    import pyarrow.compute as pc
    from pyarrow.parquet import filters_to_expression

    from recsys.asof import AS_OF_KEYS, VALID_FROM_COL, as_of_arrow
    from recsys.delta import arrow_dataset, open_delta

    table = open_delta(path)
    if table is None:
        return None
    as_of = run_date - dt.timedelta(days=1)
    mine = [("model_version", "=", model_version), ("state_dtype", "=", state_dtype)]
    small = ["window_events", "history_events", "whole_history", "window_hash"]
    latest, _ = as_of_arrow(
        path,
        as_of,
        AS_OF_KEYS["user_states"],
        [VALID_FROM_COL, *small],
        version=table.version(),
        filters=mine,
    )
    users = user_positions(latest.column("user_id").to_numpy())
    keep = np.flatnonzero(users >= 0)
    users = users[keep]
    n_users = int(users.max()) + 1 if users.size else 0
    slot = np.full(n_users, -1, dtype=np.int64)
    slot[users] = np.arange(users.size)
    day = np.zeros(n_users, dtype=np.int32)
    day[users] = latest.column(VALID_FROM_COL).cast(pa.int32()).to_numpy()[keep]

    def column(name: str) -> np.ndarray:
        return latest.column(name).to_numpy(zero_copy_only=False)[keep]

    stored = Stored(
        users=users,
        blobs={},
        window_events=column("window_events").astype(np.int64),
        history_events=column("history_events").astype(np.int64),
        whole_history=column("whole_history").astype(bool),
        window_hash=column("window_hash").astype(np.int64),
        dtype=state_dtype,
    )
    filters = [(VALID_FROM_COL, "<=", as_of), *mine]
    scanner = arrow_dataset(table, file_pruning_predicate=filters).scanner(
        columns=["user_id", VALID_FROM_COL, *STATE_BLOBS], filter=filters_to_expression(filters)
    )
    filled = 0
    for batch in scanner.to_batches():
        index = user_positions(batch.column("user_id").to_numpy())
        index = np.where(index < n_users, index, -1)
        ours = index >= 0
        ours[ours] &= day[index[ours]] == pc.cast(batch.column(VALID_FROM_COL), pa.int32()).to_numpy()[ours]
        rows = np.flatnonzero(ours)
        if not rows.size:
            continue
        for name in STATE_BLOBS:
            values = _fixed_width(batch.column(name), name)
            if name not in stored.blobs:
                stored.blobs[name] = np.empty((users.size, values.shape[1]), dtype=np.uint8)
            stored.blobs[name][slot[index[rows]]] = values[rows]
        filled += rows.size
    if filled != users.size:
        raise RuntimeError(f"{path}: {users.size:,} states as of {as_of} chosen but {filled:,} read")
    for name in STATE_BLOBS:
        stored.blobs.setdefault(name, np.zeros((users.size, 0), dtype=np.uint8))
    return stored


def write_states(path: str, rows: pa.Table, run_date: dt.date, run_id: str) -> None:
    """Replace the run date's versions in ``user_states`` with ``rows`` (one commit; a rerun the same)."""
    from recsys.delta import replace_where

    replace_where(path, rows, f"valid_from = '{run_date.isoformat()}'", run_id, partition_by=("valid_from",))
