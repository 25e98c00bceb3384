"""The GPU check of issue 17: on a machine with a CUDA GPU, the training stage for the default
model with the GPU profile (axolotl_configs/gpu.yaml: bf16, seq 2048, micro-batch 2 x
grad-accum 4, flash attention where installed), through the same generated YAML and launch
as ``qlora_adapter`` (``pipelines.training``), then tokens/s and peak GPU memory.

    bench/gpu_check.sh [--steps 30] [--processes N]     (N: data-parallel processes, torchrun;
                                                          default: every visible GPU)

Tokens/s: input tokens the Trainer counted / its train_runtime (``TrainMetrics``, the figure
``qlora_adapter`` records). Peak memory: the largest ``memory/max_allocated (GiB)`` Axolotl
logged (rank 0's torch allocator) and the largest ``memory.used`` nvidia-smi reported on any
GPU while it ran (allocator cache and CUDA context included). No reference run: this is a
figure to record, not a ratio."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.shipped import DEFAULT_MODEL, converted_model_dir, default_data, plan_bench_run  # noqa: E402
from pipelines.common.files import tail  # noqa: E402
from pipelines.config.paths import REPO_ROOT, Layout, default_home  # noqa: E402
from pipelines.config.training import TrainingSettings  # noqa: E402
from pipelines.training import launch, run_plan, train_metrics  # noqa: E402


def _gpu_memory_mib() -> list[int]:
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [int(line) for line in out.split() if line.strip()]


class PeakMemory(threading.Thread):
    """Polls nvidia-smi every 0.5 s; ``peak_mib`` is the largest per-GPU figure seen."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mib, self._stop = 0, threading.Event()

    def run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak_mib = max([self.peak_mib, *_gpu_memory_mib()])

    def stop(self) -> None:
        self._stop.set()
        self.join()


def plan_check(steps: int, processes: int) -> run_plan.RunPlan:
    """The run ``qlora_adapter`` would launch on a CUDA machine, for ``steps`` steps, no evals."""
    settings = TrainingSettings(
        launcher="torchrun" if processes > 1 else "python",
        processes=processes,
        overrides={"max_steps": steps, "eval_strategy": "no", "save_strategy": "no", "saves_per_epoch": None},
    )
    model_dir = converted_model_dir(DEFAULT_MODEL)
    validation = Layout(default_home()).validation_file
    if not validation.is_file():
        validation = REPO_ROOT / "tests" / "fixtures" / "chat_eval.jsonl"
    work = Path(tempfile.mkdtemp(prefix="tunegate-gpu-check-"))
    return plan_bench_run(
        work, DEFAULT_MODEL, model_dir, settings, default_data(), validation, cuda=True, label="gpu-check"
    )


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--processes", type=int, default=0, help="default: every visible GPU")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(
            f"gpu_check: torch {torch.__version__} sees no CUDA device (a CPU build, or no driver); "
            "install a CUDA build of the pinned torch in .venv",
            file=sys.stderr,
        )
        return 2
    processes = args.processes or torch.cuda.device_count()
    plan = plan_check(args.steps, processes)
    command = launch.launch_command(plan.config_path, launcher=plan.launcher, processes=plan.processes, cuda=True)
    print(
        f"gpu_check: {DEFAULT_MODEL}, {args.steps} steps, {processes} process(es) on "
        f"{torch.cuda.get_device_name(0)}; {' '.join(command)}",
        flush=True,
    )
    log_path = plan.run_dir / run_plan.LOG_FILE
    monitor = PeakMemory()
    monitor.start()
    started = time.perf_counter()
    with log_path.open("w") as log:
        code = subprocess.call(
            command, env=launch.launch_env(os.environ, cpu_qlora_patch=False), stdout=log, stderr=subprocess.STDOUT
        )
    wall = time.perf_counter() - started
    monitor.stop()
    if code != 0:
        print(f"gpu_check: axolotl exited {code}; last lines of {log_path}:", file=sys.stderr)
        print(tail(log_path, 40, chars=None), file=sys.stderr)
        return code
    metrics = train_metrics.read_metrics(plan.run_dir)
    allocated = max(
        (r["memory/max_allocated (GiB)"] for r in metrics.train if "memory/max_allocated (GiB)" in r),
        default=float("nan"),
    )
    tokens = metrics.tokens_per_second or float("nan")
    attention = "flash attention" if plan.config.get("flash_attention") else "torch SDPA (no flash_attn)"
    print(
        "| model | GPUs | steps | seq | micro x accum | attention | tokens/s | peak allocated | peak nvidia-smi | wall |"
    )
    print("|---|---:|---:|---:|---|---|---:|---:|---:|---:|")
    print(
        f"| {DEFAULT_MODEL} | {processes} | {metrics.final_step} | {plan.config['sequence_len']} | "
        f"{plan.config['micro_batch_size']} x {plan.config['gradient_accumulation_steps']} | {attention} | "
        f"{tokens:,.0f} | {allocated:.2f} GiB | {monitor.peak_mib:,} MiB | {wall:.0f} s |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
