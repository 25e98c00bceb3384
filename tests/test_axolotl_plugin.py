"""The label-positions plugin changes where logits are computed, never the loss or gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pipelines import axolotl_plugin


def _model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
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
    assert axolotl_plugin.enable(patched)
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
    axolotl_plugin.enable(model)
    batch = _batch()
    assert model(input_ids=batch["input_ids"]).logits.shape == (4, 20, 300)  # no labels: every position
    assert model(input_ids=batch["input_ids"], logits_to_keep=1).logits.shape == (4, 1, 300)


def test_models_without_logits_to_keep_are_left_alone():
    class Old(torch.nn.Module):
        def forward(self, input_ids, labels=None):
            return input_ids

    model = Old()
    assert not axolotl_plugin.enable(model)
    assert "forward" not in vars(model)
