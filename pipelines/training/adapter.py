"""What evaluation needs to load an adapter exactly as it was trained: the quantisation
config Axolotl built, the library versions, and a snippet that loads it."""

from __future__ import annotations

from typing import Any

BNB_QUANT_DEFAULTS = {  # what Axolotl 0.19 builds for `adapter: qlora` (loaders/model.py)
    "load_in_4bit": True,
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_use_double_quant": True,
    "bnb_4bit_quant_storage": "bfloat16",
}


def versions() -> dict[str, str]:
    """Versions of the training stack, recorded with every adapter."""
    import importlib.metadata as md

    out = {}
    for dist in ("axolotl", "transformers", "peft", "bitsandbytes", "torch", "trl", "accelerate"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def quantization_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The BitsAndBytesConfig kwargs the run used (Axolotl's defaults + bnb_config_kwargs),
    with the compute dtype Axolotl derives from bf16/fp16 when not set explicitly."""
    if not cfg.get("load_in_4bit"):
        return {"load_in_4bit": False}
    out = dict(BNB_QUANT_DEFAULTS)
    out["bnb_4bit_compute_dtype"] = "bfloat16" if cfg.get("bf16") is True else "float16" if cfg.get("fp16") is True else "float32"
    out.update({k: str(v) for k, v in (cfg.get("bnb_config_kwargs") or {}).items()})
    return out


def how_to_load(adapter_dir: str, base_model_dir: str, quant: dict[str, Any]) -> str:
    """Python that loads the tuned model exactly as it was trained (4-bit base + adapter)."""
    if quant.get("load_in_4bit"):
        kwargs = ", ".join(
            f"{k}=torch.{v}" if k.endswith(("_dtype", "_storage")) else f"{k}={v!r}" for k, v in quant.items()
        )
        quant_line = f"bnb = BitsAndBytesConfig({kwargs})\n"
        load = f"base = AutoModelForCausalLM.from_pretrained({base_model_dir!r}, quantization_config=bnb)\n"
    else:
        quant_line = ""
        load = f"base = AutoModelForCausalLM.from_pretrained({base_model_dir!r}, dtype=torch.float32)\n"
    return (
        "import torch\n"
        "from peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig\n"
        + quant_line
        + load
        + f"model = PeftModel.from_pretrained(base, {adapter_dir!r}).eval()\n"
        + f"tokenizer = AutoTokenizer.from_pretrained({adapter_dir!r})\n"
    )
