"""Config generation, validation, run identity, launch environment and the log parser of
the training stage (pipelines/axolotl.py). No model runs here; Axolotl's schema is imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines import axolotl as ax
from pipelines.config import BaseModelSpec, Layout, TrainingSettings

FIXTURES = Path(__file__).parent / "fixtures"
TRAIN = FIXTURES / "chat_train.jsonl"
EVAL = FIXTURES / "chat_eval.jsonl"
REAL_LOG = FIXTURES / "axolotl_qlora_tiny.log"  # captured from a real `axolotl train` run


def _spec(name: str = "tiny-llama", **kw) -> BaseModelSpec:
    return BaseModelSpec(name=name, source="/nonexistent", **kw)


def _plan(tmp_path: Path, model_dir: Path, spec: BaseModelSpec | None = None, *, home: Path | None = None,
          overrides: dict | None = None, fingerprint: str = "f" * 64, sha: str = "a" * 64,
          train: Path = TRAIN, eval_: Path = EVAL, cuda: bool = False) -> ax.RunPlan:
    return ax.plan_run(
        Layout(home or tmp_path / "home"),
        spec or _spec(),
        TrainingSettings(overrides=overrides or {}),
        base_model_dir=model_dir,
        base_model_sha256=sha,
        train_path=train,
        eval_path=eval_,
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
def _templates(tmp_path: Path, base: dict, cpu: dict) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / ax.BASE_TEMPLATE).write_text(yaml.safe_dump(base))
    (folder / ax.CPU_OVERLAY).write_text(yaml.safe_dump(cpu))
    return folder


def test_merge_order_template_cpu_registry_settings(tmp_path):
    folder = _templates(
        tmp_path,
        base={"lora_r": 16, "learning_rate": 1e-3, "bf16": "auto", "warmup_ratio": 0.1, "trl": {"beta": 1, "x": 2}},
        cpu={"bf16": False, "lora_r": 12},
    )
    spec = _spec(axolotl_overrides={"lora_r": 8, "learning_rate": 5e-4, "trl": {"beta": 3}})
    settings = TrainingSettings(overrides={"lora_r": 4, "warmup_ratio": None})
    cfg = ax.training_config(spec, settings, cuda=False, template_dir=folder)
    assert cfg["lora_r"] == 4  # settings beat registry beat cpu beat template
    assert cfg["learning_rate"] == 5e-4  # registry beats template
    assert cfg["bf16"] is False  # cpu overlay beats template
    assert cfg["trl"] == {"beta": 3, "x": 2}  # mappings merge key by key
    assert "warmup_ratio" not in cfg  # None unsets a template default
    assert cfg["eot_tokens"] == ["<|im_end|>"] and cfg["chat_template"] == "tokenizer_default"

    on_gpu = ax.training_config(spec, TrainingSettings(), cuda=True, template_dir=folder)
    assert on_gpu["bf16"] == "auto"  # no CPU overlay with CUDA


def test_shipped_templates_have_the_cpu_keys_and_qlora_defaults():
    cfg = ax.training_config(_spec(), TrainingSettings(), cuda=False)
    assert cfg["adapter"] == "qlora" and cfg["load_in_4bit"] is True
    for key in ("bf16", "fp16", "tf32", "flash_attention", "sample_packing", "dataloader_pin_memory",
                "lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel"):
        assert cfg[key] is False, key
    assert cfg["val_set_size"] == 0 and cfg["test_datasets"], "eval must come from OUR held-out split"
    assert cfg["datasets"][0]["roles_to_train"] == ["assistant"]
    assert cfg["sequence_len"] == 256 and cfg["micro_batch_size"] == 8
    assert cfg["gradient_accumulation_steps"] == 1 and cfg["num_epochs"] == 1
    assert cfg["eval_strategy"] == "epoch" and "eval_steps" not in cfg
    assert cfg["plugins"] == ["pipelines.axolotl_plugin.TrimComputePlugin"]
    gpu = ax.training_config(_spec(), TrainingSettings(), cuda=True)
    assert "bf16" not in gpu and "lora_qkv_kernel" not in gpu


def test_run_specific_keys_are_refused_in_overrides():
    with pytest.raises(ax.AxolotlConfigError, match="`output_dir` is set per run"):
        ax.training_config(_spec(), TrainingSettings(overrides={"output_dir": "/elsewhere"}), cuda=False)
    with pytest.raises(ax.AxolotlConfigError, match="axolotl_overrides: `base_model`"):
        ax.training_config(_spec(axolotl_overrides={"base_model": "x"}), TrainingSettings(), cuda=False)


def test_odd_strings_survive_safe_dump(tmp_path, model_dir):
    odd = "Answer: {\"a\": 1}\n- not a list item\n# not a comment\n'quotes' & *anchors* %s {{ jinja }}"
    weird_dir = tmp_path / "data: #1 'x'"
    weird_dir.mkdir()
    train, eval_ = weird_dir / "train set.jsonl", weird_dir / "eval: set.jsonl"
    train.write_text(TRAIN.read_text())
    eval_.write_text(EVAL.read_text())
    plan = _plan(tmp_path, model_dir, overrides={"chat_template": "jinja", "chat_template_jinja": odd},
                 train=train, eval_=eval_)
    path = ax.write_config(plan)
    loaded = yaml.safe_load(path.read_text())
    assert loaded == plan.config
    assert loaded["chat_template_jinja"] == odd
    assert loaded["datasets"][0]["path"] == str(train)


# --------------------------------------------------------------------------- identity
def test_config_hash_ignores_paths_and_run_key_tracks_inputs(tmp_path, model_dir):
    a = _plan(tmp_path, model_dir, home=tmp_path / "a")
    b = _plan(tmp_path, model_dir, home=tmp_path / "b")
    assert a.config_hash == b.config_hash and a.run_key == b.run_key  # machine-independent
    assert a.config["output_dir"] != b.config["output_dir"]
    assert _plan(tmp_path, model_dir, overrides={"learning_rate": 1e-4}).config_hash != a.config_hash
    assert _plan(tmp_path, model_dir, fingerprint="0" * 64).run_key != a.run_key  # new data retrains
    assert _plan(tmp_path, model_dir, sha="b" * 64).run_key != a.run_key  # new weights retrain
    assert _plan(tmp_path, model_dir, overrides={"num_epochs": 2}).run_dir != a.run_dir


def test_two_partitions_never_share_a_run_dir(tmp_path, model_dir):
    one = _plan(tmp_path, model_dir, _spec("org/model-a"))
    two = _plan(tmp_path, model_dir, _spec("org/model-b"))
    assert one.run_dir != two.run_dir
    assert one.run_dir.parent.name == "org--model-a" and two.run_dir.parent.name == "org--model-b"
    assert one.config["output_dir"].startswith(str(one.run_dir))


def test_prepared_dataset_cache_is_keyed_by_tokenizer(tmp_path, model_dir):
    before = _plan(tmp_path, model_dir)
    (model_dir / "tokenizer.json").write_text('{"model": "v2"}')
    after = _plan(tmp_path, model_dir)
    assert before.config["dataset_prepared_path"] != after.config["dataset_prepared_path"]
    assert before.config_hash == after.config_hash


def test_a_template_without_test_datasets_is_refused(tmp_path, model_dir):
    with pytest.raises(ax.AxolotlConfigError, match="no `test_datasets` entry"):
        _plan(tmp_path, model_dir, overrides={"test_datasets": None})


def test_plan_round_trips_through_the_asset_value(tmp_path, model_dir):
    plan = _plan(tmp_path, model_dir)
    assert ax.RunPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_eval_split_must_be_disjoint_from_train(tmp_path):
    ax.assert_disjoint(TRAIN, EVAL)
    leaky = tmp_path / "eval.jsonl"
    leaky.write_text(EVAL.read_text() + TRAIN.read_text().splitlines()[0] + "\n")
    with pytest.raises(ax.AxolotlConfigError, match="train-000.*trained on"):
        ax.assert_disjoint(TRAIN, leaky)
    with pytest.raises(ax.AxolotlConfigError, match="same file"):
        ax.assert_disjoint(TRAIN, TRAIN)


# --------------------------------------------------------------------------- validation
def test_generated_config_passes_axolotl_schema(tmp_path, model_dir):
    ax.validate_config(_plan(tmp_path, model_dir).config)


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
    with pytest.raises(ax.AxolotlConfigError, match=expected):
        ax.validate_config(_plan(tmp_path, model_dir, overrides=overrides).config)


def test_unknown_dataset_key_is_named_with_its_position(tmp_path, model_dir):
    cfg = _plan(tmp_path, model_dir).config
    cfg["datasets"][0]["field_message"] = cfg["datasets"][0].pop("field_messages")
    with pytest.raises(ax.AxolotlConfigError, match=r"`datasets\[0\]\.field_message`.*did you mean `field_messages`"):
        ax.validate_config(cfg)


# --------------------------------------------------------------------------- launch
def test_launch_env_is_clean_and_offline():
    base = {"PATH": "/usr/bin", "ACCELERATE_USE_CPU": "true", "ACCELERATE_USE_FSDP": "1", "PYTHONPATH": "/x",
            "WANDB_MODE": "online"}
    env = ax.launch_env(base, cpu_qlora_patch=True, extra={"MY_FLAG": "1"})
    assert not [k for k in env if k.startswith("ACCELERATE_USE_")]
    for key, value in ax.SUBPROCESS_ENV.items():
        assert env[key] == value
    assert env["PYTHONPATH"].split(":") == [str(ax.PATCH_DIR), "/x"]
    assert env["MY_FLAG"] == "1" and env["PATH"] == "/usr/bin"
    assert "PYTHONPATH" not in ax.launch_env({}, cpu_qlora_patch=False)
    with pytest.raises(ValueError, match="ACCELERATE_USE_CPU"):
        ax.launch_env({}, cpu_qlora_patch=False, extra={"ACCELERATE_USE_CPU": "1"})


def test_launch_command_uses_the_python_launcher(tmp_path):
    cmd = ax.launch_command(tmp_path / "axolotl.yaml")
    assert Path(cmd[0]).name == "axolotl" and cmd[1:] == ["train", str(tmp_path / "axolotl.yaml"), "--launcher", "python"]


@pytest.mark.parametrize("patched", [True, False])
def test_patch_is_loaded_by_the_training_subprocess(patched):
    """The workaround reaches the child only through PYTHONPATH (sitecustomize), and only
    when asked for; it patches bitsandbytes lazily, on import."""
    code = (
        "import sys; assert 'bitsandbytes' not in sys.modules\n"
        "import bitsandbytes.nn.modules as m\n"
        "print(getattr(m.Linear4bit.__init__, '_tunegate_no_avx512bf16_repack', False))"
    )
    env = ax.launch_env({"PATH": "/usr/bin:/bin"}, cpu_qlora_patch=patched)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == str(patched)


def test_resume_from_newest_complete_checkpoint(tmp_path, model_dir):
    plan = _plan(tmp_path, model_dir)
    ax.write_config(plan)
    assert ax.prepare_launch(plan) == (plan.config_path, None)
    for step, complete in ((2, True), (10, True), (12, False)):  # 12: killed mid-save
        ckpt = plan.output_dir / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        if complete:
            (ckpt / "trainer_state.json").write_text("{}")
    path, checkpoint = ax.prepare_launch(plan)
    assert checkpoint == plan.output_dir / "checkpoint-10"
    resumed = yaml.safe_load(path.read_text())
    assert resumed["resume_from_checkpoint"] == str(checkpoint)
    assert "resume_from_checkpoint" not in yaml.safe_load(plan.config_path.read_text())


def test_cache_hit_only_for_a_marked_complete_adapter(tmp_path):
    run_dir = tmp_path / "run"
    adapter = run_dir / ax.OUTPUT_SUBDIR
    adapter.mkdir(parents=True)
    assert ax.completed_run(run_dir) is None  # nothing yet
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"x")
    assert ax.completed_run(run_dir) is None  # trained, but not marked: guard not passed
    ax.mark_done(run_dir, {"adapter_dir": str(adapter), "eval_loss_last": 0.1})
    assert ax.completed_run(run_dir)["eval_loss_last"] == 0.1
    (adapter / "adapter_model.safetensors").unlink()
    assert ax.completed_run(run_dir) is None  # marker without weights is not a hit


# --------------------------------------------------------------------------- metrics
def test_split_output_separates_tqdm_redraws():
    text = "a\r 50%|##  | 1/2\r{'loss': '1.5', 'epoch': '0.5'}\nb\n\n"
    assert list(ax.split_output(text)) == ["a", " 50%|##  | 1/2", "{'loss': '1.5', 'epoch': '0.5'}", "b"]


def test_log_parser_on_real_axolotl_output():
    metrics = ax.parse_log(REAL_LOG.read_text())
    assert len(metrics.train) >= 6 and len(metrics.evals) >= 2
    assert all(isinstance(r["loss"], float) for r in metrics.train)  # strings became numbers
    assert metrics.evals[0]["epoch"] == 0  # Axolotl's eval before the first step
    assert metrics.eval_loss_first > metrics.eval_loss_last
    assert metrics.summary["train_loss"] > 0 and metrics.train_runtime_s > 0
    assert metrics.trainable_params and metrics.all_params > metrics.trainable_params
    assert metrics.tokens_per_second and metrics.tokens_per_second > 0
    assert not metrics.avx512_warning
    assert parse_count(REAL_LOG.read_text()) == len(metrics.train) + len(metrics.evals) + 1


def parse_count(text: str) -> int:
    """Independent count: every Trainer dict repr in the raw output."""
    return text.count("{'loss'") + text.count("{'eval_loss'") + text.count("{'train_runtime'")


def test_parser_ignores_non_metric_dicts_and_flags_the_bnb_warning():
    parser = ax.LogParser()
    assert parser.feed("{'foo': 'bar'}") is None
    assert parser.feed("UserWarning: bitsandbytes::gemv_4bit: an autograd kernel was not registered") is None
    assert parser.metrics.avx512_warning


def test_trainer_state_adds_full_precision_and_steps(tmp_path):
    log = ax.parse_log("{'eval_loss': '3.87', 'epoch': 0}\n{'loss': '3.9', 'epoch': '0.5'}\n"
                       "{'eval_loss': '0.114', 'epoch': '1'}\n{'train_runtime': '10', 'train_loss': '2'}\n")
    state = {"global_step": 2, "log_history": [
        {"eval_loss": 3.8712, "epoch": 0, "step": 0}, {"loss": 3.9021, "epoch": 0.5, "step": 1},
        {"eval_loss": 0.11402, "epoch": 1.0, "step": 2}]}
    ckpt = tmp_path / "checkpoint-2"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    merged = ax.combine_metrics(log, tmp_path)
    assert merged.eval_loss_first == pytest.approx(3.8712) and merged.evals[-1]["step"] == 2
    assert merged.train_runtime_s == 10.0
    # a crash after the last checkpoint: the log saw more than the state, keep the log
    assert ax.combine_metrics(log, tmp_path / "nothing").eval_loss_last == pytest.approx(0.114)


def test_loss_table_lists_train_and_eval_losses():
    table = ax.loss_table_md(ax.parse_log(REAL_LOG.read_text()))
    lines = table.splitlines()
    assert lines[0] == "| step | train loss | eval loss | learning rate |"
    assert len(lines) >= 2 + 6


# --------------------------------------------------------------------------- guard
def _metrics(*eval_losses: float, warning: bool = False) -> ax.TrainMetrics:
    return ax.TrainMetrics(evals=[{"eval_loss": v} for v in eval_losses], avx512_warning=warning)


def test_guard_passes_a_real_drop():
    assert ax.check_learned(_metrics(3.87, 1.2, 0.114), 0.10) == pytest.approx(1 - 0.114 / 3.87)


def test_guard_fails_a_run_that_did_not_learn_and_names_causes():
    with pytest.raises(ax.NotLearnedError) as info:
        ax.check_learned(_metrics(3.87, 3.6, 3.55, warning=True), 0.10)
    message = str(info.value)
    assert "3.8700 -> 3.5500" in message and "8.3%" in message and ">= 10%" in message
    assert "AVX512-BF16" in message and "learning_rate" in message and "gemv_4bit" in message


def test_guard_needs_an_eval_before_and_after():
    with pytest.raises(ax.NotLearnedError, match="1 eval"):
        ax.check_learned(_metrics(3.0), 0.10)


def test_quantization_config_and_how_to_load():
    cfg = {"adapter": "qlora", "load_in_4bit": True, "bf16": False, "bnb_config_kwargs": {"bnb_4bit_compute_dtype": "bfloat16"}}
    quant = ax.quantization_config(cfg)
    assert quant["bnb_4bit_quant_type"] == "nf4" and quant["bnb_4bit_compute_dtype"] == "bfloat16"
    assert ax.quantization_config({"load_in_4bit": True})["bnb_4bit_compute_dtype"] == "float32"
    code = ax.how_to_load("/a", "/b", quant)
    assert "bnb_4bit_compute_dtype=torch.bfloat16" in code and "PeftModel.from_pretrained(base, '/a')" in code
    compile(code, "how_to_load", "exec")
