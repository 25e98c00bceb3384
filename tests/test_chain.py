"""The promotion assets inside Dagster: a win writes the registry and merges the adapter,
a "no" is still a materialised decision with every downstream step skipped.

Upstream score and adapter assets are replaced by clearly named test doubles here; the
full-chain test at the bottom runs every real stage on the tiny model."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from assets.promotion import gate_decision, merged_model, promoted_model
from pipelines.partitions import base_model_partitions
from pipelines.resources import TunegateResource
from tests.test_gate import GENERAL_OK, paired

PARTITION = "tiny-llama"


def _double(name: str, value: dict) -> dg.AssetsDefinition:
    """A test double standing in for an upstream stage's asset, returning a fixed value."""

    @dg.asset(name=name, partitions_def=base_model_partitions, group_name="test_doubles")
    def _asset() -> dict:
        return value

    return _asset


@pytest.fixture
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A real (random, non-zero) PEFT LoRA adapter on the tiny model, so the merge is real."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    return out


def _materialize(tmp_path, tiny_registry, tiny_model_dir, adapter_dir, instance, outcome):
    baseline, tuned = outcome
    doubles = [
        _double("baseline_scores", baseline),
        _double("tuned_scores", tuned),
        _double("baseline_general_scores", GENERAL_OK[0]),
        _double("tuned_general_scores", GENERAL_OK[1]),
        _double("base_model", {"name": PARTITION, "path": str(tiny_model_dir), "source": str(tiny_model_dir),
                               "weights_sha256": "w"}),
        _double("qlora_adapter", {"adapter_dir": str(adapter_dir), "base_model_dir": str(tiny_model_dir),
                                  "load_in_4bit": True, "data_fingerprint": "data-fp", "config_hash": "cfg-hash"}),
    ]
    settings = tmp_path / "tunegate.yaml"
    settings.write_text("{}\n")
    resource = TunegateResource(home=str(tmp_path / "out"), base_models_file=str(tiny_registry),
                                settings_file=str(settings))
    result = dg.materialize(
        [*doubles, gate_decision, promoted_model, merged_model],
        instance=instance, partition_key=PARTITION, resources={"tunegate": resource},
    )
    assert result.success
    keys = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    return result, keys, resource


def _gate_metadata(result) -> dict:
    (mat,) = [m for m in result.asset_materializations_for_node("gate_decision")]
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def test_win_promotes_and_merges_then_a_rerun_must_beat_the_champion(
    tmp_path, tiny_registry, tiny_model_dir, adapter_dir
):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("base_model", [PARTITION])
        win = paired(both=5, only_tuned=12, only_base=1, neither=2)
        result, keys, resource = _materialize(tmp_path, tiny_registry, tiny_model_dir, adapter_dir, instance, win)
        assert {"gate_decision", "promoted_model", "merged_model"} <= keys
        meta = _gate_metadata(result)
        assert meta["promote"] is True and "Promoted" in meta["report"]
        registry = json.loads(resource.layout.registry_file.read_text())
        entry = registry["partitions"][PARTITION]
        assert entry["adapter_dir"] == str(adapter_dir)
        assert entry["data_fingerprint"] == "data-fp" and entry["config_hash"] == "cfg-hash"
        assert entry["scores"]["tuned"]["pass_rate"] == pytest.approx(0.85)
        merged = resource.layout.merged_model_dir("tiny-llama")
        assert (merged / "config.json").is_file() and (merged / "tokenizer.json").is_file()

        # the same scores again: the champion (itself) is not beaten, nothing new is promoted
        result, keys, _ = _materialize(tmp_path, tiny_registry, tiny_model_dir, adapter_dir, instance, win)
        assert "gate_decision" in keys and "promoted_model" not in keys and "merged_model" not in keys
        assert "does not beat the champion" in _gate_metadata(result)["reason"]
        assert len(json.loads(resource.layout.registry_file.read_text())["history"]) == 1


def test_a_no_is_recorded_and_skips_downstream(tmp_path, tiny_registry, tiny_model_dir, adapter_dir):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("base_model", [PARTITION])
        loss = paired(both=5, only_tuned=1, only_base=8, neither=6)
        result, keys, resource = _materialize(tmp_path, tiny_registry, tiny_model_dir, adapter_dir, instance, loss)
        assert "gate_decision" in keys
        assert "promoted_model" not in keys and "merged_model" not in keys
        skipped = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"}
        assert "merged_model" in skipped
        meta = _gate_metadata(result)
        assert meta["promote"] is False
        assert "DO NOT PROMOTE" in meta["report"] and meta["p_value"] > 0.9
        assert not resource.layout.registry_file.exists()
