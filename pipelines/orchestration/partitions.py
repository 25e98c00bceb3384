"""Partitions: one per base model, so a re-tune on a new base model is a new partition
of the same assets, with its own files, lineage and metadata."""

import dagster as dg

base_model_partitions = dg.DynamicPartitionsDefinition(name="base_model")
