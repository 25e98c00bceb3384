"""What does computing logits only at labelled positions save? (pipelines/axolotl_plugin.py)

The same QLoRA model (SmolLM2-135M, NF4, LoRA r=16 on q/k/v/o, fp32 compute on CPU) and the
same batches (the shipped micro-batch size, demo chats in random order, labels on the
assistant turn only), one forward + backward each, alternately with the model's own forward (logits at every
position: the reference) and with the plugin's forward. Prints seconds per micro-batch for
both, the ratio, and the largest loss difference (must be ~0: same loss, fewer FLOPs).

    .venv/bin/python bench/label_logits.py [--batches 12]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.train_overhead import converted_model_dir, default_data, shipped_batch  # noqa: E402
from pipelines import axolotl_plugin  # noqa: E402
from pipelines.records import read_jsonl  # noqa: E402

MICRO_BATCH, _ = shipped_batch()


def batches(model_dir: Path, train: Path, count: int) -> list[dict]:
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = list(read_jsonl(train))
    random.Random(0).shuffle(rows)
    out = []
    for lo in range(0, count * MICRO_BATCH, MICRO_BATCH):
        encoded = []
        for row in rows[lo : lo + MICRO_BATCH]:
            full = tok.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
            prompt = tok.apply_chat_template(row["messages"][:-1], tokenize=True, return_dict=True,
                                             add_generation_prompt=True)["input_ids"]
            encoded.append((full, [-100] * len(prompt) + full[len(prompt):]))
        width = -(-max(len(f) for f, _ in encoded) // 8) * 8  # pad_to_multiple_of: 8, as configured
        ids = torch.full((len(encoded), width), tok.pad_token_id)
        labels = torch.full((len(encoded), width), -100)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, (full, lab) in enumerate(encoded):
            ids[i, : len(full)], labels[i, : len(lab)], mask[i, : len(full)] = (
                torch.tensor(full), torch.tensor(lab), 1)
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a base_models.yaml name")
    parser.add_argument("--data", type=Path, default=None, help="train JSONL (default: demo split or fixture)")
    parser.add_argument("--batches", type=int, default=12)
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    model_dir = converted_model_dir(args.model)
    data = batches(model_dir, args.data or default_data(), args.batches + 1)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quant, dtype=torch.float32,
                                                device_map="cpu")
    plain_forward = base.forward
    axolotl_plugin.enable(base)
    label_forward = base.forward
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))

    def step(forward, batch) -> tuple[float, float]:
        base.forward = forward
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        return time.perf_counter() - start, loss.item()

    times = {"all positions": [], "labelled only": []}
    worst = 0.0
    for i, batch in enumerate(data):
        (t_all, l_all), (t_lab, l_lab) = step(plain_forward, batch), step(label_forward, batch)
        if i:  # the first batch warms up both
            times["all positions"].append(t_all)
            times["labelled only"].append(t_lab)
        worst = max(worst, abs(l_all - l_lab))
    tokens = statistics.fmean(int(b["attention_mask"].sum()) for b in data) / MICRO_BATCH
    labelled = statistics.fmean(int((b["labels"] != -100).sum()) for b in data) / MICRO_BATCH
    print(f"model {model_dir.name}, {args.batches} micro-batches of {MICRO_BATCH}, {tokens:.0f} tokens/example, "
          f"{labelled:.1f} labelled; forward + backward")
    for name, values in times.items():
        print(f"  {name:<15} {statistics.median(values):6.2f} s/micro-batch (median)")
    ratio = statistics.median(times["labelled only"]) / statistics.median(times["all positions"])
    print(f"ratio labelled-only / all-positions: {ratio:.2f}; largest loss difference {worst:.2e}")


if __name__ == "__main__":
    main()
