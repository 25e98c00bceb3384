"""The data stage: sources -> validated records -> dedup -> the held-out split. No Dagster."""
