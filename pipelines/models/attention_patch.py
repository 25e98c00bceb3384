"""A scoped patch of transformers' SDPA attention: native grouped-query attention on CPU."""

from __future__ import annotations

import contextlib


# Grouped-query attention without copies. Models like SmolLM2 keep fewer key/value heads than
# query heads (3 vs 9). With a padding mask, transformers' SDPA path does not let torch handle
# that (``use_gqa_in_sdpa`` is false whenever a mask is given, a CUDA kernel limit): it copies
# every layer's whole KV cache to 3x its size at every decoding step. On CPU that copy was 59 %
# of a greedy batch's time. torch's SDPA takes a mask with ``enable_gqa`` on CPU, so for our
# greedy batches we let it: the same answers (tests/test_generation.py), 1.8x faster on the
# demo's zero-shot rung. Scoped to our decoding loop; other code keeps the library's rule.
@contextlib.contextmanager
def native_gqa_on_cpu():
    from transformers.integrations import sdpa_attention

    library_rule = getattr(sdpa_attention, "use_gqa_in_sdpa", None)
    if library_rule is None:  # another transformers: keep its own behaviour
        yield
        return

    def use_gqa_in_sdpa(attention_mask, key, value):
        if key.device.type == "cpu":
            return key.shape[-1] == value.shape[-1]
        return library_rule(attention_mask, key, value)

    sdpa_attention.use_gqa_in_sdpa = use_gqa_in_sdpa
    try:
        yield
    finally:
        sdpa_attention.use_gqa_in_sdpa = library_rule
