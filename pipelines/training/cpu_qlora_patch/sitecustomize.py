"""Keep QLoRA learning on AVX512-BF16 CPUs (bitsandbytes 0.50.2).

Why: Axolotl evaluates before the first step (``eval_on_start``). In that no-grad eval,
bitsandbytes repacks each 4-bit weight for a bf16 CPU gemv kernel that has no autograd;
from then on every training step drops the gradient through the frozen 4-bit layers, so
only the LoRA weights after the last quantised layer learn and eval loss barely moves
(3.87 -> 3.25 instead of -> 0.11 on SmolLM2-135M). Turning the repack off per instance
restores learning at no measurable cost.

How: tunegate puts this folder first on the training subprocess's ``PYTHONPATH`` (only for
QLoRA on CPU), so Python imports it at start-up. It does not import bitsandbytes itself
(that would add seconds to every Python start): a post-import hook patches
``Linear4bit.__init__`` the moment ``bitsandbytes.nn.modules`` is imported. Standalone on
purpose: it must not import ``pipelines`` (not on the child's path)."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

TARGET = "bitsandbytes.nn.modules"
MARK = "_tunegate_no_avx512bf16_repack"


def patch_linear4bit(modules) -> None:
    """Make every new ``Linear4bit`` skip the bf16 CPU repack (idempotent)."""
    cls = modules.Linear4bit
    if getattr(cls.__init__, MARK, False):
        return
    original = cls.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.support_avx512bf16_for_cpu = False

    setattr(__init__, MARK, True)
    cls.__init__ = __init__
    if os.environ.get("TUNEGATE_PATCH_VERBOSE"):
        print("tunegate: bitsandbytes Linear4bit AVX512-BF16 repack disabled", file=sys.stderr)


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of TARGET to patch after it runs."""

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            patch_linear4bit(module)

        loader.exec_module = exec_and_patch
        return spec


def install() -> None:
    """Patch now if bitsandbytes is already imported, else on its import."""
    if TARGET in sys.modules:
        patch_linear4bit(sys.modules[TARGET])
    elif not any(isinstance(f, _PatchAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchAfterImport())


install()
