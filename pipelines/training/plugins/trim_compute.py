"""``TrimComputePlugin``: two savings of training compute that leave the loss and every
gradient unchanged.

1. Run the LM head only at the positions that carry a label. With ``roles_to_train:
   [assistant]`` only the answer's tokens have a label (about 15 of the ~107 tokens of a demo
   chat), yet a causal LM computes 49,152-way logits and their log-softmax at every position:
   a fifth of each training step's FLOPs on SmolLM2-135M, and as much again in every eval
   pass. Hugging Face causal LMs take ``logits_to_keep`` (the sequence positions to compute
   logits for) and their loss takes ``shift_labels``; passing the positions that have a label
   in any row of the batch gives the same loss and gradients with the LM head run on those
   positions only. Models whose ``forward`` has no ``logits_to_keep`` are left as they are.
2. Stop the backward pass at the lowest layer that holds a trainable weight. Axolotl makes
   the input embeddings' output require grad for every adapter (``enable_input_require_grads``),
   which only reentrant gradient checkpointing needs; without checkpointing it makes autograd
   backpropagate through every frozen layer below the adapted ones. When LoRA adapts only the
   top layers (``peft_layers_to_transform``), the backward pass through the rest is wasted.

The savings are measured by ``bench/trim_compute.py``."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import torch
from axolotl.integrations.base import BasePlugin

LOG = logging.getLogger("axolotl.integrations.tunegate")  # under "axolotl": its log setup shows it


IGNORE_INDEX = -100  # what Axolotl's collators put on unlabelled positions, and HF's loss ignores


def label_positions_forward(forward: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a causal LM's ``forward``: with labels, compute logits only where the next token
    is labelled. Without labels (generation), or when the caller already chose positions or
    shifted labels, it is the model's own forward."""

    @functools.wraps(forward)  # keeps the signature the Trainer inspects
    def wrapped(*args: Any, labels: torch.Tensor | None = None, logits_to_keep: Any = 0, **kwargs: Any) -> Any:
        if labels is None or "shift_labels" in kwargs or not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
            return forward(*args, labels=labels, logits_to_keep=logits_to_keep, **kwargs)
        # exactly what the model's ForCausalLMLoss does with `labels`: position t predicts t+1
        shift = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
        keep = (shift != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
        return forward(*args, labels=labels, logits_to_keep=keep, shift_labels=shift[:, keep].contiguous(), **kwargs)

    return wrapped


def keep_logits_at_labels(model: torch.nn.Module) -> bool:
    """Patch this model instance (not its class); False when the model cannot take it."""
    params = inspect.signature(model.forward).parameters
    if "logits_to_keep" not in params or not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return False
    model.forward = label_positions_forward(model.forward)
    return True


def stop_backward_at_adapter(model: torch.nn.Module) -> bool:
    """Undo Axolotl's ``enable_input_require_grads`` (True when there was a hook to remove)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "_require_grads_hooks", None):
        return False
    base.disable_input_require_grads()
    return True


class TrimComputePlugin(BasePlugin):
    """``plugins: [pipelines.training.plugins.trim_compute.TrimComputePlugin]`` in an Axolotl config."""

    def post_model_build(self, cfg: Any, model: torch.nn.Module) -> None:
        name = type(model).__name__
        if keep_logits_at_labels(model):
            LOG.info(f"tunegate: {name} computes logits only at labelled positions")
        else:
            LOG.warning(f"tunegate: {name}.forward has no logits_to_keep; logits at every position")

    def post_model_load(self, cfg: Any, model: torch.nn.Module) -> None:
        if cfg.gradient_checkpointing:
            return  # reentrant checkpointing needs inputs that require grad: keep Axolotl's hook
        if stop_backward_at_adapter(model):
            LOG.info("tunegate: the backward pass stops at the lowest adapted layer")
