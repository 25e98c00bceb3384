"""The Dagster code location: everything here imports Dagster, nothing outside it does
except the asset modules in ``assets/``.

- ``definitions``: the one ``Definitions`` (what ``workspace.yaml`` loads);
- ``resources``: paths, configuration and the external tools (Axolotl, promptfoo);
- ``partitions``: one partition per base model;
- ``automation``: ``tune_job``, the base-model registry sensor and the weekly schedule;
- ``axolotl_launcher``: the Dagster Pipes process that runs Axolotl;
- ``demo``, ``demo_retune``, ``data``: the ``make demo`` / ``make demo-retune`` / ``make data``
  entry points.

The engines they drive (data, training, evaluation, the gate) are plain Python in the
rest of ``pipelines/`` and are tested without Dagster."""
