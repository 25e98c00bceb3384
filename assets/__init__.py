"""Thin Dagster asset shells, one module per stage; the work lives in ``pipelines/``."""
