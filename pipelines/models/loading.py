"""Load a contender model for evaluation, exactly as it was trained.

Why the loading rules matter: a QLoRA adapter must be evaluated on the base model quantised
exactly as it was trained (NF4 4-bit, same compute dtype); on the fp32 base the same adapter
scored 6/20 instead of 9/20 here (ENVIRONMENT.md). The chat template is the one training
used, so the tuned model sees the prompt format it learned."""

from __future__ import annotations

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


def prompt_ids(tokenizer, conversations: list[list[dict[str, str]]]) -> list[list[int]]:
    """Each conversation's chat-templated prompt as token ids (no extra special tokens:
    the template writes them)."""
    return [tokenizer(render(tokenizer, messages), add_special_tokens=False)["input_ids"] for messages in conversations]
