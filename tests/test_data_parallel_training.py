"""Multi-process training for real: the same generated YAML through ``qlora_adapter`` once with
Axolotl's ``python`` launcher (1 process) and once with ``torchrun`` (2 CPU processes,
torch.distributed over gloo), QLoRA on the tiny model, and the losses compared.

Both runs see the same 8 examples per optimizer step: sequential sampling
(``curriculum_sampling``), micro-batch 4, and gradient accumulation 2 on one process vs 1 on
each of two (accelerate hands consecutive micro-batches to the ranks in turn). The step-1 loss
is then the same number. Later steps differ slightly because Axolotl 0.19 sets
``average_tokens_across_devices: False``: each rank's loss is the mean over its own labelled
tokens and DDP averages the two means, while one process averages over all tokens of the
accumulated batch. Measured on this 2-core machine (lr 0.01, 2 epochs, 12 steps, two runs):
final eval loss 10.4614 vs 10.4526 (0.08 %) and 10.4525 vs 10.4485 (0.04 %), largest per-step
train-loss gap 0.008 and 0.027, eval-loss drop 3.1 % and 1.7 % apart. The tolerances below are
several times those gaps and far below
what a broken data-parallel run shows (each process training alone on all the data, as
Axolotl does on CPU without ``CpuDataParallelPlugin``: 6 steps per epoch instead of 12 logged
twice, and two different loss curves in one metrics file)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipelines.common.jsonl import read_jsonl
from pipelines.training import run_plan, train_metrics
from tests.doubles import PARTITION, baseline_double, training_resources, training_stage_assets

SAME_BATCHES = {  # one process, accumulation 2 == two processes, accumulation 1: 8 examples a step
    "learning_rate": 0.01,
    "micro_batch_size": 4,
    "warmup_ratio": 0.0,
    "num_epochs": 2,
    "curriculum_sampling": True,
    "group_by_length": False,
}
FINAL_EVAL_REL_TOL = 0.005  # measured 0.0008, 0.0004
STEP_LOSS_ABS_TOL = 0.10  # measured 0.008, 0.027
DROP_REL_TOL = 0.10  # measured 0.031, 0.017


def _train(tmp_path: Path, tiny_registry: Path, name: str, training_cfg: dict, accumulation: int) -> dict:
    settings = tmp_path / f"{name}.yaml"
    settings.write_text(
        yaml.safe_dump(
            {
                "training": {
                    # the guard is not under test here (the random tiny model's drop, 1.7-3.1 % measured, is
                    # too close to 1 % to be sure of): 0 still refuses a run whose eval loss rose
                    **training_cfg,
                    "min_eval_loss_drop": 0.0,
                    "overrides": {**SAME_BATCHES, "gradient_accumulation_steps": accumulation},
                }
            }
        )
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("base_model", [PARTITION])
    resources = training_resources(tmp_path / name, tiny_registry, settings)
    result = dg.materialize(
        training_stage_assets(baseline_double(target=0.9, pass_rate=0.1)),
        instance=instance,
        resources=resources,
        partition_key=PARTITION,
    )
    assert result.success
    return result.output_for_node("qlora_adapter")


@pytest.mark.slow
def test_two_cpu_processes_train_like_one(tmp_path, tiny_registry):
    single = _train(tmp_path, tiny_registry, "single", {"launcher": "python", "processes": 1}, accumulation=2)
    ddp = _train(tmp_path, tiny_registry, "ddp", {"launcher": "torchrun", "processes": 2}, accumulation=1)

    log = (Path(ddp.run_dir) / run_plan.LOG_FILE).read_text()
    assert "--launcher torchrun -- --standalone --nproc_per_node 2" in log
    assert "DistributedType.MULTI_CPU over gloo, rank 1 of 2" in log  # really two ranks, one process group
    config = yaml.safe_load((Path(ddp.run_dir) / run_plan.CONFIG_FILE).read_text())
    assert run_plan.CPU_DDP_PLUGIN in config["plugins"] and config["load_in_4bit"] is True  # QLoRA + DDP on CPU

    runs = {}
    for label, record in (("single", single), ("ddp", ddp)):
        records = list(read_jsonl(Path(record.run_dir) / run_plan.METRICS_FILE))
        assert sum(r["kind"] == "begin" for r in records) == 1  # rank 0 alone writes the metrics
        runs[label] = train_metrics.read_metrics(Path(record.run_dir))
    single_steps = {r["step"]: r["loss"] for r in runs["single"].train}
    ddp_steps = {r["step"]: r["loss"] for r in runs["ddp"].train}
    assert sorted(single_steps) == sorted(ddp_steps) == list(range(1, 13))  # 48 rows / 8 a step, 2 epochs

    assert ddp_steps[1] == pytest.approx(single_steps[1], abs=1e-4)  # the same 8 examples, same weights
    gaps = {step: abs(ddp_steps[step] - single_steps[step]) for step in single_steps}
    assert max(gaps.values()) <= STEP_LOSS_ABS_TOL, gaps

    assert ddp.eval_loss_first == pytest.approx(single.eval_loss_first, rel=1e-3)
    assert ddp.eval_loss_last == pytest.approx(single.eval_loss_last, rel=FINAL_EVAL_REL_TOL)
    single_drop = single.eval_loss_first - single.eval_loss_last
    ddp_drop = ddp.eval_loss_first - ddp.eval_loss_last
    assert single_drop > 0.1 and ddp_drop > 0.1  # both learned
    assert abs(ddp_drop - single_drop) / single_drop <= DROP_REL_TOL
    print(
        f"\nsingle: eval {single.eval_loss_first:.4f} -> {single.eval_loss_last:.4f}; "
        f"ddp: eval {ddp.eval_loss_first:.4f} -> {ddp.eval_loss_last:.4f}; "
        f"largest step gap {max(gaps.values()):.4f} at step {max(gaps, key=gaps.get)}"
    )
