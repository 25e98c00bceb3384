"""The one Dagster ``Definitions`` of tunegate: top of the import graph.

``defs`` (what ``workspace.yaml`` loads) reads the configuration once, through the resource
that every run then gets, and builds each stage's assets and checks from it: the sources,
the prompt ladder, the training pool and the re-tune cron come from that one reading, so the
definitions and the runs cannot disagree about the files they name. Nothing below imports it."""

import logging
import os
import sys

import dagster as dg

from assets import data, evaluation, gate, models, training
from pipelines.config.base import ConfigError
from pipelines.data.headers import check_headers
from pipelines.orchestration.automation import base_model_registry_sensor, build_retune_schedule, tune_job
from pipelines.orchestration.resources import AxolotlResource, PromptfooResource, TunegateResource

STAGES = (data, models, training, evaluation, gate)  # each asset module's build_assets(project)


def build_definitions(tunegate: TunegateResource) -> dg.Definitions:
    """Every stage's assets and checks, the job, the sensor and the schedule, from the
    configuration ``tunegate`` names (tests pass their own)."""
    project = tunegate.project()
    check_headers(list(project.sources), project.sources_file)  # a `fields:` column the file lacks fails here
    built = [item for stage in STAGES for item in stage.build_assets(project)]
    checks = [item for item in built if isinstance(item, dg.AssetChecksDefinition)]
    return dg.Definitions(
        assets=[item for item in built if not isinstance(item, dg.AssetChecksDefinition)],
        asset_checks=checks,
        jobs=[tune_job],
        sensors=[base_model_registry_sensor],
        schedules=[build_retune_schedule(project.settings.schedule.cron)],
        resources={
            "tunegate": tunegate,
            "axolotl": AxolotlResource(),
            "promptfoo": PromptfooResource(),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
        },
        # The multiprocess executor re-imports Dagster per step: tens of seconds on 2 cores.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location. A misconfigured file is printed on its own first (``dagster dev`` and
    the CLI show it above the load error), then raised without the chained traceback."""
    if not os.environ.get("DAGSTER_HOME"):
        # The Dagster CLI without DAGSTER_HOME runs into a throwaway instance: the run succeeds,
        # then its metadata and history are gone. `make ui` / `make data` / `make demo` set it.
        logging.getLogger("tunegate").warning(
            "DAGSTER_HOME is not set: runs launched by this process go to a temporary Dagster instance "
            "and their metadata is lost. Set DAGSTER_HOME (e.g. export DAGSTER_HOME=$PWD/.dagster), or use "
            "`make data`, `make demo` or `make ui`, which set it."
        )
    try:
        return build_definitions(TunegateResource())
    except ConfigError as exc:
        print(f"\ntunegate: the configuration is wrong\n{exc}\n", file=sys.stderr, flush=True)
        raise ConfigError(str(exc)) from None
