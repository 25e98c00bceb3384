"""The plugin changes where logits are computed and where the backward pass stops, never the
loss or the gradients of the trainable weights."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from pipelines.training.plugins import metrics_log, trim_compute


def _model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config)


def _batch() -> dict[str, torch.Tensor]:
    """Right-padded rows whose labelled answers sit at different positions; one row has none."""
    torch.manual_seed(1)
    ids = torch.randint(0, 300, (4, 20))
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    mask[2, 9:] = 0
    labels = torch.full_like(ids, -100)
    labels[0, 14:20] = ids[0, 14:20]
    labels[1, 10:15] = ids[1, 10:15]
    labels[2, 6:9] = ids[2, 6:9]  # row 3: no label at all
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("num_items", [None, torch.tensor(14)])
def test_same_loss_and_gradients_with_fewer_logits(num_items):
    plain = _model()
    patched = copy.deepcopy(plain)
    assert trim_compute.keep_logits_at_labels(patched)
    seen = []
    patched.lm_head.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[1]))
    kwargs = {} if num_items is None else {"num_items_in_batch": num_items}

    expected = plain(**_batch(), **kwargs).loss
    got = patched(**_batch(), **kwargs).loss
    expected.backward()
    got.backward()

    assert seen == [13]  # positions 5..8, 9..13, 13..18: 13 of 20 have a label in some row
    torch.testing.assert_close(got, expected)
    for (name, a), (_, b) in zip(plain.named_parameters(), patched.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, msg=name)


def test_generation_and_explicit_positions_are_untouched():
    model = _model()
    trim_compute.keep_logits_at_labels(model)
    batch = _batch()
    assert model(input_ids=batch["input_ids"]).logits.shape == (4, 20, 300)  # no labels: every position
    assert model(input_ids=batch["input_ids"], logits_to_keep=1).logits.shape == (4, 1, 300)


def test_models_without_logits_to_keep_are_left_alone():
    class Old(torch.nn.Module):
        def forward(self, input_ids, labels=None):
            return input_ids

    model = Old()
    assert not trim_compute.keep_logits_at_labels(model)
    assert "forward" not in vars(model)


def _top_layer_lora(model: LlamaForCausalLM):
    """LoRA on the top layer only, after Axolotl's unconditional ``enable_input_require_grads``."""
    model.enable_input_require_grads()
    torch.manual_seed(2)  # init_lora_weights=False: a non-zero B, so A gets a gradient too
    return get_peft_model(
        model,
        LoraConfig(
            r=4,
            target_modules=["q_proj", "v_proj"],
            layers_to_transform=[2],
            init_lora_weights=False,
            lora_dropout=0.0,
            task_type="CAUSAL_LM",
        ),
    )


def test_backward_stops_at_the_lowest_adapted_layer_with_the_same_lora_gradients():
    reference = _top_layer_lora(_model())
    trimmed = _top_layer_lora(_model())
    assert trim_compute.stop_backward_at_adapter(trimmed)
    assert not trim_compute.stop_backward_at_adapter(trimmed)  # nothing left to remove
    reached = {"reference": 0, "trimmed": 0}
    for name, model in (("reference", reference), ("trimmed", trimmed)):
        for layer in model.get_base_model().model.layers[:2]:  # frozen layers below the adapter
            layer.register_full_backward_hook(lambda *_, name=name: reached.__setitem__(name, reached[name] + 1))

    reference(**_batch()).loss.backward()
    trimmed(**_batch()).loss.backward()

    assert reached == {"reference": 2, "trimmed": 0}
    lora = [(n, p) for n, p in trimmed.named_parameters() if p.requires_grad]
    assert len(lora) == 4  # q_proj and v_proj of layer 2, A and B each
    for (name, got), (_, expected) in zip(lora, ((n, p) for n, p in reference.named_parameters() if p.requires_grad)):
        assert got.grad is not None and got.grad.abs().sum() > 0, name
        torch.testing.assert_close(got.grad, expected.grad, msg=name)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_the_plugin_keeps_the_hook_only_for_gradient_checkpointing(checkpointing):
    from axolotl.utils.dict import DictDefault

    model = _top_layer_lora(_model())
    trim_compute.TrimComputePlugin().post_model_load(DictDefault({"gradient_checkpointing": checkpointing}), model)
    assert bool(model.get_base_model()._require_grads_hooks) is checkpointing


# --------------------------------------------------------------------------- metrics
def _trainer(output_dir, metrics_file, max_steps: int):
    """A real Hugging Face Trainer on the small LoRA model: eval before the first step and
    every 2 steps, a checkpoint every 2 steps, MetricsLogCallback attached."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(3)
    ids = torch.randint(0, 300, (8, 12)).tolist()
    data = Dataset.from_dict({"input_ids": ids, "labels": ids})
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=max_steps,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=2,
        eval_on_start=True,
        save_steps=2,
        include_num_input_tokens_seen=True,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    return Trainer(
        model=_top_layer_lora(_model()),
        args=args,
        train_dataset=data,
        eval_dataset=data,
        callbacks=[metrics_log.MetricsLogCallback(metrics_file)],
    )


def test_the_callback_records_every_launch_of_a_resumed_run(tmp_path):
    """Stop a run at step 2 (its checkpoint), resume it to step 4: the file has both
    launches, and read back it ends with the resumed launch's eval at step 4."""
    from pipelines.common.jsonl import read_jsonl
    from pipelines.training import run_plan, train_metrics

    metrics_file = tmp_path / "run" / run_plan.METRICS_FILE
    _trainer(tmp_path / "out", metrics_file, max_steps=2).train()
    checkpoint = tmp_path / "out" / "checkpoint-2"
    _trainer(tmp_path / "out", metrics_file, max_steps=4).train(resume_from_checkpoint=str(checkpoint))

    records = list(read_jsonl(metrics_file))
    assert [(r["kind"], r["step"]) for r in records if r["kind"] in ("begin", "eval", "summary")] == [
        ("begin", 0),
        ("eval", 0),
        ("eval", 2),
        ("summary", 2),  # the first launch
        ("begin", 2),
        ("eval", 2),
        ("eval", 4),
        ("summary", 4),
    ]  # the resumed one (a plain Trainer
    # evaluates on start again; Axolotl skips that on a resume, and the reader keeps the latest)
    begin = records[0]
    assert begin["trainable_params"] > 0 and begin["all_params"] > begin["trainable_params"]
    assert all(isinstance(r["epoch"], (int, float)) for r in records[1:])
    metrics = train_metrics.TrainMetrics.from_records(records)
    assert [r["step"] for r in metrics.train] == [1, 2, 3, 4] and metrics.final_step == 4
    assert [r["step"] for r in metrics.evals] == [0, 2, 4]
    assert metrics.eval_loss_last == next(r["eval_loss"] for r in records if r["kind"] == "eval" and r["step"] == 4)
    assert metrics.begins[-1]["num_input_tokens_seen"] == 2 * 4 * 12  # restored from the checkpoint


def test_the_metrics_plugin_reads_its_key_through_axolotl_validation(tmp_path):
    """The path reaches the training process only as a config key: Axolotl's own validation
    (what `axolotl train` runs) must keep it, and the plugin must turn it into a callback."""
    from axolotl.utils.config import prepare_plugins, validate_config
    from axolotl.utils.dict import DictDefault

    from pipelines.config.base_models import BaseModelSpec
    from pipelines.config.paths import Layout
    from pipelines.config.training import TrainingSettings
    from pipelines.training import run_plan

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "tokenizer.json").write_text("{}")
    fixtures = Path(__file__).parent / "fixtures"
    plan = run_plan.plan_run(
        Layout(tmp_path / "home"),
        BaseModelSpec(name="tiny", source="/nonexistent"),
        TrainingSettings(),
        base_model_dir=model_dir,
        base_model_sha256="a" * 64,
        train_path=fixtures / "chat_train.jsonl",
        validation_path=fixtures / "chat_eval.jsonl",
        data_fingerprint="f" * 64,
        cuda=False,
    )
    cfg = DictDefault(plan.config)
    prepare_plugins(cfg)
    validated = validate_config(cfg)
    assert validated[run_plan.METRICS_FILE_KEY] == str(plan.metrics_path)
    (callback,) = metrics_log.MetricsLogPlugin().add_callbacks_pre_trainer(validated, model=None)
    assert callback.path == plan.metrics_path
    assert metrics_log.MetricsLogPlugin().add_callbacks_pre_trainer(DictDefault({}), model=None) == []
