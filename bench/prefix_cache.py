"""What does prefix caching save in batched greedy evaluation? (pipelines/models/decoding.py)

The real default model (SmolLM2-135M-Instruct, fp32, CPU) answers the demo's prompt-only
baseline prompts: the task's strong system prompt (evals/task.yaml), three fixed few-shot
pairs, then the ticket as the user turn: ~427 tokens a prompt, of which the first ~385 are
the same in every case. Per batch size, in the same process, the cases are answered:

- plain: every prompt prefilled in full (``decoding.generate_uncached``);
- cached: the shared prefix prefilled once, its KV cache reused by every batch
  (``decoding.generate``, as shipped).

Prints wall and CPU seconds of both, the speed-ups and the fraction of identical answers
(must be 100 %; each difference is re-run alone on both paths and printed with the logit
drift and the plain path's smallest top-2 logit gap, so a near-tie flipped by float
rounding can be told from a bug). On a machine shared with other jobs, ``--threads 1``
avoids OpenMP threads waiting on each other and the CPU figures are the ones to read.

    .venv/bin/python bench/prefix_cache.py [--n 50] [--batch-sizes 16 32] [--max-new-tokens 32] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.shipped import DEFAULT_MODEL, converted_model_dir  # noqa: E402
from pipelines.config.paths import REPO_ROOT  # noqa: E402
from pipelines.models import decoding, loading, prefix_cache

SHOTS = 3


def _pairs(path: Path) -> list[tuple[str, str]]:
    """(ticket, gold JSON answer) of the demo rows that have both; the raw demo file also
    holds deliberately broken rows (the data stage quarantines them): skipped here."""
    pairs = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            turns = {m["role"]: m["content"] for m in json.loads(line)["messages"]}
            json.loads(turns["assistant"])["category"]
        except (ValueError, TypeError, KeyError):
            continue
        if isinstance(turns.get("user"), str) and turns["user"].strip():
            pairs.append((turns["user"], turns["assistant"]))
    return pairs


def baseline_conversations(n: int) -> list[list[dict[str, str]]]:
    """n baseline prompts: strong system prompt + the first SHOTS pairs of distinct
    categories as few-shot + one later ticket each."""
    import yaml

    task = yaml.safe_load((REPO_ROOT / "evals" / "task.yaml").read_text(encoding="utf-8"))
    system = task["system_prompt"]
    pairs = _pairs(REPO_ROOT / "data" / "demo" / "tickets.jsonl")
    shots: list[tuple[str, str]] = []
    for pair in pairs:
        taken = {json.loads(answer)["category"] for _, answer in shots}
        if len(shots) < SHOTS and json.loads(pair[1])["category"] not in taken:
            shots.append(pair)
    cases = [pair for pair in pairs if pair not in shots][:n]
    if len(cases) < n:
        raise SystemExit(f"only {len(cases)} usable demo tickets, asked for {n}")
    prefix = [{"role": "system", "content": system}]
    for user, answer in shots:
        prefix += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return [prefix + [{"role": "user", "content": user}] for user, _ in cases]


def generation_parser(doc: str, cases: int) -> argparse.ArgumentParser:
    """The options every generation bench takes: how many cases, the answer budget, threads."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--n", type=int, default=cases)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return parser


def load_default_model(threads: int = 0) -> loading.LoadedModel:
    """The default base model, fp32, as the prompt-only contender is loaded."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return loading.load(loading.ModelSpec(base_dir=str(converted_model_dir(DEFAULT_MODEL))))


def _timed(fn, *args) -> tuple[float, float, list[decoding.Generation]]:
    """(wall s, CPU s, answers). CPU time is reported too: on a shared machine it tracks the
    work done better than wall time does."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, out


def _explain(loaded, prompt: list[int], shared: int, max_new_tokens: int) -> str:
    """A differing case re-run alone on both paths: do the answers still part, and how close
    was the plain path's closest greedy choice (top-2 logit gap)? A gap near float rounding
    (~1e-5) means a near-tie flipped by a different summation order, not a bug."""
    plain_ids, plain_logits = decoding.greedy_steps(loaded, [prompt], 0, max_new_tokens)
    cached_ids, cached_logits = decoding.greedy_steps(loaded, [prompt], shared, max_new_tokens)
    steps = min(plain_logits.shape[1], cached_logits.shape[1])
    top2 = plain_logits[0, :steps].topk(2, dim=-1).values
    gap = (top2[:, 0] - top2[:, 1]).min().item()
    drift = (plain_logits[0, :steps] - cached_logits[0, :steps]).abs().max().item()
    same = "same" if plain_ids.tolist() == cached_ids.tolist() else "different"
    return f"alone: {same} ids, max logit drift {drift:.1e}, smallest plain top-2 gap {gap:.1e}"


def main() -> None:
    parser = generation_parser(__doc__, cases=50)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32])
    args = parser.parse_args()
    import torch

    loaded = load_default_model(args.threads)
    conversations = baseline_conversations(args.n)
    prompts = loading.prompt_ids(loaded.tokenizer, conversations)
    shared = prefix_cache.shared_prefix_length(prompts)
    mean = sum(map(len, prompts)) / len(prompts)
    print(
        f"{DEFAULT_MODEL}: {len(prompts)} baseline prompts, {mean:.0f} tokens on average, "
        f"{shared} shared; max_new_tokens {args.max_new_tokens}; torch threads "
        f"{torch.get_num_threads()}",
        flush=True,
    )
    decoding.generate_uncached(loaded, conversations[:2], 2, 2)  # warm-up: first-call allocations
    for batch_size in args.batch_sizes:
        plain_s, plain_cpu, plain = _timed(
            decoding.generate_uncached, loaded, conversations, args.max_new_tokens, batch_size
        )
        cached_s, cached_cpu, cached = _timed(decoding.generate, loaded, conversations, args.max_new_tokens, batch_size)
        same = [(p.text, p.output_tokens) == (c.text, c.output_tokens) for p, c in zip(plain, cached)]
        print(
            f"batch {batch_size:>3}: plain {plain_s:6.1f}s (cpu {plain_cpu:6.1f}s)  "
            f"cached {cached_s:6.1f}s (cpu {cached_cpu:6.1f}s)  "
            f"speed-up {plain_s / cached_s:4.2f}x (cpu {plain_cpu / cached_cpu:4.2f}x)  "
            f"identical {sum(same)}/{len(same)} ({100.0 * sum(same) / len(same):.0f} %)",
            flush=True,
        )
        for index in (i for i, ok in enumerate(same) if not ok):
            print(
                f"  case {index}: plain {plain[index].text!r}, cached {cached[index].text!r}; "
                f"{_explain(loaded, prompts[index], shared, args.max_new_tokens)}"
            )
    for note in loaded.notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
