"""tunegate's Axolotl plugins. ``TrimComputePlugin``: two savings of training compute that
leave the loss and every gradient unchanged. ``MetricsLogPlugin``: the run's metrics, recorded
from inside the Trainer (see the end of this module).

1. Run the LM head only at the positions that carry a label. With ``roles_to_train:
   [assistant]`` only the answer's tokens have a label (about 15 of the ~107 tokens of a demo
   chat), yet a causal LM computes 49,152-way logits and their log-softmax at every position:
   a fifth of each training step's FLOPs on SmolLM2-135M, and as much again in every eval
   pass. Hugging Face causal LMs take ``logits_to_keep`` (the sequence positions to compute
   logits for) and their loss takes ``shift_labels``; passing the positions that have a label
   in any row of the batch gives the same loss and gradients with the LM head run on those
   positions only. Models whose ``forward`` has no ``logits_to_keep`` are left as they are.
2. Stop the backward pass at the lowest layer that holds a trainable weight. Axolotl makes
   the input embeddings' output require grad for every adapter (``enable_input_require_grads``),
   which only reentrant gradient checkpointing needs; without checkpointing it makes autograd
   backpropagate through every frozen layer below the adapted ones. When LoRA adapts only the
   top layers (``peft_layers_to_transform``), the backward pass through the rest is wasted.

Axolotl loads them from the generated config's ``plugins:`` inside the training subprocess
(no Dagster here). The savings are measured by ``bench/trim_compute.py``."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from axolotl.integrations.base import BasePlugin
from pydantic import BaseModel
from transformers import TrainerCallback

from pipelines.axolotl import metrics_record

LOG = logging.getLogger("axolotl.integrations.tunegate")  # under "axolotl": its log setup shows it
IGNORE_INDEX = -100  # what Axolotl's collators put on unlabelled positions, and HF's loss ignores


def label_positions_forward(forward: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a causal LM's ``forward``: with labels, compute logits only where the next token
    is labelled. Without labels (generation), or when the caller already chose positions or
    shifted labels, it is the model's own forward."""

    @functools.wraps(forward)  # keeps the signature the Trainer inspects
    def wrapped(*args: Any, labels: torch.Tensor | None = None, logits_to_keep: Any = 0, **kwargs: Any) -> Any:
        if labels is None or "shift_labels" in kwargs or not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
            return forward(*args, labels=labels, logits_to_keep=logits_to_keep, **kwargs)
        # exactly what the model's ForCausalLMLoss does with `labels`: position t predicts t+1
        shift = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
        keep = (shift != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
        return forward(*args, labels=labels, logits_to_keep=keep, shift_labels=shift[:, keep].contiguous(), **kwargs)

    return wrapped


def keep_logits_at_labels(model: torch.nn.Module) -> bool:
    """Patch this model instance (not its class); False when the model cannot take it."""
    params = inspect.signature(model.forward).parameters
    if "logits_to_keep" not in params or not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return False
    model.forward = label_positions_forward(model.forward)
    return True


def stop_backward_at_adapter(model: torch.nn.Module) -> bool:
    """Undo Axolotl's ``enable_input_require_grads`` (True when there was a hook to remove)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "_require_grads_hooks", None):
        return False
    base.disable_input_require_grads()
    return True


class TrimComputePlugin(BasePlugin):
    """``plugins: [pipelines.axolotl_plugin.TrimComputePlugin]`` in an Axolotl config."""

    def post_model_build(self, cfg: Any, model: torch.nn.Module) -> None:
        name = type(model).__name__
        if keep_logits_at_labels(model):
            LOG.info(f"tunegate: {name} computes logits only at labelled positions")
        else:
            LOG.warning(f"tunegate: {name}.forward has no logits_to_keep; logits at every position")

    def post_model_load(self, cfg: Any, model: torch.nn.Module) -> None:
        if cfg.gradient_checkpointing:
            return  # reentrant checkpointing needs inputs that require grad: keep Axolotl's hook
        if stop_backward_at_adapter(model):
            LOG.info("tunegate: the backward pass stops at the lowest adapted layer")


# --------------------------------------------------------------------------- metrics
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
    """``plugins: [pipelines.axolotl_plugin.MetricsLogPlugin]`` plus ``tunegate_metrics_file``."""

    def get_input_args(self) -> str:
        return f"{__name__}.MetricsLogArgs"

    def add_callbacks_pre_trainer(self, cfg: Any, model: torch.nn.Module) -> list[TrainerCallback]:
        path = cfg.tunegate_metrics_file
        if not path:
            LOG.warning("tunegate: no tunegate_metrics_file in the config; metrics are not recorded")
            return []
        LOG.info(f"tunegate: recording metrics to {path}")
        return [MetricsLogCallback(path)]


# --------------------------------------------------------------------------- data parallel on CPU
class CpuDataParallelPlugin(BasePlugin):
    """``plugins: [..., pipelines.axolotl_plugin.CpuDataParallelPlugin]``: lets torchrun /
    accelerate run Axolotl data-parallel on CPU processes (torch.distributed over gloo).
    tunegate adds it only to CPU runs with more than one process. Two gaps in Axolotl 0.19
    on a machine without CUDA, each measured with 2 processes:

    1. accelerate's process-wide state is built without ``cpu=True`` (Axolotl's early
       ``PartialState()``, then the Trainer's ``Accelerator`` after Axolotl resets it): on CPU
       that is ``DistributedType.NO``, so every process trains alone on the whole dataset
       (both log as rank 0, with different losses). ``ACCELERATE_USE_CPU=true``, what
       ``accelerate launch --cpu`` sets, makes the Trainer's state ``MULTI_CPU`` over gloo;
       ``register`` runs first (when the config's plugins load) and sets it in-process,
       then builds the early state the same way.
    2. ``normalize_config`` sets ``device_map = {"": LOCAL_RANK}`` whenever ``WORLD_SIZE > 1``,
       and loading onto "device 1" fails in transformers with ``RuntimeError: Cannot access
       accelerator device when none is available``. The loader has already copied that very
       dict into its ``from_pretrained`` kwargs when ``pre_model_load`` runs, so it is
       repointed in place to ``"cpu"``."""

    @staticmethod
    def _applies() -> bool:
        return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1

    def register(self, cfg: Any) -> None:
        if not self._applies():
            return
        from accelerate import PartialState

        os.environ["ACCELERATE_USE_CPU"] = "true"
        state = PartialState(cpu=True)
        LOG.info(f"tunegate: CPU data parallel, {state.distributed_type} over {state.backend}, "
                 f"rank {state.process_index} of {state.num_processes}")

    def pre_model_load(self, cfg: Any) -> None:
        if not self._applies() or not isinstance(cfg.device_map, dict):
            return
        for key, device in list(cfg.device_map.items()):
            if isinstance(device, int):
                cfg.device_map[key] = "cpu"
