"""Declarative configuration, one pydantic file per concept, validated on load so a typo
fails at start-up with the file and key named. This package imports no Dagster."""
