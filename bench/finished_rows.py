"""What does letting finished rows leave the batch save? (pipelines/models/decoding.py)

``model.generate`` keeps a row that has emitted eos in the batch, fed pad tokens, until the
batch's longest answer ends. Our decoding loop drops it (its KV-cache rows too). The real
default model (SmolLM2-135M-Instruct, fp32, CPU) answers the general-skills suite
(evals/general.jsonl, 320 short prompts; about a fifth of the answers run to the budget), in
the same process, at the demo's batch size:

- reference: the same batches through ``model.generate`` (what the shipped code did before);
- shipped: ``decoding.generate`` (rows leave the batch at eos).

Prints wall and CPU seconds of both, the speed-up, the mean answer length and the fraction of
identical answers (must be 100 %).

    .venv/bin/python bench/finished_rows.py [--n 320] [--batch-size 64] [--max-new-tokens 32] [--threads N]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.prefix_cache import generation_parser, load_default_model  # noqa: E402
from bench.shipped import DEFAULT_MODEL  # noqa: E402
from pipelines.config.paths import REPO_ROOT  # noqa: E402
from pipelines.models import attention_patch, decoding, loading, prefix_cache


def library_answers(loaded, conversations, max_new_tokens: int, batch_size: int) -> list[tuple[str, int]]:
    """(text, output tokens) per conversation through ``model.generate``, batched and sorted
    by length as the shipped path batches them."""
    import torch

    tokenizer = loaded.tokenizer
    prompts = loading.prompt_ids(tokenizer, conversations)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[tuple[str, int]] = [("", 0)] * len(prompts)
    with torch.inference_mode(), attention_patch.native_gqa_on_cpu():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            inputs = prefix_cache.batch_inputs([prompts[i] for i in batch], 0, tokenizer.pad_token_id)
            inputs.pop("position_ids")  # generate derives the same ones from the mask
            out = loaded.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            width = inputs["input_ids"].shape[1]
            for row, index in enumerate(batch):
                ids = out[row, width:].tolist()
                used = ids.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in ids else len(ids)
                answers[index] = (tokenizer.decode(ids[:used], skip_special_tokens=True).strip(), used)
    return answers


def main() -> None:
    parser = generation_parser(__doc__, cases=320)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    import torch

    loaded = load_default_model(args.threads)
    items = [json.loads(line) for line in (REPO_ROOT / "evals" / "general.jsonl").read_text().splitlines()][: args.n]
    conversations = [[{"role": "user", "content": item["prompt"]}] for item in items]
    print(
        f"{DEFAULT_MODEL}: {len(conversations)} general-skills prompts, batch {args.batch_size}, "
        f"max_new_tokens {args.max_new_tokens}, torch threads {torch.get_num_threads()}",
        flush=True,
    )
    decoding.generate(loaded, conversations[:2], 2, 2)  # warm-up: first-call allocations

    wall, cpu = time.perf_counter(), time.process_time()
    reference = library_answers(loaded, conversations, args.max_new_tokens, args.batch_size)
    ref_wall, ref_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    shipped = decoding.generate(loaded, conversations, args.max_new_tokens, args.batch_size)
    our_wall, our_cpu = time.perf_counter() - wall, time.process_time() - cpu

    same = sum((g.text, g.output_tokens) == r for g, r in zip(shipped, reference))
    mean = sum(g.output_tokens for g in shipped) / len(shipped)
    full = sum(g.output_tokens >= args.max_new_tokens for g in shipped)
    print(f"answers: mean {mean:.1f} tokens, {full} of {len(shipped)} ran to the budget")
    print(
        f"model.generate {ref_wall:6.1f}s (cpu {ref_cpu:6.1f}s)   rows leave at eos {our_wall:6.1f}s "
        f"(cpu {our_cpu:6.1f}s)   speed-up {ref_wall / our_wall:4.2f}x (cpu {ref_cpu / our_cpu:4.2f}x)   "
        f"identical {same}/{len(shipped)}"
    )
    for g, r in zip(shipped, reference):
        if (g.text, g.output_tokens) != r:
            print(f"  differs: {g.text!r} vs {r[0]!r}")


if __name__ == "__main__":
    main()
