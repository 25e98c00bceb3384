"""``raw_pairs/<name>``: one asset per entry of ``sources.yaml``, built by a factory.

Adding a source is a config change: the code location re-reads ``sources.yaml`` when it
loads, so a misconfigured file, or a ``fields:`` mapping naming a column the file's header
lacks, fails there (``ConfigError`` names the file, source and fix, printed first) and a
missing, unreadable or empty data file fails this asset, naming the file and source. The
work is in ``pipelines.ingest``; this module only writes files and metadata."""

import sys

import dagster as dg

from pipelines import config, ingest
from pipelines.records import markdown_table, write_jsonl
from pipelines.orchestration.resources import TunegateResource

KEY_PREFIX = "raw_pairs"
GROUP = "sources"
_KINDS = {"jsonl": {"python", "json"}, "csv": {"pandas", "csv"}, "parquet": {"pandas", "parquet"},
          "hf_disk": {"huggingface"}, "python": {"python"}}


def quarantine_preview(rows: list[dict], limit: int = 10) -> str:
    return markdown_table(
        ["source", "row", "reason", "detail", "raw"],
        ([q["source"], q["row"], q["reason"], q["detail"], q["raw"]] for q in rows[:limit]),
        max_cell=60,
    )


def build_source_asset(spec: config.SourceSpec) -> dg.AssetsDefinition:
    where = spec.function if spec.kind == "python" else spec.path

    @dg.asset(
        name=spec.name,
        key_prefix=KEY_PREFIX,
        group_name=GROUP,
        kinds=_KINDS[spec.kind],
        description=(spec.description or f"Rows of source {spec.name!r}")
        + f" ({spec.kind}: {where}). Every row validated and normalised to chat messages,"
        " or quarantined with its reason. No rows fails the asset"
        + (" (allow_empty: a warning here)." if spec.allow_empty else "."),
        metadata={"kind": spec.kind, "location": str(where)},
    )
    def _raw_pairs(context: dg.AssetExecutionContext, tunegate: TunegateResource) -> dg.MaterializeResult:
        settings = tunegate.settings().validation
        layout = tunegate.layout
        try:
            result = ingest.ingest(spec, settings.max_chars)
        except ingest.SourceError as exc:
            raise dg.Failure(description=f"{exc} (sources file: {tunegate.sources_path()})") from exc
        path, quarantine_path = layout.raw_file(spec.name), layout.source_quarantine_file(spec.name)
        write_jsonl(path, result.records)
        write_jsonl(quarantine_path, result.quarantined)
        reasons = markdown_table(["reason", "rows"], result.reasons.most_common())
        try:
            warning = ingest.check_not_empty(result, spec)
        except ingest.SourceError as exc:
            raise dg.Failure(description=f"{exc} (sources file: {tunegate.sources_path()})") from exc
        if warning:
            context.log.warning(warning)
        try:
            ingest.check_reject_rate(result, spec, settings.max_reject_rate, quarantine_path)
        except ingest.SourceError as exc:
            raise dg.Failure(
                description=str(exc),
                metadata={"quarantine_path": dg.MetadataValue.path(str(quarantine_path)),
                          "reasons": dg.MetadataValue.md(reasons),
                          "quarantine_preview": dg.MetadataValue.md(quarantine_preview(result.quarantined))},
            ) from exc
        context.log.info(
            f"{spec.name}: {result.rows_in} rows in, {len(result.records)} kept, "
            f"{len(result.quarantined)} quarantined {dict(result.reasons)}"
        )
        value = {
            "source": spec.name, "path": str(path), "quarantine_path": str(quarantine_path),
            "rows_in": result.rows_in, "rows_kept": len(result.records),
            "rows_quarantined": len(result.quarantined),
        }
        return dg.MaterializeResult(
            value=value,
            metadata={
                "rows_in": result.rows_in,
                "rows_kept": len(result.records),
                "rows_quarantined": len(result.quarantined),
                "reject_rate": dg.MetadataValue.float(len(result.quarantined) / max(1, result.rows_in)),
                "jsonl_path": dg.MetadataValue.path(str(path)),
                "quarantine_path": dg.MetadataValue.path(str(quarantine_path)),
                "reasons": dg.MetadataValue.md(reasons),
                "quarantine_preview": dg.MetadataValue.md(quarantine_preview(result.quarantined)),
                **({"empty_warning": dg.MetadataValue.text(warning)} if warning else {}),
            },
        )

    return _raw_pairs


def build_source_assets(specs: list[config.SourceSpec]) -> list[dg.AssetsDefinition]:
    """One ``raw_pairs/<name>`` asset per source (tests call this with their own specs)."""
    return [build_source_asset(spec) for spec in specs]


def _configured_sources() -> list[config.SourceSpec]:
    """The sources of the code location. A misconfigured file is printed on its own first
    (``dagster dev`` / the CLI show it above the import traceback), then raised unchained."""
    try:
        return ingest.load_checked_sources(config.default_sources_file())
    except config.ConfigError as exc:
        print(f"\ntunegate: sources.yaml is misconfigured\n{exc}\n", file=sys.stderr, flush=True)
        raise config.ConfigError(str(exc)) from None


raw_pairs_assets = build_source_assets(_configured_sources())
