"""The one Dagster ``Definitions`` of tunegate: top of the import graph.

It wires asset modules, resources, the job, the sensor and the schedule together;
nothing below imports it."""

import logging
import os

import dagster as dg

from assets import data, evaluation, gate, models, training
from pipelines.orchestration.automation import base_model_registry_sensor, tune_job, weekly_retune_schedule
from pipelines.orchestration.resources import AxolotlResource, PromptfooResource, TunegateResource

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([data, training, models, evaluation, gate]),
    jobs=[tune_job],
    sensors=[base_model_registry_sensor],
    schedules=[weekly_retune_schedule],
    resources={
        "tunegate": TunegateResource(),
        "axolotl": AxolotlResource(),
        "promptfoo": PromptfooResource(),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    },
    # The multiprocess executor re-imports Dagster per step: tens of seconds on 2 cores.
    executor=dg.in_process_executor,
)

if not os.environ.get("DAGSTER_HOME"):
    # The Dagster CLI without DAGSTER_HOME runs into a throwaway instance: the run succeeds,
    # then its metadata and history are gone. `make ui` / `make data` / `make demo` set it.
    logging.getLogger("tunegate").warning(
        "DAGSTER_HOME is not set: runs launched by this process go to a temporary Dagster instance "
        "and their metadata is lost. Set DAGSTER_HOME (e.g. export DAGSTER_HOME=$PWD/.dagster), or use "
        "`make data`, `make demo` or `make ui`, which set it."
    )
