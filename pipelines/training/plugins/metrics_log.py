"""``MetricsLogPlugin``: the run's metrics, recorded from inside the Trainer, so the
"did it learn" guard judges what the run really logged, across resumes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from axolotl.integrations.base import BasePlugin
from pydantic import BaseModel
from transformers import TrainerCallback

from pipelines.training.train_metrics import metrics_record

LOG = logging.getLogger("axolotl.integrations.tunegate")  # under "axolotl": its log setup shows it


class MetricsLogArgs(BaseModel):
    """The plugin's config key (Axolotl merges it into its schema); tunegate sets it per run."""

    tunegate_metrics_file: str | None = None


class MetricsLogCallback(TrainerCallback):
    """Appends one JSON line per Trainer log event (train step, eval, final summary) with
    the optimizer step it belongs to, and one ``begin`` line per launch.

    Why not Axolotl's stdout or a checkpoint's ``trainer_state.json``: stdout has no step
    numbers and a resumed run prints only its own part; a checkpoint's state stops at its
    step, so after a kill and resume neither has the final eval next to the first one. This
    file is opened in append mode, so it spans every launch of the run; its reader keeps the
    latest record per (kind, step)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab", buffering=0) as handle:  # one write() per line: a kill cannot tear it
            handle.write((json.dumps(record) + "\n").encode())

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        counts: dict[str, Any] = {"num_input_tokens_seen": state.num_input_tokens_seen}
        if hasattr(model, "get_nb_trainable_parameters"):  # PEFT: counts 4-bit weights unpacked
            counts["trainable_params"], counts["all_params"] = model.get_nb_trainable_parameters()
        self._append(metrics_record(counts, step=state.global_step, epoch=state.epoch, kind="begin"))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and logs:
            self._append(metrics_record(logs, step=state.global_step, epoch=state.epoch))


class MetricsLogPlugin(BasePlugin):
    """``plugins: [pipelines.training.plugins.metrics_log.MetricsLogPlugin]`` plus ``tunegate_metrics_file``."""

    def get_input_args(self) -> str:
        return f"{__name__}.MetricsLogArgs"

    def add_callbacks_pre_trainer(self, cfg: Any, model: torch.nn.Module) -> list[TrainerCallback]:
        path = cfg.tunegate_metrics_file
        if not path:
            LOG.warning("tunegate: no tunegate_metrics_file in the config; metrics are not recorded")
            return []
        LOG.info(f"tunegate: recording metrics to {path}")
        return [MetricsLogCallback(path)]
