"""The held-out split, made before any training, and stable as data grows.

Each example's side comes from a salted hash of its normalised prompt, so it does not depend
on the other rows: re-running, or appending rows to a source, never moves an example between
train and eval, and scores stay comparable across re-tunes. Two small-data top-ups break that
rule only where the hash alone gave too little: a label gets at least its expected eval
count minus two standard deviations, and the set at least ``min_eval`` (at most half the
rows), taking the lowest hash scores; ``eval_topups`` counts them. Then eval rows that are near
duplicates of train rows (``contamination_threshold``, stricter than dedup's) are moved to
train, until none is left.

The validation slice is then carved out of the train side the same way, with a derived salt:
the train rows scoring below ``validation_fraction`` (at least ``min_validation``, at most
``MAX_VALIDATION_SHARE`` of train, lowest scores first). It is what Axolotl evaluates on and
what the "did it learn" guard judges, so the held-out eval split never steers training (nor a
retry after a guard failure). It is removed from the rows Axolotl trains on; eval rows were
already kept apart from every train row, validation included, by the contamination check.
No Dagster here."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.common.hashing import sha256_files, sha256_text
from pipelines.data.dedup import PromptIndex
from pipelines.data.minhash import MinHasher, similar_pairs
from pipelines.data.records import paused_gc, prompt_key, prompt_parts

NO_LABEL = "(none)"
MAX_VALIDATION_SHARE = 0.25  # the floor never takes more than this share of the train rows


def _score(key: str, salt: str) -> float:
    return int(sha256_text(f"{salt}\0{key}")[:16], 16) / 2**64


def split_score(record: dict[str, Any], salt: str) -> float:
    """Uniform in [0, 1), a pure function of the normalised prompt and the salt."""
    return _score(prompt_key(record), salt)


def validation_salt(salt: str) -> str:
    """The validation slice's own salt: independent of the eval side's hash, yet it moves
    only when ``split.salt`` does."""
    return f"{salt}\0validation"


@dataclass(frozen=True)
class SplitFile:
    """One side of the written split: ``train_set``'s, ``validation_set``'s or ``eval_set``'s value."""

    path: str
    rows: int
    fingerprint: str  # of train, validation and eval together (``data_fingerprint``)
    labels: dict[str, int]  # rows per label on this side


@dataclass
class SplitResult:
    train: list[dict[str, Any]]  # what Axolotl trains on: the train side minus validation
    validation: list[dict[str, Any]]  # carved out of the train side; what Axolotl evaluates on
    eval: list[dict[str, Any]]  # held out: only the final evaluation ever reads it
    eval_topups: int  # rows put in eval by the small-data floors, not by the hash alone
    contamination_moved: int  # eval rows moved to train: near duplicates of a train row
    contamination_pairs: int  # eval/train near-duplicate pairs left after moving: must be 0

    def labels(self) -> dict[str, dict[str, int]]:
        sides = {
            name: Counter(r.get("label") or NO_LABEL for r in rows)
            for name, rows in (("train", self.train), ("validation", self.validation), ("eval", self.eval))
        }
        keys = sorted(set().union(*sides.values()))
        return {k: {name: counts[k] for name, counts in sides.items()} for k in keys}


def _label_floor(n: int, fraction: float) -> int:
    """Eval rows a label must get: its expected count minus two standard deviations. The
    hash alone meets it ~98 % of the time, so the floor only corrects a badly unlucky label
    and leaves the split stable otherwise."""
    expected = fraction * n
    return max(0, math.ceil(expected - 2 * math.sqrt(expected * (1 - fraction))))


def _take_lowest(candidates: list[int], scores: list[float], count: int, is_eval: list[bool]) -> int:
    chosen = sorted((i for i in candidates if not is_eval[i]), key=scores.__getitem__)[: max(0, count)]
    for i in chosen:
        is_eval[i] = True
    return len(chosen)


def _cross_pairs(pairs: Any, is_eval: list[bool]) -> list[tuple[int, int]]:
    return [(a, b) for a, b in pairs.tolist() if is_eval[a] != is_eval[b]]


def _validation_size(train_rows: int, hashed: int, min_validation: int) -> int:
    """How many train rows the validation slice takes: what the hash picked, raised to
    ``min_validation`` and capped at ``MAX_VALIDATION_SHARE`` of the train rows."""
    cap = int(train_rows * MAX_VALIDATION_SHARE)
    return min(max(hashed, min_validation), cap)


def _carve_validation(train: list[int], scores: dict[int, float], fraction: float, min_validation: int) -> set[int]:
    """The validation rows among ``train`` (indices): the lowest scores. Between the floor
    and the cap that is exactly the rows scoring below ``fraction``, a per-row property, so
    appending rows never moves an old one in or out."""
    hashed = sum(scores[i] < fraction for i in train)
    ranked = sorted(train, key=scores.__getitem__)
    return set(ranked[: _validation_size(len(train), hashed, min_validation)])


@paused_gc()
def split(
    records: list[dict[str, Any]],
    *,
    eval_fraction: float = 0.10,
    min_eval: int = 40,
    salt: str = "tunegate-split-v1",
    contamination_threshold: float = 0.70,
    validation_fraction: float = 0.10,
    min_validation: int = 16,
    hasher: MinHasher | None = None,
    index: PromptIndex | None = None,
) -> SplitResult:
    """``index``: the records' prompts and signatures when dedup already computed them
    (``DedupResult.kept_index``); its hasher then replaces ``hasher``."""
    if index is None:
        parts, sigs, hasher = [prompt_parts(r) for r in records], None, hasher or MinHasher()
    elif len(index.parts) != len(records):
        raise ValueError(f"index has {len(index.parts)} rows for {len(records)} records")
    else:
        parts, sigs, hasher = index.parts, index.signatures, index.hasher
    keys = ["\n".join(p) for p in parts]
    scores = [_score(k, salt) for k in keys]
    is_eval = [s < eval_fraction for s in scores]

    topups = 0
    strata: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        strata[record.get("label") or NO_LABEL].append(i)
    for members in strata.values():
        topups += _take_lowest(
            members, scores, _label_floor(len(members), eval_fraction) - sum(is_eval[i] for i in members), is_eval
        )
    wanted = min(min_eval, len(records) // 2)
    topups += _take_lowest(list(range(len(records))), scores, wanted - sum(is_eval), is_eval)

    pairs, _ = similar_pairs([u for _, u in parts], [s for s, _ in parts], contamination_threshold, hasher, sigs)
    moved = 0
    while cross := _cross_pairs(pairs, is_eval):  # a moved row can expose its eval neighbours
        for pair in cross:
            for i in pair:
                moved += is_eval[i]
                is_eval[i] = False
    train = [i for i, e in enumerate(is_eval) if not e]
    val_salt = validation_salt(salt)
    val_scores = {i: _score(keys[i], val_salt) for i in train}
    validation = _carve_validation(train, val_scores, validation_fraction, min_validation)
    return SplitResult(
        train=[records[i] for i in train if i not in validation],
        validation=[records[i] for i in train if i in validation],
        eval=[r for r, e in zip(records, is_eval) if e],
        eval_topups=topups,
        contamination_moved=moved,
        contamination_pairs=len(_cross_pairs(pairs, is_eval)),
    )


def data_fingerprint(*files: Path) -> str:
    """sha256 over the files' names and bytes (``Layout.split_files``: train, validation,
    eval): what later stages key their caches on."""
    return sha256_files(files)


# --------------------------------------------------------------------------- checks on a written split
def shared_prompts(sides: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Prompts (normalised system + user turn) found on more than one side of the split, each
    as ``side/id ~ side/id``: a row on two sides would be trained on and judged."""
    seen: dict[str, str] = {}
    clashes = []
    for side, rows in sides.items():
        for row in rows:
            key = prompt_key(row)
            here = f"{side}/{row.get('id')}"
            if key in seen and seen[key].split("/", 1)[0] != side:
                clashes.append(f"{seen[key]} ~ {here}")
            seen.setdefault(key, here)
    return clashes


def contamination_pairs(
    trained: list[dict[str, Any]], held_out: list[dict[str, Any]], threshold: float, hasher: MinHasher
) -> list[tuple[str, str]]:
    """(trained id, held-out id) of every held-out row that near-duplicates a row training
    sees (MinHash Jaccard >= ``threshold`` on the normalised user turn, within a system prompt)."""
    rows = [*trained, *held_out]
    parts = [prompt_parts(r) for r in rows]
    pairs, _ = similar_pairs([u for _, u in parts], [s for s, _ in parts], threshold, hasher)
    is_held = [False] * len(trained) + [True] * len(held_out)
    out = []
    for a, b in _cross_pairs(pairs, is_held):
        first, second = (a, b) if not is_held[a] else (b, a)
        out.append((str(rows[first].get("id")), str(rows[second].get("id"))))
    return out
