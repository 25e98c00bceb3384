"""The whole chain on the tiny model: every real stage (sources, dataset, Axolotl QLoRA,
the merged candidate, promptfoo scoring of the ladder, the tuned model, general skills and
the champion, the gate), end to end through Dagster."""

from __future__ import annotations

import dagster as dg
import pytest

from pipelines.resources import TunegateResource

PARTITION = "tiny-llama"


def _tiny_chain_setup(tmp_path, tiny_registry, tickets: int = 40, partner: int = 25):
    """Sources with a few demo rows, settings for the tiny model, a small general suite."""
    import pandas as pd
    import yaml

    from pipelines.config import REPO_ROOT, load_sources
    from tests.test_training import TINY_OVERRIDES

    demo = REPO_ROOT / "data" / "demo"
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "tickets.jsonl").write_bytes(b"".join((demo / "tickets.jsonl").read_bytes().splitlines(True)[:tickets]))
    pd.read_csv(demo / "partner.csv").head(partner).to_csv(data / "partner.csv", index=False)
    shipped = {s.name: s for s in load_sources(REPO_ROOT / "sources.yaml")}
    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump({"sources": [
        {**shipped["tickets_jsonl"].model_dump(exclude_none=True), "path": str(data / "tickets.jsonl")},
        {**shipped["partner_csv"].model_dump(exclude_none=True), "path": str(data / "partner.csv")},
    ]}))
    general = tmp_path / "general.jsonl"
    general.write_bytes(b"".join((REPO_ROOT / "evals" / "general.jsonl").read_bytes().splitlines(True)[::12]))
    settings = tmp_path / "tunegate.yaml"
    # On the demo rows a learning rate of 0.05 throws the random model around (grad norms up
    # to 11), and the LoRA init differs run to run: eval loss moved from -3.6 % to +0.4 % over
    # 5 runs and failed one CI run; one epoch at 0.02 still failed a fresh clone (-0.2 %).
    # Three epochs at 0.01 stay calmer (grad norm <= 1.2) and fell 5.1 % and 5.8 %.
    overrides = {**TINY_OVERRIDES, "learning_rate": 0.01, "num_epochs": 3}
    settings.write_text(yaml.safe_dump({
        "split": {"eval_fraction": 0.2, "min_eval": 10},
        "training": {"overrides": overrides, "min_eval_loss_drop": 0.01},
        "eval": {"general_file": str(general), "general_max_new_tokens": 8},
    }))
    return TunegateResource(home=str(tmp_path / "out"), sources_file=str(sources),
                            base_models_file=str(tiny_registry), settings_file=str(settings))


def _materialize_chain(tunegate, instance):
    from assets import evaluation, models, promotion, training
    from assets.dataset import build_dataset_assets
    from assets.sources import build_source_assets
    from pipelines.resources import AxolotlResource, PromptfooResource

    specs = tunegate.sources()
    return dg.materialize(
        [*build_source_assets(specs), *build_dataset_assets(specs),
         *dg.load_assets_from_modules([training, models, evaluation, promotion])],
        instance=instance,
        partition_key=PARTITION,
        resources={"tunegate": tunegate, "axolotl": AxolotlResource(), "promptfoo": PromptfooResource(),
                   "pipes_subprocess_client": dg.PipesSubprocessClient()},
    )


@pytest.mark.slow
def test_full_chain_on_the_tiny_model_is_not_promoted(tmp_path, tiny_registry):
    """Every real stage, on a few demo rows and the random tiny model: it cannot beat the
    prompt-only baseline, so the gate records a "no" and nothing downstream runs."""
    tunegate = _tiny_chain_setup(tmp_path, tiny_registry)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("base_model", [PARTITION])
        result = _materialize_chain(tunegate, instance)
        assert result.success
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        for key in ("train_set", "eval_set", "base_model", "axolotl_config", "ladder/zero_shot",
                    "ladder/static_few_shot", "ladder/retrieved_few_shot", "baseline_scores", "qlora_adapter",
                    "base_as_trained", "tuned_model", "tuned_scores", "baseline_general_scores",
                    "base_as_trained_general_scores", "tuned_general_scores", "champion_scores", "gate_decision"):
            assert key in materialized, key
        assert "promoted_model" not in materialized  # ran, and yielded nothing: a "no"
        decision = result.asset_value("gate_decision")
        assert decision["promote"] is False
        assert decision["versus_baseline"]["n"] == result.asset_value("eval_set")["rows"]
        assert "DO NOT PROMOTE" in decision["report_md"] and "### Cost" in decision["report_md"]
        tuned = result.asset_value("tuned_scores")
        assert tuned["artefact"]["id"] == result.asset_value("tuned_model")["artefact"]["id"] == decision["candidate"]["id"]
        assert not tunegate.layout.registry_file.exists()
