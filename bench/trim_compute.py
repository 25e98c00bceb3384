"""What do the plugin's savings buy? (pipelines/training/plugins/)

The shipped QLoRA model (SmolLM2-135M, NF4, the registry entry's LoRA targets and layers, fp32
compute on CPU) and the same batches (the shipped micro-batch size, demo chats in random
order, labels on the assistant turn only), one forward + backward each, in turn:

- Axolotl's default: logits at every position, and the input embeddings' output requiring
  grad (Axolotl's ``enable_input_require_grads``), so the backward pass runs to the bottom;
- + labelled logits: the LM head runs only where there is a label;
- + backward trimmed (as shipped): the backward pass stops at the lowest adapted layer.

Prints seconds per micro-batch (median), each ratio against the default, and the largest
loss and LoRA-gradient differences against the default (must be ~0: same training, fewer FLOPs).

    .venv/bin/python bench/trim_compute.py [--batches 12]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.shipped import (  # noqa: E402
    DEFAULT_MODEL,
    converted_model_dir,
    default_data,
    shipped_config,
    shipped_lora,
    shipped_quantization,
)
from pipelines.common.jsonl import read_jsonl  # noqa: E402
from pipelines.training.plugins import trim_compute


def batches(model_dir: Path, train: Path, count: int, micro_batch: int) -> list[dict]:
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = list(read_jsonl(train))
    random.Random(0).shuffle(rows)
    out = []
    for lo in range(0, count * micro_batch, micro_batch):
        encoded = []
        for row in rows[lo : lo + micro_batch]:
            full = tok.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
            prompt = tok.apply_chat_template(
                row["messages"][:-1], tokenize=True, return_dict=True, add_generation_prompt=True
            )["input_ids"]
            encoded.append((full, [-100] * len(prompt) + full[len(prompt) :]))
        width = -(-max(len(f) for f, _ in encoded) // 8) * 8  # pad_to_multiple_of: 8, as configured
        ids = torch.full((len(encoded), width), tok.pad_token_id)
        labels = torch.full((len(encoded), width), -100)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, (full, lab) in enumerate(encoded):
            ids[i, : len(full)], labels[i, : len(lab)], mask[i, : len(full)] = (
                torch.tensor(full),
                torch.tensor(lab),
                1,
            )
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a base_models.yaml name")
    parser.add_argument("--data", type=Path, default=None, help="train JSONL (default: demo split or fixture)")
    parser.add_argument("--batches", type=int, default=12)
    args = parser.parse_args()

    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    cfg = shipped_config(args.model)
    micro_batch = cfg["micro_batch_size"]
    model_dir = converted_model_dir(args.model)
    data = batches(model_dir, args.data or default_data(), args.batches + 1, micro_batch)
    base = AutoModelForCausalLM.from_pretrained(
        model_dir, quantization_config=shipped_quantization(cfg), dtype=torch.float32, device_map="cpu"
    )
    plain_forward = base.forward
    trim_compute.keep_logits_at_labels(base)
    label_forward = base.forward
    model = get_peft_model(base, shipped_lora(cfg))
    lora = [p for p in model.parameters() if p.requires_grad]

    variants = {  # name: (forward, backward runs to the bottom)
        "Axolotl default": (plain_forward, True),
        "+ labelled logits": (label_forward, True),
        "+ backward trimmed": (label_forward, False),
    }

    def step(forward, full_backward: bool, batch) -> tuple[float, float, list]:
        base.forward = forward
        if not full_backward:
            trim_compute.stop_backward_at_adapter(model)
        elif not getattr(base, "_require_grads_hooks", None):  # a second call would orphan the first hook
            base.enable_input_require_grads()
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        return time.perf_counter() - start, loss.item(), [p.grad.clone() for p in lora]

    times: dict[str, list[float]] = {name: [] for name in variants}
    loss_diff = grad_diff = 0.0
    for i, batch in enumerate(data):
        results = {name: step(*variant, batch) for name, variant in variants.items()}
        _, ref_loss, ref_grads = results["Axolotl default"]
        for name, (seconds, loss, grads) in results.items():
            if i:  # the first batch warms up every variant
                times[name].append(seconds)
            loss_diff = max(loss_diff, abs(loss - ref_loss))
            grad_diff = max(grad_diff, max(float((g - r).abs().max()) for g, r in zip(grads, ref_grads)))
    tokens = statistics.fmean(int(b["attention_mask"].sum()) for b in data) / micro_batch
    labelled = statistics.fmean(int((b["labels"] != -100).sum()) for b in data) / micro_batch
    layers = cfg.get("peft_layers_to_transform")
    print(
        f"model {model_dir.name}, LoRA on {'layers ' + str(min(layers)) + '-' + str(max(layers)) if layers else 'every layer'}; "
        f"{args.batches} micro-batches of {micro_batch}, {tokens:.0f} tokens/example, {labelled:.1f} labelled; "
        "forward + backward"
    )
    reference = statistics.median(times["Axolotl default"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<20} {median:6.2f} s/micro-batch (median)  {median / reference:.2f}x")
    print(f"largest difference from the default: loss {loss_diff:.1e}, LoRA gradient {grad_diff:.1e}")


if __name__ == "__main__":
    main()
