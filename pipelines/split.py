"""The held-out split, made before any training, and stable as data grows.

Each example's side comes from a salted hash of its normalised prompt, so it does not depend
on the other rows: re-running, or appending rows to a source, never moves an example between
train and eval, and scores stay comparable across re-tunes. Two small-data top-ups break that
rule only where the hash alone gave too little: a label gets at least its expected eval
count minus two standard deviations, and the set at least ``min_eval`` (at most half the
rows), taking the lowest hash scores; ``eval_topups`` counts them. Then eval rows that are near
duplicates of train rows (``contamination_threshold``, stricter than dedup's) are moved to
train, until none is left.
No Dagster here."""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.dedup import PromptIndex
from pipelines.minhash import MinHasher, similar_pairs
from pipelines.records import paused_gc, prompt_key, prompt_parts

NO_LABEL = "(none)"


def _score(key: str, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_score(record: dict[str, Any], salt: str) -> float:
    """Uniform in [0, 1), a pure function of the normalised prompt and the salt."""
    return _score(prompt_key(record), salt)


@dataclass
class SplitResult:
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    eval_topups: int  # rows put in eval by the small-data floors, not by the hash alone
    contamination_moved: int  # eval rows moved to train: near duplicates of a train row
    contamination_pairs: int  # eval/train near-duplicate pairs left after moving: must be 0

    def labels(self) -> dict[str, dict[str, int]]:
        train = Counter(r.get("label") or NO_LABEL for r in self.train)
        held = Counter(r.get("label") or NO_LABEL for r in self.eval)
        return {k: {"train": train[k], "eval": held[k]} for k in sorted(set(train) | set(held))}


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


@paused_gc()
def split(
    records: list[dict[str, Any]],
    *,
    eval_fraction: float = 0.10,
    min_eval: int = 40,
    salt: str = "tunegate-split-v1",
    contamination_threshold: float = 0.70,
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
    scores = [_score("\n".join(p), salt) for p in parts]
    is_eval = [s < eval_fraction for s in scores]

    topups = 0
    strata: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        strata[record.get("label") or NO_LABEL].append(i)
    for members in strata.values():
        topups += _take_lowest(members, scores, _label_floor(len(members), eval_fraction)
                               - sum(is_eval[i] for i in members), is_eval)
    wanted = min(min_eval, len(records) // 2)
    topups += _take_lowest(list(range(len(records))), scores, wanted - sum(is_eval), is_eval)

    pairs, _ = similar_pairs([u for _, u in parts], [s for s, _ in parts], contamination_threshold, hasher, sigs)
    moved = 0
    while cross := _cross_pairs(pairs, is_eval):  # a moved row can expose its eval neighbours
        for pair in cross:
            for i in pair:
                moved += is_eval[i]
                is_eval[i] = False
    return SplitResult(
        train=[r for r, e in zip(records, is_eval) if not e],
        eval=[r for r, e in zip(records, is_eval) if e],
        eval_topups=topups,
        contamination_moved=moved,
        contamination_pairs=len(_cross_pairs(pairs, is_eval)),
    )


def data_fingerprint(train_file: Path, eval_file: Path) -> str:
    """sha256 over both files' bytes: what later stages key their caches on."""
    digest = hashlib.sha256()
    for path in (train_file, eval_file):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()
