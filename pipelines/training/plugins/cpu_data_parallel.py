"""``CpuDataParallelPlugin``: data-parallel training on CPU (torchrun, gloo), which Axolotl
0.19 cannot do without it."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from axolotl.integrations.base import BasePlugin

LOG = logging.getLogger("axolotl.integrations.tunegate")  # under "axolotl": its log setup shows it


class CpuDataParallelPlugin(BasePlugin):
    """``plugins: [..., pipelines.training.plugins.cpu_data_parallel.CpuDataParallelPlugin]``: lets torchrun /
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
        LOG.info(
            f"tunegate: CPU data parallel, {state.distributed_type} over {state.backend}, "
            f"rank {state.process_index} of {state.num_processes}"
        )

    def pre_model_load(self, cfg: Any) -> None:
        if not self._applies() or not isinstance(cfg.device_map, dict):
            return
        for key, device in list(cfg.device_map.items()):
            if isinstance(device, int):
                cfg.device_map[key] = "cpu"
