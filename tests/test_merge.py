"""Merging an adapter into the base weights keeps the adapted model's behaviour."""

from __future__ import annotations

import json

import pytest

from pipelines.merge import merge_adapter


def test_merged_model_matches_base_plus_adapter(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)

    info = merge_adapter(tiny_model_dir, adapter_dir, tmp_path / "merged", trained_on_4bit=True)

    ids = torch.tensor([[1, 2, 3, 4, 5]])
    fresh_base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        expected = PeftModel.from_pretrained(fresh_base, adapter_dir)(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(info.path, dtype=torch.float32)
        got = merged(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)(ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-4)  # the adapter really changed the weights
    assert "lora" not in json.dumps(json.loads((tmp_path / "merged" / "config.json").read_text())).lower()
    assert info.merged_into == "fp32" and info.trained_on_4bit and "QLoRA" in info.note
    assert (tmp_path / "merged" / "tokenizer.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_missing_adapter_is_a_clear_error(tiny_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a PEFT adapter folder"):
        merge_adapter(tiny_model_dir, tmp_path, tmp_path / "out", trained_on_4bit=False)
