"""The promotion gate's engines: the decision (pure functions over score cards), the cost
model, the markdown report and the champion registry (MLflow). Plain Python, no Dagster."""
