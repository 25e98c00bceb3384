"""Cross-cutting helpers, one module per job (files, hashing, JSONL, tables, statistics,
MLflow tracking): the bottom of the import graph, no Dagster."""
