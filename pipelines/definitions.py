"""The one Dagster ``Definitions`` of tunegate: top of the import graph.

It wires asset modules, resources, the job, the sensor and the schedule together;
nothing below imports it."""

import dagster as dg

from assets import dataset, sources
from pipelines.automation import base_model_registry_sensor, tune_job, weekly_retune_schedule
from pipelines.resources import TunegateResource

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([sources, dataset]),
    jobs=[tune_job],
    sensors=[base_model_registry_sensor],
    schedules=[weekly_retune_schedule],
    resources={"tunegate": TunegateResource()},
    executor=dg.in_process_executor,
)
