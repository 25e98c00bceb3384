"""The trained adapter's record, ``AdapterRecord``: what evaluation needs to load it exactly
as it was trained (the quantisation config Axolotl built, the chat template, the library
versions, a snippet that loads it), where it came from (data, config, base weights, run),
and what training measured. It is ``qlora_adapter``'s value and the run's done marker."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines.common.metadata import JsonValue, Markdown, Metadata, PathValue
from pipelines.common.typed_records import from_fields
from pipelines.training.run_plan import LOG_FILE, METRICS_FILE, RunPlan
from pipelines.training.train_metrics import TrainMetrics, loss_table_md

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
    out["bnb_4bit_compute_dtype"] = (
        "bfloat16" if cfg.get("bf16") is True else "float16" if cfg.get("fp16") is True else "float32"
    )
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


@dataclass(frozen=True)
class AdapterRecord:
    """One trained, checked adapter (``qlora_adapter``'s value; ``tunegate-done.json``)."""

    adapter_dir: str
    base_model_dir: str
    load_in_4bit: bool
    bnb_4bit_quant_type: str | None
    bnb_4bit_compute_dtype: str | None
    bnb_config: dict[str, Any]
    chat_template: str | None
    eot_tokens: list[str] | None
    system_prompt_policy: str  # "from_record": prompt the tuned model with the record's own system turn
    data_fingerprint: str
    config_hash: str
    base_model_sha256: str
    run_key: str
    run_dir: str
    mlflow_run_id: str | None
    eval_loss_first: float | None
    eval_loss_last: float | None
    train_loss_last: float | None
    trainable_params: int | float | None
    train_runtime_s: float | None
    tokens_per_second: float | None
    versions: dict[str, str]
    how_to_load: str
    cache_hit: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterRecord:
        """A record from its ``to_dict()`` (a done marker); RecordError when it does not parse."""
        return from_fields(cls, data)

    def metadata(self, metrics: TrainMetrics) -> Metadata:
        """The adapter as the UI shows it, with the run's loss curve."""
        first, last = self.eval_loss_first, self.eval_loss_last
        size = sum(p.stat().st_size for p in Path(self.adapter_dir).glob("adapter_model.*"))
        number = lambda value: None if value is None else float(value)  # noqa: E731
        return {
            "adapter_dir": PathValue(self.adapter_dir),
            "adapter_size_mb": round(size / 2**20, 2),
            "trainable_params": int(self.trainable_params or 0),
            "train_loss_last": number(self.train_loss_last),
            "eval_loss_first": number(first),
            "eval_loss_last": number(last),
            "eval_loss_drop": float(round((first - last) / first, 4)) if first and last is not None else 0.0,
            "loss_curve": Markdown(loss_table_md(metrics)),
            "train_runtime_s": number(self.train_runtime_s),
            "tokens_per_second": number(self.tokens_per_second),
            "config_hash": self.config_hash,
            "data_fingerprint": self.data_fingerprint,
            "base_model_sha256": self.base_model_sha256,
            "quantization": JsonValue(self.bnb_config),
            "cache_hit": self.cache_hit,
            "versions": JsonValue(self.versions),
            "how_to_load": Markdown(f"```python\n{self.how_to_load.rstrip()}\n```"),
            "train_log": PathValue(str(Path(self.run_dir) / LOG_FILE)),
            "metrics_file": PathValue(str(Path(self.run_dir) / METRICS_FILE)),
            "mlflow_run_id": self.mlflow_run_id or "",
        }


def adapter_record(plan: RunPlan, metrics: TrainMetrics, mlflow_run_id: str | None) -> AdapterRecord:
    """The record of a finished run: everything evaluation needs to load the tuned model exactly
    as it was trained (same 4-bit base + adapter, same chat template)."""
    quant = quantization_config(plan.config)
    adapter_dir = str(plan.output_dir)
    return AdapterRecord(
        adapter_dir=adapter_dir,
        base_model_dir=str(plan.base_model_dir),
        load_in_4bit=bool(quant.get("load_in_4bit")),
        bnb_4bit_quant_type=quant.get("bnb_4bit_quant_type"),
        bnb_4bit_compute_dtype=quant.get("bnb_4bit_compute_dtype"),
        bnb_config=quant,
        chat_template=plan.config.get("chat_template"),
        eot_tokens=plan.config.get("eot_tokens"),
        # Records carry their own system turn (the source's system_prompt fills a missing
        # one); prompt the tuned model with that same system turn.
        system_prompt_policy="from_record",
        data_fingerprint=plan.data_fingerprint,
        config_hash=plan.config_hash,
        base_model_sha256=plan.base_model_sha256,
        run_key=plan.run_key,
        run_dir=str(plan.run_dir),
        mlflow_run_id=mlflow_run_id,
        eval_loss_first=metrics.eval_loss_first,
        eval_loss_last=metrics.eval_loss_last,
        train_loss_last=metrics.train_loss_last,
        trainable_params=metrics.trainable_params,
        train_runtime_s=metrics.train_runtime_s,
        tokens_per_second=metrics.tokens_per_second,
        versions=versions(),
        how_to_load=how_to_load(adapter_dir, str(plan.base_model_dir), quant),
    )
