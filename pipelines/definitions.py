"""The one Dagster ``Definitions`` of tunegate: top of the import graph.

It wires asset modules, resources, the job, the sensor and the schedule together;
nothing below imports it."""

import dagster as dg

from assets import dataset, sources
from pipelines.resources import TunegateResource

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([sources, dataset]),
    resources={"tunegate": TunegateResource()},
    executor=dg.in_process_executor,
)
