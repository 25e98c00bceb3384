"""Prefix caching in ``pipelines.models.decoding`` must not change a single answer.

The tiny random Llama's weights are re-drawn larger (seeded) so its greedy choices vary and
win by clear margins: with the fixture's small init every step is a near-tie on "\\n", which
would make token comparisons meaningless. Logits are compared with a tolerance, token ids
exactly."""

from __future__ import annotations

import pytest

from pipelines.models import attention_patch, decoding, loading, prefix_cache
from tests.tiny_model import tiny_dimensions

SYSTEM = (
    "You are a support-ticket triage system. Read the customer's ticket and classify it into "
    "billing, technical, account, shipping or refund, and give a priority: low, medium, high "
    "or urgent. Reply with only the JSON object and nothing else."
)
TICKETS = [
    "Refund please.",
    "My invoice shows two charges for March and I was only supposed to pay once, can you fix it?",
    "Login fails.",
    "The parcel never arrived and tracking has said 'in transit' for three weeks now, "
    "which is far longer than the five days promised at checkout. What happened to it?",
    "App crashes on start since the update.",
]
STEPS = 6
LOGIT_TOLERANCE = 1e-4


def _conversations(system: str = SYSTEM) -> list[list[dict[str, str]]]:
    return [[{"role": "system", "content": system}, {"role": "user", "content": t}] for t in TICKETS]


def _sharpen(model, seed: int = 1, std: float = 0.3):
    """Re-draw the weight matrices with a large std so greedy margins are clear."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, std)
    return model


@pytest.fixture(scope="module")
def llama(tiny_model_dir) -> loading.LoadedModel:
    loaded = loading.load(loading.ModelSpec(base_dir=str(tiny_model_dir)))
    _sharpen(loaded.model)
    return loaded


@pytest.fixture
def prefills(monkeypatch) -> list[int]:
    """Lengths of the prefixes ``generate`` prefilled: proof the cached path ran (or not)."""
    calls: list[int] = []
    original = prefix_cache.prefill_prefix

    def spy(model, prefix):
        calls.append(len(prefix))
        return original(model, prefix)

    monkeypatch.setattr(prefix_cache, "prefill_prefix", spy)
    return calls


def _prompts(loaded, conversations) -> list[list[int]]:
    return loading.prompt_ids(loaded.tokenizer, conversations)


def _steps(loaded, prompts, prefix_length):
    return decoding.greedy_steps(loaded, prompts, prefix_length, STEPS)


def _assert_steps_agree(loaded, prompts):
    """One greedy batch, plain and prefix-cached: logits within tolerance, margins wide
    enough that the tolerance cannot flip a choice, the same token ids."""
    prefix_length = prefix_cache.shared_prefix_length(prompts)
    assert prefix_length >= prefix_cache.PREFIX_CACHE_MIN_TOKENS
    plain_ids, plain_logits = _steps(loaded, prompts, 0)
    cached_ids, cached_logits = _steps(loaded, prompts, prefix_length)
    assert (cached_logits - plain_logits).abs().max().item() < LOGIT_TOLERANCE
    top2 = plain_logits.topk(2, dim=-1).values
    assert (top2[..., 0] - top2[..., 1]).min().item() > 10 * LOGIT_TOLERANCE
    assert cached_ids.tolist() == plain_ids.tolist()


def _assert_generate_agrees(loaded, conversations, batch_size, prefills, cached_prefix: int):
    """``generate`` answers exactly as ``generate_uncached``, having prefilled a cached
    prefix of ``cached_prefix`` tokens (0: it took the plain path)."""
    prefills.clear()
    plain = decoding.generate_uncached(loaded, conversations, STEPS, batch_size)
    assert prefills == []
    cached = decoding.generate(loaded, conversations, STEPS, batch_size)
    assert prefills == ([cached_prefix] if cached_prefix else [])
    assert [(g.text, g.output_tokens, g.prompt_tokens) for g in cached] == [
        (g.text, g.output_tokens, g.prompt_tokens) for g in plain
    ]
    assert [g.prompt_tokens for g in cached] == [len(p) for p in _prompts(loaded, conversations)]
    assert all(g.latency_ms > 0 for g in cached)


def test_shared_prefix_length():
    assert prefix_cache.shared_prefix_length([]) == 0
    assert prefix_cache.shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert prefix_cache.shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # one token left to feed
    assert prefix_cache.shared_prefix_length([[7, 2], [1, 2]]) == 0


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_prefix_cache_gives_the_plain_logits_and_tokens(llama, batch):
    prompts = _prompts(llama, _conversations())
    assert len({len(p) for p in prompts}) == len(prompts)  # own parts differ: padding is exercised
    for start in range(0, len(prompts), batch):
        _assert_steps_agree(llama, prompts[start : start + batch])


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_generate_uses_the_prefix_cache_and_answers_the_same(llama, prefills, batch_size):
    conversations = _conversations()
    shared = prefix_cache.shared_prefix_length(_prompts(llama, conversations))
    _assert_generate_agrees(llama, conversations, batch_size, prefills, cached_prefix=shared)


def test_no_shared_prefix_takes_the_plain_path(llama, prefills):
    conversations = [
        [{"role": "system", "content": f"{n} {SYSTEM}"}, {"role": "user", "content": t}]
        for n, t in zip(["One.", "Two!", "Three?", "Four:", "Five;"], TICKETS)
    ]
    shared = prefix_cache.shared_prefix_length(_prompts(llama, conversations))
    assert shared < prefix_cache.PREFIX_CACHE_MIN_TOKENS
    _assert_generate_agrees(llama, conversations, 2, prefills, cached_prefix=0)


def test_unverified_model_type_takes_the_plain_path(llama, prefills, monkeypatch):
    monkeypatch.setattr(prefix_cache, "PREFIX_CACHE_MODEL_TYPES", frozenset({"not-llama"}))
    _assert_generate_agrees(llama, _conversations(), 2, prefills, cached_prefix=0)
    assert any("'llama' is not verified" in note for note in llama.notes)


def test_tuned_contender_4bit_lora_uses_the_prefix_cache(tiny_model_dir, tmp_path, prefills, monkeypatch):
    """The tuned contender: NF4 base + LoRA adapter (a PeftModel), loaded as training did."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = _sharpen(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    base.save_pretrained(tmp_path / "base")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "base")
    torch.manual_seed(2)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(tmp_path / "adapter")
    loaded = loading.load(
        loading.ModelSpec(base_dir=str(tmp_path / "base"), adapter_dir=str(tmp_path / "adapter"), load_in_4bit=True)
    )
    conversations = _conversations()
    prompts = _prompts(loaded, conversations)
    _assert_steps_agree(loaded, prompts)
    shared = prefix_cache.shared_prefix_length(prompts)
    _assert_generate_agrees(loaded, conversations, 3, prefills, cached_prefix=shared)
    _assert_rows_leave_the_batch_and_answers_match_the_library(loaded, monkeypatch, batch_size=5)


class _EosAs:
    """The loaded tokenizer with another eos id: a token the sharpened model emits in some
    rows early and in others late or never, so rows finish at different steps."""

    def __init__(self, tokenizer, eos_token_id: int):
        self._tokenizer, self.eos_token_id = tokenizer, eos_token_id

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def __call__(self, *args, **kwargs):
        return self._tokenizer(*args, **kwargs)


def _uneven_eos(ids: list[list[int]]) -> int:
    """A token that ends at least one row before the last step and leaves another row longer."""

    def first(row, token):
        return row.index(token) if token in row else len(row)

    for token in sorted({t for row in ids for t in row[:-1]}):
        ends = [first(row, token) for row in ids]
        if min(ends) < len(ids[0]) - 1 and len(set(ends)) > 1:
            return token
    raise AssertionError(f"no token ends the rows unevenly: {ids}")


def _library_answers(loaded, prompts, steps) -> list[list[int]]:
    """``model.generate`` one prompt at a time (no padding, no shared cache): the reference."""
    import torch

    eos, answers = loaded.tokenizer.eos_token_id, []
    with torch.inference_mode():
        for ids in prompts:
            out = loaded.model.generate(
                input_ids=torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=steps,
                do_sample=False,
                num_beams=1,
                eos_token_id=eos,
                pad_token_id=loaded.tokenizer.pad_token_id,
            )
            new = out[0, len(ids) :].tolist()
            answers.append(new[: new.index(eos) + 1] if eos in new else new)
    return answers


def _assert_rows_leave_the_batch_and_answers_match_the_library(loaded, monkeypatch, batch_size):
    """A row that emits eos leaves the batch (the forward passes shrink), and every answer is
    the library's own ``generate`` answer for that prompt alone, cached prefix or not."""
    steps = 10
    prompts = _prompts(loaded, _conversations())
    free, _ = decoding.greedy_steps(loaded, prompts, 0, steps)
    loaded = loading.LoadedModel(loaded.model, _EosAs(loaded.tokenizer, _uneven_eos(free.tolist())), loaded.spec)
    expected = _library_answers(loaded, prompts, steps)
    assert len({len(a) for a in expected}) > 1  # rows really finish at different steps

    widths: list[int] = []
    forward = loaded.model.forward

    def spy(*args, **kwargs):
        widths.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "forward", spy)
    for run in (decoding.generate_uncached, decoding.generate):
        widths.clear()
        answers = run(loaded, _conversations(), steps, batch_size)
        assert [a.output_tokens for a in answers] == [len(e) for e in expected]
        assert [a.text for a in answers] == [
            loaded.tokenizer.decode(e, skip_special_tokens=True).strip() for e in expected
        ]
        if batch_size > 1:
            assert any(later < earlier for earlier, later in zip(widths, widths[1:]) if later > 0), widths


@pytest.mark.parametrize("batch_size", [1, 5])
def test_finished_rows_leave_the_batch_and_answers_stay_the_librarys(llama, monkeypatch, batch_size):
    _assert_rows_leave_the_batch_and_answers_match_the_library(llama, monkeypatch, batch_size)


def _tiny_gemma3(tokenizer_dir, out_dir, sliding_window: int, seed: int = 3, std: float = 0.3):
    """A 2-layer Gemma3 text model (one sliding-window layer, one full) with the tiny
    model's tokenizer and chat template."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Gemma3TextConfig(
        **tiny_dimensions(tokenizer),
        head_dim=16,
        sliding_window=sliding_window,
        layer_types=["sliding_attention", "full_attention"],
    )
    _sharpen(Gemma3ForCausalLM(config), seed=seed, std=std).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return loading.load(loading.ModelSpec(base_dir=str(out_dir)))


def test_gemma3_within_its_sliding_window_uses_the_prefix_cache(tiny_model_dir, tmp_path, prefills):
    loaded = _tiny_gemma3(tiny_model_dir, tmp_path / "gemma3", sliding_window=512)
    assert loaded.model.config.model_type == "gemma3_text"
    conversations = _conversations()
    prompts = _prompts(loaded, conversations)
    _assert_steps_agree(loaded, prompts)
    shared = prefix_cache.shared_prefix_length(prompts)
    _assert_generate_agrees(loaded, conversations, 2, prefills, cached_prefix=shared)


@pytest.mark.parametrize("window", [512, 48])
def test_gemma3_rows_leave_the_batch_within_and_beyond_its_window(tiny_model_dir, tmp_path, monkeypatch, window):
    # at std 0.3 every row repeats one token; at 0.1 rows differ, so an eos ends some early
    loaded = _tiny_gemma3(tiny_model_dir, tmp_path / "gemma3", sliding_window=window, seed=4, std=0.1)
    _assert_rows_leave_the_batch_and_answers_match_the_library(loaded, monkeypatch, batch_size=5)


def test_gemma3_beyond_its_sliding_window_takes_the_plain_path(tiny_model_dir, tmp_path, prefills):
    """Padding after the prefix would shift a sliding window (it masks by cache slot, not by
    position), so a sequence longer than the window must not use the cache."""
    loaded = _tiny_gemma3(tiny_model_dir, tmp_path / "gemma3", sliding_window=48)
    conversations = _conversations()
    prompts = _prompts(loaded, conversations)
    _, plain_logits = _steps(loaded, prompts, 0)
    _, forced_logits = _steps(loaded, prompts, prefix_cache.shared_prefix_length(prompts))
    assert (forced_logits - plain_logits).abs().max().item() > 1.0  # why the refusal is needed
    _assert_generate_agrees(loaded, conversations, 2, prefills, cached_prefix=0)
    assert any("exceed the sliding window (48)" in note for note in loaded.notes)


@pytest.mark.parametrize("cached", [False, True])
def test_native_grouped_query_attention_gives_the_library_path_logits_and_tokens(llama, monkeypatch, cached):
    """Our ``generate`` lets torch's SDPA handle the tiny Llama's 2 key/value heads for 4 query
    heads (no KV copies) under a padding mask; transformers' own rule copies the cache instead.
    Same logits within tolerance, the same tokens, and the native path really ran."""
    import contextlib

    import torch

    assert llama.model.config.num_key_value_heads < llama.model.config.num_attention_heads
    prompts = _prompts(llama, _conversations())
    prefix_length = prefix_cache.shared_prefix_length(prompts) if cached else 0
    sdpa, native_calls = torch.nn.functional.scaled_dot_product_attention, []

    def spy(*args, **kwargs):  # masked calls only: an unpadded prefix prefill has GQA either way
        if kwargs.get("attn_mask") is not None:
            native_calls.append(kwargs.get("enable_gqa", False))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    native_ids, native_logits = decoding.greedy_steps(llama, prompts, prefix_length, STEPS)
    assert native_calls and all(native_calls)
    native_calls.clear()
    monkeypatch.setattr(attention_patch, "native_gqa_on_cpu", contextlib.nullcontext)
    library_ids, library_logits = decoding.greedy_steps(llama, prompts, prefix_length, STEPS)
    assert native_calls and not any(native_calls)  # the library rule copies K/V under a mask
    assert (native_logits - library_logits).abs().max().item() < LOGIT_TOLERANCE
    assert native_ids.tolist() == library_ids.tolist()
