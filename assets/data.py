"""The data stage's Dagster side: ``raw_pairs/<name>`` (one asset per entry of ``sources.yaml``)
-> ``labeled_pairs`` -> ``deduped_pairs`` -> ``train_set`` + ``validation_set`` + ``eval_set``.

Adding a source is a config change: the code location reads ``sources.yaml`` when its
definitions are built, so a misconfigured file, or a ``fields:`` mapping naming a column the
file's header lacks, fails there (``ConfigError`` names the file, source and fix, printed
first) and a missing, unreadable or empty data file fails its asset, naming the file and
source. Thin shells over ``pipelines.data``: they read and write the files under the
``Layout`` and put the counts, fingerprints and tables in the UI. The source and dataset
assets are built by factories from the source list (tests build them for their own sources)."""

from collections import Counter
from pathlib import Path

import dagster as dg

from pipelines.common.jsonl import read_jsonl, write_jsonl
from pipelines.common.tables import markdown_table
from pipelines.config.project import Project
from pipelines.config.sources import SourceSpec
from pipelines.data import dedup, minhash, quality, rejects, split, validate
from pipelines.data.records import turn
from pipelines.orchestration.resources import TunegateResource

KEY_PREFIX = "raw_pairs"


SOURCES_GROUP = "sources"


_KINDS = {
    "jsonl": {"python", "json"},
    "csv": {"pandas", "csv"},
    "parquet": {"pandas", "parquet"},
    "hf_disk": {"huggingface"},
    "python": {"python"},
}


def quarantine_preview(rows: list[dict], limit: int = 10) -> str:
    return markdown_table(
        ["source", "row", "reason", "detail", "raw"],
        ([q["source"], q["row"], q["reason"], q["detail"], q["raw"]] for q in rows[:limit]),
        max_cell=60,
    )


def _quarantine_metadata(
    result: rejects.IngestResult, quarantine_path: Path, **next_to_rate: dg.MetadataValue
) -> dict[str, dg.MetadataValue]:
    """A source's quarantine as its asset and its ``reject_rate`` check show it: the rate (then
    ``next_to_rate``: the asset's output file, the check's limit), the file, the reasons, the first rows."""
    return {
        "reject_rate": dg.MetadataValue.float(result.reject_rate),
        **next_to_rate,
        "quarantine_path": dg.MetadataValue.path(str(quarantine_path)),
        "reasons": dg.MetadataValue.md(markdown_table(["reason", "rows"], result.reasons.most_common())),
        "quarantine_preview": dg.MetadataValue.md(quarantine_preview(result.quarantined)),
    }


def build_source_asset(spec: SourceSpec) -> dg.AssetsDefinition:
    where = spec.function if spec.kind == "python" else spec.path

    @dg.asset(
        name=spec.name,
        key_prefix=KEY_PREFIX,
        group_name=SOURCES_GROUP,
        kinds=_KINDS[spec.kind],
        description=(spec.description or f"Rows of source {spec.name!r}")
        + f" ({spec.kind}: {where}). Every row validated and normalised to chat messages,"
        " or quarantined with its reason. Its blocking checks: `not_empty` (no rows fails"
        + (", allow_empty: a warning here" if spec.allow_empty else "")
        + ") and `reject_rate` (at most tunegate.yaml `validation.max_reject_rate` quarantined).",
        metadata={"kind": spec.kind, "location": str(where)},
    )
    def _raw_pairs(context: dg.AssetExecutionContext, tunegate: TunegateResource) -> dg.MaterializeResult:
        settings = tunegate.settings().validation
        layout = tunegate.layout
        try:
            result = validate.ingest(spec, settings.max_chars)
        except rejects.SourceError as exc:
            raise dg.Failure(description=f"{exc} (sources file: {tunegate.sources_path()})") from exc
        path, quarantine_path = layout.raw_file(spec.name), layout.source_quarantine_file(spec.name)
        write_jsonl(path, result.records)
        write_jsonl(quarantine_path, result.quarantined)
        warning = None
        if spec.allow_empty:  # an empty source is this asset's warning; otherwise its `not_empty` check fails
            warning = quality.check_not_empty(result, spec)
            if warning:
                context.log.warning(warning)
        context.log.info(
            f"{spec.name}: {result.rows_in} rows in, {len(result.records)} kept, "
            f"{len(result.quarantined)} quarantined {dict(result.reasons)}"
        )
        value = {
            "source": spec.name,
            "path": str(path),
            "quarantine_path": str(quarantine_path),
            "rows_in": result.rows_in,
            "rows_kept": len(result.records),
            "rows_quarantined": len(result.quarantined),
        }
        return dg.MaterializeResult(
            value=value,
            metadata={
                "rows_in": result.rows_in,
                "rows_kept": len(result.records),
                "rows_quarantined": len(result.quarantined),
                **_quarantine_metadata(result, quarantine_path, jsonl_path=dg.MetadataValue.path(str(path))),
                **({"empty_warning": dg.MetadataValue.text(warning)} if warning else {}),
            },
        )

    return _raw_pairs


def _ingested(spec: SourceSpec, layout) -> rejects.IngestResult:
    """The source as its asset wrote it: kept rows and quarantined rows, read back."""
    return rejects.IngestResult(
        source=spec.name,
        records=list(read_jsonl(layout.raw_file(spec.name))),
        quarantined=list(read_jsonl(layout.source_quarantine_file(spec.name))),
    )


def build_source_checks(spec: SourceSpec) -> list[dg.AssetChecksDefinition]:
    """The blocking data-quality checks of ``raw_pairs/<name>``, judged on the files it wrote:
    ``not_empty`` and ``reject_rate`` (pipelines/data/quality.py). A failure stops the run
    before any downstream asset reads the source, and names the file and the fix."""
    key = dg.AssetKey([KEY_PREFIX, spec.name])

    def blocking_check(name: str, description: str):
        return dg.asset_check(asset=key, name=name, blocking=True, description=description)

    @blocking_check("not_empty", "The source yielded rows (allow_empty: true turns an empty source into a warning).")
    def not_empty(tunegate: TunegateResource) -> dg.AssetCheckResult:
        result = _ingested(spec, tunegate.layout)
        try:
            warning = quality.check_not_empty(result, spec)
        except rejects.SourceError as exc:
            return dg.AssetCheckResult(
                passed=False, description=f"{exc} (sources file: {tunegate.sources_path()})", metadata={"rows_in": 0}
            )
        return dg.AssetCheckResult(passed=True, description=warning, metadata={"rows_in": result.rows_in})

    @blocking_check("reject_rate", "At most tunegate.yaml validation.max_reject_rate of the rows are quarantined.")
    def reject_rate(tunegate: TunegateResource) -> dg.AssetCheckResult:
        layout, limit = tunegate.layout, tunegate.settings().validation.max_reject_rate
        result = _ingested(spec, layout)
        quarantine_path = layout.source_quarantine_file(spec.name)
        metadata = _quarantine_metadata(result, quarantine_path, max_reject_rate=dg.MetadataValue.float(limit))
        try:
            quality.check_reject_rate(result, spec, limit, quarantine_path)
        except rejects.SourceError as exc:
            return dg.AssetCheckResult(passed=False, description=str(exc), metadata=metadata)
        return dg.AssetCheckResult(passed=True, metadata=metadata)

    return [not_empty, reject_rate]


def build_source_assets(specs: list[SourceSpec]) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    """One ``raw_pairs/<name>`` asset per source, with its checks (tests call this with their own specs)."""
    return [item for spec in specs for item in (build_source_asset(spec), *build_source_checks(spec))]


DATASET_GROUP = "dataset"


def _input_name(source: str) -> str:
    return f"raw_{source}"  # prefixed: a source called `context` must not clash


def _quarantined_per_reason(sources: list[str], quarantined: list[dict]) -> str:
    """Source x reason counts of the quarantine: where the rejected rows came from and why."""
    counts = Counter((q["source"], q["reason"]) for q in quarantined)
    reasons = [r for r in rejects.REASONS if any(counts[s, r] for s in sources)]
    return markdown_table(
        ["source", *reasons, "total"],
        ([s, *(counts[s, r] for r in reasons), sum(counts[s, r] for r in reasons)] for s in sources),
    )


def _build_labeled_pairs(specs: list[SourceSpec]) -> dg.AssetsDefinition:
    names = [spec.name for spec in specs]

    @dg.asset(
        ins={_input_name(n): dg.AssetIn(key=dg.AssetKey(["raw_pairs", n])) for n in names},
        group_name=DATASET_GROUP,
        kinds={"python", "json"},
        description="All sources' validated records in one JSONL, in sources.yaml order, and every "
        "quarantined row in one quarantine.jsonl ({source, row, reason, detail, raw}).",
    )
    def labeled_pairs(context: dg.AssetExecutionContext, tunegate: TunegateResource, **raw) -> dg.MaterializeResult:
        layout = tunegate.layout
        parts = [raw[_input_name(n)] for n in names]
        per_source = {p["source"]: p["rows_kept"] for p in parts}
        rows = write_jsonl(layout.labeled_file, (r for p in parts for r in read_jsonl(p["path"])))
        quarantined = [q for p in parts for q in read_jsonl(p["quarantine_path"])]
        write_jsonl(layout.quarantine_file, quarantined)
        context.log.info(f"{rows} records from {len(parts)} sources; {len(quarantined)} quarantined")
        table = markdown_table(
            ["source", "rows in", "kept", "quarantined"],
            ([p["source"], p["rows_in"], p["rows_kept"], p["rows_quarantined"]] for p in parts),
        )
        by_reason = _quarantined_per_reason([p["source"] for p in parts], quarantined)
        preview = markdown_table(
            ["source", "row", "reason", "detail"],
            ([q["source"], q["row"], q["reason"], q["detail"]] for q in quarantined[:20]),
        )
        return dg.MaterializeResult(
            value={
                "path": str(layout.labeled_file),
                "rows": rows,
                "per_source": per_source,
                "quarantine_path": str(layout.quarantine_file),
                "rows_quarantined": len(quarantined),
            },
            metadata={
                "rows": rows,
                **{f"rows_{name}": count for name, count in per_source.items()},
                "rows_quarantined": len(quarantined),
                "per_source": dg.MetadataValue.md(table),
                "quarantined_per_reason": dg.MetadataValue.md(by_reason),
                "jsonl_path": dg.MetadataValue.path(str(layout.labeled_file)),
                "quarantine_path": dg.MetadataValue.path(str(layout.quarantine_file)),
                "quarantine_preview": dg.MetadataValue.md(preview),
            },
        )

    return labeled_pairs


@dg.asset(
    group_name=DATASET_GROUP,
    kinds={"python", "numpy"},
    description="Deduplicated hard: exact duplicates on the normalised system+user turn (NFKC, "
    "casefold, whitespace), near duplicates by MinHash LSH over word shingles (tunegate.yaml "
    "`dedup:`), first row kept. rows_in = rows_out + exact_duplicates + near_duplicates. A "
    "conflict is an exact or near duplicate whose answer differs from the kept row's: part of "
    "those counts (exact_conflicts + near_conflicts), not extra dropped rows. Every dropped row is "
    "in the audit file with the row it duplicated; `dropped_per_source` breaks it down by source.",
)
def deduped_pairs(
    context: dg.AssetExecutionContext, tunegate: TunegateResource, labeled_pairs: dict
) -> dg.MaterializeResult:
    settings, layout = tunegate.settings().dedup, tunegate.layout
    records = list(read_jsonl(labeled_pairs["path"]))
    hasher = minhash.MinHasher(num_perm=settings.num_perm, shingle_size=settings.shingle_size)
    result = dedup.deduplicate(records, threshold=settings.near_threshold, hasher=hasher)
    write_jsonl(layout.deduped_file, result.kept)
    write_jsonl(layout.dedup_audit_file, result.audit)
    write_jsonl(layout.conflicts_file, result.conflicts)
    context.log.info(
        f"{len(records)} -> {len(result.kept)}: {result.exact_duplicates} exact, "
        f"{result.near_duplicates} near duplicates, {len(result.conflicts)} conflicts"
    )
    by_id = {r["id"]: r for r in records}

    def examples(rows: list[dict]) -> str:
        return markdown_table(
            ["kind", "sim", "kept", "dropped", "kept answer", "dropped answer"],
            (
                [
                    a["kind"],
                    a["similarity"],
                    turn(by_id[a["kept_id"]], "user"),
                    turn(by_id[a["dropped_id"]], "user"),
                    a["kept_answer"],
                    a["dropped_answer"],
                ]
                for a in rows[: settings.conflict_examples]
            ),
            max_cell=60,
        )

    near = [a for a in result.audit if a["kind"] == "near"]
    exact_conflicts, near_conflicts = result.conflicts_of("exact"), result.conflicts_of("near")
    counts = markdown_table(
        ["rows", "count", "of which conflicting answers"],
        [
            ["in", len(records), ""],
            ["dropped: exact duplicates", result.exact_duplicates, exact_conflicts],
            ["dropped: near duplicates", result.near_duplicates, near_conflicts],
            ["out (kept)", len(result.kept), ""],
        ],
    )
    per_source = result.per_source(records)
    per_source_table = markdown_table(
        ["source", "rows in", "exact dropped", "near dropped", "of which conflicts", "rows out"],
        ([s, v["rows_in"], v["exact"], v["near"], v["conflicts"], v["rows_out"]] for s, v in per_source.items()),
    )
    totals = {  # in the value and in the UI
        "rows_in": len(records),
        "rows_out": len(result.kept),
        "exact_duplicates": result.exact_duplicates,
        "near_duplicates": result.near_duplicates,
        "conflicts": len(result.conflicts),
        "exact_conflicts": exact_conflicts,
        "near_conflicts": near_conflicts,
    }
    return dg.MaterializeResult(
        value={
            "path": str(layout.deduped_file),
            **totals,
            "per_source": per_source,
            "audit_path": str(layout.dedup_audit_file),
        },
        metadata={
            **totals,
            "counts": dg.MetadataValue.md(counts),
            "dropped_per_source": dg.MetadataValue.md(per_source_table),
            "near_threshold": dg.MetadataValue.float(settings.near_threshold),
            "conflict_examples": dg.MetadataValue.md(examples(result.conflicts)),
            "near_duplicate_examples": dg.MetadataValue.md(examples(near)),
            "jsonl_path": dg.MetadataValue.path(str(layout.deduped_file)),
            "audit_path": dg.MetadataValue.path(str(layout.dedup_audit_file)),
            "conflicts_path": dg.MetadataValue.path(str(layout.conflicts_file)),
        },
    )


SPLIT_KEYS = markdown_table(
    ["key", "meaning"],
    [
        ["rows", "rows in this side's file (train + validation + eval = deduped_pairs rows_out)"],
        ["fingerprint", "hash of train, validation and eval files together: training runs are keyed by it"],
        ["contamination_pairs", "eval rows still near-duplicating a train row: must be 0"],
        ["contamination_moved", "eval rows moved to train because they near-duplicated a train row"],
        ["contamination_threshold", "MinHash Jaccard at or above which an eval row counts as contaminated"],
        ["eval_topups", "rows put in eval by the min_eval / per-label floors, not by the hash alone"],
        ["labels", "rows per label on each side"],
    ],
    max_cell=120,
)


SPLIT_SIDES = (  # asset, side in SplitResult.labels(), Layout file
    ("train_set", "train", "train_file"),
    ("validation_set", "validation", "validation_file"),
    ("eval_set", "eval", "eval_file"),
)


@dg.multi_asset(
    outs={
        "train_set": dg.AssetOut(
            kinds={"python", "json"},
            description=(
                "Training examples (train.jsonl), in Axolotl's chat_template `messages` format: the "
                "train side of the split minus the validation slice."
            ),
        ),
        "validation_set": dg.AssetOut(
            kinds={"python", "json"},
            description=(
                "Validation slice (validation.jsonl), carved out of the train side by its own salted "
                'hash: what Axolotl evaluates on and the "did it learn" guard judges. Never trained on.'
            ),
        ),
        "eval_set": dg.AssetOut(
            kinds={"python", "json"},
            description=(
                "Held-out examples (eval.jsonl), made before any training; never a near duplicate "
                "of a train or validation example, and never read by training."
            ),
        ),
    },
    group_name=DATASET_GROUP,
    description="Held-out split by a salted hash of the normalised prompt (stable as data grows), "
    "stratified by label; eval rows that near-duplicate a train row (MinHash Jaccard >= "
    "tunegate.yaml `split.contamination_threshold`) are moved to train. The validation slice "
    "(`split.validation_fraction`, at least `split.min_validation` rows) is then carved out of train.",
)
def train_eval_split(context: dg.AssetExecutionContext, tunegate: TunegateResource, deduped_pairs: dict):
    settings, layout = tunegate.settings(), tunegate.layout
    records = list(read_jsonl(deduped_pairs["path"]))
    result = split.split(
        records,
        eval_fraction=settings.split.eval_fraction,
        min_eval=settings.split.min_eval,
        salt=settings.split.salt,
        contamination_threshold=settings.split.contamination_threshold,
        validation_fraction=settings.split.validation_fraction,
        min_validation=settings.split.min_validation,
        hasher=minhash.MinHasher(num_perm=settings.dedup.num_perm, shingle_size=settings.dedup.shingle_size),
    )
    if not result.validation or not result.train:
        raise dg.Failure(
            f"{deduped_pairs['path']}: {len(records)} rows leave {len(result.train) + len(result.validation)} "
            "on the train side, too few to carve a validation slice out of and still train: add data"
        )
    rows = {"train": result.train, "validation": result.validation, "eval": result.eval}
    for _, side, attr in SPLIT_SIDES:
        write_jsonl(getattr(layout, attr), rows[side])
    fingerprint = split.data_fingerprint(*layout.split_files)
    labels = result.labels()
    table = markdown_table(
        ["label", "train", "validation", "eval", "eval share"],
        (
            [k, v["train"], v["validation"], v["eval"], f"{v['eval'] / max(1, sum(v.values())):.0%}"]
            for k, v in labels.items()
        ),
    )
    context.log.info(
        f"train {len(result.train)}, validation {len(result.validation)}, eval {len(result.eval)}, "
        f"fingerprint {fingerprint[:12]}; {result.contamination_moved} contaminated eval rows "
        "moved to train"
    )
    shared = {
        "fingerprint": fingerprint,
        "contamination_pairs": result.contamination_pairs,
        "contamination_moved": result.contamination_moved,
        "contamination_threshold": dg.MetadataValue.float(settings.split.contamination_threshold),
        "eval_topups": result.eval_topups,
        "labels": dg.MetadataValue.md(table),
        "keys": dg.MetadataValue.md(SPLIT_KEYS),
    }
    for name, side, attr in SPLIT_SIDES:
        path = getattr(layout, attr)
        yield dg.MaterializeResult(
            asset_key=name,
            value=split.SplitFile(
                path=str(path),
                rows=len(rows[side]),
                fingerprint=fingerprint,
                labels={k: v[side] for k, v in labels.items() if v[side]},
            ),
            metadata={"rows": len(rows[side]), "jsonl_path": dg.MetadataValue.path(str(path)), **shared},
        )


def _sides(layout) -> dict[str, list[dict]]:
    return {side: list(read_jsonl(getattr(layout, attr))) for _, side, attr in SPLIT_SIDES}


@dg.asset_check(
    asset="eval_set",
    name="no_contamination",
    blocking=True,
    description="No held-out row near-duplicates a train or validation row (MinHash Jaccard >= "
    "tunegate.yaml split.contamination_threshold), judged on the files as written.",
)
def eval_set_no_contamination(tunegate: TunegateResource) -> dg.AssetCheckResult:
    settings = tunegate.settings()
    sides = _sides(tunegate.layout)
    hasher = minhash.MinHasher(num_perm=settings.dedup.num_perm, shingle_size=settings.dedup.shingle_size)
    pairs = split.contamination_pairs(
        sides["train"] + sides["validation"], sides["eval"], settings.split.contamination_threshold, hasher
    )
    return dg.AssetCheckResult(
        passed=not pairs,
        description=(
            f"{len(pairs)} held-out rows near-duplicate rows training sees: re-run the split" if pairs else None
        ),
        metadata={
            "contamination_pairs": len(pairs),
            "contamination_threshold": dg.MetadataValue.float(settings.split.contamination_threshold),
            "pairs": dg.MetadataValue.md(markdown_table(["trained id", "held-out id"], pairs[:20])),
        },
    )


@dg.asset_check(
    asset="eval_set",
    name="disjoint_sides",
    blocking=True,
    description="No prompt (normalised system + user turn) is on two sides of train / validation / eval.",
)
def eval_set_disjoint_sides(tunegate: TunegateResource) -> dg.AssetCheckResult:
    clashes = split.shared_prompts(_sides(tunegate.layout))
    return dg.AssetCheckResult(
        passed=not clashes,
        description=f"{len(clashes)} prompts are on two sides of the split" if clashes else None,
        metadata={
            "shared_prompts": len(clashes),
            "examples": dg.MetadataValue.md(markdown_table(["rows"], [[c] for c in clashes[:20]])),
        },
    )


@dg.asset_check(
    asset="train_set",
    name="fingerprint",
    blocking=True,
    additional_ins={"validation_set": dg.AssetIn("validation_set"), "eval_set": dg.AssetIn("eval_set")},
    description="train, validation and eval carry one fingerprint, and the files on disk still hash to "
    "it: training and scoring key their caches on it.",
)
def train_set_fingerprint(
    tunegate: TunegateResource, train_set: split.SplitFile, validation_set: split.SplitFile, eval_set: split.SplitFile
) -> dg.AssetCheckResult:
    recorded = {"train": train_set.fingerprint, "validation": validation_set.fingerprint, "eval": eval_set.fingerprint}
    on_disk = split.data_fingerprint(*tunegate.layout.split_files)
    stale = {side: fp[:12] for side, fp in recorded.items() if fp != on_disk}
    return dg.AssetCheckResult(
        passed=not stale,
        description=(
            f"the split files hash to {on_disk[:12]}, but {stale} was recorded: a file changed after the "
            "split; rematerialise train_set / validation_set / eval_set"
            if stale
            else None
        ),
        metadata={"fingerprint": on_disk},
    )


SPLIT_CHECKS = [eval_set_no_contamination, eval_set_disjoint_sides, train_set_fingerprint]


def build_dataset_assets(specs: list[SourceSpec]) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    """The dataset assets and the split's checks for a list of sources (tests call this with their own specs)."""
    return [_build_labeled_pairs(specs), deduped_pairs, train_eval_split, *SPLIT_CHECKS]


def build_assets(project: Project) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    """The data stage of the code location: the configured sources, the dataset, their checks."""
    sources = list(project.sources)
    return [*build_source_assets(sources), *build_dataset_assets(sources)]
