"""What does launching training through our Axolotl path cost, against a direct PEFT + TRL
loop in-process? Same model, data, batch shape and hyperparameters: the registry entry's
shipped CPU config (QLoRA NF4, its LoRA targets and layers, seq 256, micro-batch x grad-accum,
lr 5e-4 cosine, fp32, batches padded to the same multiple as Axolotl's collator). Ours is the
launch as shipped, including what it adds (pipelines/training/plugins/, length-grouped
batches); the direct loop is plain TRL.

Prints, for both: steady-state throughput (skipping warm-up steps) in examples/s and in
real (non-padding) tokens/s, the ratio ours/direct (goal >= 0.9), and the fixed cost:
wall time minus the steps' time at the steady rate (start-up, data prep, warm-up, save).

    flock /tmp/tunegate-heavy.lock .venv/bin/python bench/train_overhead.py [--steps 12]

Defaults to SmolLM2-135M (converted from the wheel on first use) and the demo train split
when it exists (else the test fixture)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.shipped import (  # noqa: E402
    DEFAULT_MODEL,
    converted_model_dir,
    default_data,
    plan_bench_run,
    shipped_batch,
    shipped_lora,
    shipped_quantization,
)
from pipelines.common.jsonl import read_jsonl  # noqa: E402
from pipelines.config.paths import REPO_ROOT
from pipelines.config.training import TrainingSettings
from pipelines.training import launch, train_metrics

WARMUP_STEPS = 2
BATCH = math.prod(shipped_batch())  # examples per optimizer step


def _steady_rate(points: list[tuple[int, float]]) -> float:
    """Optimizer steps per second between the end of warm-up and the last step."""
    points = sorted(points)
    start = next((p for p in points if p[0] >= WARMUP_STEPS), points[0])
    end = points[-1]
    return (end[0] - start[0]) / (end[1] - start[1])


def _mean_tokens(model_dir: Path, rows: list[dict]) -> float:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    lengths = [
        min(256, len(tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"]))
        for r in rows
    ]
    return statistics.fmean(lengths)


def run_ours(name: str, model_dir: Path, train: Path, eval_: Path, steps: int, work: Path) -> dict:
    """Our launch, as the asset does it (minus Dagster): generated YAML, clean env, patch,
    ``axolotl train --launcher python``. Evals and checkpoints off: throughput only."""
    overrides = {
        "max_steps": steps,
        "eval_strategy": "no",
        "saves_per_epoch": None,
        "save_strategy": "no",
        "num_epochs": 1,
    }
    plan = plan_bench_run(
        work, name, model_dir, TrainingSettings(overrides=overrides), train, eval_, cuda=False, label="bench"
    )
    env = launch.launch_env(os.environ, cpu_qlora_patch=plan.needs_cpu_qlora_patch)
    started = time.perf_counter()
    out = subprocess.run(launch.launch_command(plan.config_path), env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    (work / "axolotl.log").write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"axolotl failed ({out.returncode}); see {work / 'axolotl.log'}")
    metrics = train_metrics.read_metrics(plan.run_dir)
    points = [(r["step"], float(r["train_runtime"])) for r in metrics.train if "train_runtime" in r]
    return {"wall_s": wall, "steps_per_s": _steady_rate(points), "steps": len(points), "config": plan.config}


def run_direct(model_dir: Path, train_rows: list[dict], steps: int, work: Path, cfg: dict) -> dict:
    """The same training written directly against PEFT + TRL, in this process, with the
    hyperparameters of our generated config ``cfg``."""
    started = time.perf_counter()
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    patch = importlib.util.spec_from_file_location("tunegate_cpu_qlora_patch", launch.PATCH_DIR / "sitecustomize.py")
    module = importlib.util.module_from_spec(patch)
    patch.loader.exec_module(module)  # same AVX512-BF16 workaround as our launch

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, quantization_config=shipped_quantization(cfg), dtype=torch.float32, device_map="cpu"
    )
    # prompt/completion: loss on the assistant turn (+ its <|im_end|>) only, like roles_to_train
    data = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in train_rows])
    args = SFTConfig(
        output_dir=str(work / "direct"),
        max_steps=steps,
        per_device_train_batch_size=cfg["micro_batch_size"],
        gradient_accumulation_steps=cfg["gradient_accumulation_steps"],
        learning_rate=cfg["learning_rate"],
        lr_scheduler_type=cfg["lr_scheduler"],
        warmup_steps=cfg.get("warmup_ratio", 0.0),
        optim=cfg["optimizer"],
        weight_decay=cfg.get("weight_decay", 0.0),
        max_grad_norm=cfg.get("max_grad_norm", 1.0),
        logging_steps=1,
        max_length=cfg["sequence_len"],
        pad_to_multiple_of=cfg.get("pad_to_multiple_of") or 64,
        packing=False,
        bf16=False,
        fp16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        dataloader_pin_memory=False,
        seed=42,
        dataset_num_proc=1,
    )
    lora = shipped_lora(cfg)
    points: list[tuple[int, float]] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, _args, state, *a, **k):
            points.append((state.global_step, time.perf_counter() - self.t0))

    trainer = SFTTrainer(
        model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora, callbacks=[Clock()]
    )
    trainer.train()
    trainer.save_model(str(work / "direct" / "adapter"))
    wall = time.perf_counter() - started
    return {"wall_s": wall, "steps_per_s": _steady_rate(points), "steps": len(points)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a base_models.yaml name")
    parser.add_argument("--model-dir", type=Path, help="a local HF folder instead of --model's weights")
    parser.add_argument("--data", type=Path, default=None, help="train JSONL (default: demo split or fixture)")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    os.environ.update(launch.SUBPROCESS_ENV)

    model_dir = args.model_dir or converted_model_dir(args.model)
    train = (args.data or default_data()).resolve()
    rows = list(read_jsonl(train))[: args.steps * BATCH]
    eval_ = REPO_ROOT / "tests" / "fixtures" / "chat_eval.jsonl"  # unused: evals are off
    with tempfile.TemporaryDirectory(prefix="tunegate-bench-") as tmp:
        work = Path(tmp)
        subset = work / "train.jsonl"
        subset.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tokens = _mean_tokens(model_dir, rows)
        ours = run_ours(args.model, model_dir, subset, eval_, args.steps, work / "ours")
        direct = run_direct(model_dir, rows, args.steps, work, ours["config"])

    print(
        f"model {model_dir.name}, {len(rows)} examples from {train.name}, {args.steps} steps of {BATCH} "
        f"examples, {tokens:.0f} real tokens/example, steady state after {WARMUP_STEPS} warm-up steps"
    )
    print(f"{'':22}{'ours (axolotl)':>16}{'direct (trl)':>16}")
    for label, key, scale in (("examples/s", "steps_per_s", BATCH), ("real tokens/s", "steps_per_s", BATCH * tokens)):
        print(f"{label:22}{ours[key] * scale:16.1f}{direct[key] * scale:16.1f}")
    print(f"{'wall s':22}{ours['wall_s']:16.1f}{direct['wall_s']:16.1f}")
    fixed = {name: r["wall_s"] - r["steps"] / r["steps_per_s"] for name, r in (("ours", ours), ("direct", direct))}
    print(f"{'fixed cost s':22}{fixed['ours']:16.1f}{fixed['direct']:16.1f}   (wall - steps at steady rate)")
    ratio = ours["steps_per_s"] / direct["steps_per_s"]
    print(
        f"steady-state throughput ratio ours/direct: {ratio:.2f} (goal >= 0.90: {'met' if ratio >= 0.9 else 'NOT met'})"
    )
    print(
        f"launch overhead of ours over direct: {fixed['ours'] - fixed['direct']:.1f} s (process start, imports, "
        "config validation, dataset tokenisation, eval before the first step, adapter save)"
    )


if __name__ == "__main__":
    main()
