"""Building the scored and shipped artefacts (pipelines/models/merge.py) on the tiny model: the base
as 4-bit training saw it (dequantised), and the adapter merged into exactly those weights.

The adapter is a random, non-zero PEFT LoRA (a test double for the training stage's
adapter), so the merge really changes the weights."""

from __future__ import annotations

import json

import pytest

from pipelines.models import loading
from pipelines.models.merge import dequantize_base, merge_adapter
from pipelines.training import adapter

PROMPTS = ["Hello there", "My invoice is wrong | pipes {{ x }}", "Où est mon colis ? 🚚 ZX-99"]
TOLERANCE = 1e-4  # float rounding; quantisation error on these logits is ~1e-1


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A real (random, non-zero) PEFT LoRA adapter on the tiny model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def bnb_config() -> dict:
    """The BitsAndBytesConfig an `adapter: qlora` run records (NF4, double quantisation,
    bf16 storage, fp32 compute)."""
    quant = adapter.quantization_config({"load_in_4bit": True})
    assert quant["load_in_4bit"] and quant["bnb_4bit_quant_type"] == "nf4"
    return quant


@pytest.fixture(scope="module")
def built(tiny_model_dir, adapter_dir, bnb_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("built")
    base = dequantize_base(tiny_model_dir, bnb_config, out / "base-as-trained")
    tuned = merge_adapter(out / "base-as-trained", adapter_dir, out / "tuned", "tokenizer_default")
    fp32 = merge_adapter(tiny_model_dir, adapter_dir, out / "merged-into-fp32")
    return out, base, tuned, fp32


def _logits(model, tokenizer, text: str):
    import torch

    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits.float()


def _plain(path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def test_merged_model_computes_what_the_4bit_base_plus_adapter_computes(tiny_model_dir, adapter_dir, bnb_config, built):
    from transformers import AutoTokenizer

    out, _, tuned, fp32 = built
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    # the reference: the base loaded in 4-bit with the SAME BitsAndBytesConfig + the adapter via PeftModel
    reference = loading.load(
        loading.ModelSpec(
            base_dir=str(tiny_model_dir), adapter_dir=str(adapter_dir), load_in_4bit=True, bnb_config=bnb_config
        )
    )
    assert type(reference.model).__name__.startswith("Peft")
    assert any(type(m).__name__ == "Linear4bit" for m in reference.model.modules())
    merged, into_fp32, plain = _plain(tuned.path), _plain(fp32.path), _plain(tiny_model_dir)
    for text in PROMPTS:
        expected = _logits(reference.model, tokenizer, text)
        got = _logits(merged, tokenizer, text)
        assert (got - expected).abs().max().item() < TOLERANCE, text
        # the tolerance is meaningful: the same adapter on the fp32 weights is far outside it
        assert (_logits(into_fp32, tokenizer, text) - expected).abs().max().item() > 100 * TOLERANCE, text
        assert (got - _logits(plain, tokenizer, text)).abs().max().item() > 100 * TOLERANCE, text


def test_dequantised_base_is_the_4bit_base(tiny_model_dir, bnb_config, built):
    from transformers import AutoTokenizer

    out, base, _, _ = built
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    four_bit = loading.load(loading.ModelSpec(base_dir=str(tiny_model_dir), load_in_4bit=True, bnb_config=bnb_config))
    dequantised, plain = _plain(base.path), _plain(tiny_model_dir)
    for text in PROMPTS:
        expected = _logits(four_bit.model, tokenizer, text)
        assert (_logits(dequantised, tokenizer, text) - expected).abs().max().item() < TOLERANCE
        assert (_logits(plain, tokenizer, text) - expected).abs().max().item() > 10 * TOLERANCE  # NF4 costs something
    assert "nf4" in base.note and "dequantised to fp32" in base.note
    # a plain fp32 folder: no quantisation marks, or a loader would quantise it again
    config = json.loads((out / "base-as-trained" / "config.json").read_text())
    assert "quantization_config" not in config
    assert not any(type(m).__name__ == "Linear4bit" for m in dequantised.modules())
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in dequantised.parameters())


def test_merged_folder_is_a_plain_model(built):
    out, base, tuned, _ = built
    config = json.loads((out / "tuned" / "config.json").read_text())
    assert "lora" not in json.dumps(config).lower() and "quantization_config" not in config
    assert not (out / "tuned" / "adapter_config.json").exists()
    assert (out / "tuned" / "tokenizer.json").is_file() and list((out / "tuned").glob("*.safetensors"))
    assert tuned.path == str(out / "tuned") and tuned.parameters == base.parameters > 0
    assert tuned.size_bytes > 0 and "merged into" in tuned.note
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp folders left


def test_missing_adapter_is_a_clear_error(tiny_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a PEFT adapter folder"):
        merge_adapter(tiny_model_dir, tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_saved_tokenizer_carries_the_named_chat_template(tiny_model_dir, adapter_dir, tmp_path):
    from axolotl.utils.chat_templates import get_chat_template
    from transformers import AutoTokenizer

    original = AutoTokenizer.from_pretrained(tiny_model_dir)
    chatml = get_chat_template("chatml", tokenizer=original)
    assert chatml != original.chat_template  # the test would prove nothing otherwise
    merge_adapter(tiny_model_dir, adapter_dir, tmp_path / "chatml", "chatml")
    saved = AutoTokenizer.from_pretrained(tmp_path / "chatml")
    assert saved.chat_template == chatml
    merge_adapter(tiny_model_dir, adapter_dir, tmp_path / "default", "tokenizer_default")
    assert AutoTokenizer.from_pretrained(tmp_path / "default").chat_template == original.chat_template
