"""Warm-start refresh: growing vocabularies and model state, fine-tuning, a saved model's metrics."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from model import refresh
from model.baselines import NCF, NCFConfig, SASRec, SASRecConfig
from model.data import IdVocab, SequenceData, SequenceDataError
from model.evaluate import evaluate
from model.refresh import KnownInputs, evaluate_saved, grow_state, warm_start
from model.train import (
    build_model,
    evaluate_splits,
    load_trained_model,
    save_trained,
    seed_everything,
    train_and_evaluate,
)
from recsys.config import Config, load_config
from tests.sequence_fixtures import build_sequences_table, cycle_ratings, ratings_frame

CHAMPION_DATE = dt.date(2024, 3, 1)
TONIGHT = dt.date(2024, 3, 2)
NEW_USER, NEW_ITEMS = 1000, (98, 99)  # cycle_ratings' users are 1..16, items 1..8


def make_config(*overrides: str) -> Config:
    return load_config(
        profile="local",
        env={},
        overrides=(
            "device=cpu",
            "model.name=sasrec",
            "model.hidden_size=16",
            "model.n_layers=1",
            "pipeline.max_seq_len=12",
            "model.max_seq_len=12",
            "train.batch_size=8",
            "train.epochs=2",
            "train.refresh_epochs=1",
            "scoring.eval_ks=[2,5]",  # below the 8 items: a masked target (rank N + 1 = 9) then misses
            *overrides,
        ),
    )


@pytest.fixture(scope="module")
def config() -> Config:
    return make_config()


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    return cycle_ratings(n_users=16, n_items=8, length=8)


@pytest.fixture(scope="module")
def champion(config: Config, ratings: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SASRec trained and saved on the champion's night."""
    root = tmp_path_factory.mktemp("models")
    data = SequenceData.from_arrow(build_sequences_table(ratings, valid_from=CHAMPION_DATE))
    trained = train_and_evaluate(config, data, root / "work", CHAMPION_DATE)
    return save_trained(root / "sasrec-champion", config, trained)


def flat(metrics: dict) -> dict[tuple[str, str, str], float]:
    """``{split: {variant: {name: value}}}`` -> ``{(split, variant, name): value}`` (for pytest.approx)."""
    return {
        (split, variant, name): value
        for split, variants in metrics.items()
        for variant, values in variants.items()
        for name, value in values.items()
    }


def with_events(ratings: pd.DataFrame, events: dict[int, list[tuple[int, int]]]) -> pd.DataFrame:
    return pd.concat([ratings, ratings_frame(events)], ignore_index=True) if events else ratings


def tonight_table(ratings: pd.DataFrame, events: dict[int, list[tuple[int, int]]]) -> pa.Table:
    return build_sequences_table(with_events(ratings, events), valid_from=TONIGHT)


# ----------------------------------------------------------------------------- IdVocab


def test_grow_keeps_every_index_and_appends_new_ids_in_ascending_order() -> None:
    vocab = IdVocab([30, 10, 20], first_index=1)
    grown = vocab.grow([50, 20, 40, 10, 40])
    assert grown.raw_ids.tolist() == [30, 10, 20, 40, 50]
    assert grown.encode([30, 10, 20]).tolist() == vocab.encode([30, 10, 20]).tolist() == [1, 2, 3]
    assert grown.encode([40, 50]).tolist() == [4, 5]
    assert grown.decode([5, 1]).tolist() == [50, 30]
    assert grown.extends(vocab) and not vocab.extends(grown)
    assert not IdVocab([10, 30, 20], first_index=1).grow([40]).extends(vocab)
    assert vocab.raw_ids.tolist() == [30, 10, 20]  # grow returns a new vocabulary
    assert vocab.grow([10, 30]) == vocab
    assert IdVocab.build(np.array([30, 10, 20, 10]), first_index=1).raw_ids.tolist() == [10, 20, 30]
    with pytest.raises(SequenceDataError, match="unique"):
        IdVocab([3, 1, 3], first_index=0)


@pytest.mark.parametrize(
    ("shift", "dense"),
    [
        (0, True),
        (1 << 40, False),
        (-5, False),
    ],  # dense table; binary search: ids past its range, negative ids
)
def test_positions_are_right_on_a_non_ascending_vocab_on_both_lookup_paths(shift: int, dense: bool) -> None:
    ids = np.array([20, 3, 8, 7])
    ids[1:] += shift  # the first id alone stays small: the lookup path must not depend on id order
    vocab = IdVocab(ids, first_index=1)
    assert (vocab._dense_table is not None) == dense
    raw = np.array([7 + shift, 3 + shift, 4 + shift, 20, 21, -1, 8 + shift, 2 + shift])
    assert vocab.positions(raw).tolist() == [3, 1, -1, 0, -1, -1, 2, -1]
    assert vocab.contains(raw).tolist() == [True, True, False, True, False, False, True, False]
    known = raw[vocab.contains(raw)]
    assert vocab.encode(known).tolist() == [4, 2, 1, 3]
    assert vocab.decode(vocab.encode(known)).tolist() == known.tolist()
    with pytest.raises(KeyError, match="1 id"):
        vocab.encode(raw[:3])


def test_vocab_json_round_trip_keeps_insertion_order_and_old_files_load() -> None:
    grown = IdVocab.build(np.array([5, 1, 3]), first_index=1).grow([4, 2, 0])
    assert grown.raw_ids.tolist() == [1, 3, 5, 0, 2, 4]
    restored = IdVocab.from_dict(json.loads(json.dumps(grown.to_dict())))
    assert restored == grown and restored.raw_ids.tolist() == [1, 3, 5, 0, 2, 4]
    assert restored.encode([0, 5]).tolist() == [4, 3]
    old_file = {"first_index": 0, "raw_ids": [2, 7, 9]}  # written before vocabularies could grow
    assert IdVocab.from_dict(old_file).encode([9, 2]).tolist() == [2, 0]


# ----------------------------------------------------------------------------- SequenceData


def positions_of(data: SequenceData, raw_user: int) -> slice:
    user = int(data.user_vocab.encode([raw_user])[0])
    return slice(int(data.offsets[user]), int(data.offsets[user + 1]))


def test_from_arrow_with_a_grown_user_vocab_indexes_users_by_it(ratings: pd.DataFrame) -> None:
    table = build_sequences_table(ratings)
    default = SequenceData.from_arrow(table)
    users = IdVocab([16, 3, 500, 1], first_index=0).grow(table.column("user_id").to_numpy())
    data = SequenceData.from_arrow(table, item_vocab=default.item_vocab, user_vocab=users)
    assert data.user_vocab == users and data.n_users == 17
    assert data.user_vocab.encode([16, 3, 500, 1, 2]).tolist() == [0, 1, 2, 3, 4]
    assert np.diff(data.offsets)[2] == 0  # user 500 is not in tonight's table: an empty sequence
    for raw_user in (16, 3, 1, 9):
        ours, theirs = (positions_of(d, raw_user) for d in (data, default))
        assert data.items[ours].tolist() == default.items[theirs].tolist()
        assert data.timestamps[ours].tolist() == default.timestamps[theirs].tolist()
        assert data.split[ours].tolist() == default.split[theirs].tolist()
    for name in ("valid", "test"):
        ours, reference = data.view(name), default.view(name)
        by_user = dict(zip(data.user_vocab.decode(ours.users), ours.targets, strict=True))
        assert by_user == dict(
            zip(default.user_vocab.decode(reference.users), reference.targets, strict=True)
        )
    assert 500 not in data.user_vocab.decode(data.view("train").users)
    assert data.fingerprint() == default.fingerprint()
    with pytest.raises(SequenceDataError, match="user vocabulary lacks"):
        SequenceData.from_arrow(table, user_vocab=IdVocab([1, 2, 3], first_index=0))


# ----------------------------------------------------------------------------- grow_state


def fresh(model_class: type, **config: int) -> torch.nn.Module:
    seed_everything(7)
    return model_class(NCFConfig(**config) if model_class is NCF else SASRecConfig(**config))


def test_grow_state_copies_known_rows_and_leaves_new_rows_as_initialised() -> None:
    old_vocab = {"items": IdVocab([40, 10, 30], 1), "users": IdVocab([7, 5], 0)}
    new_vocab = {"items": old_vocab["items"].grow([20, 50, 10]), "users": old_vocab["users"].grow([9, 8, 6])}
    seed_everything(1)
    old = NCF(NCFConfig(n_users=2, n_items=3, embedding_size=4, mlp_hidden_sizes=(8, 4)))
    with torch.no_grad():
        for tensor in old.state_dict().values():
            tensor.add_(1.0)  # away from any initialisation
    seed_everything(2)
    new = NCF(NCFConfig(n_users=5, n_items=5, embedding_size=4, mlp_hidden_sizes=(8, 4)))
    initial = {name: tensor.clone() for name, tensor in new.state_dict().items()}

    grown = grow_state(old, new, old_vocab, new_vocab)

    user_tables = {"gmf_user.weight", "mlp_user.weight", "rating_user_bias.weight"}
    item_tables = {"gmf_item.weight", "mlp_item.weight", "rating_item_bias.weight"}
    assert set(grown) == user_tables | item_tables
    for name, tensor in new.state_dict().items():
        source = old.state_dict()[name]
        if name in grown:
            rows = source.shape[0]
            assert rows == (2 if name in user_tables else 4), name
            assert torch.equal(tensor[:rows], source), name
            assert torch.equal(tensor[rows:], initial[name][rows:]), name
        else:
            assert torch.equal(tensor, source), name


def test_grow_state_refuses_other_shape_changes_and_reordered_vocabularies() -> None:
    old_vocab = {"items": IdVocab([1, 2, 3, 4, 5], 1), "users": IdVocab([1], 0)}
    new_vocab = {"items": old_vocab["items"].grow([6, 7]), "users": old_vocab["users"]}
    old = fresh(SASRec, n_items=5, max_seq_len=10, hidden_size=8, inner_size=16)
    assert grow_state(
        old, fresh(SASRec, n_items=7, max_seq_len=10, hidden_size=8, inner_size=16), old_vocab, new_vocab
    )
    with pytest.raises(ValueError, match=r"position_embedding\.weight: shape \(10, 8\)"):
        grow_state(
            old, fresh(SASRec, n_items=7, max_seq_len=12, hidden_size=8, inner_size=16), old_vocab, new_vocab
        )
    reordered = {"items": IdVocab([2, 1, 3, 4, 5, 6, 7], 1), "users": old_vocab["users"]}
    with pytest.raises(ValueError, match="items vocabulary does not keep"):
        grow_state(
            old, fresh(SASRec, n_items=7, max_seq_len=10, hidden_size=8, inner_size=16), old_vocab, reordered
        )
    ncf = fresh(NCF, n_users=1, n_items=7, embedding_size=8, mlp_hidden_sizes=(16, 8))
    with pytest.raises(ValueError, match="only in the"):
        grow_state(old, ncf, old_vocab, new_vocab)


# ----------------------------------------------------------------------------- warm_start


def test_warm_start_grows_from_the_champion_fine_tunes_saves_and_reloads(
    config: Config,
    ratings: pd.DataFrame,
    champion: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = 2_000_000
    events = {
        NEW_USER: [(1, base), (2, base + 60), (NEW_ITEMS[1], base + 120), (3, base + 180), (4, base + 240)],
        5: [(NEW_ITEMS[0], base + 300)],
    }
    table = tonight_table(ratings, events)
    champion_model, champion_vocab, _ = load_trained_model(champion)
    at_start = {}
    real_fit = refresh.fit_and_evaluate

    def spy(config, model, data, *args, **kwargs):  # the model as fine-tuning receives it
        at_start.update({name: tensor.clone() for name, tensor in model.state_dict().items()})
        return real_fit(config, model, data, *args, **kwargs)

    monkeypatch.setattr(refresh, "fit_and_evaluate", spy)
    trained = warm_start(config, champion, table, tmp_path / "work", TONIGHT)

    items, users = trained.data.item_vocab, trained.data.user_vocab
    assert items.raw_ids.tolist() == [*champion_vocab["items"].raw_ids.tolist(), *NEW_ITEMS]
    assert users.raw_ids.tolist() == [*champion_vocab["users"].raw_ids.tolist(), NEW_USER]
    known = len(champion_vocab["items"]) + 1  # padding row + the champion's items
    seed_everything(config.train.seed)
    initialised = build_model(config, trained.data.n_items, trained.data.n_users).state_dict()
    for name, tensor in champion_model.state_dict().items():
        if name == "item_embedding.weight":
            assert torch.equal(at_start[name][:known], tensor)
            assert torch.equal(at_start[name][known:], initialised[name][known:])
        else:
            assert torch.equal(at_start[name], tensor), name
    assert not torch.equal(
        trained.model.state_dict()["item_embedding.weight"], at_start["item_embedding.weight"]
    )

    metrics = trained.metrics
    assert metrics["warm_start_from"] == "sasrec-champion" and metrics["refresh_epochs"] == 1
    assert metrics["epochs_run"] == 1 and metrics["trained_on"] == TONIGHT.isoformat()
    assert set(metrics["valid"]) == set(metrics["test"]) == {"paper", "production"}

    saved = save_trained(tmp_path / "refreshed", config, trained)
    model, vocab, _ = load_trained_model(saved)
    assert vocab == {"items": items, "users": users}
    for name, tensor in trained.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor.cpu()), name


def test_warm_start_refuses_other_model_settings(
    ratings: pd.DataFrame, champion: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="hidden_size"):
        warm_start(
            make_config("model.hidden_size=32"), champion, tonight_table(ratings, {}), tmp_path, TONIGHT
        )


def test_warm_start_refuses_a_one_pass_model(ratings: pd.DataFrame, tmp_path: Path) -> None:
    config = make_config("model.name=pop")
    data = SequenceData.from_arrow(build_sequences_table(ratings))
    pop = save_trained(
        tmp_path / "pop", config, train_and_evaluate(config, data, tmp_path / "work", CHAMPION_DATE)
    )
    with pytest.raises(ValueError, match="one pass"):
        warm_start(config, pop, tonight_table(ratings, {}), tmp_path / "refresh", TONIGHT)


# ----------------------------------------------------------------------------- evaluate_saved


def test_evaluate_saved_matches_evaluate_when_nothing_is_new(
    config: Config, ratings: pd.DataFrame, champion: Path
) -> None:
    table = tonight_table(ratings, {})
    model, vocab, _ = load_trained_model(champion)
    data = SequenceData.from_arrow(table, item_vocab=vocab["items"], unknown_items="skip")
    ks, max_len = config.scoring.eval_ks, config.model.max_seq_len
    expected = {split: evaluate(model, data, split, ks, max_len=max_len) for split in ("valid", "test")}
    assert set(expected["test"]) == {"paper", "production"}
    assert flat(evaluate_saved(config, champion, table)) == pytest.approx(flat(expected), rel=1e-6)


def test_evaluate_saved_drops_unknown_inputs_and_counts_unknown_targets_as_misses(
    config: Config, ratings: pd.DataFrame, champion: Path
) -> None:
    base, day = 2_000_000, 86_400
    # user 2000: 15 known events a day apart and, fourth, an item new tonight, dropped from the
    # champion's input; the inputs are longer than model.max_seq_len = 12, so only the last 12 kept count
    reader = [(step % 8 + 1, base + day * step) for step in range(15)]
    reader.insert(3, (NEW_ITEMS[0], base + 2 * day + 60))
    # the new user's valid and test targets are both new items: two misses for the champion
    newcomer = [(1, base), (2, base + day), (NEW_ITEMS[0], base + 2 * day), (NEW_ITEMS[1], base + 3 * day)]
    tonight = tonight_table(ratings, {2000: reader, NEW_USER: newcomer})
    without_new = build_sequences_table(with_events(ratings, {2000: reader[:3] + reader[4:]}))

    model, vocab, _ = load_trained_model(champion)
    reference = SequenceData.from_arrow(without_new, item_vocab=vocab["items"])
    n_reference = len(reference.view("test"))
    expected = evaluate_splits(model, reference, config.scoring.eval_ks, config.model.max_seq_len)
    assert expected["test"]["paper"]["hr@5"] > 0
    assert expected["test"]["production"]["hr@5"] > 0 and expected["test"]["production"]["no_history"] < 1

    result = flat(evaluate_saved(config, champion, tonight))
    scale = n_reference / (n_reference + 1)  # the same users plus the newcomer, who misses
    assert result == pytest.approx({key: value * scale for key, value in flat(expected).items()}, rel=1e-6)


def test_known_inputs_scores_only_what_the_model_knows() -> None:
    vocab = {"items": IdVocab([1, 2, 3], 1), "users": IdVocab([10, 20], 0)}
    grown = {"items": vocab["items"].grow([4, 5]), "users": vocab["users"].grow([30])}
    ncf = fresh(NCF, n_users=2, n_items=3, embedding_size=4, mlp_hidden_sizes=(8, 4)).eval()
    known = KnownInputs(ncf, vocab, grown, max_len=None).eval()
    users = torch.tensor([0, 2, 1])  # known, new, known with only new items in its input
    items = torch.tensor([[1, 4, 2], [1, 2, 0], [5, 4, 0]])
    lengths = torch.tensor([3, 2, 2])
    with torch.no_grad():
        scores = known.full_sort_predict(items, items * 100, lengths, torch.full((3,), 10_000), users)
        alone = ncf.full_sort_predict(items[:1], items[:1], lengths[:1], torch.zeros(1), users[:1])
    assert scores.shape == (3, 6)
    assert torch.equal(scores[0, :4], alone[0])
    assert torch.isneginf(scores[0, 4:]).all() and torch.isneginf(scores[1:]).all()
