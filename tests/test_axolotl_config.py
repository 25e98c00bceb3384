"""Config generation, validation, run identity, launch environment, the metrics file and the
"did it learn" guard of the training stage (pipelines/training/run_plan.py). No model runs here;
Axolotl's schema is imported."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.common import files
from pipelines.config.base_models import BaseModelSpec
from pipelines.config.paths import Layout
from pipelines.config.training import TrainingSettings
from pipelines.training import adapter, axolotl_schema, done_marker, guard, launch, run_plan, train_metrics
from tests.cards import adapter_record

FIXTURES = Path(__file__).parent / "fixtures"
TRAIN = FIXTURES / "chat_train.jsonl"
VALIDATION = FIXTURES / "chat_eval.jsonl"  # stands in for the validation slice of train


def _spec(name: str = "tiny-llama", **kw) -> BaseModelSpec:
    return BaseModelSpec(name=name, source="/nonexistent", **kw)


def _plan(
    tmp_path: Path,
    model_dir: Path,
    spec: BaseModelSpec | None = None,
    *,
    home: Path | None = None,
    overrides: dict | None = None,
    fingerprint: str = "f" * 64,
    sha: str = "a" * 64,
    train: Path = TRAIN,
    validation: Path = VALIDATION,
    cuda: bool = False,
) -> run_plan.RunPlan:
    return run_plan.plan_run(
        Layout(home or tmp_path / "home"),
        spec or _spec(),
        TrainingSettings(overrides=overrides or {}),
        base_model_dir=model_dir,
        base_model_sha256=sha,
        train_path=train,
        validation_path=validation,
        data_fingerprint=fingerprint,
        cuda=cuda,
    )


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """Only the tokenizer files matter for planning (they key the prepared-dataset cache)."""
    path = tmp_path / "model"
    path.mkdir()
    (path / "tokenizer.json").write_text('{"model": "v1"}')
    (path / "tokenizer_config.json").write_text("{}")
    (path / "config.json").write_text("{}")
    return path


# --------------------------------------------------------------------------- merging
def _templates(tmp_path: Path, base: dict, cpu: dict, gpu: dict | None = None) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / run_plan.BASE_TEMPLATE).write_text(yaml.safe_dump(base))
    (folder / run_plan.CPU_OVERLAY).write_text(yaml.safe_dump(cpu))
    (folder / run_plan.GPU_OVERLAY).write_text(yaml.safe_dump(gpu or {}))
    return folder


def test_merge_order_template_cpu_registry_settings(tmp_path):
    folder = _templates(
        tmp_path,
        base={"lora_r": 16, "learning_rate": 1e-3, "bf16": "auto", "warmup_ratio": 0.1, "trl": {"beta": 1, "x": 2}},
        cpu={"bf16": False, "lora_r": 12},
        gpu={"sequence_len": 2048},
    )
    spec = _spec(axolotl_overrides={"lora_r": 8, "learning_rate": 5e-4, "trl": {"beta": 3}})
    settings = TrainingSettings(overrides={"lora_r": 4, "warmup_ratio": None})
    cfg = run_plan.training_config(spec, settings, cuda=False, template_dir=folder)
    assert cfg["lora_r"] == 4  # settings beat registry beat cpu beat template
    assert cfg["learning_rate"] == 5e-4  # registry beats template
    assert cfg["bf16"] is False  # cpu overlay beats template
    assert cfg["trl"] == {"beta": 3, "x": 2}  # mappings merge key by key
    assert "warmup_ratio" not in cfg  # None unsets a template default
    assert cfg["eot_tokens"] == ["<|im_end|>"] and cfg["chat_template"] == "tokenizer_default"

    on_gpu = run_plan.training_config(spec, TrainingSettings(), cuda=True, template_dir=folder)
    assert on_gpu["bf16"] == "auto"  # no CPU overlay with CUDA
    assert on_gpu["sequence_len"] == 2048 and "sequence_len" not in cfg  # the GPU profile, only with CUDA


def test_shipped_templates_have_the_cpu_keys_and_qlora_defaults():
    cfg = run_plan.training_config(_spec(), TrainingSettings(), cuda=False)
    assert cfg["adapter"] == "qlora" and cfg["load_in_4bit"] is True
    for key in (
        "bf16",
        "fp16",
        "tf32",
        "flash_attention",
        "sample_packing",
        "dataloader_pin_memory",
        "lora_mlp_kernel",
        "lora_qkv_kernel",
        "lora_o_kernel",
        "lora_embedding_kernel",
    ):
        assert cfg[key] is False, key
    assert cfg["val_set_size"] == 0 and cfg["test_datasets"], "eval must come from OUR validation slice"
    assert cfg["datasets"][0]["roles_to_train"] == ["assistant"]
    assert cfg["sequence_len"] == 256 and cfg["micro_batch_size"] == 8
    assert cfg["gradient_accumulation_steps"] == 1 and cfg["num_epochs"] == 1
    assert cfg["eval_strategy"] == "epoch" and "eval_steps" not in cfg
    assert cfg["plugins"] == ["pipelines.training.plugins.trim_compute.TrimComputePlugin", run_plan.METRICS_PLUGIN]
    gpu = run_plan.training_config(_spec(), TrainingSettings(), cuda=True)
    assert "lora_qkv_kernel" not in gpu and gpu["bf16"] is True  # gpu.yaml, not cpu.yaml


def test_run_specific_keys_are_refused_in_overrides():
    with pytest.raises(run_plan.AxolotlConfigError, match="`output_dir` is set per run"):
        run_plan.training_config(_spec(), TrainingSettings(overrides={"output_dir": "/elsewhere"}), cuda=False)
    with pytest.raises(run_plan.AxolotlConfigError, match="axolotl_overrides: `base_model`"):
        run_plan.training_config(_spec(axolotl_overrides={"base_model": "x"}), TrainingSettings(), cuda=False)
    with pytest.raises(run_plan.AxolotlConfigError, match="`tunegate_metrics_file` is set per run"):
        run_plan.training_config(_spec(), TrainingSettings(overrides={"tunegate_metrics_file": "/x"}), cuda=False)


def test_a_config_without_the_metrics_plugin_is_refused(tmp_path, model_dir):
    """Overrides replace lists whole: dropping the plugin would leave the guard blind."""
    with pytest.raises(
        run_plan.AxolotlConfigError, match="must include pipelines.training.plugins.metrics_log.MetricsLogPlugin"
    ):
        _plan(tmp_path, model_dir, overrides={"plugins": ["pipelines.training.plugins.trim_compute.TrimComputePlugin"]})


def test_odd_strings_survive_safe_dump(tmp_path, model_dir):
    odd = "Answer: {\"a\": 1}\n- not a list item\n# not a comment\n'quotes' & *anchors* %s {{ jinja }}"
    weird_dir = tmp_path / "data: #1 'x'"
    weird_dir.mkdir()
    train, validation = weird_dir / "train set.jsonl", weird_dir / "validation: set.jsonl"
    train.write_text(TRAIN.read_text())
    validation.write_text(VALIDATION.read_text())
    plan = _plan(
        tmp_path,
        model_dir,
        overrides={"chat_template": "jinja", "chat_template_jinja": odd},
        train=train,
        validation=validation,
    )
    path = run_plan.write_config(plan)
    loaded = yaml.safe_load(path.read_text())
    assert loaded == plan.config
    assert loaded["chat_template_jinja"] == odd
    assert loaded["datasets"][0]["path"] == str(train)
    assert loaded["test_datasets"][0]["path"] == str(validation)
    assert loaded["tunegate_metrics_file"] == str(plan.metrics_path)


# --------------------------------------------------------------------------- identity
def test_config_hash_ignores_paths_and_run_key_tracks_inputs(tmp_path, model_dir):
    a = _plan(tmp_path, model_dir, home=tmp_path / "a")
    b = _plan(tmp_path, model_dir, home=tmp_path / "b")
    assert a.config_hash == b.config_hash and a.run_key == b.run_key  # machine-independent
    assert a.config["output_dir"] != b.config["output_dir"]
    assert _plan(tmp_path, model_dir, overrides={"learning_rate": 1e-4}).config_hash != a.config_hash
    assert _plan(tmp_path, model_dir, fingerprint="0" * 64).run_key != a.run_key  # new data retrains
    assert _plan(tmp_path, model_dir, sha="b" * 64).run_key != a.run_key  # new weights retrain
    (model_dir / "tokenizer.json").write_text('{"model": "v2"}')  # a tokenizer fix, same weights
    assert _plan(tmp_path, model_dir, home=tmp_path / "a").run_key != a.run_key  # retrains
    assert _plan(tmp_path, model_dir, overrides={"num_epochs": 2}).run_dir != a.run_dir


def test_two_partitions_never_share_a_run_dir(tmp_path, model_dir):
    one = _plan(tmp_path, model_dir, _spec("org/model-a"))
    two = _plan(tmp_path, model_dir, _spec("org/model-b"))
    assert one.run_dir != two.run_dir
    assert one.run_dir.parent.name == "org--model-a" and two.run_dir.parent.name == "org--model-b"
    assert one.config["output_dir"].startswith(str(one.run_dir))


def test_prepared_dataset_cache_is_keyed_by_tokenizer_and_data(tmp_path, model_dir):
    """Axolotl keys its tokenised copy by file path: new rows in train.jsonl at the same path
    (say, after the validation slice left it) must not reuse the old tokenisation."""
    before = _plan(tmp_path, model_dir)
    (model_dir / "tokenizer.json").write_text('{"model": "v2"}')
    after = _plan(tmp_path, model_dir)
    assert before.config["dataset_prepared_path"] != after.config["dataset_prepared_path"]
    assert before.config_hash == after.config_hash
    new_data = _plan(tmp_path, model_dir, fingerprint="0" * 64)
    assert new_data.config["dataset_prepared_path"] != after.config["dataset_prepared_path"]
    assert new_data.config["datasets"][0]["path"] == after.config["datasets"][0]["path"]  # same path


def test_a_template_without_test_datasets_is_refused(tmp_path, model_dir):
    with pytest.raises(run_plan.AxolotlConfigError, match="no `test_datasets` entry"):
        _plan(tmp_path, model_dir, overrides={"test_datasets": None})


def test_plan_round_trips_through_the_asset_value(tmp_path, model_dir):
    """``axolotl_config``'s value is the plan itself; Dagster's IO manager pickles it."""
    plan = _plan(tmp_path, model_dir)
    assert pickle.loads(pickle.dumps(plan)) == plan


def test_validation_must_be_disjoint_from_train(tmp_path):
    run_plan.assert_disjoint(TRAIN, VALIDATION)
    leaky = tmp_path / "validation.jsonl"
    leaky.write_text(VALIDATION.read_text() + TRAIN.read_text().splitlines()[0] + "\n")
    with pytest.raises(run_plan.AxolotlConfigError, match="train-000.*trained on"):
        run_plan.assert_disjoint(TRAIN, leaky)
    with pytest.raises(run_plan.AxolotlConfigError, match="same file"):
        run_plan.assert_disjoint(TRAIN, TRAIN)


# --------------------------------------------------------------------------- validation
def test_generated_config_passes_axolotl_schema(tmp_path, model_dir):
    """Including the metrics plugin's own key, which only its input args make known."""
    cfg = _plan(tmp_path, model_dir).config
    assert cfg[run_plan.METRICS_FILE_KEY].endswith("/" + run_plan.METRICS_FILE)
    axolotl_schema.validate_config(cfg)


def test_mlflow_tracking_is_axolotls_own_and_outside_the_config_hash(tmp_path, model_dir):
    """Axolotl's MLflow keys go in the generated YAML; like the paths, they are run-specific,
    so the same training on another tracking server is the same run (no retrain)."""
    from pipelines.common import tracking

    keys = tracking.axolotl_keys(tracking.Store("http://127.0.0.1:5000"), "tunegate-triage", "train @ tiny-llama")
    plain = _plan(tmp_path, model_dir)
    tracked = run_plan.plan_run(
        Layout(tmp_path / "home"),
        _spec(),
        TrainingSettings(),
        base_model_dir=model_dir,
        base_model_sha256="a" * 64,
        train_path=TRAIN,
        validation_path=VALIDATION,
        data_fingerprint="f" * 64,
        cuda=False,
        tracking_keys=keys,
    )
    assert tracked.config_hash == plain.config_hash and tracked.run_key == plain.run_key
    assert {k: tracked.config[k] for k in keys} == keys and "use_mlflow" not in plain.config
    axolotl_schema.validate_config(tracked.config)  # Axolotl's schema knows every key
    written = yaml.safe_load(Path(run_plan.write_config(tracked)).read_text())
    assert written["use_mlflow"] is True and written["mlflow_tracking_uri"] == "http://127.0.0.1:5000"
    assert written["mlflow_experiment_name"] == "tunegate-triage" and written["mlflow_run_name"] == "train @ tiny-llama"
    env = tracking.tags_env(tracking.tags(run_key=tracked.run_key, partition="tiny-llama"))
    assert json.loads(env["MLFLOW_TAGS"]) == {"tunegate.partition": "tiny-llama", "tunegate.run_key": tracked.run_key}


def test_a_plugin_that_does_not_import_is_named(tmp_path, model_dir):
    cfg = _plan(tmp_path, model_dir).config
    cfg["plugins"] = [*cfg["plugins"], "pipelines.no_such_module.Plugin"]
    with pytest.raises(
        run_plan.AxolotlConfigError, match=r"`plugins`: cannot import \['pipelines.no_such_module.Plugin'\]"
    ):
        axolotl_schema.validate_config(cfg)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"learning_rat": 1e-4}, r"`learning_rat`: not an Axolotl 0.19 config key \(did you mean `learning_rate`\?\)"),
        ({"bnb_4bit_compute_dtype": "bfloat16"}, r"`bnb_4bit_compute_dtype`: not an Axolotl 0.19 config key"),
        ({"micro_batch_size": "four"}, r"`micro_batch_size`: Input should be a valid integer"),
        ({"eval_steps": 5}, r"eval_strategy and eval_steps mismatch"),
        ({"lora_dropout": "high"}, r"`lora_dropout`: Input should be a valid number"),
    ],
)
def test_invalid_config_names_key_and_reason(tmp_path, model_dir, overrides, expected):
    with pytest.raises(run_plan.AxolotlConfigError, match=expected):
        axolotl_schema.validate_config(_plan(tmp_path, model_dir, overrides=overrides).config)


def test_unknown_dataset_key_is_named_with_its_position(tmp_path, model_dir):
    cfg = _plan(tmp_path, model_dir).config
    cfg["datasets"][0]["field_message"] = cfg["datasets"][0].pop("field_messages")
    with pytest.raises(
        run_plan.AxolotlConfigError, match=r"`datasets\[0\]\.field_message`.*did you mean `field_messages`"
    ):
        axolotl_schema.validate_config(cfg)


# --------------------------------------------------------------------------- launch
def test_launch_env_is_clean_and_offline():
    base = {
        "PATH": "/usr/bin",
        "ACCELERATE_USE_CPU": "true",
        "ACCELERATE_USE_FSDP": "1",
        "PYTHONPATH": "/x",
        "WANDB_MODE": "online",
    }
    env = launch.launch_env(base, cpu_qlora_patch=True, extra={"MY_FLAG": "1"})
    assert not [k for k in env if k.startswith("ACCELERATE_USE_")]
    for key, value in launch.SUBPROCESS_ENV.items():
        assert env[key] == value
    assert env["PYTHONPATH"].split(":") == [str(launch.PATCH_DIR), "/x"]
    assert env["MY_FLAG"] == "1"
    assert env["PATH"].split(":") == [str(Path(sys.executable).parent), "/usr/bin"]  # torchrun/accelerate by name
    assert "PYTHONPATH" not in launch.launch_env({}, cpu_qlora_patch=False)
    with pytest.raises(ValueError, match="ACCELERATE_USE_CPU"):
        launch.launch_env({}, cpu_qlora_patch=False, extra={"ACCELERATE_USE_CPU": "1"})


def test_launch_command_uses_the_python_launcher(tmp_path):
    cmd = launch.launch_command(tmp_path / "axolotl.yaml")
    assert Path(cmd[0]).name == "axolotl" and cmd[1:] == [
        "train",
        str(tmp_path / "axolotl.yaml"),
        "--launcher",
        "python",
    ]


@pytest.mark.parametrize("patched", [True, False])
def test_patch_is_loaded_by_the_training_subprocess(patched):
    """The workaround reaches the child only through PYTHONPATH (sitecustomize), and only
    when asked for; it patches bitsandbytes lazily, on import."""
    code = (
        "import sys; assert 'bitsandbytes' not in sys.modules\n"
        "import bitsandbytes.nn.modules as m\n"
        "print(getattr(m.Linear4bit.__init__, '_tunegate_no_avx512bf16_repack', False))"
    )
    env = launch.launch_env({"PATH": "/usr/bin:/bin"}, cpu_qlora_patch=patched)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == str(patched)


def test_resume_from_newest_complete_checkpoint(tmp_path, model_dir):
    plan = _plan(tmp_path, model_dir)
    run_plan.write_config(plan)
    assert launch.prepare_launch(plan) == (plan.config_path, None)
    for step, complete in ((2, True), (10, True), (12, False)):  # 12: killed mid-save
        ckpt = plan.output_dir / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        if complete:
            (ckpt / "trainer_state.json").write_text("{}")
    path, checkpoint = launch.prepare_launch(plan)
    assert checkpoint == plan.output_dir / "checkpoint-10"
    resumed = yaml.safe_load(path.read_text())
    assert resumed["resume_from_checkpoint"] == str(checkpoint)
    assert resumed[run_plan.METRICS_FILE_KEY] == str(plan.metrics_path)
    assert "resume_from_checkpoint" not in yaml.safe_load(plan.config_path.read_text())


def test_a_resume_keeps_the_metrics_and_a_fresh_start_drops_them(tmp_path, model_dir):
    plan = _plan(tmp_path, model_dir)
    run_plan.write_config(plan)
    plan.metrics_path.write_text('{"kind": "train", "step": 1, "loss": 2.0}\n')
    (plan.output_dir / "checkpoint-1").mkdir(parents=True)
    (plan.output_dir / "checkpoint-1" / "trainer_state.json").write_text("{}")
    launch.prepare_launch(plan)
    assert plan.metrics_path.is_file()  # the steps before the checkpoint are only in there
    shutil.rmtree(plan.output_dir)
    launch.prepare_launch(plan)
    assert not plan.metrics_path.exists()  # a killed attempt that saved nothing: void


def test_cache_hit_only_for_a_marked_complete_adapter(tmp_path):
    run_dir = tmp_path / "run"
    adapter = run_dir / run_plan.OUTPUT_SUBDIR
    adapter.mkdir(parents=True)
    assert done_marker.completed_run(run_dir) is None  # nothing yet
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"x")
    assert done_marker.completed_run(run_dir) is None  # trained, but not marked: guard not passed
    done_marker.mark_done(run_dir, adapter_record(str(adapter), eval_loss_last=0.1))
    assert done_marker.completed_run(run_dir) is None  # no metrics to show for it
    (run_dir / run_plan.METRICS_FILE).write_text("")
    assert done_marker.completed_run(run_dir).eval_loss_last == 0.1
    (adapter / "adapter_model.safetensors").unlink()
    assert done_marker.completed_run(run_dir) is None  # marker without weights is not a hit
    (adapter / "adapter_model.safetensors").write_bytes(b"x")
    (run_dir / done_marker.DONE_MARKER).write_text('{"adapter_dir": "x"}')  # an older or damaged marker
    assert done_marker.completed_run(run_dir) is None  # does not parse: retrain, never crash


# --------------------------------------------------------------------------- metrics
def test_split_output_separates_tqdm_redraws():
    text = "a\r 50%|##  | 1/2\r{'loss': '1.5', 'epoch': '0.5'}\nb\n\n"
    assert files.split_output(text) == ["a", " 50%|##  | 1/2", "{'loss': '1.5', 'epoch': '0.5'}", "b"]
    assert files.split_output(text, redraws=False) == ["{'loss': '1.5', 'epoch': '0.5'}", "b"]


def _rec(kind: str, step: int, **values) -> dict:
    return train_metrics.metrics_record(values, step=step, epoch=step / 12, kind=kind)


def _killed_and_resumed() -> list[dict]:
    """What MetricsLogPlugin appends for a 12-step run (evals at 0, 6, 12) killed after step
    8, then resumed from checkpoint-5: steps 6..8 and the eval at 6 are logged twice."""
    first = [
        _rec("begin", 0, num_input_tokens_seen=0, trainable_params=100, all_params=1000),
        _rec("eval", 0, eval_loss=4.0),
    ]
    first += [
        _rec("train", s, loss=4.0 - 0.1 * s, learning_rate=1e-3, num_input_tokens_seen=256 * s) for s in range(1, 9)
    ]
    first.insert(8, _rec("eval", 6, eval_loss=2.5))
    resumed = [_rec("begin", 5, num_input_tokens_seen=1280, trainable_params=100, all_params=1000)]
    resumed += [
        _rec("train", s, loss=3.0 - 0.2 * s, learning_rate=1e-3, num_input_tokens_seen=256 * s) for s in range(6, 13)
    ]
    resumed.insert(2, _rec("eval", 6, eval_loss=2.4))
    resumed += [
        _rec("eval", 12, eval_loss=0.5),
        _rec("summary", 12, train_runtime=10.0, train_loss=1.0, num_input_tokens_seen=3072),
    ]
    return first + resumed


def test_metrics_keep_the_latest_record_per_step_across_a_resume():
    metrics = train_metrics.TrainMetrics.from_records(_killed_and_resumed())
    assert [r["step"] for r in metrics.train] == list(range(1, 13))
    assert metrics.train[6]["loss"] == pytest.approx(3.0 - 0.2 * 7)  # the resumed run's step 7
    assert [(r["step"], r["eval_loss"]) for r in metrics.evals] == [(0, 4.0), (6, 2.4), (12, 0.5)]
    assert metrics.eval_loss_first == 4.0 and metrics.eval_loss_last == 0.5 and metrics.final_step == 12
    assert metrics.train_loss_last == pytest.approx(3.0 - 0.2 * 12)
    assert len(metrics.begins) == 2 and metrics.trainable_params == 100 and metrics.all_params == 1000
    assert metrics.tokens_per_second == pytest.approx((3072 - 1280) / 10.0)  # the last launch's
    assert guard.check_learned(metrics, 0.10) == pytest.approx(1 - 0.5 / 4.0)


def test_read_metrics_from_the_run_dir(tmp_path):
    (tmp_path / run_plan.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in _killed_and_resumed()))
    (tmp_path / run_plan.LOG_FILE).write_text(
        "UserWarning: bitsandbytes::gemv_4bit: an autograd kernel was not registered\n"
    )
    metrics = train_metrics.read_metrics(tmp_path)
    assert metrics.eval_loss_last == 0.5 and metrics.avx512_warning
    (tmp_path / run_plan.LOG_FILE).write_text("all fine\n")
    assert not train_metrics.read_metrics(tmp_path).avx512_warning


def test_read_metrics_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"metrics.jsonl: no metrics recorded: .*MetricsLogPlugin did not run"):
        train_metrics.read_metrics(tmp_path)
    path = tmp_path / run_plan.METRICS_FILE
    path.write_text(json.dumps(_rec("eval", 0, eval_loss=1.0)) + "\n" + '{"kind": "eval", "eval_loss": 1.0}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2: a metrics record needs a `kind` and an integer"):
        train_metrics.read_metrics(tmp_path)
    path.write_text(json.dumps(_rec("eval", 0, eval_loss=1.0)) + '\n{"kind": "tr\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2: not valid JSON"):
        train_metrics.read_metrics(tmp_path)


def test_metrics_record_keeps_numbers_and_classifies():
    logs = {"loss": 1.5, "learning_rate": 1e-3, "grad_norm": 2, "flag": True, "note": "x", "epoch": 0.5}
    assert train_metrics.metrics_record(logs, step=3, epoch=0.25) == {
        "loss": 1.5,
        "learning_rate": 1e-3,
        "grad_norm": 2,
        "epoch": 0.25,
        "kind": "train",
        "step": 3,
    }
    assert train_metrics.record_kind({"eval_loss": 1.0, "epoch": 1}) == "eval"
    assert train_metrics.record_kind({"train_runtime": 8.4, "train_loss": 10.7}) == "summary"
    assert train_metrics.record_kind({"total_flos": 1.0}) == "other"


def test_loss_table_lists_train_and_eval_losses():
    table = train_metrics.loss_table_md(train_metrics.TrainMetrics.from_records(_killed_and_resumed()))
    lines = table.splitlines()
    assert lines[0] == "| step | train loss | eval loss | learning rate |"
    assert lines[2] == "| 0 |  | 4.0000 |  |" and lines[-1] == "| 12 | 0.6000 | 0.5000 | 1.00e-03 |"
    assert len(lines) == 2 + 13


# --------------------------------------------------------------------------- guard
def _metrics(*eval_losses: float, warning: bool = False, steps: list[int] | None = None) -> train_metrics.TrainMetrics:
    """Evals spread over a 10-step run: the first at step 0, the last at step 10."""
    last = max(1, len(eval_losses) - 1)
    steps = steps or [round(10 * i / last) for i in range(len(eval_losses))]
    records = [_rec("eval", s, eval_loss=v) for s, v in zip(steps, eval_losses)]
    records += [_rec("train", s, loss=1.0) for s in range(1, 11)]
    return train_metrics.TrainMetrics.from_records(records, avx512_warning=warning)


def test_guard_passes_a_real_drop():
    assert guard.check_learned(_metrics(3.87, 1.2, 0.114), 0.10) == pytest.approx(1 - 0.114 / 3.87)


def test_guard_fails_a_run_that_did_not_learn_and_names_causes():
    with pytest.raises(guard.NotLearnedError) as info:
        guard.check_learned(_metrics(3.87, 3.6, 3.55, warning=True), 0.10)
    message = str(info.value)
    assert "3.8700 -> 3.5500" in message and "8.3%" in message and ">= 10%" in message
    assert "AVX512-BF16" in message and "learning_rate" in message and "gemv_4bit" in message


def test_guard_needs_an_eval_before_and_after():
    with pytest.raises(guard.NotLearnedError, match="1 eval"):
        guard.check_learned(_metrics(3.0), 0.10)


def test_guard_refuses_a_last_eval_before_the_last_step():
    """Judging an older eval (say, the one at the step a crashed run resumed from) would
    judge another adapter than the one that ships."""
    with pytest.raises(guard.NotLearnedError, match=r"evals ran at steps \[0, 6\], training ended at step 10"):
        guard.check_learned(_metrics(3.87, 0.1, steps=[0, 6]), 0.10)
    with pytest.raises(guard.NotLearnedError, match=r"steps \[2, 10\]"):
        guard.check_learned(_metrics(3.87, 0.1, steps=[2, 10]), 0.10)


def test_quantization_config_and_how_to_load():
    cfg = {
        "adapter": "qlora",
        "load_in_4bit": True,
        "bf16": False,
        "bnb_config_kwargs": {"bnb_4bit_compute_dtype": "bfloat16"},
    }
    quant = adapter.quantization_config(cfg)
    assert quant["bnb_4bit_quant_type"] == "nf4" and quant["bnb_4bit_compute_dtype"] == "bfloat16"
    assert adapter.quantization_config({"load_in_4bit": True})["bnb_4bit_compute_dtype"] == "float32"
    code = adapter.how_to_load("/a", "/b", quant)
    assert "bnb_4bit_compute_dtype=torch.bfloat16" in code and "PeftModel.from_pretrained(base, '/a')" in code
    compile(code, "how_to_load", "exec")


def test_plain_lora_works_as_a_registry_override(tmp_path):
    """Issue 10's remedy for quantisation loss: `adapter: lora` + `load_in_4bit: false` in a
    model's axolotl_overrides gives a valid fp32 LoRA config (no 4-bit patch, no quantisation)."""
    spec = BaseModelSpec(name="m", source=str(tmp_path), axolotl_overrides={"adapter": "lora", "load_in_4bit": False})
    cfg = run_plan.training_config(spec, TrainingSettings(), cuda=False)
    assert cfg["adapter"] == "lora" and cfg["load_in_4bit"] is False
    assert adapter.quantization_config(cfg) == {"load_in_4bit": False}
    axolotl_schema.validate_config(
        {
            **cfg,
            "base_model": str(tmp_path),
            "output_dir": str(tmp_path / "out"),
            "datasets": [{**cfg["datasets"][0], "path": str(tmp_path / "t.jsonl")}],
            "test_datasets": [{**cfg["test_datasets"][0], "path": str(tmp_path / "v.jsonl")}],
        }
    )
    half = BaseModelSpec(name="m", source=str(tmp_path), axolotl_overrides={"adapter": "lora"})
    with pytest.raises(run_plan.AxolotlConfigError, match="load_in_4bit: false"):
        axolotl_schema.validate_config(run_plan.training_config(half, TrainingSettings(), cuda=False))
