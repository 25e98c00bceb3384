"""``python -m pipelines.gate.registry show | set-champion <version>``: the champion, and the
rollback, from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines.common import tracking
from pipelines.gate.registry.entries import CHAMPION
from pipelines.gate.registry.export import export
from pipelines.gate.registry.promotion import set_champion
from pipelines.gate.registry.reading import champion


def main(argv: list[str] | None = None) -> int:
    """``show`` the champion, or ``set-champion <version>`` (the rollback), in the store the
    pipeline uses (``MLFLOW_TRACKING_URI``, tunegate.yaml ``mlflow.tracking_uri``, else the
    local store under ``TUNEGATE_HOME``)."""
    from pipelines.config.paths import (
        REPO_ROOT,
        Layout,
        default_home,
        default_settings_file,
    )
    from pipelines.config.settings import load_settings
    from pipelines.evaluation.task import load_task

    parser = argparse.ArgumentParser(prog="python -m pipelines.gate.registry", description=main.__doc__)
    parser.add_argument("--task", help="registered model (default: the task of tunegate.yaml eval.task_file)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("show", help="print the champion's entry")
    move = sub.add_parser("set-champion", help="move the `champion` alias to VERSION (a rollback)")
    move.add_argument("version", type=int)
    args = parser.parse_args(argv)

    settings = load_settings(default_settings_file())
    home = default_home()
    store = tracking.resolve("", settings.mlflow.tracking_uri, home)
    task_file = Path(settings.eval.task_file)
    task = args.task or load_task(task_file if task_file.is_absolute() else REPO_ROOT / task_file).name
    if args.command == "set-champion":
        found = set_champion(store, task, args.version)
        export(store, Layout(home).registry_file)
        print(
            f"{task}: `{CHAMPION}` -> version {found.version} ({found.partition}, artefact {found.artefact['id'][:16]})"
        )
    else:
        found = champion(store, task)
        print(json.dumps(found.to_dict() if found else None, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
