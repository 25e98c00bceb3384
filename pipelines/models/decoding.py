"""Greedy generation in batches, in which a row leaves its batch the step it finishes.

Plain Python (no Dagster, no promptfoo): the promptfoo provider, the benchmarks and the tests
all call these functions, so "the model promptfoo scored" and "the model we benchmarked"
are the same code."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pipelines.models import attention_patch, prefix_cache
from pipelines.models.loading import LoadedModel, prompt_ids
from pipelines.models.prefix_cache import batch_inputs, cached_prefix_length


@dataclass(frozen=True)
class Generation:
    """One model answer. ``latency_ms`` is the batch's wall time divided by its size."""

    text: str
    output_tokens: int
    prompt_tokens: int
    latency_ms: float


@dataclass
class Decoded:
    """One batch's greedy answers: per row, the new token ids (up to and including eos) and,
    when asked for, each step's logits."""

    tokens: list[list[int]]
    logits: list[list[Any]]


def _decode_batch(
    loaded: LoadedModel,
    prompts,
    prefix_length,
    shared_cache,
    max_new_tokens,
    stop_at_eos: bool = True,
    keep_logits: bool = False,
) -> Decoded:
    """Greedy decoding of one batch in which a row leaves the batch the step it emits eos.

    Why not ``model.generate``: it keeps a finished row in the batch, fed pad tokens, until
    the batch's longest answer ends, so a batch costs its longest answer times its size. Here
    a finished row's cache entries are dropped (``Cache.batch_select_indices``) and the rest
    decode at a smaller batch. The model sees what ``generate`` feeds it (the same ids, mask,
    position ids and cache), so the answers are its answers (tests/test_generation.py).
    A copy of ``shared_cache``, expanded to the batch, stands in for the shared prefix."""
    import copy

    import torch
    from transformers import DynamicCache

    eos_id = loaded.tokenizer.eos_token_id if stop_at_eos else None
    inputs = batch_inputs(prompts, prefix_length, loaded.tokenizer.pad_token_id)
    if shared_cache is not None:
        cache = copy.deepcopy(shared_cache)  # decoding extends the cache in place
        cache.batch_repeat_interleave(len(prompts))
    else:
        cache = DynamicCache(config=loaded.model.config)
    feed = inputs["input_ids"][:, prefix_length:]
    positions = inputs["position_ids"][:, prefix_length:]
    mask = inputs["attention_mask"]
    rows = list(range(len(prompts)))  # batch row -> prompt index
    decoded = Decoded([[] for _ in prompts], [[] for _ in prompts])
    with attention_patch.native_gqa_on_cpu():
        for step in range(max_new_tokens):
            out = loaded.model(
                input_ids=feed,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            step_logits = out.logits[:, -1, :].float()
            chosen = step_logits.argmax(-1)
            live = []
            for i, (row, token) in enumerate(zip(rows, chosen.tolist())):
                decoded.tokens[row].append(token)
                if keep_logits:
                    decoded.logits[row].append(step_logits[i])
                if token != eos_id:
                    live.append(i)
            if not live or step + 1 == max_new_tokens:
                break
            if len(live) < len(rows):
                keep = torch.tensor(live)
                cache.batch_select_indices(keep)
                mask, chosen, positions = mask[keep], chosen[keep], positions[keep]
                rows = [rows[i] for i in live]
            feed = chosen[:, None]
            positions = positions[:, -1:] + 1
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=-1)
    return decoded


def greedy_steps(loaded: LoadedModel, prompts: list[list[int]], prefix_length: int, max_new_tokens: int):
    """(new token ids [batch, step], logits [batch, step, vocab]) of one greedy batch, plain
    (``prefix_length`` 0) or from a cache of the first ``prefix_length`` tokens, through the
    decoding loop the answers come from, every row running all ``max_new_tokens`` steps:
    what the tests and the bench compare the two paths with."""
    import torch

    with torch.inference_mode():
        cache = prefix_cache.prefill_prefix(loaded.model, prompts[0][:prefix_length]) if prefix_length else None
        decoded = _decode_batch(
            loaded, prompts, prefix_length, cache, max_new_tokens, stop_at_eos=False, keep_logits=True
        )
    return torch.tensor(decoded.tokens), torch.stack([torch.stack(row) for row in decoded.logits])


def generate(
    loaded: LoadedModel,
    conversations: list[list[dict[str, str]]],
    max_new_tokens: int,
    batch_size: int = 16,
) -> list[Generation]:
    """Greedy answers for every conversation, in input order.

    Prompts are sorted by length before batching so a batch pads little, then put back in
    order. A row stops at the tokenizer's eos (``<|im_end|>`` for ChatML models) and leaves
    its batch then, so the batch's longest answer is not paid for by every row. A
    token prefix shared by every prompt is prefilled once and its cache reused (see
    ``PREFIX_CACHE_MIN_TOKENS``); the answers are those of ``generate_uncached``."""
    return _generate(loaded, conversations, max_new_tokens, batch_size, use_prefix_cache=True)


def generate_uncached(
    loaded: LoadedModel,
    conversations: list[list[dict[str, str]]],
    max_new_tokens: int,
    batch_size: int = 16,
) -> list[Generation]:
    """``generate`` with every prompt prefilled in full: the reference the prefix-cached path
    is tested and benchmarked against."""
    return _generate(loaded, conversations, max_new_tokens, batch_size, use_prefix_cache=False)


def _generate(loaded, conversations, max_new_tokens, batch_size, use_prefix_cache):
    """Per-case latency is the batch's wall time divided by its size, plus an equal share of
    the one prefix prefill, so the latencies still add up to the run's generation time."""
    import torch

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if not conversations:
        return []
    tokenizer = loaded.tokenizer
    prompts = prompt_ids(tokenizer, conversations)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    prefix_length = cached_prefix_length(loaded, prompts, max_new_tokens) if use_prefix_cache else 0
    results: list[Generation | None] = [None] * len(prompts)
    shared_cache, prefix_ms = None, 0.0
    with torch.inference_mode():
        if prefix_length:
            began = time.perf_counter()
            shared_cache = prefix_cache.prefill_prefix(loaded.model, prompts[0][:prefix_length])
            prefix_ms = (time.perf_counter() - began) * 1000.0 / len(prompts)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            began = time.perf_counter()
            decoded = _decode_batch(loaded, [prompts[i] for i in batch], prefix_length, shared_cache, max_new_tokens)
            per_case_ms = (time.perf_counter() - began) * 1000.0 / len(batch) + prefix_ms
            for ids, index in zip(decoded.tokens, batch):
                results[index] = Generation(
                    text=tokenizer.decode(ids, skip_special_tokens=True).strip(),
                    output_tokens=len(ids),
                    prompt_tokens=len(prompts[index]),
                    latency_ms=per_case_ms,
                )
    return [r for r in results if r is not None]
