"""Evaluation engines: the task spec, prompt recipes, suites, the promptfoo runner and score
cards. Plain Python, no Dagster; ``assets/evaluation.py`` is the thin shell over them."""
