"""Load a contender model for evaluation and generate greedily, in batches.

Plain Python (no Dagster, no promptfoo): the promptfoo provider, the benchmark and the tests
all call these functions, so "the model promptfoo scored" and "the model we benchmarked"
are the same code.

Why the loading rules matter: a QLoRA adapter must be evaluated on the base model quantised
exactly as it was trained (NF4 4-bit, same compute dtype); on the fp32 base the same adapter
scored 6/20 instead of 9/20 here (ENVIRONMENT.md). The chat template is the one training
used, so the tuned model sees the prompt format it learned.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TOKENIZER_DEFAULT = "tokenizer_default"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to load one contender. ``adapter_dir`` None = the plain base model."""

    base_dir: str
    adapter_dir: str | None = None
    load_in_4bit: bool = False
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_compute_dtype: str = "float32"
    chat_template: str = TOKENIZER_DEFAULT
    bnb_config: dict[str, Any] | None = None  # the full BitsAndBytesConfig training used, if recorded

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @classmethod
    def base(cls, base_model: dict[str, Any], chat_template: str = TOKENIZER_DEFAULT) -> ModelSpec:
        """The prompt-only contender: the fp32 base model (the `base_model` asset's dict)."""
        return cls(base_dir=base_model["path"], chat_template=chat_template)


@dataclass(frozen=True)
class Generation:
    """One model answer. ``latency_ms`` is the batch's wall time divided by its size."""

    text: str
    output_tokens: int
    prompt_tokens: int
    latency_ms: float


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    spec: ModelSpec
    load_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _torch_dtype(name: str):
    import torch

    dtype = getattr(torch, str(name).replace("torch.", ""), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch dtype {name!r} (e.g. float32, bfloat16)")
    return dtype


def bnb_kwargs(spec: ModelSpec) -> dict[str, Any]:
    """The 4-bit settings training used: its full recorded config (double quantisation,
    storage dtype) when there is one, else the contract's quant type and compute dtype."""
    kwargs: dict[str, Any] = {
        "bnb_4bit_quant_type": spec.bnb_4bit_quant_type,
        "bnb_4bit_compute_dtype": spec.bnb_4bit_compute_dtype,
    }
    kwargs.update(spec.bnb_config or {})
    kwargs["load_in_4bit"] = True
    for key in ("bnb_4bit_compute_dtype", "bnb_4bit_quant_storage"):
        if isinstance(kwargs.get(key), str):
            kwargs[key] = _torch_dtype(kwargs[key])
    return kwargs


def apply_chat_template_name(tokenizer, name: str) -> None:
    """Use the template training used: the tokenizer's own for ``tokenizer_default``, else
    Axolotl's named template (imported lazily: Axolotl is heavy)."""
    if name in (None, "", TOKENIZER_DEFAULT):
        if not tokenizer.chat_template:
            raise ValueError("the tokenizer has no chat template and none was named")
        return
    from axolotl.utils.chat_templates import get_chat_template

    tokenizer.chat_template = get_chat_template(name, tokenizer=tokenizer)


def load(spec: ModelSpec) -> LoadedModel:
    """Load tokenizer + model (+ adapter) for greedy evaluation on CPU."""
    base_dir = Path(spec.base_dir)
    if not (base_dir / "config.json").is_file():  # before the slow imports
        raise FileNotFoundError(f"{base_dir}: not a model folder (no config.json)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    apply_chat_template_name(tokenizer, spec.chat_template)
    tokenizer.padding_side = "left"  # decoder-only batching: pad on the left
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    notes: list[str] = []
    kwargs: dict[str, Any] = {}
    if spec.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(**bnb_kwargs(spec))
        kwargs["device_map"] = "cpu"
    else:
        kwargs["dtype"] = torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_dir, **kwargs)
    if spec.load_in_4bit:
        notes.append(_same_4bit_kernel_as_training(model))
    if spec.adapter_dir:
        from peft import PeftModel

        adapter_dir = Path(spec.adapter_dir)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{adapter_dir}: not a PEFT adapter (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model, tokenizer, spec, time.perf_counter() - started, notes)


def _same_4bit_kernel_as_training(model) -> str:
    """Training turns off bitsandbytes' AVX512-BF16 repack of 4-bit weights (it breaks
    autograd, see pipelines/cpu_qlora_patch); do the same here so inference runs the same
    dequantise-then-matmul path the adapter was trained against."""
    count = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return f"4-bit layers on the training kernel path: {count}"


def render(tokenizer, messages: list[dict[str, str]]) -> str:
    """The chat-templated prompt text, ending with the assistant header."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


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
    (see ``_batch_inputs``). Positions stay right (they come from the mask), but a
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
            return (
                f"prompt + answer ({longest_prompt} + {max_new_tokens} tokens) exceed the "
                f"sliding window ({window})"
            )
    return None


def _prefill_prefix(model, prefix: list[int]):
    """The KV cache of the shared prefix, computed once at batch size 1."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([prefix]), past_key_values=cache, use_cache=True)
    if cache.get_seq_length() != len(prefix):  # rows would attend to a wrong prefix
        raise RuntimeError(f"prefix cache holds {cache.get_seq_length()} tokens, expected {len(prefix)}")
    return cache


def _batch_inputs(prompts: list[list[int]], prefix_length: int, pad_id: int) -> dict[str, Any]:
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


# Grouped-query attention without copies. Models like SmolLM2 keep fewer key/value heads than
# query heads (3 vs 9). With a padding mask, transformers' SDPA path does not let torch handle
# that (``use_gqa_in_sdpa`` is false whenever a mask is given, a CUDA kernel limit): it copies
# every layer's whole KV cache to 3x its size at every decoding step. On CPU that copy was 59 %
# of a greedy batch's time. torch's SDPA takes a mask with ``enable_gqa`` on CPU, so for our
# greedy batches we let it: the same answers (tests/test_generation.py), 1.8x faster on the
# demo's zero-shot rung. Scoped to our decoding loop; other code keeps the library's rule.
@contextlib.contextmanager
def _native_gqa_on_cpu():
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


@dataclass
class Decoded:
    """One batch's greedy answers: per row, the new token ids (up to and including eos) and,
    when asked for, each step's logits."""

    tokens: list[list[int]]
    logits: list[list[Any]]


def _decode_batch(loaded: LoadedModel, prompts, prefix_length, prefix_cache, max_new_tokens,
                  stop_at_eos: bool = True, keep_logits: bool = False) -> Decoded:
    """Greedy decoding of one batch in which a row leaves the batch the step it emits eos.

    Why not ``model.generate``: it keeps a finished row in the batch, fed pad tokens, until
    the batch's longest answer ends, so a batch costs its longest answer times its size. Here
    a finished row's cache entries are dropped (``Cache.batch_select_indices``) and the rest
    decode at a smaller batch. The model sees what ``generate`` feeds it (the same ids, mask,
    position ids and cache), so the answers are its answers (tests/test_generation.py).
    A copy of ``prefix_cache``, expanded to the batch, stands in for the shared prefix."""
    import copy

    import torch
    from transformers import DynamicCache

    eos_id = loaded.tokenizer.eos_token_id if stop_at_eos else None
    inputs = _batch_inputs(prompts, prefix_length, loaded.tokenizer.pad_token_id)
    if prefix_cache is not None:
        cache = copy.deepcopy(prefix_cache)  # decoding extends the cache in place
        cache.batch_repeat_interleave(len(prompts))
    else:
        cache = DynamicCache(config=loaded.model.config)
    feed = inputs["input_ids"][:, prefix_length:]
    positions = inputs["position_ids"][:, prefix_length:]
    mask = inputs["attention_mask"]
    rows = list(range(len(prompts)))  # batch row -> prompt index
    decoded = Decoded([[] for _ in prompts], [[] for _ in prompts])
    with _native_gqa_on_cpu():
        for step in range(max_new_tokens):
            out = loaded.model(input_ids=feed, attention_mask=mask, position_ids=positions,
                               past_key_values=cache, use_cache=True, logits_to_keep=1)  # fmt: skip
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
        cache = _prefill_prefix(loaded.model, prompts[0][:prefix_length]) if prefix_length else None
        decoded = _decode_batch(loaded, prompts, prefix_length, cache, max_new_tokens,
                                stop_at_eos=False, keep_logits=True)  # fmt: skip
    return torch.tensor(decoded.tokens), torch.stack([torch.stack(row) for row in decoded.logits])


def prompt_ids(tokenizer, conversations: list[list[dict[str, str]]]) -> list[list[int]]:
    """Each conversation's chat-templated prompt as token ids (no extra special tokens:
    the template writes them)."""
    return [
        tokenizer(render(tokenizer, messages), add_special_tokens=False)["input_ids"]
        for messages in conversations
    ]


def _cached_prefix_length(loaded: LoadedModel, prompts: list[list[int]], max_new_tokens: int) -> int:
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
    prefix_length = _cached_prefix_length(loaded, prompts, max_new_tokens) if use_prefix_cache else 0
    results: list[Generation | None] = [None] * len(prompts)
    prefix_cache, prefix_ms = None, 0.0
    with torch.inference_mode():
        if prefix_length:
            began = time.perf_counter()
            prefix_cache = _prefill_prefix(loaded.model, prompts[0][:prefix_length])
            prefix_ms = (time.perf_counter() - began) * 1000.0 / len(prompts)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            began = time.perf_counter()
            decoded = _decode_batch(loaded, [prompts[i] for i in batch], prefix_length, prefix_cache, max_new_tokens)
            per_case_ms = (time.perf_counter() - began) * 1000.0 / len(batch) + prefix_ms
            for ids, index in zip(decoded.tokens, batch):
                results[index] = Generation(
                    text=tokenizer.decode(ids, skip_special_tokens=True).strip(),
                    output_tokens=len(ids),
                    prompt_tokens=len(prompts[index]),
                    latency_ms=per_case_ms,
                )
    return [r for r in results if r is not None]
