"""The training stage: an Axolotl QLoRA run generated, validated, launched, cached and judged. No Dagster."""
