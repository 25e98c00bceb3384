"""Validation of a generated config with Axolotl's own schema before anything launches, plus
a check for keys the schema does not know: pydantic silently drops those, and Axolotl renames
keys between versions, so a typo would otherwise train with defaults."""

from __future__ import annotations

import copy
import difflib
from typing import Any

from pipelines.config.base import validation_problems
from pipelines.training.run_plan import AxolotlConfigError


def _known_keys(model_cls) -> set[str]:
    keys: set[str] = set()
    for name, info in model_cls.model_fields.items():
        keys.add(name)
        if info.alias:
            keys.add(info.alias)
    return keys


def _unknown_keys(data: dict[str, Any], known: set[str], where: str) -> list[str]:
    problems = []
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            problems.append(f"`{where}{key}`: not an Axolotl 0.19 config key{hint}")
    return problems


def validate_config(cfg: dict[str, Any], capabilities: tuple[dict, dict] | None = None) -> None:
    """Validate with Axolotl's own schema (the same call ``axolotl train`` makes), plus
    unknown-key detection. Raises ``AxolotlConfigError`` naming each bad key.
    ``capabilities``: Axolotl's ``(capabilities, env_capabilities)`` of the machine that will
    train (default: this one's, probed as ``axolotl train`` does), e.g. a GPU pod's."""
    if cfg.get("adapter") == "lora" and (cfg.get("load_in_4bit") or cfg.get("load_in_8bit")):
        raise AxolotlConfigError(
            "adapter: lora with load_in_4bit/load_in_8bit: true would still train on a quantised base; for a plain "
            "LoRA on the fp32 weights set both `adapter: lora` and `load_in_4bit: false` (e.g. in base_models.yaml "
            "axolotl_overrides), or keep `adapter: qlora`"
        )
    from axolotl.cli.config import gpu_capabilities
    from axolotl.integrations.base import PluginManager
    from axolotl.integrations.config import merge_input_args
    from axolotl.utils.config import prepare_plugins
    from axolotl.utils.config import validate_config as axolotl_validate
    from axolotl.utils.dict import DictDefault
    from axolotl.utils.schemas.datasets import SFTDataset
    from pydantic import ValidationError

    # As `axolotl train` does: register the plugins, whose input args extend the schema
    # (METRICS_FILE_KEY). Axolotl only logs a plugin that fails to import, then trains without it.
    prepare_plugins(DictDefault(copy.deepcopy(cfg)))
    registered = PluginManager.get_instance().plugins
    missing = [name for name in cfg.get("plugins") or [] if name not in registered]
    if missing:
        raise AxolotlConfigError(f"invalid Axolotl config: `plugins`: cannot import {missing}")
    _, input_config = merge_input_args()
    problems = _unknown_keys(cfg, _known_keys(input_config), "")
    dataset_keys = _known_keys(SFTDataset)
    for list_key in ("datasets", "test_datasets"):
        for index, entry in enumerate(cfg.get(list_key) or []):
            if isinstance(entry, dict):
                problems += _unknown_keys(entry, dataset_keys, f"{list_key}[{index}].")
    if problems:
        raise AxolotlConfigError("invalid Axolotl config: " + "; ".join(problems))
    capabilities, env_capabilities = capabilities or gpu_capabilities()
    try:
        axolotl_validate(
            DictDefault(copy.deepcopy(cfg)),
            capabilities=capabilities,
            env_capabilities=env_capabilities,
        )
    except ValidationError as exc:
        raise AxolotlConfigError("invalid Axolotl config: " + "; ".join(validation_problems(exc, quote="`"))) from exc
    except ValueError as exc:
        raise AxolotlConfigError(f"invalid Axolotl config: {exc}") from exc
