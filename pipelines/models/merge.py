"""Build the artefacts that are scored and shipped: the base weights as training saw them,
and the adapter merged into exactly those weights. Plain Python, no Dagster.

Why not merge a QLoRA adapter into the original fp32 weights (what tunegate did before):
the adapter was trained against the NF4-quantised base, so its update only makes sense on
top of those values. Measured on SmolLM2-135M: the same adapter scored 44 % on the 4-bit
base and 22 % merged into fp32. So:

1. ``dequantize_base``: load the base in 4-bit exactly as training did (the recorded
   BitsAndBytesConfig), dequantise every 4-bit layer back to fp32 and save it. These are the
   values the adapter was trained against, as a plain folder: the quantisation cost can be
   measured on it alone, without the adapter.
2. ``merge_adapter``: fold the adapter into that folder (``merge_and_unload``) and save one
   plain HF folder. It computes what ``4-bit base + adapter`` computes (up to float rounding;
   ``tests/test_merge.py`` checks the logits), runs at fp32 speed, and is the one object that
   evaluation scores and promotion ships.

For a LoRA adapter (``adapter: lora``, no quantisation) step 1 is the fp32 base itself."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines.common.files import atomic_dir


@dataclass(frozen=True)
class BuiltModel:
    path: str
    parameters: int
    size_bytes: int
    note: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BaseAsTrained:
    """``base_as_trained``'s value: the base's weights as training saw them (dequantised NF4 for
    QLoRA, the fp32 base for a plain LoRA), scored for the cost of quantisation alone."""

    path: str
    quantised: bool
    bnb_config: dict[str, Any]
    chat_template: str
    artefact: dict[str, Any]  # pipelines.models.artefacts.identity(...)


@dataclass(frozen=True)
class TunedModel:
    """``tuned_model``'s value: the adapter merged into ``base_as_trained``, the folder that is
    scored and, on a win, shipped."""

    path: str
    chat_template: str
    artefact: dict[str, Any]  # pipelines.models.artefacts.identity(...)
    adapter_dir: str
    run_key: str
    data_fingerprint: str | None
    base_as_trained: str  # the artefact id it was merged into


def _save(model, tokenizer, out_dir: Path, note: str) -> BuiltModel:
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return BuiltModel(
        path=str(out_dir),
        parameters=sum(p.numel() for p in model.parameters()),
        size_bytes=sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file()),
        note=note,
    )


def dequantize_base(base_model_dir: Path, bnb_config: dict[str, Any], out_dir: Path) -> BuiltModel:
    """The base model's weights as 4-bit training saw them, dequantised to fp32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from pipelines.models import loading

    base_model_dir = Path(base_model_dir)
    spec = loading.ModelSpec(base_dir=str(base_model_dir), load_in_4bit=True, bnb_config=bnb_config)
    quant = BitsAndBytesConfig(**loading.bnb_kwargs(spec))
    model = AutoModelForCausalLM.from_pretrained(
        base_model_dir, quantization_config=quant, dtype=torch.float32, device_map="cpu"
    )
    quantised = sum(1 for m in model.modules() if type(m).__name__ == "Linear4bit")
    if not quantised:
        raise ValueError(f"{base_model_dir}: loading with {bnb_config} quantised no layer; nothing to dequantise")
    model = model.dequantize(dtype=torch.float32)
    # the folder is a plain fp32 model now: no quantisation marks, or loaders re-quantise it
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.to(torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    return _save(
        model,
        tokenizer,
        Path(out_dir),
        f"{quantised} layers quantised as in training ({bnb_config.get('bnb_4bit_quant_type', 'nf4')}) "
        "and dequantised to fp32",
    )


def merge_adapter(into_dir: Path, adapter_dir: Path, out_dir: Path, chat_template: str | None = None) -> BuiltModel:
    """Fold a (Q)LoRA adapter into ``into_dir`` (the weights it was trained against). The
    saved tokenizer carries the chat template training used, so a server that reads the
    folder formats prompts exactly as the adapter learned them."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    into_dir, adapter_dir = Path(into_dir), Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json; not a PEFT adapter folder")
    base = AutoModelForCausalLM.from_pretrained(into_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(into_dir)
    if chat_template:
        from pipelines.models import loading

        loading.apply_chat_template_name(tokenizer, chat_template)
    return _save(merged, tokenizer, Path(out_dir), f"adapter {adapter_dir.name} merged into {into_dir}")
