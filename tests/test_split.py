"""The held-out split and the validation slice carved out of train: stable as data grows,
stratified, minimum sizes, disjoint, no contamination."""

import random

import pytest

from pipelines.data import dedup, split
from pipelines.data.minhash import MinHasher

LABELS = ["billing", "technical", "account", "shipping", "refund"]
WORDS = [f"w{i}" for i in range(2000)]


def rec(rid, user, label):
    return {
        "id": rid,
        "source": "s",
        "label": label,
        "messages": [
            {"role": "system", "content": "Classify."},
            {"role": "user", "content": user},
            {"role": "assistant", "content": f'{{"category": "{label}"}}'},
        ],
    }


def corpus(n, seed, start=0):
    rng = random.Random(seed)
    return [rec(f"r{start + i}", " ".join(rng.choice(WORDS) for _ in range(20)), LABELS[i % 5]) for i in range(n)]


def sides(result):
    return (
        {r["id"]: "train" for r in result.train}
        | {r["id"]: "validation" for r in result.validation}
        | {r["id"]: "eval" for r in result.eval}
    )


def test_split_is_stable_as_data_grows():
    base = corpus(1000, seed=1)
    before = split.split(base, min_eval=10)
    after = split.split(base + corpus(1000, seed=2, start=1000), min_eval=10)
    assert before.eval_topups == 0 == after.eval_topups  # the pure-hash regime
    old, new = sides(before), sides(after)
    assert {rid: new[rid] for rid in old} == old


def test_split_is_deterministic_and_order_free():
    rows = corpus(300, seed=3)
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    assert sides(split.split(rows)) == sides(split.split(shuffled))


def test_salt_changes_the_assignment():
    rows = corpus(500, seed=4)
    assert sides(split.split(rows, salt="a")) != sides(split.split(rows, salt="b"))


def test_stratified_by_label():
    rows = corpus(1000, seed=5) + [rec(f"x{i}", f"rare label ticket number {i}", "rare") for i in range(12)]
    result = split.split(rows, eval_fraction=0.1, min_eval=10)
    counts = result.labels()
    assert set(counts) == set(LABELS) | {"rare"}
    for label, c in counts.items():
        total = c["train"] + c["eval"]
        assert c["eval"] >= 0.1 * total - 2 * (0.09 * total) ** 0.5, label  # at least its floor
        assert c["eval"] <= 0.1 * total + 3 * (0.09 * total) ** 0.5 + 1, label
    assert sum(c["train"] for c in counts.values()) == len(result.train)
    assert sum(c["eval"] for c in counts.values()) == len(result.eval)


def test_min_eval_on_small_data():
    result = split.split(corpus(60, seed=6), eval_fraction=0.1, min_eval=20)
    assert len(result.eval) == 20 and len(result.train) + len(result.validation) == 40
    tiny = split.split(corpus(6, seed=6), eval_fraction=0.1, min_eval=20)
    assert len(tiny.eval) == 3  # never more than half the data


def test_contaminated_eval_rows_move_to_train():
    rng = random.Random(7)
    rows = corpus(200, seed=8)
    for i in range(200):  # find a near-duplicate pair that the hash puts on opposite sides
        text = " ".join(rng.choice(WORDS) for _ in range(30))
        a, b = rec(f"a{i}", text, "billing"), rec(f"b{i}", text + " thanks", "billing")
        if (split.split_score(a, "tunegate-split-v1") < 0.1) != (split.split_score(b, "tunegate-split-v1") < 0.1):
            break
    result = split.split(rows + [a, b], eval_fraction=0.1, min_eval=1, hasher=MinHasher())
    assert result.contamination_moved == 1 and result.contamination_pairs == 0
    assert {a["id"], b["id"]} <= {r["id"] for r in result.train}


def test_reusing_dedup_signatures_gives_the_same_split():
    """The in-process shortcut (dedup's prompts and signatures) changes nothing but time."""
    rng = random.Random(3)
    rows = corpus(300, seed=9)
    rows += [rec(f"n{i}", rows[i]["messages"][1]["content"] + f" {rng.choice(WORDS)}", "billing") for i in range(40)]
    deduped = dedup.deduplicate(rows, threshold=0.95)  # keeps the edits: some contaminate
    reused = split.split(deduped.kept, eval_fraction=0.2, min_eval=10, index=deduped.kept_index)
    fresh = split.split(deduped.kept, eval_fraction=0.2, min_eval=10)
    assert sides(reused) == sides(fresh) and reused.contamination_moved == fresh.contamination_moved > 0
    n = len(deduped.kept)
    with pytest.raises(ValueError, match=f"index has {n} rows for {n - 1} records"):
        split.split(deduped.kept[1:], index=deduped.kept_index)


def test_fingerprint_tracks_contents(tmp_path):
    train, validation, held = tmp_path / "train.jsonl", tmp_path / "validation.jsonl", tmp_path / "eval.jsonl"
    train.write_text('{"a": 1}\n')
    validation.write_text('{"v": 1}\n')
    held.write_text('{"b": 2}\n')
    first = split.data_fingerprint(train, validation, held)
    assert first == split.data_fingerprint(train, validation, held) and len(first) == 64
    held.write_text('{"b": 3}\n')
    second = split.data_fingerprint(train, validation, held)
    assert second != first
    validation.write_text('{"v": 2}\n')  # a row appended that landed in validation only
    assert split.data_fingerprint(train, validation, held) != second


def test_unlucky_label_is_topped_up():
    """A label the hash leaves without eval rows gets its floor from its lowest scores."""
    unlucky = [
        r
        for r in (rec(f"u{i}", f"unlucky ticket {i}", "unlucky") for i in range(400))
        if split.split_score(r, "tunegate-split-v1") >= 0.1
    ][:100]
    result = split.split(corpus(500, seed=9) + unlucky, eval_fraction=0.1, min_eval=10)
    assert result.labels()["unlucky"]["eval"] == 4 and result.eval_topups >= 4  # ceil(10 - 2*3)


# --------------------------------------------------------------------------- validation slice
def test_validation_slice_is_stable_as_data_grows():
    base = corpus(1000, seed=11)
    before = split.split(base, min_eval=10, validation_fraction=0.1, min_validation=16)
    after = split.split(
        base + corpus(1000, seed=12, start=1000), min_eval=10, validation_fraction=0.1, min_validation=16
    )
    assert 16 < len(before.validation) < 0.25 * (len(before.train) + len(before.validation))  # pure hash
    old_validation = {r["id"] for r in before.validation}
    new_validation = {r["id"] for r in after.validation}
    assert new_validation & {r["id"] for r in base} == old_validation  # none left, none joined
    assert len(new_validation) > len(old_validation)  # the new rows got their share


def test_train_validation_eval_are_disjoint_and_add_up():
    rows = corpus(700, seed=13)
    result = split.split(rows, eval_fraction=0.1, min_eval=10, validation_fraction=0.1)
    train, validation, held = ({r["id"] for r in side} for side in (result.train, result.validation, result.eval))
    assert not train & validation and not train & held and not validation & held
    assert len(result.train) + len(result.validation) + len(result.eval) == len(rows)
    assert train | validation | held == {r["id"] for r in rows}
    labels = result.labels()
    for side, ids in (("train", train), ("validation", validation), ("eval", held)):
        assert sum(c[side] for c in labels.values()) == len(ids), side


def test_validation_comes_from_the_train_side_only():
    """Carving the slice must not change which rows are held out: eval is the same with or
    without it, and validation is exactly train-without-slice's complement in train."""
    rows = corpus(500, seed=14)
    small = split.split(rows, min_eval=10, validation_fraction=0.02, min_validation=1)
    large = split.split(rows, min_eval=10, validation_fraction=0.2, min_validation=1)
    assert [r["id"] for r in small.eval] == [r["id"] for r in large.eval]
    assert {r["id"] for r in small.train + small.validation} == {r["id"] for r in large.train + large.validation}
    assert {r["id"] for r in small.validation} < {r["id"] for r in large.validation}  # a larger hash range


def test_validation_has_its_own_hash():
    """Not the eval side's hash: the rows just above eval_fraction are not all validation."""
    rows = corpus(1000, seed=15)
    result = split.split(rows, eval_fraction=0.1, min_eval=10, validation_fraction=0.1)
    salt = split.validation_salt("tunegate-split-v1")
    assert all(split.split_score(r, salt) < 0.1 for r in result.validation)
    assert all(split.split_score(r, salt) >= 0.1 for r in result.train)
    next_band = {r["id"] for r in rows if 0.1 <= split.split_score(r, "tunegate-split-v1") < 0.2}
    assert len(next_band & {r["id"] for r in result.validation}) < 0.5 * len(next_band)


def test_validation_floor_and_cap_on_small_data():
    floor = split.split(
        corpus(100, seed=16), eval_fraction=0.1, min_eval=10, validation_fraction=0.01, min_validation=16
    )
    assert len(floor.validation) == 16  # the hash alone gave ~1
    salt = split.validation_salt("tunegate-split-v1")
    chosen = sorted(split.split_score(r, salt) for r in floor.validation)
    assert chosen[-1] < min(split.split_score(r, salt) for r in floor.train)  # the lowest scores
    capped = split.split(corpus(40, seed=16), eval_fraction=0.1, min_eval=10, min_validation=16)
    assert len(capped.validation) == int(split.MAX_VALIDATION_SHARE * 30) == 7  # a quarter of 30
    assert len(capped.train) == 23
