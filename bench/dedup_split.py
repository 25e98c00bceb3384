"""Benchmark: load -> validate -> dedup -> split on N synthetic pairs, against datasketch.

    python bench/dedup_split.py            # N = 1,000,000
    python bench/dedup_split.py --n 200000 --reference-n 20000

Generates N chat pairs (~80 % originals, ~10 % exact duplicates after normalisation, ~10 %
near duplicates made by a small edit, ~0.1 % malformed lines) as JSONL in a child process (so
peak RSS is the pipeline's), then times the real engines on it: ``ingest`` (load + validate),
``deduplicate`` (exact + MinHash LSH), ``split`` (hash split + contamination check).
Goals on a 2-core machine: >= 20,000 pairs/s end to end, peak RSS <= 4 GB, near-duplicate
recall >= 0.95 on the planted duplicates.

Reference, same run, same rows: datasketch's ``MinHash`` (``bulk``) + ``MinHashLSH`` with the
same shingles, threshold and num_perm, timed on a ``--reference-n`` row subsample (half
originals, half planted near-duplicate pairs; datasketch is too slow for 1M rows here); our
near-duplicate stage is timed on the same subsample and the ratio printed.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.config.sources import SourceSpec  # noqa: E402
from pipelines.data import (
    dedup,  # noqa: E402
    minhash,
    quality,
    split,
    validate,
)
from pipelines.data.records import normalize, turn, words  # noqa: E402

SYSTEM = "Classify the support ticket."
LABELS = ["billing", "technical", "account", "shipping", "refund"]


def _vocab(rng: random.Random, size: int = 20_000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return sorted({"".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(size)})


def _edit(tokens: list[str], rng: random.Random, vocab: list[str]) -> list[str]:
    """A small edit: one appended, dropped or replaced word at an end, or punctuation."""
    kind = rng.randrange(4)
    if kind == 0:
        return tokens + [rng.choice(vocab)]
    if kind == 1:
        return tokens[1:]
    if kind == 2:
        return tokens[:-1] + [rng.choice(vocab)]
    return [tokens[0] + ","] + tokens[1:-1] + [tokens[-1] + "!"]


def generate(path: Path, n: int, seed: int) -> None:
    """Write N rows; the truth (origin of every planted duplicate) goes to ``path.truth``."""
    rng = random.Random(seed)
    vocab = _vocab(rng)
    n_exact = n_near = n // 10
    n_bad = n // 1000
    n_orig = n - n_exact - n_near - n_bad
    truth = []
    with open(path, "w", encoding="utf-8") as out:
        originals = []
        for i in range(n_orig):
            tokens = [rng.choice(vocab) for _ in range(rng.randint(25, 45))]
            originals.append(tokens)
            label = LABELS[i % 5]
            answer = json.dumps({"category": label, "priority": "low"})
            out.write(
                json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": " ".join(tokens)},
                            {"role": "assistant", "content": answer},
                        ]
                    }
                )
                + "\n"
            )
        origins = rng.sample(range(n_orig), n_exact + n_near)  # each original duplicated at most once
        for k, origin in enumerate(origins):
            tokens = originals[origin]
            if k < n_exact:
                text = rng.choice([" ".join(tokens).upper(), "  ".join(tokens), " ".join(tokens)])
            else:
                text = " ".join(_edit(tokens, rng, vocab))
            answer = json.dumps({"category": LABELS[origin % 5], "priority": "low"})
            out.write(
                json.dumps({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]})
                + "\n"
            )
            truth.append([n_orig + k + 1, origin + 1, "exact" if k < n_exact else "near"])
        for _ in range(n_bad):
            out.write('{"messages": [{"role": "user", "content": "truncated\n')
    Path(str(path) + ".truth").write_text(json.dumps(truth))


def _jaccard(a: str, b: str, k: int = 3) -> float:
    ta, tb = words(a), words(b)
    sa = {tuple(ta[i : i + k]) for i in range(len(ta) - k + 1)}
    sb = {tuple(tb[i : i + k]) for i in range(len(tb) - k + 1)}
    return len(sa & sb) / max(1, len(sa | sb))


def reference(texts: list[str], threshold: float, num_perm: int) -> tuple[float, set[tuple[int, int]]]:
    """datasketch MinHash + MinHashLSH over the same word 3-shingles; returns (seconds, pairs)."""
    from datasketch import MinHash, MinHashLSH

    start = time.perf_counter()
    shingles = []
    for text in texts:
        tokens = words(text) or [normalize(text)]
        grams = [" ".join(tokens[i : i + 3]) for i in range(max(1, len(tokens) - 2))]
        shingles.append([g.encode() for g in grams])
    hashes = MinHash.bulk(shingles, num_perm=num_perm)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    pairs = set()
    for i, mh in enumerate(hashes):
        for j in lsh.query(mh):
            if hashes[j].jaccard(mh) >= threshold:
                pairs.add((j, i))
        lsh.insert(i, mh)
    return time.perf_counter() - start, pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--reference-n", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threshold", type=float, default=0.85)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generate(args.generate, args.n, args.seed)
        return

    workdir = Path(tempfile.mkdtemp(prefix="tunegate-bench-"))
    data = workdir / "pairs.jsonl"
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--generate", str(data), "--n", str(args.n), "--seed", str(args.seed)], check=True
    )
    print(f"generated {args.n:,} pairs in {time.perf_counter() - start:.1f}s ({data.stat().st_size / 1e6:.0f} MB)")

    spec = SourceSpec(
        name="bench",
        kind="jsonl",
        path=str(data),
        fields={"messages": "messages"},
        label="category",
        system_prompt=SYSTEM,
    )
    hasher = minhash.MinHasher(num_perm=args.num_perm)
    t0 = time.perf_counter()
    minhash.compile_kernels()
    print(
        f"numba kernels compiled or loaded from cache in {time.perf_counter() - t0:.1f}s (once per "
        "install / per process: not part of a run's time)"
    )
    timings = {}
    t0 = time.perf_counter()
    loaded = validate.ingest(spec, max_chars=4000)
    quality.check_reject_rate(loaded, spec, 0.2)
    timings["load+validate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    deduped = dedup.deduplicate(loaded.records, threshold=args.threshold, hasher=hasher)
    timings["dedup"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = split.split(deduped.kept, index=deduped.kept_index)
    timings["split"] = time.perf_counter() - t0
    total = sum(timings.values())
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2

    truth = json.loads(Path(str(data) + ".truth").read_text())
    dropped = {a["dropped_id"]: a["kept_id"] for a in deduped.audit}
    by_kind = {"exact": [0, 0], "near": [0, 0]}
    for dup, origin, kind in truth:
        by_kind[kind][0] += dropped.get(f"bench-{dup}") == f"bench-{origin}"
        by_kind[kind][1] += 1
    planted = {f"bench-{dup}" for dup, _, _ in truth}
    false_drops = sum(1 for d in dropped if d not in planted)
    texts = {r["id"]: turn(r, "user") for r in loaded.records}
    near_truth = [(d, o) for d, o, k in truth if k == "near"]
    near_j = sorted(_jaccard(texts[f"bench-{o}"], texts[f"bench-{d}"]) for d, o in near_truth[:2000])

    print(
        f"rows in {loaded.rows_in:,}: kept {len(loaded.records):,}, quarantined {len(loaded.quarantined):,}; "
        f"deduped {len(deduped.kept):,} (exact {deduped.exact_duplicates:,}, near {deduped.near_duplicates:,}); "
        f"train {len(result.train):,} / eval {len(result.eval):,}, contamination moved "
        f"{result.contamination_moved}, left {result.contamination_pairs}"
    )
    for stage, seconds in timings.items():
        print(f"  {stage:<14} {seconds:7.1f}s")
    print(
        f"end to end: {total:.1f}s = {args.n / total:,.0f} pairs/s (goal >= 20,000); peak RSS {peak_gb:.2f} GB "
        "(goal <= 4)"
    )
    print(
        f"recall on planted duplicates: exact {by_kind['exact'][0] / by_kind['exact'][1]:.4f}, "
        f"near {by_kind['near'][0] / by_kind['near'][1]:.4f} (goal >= 0.95); rows dropped that were not "
        f"planted: {false_drops}; planted near-dup true Jaccard min {near_j[0]:.3f} median "
        f"{near_j[len(near_j) // 2]:.3f}"
    )

    # Reference on the same rows (a subsample: datasketch is pure Python per row).
    # the first originals plus planted near-duplicate pairs, so both sides have work to find
    wanted = {f"bench-{i}" for i in range(1, args.reference_n // 2 + 1)}
    wanted |= {f"bench-{i}" for pair in near_truth[: args.reference_n // 4] for i in pair}
    sample = [normalize(turn(r, "user")) for r in loaded.records if r["id"] in wanted]
    t0 = time.perf_counter()
    ours, _ = minhash.similar_pairs(
        sample, [SYSTEM] * len(sample), args.threshold, minhash.MinHasher(num_perm=args.num_perm)
    )
    ours_s = time.perf_counter() - t0
    ref_s, ref_pairs = reference(sample, args.threshold, args.num_perm)
    ours_pairs = set(map(tuple, ours.tolist()))
    print(
        f"near-dup stage on the first {len(sample):,} rows: ours {ours_s:.2f}s ({len(sample) / ours_s:,.0f} rows/s, "
        f"{len(ours_pairs)} pairs), datasketch MinHashLSH {ref_s:.2f}s ({len(sample) / ref_s:,.0f} rows/s, "
        f"{len(ref_pairs)} pairs); agreement {len(ours_pairs & ref_pairs)} common; "
        f"speed ratio ours/datasketch = {ref_s / ours_s:.1f}x"
    )
    data.unlink()


if __name__ == "__main__":
    main()
