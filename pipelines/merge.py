"""Merge a promoted LoRA/QLoRA adapter into its base weights for serving.

Serving stacks want one plain HF folder, not base + adapter. A QLoRA adapter was trained
on an NF4-quantised base; merging it into 4-bit weights would round the update away, so
it is merged into the fp32 base instead, and that is recorded: the merged model is close
to, not bit-identical with, the model that was evaluated. Plain Python, no Dagster."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class MergedModel:
    path: str
    base_model_dir: str
    adapter_dir: str
    merged_into: str
    trained_on_4bit: bool
    parameters: int
    size_bytes: int
    note: str

    def to_dict(self) -> dict:
        return asdict(self)


def merge_adapter(base_model_dir: Path, adapter_dir: Path, out_dir: Path, trained_on_4bit: bool) -> MergedModel:
    """Load the fp32 base, apply the adapter, fold it into the weights, ``save_pretrained``.

    Written to a temp folder beside ``out_dir`` and renamed at the end, so a crash never
    leaves a half-saved model where a server would look for one."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_model_dir, adapter_dir, out_dir = Path(base_model_dir), Path(adapter_dir), Path(out_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json; not a PEFT adapter folder")
    base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    note = (
        "QLoRA adapter (trained on an NF4 4-bit base) merged into the fp32 base weights; "
        "outputs can differ slightly from the evaluated 4-bit model"
        if trained_on_4bit
        else "LoRA adapter merged into the fp32 base weights it was trained on"
    )
    return MergedModel(
        path=str(out_dir),
        base_model_dir=str(base_model_dir),
        adapter_dir=str(adapter_dir),
        merged_into="fp32",
        trained_on_4bit=trained_on_4bit,
        parameters=sum(p.numel() for p in merged.parameters()),
        size_bytes=sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file()),
        note=note,
    )
