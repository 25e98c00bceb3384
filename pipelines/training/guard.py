""" "Did it learn": the guard that refuses an adapter whose validation loss did not fall."""

from __future__ import annotations

from pipelines.training.train_metrics import AVX512_WARNING, TrainMetrics


class NotLearnedError(RuntimeError):
    """Training finished but eval loss did not fall enough: the adapter must not ship."""


def check_learned(metrics: TrainMetrics, min_drop: float) -> float:
    """Fail unless eval loss fell by at least ``min_drop`` (relative) from the eval before the
    first step to the eval after the last one. Returns the drop.

    A run that exits 0 but did not learn is the dangerous failure: it would reach the gate
    looking like a real adapter. This catches it and names the usual causes. Judging any
    other eval (say, an older one at the step a crashed run resumed from) would be judging a
    different adapter than the one that ships, so the evals' steps are checked too."""
    first, last, final = metrics.eval_loss_first, metrics.eval_loss_last, metrics.final_step
    if first is None or last is None or len(metrics.evals) < 2:
        raise NotLearnedError(
            f"cannot tell whether the adapter learned: {len(metrics.evals)} eval(s) recorded "
            "(need one before and one after training). Check that `test_datasets` points at the "
            "validation slice and that `eval_strategy` / `eval_steps` evaluate during the run."
        )
    if metrics.evals[0]["step"] != 0 or metrics.evals[-1]["step"] != final:
        raise NotLearnedError(
            f"cannot tell whether the adapter learned: the evals ran at steps "
            f"{[r['step'] for r in metrics.evals]}, training ended at step {final}; the guard needs "
            "one at step 0 and one at the last step (use `eval_strategy: epoch`, or `eval_steps` "
            "that divide the total)."
        )
    drop = (first - last) / first if first > 0 else 0.0
    if drop >= min_drop:
        return drop
    causes = []
    if metrics.avx512_warning:
        causes.append(
            f"the log shows '{AVX512_WARNING}': QLoRA on an AVX512-BF16 CPU ran without the "
            "tunegate repack workaround, so gradients stopped flowing through the 4-bit layers"
        )
    causes += [
        "QLoRA on CPU without the AVX512-BF16 workaround (pipelines/cpu_qlora_patch) on the subprocess's PYTHONPATH",
        "learning_rate too low or too few steps (num_epochs, micro_batch_size x "
        "gradient_accumulation_steps vs. the training set size)",
        "nothing to learn: roles_to_train/eot_tokens mask every target token, or the assistant turns are empty",
        "the validation slice does not match the training distribution",
    ]
    listed = "\n".join(f"  - {c}" for c in causes)
    raise NotLearnedError(
        f"the adapter did not learn: eval loss {first:.4f} -> {last:.4f} "
        f"(relative drop {drop:.1%}, required >= {min_drop:.0%} by training.min_eval_loss_drop).\n"
        f"Likely causes:\n{listed}"
    )
