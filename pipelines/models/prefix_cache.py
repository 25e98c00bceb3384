"""The shared prompt prefix, computed once: every prompt of a ladder rung starts with the
same system prompt and examples, so its key/value cache is filled once per batch and reused."""

from __future__ import annotations

from typing import Any

from pipelines.models.loading import LoadedModel

# Prefix caching. Every case of an eval run starts with the same long prompt (system prompt,
# plus the few-shot pairs for the baseline) and adds a short ticket, so on CPU the prefill of
# that shared prefix dominated: 50 few-shot cases x 430 tokens took ~85 s. The prefix is run
# once and its KV cache reused by every batch; only each case's own tokens are prefilled.
PREFIX_CACHE_MIN_TOKENS = 32  # below this the saving does not pay for the extra forward pass


# Model types whose prefix-cached answers tests/test_generation.py checks against the plain
# path; any other type takes the plain path (same answers, no speed-up) rather than risk a
# family with its own masking or position rules answering differently.
PREFIX_CACHE_MODEL_TYPES = frozenset({"llama", "gemma3_text"})


_PREFIX_CACHE_ATTENTION = frozenset({"sdpa", "eager"})


def shared_prefix_length(prompts: list[list[int]]) -> int:
    """Leading tokens common to every prompt, leaving each prompt at least one token of its
    own: generation needs one fed token per row to predict the first new one."""
    if not prompts:
        return 0
    limit = min(len(ids) for ids in prompts) - 1
    length = 0
    for column in zip(*prompts):
        if length >= limit or any(token != column[0] for token in column):
            break
        length += 1
    return length


def prefix_cache_refusal(model, longest_prompt: int, max_new_tokens: int) -> str | None:
    """Why this model may not reuse a prefix cache here, or None when it may.

    The cached path puts each row's padding between the shared prefix and the row's own tokens
    (see ``batch_inputs``). Positions stay right (they come from the mask), but a
    sliding-window layer masks by cache slot, not by position, so padding there would shift
    its window: such layers are only safe when the whole sequence fits in the window."""
    config = model.config
    if config.model_type not in PREFIX_CACHE_MODEL_TYPES:
        return f"model type {config.model_type!r} is not verified for prefix caching"
    attention = getattr(config, "_attn_implementation", None)
    if attention not in _PREFIX_CACHE_ATTENTION:
        return f"attention implementation {attention!r} is not verified for prefix caching"
    peft_configs = getattr(model, "peft_config", None) or {}
    if any(getattr(c, "is_prompt_learning", False) for c in peft_configs.values()):
        return "prompt-learning adapters inject their own cache entries"
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    if layer_types - {"full_attention"}:
        window = getattr(config, "sliding_window", None)
        if layer_types - {"full_attention", "sliding_attention"} or not window:
            return f"layer types {sorted(layer_types)} are not verified for prefix caching"
        if longest_prompt + max_new_tokens > window:
            return f"prompt + answer ({longest_prompt} + {max_new_tokens} tokens) exceed the sliding window ({window})"
    return None


def prefill_prefix(model, prefix: list[int]):
    """The KV cache of the shared prefix, computed once at batch size 1."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([prefix]), past_key_values=cache, use_cache=True)
    if cache.get_seq_length() != len(prefix):  # rows would attend to a wrong prefix
        raise RuntimeError(f"prefix cache holds {cache.get_seq_length()} tokens, expected {len(prefix)}")
    return cache


def batch_inputs(prompts: list[list[int]], prefix_length: int, pad_id: int) -> dict[str, Any]:
    """Left-padded inputs for one batch: ``[prefix][pad...][own tokens]``, with position ids
    from the mask (a row's tokens keep the positions they have unpadded, as ``generate``
    computes them). With ``prefix_length`` 0 this is the tokenizer's left padding; with a
    cached prefix the padding sits after the prefix."""
    import torch

    width = max(len(ids) for ids in prompts)
    input_ids, attention_mask = [], []
    for ids in prompts:
        pad = width - len(ids)
        input_ids.append(ids[:prefix_length] + [pad_id] * pad + ids[prefix_length:])
        attention_mask.append([1] * prefix_length + [0] * pad + [1] * (len(ids) - prefix_length))
    mask = torch.tensor(attention_mask)
    return {
        "input_ids": torch.tensor(input_ids),
        "attention_mask": mask,
        "position_ids": (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0),
    }


def cached_prefix_length(loaded: LoadedModel, prompts: list[list[int]], max_new_tokens: int) -> int:
    """The prefix length to cache for this run: 0 (the plain path) when the shared prefix is
    too short to pay or the model is not verified for it (the reason goes to ``loaded.notes``)."""
    prefix_length = shared_prefix_length(prompts)
    if prefix_length < PREFIX_CACHE_MIN_TOKENS:
        return 0
    refusal = prefix_cache_refusal(loaded.model, max(map(len, prompts)), max_new_tokens)
    if refusal:
        note = f"prefix cache off: {refusal}"
        if note not in loaded.notes:
            loaded.notes.append(note)
        return 0
    return prefix_length
