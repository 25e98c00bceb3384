"""tunegate's Axolotl plugins, loaded by Axolotl from the generated config's ``plugins:``
inside the training subprocess (no Dagster here). See README.md beside this file."""
