"""Launching ``axolotl train``: ``axolotl train <yaml> --launcher python|torchrun|accelerate
[-- <launcher args>]`` (``training.launcher`` / ``training.processes``: the same YAML on 1 or N
processes) with a clean environment, the AVX512-BF16 QLoRA workaround on the child's
``PYTHONPATH`` on CPU, and resume from the newest checkpoint."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from pipelines.training.run_plan import (
    RESUME_CONFIG_FILE,
    RunPlan,
    check_launch,
    dump_config,
)

PATCH_DIR = Path(__file__).resolve().parent / "cpu_qlora_patch"


SUBPROCESS_ENV = {
    "AXOLOTL_DO_NOT_TRACK": "1",  # telemetry is on by default and retries a network host
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",  # line-by-line output, so the parent can stream it
}


# Any ACCELERATE_USE_* makes Axolotl drop its device map: strip inherited ones.
_STRIPPED_ENV_PREFIXES = ("ACCELERATE_USE_",)


def launch_env(
    base: dict[str, str] | os._Environ, *, cpu_qlora_patch: bool, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The training subprocess's environment: inherited, minus ACCELERATE_USE_*, plus the
    offline/no-telemetry variables and (QLoRA on CPU) the AVX512-BF16 workaround. This
    interpreter's ``bin`` goes first on PATH: Axolotl starts ``torchrun`` / ``accelerate`` by name."""
    env = {k: v for k, v in base.items() if not k.startswith(_STRIPPED_ENV_PREFIXES)}
    env.update(SUBPROCESS_ENV)
    env["PATH"] = os.pathsep.join(
        [str(Path(sys.executable).parent), *[p for p in env.get("PATH", "").split(os.pathsep) if p]]
    )
    for key, value in (extra or {}).items():
        if key.startswith(_STRIPPED_ENV_PREFIXES):
            raise ValueError(f"refusing to set {key}: Axolotl drops its device map when it is set")
        env[key] = value
    if cpu_qlora_patch:
        parts = [str(PATCH_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def axolotl_executable(executable: str = "") -> str:
    """The ``axolotl`` CLI next to this interpreter unless one is configured."""
    if executable:
        return executable
    candidate = Path(sys.executable).parent / "axolotl"
    return str(candidate) if candidate.exists() else "axolotl"


def launcher_args(launcher: str, processes: int, *, cuda: bool) -> list[str]:
    """Arguments for the launcher Axolotl starts (after ``--`` on its command line), in the
    launchers' own terms: ``torchrun --standalone --nproc_per_node N`` (a free rendezvous
    port, so two runs on one host do not collide); ``accelerate launch --num_processes N``
    (``--multi_gpu`` for N > 1)."""
    if launcher == "torchrun":
        return ["--standalone", "--nproc_per_node", str(processes)]
    if launcher == "accelerate":
        args = ["--num_processes", str(processes), "--num_machines", "1", "--dynamo_backend", "no"]
        return args + (["--multi_gpu"] if processes > 1 else []) + ([] if cuda else ["--cpu"])
    return []


def launch_command(
    config_path: Path, executable: str = "", *, launcher: str = "python", processes: int = 1, cuda: bool = False
) -> list[str]:
    """``axolotl train <yaml> --launcher <launcher> [-- <launcher args>]``: the same YAML runs
    on one process or data-parallel on N."""
    check_launch(launcher, processes, cuda=cuda)
    command = [axolotl_executable(executable), "train", str(config_path), "--launcher", launcher]
    extra = launcher_args(launcher, processes, cuda=cuda)
    return command + (["--", *extra] if extra else [])


def _checkpoint_step(path: Path) -> int:
    match = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return int(match.group(1)) if match else -1


def newest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint (one with trainer_state.json), if any."""
    if not output_dir.is_dir():
        return None
    candidates = [
        p
        for p in output_dir.iterdir()
        if p.is_dir() and _checkpoint_step(p) >= 0 and (p / "trainer_state.json").is_file()
    ]
    return max(candidates, key=_checkpoint_step, default=None)


def prepare_launch(plan: RunPlan) -> tuple[Path, Path | None]:
    """The YAML to launch and the checkpoint it resumes from (None: a fresh start).

    A rerun after a crash or kill continues from the newest checkpoint instead of
    starting over; the base YAML is untouched so its hash stays meaningful."""
    checkpoint = newest_checkpoint(plan.output_dir)
    if checkpoint is None:  # a fresh start: records of an attempt that saved nothing are void
        plan.metrics_path.unlink(missing_ok=True)
        return plan.config_path, None
    resume_cfg = {**plan.config, "resume_from_checkpoint": str(checkpoint)}
    path = plan.run_dir / RESUME_CONFIG_FILE
    path.write_text(dump_config(resume_cfg), encoding="utf-8")
    return path, checkpoint
