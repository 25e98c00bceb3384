"""Normalisation, exact and near deduplication, conflicts."""

import itertools
import json
import random

import numpy as np
import pytest

from pipelines.data import dedup, minhash
from pipelines.data.records import normalize, prompt_key, same_answer, words

WORDS = [f"word{i}" for i in range(400)]


def rec(rid, user, answer='{"category": "billing"}', system="Classify."):
    return {
        "id": rid,
        "source": "s",
        "label": None,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ],
    }


def sentence(rng, n=30):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def test_normalize():
    assert normalize("  Ｒｅｆｕｎｄ\u00a0ＮＯＷ \t\n please ") == "refund now please"  # NFKC full-width, nbsp
    assert normalize("STRASSE") == normalize("straße")  # casefold, not lower
    assert normalize("ﬁle") == "file"  # ligature
    assert words("Refund!! now, please...") == ["refund", "now", "please"]
    assert prompt_key(rec("a", "Hi  THERE")) == prompt_key(rec("b", "hi there"))
    assert prompt_key(rec("a", "hi")) != prompt_key(rec("b", "hi", system="Other."))
    assert same_answer('{"b": 1, "a": 2}', '{"a":2,"b":1}')  # JSON answers compare parsed
    assert not same_answer('{"a": 1}', '{"a": 2}')
    assert same_answer("Refund  NOW", "refund now") and not same_answer("refund", "refunds")


def test_exact_duplicates_keep_first_and_are_audited():
    rows = [
        rec("1", "My card was charged twice"),
        rec("2", "MY CARD  was charged twice "),
        rec("3", "Something else entirely here"),
        rec("4", "my card was charged twice"),
    ]
    result = dedup.deduplicate(rows)
    assert [r["id"] for r in result.kept] == ["1", "3"]
    assert result.exact_duplicates == 2 and result.near_duplicates == 0
    assert [(a["dropped_id"], a["kept_id"], a["kind"], a["similarity"]) for a in result.audit] == [
        ("2", "1", "exact", 1.0),
        ("4", "1", "exact", 1.0),
    ]


def test_different_system_prompt_is_not_a_duplicate():
    text = sentence(random.Random(0))
    result = dedup.deduplicate([rec("1", text), rec("2", text, system="Translate.")])
    assert len(result.kept) == 2


def test_near_duplicates_found_unrelated_kept():
    rng = random.Random(1)
    base = [sentence(rng) for _ in range(50)]
    rows = [rec(f"b{i}", t) for i, t in enumerate(base)]
    rows += [
        rec("near-tail", base[3] + " thanks"),
        rec("near-punct", base[7].replace(" ", ", ", 1) + "!"),
        rec("near-word", " ".join(base[9].split()[:-1] + ["changed"])),
    ]
    result = dedup.deduplicate(rows, threshold=0.85)
    dropped = {a["dropped_id"]: (a["kept_id"], a["kind"]) for a in result.audit}
    assert dropped == {"near-tail": ("b3", "near"), "near-punct": ("b7", "near"), "near-word": ("b9", "near")}
    assert all(0.85 <= a["similarity"] <= 1 for a in result.audit)
    assert len(result.kept) == 50 and result.near_duplicates == 3


def test_keep_first_is_deterministic_and_order_based():
    rng = random.Random(2)
    text = sentence(rng)
    a, b = rec("a", text), rec("b", text + " please")
    assert [r["id"] for r in dedup.deduplicate([a, b]).kept] == ["a"]
    assert [r["id"] for r in dedup.deduplicate([b, a]).kept] == ["b"]
    assert dedup.deduplicate([a, b]).audit == dedup.deduplicate([a, b]).audit


def test_conflicts_are_duplicates_with_a_different_answer():
    text = sentence(random.Random(3))
    rows = [
        rec("1", text, '{"category": "billing", "priority": "low"}'),
        rec("2", text.upper(), '{"priority": "low",  "category": "billing"}'),  # same answer
        rec("3", text, '{"category": "billing", "priority": "urgent"}'),  # exact conflict
        rec("4", text + " asap", '{"category": "refund", "priority": "low"}'),
    ]  # near conflict
    result = dedup.deduplicate(rows)
    assert [(c["dropped_id"], c["kind"]) for c in result.conflicts] == [("3", "exact"), ("4", "near")]
    assert result.conflicts[0]["kept_answer"] == '{"category": "billing", "priority": "low"}'


def _jaccard(a, b, k=3):
    sa = {tuple(a[i : i + k]) for i in range(len(a) - k + 1)}
    sb = {tuple(b[i : i + k]) for i in range(len(b) - k + 1)}
    return len(sa & sb) / len(sa | sb)


def test_lsh_finds_what_brute_force_finds():
    """Against an exhaustive pairwise Jaccard on a small corpus: every pair well above the
    threshold is found, nothing far below it is reported."""
    rng = random.Random(4)
    texts = [sentence(rng, rng.randint(25, 45)) for _ in range(150)]
    for i in range(0, 150, 5):  # plant edits of varying size
        toks = texts[i].split()
        for _ in range(rng.randint(0, 3)):
            toks[rng.randrange(len(toks))] = rng.choice(WORDS)
        texts[i + 1] = " ".join(toks)
    pairs, sims = minhash.similar_pairs(texts, [""] * len(texts), 0.85, minhash.MinHasher())
    found = set(map(tuple, pairs.tolist()))
    truth = {(i, j): _jaccard(texts[i].split(), texts[j].split()) for i, j in itertools.combinations(range(150), 2)}
    assert {p for p, j in truth.items() if j >= 0.95} <= found
    assert all(truth[p] >= 0.7 for p in found)
    assert np.all(sims >= 0.85)


def test_signature_estimates_jaccard():
    rng = random.Random(5)
    a = sentence(rng, 60).split()
    b = a[:45] + [rng.choice(WORDS) for _ in range(15)]
    sig = minhash.MinHasher(num_perm=256).signatures([" ".join(a), " ".join(b)])
    assert (sig[0] == sig[1]).mean() == pytest.approx(_jaccard(a, b), abs=0.1)


def test_lsh_params_fit_the_signature():
    bands, rows = minhash.lsh_params(0.85, 128)
    assert bands * rows <= 128 and bands > 1 and rows > 1


def test_short_and_wordless_texts():
    rows = [rec("1", "Help"), rec("2", "Help?"), rec("3", "???"), rec("4", "!!!"), rec("5", "Help me")]
    result = dedup.deduplicate(rows)
    kept = [r["id"] for r in result.kept]
    assert kept == ["1", "3", "4", "5"]  # "Help?" has the same words as "Help"; "???" != "!!!"
    json.dumps(result.audit)


def test_counts_add_up_conflicts_are_part_of_exact_and_near_per_source():
    """`exact 39, near 33, conflicts 7, rows 881 -> 809` read as 79 drops: conflicts are a part
    of the exact and near duplicates, and each source's drops add up on their own."""
    text = sentence(random.Random(6))
    rows = [
        rec("1", text, '{"category": "billing"}'),
        rec("2", text, '{"category": "refund"}'),
        rec("3", text + " asap", '{"category": "refund"}'),
        rec("4", "unrelated words here entirely"),
    ]
    rows[1]["source"] = rows[2]["source"] = "other"
    result = dedup.deduplicate(rows)
    assert (result.exact_duplicates, result.near_duplicates) == (1, 1)
    assert result.conflicts_of("exact") + result.conflicts_of("near") == len(result.conflicts) == 2
    assert len(rows) == len(result.kept) + result.exact_duplicates + result.near_duplicates
    assert result.per_source(rows) == {
        "s": {"rows_in": 2, "exact": 0, "near": 0, "conflicts": 0, "rows_out": 2},
        "other": {"rows_in": 2, "exact": 1, "near": 1, "conflicts": 2, "rows_out": 0},
    }
    assert {(a["dropped_source"], a["kept_source"]) for a in result.audit} == {("other", "s")}
