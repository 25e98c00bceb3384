"""MinHash signatures of word shingles, and banded LSH to find similar pairs among them.

Used by dedup (near duplicates, Jaccard >= 0.85) and the split's contamination check
(>= 0.70). Cost grows with the number of shingles and rows, never with the number of row
pairs. The signature kernel is compiled with numba (already a dependency of Axolotl): one
pass over each text's bytes finds words, hashes them, forms k-shingles and folds them into
all permutations, on every core; the numpy version it replaced spent 9 s of a 1M-row run
building intermediate arrays. No Dagster here."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numba
import numpy as np
import pandas as pd


@lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int, fn_weight: float = 0.7) -> tuple[int, int]:
    """Bands x rows minimising weighted false-positive + false-negative area around the
    threshold (datasketch's method). Misses weigh more than extra candidates: candidates are
    verified against the signature anyway, a miss is never recovered."""
    best, best_cost = (1, num_perm), float("inf")
    low, high = np.linspace(0, threshold, 200), np.linspace(threshold, 1, 200)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(1 - (1 - low**rows) ** bands, low)
            fn = np.trapezoid((1 - high**rows) ** bands, high)
            cost = (1 - fn_weight) * fp + fn_weight * fn
            if cost < best_cost:
                best, best_cost = (bands, rows), cost
    return best


# A word is a run of ASCII letters, digits, "_" or non-ASCII (UTF-8) bytes, as ``\w+`` on
# normalised text; punctuation separates words and is otherwise ignored.
_WORD_BYTE = np.zeros(256, np.bool_)
_WORD_BYTE[[*b"0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", *range(128, 256)]] = True
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@numba.njit(cache=True, inline="always")
def _mix64(h: np.uint64) -> np.uint64:
    """splitmix64's finaliser: FNV-1a alone leaves similar words with similar hashes."""
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    return h ^ (h >> np.uint64(29))


@numba.njit(cache=True, inline="always")
def _fold(sig: np.ndarray, shingle: np.uint64, mul: np.ndarray, add: np.ndarray) -> None:
    """sig[p] = min(sig[p], mul[p] * x + add[p] mod 2**32) for the shingle's top 32 bits x."""
    x = np.uint32(shingle >> np.uint64(32))
    for p in range(sig.size):
        value = np.uint32(mul[p] * x + add[p])
        if value < sig[p]:
            sig[p] = value


@numba.njit(cache=True, parallel=True)
def _signature_kernel(data, starts, ends, word_byte, mix, mul, add, out):
    """out[r] = signature of the UTF-8 bytes data[starts[r]:ends[r]], rows in parallel."""
    k = mix.size
    for r in numba.prange(starts.size):
        sig = out[r]
        sig[:] = np.uint32(0xFFFFFFFF)
        ring = np.empty(k, np.uint64)  # the last k word hashes
        n, i, end = 0, starts[r], ends[r]
        while i < end:
            if not word_byte[data[i]]:
                i += 1
                continue
            h = _FNV_OFFSET
            while i < end and word_byte[data[i]]:
                h = (h ^ np.uint64(data[i])) * _FNV_PRIME
                i += 1
            ring[n % k] = _mix64(h)
            n += 1
            if n >= k:
                shingle = np.uint64(0)
                for j in range(k):
                    shingle += ring[(n - k + j) % k] * mix[j]
                _fold(sig, shingle, mul, add)
        if n < k:  # fewer than k words: one shingle of them all; no word at all: of the raw text
            shingle = np.uint64(0)
            if n == 0:
                h = _FNV_OFFSET
                for b in range(starts[r], end):
                    h = (h ^ np.uint64(data[b])) * _FNV_PRIME
                shingle = _mix64(h) * mix[0]
            for j in range(n):
                shingle += ring[j] * mix[j]
            _fold(sig, shingle, mul, add)


@dataclass(frozen=True)
class MinHasher:
    """MinHash signatures of word k-shingles with multiply-shift hash permutations."""

    num_perm: int = 128
    shingle_size: int = 3
    seed: int = 20240601
    chunk_rows: int = 200_000  # texts joined into one buffer at a time: bounds memory

    def _params(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Odd 64-bit multipliers combining a shingle's word hashes, and the (odd multiplier,
        offset) of each 32-bit affine permutation. Affine maps mod 2**32 of well-mixed hashes
        give unbiased Jaccard estimates with the textbook variance at a fraction of the cost
        of 64-bit arithmetic."""
        rng = np.random.default_rng(self.seed)
        mix = rng.integers(0, 2**63, size=self.shingle_size, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        mul = (rng.integers(0, 2**31, size=self.num_perm, dtype=np.uint64) * 2 + 1).astype(np.uint32)
        add = rng.integers(0, 2**32, size=self.num_perm, dtype=np.uint64).astype(np.uint32)
        return mix, mul, add

    def signatures(self, texts: list[str]) -> np.ndarray:
        """(rows, num_perm) uint32 signatures of normalised texts (``records.normalize``)."""
        mix, mul, add = self._params()
        out = np.empty((len(texts), self.num_perm), np.uint32)
        for lo in range(0, len(texts), self.chunk_rows):
            chunk = texts[lo : lo + self.chunk_rows]
            data = np.frombuffer("\n".join(chunk).encode("utf-8"), np.uint8)
            breaks = np.flatnonzero(data == 10)
            if breaks.size != len(chunk) - 1:
                raise ValueError("MinHasher needs normalised texts (records.normalize): one had a newline")
            starts = np.concatenate(([0], breaks + 1))
            ends = np.concatenate((breaks, [data.size]))
            _signature_kernel(data, starts, ends, _WORD_BYTE, mix, mul, add, out[lo : lo + len(chunk)])
        return out


@numba.njit(cache=True, parallel=True)
def _band_keys(sigs, bands, rows, mix, salt):
    """(bands, n) hash of each row's band of signature values: one sequential pass over the
    signatures (column slices of a 400 MB array cost a cache miss per row per band)."""
    keys = np.empty((bands, sigs.shape[0]), np.uint64)
    for r in numba.prange(sigs.shape[0]):
        for b in range(bands):
            key = salt[r] + np.uint64(b)
            for j in range(rows):
                key += np.uint64(sigs[r, b * rows + j]) * mix[j]
            keys[b, r] = key
    return keys


def compile_kernels() -> None:
    """Compile the numba kernels now rather than on first use: about 6 s once per install
    (cached under ``__pycache__``), under a second to load from that cache afterwards."""
    sigs = MinHasher(num_perm=2).signatures(["warm up", "the kernels"])
    candidate_pairs(sigs, np.zeros(2, np.int64), 1, 2)


def candidate_pairs(sigs: np.ndarray, groups: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(k, 2) array of candidate pairs (earlier, later) sharing an LSH bucket in any band.
    Rows only collide within the same group (e.g. same system prompt). Within a bucket each
    row is paired with the bucket's first row and its predecessor: linear, not quadratic.
    Buckets come from a hash table (``pandas.factorize``), not a sort: only the few rows in
    shared buckets are sorted."""
    n = len(sigs)
    found: list[np.ndarray] = []
    mix = np.random.default_rng(7).integers(1, 2**63, size=rows, dtype=np.uint64) | np.uint64(1)
    salt = groups.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    keys = _band_keys(sigs, bands, rows, mix, salt)
    for key in keys:
        codes, uniques = pd.factorize(key)
        if len(uniques) == n:
            continue
        shared = np.flatnonzero(np.bincount(codes)[codes] > 1)  # ascending row order
        order = shared[np.argsort(codes[shared], kind="stable")]  # by bucket, then row
        same = codes[order[1:]] == codes[order[:-1]]
        later = order[1:][same]
        first = np.empty(len(uniques), np.int64)
        first[codes[::-1]] = np.arange(n - 1, -1, -1)  # the earliest row wins
        found.append(np.stack((first[codes[later]], later), axis=1))
        found.append(np.stack((order[:-1][same], later), axis=1))
    if not found:
        return np.empty((0, 2), np.int64)
    pairs = np.concatenate(found)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    codes = np.unique(pairs[:, 0].astype(np.int64) * n + pairs[:, 1])
    return np.stack((codes // n, codes % n), axis=1)


def similar_pairs(
    texts: list[str], groups: list[str], threshold: float, hasher: MinHasher, sigs: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Verified near-duplicate pairs (earlier, later) of normalised texts, and their
    estimated Jaccard. ``sigs``: the texts' signatures from ``hasher``, when already computed."""
    if len(texts) < 2:
        return np.empty((0, 2), np.int64), np.empty(0)
    if sigs is None:
        sigs = hasher.signatures(texts)
    ids: dict[str, int] = {}
    group_ids = np.fromiter((ids.setdefault(g, len(ids)) for g in groups), np.int64, len(groups))
    pairs = candidate_pairs(sigs, group_ids, *lsh_params(threshold, hasher.num_perm))
    sims = np.empty(len(pairs))
    for lo in range(0, len(pairs), 100_000):
        chunk = pairs[lo : lo + 100_000]
        sims[lo : lo + len(chunk)] = (sigs[chunk[:, 0]] == sigs[chunk[:, 1]]).mean(axis=1)
    good = sims >= threshold
    return pairs[good], sims[good]
