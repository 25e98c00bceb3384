"""The data assets end to end through Dagster, on a temporary sources.yaml with two sources,
and the training config built on them never seeing the held-out split."""

import json
import re
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from assets.data import build_dataset_assets, build_source_assets
from pipelines.common.jsonl import read_jsonl
from pipelines.config.base import ConfigError
from pipelines.config.paths import REPO_ROOT, default_sources_file
from pipelines.config.sources import load_sources
from pipelines.orchestration.resources import TunegateResource

SYSTEM = "Classify the support ticket."
LABELS = ["billing", "technical", "account", "shipping", "refund"]


def ticket(i: int) -> str:
    return f"Ticket {i}: my {LABELS[i % 5]} problem number {i * 7919} needs help with item {i * 31}."


def answer(i: int) -> str:
    return json.dumps({"category": LABELS[i % 5], "priority": "low"})


@pytest.fixture
def workspace(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    lines = [
        json.dumps({"messages": [{"role": "user", "content": ticket(i)}, {"role": "assistant", "content": answer(i)}]})
        for i in range(60)
    ]
    lines += [lines[0], "{not json"]  # an exact duplicate and a malformed row
    (data / "a.jsonl").write_text("\n".join(lines) + "\n")
    frame = pd.DataFrame(
        {
            "text": [ticket(i) for i in range(60, 100)] + [ticket(5), ""],
            "answer": [answer(i) for i in range(60, 100)] + [answer(6), answer(1)],
        }
    )
    frame.to_csv(data / "b.csv", index=False)
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"""
sources:
  - name: alpha
    kind: jsonl
    path: {data / "a.jsonl"}
    fields: {{messages: messages}}
    label: category
    system_prompt: "{SYSTEM}"
  - name: beta
    kind: csv
    path: {data / "b.csv"}
    fields: {{user: text, assistant: answer}}
    label: category
    system_prompt: "{SYSTEM}"
""")
    settings = tmp_path / "tunegate.yaml"
    settings.write_text("split: {eval_fraction: 0.1, min_eval: 10}\n")
    resource = TunegateResource(home=str(tmp_path / "home"), sources_file=str(sources), settings_file=str(settings))
    return load_sources(sources), resource


def materialize(specs, resource, **kwargs):
    return dg.materialize(
        [*build_source_assets(specs), *build_dataset_assets(specs)],
        resources={"tunegate": resource},
        instance=dg.DagsterInstance.ephemeral(),
        **kwargs,
    )


def test_materialize_data_assets(workspace):
    specs, resource = workspace
    result = materialize(specs, resource)
    assert result.success
    out = lambda *key: result.asset_value(dg.AssetKey(list(key)))  # noqa: E731
    assert {k: out("raw_pairs", "alpha")[k] for k in ("rows_in", "rows_kept", "rows_quarantined")} == {
        "rows_in": 62,
        "rows_kept": 61,
        "rows_quarantined": 1,
    }
    assert (out("raw_pairs", "beta")["rows_in"], out("raw_pairs", "beta")["rows_kept"]) == (42, 41)
    labeled = out("labeled_pairs")
    assert labeled["rows"] == 102 and labeled["per_source"] == {"alpha": 61, "beta": 41}
    quarantine = list(read_jsonl(resource.layout.quarantine_file))
    assert [(q["source"], q["reason"]) for q in quarantine] == [("alpha", "invalid_json"), ("beta", "empty_content")]

    deduped = out("deduped_pairs")
    assert (deduped["rows_in"], deduped["rows_out"], deduped["exact_duplicates"]) == (102, 100, 2)
    assert deduped["conflicts"] == 1  # ticket 5 in beta with ticket 6's answer
    # conflicts are part of the duplicates they belong to, and every source adds up on its own
    assert (deduped["exact_conflicts"], deduped["near_conflicts"]) == (1, 0)
    assert deduped["per_source"] == {
        "alpha": {"rows_in": 61, "exact": 1, "near": 0, "conflicts": 0, "rows_out": 60},
        "beta": {"rows_in": 41, "exact": 1, "near": 0, "conflicts": 1, "rows_out": 40},
    }
    audit = list(read_jsonl(deduped["audit_path"]))
    assert {(a["dropped_id"], a["kept_id"]) for a in audit} == {("alpha-61", "alpha-1"), ("beta-41", "alpha-6")}

    train, validation, held = out("train_set"), out("validation_set"), out("eval_set")
    assert train.rows + validation.rows + held.rows == 100 and held.rows >= 10
    assert validation.rows == 16  # the floor: 10 % of ~90 train rows is less
    assert train.fingerprint == validation.fingerprint == held.fingerprint
    for side in (train, validation, held):
        assert sum(side.labels.values()) == side.rows == len(list(read_jsonl(side.path)))
    ids = [{r["id"] for r in read_jsonl(side.path)} for side in (train, validation, held)]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    assert Path(validation.path) == resource.layout.validation_file
    example = next(read_jsonl(held.path))
    assert set(example) == {"id", "source", "messages", "label"}
    assert [m["role"] for m in example["messages"]] == ["system", "user", "assistant"]
    assert example["messages"][0]["content"] == SYSTEM

    meta = {
        e.materialization.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert meta["raw_pairs/alpha"]["rows_quarantined"].value == 1
    assert meta["deduped_pairs"]["near_duplicates"].value == 0
    assert meta["eval_set"]["contamination_pairs"].value == 0
    assert "| label | train | validation | eval |" in meta["eval_set"]["labels"].value
    assert meta["labeled_pairs"]["rows_beta"].value == 41
    by_reason = meta["labeled_pairs"]["quarantined_per_reason"].value
    assert "| source | invalid_json | empty_content | total |" in by_reason and "| beta | 0 | 1 | 1 |" in by_reason
    counts = meta["deduped_pairs"]["counts"].value
    assert "| dropped: exact duplicates | 2 | 1 |" in counts and "| out (kept) | 100 |" in counts
    assert "| beta | 41 | 1 | 0 | 1 | 40 |" in meta["deduped_pairs"]["dropped_per_source"].value
    assert "contamination_moved" in meta["eval_set"]["keys"].value

    again = materialize(specs, resource)  # same data, same split, same fingerprint
    assert again.asset_value(dg.AssetKey("train_set")).fingerprint == train.fingerprint


def test_missing_data_file_fails_naming_the_source(workspace, tmp_path):
    specs, resource = workspace
    (tmp_path / "data" / "b.csv").unlink()
    with pytest.raises(dg.Failure, match=r"source 'beta'.*not found.*fix `path:`"):
        materialize(specs, resource, selection=[dg.AssetKey(["raw_pairs", "beta"])])


def _check(result, asset: list[str], name: str):
    (evaluation,) = [
        e for e in result.get_asset_check_evaluations() if e.asset_key == dg.AssetKey(asset) and e.check_name == name
    ]
    return evaluation


def test_garbage_source_fails_its_blocking_reject_rate_check(workspace, tmp_path):
    specs, resource = workspace
    (tmp_path / "data" / "a.jsonl").write_text(
        '{"messages": []}\n{bad\n'
        + json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": answer(0)}]})
        + "\n"
    )
    result = materialize(specs, resource, raise_on_error=False)
    check = _check(result, ["raw_pairs", "alpha"], "reject_rate")
    assert not result.success and not check.passed
    assert re.search(r"source 'alpha' \(.*a.jsonl\): 2 of 3 rows \(67%\)", check.description)
    assert check.metadata["reject_rate"].value == pytest.approx(2 / 3)
    assert _check(result, ["raw_pairs", "beta"], "reject_rate").passed
    built = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "raw_pairs/alpha" in built and "labeled_pairs" not in built  # blocking: nothing downstream ran
    assert len(list(read_jsonl(resource.layout.source_quarantine_file("alpha")))) == 2  # kept for inspection


def test_misconfigured_sources_fail_at_load(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text(
        "sources:\n  - {name: a, kind: jsonl, path: x.jsonl, fields: {messages: m}}\n"
        "  - {name: a, kind: csv, path: y.csv, fields: {user: u, assistant: v}}\n"
    )
    with pytest.raises(ConfigError, match="duplicate source name 'a'"):
        load_sources(path)
    path.write_text("sources:\n  - {name: a, kind: xlsx, path: x, fields: {messages: m}}\n")
    with pytest.raises(ConfigError, match="source 'a'.*kind"):
        load_sources(path)


def test_definitions_have_one_asset_per_configured_source():
    from pipelines.orchestration.definitions import defs

    keys = {k.to_user_string() for k in defs().resolve_asset_graph().get_all_asset_keys()}
    expected = {f"raw_pairs/{s.name}" for s in load_sources(default_sources_file())}
    assert expected | {"labeled_pairs", "deduped_pairs", "train_set", "validation_set", "eval_set"} <= keys


def test_training_config_never_sees_the_held_out_split(workspace, tiny_registry):
    """The generated Axolotl YAML, and every file it points at, hold none of the eval
    split's rows: Axolotl trains on train.jsonl and evaluates on validation.jsonl."""
    import yaml

    from assets import models, training

    specs, resource = workspace
    assert dg.AssetKey("eval_set") not in set(training.axolotl_config.keys_by_input_name.values())
    resource = TunegateResource(
        home=resource.home,
        sources_file=resource.sources_file,
        settings_file=resource.settings_file,
        base_models_file=str(tiny_registry),
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("base_model", ["tiny-llama"])
    result = dg.materialize(
        [*build_source_assets(specs), *build_dataset_assets(specs), models.base_model, training.axolotl_config],
        resources={"tunegate": resource},
        instance=instance,
        partition_key="tiny-llama",
    )
    assert result.success
    held, validation, train = (result.asset_value(k) for k in ("eval_set", "validation_set", "train_set"))
    held_rows = list(read_jsonl(held.path))
    held_ids, held_prompts = {r["id"] for r in held_rows}, {r["messages"][1]["content"] for r in held_rows}
    assert held_ids and len(held_prompts) == len(held_rows)

    config = result.asset_value("axolotl_config")
    text = config.config_path.read_text()
    assert held.path not in text and Path(held.path).name not in text
    assert not [i for i in held_ids if i in text] and not [p for p in held_prompts if p in text]
    cfg = yaml.safe_load(text)
    assert [d["path"] for d in cfg["datasets"]] == [train.path]
    assert [d["path"] for d in cfg["test_datasets"]] == [validation.path]
    for entry in cfg["datasets"] + cfg["test_datasets"]:
        rows = list(read_jsonl(entry["path"]))
        assert rows and not {r["id"] for r in rows} & held_ids, entry["path"]
        assert not {r["messages"][1]["content"] for r in rows} & held_prompts, entry["path"]


def test_too_few_train_rows_for_a_validation_slice_fail_the_split(workspace, tmp_path):
    specs, resource = workspace
    (tmp_path / "tunegate.yaml").write_text("split: {eval_fraction: 0.97, min_eval: 10}\n")  # ~3 train rows
    with pytest.raises(dg.Failure, match=r"deduped.jsonl: 100 rows leave \d on the train side, too few"):
        materialize(specs, resource)


def test_quarantine_record_format_is_the_documented_one(workspace):
    """The README's quarantine format used to omit `detail`; a data engineer greps these keys."""
    specs, resource = workspace
    assert materialize(specs, resource, selection=[dg.AssetKey(["raw_pairs", "alpha"])]).success
    rows = list(read_jsonl(resource.layout.source_quarantine_file("alpha")))
    assert rows and all(list(r) == ["source", "file", "row", "reason", "detail", "raw"] for r in rows)
    readme = (REPO_ROOT / "README.md").read_text()
    assert "`{source, file, row, reason, detail, raw}`" in readme
    assert "`{source, row, reason, raw}`" not in readme


def test_empty_source_fails_its_blocking_check_unless_allowed(workspace, tmp_path):
    """A header-only export used to succeed with 0 rows: training data silently shrank."""
    specs, resource = workspace
    (tmp_path / "data" / "b.csv").write_text("text,answer\n")
    beta = [dg.AssetKey(["raw_pairs", "beta"])]
    failed = materialize(specs, resource, selection=beta, raise_on_error=False)
    check = _check(failed, ["raw_pairs", "beta"], "not_empty")
    assert not failed.success and not check.passed
    assert re.search(
        r"source 'beta': no rows: .*b.csv has a header \['text', 'answer'\] but no data rows.*"
        r"allow_empty: true",
        check.description,
    )
    allowed = [s.model_copy(update={"allow_empty": True}) if s.name == "beta" else s for s in specs]
    result = materialize(allowed, resource, selection=beta)
    assert result.success and result.asset_value(beta[0])["rows_in"] == 0
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert "allow_empty" in meta["empty_warning"].value


def test_make_data_materialises_only_the_data_assets_on_the_persistent_instance(
    workspace, tmp_path, monkeypatch, capsys
):
    """The data-only command: a persistent instance even without DAGSTER_HOME set by the user,
    and a misconfigured sources.yaml as one short message, exit 2."""
    from pipelines.orchestration import data

    specs, resource = workspace
    monkeypatch.setenv("TUNEGATE_SOURCES", resource.sources_file)
    monkeypatch.setenv("TUNEGATE_SETTINGS", resource.settings_file)
    monkeypatch.setenv("TUNEGATE_HOME", resource.home)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    assert data.main([]) == 0
    out = capsys.readouterr().out
    assert "quarantine.jsonl" in out and "make ui" in out
    assert resource.layout.train_file.is_file()
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        keys = {k.to_user_string() for k in instance.get_asset_keys()}
    assert keys == {
        "raw_pairs/alpha",
        "raw_pairs/beta",
        "labeled_pairs",
        "deduped_pairs",
        "train_set",
        "validation_set",
        "eval_set",
    }

    Path(resource.sources_file).write_text("sources:\n  - {name: a, kind: parqet, path: x, fields: {messages: m}}\n")
    assert data.main([]) == 2
    err = capsys.readouterr().err
    assert "source 'a': kind:" in err and "Traceback" not in err and len(err.splitlines()) <= 5
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "\ndata: " in makefile and "-m pipelines.orchestration.data" in makefile
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Adding a dataset source", 1)[1].split("\n## ", 1)[0]
    assert "make data" in section and "quarantine" in section


def test_code_location_warns_when_dagster_home_is_unset():
    """The Dagster CLI without DAGSTER_HOME writes to a throwaway instance: say so on load."""
    import os
    import subprocess
    import sys

    from pipelines.config.paths import REPO_ROOT

    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    load = "from pipelines.orchestration.definitions import defs; defs()"
    unset = subprocess.run(
        [sys.executable, "-c", load], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert unset.returncode == 0, unset.stderr
    assert "DAGSTER_HOME is not set" in unset.stderr
    set_ = subprocess.run(
        [sys.executable, "-c", load],
        cwd=REPO_ROOT,
        env={**env, "DAGSTER_HOME": str(REPO_ROOT / ".dagster")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "DAGSTER_HOME is not set" not in set_.stderr


def test_importing_the_code_location_reads_no_configuration(tmp_path):
    """Config is read once, when the definitions are built, from the files the resource names:
    importing every asset module and the definitions touches no YAML (missing files are fine),
    and building the definitions fails on the missing file, naming it."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "TUNEGATE_SETTINGS": str(tmp_path / "missing-settings.yaml"),
        "TUNEGATE_SOURCES": str(tmp_path / "missing-sources.yaml"),
        "DAGSTER_HOME": str(tmp_path),
    }
    code = (
        "import assets.data, assets.models, assets.training, assets.evaluation, assets.gate\n"
        "import pipelines.orchestration.definitions as d\n"
        "print('imported')\n"
        "d.defs()\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert "imported" in run.stdout, run.stderr
    assert run.returncode != 0 and "missing-sources.yaml: file not found" in run.stderr


def test_the_definitions_take_ladder_pool_and_cron_from_the_files_the_resource_names(workspace, tmp_path):
    from pipelines.orchestration.definitions import build_definitions

    _, resource = workspace
    Path(resource.settings_file).write_text(
        yaml.safe_dump(
            {
                "eval": {"ladder": [{"name": "only_zero_shot", "recipe": "zero_shot", "k": 0}]},
                "training": {"pool": "my_pool"},
                "schedule": {"cron": "0 4 * * 2"},
            }
        )
    )
    with dg.instance_for_test():
        defs = build_definitions(resource)
        keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
        assert "ladder/only_zero_shot" in keys and "ladder/retrieved_few_shot" not in keys
        assert {f"raw_pairs/{s.name}" for s in resource.sources()} <= keys
        assert defs.resolve_assets_def("qlora_adapter").op.pool == "my_pool"
        assert defs.resolve_schedule_def("weekly_retune_schedule").cron_schedule == "0 4 * * 2"
        checks = {(k.asset_key.to_user_string(), k.name) for k in defs.resolve_asset_graph().asset_check_keys}
    assert {
        ("raw_pairs/alpha", "reject_rate"),
        ("raw_pairs/alpha", "not_empty"),
        ("eval_set", "no_contamination"),
        ("eval_set", "disjoint_sides"),
        ("train_set", "fingerprint"),
        ("base_model", "tokenizer_check"),
    } <= checks
