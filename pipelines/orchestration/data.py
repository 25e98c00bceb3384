"""``make data``: materialise only the data assets (``raw_pairs/*`` -> ``labeled_pairs`` ->
``deduped_pairs`` -> ``train_set`` / ``validation_set`` / ``eval_set``) on the persistent
instance under ``$DAGSTER_HOME`` (default: the repo's ``.dagster/``), so the metadata is in
``make ui`` afterwards. For a data engineer adding a source: no model, no training.

The assets are built from the sources file directly (not the whole code location), so a
misconfigured ``sources.yaml`` prints one short message and exits 2, without a traceback.
Exit code 0 when every data asset materialised, 1 when one failed (its error is printed)."""

from __future__ import annotations

import argparse
import os
import sys

import dagster as dg

from pipelines.config.base import ConfigError
from pipelines.data.headers import check_headers
from pipelines.orchestration.resources import TunegateResource, persistent_instance


def _failures(result) -> list[str]:
    return [
        f"{event.step_key}: {event.event_specific_data.error.message.strip()}"
        for event in result.all_events
        if event.event_type_value == "STEP_FAILURE"
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    resource = TunegateResource()
    try:
        specs = resource.sources()  # read once; the header check as the code location does it
        check_headers(specs, resource.sources_path())
        resource.settings()
    except ConfigError as exc:
        print(f"tunegate: the configuration is wrong\n{exc}", file=sys.stderr)
        return 2
    from assets.data import build_dataset_assets, build_source_assets

    instance = persistent_instance(resource.settings().training)
    layout = resource.layout
    print(
        f"tunegate data: {len(specs)} sources from {resource.sources_path()}\n"
        f"  outputs  {layout.data_dir}\n  instance {os.environ['DAGSTER_HOME']}",
        flush=True,
    )
    result = dg.materialize(
        [*build_source_assets(specs), *build_dataset_assets(specs)],
        resources={"tunegate": resource},
        instance=instance,
        raise_on_error=False,
    )
    if not result.success:
        print("\nFAILED:\n" + "\n".join(_failures(result)), file=sys.stderr)
        return 1
    print(
        f"\nDone (run {result.run_id}). Look at:\n"
        f"  {layout.data_dir}/train.jsonl, validation.jsonl, eval.jsonl   the split\n"
        f"  {layout.quarantine_file}   every rejected row: source, file, row, reason, detail, raw\n"
        f"  {layout.dedup_audit_file}   every dropped duplicate and the row it duplicated\n"
        "  `make ui` -> Assets: raw_pairs/<source>, labeled_pairs, deduped_pairs, train_set: counts, "
        "reasons and previews in each asset's metadata"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
