"""Deduplicate hard: exact duplicates, near duplicates (MinHash LSH) and conflicting answers.

Near duplicates are found with MinHash over word shingles and banded LSH (``minhash.py``):
cost grows with the number of shingles, never with the number of row pairs. Rows are
kept first-come in the input order, so the same input always keeps the same rows. Duplicates
whose answer differs from the kept row's are label noise and are reported as conflicts: a
conflict is one of the exact or near duplicates, never a third kind of dropped row, so
``rows_in == kept + exact + near`` and ``conflicts == exact_conflicts + near_conflicts``.
No Dagster here."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.data.minhash import MinHasher, similar_pairs
from pipelines.data.records import paused_gc, prompt_parts, same_answer, turn


@dataclass
class PromptIndex:
    """The normalised (system, user) prompt of each record and the MinHash signature of its
    user turn, row-aligned. Dedup computes them; the split's contamination check takes them
    when both run in one process, instead of normalising and hashing every prompt again
    (half of the split's time on 1M rows)."""

    parts: list[tuple[str, str]]
    signatures: np.ndarray  # (rows, num_perm) uint32
    hasher: MinHasher


@dataclass
class DedupResult:
    kept: list[dict[str, Any]]
    audit: list[dict[str, Any]]  # {dropped_id, kept_id, dropped_source, kept_source, kind, similarity, conflict, ...}
    exact_duplicates: int
    near_duplicates: int
    kept_index: PromptIndex  # aligned with ``kept``

    @property
    def conflicts(self) -> list[dict[str, Any]]:
        return [row for row in self.audit if row["conflict"]]

    def conflicts_of(self, kind: str) -> int:
        """Conflicts among the ``exact`` or ``near`` duplicates: the part of them whose answer differs."""
        return sum(1 for row in self.audit if row["conflict"] and row["kind"] == kind)

    def per_source(self, records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
        """Per source, in first-seen order: rows in, dropped as exact / near duplicates (and how
        many of those were conflicts), rows out. Each row adds up: in == exact + near + out."""
        rows_in = Counter(r["source"] for r in records)
        dropped = Counter((a["dropped_source"], a["kind"]) for a in self.audit)
        conflicts = Counter(a["dropped_source"] for a in self.audit if a["conflict"])
        return {
            source: {
                "rows_in": n,
                "exact": dropped[source, "exact"],
                "near": dropped[source, "near"],
                "conflicts": conflicts[source],
                "rows_out": n - dropped[source, "exact"] - dropped[source, "near"],
            }
            for source, n in rows_in.items()
        }


@paused_gc()
def deduplicate(
    records: list[dict[str, Any]], *, threshold: float = 0.85, hasher: MinHasher | None = None
) -> DedupResult:
    """Exact dedup on the normalised system+user key, then near dedup of the survivors.
    A row is dropped when an earlier *kept* row is its duplicate; ``conflict`` marks a
    dropped row whose (canonical) answer differs from the kept row's."""
    hasher = hasher or MinHasher()
    audit: list[dict[str, Any]] = []

    def drop(row: dict, kept: dict, kind: str, similarity: float) -> None:
        dropped_answer, kept_answer = turn(row, "assistant"), turn(kept, "assistant")
        audit.append(
            {
                "dropped_id": row["id"],
                "kept_id": kept["id"],
                "dropped_source": row.get("source"),
                "kept_source": kept.get("source"),
                "kind": kind,
                "similarity": round(float(similarity), 4),
                "conflict": not same_answer(dropped_answer, kept_answer),
                "dropped_answer": dropped_answer,
                "kept_answer": kept_answer,
            }
        )

    first: dict[tuple[str, str], dict[str, Any]] = {}
    survivors: list[dict[str, Any]] = []
    for record in records:
        key = prompt_parts(record)  # the prompt_key, split so the user part is reused below
        if key in first:
            drop(record, first[key], "exact", 1.0)
        else:
            first[key] = record
            survivors.append(record)
    exact = len(audit)

    parts = list(first)
    users = [u for _, u in parts]
    sigs = hasher.signatures(users)
    pairs, sims = similar_pairs(users, [s for s, _ in parts], threshold, hasher, sigs)
    dropped = np.zeros(len(survivors), bool)
    order = np.lexsort((pairs[:, 0], pairs[:, 1]))  # by later row, then earlier: keep-first
    for (earlier, later), sim in zip(pairs[order].tolist(), sims[order].tolist()):
        if not dropped[later] and not dropped[earlier]:
            dropped[later] = True
            drop(survivors[later], survivors[earlier], "near", sim)
    kept = [r for r, gone in zip(survivors, dropped) if not gone]
    index = PromptIndex([p for p, gone in zip(parts, dropped) if not gone], sigs[~dropped], hasher)
    return DedupResult(kept, audit, exact, int(dropped.sum()), index)
