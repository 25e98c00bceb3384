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


def test_training_is_skipped_when_the_baseline_meets_the_target(tmp_path, tiny_registry):
    """The seed's rule: prove the prompt can't do it before paying for training."""
    from assets.training import qlora_adapter
    from pipelines.resources import AxolotlResource

    baseline = paired(both=18, only_tuned=0, only_base=1, neither=1)[0]  # 95 % pass
    baseline["target_pass_rate"] = 0.9

    @dg.asset(name="tuned_scores", partitions_def=base_model_partitions, group_name="test_doubles")
    def downstream_double(qlora_adapter: dict) -> dict:
        """Test double for the evaluation of the tuned model."""
        return qlora_adapter

    settings = tmp_path / "tunegate.yaml"
    settings.write_text("{}\n")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("base_model", [PARTITION])
        result = dg.materialize(
            [
                _double("baseline_scores", baseline),
                _double("axolotl_config", {"plan": {}}),
                _double("base_model", {"name": PARTITION}),
                qlora_adapter,
                downstream_double,
            ],
            instance=instance,
            partition_key=PARTITION,
            resources={
                "tunegate": TunegateResource(home=str(tmp_path / "out"), base_models_file=str(tiny_registry),
                                             settings_file=str(settings)),
                "axolotl": AxolotlResource(),
                "pipes_subprocess_client": dg.PipesSubprocessClient(),
            },
        )
        assert result.success
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert "qlora_adapter" not in materialized and "tuned_scores" not in materialized
        assert "tuned_scores" in {e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"}
        (observation,) = [
            e.event_specific_data.asset_observation
            for e in result.all_events
            if e.event_type_value == "ASSET_OBSERVATION"
        ]
        assert "no fine-tune needed" in observation.metadata["skipped"].value


@pytest.mark.slow
def test_full_chain_on_the_tiny_model_is_not_promoted(tmp_path, tiny_registry):
    """Every real stage, on a few demo rows and the random tiny model: it cannot beat the
    prompt-only baseline, so the gate records a "no" and nothing downstream runs."""
    import pandas as pd
    import yaml

    from assets import evaluation, promotion, training
    from assets.dataset import build_dataset_assets
    from assets.sources import build_source_assets
    from pipelines.config import REPO_ROOT, load_sources
    from pipelines.resources import AxolotlResource, PromptfooResource
    from tests.test_training import TINY_OVERRIDES

    demo = REPO_ROOT / "data" / "demo"
    data = tmp_path / "data"
    data.mkdir()
    (data / "tickets.jsonl").write_bytes(b"".join((demo / "tickets.jsonl").read_bytes().splitlines(True)[:40]))
    pd.read_csv(demo / "partner.csv").head(25).to_csv(data / "partner.csv", index=False)
    shipped = {s.name: s for s in load_sources(REPO_ROOT / "sources.yaml")}
    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump({"sources": [
        {**shipped["tickets_jsonl"].model_dump(exclude_none=True), "path": str(data / "tickets.jsonl")},
        {**shipped["partner_csv"].model_dump(exclude_none=True), "path": str(data / "partner.csv")},
    ]}))
    settings = tmp_path / "tunegate.yaml"
    settings.write_text(yaml.safe_dump({
        "split": {"eval_fraction": 0.2, "min_eval": 10},
        "training": {"overrides": TINY_OVERRIDES, "min_eval_loss_drop": 0.01},
        "eval": {"few_shot_k": 1},
    }))
    specs = load_sources(sources)
    tunegate = TunegateResource(home=str(tmp_path / "out"), sources_file=str(sources),
                                base_models_file=str(tiny_registry), settings_file=str(settings))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("base_model", [PARTITION])
        result = dg.materialize(
            [*build_source_assets(specs), *build_dataset_assets(specs),
             *dg.load_assets_from_modules([training, evaluation, promotion])],
            instance=instance,
            partition_key=PARTITION,
            resources={"tunegate": tunegate, "axolotl": AxolotlResource(), "promptfoo": PromptfooResource(),
                       "pipes_subprocess_client": dg.PipesSubprocessClient()},
        )
        assert result.success
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        for key in ("train_set", "eval_set", "base_model", "axolotl_config", "baseline_scores", "qlora_adapter",
                    "tuned_scores", "baseline_general_scores", "tuned_general_scores", "gate_decision"):
            assert key in materialized, key
        assert "promoted_model" not in materialized and "merged_model" not in materialized
        assert "merged_model" in {e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"}
        decision = result.asset_value("gate_decision")
        assert decision["promote"] is False
        assert decision["pairing"]["n"] == result.asset_value("eval_set")["rows"]
        assert "DO NOT PROMOTE" in decision["report_md"]
        assert not tunegate.layout.registry_file.exists()
